"""Cold start: the first image in a fresh process with empty caches, all start-up included.

Usage:
    .venv/bin/python bench/bench_start.py [--repeats 3] [--image samples/demo.tif]

Each run is ``zoo segment IMAGE --channels 0,1 --out OUT`` in a new process, timed from the
process start to its exit, with a new empty ``ZOO_HOME`` (so no model cache and no compiled
kernels: ``NUMBA_CACHE_DIR`` is removed from the environment) for the cold runs, and again with
the ``ZOO_HOME`` the cold run filled (compiled kernels kept) for the warm runs. Reference:
``python -c "import torch"`` in the same interpreter, the floor any torch tool pays. The
target (issue #10) is the cold figure: ≤ 8 s on the 2-core machine.
Results go to bench/results/start.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Column, Run, Table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 8.0


def timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image", type=Path, default=ROOT / "samples" / "demo.tif")
    args = parser.parse_args()
    run = Run("start", "First image in a fresh process: cold (empty caches) and warm", vars(args))
    zoo = shutil.which("zoo", path=str(Path(sys.executable).parent)) or "zoo"
    base = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    seconds: dict[str, list[float]] = {"import torch": [], "cold": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        work = Path(tmp)
        for repeat in range(args.repeats):
            home = work / f"home-{repeat}"
            env = {**base, "ZOO_HOME": str(home), "ZOO_OFFLINE": "1"}
            segment = [zoo, "segment", str(args.image.resolve()), "--channels", "0,1",
                       "--out", str(work / f"out-{repeat}")]
            seconds["import torch"].append(timed([sys.executable, "-c", "import torch"], env, work))
            seconds["cold"].append(timed(segment, env, work))
            seconds["warm"].append(timed(segment, env, work))
            print(f"run {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in seconds.items()),
                  flush=True)
    median = {k: float(np.median(v)) for k, v in seconds.items()}
    table = Table([Column("case", "case"), Column("seconds", "median", ".1f", " s"),
                   Column("runs", "runs"), Column("over_torch", "over import torch", ".1f", "×"),
                   Column("target", f"≤ {TARGET_S:g} s")],
                  title=f"zoo segment {args.image.name} in a new process, load average "
                        f"{os.getloadavg()[0]:.1f}")
    for case, value in median.items():
        table.add(case=case, seconds=value, runs=" ".join(f"{v:.1f}" for v in seconds[case]),
                  over_torch=value / median["import torch"],
                  target=("PASS" if value <= TARGET_S else "FAIL") if case == "cold" else "")
    print("\n" + table.markdown())
    run.write({"main": table}, {"target_s": TARGET_S, "cold_s": median["cold"],
                                "warm_s": median["warm"], "passed": median["cold"] <= TARGET_S})


if __name__ == "__main__":
    main()
