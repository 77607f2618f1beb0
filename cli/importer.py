"""``zoo import cellpose``: bring a model trained elsewhere into your own zoo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zoo.cli.common import errors_as_one_line, open_zoo
from zoo.cli.transfer import import_app


@import_app.command("cellpose")
def import_cellpose(
    checkpoint: Annotated[Path, typer.Argument(
        help="A Cellpose 2.x/3.x CPnet checkpoint (torch state dict).", show_default=False)],
    name: Annotated[str, typer.Option(help="Name of the new model (e.g. cyto3-lab).")],
    diameter: Annotated[float | None, typer.Option(
        help="Diameter the network was trained at (Cellpose's diam_mean; built-in nuclei "
             "models: 17). Default: the checkpoint's diam_mean.", show_default=False)] = None,
    size_model: Annotated[Path | None, typer.Option(
        help="Cellpose size model (size_*.npy) to estimate diameters from the style.",
        show_default=False)] = None,
    manifest: Annotated[Path | None, typer.Option(
        help="Base zoo: this models.yaml instead of the shipped one. The model is registered "
             "in your own zoo under ZOO_HOME.")] = None,
) -> None:
    """Import a Cellpose CHECKPOINT as NAME: safetensors weights plus an entry (kind user)
    that records the source's sha256 and Cellpose's channel convention."""
    from zoo.importers.cellpose import import_checkpoint

    if diameter is not None and not diameter > 0:
        from zoo.cli.app import fail

        fail(f"--diameter must be positive, got {diameter}")
    with errors_as_one_line():
        zoo = open_zoo(manifest=manifest)
        entry = import_checkpoint(zoo.registry, checkpoint, name=name, diameter=diameter,
                                  size_model=size_model)
    widths = entry.config.get("channels", [])
    typer.echo(f"imported {checkpoint} as {entry.ref} (CPnet {widths}, diameter "
               f"{entry.diameter:g}{', size model' if size_model else ''}) → "
               f"{entry.weights_path}")
