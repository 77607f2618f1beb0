"""End-to-end predictor benchmark on one large image: seconds per stage, on CPU.

Usage:
    .venv/bin/python bench/bench_predict.py [--model FILE.safetensors] [--size 2048]
        [--width cellpose|small] [--backend torch onnx]

The reference column is the same prediction done the naive way: one tile at a time (batch
size 1) with the torch backend, which is how a plain loop over tiles would run it.
Writes bench/results/predict.json.
Without --model, a freshly initialised network of the chosen width is used; its masks are
then meaningless but every stage runs on real sizes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _results import Column, Run, Table  # noqa: E402

from zoo.data.shapes import ShapeParams, random_labels  # noqa: E402
from zoo.model import SegmentationModel  # noqa: E402
from zoo.nets.cpnet import NetConfig  # noqa: E402
from zoo.params import PredictParams  # noqa: E402
from zoo.predict import Predictor  # noqa: E402
from zoo.settings import Settings  # noqa: E402

WIDTHS = {"cellpose": (2, 32, 64, 128, 256), "small": (2, 16, 32, 64, 128)}
STAGES = ("preprocess", "diameter", "resize", "network", "postprocess", "total")
REFERENCE = "torch, batch 1 (reference)"


def synthetic_image(size: int, diameter: float) -> np.ndarray:
    """A fluorescence-like test image: blurred cells of varied brightness plus noise."""
    from scipy import ndimage

    labels = random_labels((size, size), ShapeParams(diameter=diameter), seed=7)
    rng = np.random.default_rng(7)
    brightness = rng.uniform(0.4, 1.0, size=labels.max() + 1)
    brightness[0] = 0.05
    image = ndimage.gaussian_filter(brightness[labels].astype(np.float32), 1.5)
    return rng.poisson(image * 400).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--width", choices=sorted(WIDTHS), default="cellpose")
    parser.add_argument("--backend", nargs="+", default=["torch", "onnx"])
    args = parser.parse_args()
    run = Run("predict", "Predictor end to end on one large image, seconds per stage", vars(args))

    if args.model:
        model = SegmentationModel.load(args.model)
    else:
        model = SegmentationModel.create(NetConfig(channels=WIDTHS[args.width]), diam_mean=30.0)
    image = synthetic_image(args.size, diameter=model.diam_mean)
    params = PredictParams(diameter=model.diam_mean, batch_size=8)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as home:
        for backend in args.backend:
            predictor = Predictor(model, Settings(backend=backend, device="cpu", home=Path(home)))
            predictor.predict(image[:768, :768], params)  # warm-up at full batches: export
            runs[f"{backend}, batch 8"] = predictor.predict(image, params)
        naive = Predictor(model, Settings(device="cpu", home=Path(home)))
        naive.predict(image[:768, :768], replace(params, batch_size=1))
        runs[REFERENCE] = naive.predict(image, replace(params, batch_size=1))

    n_parameters = sum(p.numel() for p in model.net.parameters())
    print(f"image {args.size}², {n_parameters / 1e6:.2f}M parameters, "
          f"torch threads {torch.get_num_threads()}")
    table = Table([Column("run", "run")]
                  + [Column(s, s, ".2f", " s") for s in STAGES]
                  + [Column("cells", "cells", ","),
                     Column("speedup", "total vs reference", ".2f", "×")],
                  title=f"{args.size}² image, {n_parameters / 1e6:.2f}M parameters, CPU")
    reference = runs[REFERENCE].timings["total"]
    for name, result in runs.items():
        table.add(run=name, **{s: result.timings.get(s, 0.0) for s in STAGES},
                  cells=result.n_cells, speedup=reference / result.timings["total"])
    print("\n" + table.markdown())
    run.write({"main": table}, {"parameters": n_parameters,
                                "model": str(args.model) if args.model else f"random {args.width}"})


if __name__ == "__main__":
    main()
