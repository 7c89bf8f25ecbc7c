"""What every command shares: the consoles, the --debug switch and the TunewiseError → one line translation."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tunewise.errors import TunewiseError, require_extra

console = Console()
err_console = Console(stderr=True)
DEBUG = {"on": bool(os.environ.get("TUNEWISE_DEBUG"))}

F = TypeVar("F", bound=Callable)


def friendly_errors(fn: F) -> F:
    """TunewiseError → one red line and its exit code (2 usage, 1 data/model); traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TunewiseError as err:
            if DEBUG["on"]:
                raise
            # Escaped: a message quoting `tunewise[serve]` or a YAML list is text, not rich markup.
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper  # type: ignore[return-value]


def needs_extras(fn: F, command: str, extras: tuple[str, ...]) -> F:
    """`fn`, refusing in one line to start when an optional dependency group it needs is not installed."""
    if not extras:
        return fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        require_extra(command, *extras)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
