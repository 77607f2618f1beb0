"""``zoo import`` and ``zoo export``: the command groups that bring models in from other
formats and write them out. Each format registers its own subcommand on these groups
(``zoo import bioimageio``, ``zoo export bioimageio``, ...)."""

from __future__ import annotations

import typer

from zoo.cli.app import app

import_app = typer.Typer(
    name="import", no_args_is_help=True,
    help="Bring a model from another format into your zoo (under ZOO_HOME).",
)
export_app = typer.Typer(
    name="export", no_args_is_help=True,
    help="Write a model of the zoo in another format.",
)
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")
