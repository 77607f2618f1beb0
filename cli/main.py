"""The ``zoo`` command: segment images with cellzoo models.

Errors are one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from zoo.cli import (  # noqa: F401
    bank,
    bioimageio,
    build,
    doctor,
    evaluate,
    importer,
    registry,
    route,
    segment,
    serve,
    train,
)
from zoo.cli.app import app
from zoo.errors import ZooError

__all__ = ["app", "run"]


def run() -> None:
    """Console entry point that turns ``ZooError`` into one line on stderr."""
    try:
        app()
    except ZooError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
