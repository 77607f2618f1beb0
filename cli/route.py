"""``zoo route``: which model suits each image, and (``--plot``) where it sits on the style map."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from zoo.cli.app import app, fail
from zoo.cli.common import errors_as_one_line, expand_inputs, open_zoo
from zoo.errors import ZooError


@app.command()
def route(
    paths: Annotated[list[str], typer.Argument(
        help="Image files, folders (searched recursively) or glob patterns.",
        show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    plot: Annotated[Path | None, typer.Option(
        help="Also draw the style map (t-SNE of the style bank and these images) as a PNG.",
        show_default=False)] = None,
    channels: Annotated[str, typer.Option(help="Cytoplasm[,nucleus] channel indices.")] = "0",
    manifest: Annotated[Path | None, typer.Option(
        help="Use this models.yaml.")] = None,
    bank: Annotated[Path | None, typer.Option(
        help="Route with this style bank (zoo bank build) instead of the zoo's "
             "(default: $ZOO_BANK).", show_default=False)] = None,
) -> None:
    """Print the model chosen for each image and, on the same line, why: the OOD score
    against its threshold, the nearest references' vote (confidence) and why that model
    serves the cluster."""
    from zoo import io
    from zoo.params import PredictParams
    from zoo.preprocess import parse_channels

    with errors_as_one_line():
        cyto, nucleus = parse_channels(channels)
        params = PredictParams(cyto_channel=cyto, nucleus_channel=nucleus)
        zoo = open_zoo(manifest=manifest, bank=bank)
        router = zoo.router  # fail early when the zoo has no router
    inputs = expand_inputs(paths)
    failures = list(inputs.unmatched)
    for pattern in inputs.unmatched:
        typer.echo(f"error: {pattern}: no such file or folder, and no file matches it", err=True)
    queries: list[tuple[str, np.ndarray]] = []
    for path in inputs.images:
        try:
            style = zoo.style_pass(io.read_image(path), params).style
        except (ZooError, OSError, ValueError) as error:
            message = str(error)
            typer.echo(f"error: {message if str(path) in message else f'{path}: {message}'}",
                       err=True)
            failures.append(str(path))
            continue
        result = router.route_style(style)
        queries.append((path.name + (" (OOD)" if result.ood else ""), style))
        _echo(path, result, as_json)
    if plot is not None and queries:
        from zoo.viz import plot_style_map

        plot_style_map(router.bank, queries, plot)
        typer.echo(f"wrote the style map to {plot}", err=as_json)
    if failures:
        total = len(inputs.images) + len(inputs.unmatched)
        fail(f"{len(failures)} of {total} input(s) failed: {', '.join(failures)}")


def _echo(path: Path, result, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"image": str(path), **result.to_dict()}))
        return
    typer.echo(f"{path}: {result.model} (confidence {result.confidence:.2f}, nearest reference "
               f"at distance {result.distance:.3f}): {result.reason}")

