"""``zoo build``: train and write the default zoo from a seed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zoo.cli.app import app
from zoo.cli.common import errors_as_one_line


@app.command()
def build(
    root: Annotated[Path, typer.Option(help="Where models.yaml, weights/ and docs/ are written.")] = Path("."),
    seed: Annotated[int, typer.Option(help="Seed of data, training and clustering.")] = 0,
    n_train: Annotated[int, typer.Option(help="Training images per style.")] = 48,
    n_val: Annotated[int, typer.Option(help="Validation images per style (choices only).")] = 12,
    n_test: Annotated[int, typer.Option(help="Held-out test images per style (reported only).")] = 12,
    n_negatives: Annotated[int, typer.Option(
        help="Non-microscopy images per kind in each negatives split (OOD check).")] = 16,
    epochs: Annotated[int | None, typer.Option(help="Generalist epochs (default: schedule).")] = None,
    specialist_epochs: Annotated[int | None, typer.Option(help="Specialist epochs.")] = None,
    generalist: Annotated[Path | None, typer.Option(
        help="Reuse this generalist (weights/cpnet.generalist.safetensors of an earlier build "
             "with the same seed and sizes) instead of training one: redoes the later steps.",
        show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads for torch (default: torch's; 1 is fastest on a busy machine).")] = None,
) -> None:
    """Train the default zoo from a seed; write models.yaml, weights/, docs/zoo.json and zoo.md.

    Steps: generate the train, validation and test splits and the OOD negatives, train the
    generalist, cluster styles, fine-tune a candidate specialist per cluster, calibrate the
    OOD check, keep the specialists that beat the generalist on validation, evaluate on test,
    write everything.
    """
    import math
    from dataclasses import replace

    import torch
    from tqdm import tqdm

    from zoo.build import BuildConfig, build_zoo
    from zoo.release import README_START, with_zoo_table, write_release
    from zoo.report import ap_table, fill_markers, readme_sections, write_report

    if threads:
        torch.set_num_threads(threads)
    config = BuildConfig(seed=seed, n_train=n_train, n_val=n_val, n_test=n_test,
                         n_negatives=n_negatives)
    if epochs:
        config = replace(config, generalist=replace(config.generalist, epochs=epochs))
    if specialist_epochs:
        config = replace(config, specialist=replace(config.specialist, epochs=specialist_epochs))
    bars: dict[str, tqdm] = {}

    def progress(step: str, done: int, total: int, loss: float) -> None:
        unit = "image" if math.isnan(loss) else "epoch"
        if step not in bars:  # one bar per step (setdefault would open a bar per call)
            bars[step] = tqdm(total=total, desc=step, unit=unit, leave=True)
        bar = bars[step]
        if not math.isnan(loss):
            bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)
        if done == total:
            bar.close()

    with errors_as_one_line():
        given = None
        if generalist is not None:
            from zoo.model import SegmentationModel

            given = SegmentationModel.load(generalist)
        report = build_zoo(config, progress=progress, generalist=given)
        manifest = write_release(report, config, root)
        data = write_report(report, config, root, generalist_from=generalist)
        readme = root / "README.md"
        if readme.is_file() and README_START in readme.read_text(encoding="utf-8"):
            text = with_zoo_table(readme.read_text(encoding="utf-8"), manifest)
            readme.write_text(fill_markers(text, readme_sections(data), kinds=("zoo",)),
                              encoding="utf-8")
    typer.echo(ap_table(data))
    typer.echo(f"wrote {len(manifest.models)} models to {root / 'models.yaml'}; "
               f"report in {root / 'docs' / 'zoo.json'} and {root / 'docs' / 'zoo.md'}")
    for step, seconds in report.timings.items():
        typer.echo(f"  {step}: {seconds / 60:.1f} min")
