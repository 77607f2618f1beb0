"""``zoo segment``: images in, label images (and overlays) out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.main import app, fail
from zoo.errors import ZooError
from zoo.io import OUTPUT_SUFFIXES

FORMATS = tuple(OUTPUT_SUFFIXES)



@app.command()
def segment(
    images: Annotated[list[Path], typer.Argument(help="Image files (TIFF, PNG, JPEG).")],
    model: Annotated[
        str,
        typer.Option(help="A .safetensors model file, or 'init' for an untrained network."),
    ] = "init",
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
) -> None:
    """Segment IMAGES and write <stem>_masks.tif (or the chosen format) into OUT."""
    from dataclasses import replace

    from zoo import io
    from zoo.model import SegmentationModel
    from zoo.predict import PredictParams, Predictor
    from zoo.settings import Settings

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    try:
        settings = replace(Settings.from_env(), backend=backend)
        net = SegmentationModel.create() if model == "init" else SegmentationModel.load(model)
        predictor = Predictor(net, settings)
        cyto, nucleus = parse_channels(channels)
        params = PredictParams(diameter=diameter, cyto_channel=cyto, nucleus_channel=nucleus)
    except (ZooError, ValueError) as error:
        fail(str(error))
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    for path in images:
        try:
            image = io.read_image(path)
            result = predictor.predict(image, params)
            written = io.write_segmentation(out, path.stem, result.labels, fmt)
            if overlay:
                io.write_png(out / f"{path.stem}_overlay.png", io.overlay(image, result.labels))
        except ZooError as error:
            typer.echo(f"error: {path}: {error}", err=True)
            failures.append(path)
            continue
        typer.echo(f"{path}: {result.n_cells} cells, diameter {result.diameter:.1f} → {written}")
    if failures:
        fail(f"{len(failures)} of {len(images)} image(s) failed: {', '.join(map(str, failures))}")


def parse_channels(text: str) -> tuple[int, int | None]:
    """``"0"`` → ``(0, None)``; ``"0,1"`` → ``(0, 1)``."""
    parts = [p.strip() for p in text.split(",")]
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--channels must be 'CYTO' or 'CYTO,NUCLEUS' (indices), got {text!r}")
    return int(parts[0]), int(parts[1]) if len(parts) == 2 else None
