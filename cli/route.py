"""``zoo route``: which model suits each image, and (``--plot``) where it sits on the style map."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from zoo.cli.common import errors_as_one_line, expand_inputs, open_zoo
from zoo.cli.main import app, fail
from zoo.errors import ZooError

#: Query stars get their file name written next to them up to this many images.
MAX_NAMED = 40


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
        help="Use this models.yaml.", envvar="ZOO_MANIFEST")] = None,
) -> None:
    """Print the model chosen for each image, with vote confidence, distance and OOD flag."""
    from zoo import io
    from zoo.predict import PredictParams
    from zoo.preprocess import parse_channels

    with errors_as_one_line():
        cyto, nucleus = parse_channels(channels)
        params = PredictParams(cyto_channel=cyto, nucleus_channel=nucleus)
        zoo = open_zoo(manifest)
        router = zoo.router  # fail early when the zoo has no router
    inputs = expand_inputs(paths)
    failures = list(inputs.unmatched)
    for pattern in inputs.unmatched:
        typer.echo(f"error: {pattern}: no such file or folder, and no file matches it", err=True)
    queries: list[tuple[str, np.ndarray]] = []
    for path in inputs.images:
        try:
            style = zoo.style(io.read_image(path), params)
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
        _plot(router.bank, queries, plot)
        typer.echo(f"wrote the style map to {plot}", err=as_json)
    if failures:
        total = len(inputs.images) + len(inputs.unmatched)
        fail(f"{len(failures)} of {total} input(s) failed: {', '.join(failures)}")


def _echo(path: Path, result, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"image": str(path), **result.to_dict()}))
        return
    flag = "  OUT OF DISTRIBUTION" if result.ood else ""
    typer.echo(f"{path}: {result.model} (cluster {result.cluster} {result.cluster_name}, "
               f"confidence {result.confidence:.2f}, distance {result.distance:.3f}){flag}")


def embed_2d(bank_vectors: np.ndarray, queries: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """t-SNE of the bank's and the queries' styles together: ``(N + M, 2)`` float.

    Both are fitted in one run (t-SNE cannot place new points on an old map), with a fixed
    ``random_state``, so the same inputs give the same map.
    """
    from sklearn.manifold import TSNE

    points = np.concatenate([bank_vectors, queries]).astype(np.float64)
    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                metric="cosine" if len(points) > 3 else "euclidean")
    return tsne.fit_transform(points)


def _plot(bank, queries: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Reference styles coloured by cluster, ``queries`` (label, style) as named black stars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    styles = np.stack([style for _, style in queries])
    xy = embed_2d(bank.vectors, styles)
    reference, placed = xy[: len(bank.vectors)], xy[len(bank.vectors):]
    figure = Figure(figsize=(8, 6.5), dpi=120)
    axes = figure.subplots()
    colours = matplotlib.colormaps["tab10"]
    for cluster, name in enumerate(bank.names):
        members = bank.labels == cluster
        model = bank.specialists.get(cluster, "generalist")
        axes.scatter(*reference[members].T, s=14, alpha=0.7, color=colours(cluster % 10),
                     label=f"{cluster}: {name} → {model} ({members.sum()})")
    axes.scatter(*placed.T, marker="*", s=220, color="black", edgecolor="white",
                 linewidth=0.8, label="your images", zorder=3)
    for (name, _), (x, y) in list(zip(queries, placed))[:MAX_NAMED]:
        axes.annotate(name, (x, y), xytext=(6, 4), textcoords="offset points",
                      fontsize=8, zorder=4)
    axes.set(xlabel="t-SNE 1", ylabel="t-SNE 2",
             title=f"Style map: {len(bank.vectors)} reference styles by cluster, "
                   f"{len(queries)} image(s) as stars")
    axes.legend(fontsize=8, loc="best", title="cluster → model (references)",
                title_fontsize=8, framealpha=0.85)
    axes.grid(alpha=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
