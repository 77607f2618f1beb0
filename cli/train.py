"""``zoo train``: train from scratch or fine-tune a registry model, then register it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zoo.cli.app import app
from zoo.cli.common import errors_as_one_line, open_zoo


@app.command()
def train(
    images: Annotated[Path, typer.Option(help="Annotated images: a Cellpose folder, COCO JSON or TissueNet .npz.")],
    name: Annotated[str, typer.Option(help="Name of the new model (e.g. cpnet.mylab).")],
    parent: Annotated[str | None, typer.Option("--from", help="Fine-tune this registry model (default: from scratch).")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs (Cellpose 2.0's human-in-the-loop: 100).")] = 100,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate (SGD).")] = 0.1,
    diameter: Annotated[float, typer.Option(help="Mean diameter of a new model (ignored with --from).")] = 30.0,
    fmt: Annotated[str, typer.Option("--format", help="auto, cellpose, coco or tissuenet.")] = "auto",
    manifest: Annotated[Path | None, typer.Option(help="Base zoo: this models.yaml instead of the shipped one. The new model is registered in your own zoo under ZOO_HOME.")] = None,
) -> None:
    """Train a model on annotated IMAGES and register it as NAME (kind: user)."""
    from tqdm import tqdm

    from zoo.data.readers import read_dataset
    from zoo.model import SegmentationModel
    from zoo.train import TrainConfig, fit_size_model
    from zoo.train import train as run_training
    from zoo.userzoo import register_model

    with errors_as_one_line():
        zoo = open_zoo(manifest=manifest)
        dataset = read_dataset(images, fmt)
        model = (zoo.registry.load_model(parent) if parent
                 else SegmentationModel.create(diam_mean=diameter))
        config = TrainConfig(epochs=epochs, learning_rate=learning_rate, warmup_epochs=min(10, epochs // 4))
        with tqdm(total=epochs, desc=f"training {name}", unit="epoch") as bar:
            def progress(epoch: int, total: int, loss: float) -> None:
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.update(1)

            result = run_training(model, dataset, config, progress=progress)
        fit_size_model(model, dataset, config=config)
        entry = register_model(zoo.registry, model, name=name, parent=parent,
                               n_images=result.n_images, source=str(images))
    typer.echo(f"trained {name} on {result.n_images} image(s), final loss {result.losses[-1]:.3f}; "
               f"registered {entry.ref} ({entry.weights_path})")
