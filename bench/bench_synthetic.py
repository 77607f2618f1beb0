"""Synthetic generator speed: images per second per style at 256², against the generator at
another git ref (default: 6200ebb, the last commit before domain randomisation, six styles).

Usage:
    .venv/bin/python bench/bench_synthetic.py [--n 20] [--ref 6200ebb] [--size 256]

Each side draws ``--n`` images per style (seeds 1000..), one thread (BLAS/FFT limited with
threadpoolctl), after one warm-up image (numba's cache). The figure is CPU seconds of this
process per image (``time.process_time``), which other jobs on a shared machine inflate far
less than wall time; wall-clock images/s are printed beside it. The reference is the ref's
``zoo/data/synthetic.py`` loaded as a module of its own (it must still import against the
current tree). Writes ``bench/results/synthetic.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _results import Column, Run, Table  # noqa: E402

from zoo.data import synthetic  # noqa: E402

#: The six-style generator before domain randomisation: the last commit on main before it.
REFERENCE_REF = "6200ebb"


def load_reference(ref: str):
    """The generator module at git ``ref``, or None if it cannot be read or imported."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:zoo/data/synthetic.py"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    folder = Path(tempfile.mkdtemp(prefix="bench_synthetic_"))
    path = folder / "synthetic_reference.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("synthetic_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except Exception:  # an old tree that no longer imports is reported as missing
        return None
    return module


def rate(module, style: str, n: int, size: int) -> tuple[float, float]:
    """``(images per CPU second, images per wall second)`` for ``n`` images of ``style``."""
    module.generate(style, seed=0, shape=(size, size))
    cpu, wall = time.process_time(), time.perf_counter()
    for index in range(n):
        module.generate(style, seed=1000 + index, shape=(size, size))
    return n / (time.process_time() - cpu), n / (time.perf_counter() - wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--ref", default=REFERENCE_REF)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    run = Run("synthetic", "Synthetic generator speed against the generator before domain "
              "randomisation", vars(args))
    reference = load_reference(args.ref)
    table = Table([
        Column("style", "style"),
        Column("ours_cpu", "ours, images per CPU s", ".1f"),
        Column("ours_wall", "ours, images per wall s", ".1f"),
        Column("ref_cpu", "reference, images per CPU s", ".1f"),
        Column("ref_wall", "reference, images per wall s", ".1f"),
        Column("ratio", "ours / reference (CPU)", ".2f", "×"),
    ], title=f"synthetic images/s at {args.size}², {args.n} per style, one thread; reference: "
             f"the generator at {args.ref}")  # fmt: skip
    with threadpool_limits(1):
        for style in synthetic.STYLES:
            ours = rate(synthetic, style, args.n, args.size)
            theirs = (rate(reference, style, args.n, args.size)
                      if reference is not None and style in reference.STYLES else None)
            table.add(style=style, ours_cpu=ours[0], ours_wall=ours[1],
                      ref_cpu=theirs[0] if theirs else None,
                      ref_wall=theirs[1] if theirs else None,
                      ratio=ours[0] / theirs[0] if theirs else None)
    print(f"{table.title}; load average {os.getloadavg()[0]:.1f}")
    print(table.markdown())
    run.write({"main": table}, {"reference": args.ref, "reference_found": reference is not None})


if __name__ == "__main__":
    main()
