"""``zoo eval``: AP at IoU thresholds per image and in total, as a table, CSV and a plot."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import typer

from zoo.cli.app import app
from zoo.cli.common import errors_as_one_line, open_zoo
from zoo.preprocess import parse_channels

COLUMNS = (0.5, 0.75, 0.9)


@app.command("eval")
def evaluate_command(
    dataset: Annotated[str, typer.Argument(help="Cellpose folder, COCO JSON, TissueNet .npz, or 'synthetic[:STYLE,...]'.")],
    model: Annotated[str, typer.Option(help="'auto' (route each image) or a registry name.")] = "auto",
    channels: Annotated[str, typer.Option(help="Cytoplasm[,nucleus] channel indices.")] = "0,1",
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write per-image rows here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write an AP-vs-IoU plot (PNG) here.")] = None,
    manifest: Annotated[Path | None, typer.Option(help="Use this models.yaml.")] = None,
) -> None:
    """Score MODEL on DATASET: AP at 0.5/0.75/0.9, mAP and F1 per image and in total."""
    from zoo.data.readers import read_dataset
    from zoo.evaluate import SYNTHETIC, evaluate, synthetic_test_set
    from zoo.params import PredictParams

    with errors_as_one_line():
        cyto, nucleus = parse_channels(channels)
        params = PredictParams(cyto_channel=cyto, nucleus_channel=nucleus)
        items = (synthetic_test_set(dataset) if dataset.split(":")[0] == SYNTHETIC
                 else read_dataset(Path(dataset)))
        result = evaluate(open_zoo(manifest=manifest), items, model=model, params=params)
    rows = [(r.name, r.model, r.scores) for r in result.images] + [("TOTAL", model, result.total)]
    index = [result.total.thresholds.index(t) for t in COLUMNS]
    typer.echo("| image | model | " + " | ".join(f"AP@{t:g}" for t in COLUMNS) + " | mAP | F1@0.5 |")
    typer.echo("|---|---|" + "---:|" * (len(COLUMNS) + 2))
    for name, used, scores in rows:
        aps = " | ".join(f"{scores.ap[i]:.3f}" for i in index)
        typer.echo(f"| {name} | {used} | {aps} | {scores.coco_map:.3f} | {scores.f1[0]:.3f} |")
    if csv_path:
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "model", *(f"ap@{t:g}" for t in COLUMNS), "map", "f1@0.5"])
            for name, used, scores in rows:
                writer.writerow([name, used, *(round(scores.ap[i], 4) for i in index),
                                 round(scores.coco_map, 4), round(scores.f1[0], 4)])
    if plot:
        from zoo.viz import plot_ap_curves

        plot_ap_curves({model: (result.total.thresholds, result.total.ap)}, plot)

