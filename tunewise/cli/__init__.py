"""The `tunewise` command: a thin shell over the stage functions. Errors become one line and an exit code.

Every command is listed here, once, with the optional dependency groups it needs; the area modules (run, data,
operate, soup) hold the plain functions."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import typer

from tunewise.cli import data, operate, run, soup
from tunewise.cli.common import DEBUG, friendly_errors, needs_extras


@dataclass(frozen=True)
class Command:
    name: str
    fn: Callable[..., None]
    extras: tuple[str, ...] = ()
    """optional dependency groups (pyproject.toml's optional-dependencies) it cannot start without"""


@dataclass(frozen=True)
class Group:
    name: str
    help: str
    commands: list[Command] = field(default_factory=list)


REGISTRY = ("registry",)
# `tunewise.serve.auth` lives in the serve package, whose import starts the HTTP stack.
SERVE = ("serve", "registry")

COMMANDS = [
    Command("run", run.run_cmd),
    Command("demo", run.demo),
    Command("init", run.init),
    Command("train", run.train_cmd),
    Command("accelerate-config", run.accelerate_config_cmd),
    Command("estimate", run.estimate_cmd),
    Command("tune", run.tune_cmd, ("tune",)),
    Command("eval", run.eval_cmd),
    Command("report", run.report_cmd),
    Command("serve", operate.serve_cmd, SERVE),
    Command("monitor", operate.monitor_cmd, REGISTRY),
    Command("retrain", operate.retrain_cmd, REGISTRY),
    Command("export", operate.export_cmd, REGISTRY),
    Command("soup", soup.soup_cmd),
]

GROUPS = [
    Group("data", "Check and prepare datasets.", [
        Command("check", data.data_check),
        Command("clean", data.data_clean),
        Command("split", data.data_split),
    ]),
    Group("registry", "Registered datasets, runs and models; promote and roll back.", [
        Command("register", operate.registry_register, REGISTRY),
        Command("list", operate.registry_list, REGISTRY),
        Command("show", operate.registry_show, REGISTRY),
        Command("promote", operate.registry_promote, REGISTRY),
        Command("rollback", operate.registry_rollback, REGISTRY),
    ]),
    Group("keys", "API keys for `tunewise serve` (stored hashed).", [
        Command("create", operate.keys_create, SERVE),
        Command("list", operate.keys_list, SERVE),
        Command("revoke", operate.keys_revoke, SERVE),
    ]),
    Group("feedback", "User feedback collected by the server.", [
        Command("export", operate.feedback_export, REGISTRY),
    ]),
]


def main(debug: bool = typer.Option(False, "--debug", help="show tracebacks")) -> None:
    DEBUG["on"] = DEBUG["on"] or debug
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tunewise never downloads from a hub


def _add(app: typer.Typer, command: Command, path: str) -> None:
    app.command(command.name)(friendly_errors(needs_extras(command.fn, path, command.extras)))


def build_app() -> typer.Typer:
    """The typer app of COMMANDS and GROUPS."""
    app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fine-tune LLMs the disciplined way.")
    app.callback()(main)
    for command in COMMANDS:
        _add(app, command, f"tunewise {command.name}")
    for group in GROUPS:
        sub = typer.Typer(no_args_is_help=True, help=group.help)
        for command in group.commands:
            _add(sub, command, f"tunewise {group.name} {command.name}")
        app.add_typer(sub, name=group.name)
    return app


app = build_app()

__all__ = ["COMMANDS", "GROUPS", "app", "build_app"]
