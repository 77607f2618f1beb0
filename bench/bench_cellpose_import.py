"""Same weights, side by side: an imported Cellpose checkpoint end to end on the CPU, ours
against cellpose 3.1.1.2's ``CellposeModel.eval`` on the same images, in the same run.

Usage:

    bash bench/setup_cellpose.sh                        # once: the reference venv
    .venv/bin/python bench/bench_cellpose_import.py [--images 6] [--size 512] [--repeats 2]

1. The checkpoint: a Cellpose-width CPnet (2-32-64-128-256, 6.6M parameters, 26 MB), written
   by cellpose's own trainer: the shipped generalist's weights grown to that width (its
   tensors copied into the leading channels, the new channels drawn at a tenth of the default
   initialisation), then ``train.train_seg`` for ``--epochs`` batches of 8 on synthetic
   images (bench/_cellpose_side.py). It is kept in bench/.cellpose-import/ and reused; pass
   ``--checkpoint FILE`` to use any other cellpose checkpoint instead.
2. The images: ``--images`` synthetic grayscale ``--size``² images (styles nuclei, cyto,
   tissue, phase in turn; seed 3), each with its true median cell diameter as ``D``.
3. cellpose: ``CellposeModel.eval(image, diameter=D, channels=[0, 0])`` in
   bench/.venv-cellpose (its CPU defaults: MKL-DNN, bsize 224, batch 8), after a warm-up.
4. ours: ``zoo import cellpose`` into a throwaway ``ZOO_HOME``, then the library's
   ``Zoo.segment(image, model=NAME, params=PredictParams(diameter=D))`` in this process,
   after a warm-up, for each configuration (backend torch or onnx; the model's default
   ``cellpose`` layout or our own ``cellzoo`` tiling; batch size).

Both sides run on ``--threads`` threads (2). Seconds per image are medians over
``--repeats``; agreement is AP at IoU 0.9 of our masks against cellpose's (``zoo.metrics``),
per image. Prints the table and writes bench/results/cellpose_import.json (docs/render.py
renders the README's table from it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import Column, Run, Table

from zoo.data.synthetic import generate, sample_seed
from zoo.importers.cellpose import import_checkpoint, to_cellpose_state_dict
from zoo.metrics import average_precision
from zoo.model import SegmentationModel
from zoo.nets.cpnet import NetConfig
from zoo.params import PredictParams
from zoo.pipeline import Zoo
from zoo.registry import Registry
from zoo.settings import Settings

BENCH = Path(__file__).resolve().parent
CELLPOSE_PYTHON = BENCH / ".venv-cellpose" / "bin" / "python"
SIDE = BENCH / "_cellpose_side.py"
CACHE = BENCH / ".cellpose-import"
FULL = (2, 32, 64, 128, 256)
STYLES = ("nuclei", "cyto", "tissue", "phase")
NAME = "cellpose-bench"
SPEED_TARGET, AGREEMENT_TARGET = 3.0, 0.98
# (label, backend, layout, batch size): the cellpose layout is the imported model's default
CONFIGS = (("torch, cellpose layout, batch 8", "torch", "cellpose", 8),
           ("onnx, cellpose layout, batch 8", "onnx", "cellpose", 8),
           ("onnx, cellpose layout, batch 1", "onnx", "cellpose", 1),
           ("onnx, cellzoo layout (256 tiles), batch 8", "onnx", "cellzoo", 8))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cellpose(*args: str) -> dict:
    done = subprocess.run([str(CELLPOSE_PYTHON), str(SIDE), *args], check=True,
                          stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def widened_generalist(seed: int = 0) -> SegmentationModel:
    """The shipped generalist grown to Cellpose's width (see the module doc)."""
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="bench-home-")))
    small = Registry.embedded(settings).load_model("cpnet.generalist")
    big = SegmentationModel.create(NetConfig(channels=FULL), diam_mean=small.diam_mean, seed=seed)
    source = small.net.state_dict()
    state = {}
    for name, value in big.net.state_dict().items():
        value = value.clone()
        if value.is_floating_point() and value.ndim >= 2:
            value *= 0.1
        if value.ndim == 0:
            value = source[name].clone()
        else:
            value[tuple(slice(0, n) for n in source[name].shape)] = source[name]
        state[name] = value
    big.net.load_state_dict(state)
    return big


