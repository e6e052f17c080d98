"""How every ``mcpdeploy`` command speaks: results on stdout, progress and errors on stderr.

A user's mistake is one ``error:`` line and a non-zero exit (:func:`fail`), never a
traceback; long work says what it is doing, step by step (:func:`step`).
"""

from __future__ import annotations

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` and return the exit to raise (``raise fail(...)``)."""
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return typer.Exit(code)


def step(message: str) -> None:
    """Show a step of long work."""
    err.print(f"[cyan]==>[/cyan] {message}", soft_wrap=True)
