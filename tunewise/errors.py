"""Errors a user can act on. The CLI prints their message as one line (tracebacks only with --debug)."""


class TunewiseError(Exception):
    """Base class. `exit_code` 2 = usage/config problem, 1 = the data or model says no."""

    exit_code = 1


class ConfigError(TunewiseError):
    exit_code = 2


class DataError(TunewiseError):
    exit_code = 1


class ModelError(TunewiseError):
    exit_code = 1
