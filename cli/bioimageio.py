"""``zoo export bioimageio`` and ``zoo import bioimageio``: bioimage.io model packages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zoo.cli.common import errors_as_one_line
from zoo.cli.transfer import export_app, import_app


def _registry():
    from zoo.registry import Registry
    from zoo.settings import Settings

    return Registry.default(Settings.from_env())


@export_app.command("bioimageio")
def export_bioimageio(
    name: Annotated[str, typer.Argument(help="Model to export (NAME[@VERSION]).")],
    out: Annotated[Path, typer.Option("--out", help="The package to write (a .zip).")],
    author: Annotated[
        list[str] | None, typer.Option("--author", help="An author's name (repeatable).")
    ] = None,
    license_id: Annotated[
        str | None, typer.Option("--license", help="SPDX license id (default: the model's).")
    ] = None,
    style: Annotated[
        str | None, typer.Option(help="Synthetic style of the test image (default: the "
                                      "model's cluster, else tissue).")
    ] = None,
) -> None:
    """Write a bioimage.io model package (spec 0.5): ONNX and TorchScript weights, test
    tensors, cover, README, and the cellzoo metadata to import it back."""
    from zoo.bioimageio import ExportOptions, export_package

    options = ExportOptions(authors=tuple(author or ("cellzoo",)), license=license_id,
                            style=style)
    with errors_as_one_line():
        if out.suffix != ".zip":
            raise ValueError(f"--out must be a .zip file, got {out}")
        path = export_package(_registry(), name, out, options=options)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


@import_app.command("bioimageio")
def import_bioimageio(
    package: Annotated[Path, typer.Argument(help="A bioimage.io package (.zip) written by "
                                                 "zoo export bioimageio.")],
    name: Annotated[str, typer.Option("--name", help="The model's name in your zoo.")],
    force: Annotated[bool, typer.Option(help="Replace a model of yours with this name.")] = False,
) -> None:
    """Check a package (safe paths, sha256 pins, weights that reproduce its test outputs) and
    add its model to your zoo (ZOO_HOME/user)."""
    from zoo.bioimageio import import_package

    with errors_as_one_line():
        registry = _registry()
        entry = import_package(registry, package, name=name, force=force)
    typer.echo(f"imported {entry.ref} into {registry.manifest_path}")
