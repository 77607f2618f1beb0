"""``zoo bank build | import-cellpose``: style banks that route among your own models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zoo.cli.app import app, fail
from zoo.cli.common import errors_as_one_line, open_zoo

bank_app = typer.Typer(
    name="bank", no_args_is_help=True,
    help="Style banks: route images among your own (imported or trained) models.")
app.add_typer(bank_app, name="bank")


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            fail(f"{option} takes NAME=VALUE, got {value!r}")
        if name in pairs:
            fail(f"{option} names {name!r} twice")
        pairs[name] = target
    return pairs


@bank_app.command("build")
def build(
    embed: Annotated[str, typer.Option(
        help="The model whose style vectors embed every image (e.g. cpnet.generalist).")],
    refs: Annotated[list[str], typer.Option(
        help="MODEL=DIR: a few reference images (the files directly in DIR) of the images "
             "MODEL suits; repeat for each model.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Where to write the bank (.safetensors).")],
    channels: Annotated[str, typer.Option(help="Cytoplasm[,nucleus] channel indices.")] = "0",
    manifest: Annotated[Path | None, typer.Option(help="Use this models.yaml.")] = None,
) -> None:
    """Embed each model's reference images with one model and write a style bank whose
    clusters are those models (cluster name = model name)."""
    from tqdm import tqdm

    from zoo.bank import build_bank, embedder, reference_images
    from zoo.io import read_image
    from zoo.params import PredictParams
    from zoo.preprocess import parse_channels

    folders = _pairs(refs, "--refs")
    with errors_as_one_line():
        cyto, nucleus = parse_channels(channels)
        zoo = open_zoo(manifest=manifest)
        for name in [embed, *folders]:
            zoo.registry.entry(name)  # an unknown model fails here, naming close matches
        files = {name: reference_images(folder) for name, folder in folders.items()}
        embed_images, settings = embedder(
            zoo.predictor(embed), PredictParams(cyto_channel=cyto, nucleus_channel=nucleus))
        total = sum(len(v) for v in files.values())
        with tqdm(total=total, desc="reading references", unit="image") as bar:
            def read(path: Path):
                bar.update(1)
                return read_image(path)

            bank = build_bank(embed_images, files, embedding={"model": embed, **settings},
                              read=read)
        bank.save(out)
    counts = ", ".join(f"{name} {len(paths)}" for name, paths in files.items())
    typer.echo(f"wrote {out}: {len(bank.vectors)} references ({counts}), k {bank.k}, "
               f"OOD threshold {bank.ood_threshold:.3f}, embedded by {embed}")


@bank_app.command("import-cellpose")
def import_cellpose(
    style_choice: Annotated[Path, typer.Argument(
        help="Cellpose 2.x style_choice.npy (train_styles, leiden_labels, label_models).",
        show_default=False)],
    out: Annotated[Path, typer.Option(help="Where to write the bank (.safetensors).")],
    embed: Annotated[str, typer.Option(
        help="Zoo name of the imported Cellpose network whose styles these are.")]
    = "cellpose-general",
    rename: Annotated[list[str] | None, typer.Option(
        help="CELLPOSE=ZOO: route Cellpose's model CELLPOSE to the zoo model ZOO (default: "
             "the lowercased Cellpose name).", show_default=False)] = None,
) -> None:
    """Turn Cellpose 2.x's style_choice.npy into a cellzoo style bank."""
    from zoo.bank import import_style_choice

    mapping = _pairs(rename or [], "--rename")
    with errors_as_one_line():
        bank = import_style_choice(style_choice, embed_model=embed, rename=mapping)
        bank.save(out)
    routes = ", ".join(f"{bank.names[c]}→{m}" for c, m in sorted(bank.specialists.items()))
    typer.echo(f"wrote {out}: {len(bank.vectors)} reference styles, {bank.n_clusters} clusters "
               f"({routes})")
