"""Synthetic generator speed: images per second per style at 256², against the generator on
another git ref (default ``main``; before domain randomisation, six styles).

Usage:
    .venv/bin/python bench/bench_synthetic.py [--n 20] [--ref main] [--size 256]

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
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from zoo.data import synthetic  # noqa: E402


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
    parser.add_argument("--ref", default="main")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    reference = load_reference(args.ref)
    rows = []
    with threadpool_limits(1):
        for style in synthetic.STYLES:
            ours = rate(synthetic, style, args.n, args.size)
            theirs = (rate(reference, style, args.n, args.size)
                      if reference is not None and style in reference.STYLES else None)
            rows.append({"style": style, "ours_cpu": ours[0], "ours_wall": ours[1],
                         "ref_cpu": theirs[0] if theirs else None,
                         "ref_wall": theirs[1] if theirs else None})
    print(f"synthetic images/s at {args.size}², one thread, CPU time (wall in brackets); "
          f"reference = {args.ref}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'style':12s} {'ours':>16s} {'reference':>16s} {'ours/ref':>9s}")
    for row in rows:
        ref = (f"{row['ref_cpu']:6.1f} ({row['ref_wall']:5.1f})" if row["ref_cpu"] else "    n/a")
        ratio = f"{row['ours_cpu'] / row['ref_cpu']:8.2f}x" if row["ref_cpu"] else "      -"
        print(f"{row['style']:12s} {row['ours_cpu']:6.1f} ({row['ours_wall']:5.1f})    "
              f"{ref:>16s} {ratio}")
    out = ROOT / "bench" / "results" / "synthetic.json"
    out.write_text(json.dumps({"size": args.size, "n": args.n, "ref": args.ref,
                               "load_average": os.getloadavg()[0], "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
