"""Errors a user can act on. The CLI prints their message as one line (tracebacks only with --debug)."""

import importlib.util


class TunewiseError(Exception):
    """Base class. `exit_code` 2 = usage/config problem, 1 = the data or model says no."""

    exit_code = 1


class ConfigError(TunewiseError):
    exit_code = 2


class DataError(TunewiseError):
    exit_code = 1


class ModelError(TunewiseError):
    exit_code = 1


class MissingExtraError(TunewiseError):
    """An optional dependency group (`pip install 'tunewise[NAME]'`) that a command needs is not installed."""

    exit_code = 2


# The modules whose absence means the extra is missing; pyproject.toml's optional-dependencies pin the packages.
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "prometheus_client"),
    "registry": ("sqlalchemy",),
    "tune": ("optuna",),
}


def require_extra(command: str, *extras: str) -> None:
    """Raise MissingExtraError naming the `pip install` that fixes it when one of `extras` is not installed."""
    missing = [e for e in extras if any(importlib.util.find_spec(m) is None for m in EXTRAS[e])]
    if missing:
        what = f"the {missing[0]} extra" if len(missing) == 1 else f"the {' and '.join(missing)} extras"
        raise MissingExtraError(f"{command} needs {what}: pip install 'tunewise[{','.join(missing)}]'")