def training_data(path: Path, per_style: int = 4) -> None:
    arrays = {}
    for style in STYLES:
        for index in range(per_style):
            sample = generate(style, seed=sample_seed(style, index, seed=1))
            k = len(arrays) // 2
            arrays[f"image_{k}"] = sample.image[..., 0].astype(np.uint16)
            arrays[f"labels_{k}"] = sample.labels
    np.savez(path, **arrays)


def make_checkpoint(epochs: int) -> tuple[Path, dict]:
    CACHE.mkdir(parents=True, exist_ok=True)
    checkpoint = CACHE / f"cpnet_full_e{epochs}.pt"
    record_path = checkpoint.with_suffix(".json")
    if checkpoint.exists() and record_path.exists():
        return checkpoint, json.loads(record_path.read_text())
    with tempfile.TemporaryDirectory(prefix="bench-cp-") as tmp:
        init = Path(tmp) / "init.pt"
        torch.save(to_cellpose_state_dict(widened_generalist()), init)
        training_data(Path(tmp) / "train.npz")
        log(f"training a Cellpose-width checkpoint with cellpose's train_seg ({epochs} epochs)")
        record = cellpose("train", str(Path(tmp) / "train.npz"), "--out", str(checkpoint),
                          "--nbase", *map(str, FULL), "--epochs", str(epochs),
                          "--init", str(init), "--learning-rate", "0.002")
    record_path.write_text(json.dumps(record, indent=1))
    return checkpoint, record


def test_images(n: int, size: int) -> tuple[list[np.ndarray], list[float]]:
    images, diameters = [], []
    for i in range(n):
        style = STYLES[i % len(STYLES)]
        sample = generate(style, seed=sample_seed(style, i, seed=3), shape=(size, size))
        images.append(sample.image[..., 0].astype(np.uint16))
        diameters.append(round(float(sample.diameter), 1))
    return images, diameters


