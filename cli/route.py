"""``zoo route``: which model suits each image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import errors_as_one_line, open_zoo
from cli.main import app, fail
from zoo.errors import ZooError
from zoo.preprocess import parse_channels


@app.command()
def route(
    images: Annotated[list[Path], typer.Argument(help="Image files (TIFF, PNG, JPEG).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    channels: Annotated[str, typer.Option(help="Cytoplasm[,nucleus] channel indices.")] = "0",
    manifest: Annotated[Path | None, typer.Option(help="Use this models.yaml.", envvar="ZOO_MANIFEST")] = None,
) -> None:
    """Print the model chosen for each image, with vote confidence, distance and OOD flag."""
    from zoo import io
    from zoo.predict import PredictParams

    with errors_as_one_line():
        cyto, nucleus = parse_channels(channels)
        params = PredictParams(cyto_channel=cyto, nucleus_channel=nucleus)
        zoo = open_zoo(manifest)
        zoo.router  # noqa: B018  (fail early when the zoo has no router)
    failures = 0
    for path in images:
        try:
            result = zoo.route(io.read_image(path), params)
        except (ZooError, FileNotFoundError) as error:
            typer.echo(f"error: {path}: {error}", err=True)
            failures += 1
            continue
        if as_json:
            typer.echo(json.dumps({"image": str(path), **result.to_dict()}))
        else:
            flag = "  OUT OF DISTRIBUTION" if result.ood else ""
            typer.echo(f"{path}: {result.model} (cluster {result.cluster} {result.cluster_name}, "
                       f"confidence {result.confidence:.2f}, distance {result.distance:.3f}){flag}")
    if failures:
        fail(f"{failures} of {len(images)} image(s) failed")
