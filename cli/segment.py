"""``zoo segment``: images in, label images (and overlays) out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import errors_as_one_line, open_zoo
from cli.main import app, fail
from zoo.errors import ZooError
from zoo.io import OUTPUT_SUFFIXES
from zoo.preprocess import parse_channels

FORMATS = tuple(OUTPUT_SUFFIXES)


@app.command()
def segment(
    images: Annotated[list[Path], typer.Argument(help="Image files (TIFF, PNG, JPEG).")],
    model: Annotated[
        str, typer.Option(help="'auto' (route each image), a registry name, or a .safetensors file.")
    ] = "auto",
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("out"),
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}.")] = "tiff",
    overlay: Annotated[bool, typer.Option(help="Also write <stem>_overlay.png.")] = False,
    diameter: Annotated[
        float | None, typer.Option(help="Cell diameter in pixels (default: estimate).")
    ] = None,
    channels: Annotated[
        str, typer.Option(help="Cytoplasm channel, optionally ',nucleus channel' (e.g. 0,1).")
    ] = "0",
    backend: Annotated[str, typer.Option(help="torch or onnx.")] = "torch",
    manifest: Annotated[Path | None, typer.Option(help="Use this models.yaml.", envvar="ZOO_MANIFEST")] = None,
) -> None:
    """Segment IMAGES and write <stem>_masks.tif (or the chosen format) into OUT."""
    from zoo import io
    from zoo.predict import PredictParams

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    with errors_as_one_line():
        cyto, nucleus = parse_channels(channels)
        params = PredictParams(diameter=diameter, cyto_channel=cyto, nucleus_channel=nucleus)
        zoo = open_zoo(manifest, backend=backend)
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    for path in images:
        try:
            image = io.read_image(path)
            result = zoo.segment(image, model=model, params=params)
            labels = result.prediction.labels
            written = io.write_segmentation(out, path.stem, labels, fmt)
            if overlay:
                io.write_png(out / f"{path.stem}_overlay.png", io.overlay(image, labels))
        except (ZooError, FileNotFoundError) as error:
            typer.echo(f"error: {path}: {error}", err=True)
            failures.append(path)
            continue
        routed = f" (routed: {result.route.reason})" if result.route else ""
        typer.echo(f"{path}: {result.prediction.n_cells} cells with {result.model}, "
                   f"diameter {result.prediction.diameter:.1f} → {written}{routed}")
    if failures:
        fail(f"{len(failures)} of {len(images)} image(s) failed: {', '.join(map(str, failures))}")
