"""Write samples/demo.tif: a synthetic image that shows routing, drawn from seeds no split uses.

Usage:
    .venv/bin/python samples/make_demo.py [--style cyto] [--size 384]

It draws images of ``--style`` (two channels: cytoplasm and nuclei) from seeds 50_000 and up,
far from every split of ``zoo build`` (``zoo.evaluate.split_seed``: seeds 0-2), and keeps
the first one the shipped zoo routes, in distribution, to a specialist with a unanimous
5-NN vote: what ``make demo`` (``--channels 0,1``) should show. It never looks at masks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from zoo.data.synthetic import generate  # noqa: E402
from zoo.params import PredictParams  # noqa: E402
from zoo.pipeline import Zoo  # noqa: E402
from zoo.settings import Settings  # noqa: E402

FIRST_SEED = 50_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", default="cyto")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "samples" / "demo.tif")
    args = parser.parse_args()
    zoo = Zoo(settings=Settings.from_env(device="cpu"))
    params = PredictParams(cyto_channel=0, nucleus_channel=1)
    for seed in range(FIRST_SEED, FIRST_SEED + args.tries):
        sample = generate(args.style, seed=seed, shape=(args.size, args.size))
        if sample.image.ndim != 3 or sample.image.shape[-1] < 2:
            raise SystemExit(f"style {args.style!r} has no second channel for --channels 0,1")
        route = zoo.route(sample.image, params)
        print(f"seed {seed}: {route.model}: {route.reason}")
        if not route.ood and route.model != zoo.router.generalist and route.confidence == 1.0:
            image = np.moveaxis(sample.image[..., :2], -1, 0)  # (2, Y, X): channels first
            if not np.issubdtype(image.dtype, np.integer):  # as a microscope writes it
                image = np.round(np.clip(image, 0, 1) * 65535).astype(np.uint16)
            tifffile.imwrite(args.out, image, photometric="minisblack",
                             metadata={"axes": "CYX"}, compression="zlib")
            print(f"wrote {args.out} (style {args.style}, seed {seed}, {route.model})")
            return
    raise SystemExit(f"no {args.style} image among {args.tries} seeds routes to a specialist")


if __name__ == "__main__":
    main()
