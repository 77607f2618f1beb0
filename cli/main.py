"""The ``zoo`` command: segment images with cellzoo models.

Errors are one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from zoo.errors import ZooError

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
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _register_commands() -> None:
    from zoo.cli import build, doctor, evaluate, registry, route, segment, serve, train  # noqa: F401


_register_commands()


def run() -> None:
    """Console entry point that turns ``ZooError`` into one line on stderr."""
    try:
        app()
    except ZooError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
