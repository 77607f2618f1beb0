"""The ``zoo`` Typer app and the one way a command fails; command modules register on it.

Arrows point one way: ``app`` ← every command module ← ``main`` (which imports them all).
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

app = typer.Typer(
    name="zoo",
    help="cellzoo: pick the right cell-segmentation model for every image and run it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def fail(message: str, code: int = 1) -> None:
    """Print one error line to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """cellzoo: cell segmentation with a zoo of style-routed specialist models."""
    _log_to_stderr(logging.INFO if verbose else logging.WARNING)


def _log_to_stderr(level: int) -> None:
    """cellzoo's log lines (the ``zoo`` loggers) on stderr at ``level``: one handler, ours."""
    logger = logging.getLogger("zoo")
    for handler in [h for h in logger.handlers if getattr(h, "_zoo_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._zoo_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