def run_ours(zoo: Zoo, images: list[np.ndarray], diameters: list[float], *, layout: str,
             batch: int, repeats: int) -> tuple[list[float], list[np.ndarray]]:
    params = [PredictParams(diameter=d, layout=layout, batch_size=batch) for d in diameters]
    zoo.segment(images[0], model=NAME, params=params[0])  # warm-up: numba, export, allocations
    seconds, masks = [], []
    for image, p in zip(images, params):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            labels = zoo.segment(image, model=NAME, params=p).prediction.labels
            times.append(time.perf_counter() - start)
        seconds.append(statistics.median(times))
        masks.append(labels)
    return seconds, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path)
    args = parser.parse_args()
    if not CELLPOSE_PYTHON.exists():
        raise SystemExit("no bench/.venv-cellpose: run `bash bench/setup_cellpose.sh` first")
    run = Run("cellpose_import", "An imported Cellpose checkpoint end to end against cellpose "
              "3.1.1.2 on the same images", vars(args))
    torch.set_num_threads(args.threads)
    if args.checkpoint is not None:
        checkpoint, trained = args.checkpoint, {"given": str(args.checkpoint)}
    else:
        checkpoint, trained = make_checkpoint(args.epochs)
    images, diameters = test_images(args.images, args.size)
    with tempfile.TemporaryDirectory(prefix="bench-cellpose-import-") as tmp:
        work = Path(tmp)
        np.savez(work / "images.npz", **{f"image_{i}": im for i, im in enumerate(images)})
        log(f"cellpose 3.1.1.2: CellposeModel.eval on {len(images)} images")
        ref = cellpose("eval", str(checkpoint), str(work / "images.npz"), "--diameter",
                       *map(str, diameters), "--out", str(work / "ref.npz"),
                       "--repeats", str(args.repeats), "--threads", str(args.threads))
        with np.load(work / "ref.npz") as data:
            ref_masks = [data[f"masks_{i}"] for i in range(len(images))]
            ref_seconds = [float(np.median(data[f"seconds_{i}"])) for i in range(len(images))]
        settings = Settings(home=work / "home", device="cpu")
        import_checkpoint(Registry.default(settings), checkpoint, name=NAME)
        rows = []
        for label, backend, layout, batch in CONFIGS:
            log(f"ours: {label}")
            zoo = Zoo(settings=Settings(home=work / "home", device="cpu", backend=backend))
            seconds, masks = run_ours(zoo, images, diameters, layout=layout, batch=batch,
                                      repeats=args.repeats)
            aps = [float(average_precision(r.astype(np.int32), m.astype(np.int32),
                                           thresholds=(0.9,))[0]) for r, m in zip(ref_masks, masks)]
            rows.append({"config": label, "backend": backend, "layout": layout, "batch": batch,
                         "seconds_per_image": statistics.mean(seconds),
                         "seconds": seconds, "ap90_vs_cellpose": aps,
                         "min_ap90": min(aps), "mean_ap90": statistics.mean(aps),
                         "cells_cellpose": [int(r.max()) for r in ref_masks],
                         "cells_ours": [int(m.max()) for m in masks]})
    cellpose_mean = statistics.mean(ref_seconds)
    for row in rows:
        row["speedup"] = cellpose_mean / row["seconds_per_image"]
        row["passed"] = bool(row["speedup"] >= SPEED_TARGET and row["min_ap90"] >= AGREEMENT_TARGET)
    summary = {
        "checkpoint": {"file": checkpoint.name, "nbase": list(FULL) if args.checkpoint is None
                       else None, "bytes": checkpoint.stat().st_size,
                       "training": {k: v for k, v in trained.items() if k != "checkpoint"}},
        "images": {"count": len(images), "size": args.size, "styles": list(STYLES),
                   "diameters": diameters},
        "cellpose": {"seconds_per_image": cellpose_mean, "seconds": ref_seconds,
                     "eval": ref, "call": "CellposeModel.eval(image, diameter=D, channels=[0, 0])"},
        "ours": rows,
        "targets": {"speedup": SPEED_TARGET, "ap90": AGREEMENT_TARGET},
        "threads": args.threads,
    }
    result = results_table(summary)
    print(result.title + "\n\n" + result.markdown())
    run.write({"main": result}, summary)


def results_table(summary: dict) -> Table:
    """Each configuration of ours against cellpose: seconds per image, speed-up, agreement."""
    images, cp = summary["images"], summary["cellpose"]["seconds_per_image"]
    table = Table([
        Column("config", "ours"), Column("seconds_per_image", "s/image", ".2f"),
        Column("cellpose_seconds_per_image", "cellpose s/image", ".2f"),
        Column("speedup", "speed-up", ".2f", "×"),
        Column("min_ap90", "AP@0.9 vs cellpose, min", ".3f"),
        Column("mean_ap90", "AP@0.9 vs cellpose, mean", ".3f"),
        Column("target", f"≥ {SPEED_TARGET:g}× at AP@0.9 ≥ {AGREEMENT_TARGET:g}"),
    ], title=f"{images['count']} synthetic {images['size']}² images, Cellpose-width CPnet "
             f"({summary['checkpoint']['bytes'] / 1e6:.1f} MB), {summary['threads']} threads; "
             "cellpose 3.1.1.2 `CellposeModel.eval`")  # fmt: skip
    for row in summary["ours"]:
        table.add(config=row["config"], seconds_per_image=row["seconds_per_image"],
                  cellpose_seconds_per_image=cp, speedup=row["speedup"],
                  min_ap90=row["min_ap90"], mean_ap90=row["mean_ap90"],
                  target="met" if row["passed"] else "not met")
    return table


if __name__ == "__main__":
    main()
