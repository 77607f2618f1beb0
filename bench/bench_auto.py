"""What ``--model auto`` costs over naming the model it picks, on the same image.

Usage:
    .venv/bin/python bench/bench_auto.py [--sizes 256 384 512 1024] [--repeats 5]

For each image the shipped zoo first routes it (``model="auto"``); then the same image is
segmented with that model named. Both runs go through ``Zoo.segment`` with the shipped zoo,
on CPU, one after the other in this process. Two measures, side by side:

- network pixels: every forward pass is counted by a runner wrapped around the real one
  (``Zoo(runners=...)``), so this ratio is exact and does not depend on machine load;
- wall time: the median of ``--repeats`` runs each, interleaved (auto, named, auto, ...).

Target (issue #10): auto ≤ 1.2× a named model. Results go to bench/results/auto.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _results import Column, Run, Table  # noqa: E402

from zoo.backends import make_runner  # noqa: E402
from zoo.data.synthetic import generate  # noqa: E402
from zoo.io import read_image  # noqa: E402
from zoo.params import PredictParams  # noqa: E402
from zoo.pipeline import Zoo  # noqa: E402
from zoo.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.2
PARAMS = PredictParams(cyto_channel=0, nucleus_channel=1)


class CountingRunner:
    """The real runner, counting the pixels it is given."""

    def __init__(self, runner) -> None:
        self.runner, self.device, self.pixels = runner, runner.device, 0

    def run(self, batch: np.ndarray):
        self.pixels += int(np.prod(batch.shape[0:1] + batch.shape[2:]))
        return self.runner.run(batch)


def images(sizes: list[int]) -> list[tuple[str, np.ndarray]]:
    found = [("samples/demo.tif", read_image(ROOT / "samples" / "demo.tif"))]
    for index, size in enumerate(sizes):
        style = ("cyto", "tissue", "nuclei", "phase")[index % 4]
        found.append((f"{style} {size}²", generate(style, seed=7_000 + size, shape=(size, size)).image))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--home", type=Path, default=ROOT / ".bench-home")
    args = parser.parse_args()
    run = Run("auto", "What --model auto costs over naming the model it picks", vars(args))
    settings = Settings.from_env(home=args.home, device="cpu")
    runners: dict[str, CountingRunner] = {}

    def counting(ref, model):
        runners[ref] = CountingRunner(make_runner(model, settings))
        return runners[ref]

    zoo = Zoo(settings=settings, runners=counting)
    table = Table([
        Column("image", "image"), Column("model", "model"),
        Column("auto_network_mpx", "auto network Mpx", ".3f"),
        Column("named_network_mpx", "named network Mpx", ".3f"),
        Column("network_ratio", "network ratio", ".2f", "×"),
        Column("auto_s", "auto", ".3f", " s"), Column("named_s", "named", ".3f", " s"),
        Column("time_ratio", "time ratio", ".2f", "×"), Column("target", f"≤ {TARGET}×"),
    ], title=f"auto against the model it picks, CPU, {torch.get_num_threads()} threads, "
             f"median of {args.repeats}")  # fmt: skip
    print(f"{table.title}, load average {os.getloadavg()[0]:.1f}")
    for name, image in images(args.sizes):
        model = zoo.segment(image, params=PARAMS).model  # warm-up, and the pick
        zoo.segment(image, model=model, params=PARAMS)
        pixels, seconds = {"auto": 0, "named": 0}, {"auto": [], "named": []}
        for repeat in range(args.repeats):
            for method, choice in (("auto", "auto"), ("named", model)):
                before = sum(r.pixels for r in runners.values())
                start = time.perf_counter()
                zoo.segment(image, model=choice, params=PARAMS)
                seconds[method].append(time.perf_counter() - start)
                if repeat == 0:
                    pixels[method] = sum(r.pixels for r in runners.values()) - before
        auto_s, named_s = float(np.median(seconds["auto"])), float(np.median(seconds["named"]))
        table.add(image=name, model=model, auto_network_mpx=pixels["auto"] / 1e6,
                  named_network_mpx=pixels["named"] / 1e6,
                  network_ratio=pixels["auto"] / pixels["named"], auto_s=auto_s,
                  named_s=named_s, time_ratio=auto_s / named_s,
                  target="PASS" if auto_s / named_s <= TARGET else "FAIL")
        print(table.markdown().splitlines()[-1])
    print("\n" + table.markdown())
    ratios = [row["time_ratio"] for row in table.rows]
    run.write({"main": table}, {"target": TARGET, "worst_time_ratio": max(ratios),
                                "passed": max(ratios) <= TARGET})


if __name__ == "__main__":
    main()
