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
    n_test: Annotated[int, typer.Option(help="Held-out test images per style.")] = 12,
    epochs: Annotated[int | None, typer.Option(help="Generalist epochs (default: schedule).")] = None,
    specialist_epochs: Annotated[int | None, typer.Option(help="Specialist epochs.")] = None,
) -> None:
    """Train the default zoo from a seed; write models.yaml, weights/, docs/zoo.json and zoo.md.

    Steps: generate data, train the generalist, cluster styles, fine-tune a specialist per
    cluster and the nuclei model, evaluate routed against generalist, write everything.
    """
    from dataclasses import replace

    from tqdm import tqdm

    from zoo.build import BuildConfig, build_zoo
    from zoo.release import README_START, with_zoo_table, write_release
    from zoo.report import ap_table, fill_markers, readme_sections, write_report

    config = BuildConfig(seed=seed, n_train=n_train, n_test=n_test)
    if epochs:
        config = replace(config, generalist=replace(config.generalist, epochs=epochs))
    if specialist_epochs:
        config = replace(config, specialist=replace(config.specialist, epochs=specialist_epochs))
    bars: dict[str, tqdm] = {}

    def progress(step: str, epoch: int, epochs: int, loss: float) -> None:
        bar = bars.setdefault(step, tqdm(total=epochs, desc=step, unit="epoch", leave=True))
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)
        if epoch == epochs:
            bar.close()

    with errors_as_one_line():
        report = build_zoo(config, progress=progress)
        manifest = write_release(report, config, root)
        data = write_report(report, config, root)
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
