"""End-to-end predictor benchmark on one large image: seconds per stage, on CPU.

Usage:
    .venv/bin/python bench/bench_predict.py [--model FILE.safetensors] [--size 2048]
        [--width cellpose|small] [--backend torch onnx]

The reference column is the same prediction done the naive way: one tile at a time (batch
size 1) with the torch backend, which is how a plain loop over tiles would run it.
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
from zoo.data.shapes import ShapeParams, random_labels  # noqa: E402
from zoo.model import SegmentationModel  # noqa: E402
from zoo.nets.cpnet import NetConfig  # noqa: E402
from zoo.params import PredictParams  # noqa: E402
from zoo.predict import Predictor  # noqa: E402
from zoo.settings import Settings  # noqa: E402

WIDTHS = {"cellpose": (2, 32, 64, 128, 256), "small": (2, 16, 32, 64, 128)}
STAGES = ("preprocess", "diameter", "resize", "network", "postprocess", "total")


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

    if args.model:
        model = SegmentationModel.load(args.model)
    else:
        model = SegmentationModel.create(NetConfig(channels=WIDTHS[args.width]), diam_mean=30.0)
    image = synthetic_image(args.size, diameter=model.diam_mean)
    params = PredictParams(diameter=model.diam_mean, batch_size=8)
    runs = {}
    for backend in args.backend:
        settings = Settings(backend=backend, device="cpu", home=Path(tempfile.mkdtemp()))
        predictor = Predictor(model, settings)
        predictor.predict(image[:768, :768], params)  # warm-up at full batches: compile, export
        runs[f"{backend}, batch 8"] = predictor.predict(image, params)
    naive = Predictor(model, Settings(device="cpu"))
    naive.predict(image[:768, :768], replace(params, batch_size=1))
    runs["torch, batch 1 (reference)"] = naive.predict(image, replace(params, batch_size=1))

    print(f"image {args.size}², {len(model.net.state_dict())} tensors, "
          f"{sum(p.numel() for p in model.net.parameters()) / 1e6:.2f}M parameters, "
          f"torch threads {torch.get_num_threads()}")
    print("\n| stage | " + " | ".join(runs) + " |")
    print("| --- |" + " ---: |" * len(runs))
    for stage in STAGES:
        row = [f"{r.timings.get(stage, 0.0):.2f}" for r in runs.values()]
        print(f"| {stage} (s) | " + " | ".join(row) + " |")
    print("| cells | " + " | ".join(str(r.n_cells) for r in runs.values()) + " |")


if __name__ == "__main__":
    main()
