"""``zoo segment``'s pipeline against a plain loop over ``zoo.segment``, on CPU.

Usage:
    .venv/bin/python bench/bench_segment_cli.py [--n 200] [--size 512] [--workers W]
        [--torch-threads T] [--rounds R]

N synthetic two-channel images (the six styles in turn) are written to a temporary folder
first (not timed). Then, in one process and on one shared ``Zoo``, already warmed up (every
model the images route to loaded, numba compiled):

- plain loop: for each file, ``read_image`` → ``zoo.segment(image, channels=...)`` (route,
  network, flows → masks, one image at a time) → ``write_segmentation`` (the same TIFF);
- pipeline: ``zoo.cli.batch.segment_local``, the engine of ``zoo segment`` (read + route +
  network in the main thread, flows → masks + writing in W worker threads, bounded queue).

Both exclude interpreter start-up and model loading; both write ``<stem>_masks.tif``, and the
script checks the two sets of masks are identical. ``--torch-threads`` sets torch's intra-op
threads for both runs (after warm-up, since initialising numba's threading layer can reset
the OpenMP thread count); the default leaves torch's own choice. With ``--rounds R`` the
two runs alternate (loop first in even rounds, pipeline first in odd ones, so a drift in
machine load hits both alike) and the table shows each one's median. Writes
bench/results/segment_cli.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numba  # noqa: E402
from _results import Column, Run, Table  # noqa: E402

from zoo import io  # noqa: E402
from zoo import oneliners as api  # noqa: E402
from zoo.cli.batch import Failure, Outputs, segment_local  # noqa: E402
from zoo.data.synthetic import STYLES, generate  # noqa: E402

CHANNELS = "0,1"


def write_images(folder: Path, n: int, size: int) -> list[Path]:
    paths = []
    for i in range(n):
        style = STYLES[i % len(STYLES)]
        sample = generate(style, seed=1000 + i, shape=(size, size))
        path = folder / f"{i:04d}_{style}.tif"
        tifffile.imwrite(path, np.moveaxis(sample.image, -1, 0).astype(np.uint16),
                         metadata={"axes": "CYX"})
        paths.append(path)
    return paths


def plain_loop(paths: list[Path], out: Path) -> float:
    start = time.perf_counter()
    for path in paths:
        result = api.segment(io.read_image(path), channels=CHANNELS)
        io.write_segmentation(out, path.stem, result.prediction.labels, "tiff")
    return time.perf_counter() - start


def pipeline(paths: list[Path], out: Path, workers: int) -> float:
    outputs = Outputs(out, "tiff", overlay=False)
    start = time.perf_counter()
    outcomes = list(segment_local(api.default_zoo(), paths, outputs=outputs, model="auto",
                                  params=api.predict_params(channels=CHANNELS),
                                  workers=workers))
    seconds = time.perf_counter() - start
    failed = [o for o in outcomes if isinstance(o, Failure)]
    if failed:
        raise SystemExit(f"pipeline failed on {failed[0].line()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="number of images")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="pipeline worker threads (zoo segment's default: CPUs)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads for both runs (default: torch's)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds")
    args = parser.parse_args()
    run = Run("segment_cli", "zoo segment's pipeline against a plain loop over zoo.segment",
              vars(args))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("in", "loop", "pipeline"):
            (root / name).mkdir()
        paths = write_images(root / "in", args.n, args.size)
        warm = [paths[i] for i in range(min(len(STYLES), len(paths)))]
        plain_loop(warm, root / "loop")  # load every routed model, compile numba
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        runs = {"loop": lambda: plain_loop(paths, root / "loop"),
                "pipeline": lambda: pipeline(paths, root / "pipeline", args.workers)}
        seconds: dict[str, list[float]] = {"loop": [], "pipeline": []}
        for round_ in range(args.rounds):
            for name in (("loop", "pipeline") if round_ % 2 == 0 else ("pipeline", "loop")):
                seconds[name].append(runs[name]())
        same = sum(np.array_equal(io.read_image(root / "loop" / f"{p.stem}_masks.tif"),
                                  io.read_image(root / "pipeline" / f"{p.stem}_masks.tif"))
                   for p in paths)
    report(args, {name: float(np.median(values)) for name, values in seconds.items()},
           seconds, same, run)


def report(args, median: dict[str, float], seconds: dict[str, list[float]], same: int,
           run: Run) -> None:
    title = (f"{args.n} images {args.size}², channels {CHANNELS}, model auto, CPU: "
             f"torch {torch.get_num_threads()} threads, numba {numba.get_num_threads()}, "
             f"pipeline workers {args.workers}, {args.rounds} round(s)")
    table = Table([Column("run", "run"), Column("seconds", "seconds", ".1f", " s"),
                   Column("images_per_s", "images/s", ".2f"),
                   Column("vs_loop", "throughput vs plain loop", ".2f", "×")], title=title)
    for name, label in (("loop", "plain loop (zoo.segment per image)"),
                        ("pipeline", "zoo segment pipeline")):
        table.add(run=label, seconds=median[name], images_per_s=args.n / median[name],
                  vs_loop=median["loop"] / median[name])
    print(f"{title}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("\n" + table.markdown())
    print(f"\nidentical masks: {same}/{args.n}")
    if args.rounds > 1:
        for name, values in seconds.items():
            print(f"{name} per round (s): {', '.join(f'{v:.1f}' for v in values)}")
    run.write({"main": table}, {"identical_masks": same, "images": args.n,
                                "seconds_per_round": seconds})


if __name__ == "__main__":
    main()
