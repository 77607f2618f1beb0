"""Reference timings of cellpose 3.1.1.2's flow code, run INSIDE bench/.venv-cellpose.

Usage (normally called by bench/bench_flows.py and bench/bench_flows_memory.py):

    bench/.venv-cellpose/bin/python bench/_cellpose_ref.py LABELS.npy|DIR ... \
        --out-dir DIR [--repeats 3] [--json timings.json]

For each ``(Y, X)`` label image (0 = background, 1..N = cells) it times, on the CPU:

* masks -> flows: ``dynamics.masks_to_flows(labels, device=cpu)``, which on a CPU device
  dispatches to ``masks_to_flows_cpu`` (a per-cell numba diffusion);
* flows -> masks: ``dynamics.compute_masks(5 * flows, cellprob, niter=200,
  cellprob_threshold=0, flow_threshold=0.4, min_size=15, device=cpu)`` with cellprob
  = +5 inside cells and -5 outside. cellpose's network predicts flows at 5x the scale of
  ``masks_to_flows``: ``compute_masks`` divides ``dP`` by 5 before following it and
  ``metrics.flow_error`` compares ``masks_to_flows(masks)`` with ``dP / 5``, so ``dP`` is
  5 x its own ``masks_to_flows`` output. Its stages are timed separately by wrapping the
  module functions ``compute_masks`` calls: ``follow_flows``, ``get_masks_torch``,
  ``remove_bad_flow_masks`` (flow QC) and ``utils.fill_holes_and_remove_small_masks``.

Numba and torch are warmed up on a small image first. Masks are saved as
``<stem>_cellpose_masks.npy`` in ``--out-dir``; timings (medians and every repeat),
peak RSS per stage and versions go to stdout as JSON (and to ``--json`` if given).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Nothing may be downloaded or written under ~/.cellpose: point the model dir at a throwaway.
os.environ.setdefault("CELLPOSE_LOCAL_MODELS_PATH", tempfile.mkdtemp(prefix="cellpose-models-"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from cellpose import dynamics, metrics, utils  # noqa: E402
from cellpose.version import version as cellpose_version  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rss import current_rss_mb, peak_rss_mb, reset_peak  # noqa: E402

CPU = torch.device("cpu")
# get_masks_torch builds a sparse COO tensor; torch 2.13 warns about invariant checks each call.
warnings.filterwarnings("ignore", message="Sparse invariant checks")
STAGES = ("follow_flows", "get_masks", "flow_qc", "fill_holes")
_stage_seconds: dict[str, float] = {}


def _timed(stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = function(*args, **kwargs)
        _stage_seconds[stage] = _stage_seconds.get(stage, 0.0) + time.perf_counter() - start
        return result

    return wrapper


def _install_stage_timers() -> None:
    """Wrap the functions compute_masks looks up at call time, so one call yields stage times."""
    dynamics.follow_flows = _timed("follow_flows", dynamics.follow_flows)
    dynamics.get_masks_torch = _timed("get_masks", dynamics.get_masks_torch)
    dynamics.remove_bad_flow_masks = _timed("flow_qc", dynamics.remove_bad_flow_masks)
    utils.fill_holes_and_remove_small_masks = _timed(
        "fill_holes", utils.fill_holes_and_remove_small_masks
    )


def cellpose_flows(labels: np.ndarray) -> np.ndarray:
    """cellpose's unit flows ``(2, Y, X)`` float64 for ``(Y, X)`` labels (CPU path)."""
    return dynamics.masks_to_flows(labels, device=CPU)


def cellpose_masks(flows: np.ndarray, cellprob: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    """cellpose's masks from unit ``flows``; ``dP`` is rescaled to the network's 5x scale."""
    net_flows = (5.0 * flows).astype(np.float32)
    return dynamics.compute_masks(
        net_flows,
        cellprob,
        niter=args.niter,
        cellprob_threshold=args.cellprob_threshold,
        flow_threshold=args.flow_threshold,
        min_size=args.min_size,
        device=CPU,
    )


def _warm_up(args: argparse.Namespace) -> None:
    yy, xx = np.mgrid[:96, :96]
    labels = np.zeros((96, 96), np.int32)
    for index, (cy, cx) in enumerate([(24, 24), (24, 70), (70, 30), (66, 68)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 15**2] = index
    cellprob = np.where(labels > 0, 5.0, -5.0).astype(np.float32)
    cellpose_masks(cellpose_flows(labels), cellprob, args)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def run_one(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    labels = np.load(path).astype(np.int32, copy=False)
    cellprob = np.where(labels > 0, 5.0, -5.0).astype(np.float32)
    record: dict[str, Any] = {
        "file": path.name,
        "shape": list(labels.shape),
        "n_cells": int(labels.max()),
        "baseline_rss_mb": current_rss_mb(),
        "masks_to_flows_s": [],
        "flows_to_masks_s": [],
        **{f"{stage}_s": [] for stage in STAGES},
    }
    peaks = {"masks_to_flows": 0.0, "flows_to_masks": 0.0}
    resettable = True
    for _ in range(args.repeats):
        resettable &= reset_peak()
        start = time.perf_counter()
        flows = cellpose_flows(labels)
        record["masks_to_flows_s"].append(time.perf_counter() - start)
        peaks["masks_to_flows"] = max(peaks["masks_to_flows"], peak_rss_mb())

        _stage_seconds.clear()
        resettable &= reset_peak()
        start = time.perf_counter()
        masks = cellpose_masks(flows, cellprob, args)
        record["flows_to_masks_s"].append(time.perf_counter() - start)
        peaks["flows_to_masks"] = max(peaks["flows_to_masks"], peak_rss_mb())
        for stage in STAGES:
            record[f"{stage}_s"].append(_stage_seconds.get(stage, 0.0))
        del flows
    masks_path = args.out_dir / f"{path.stem}_cellpose_masks.npy"
    np.save(masks_path, masks)
    record["masks_file"] = str(masks_path)
    record["n_masks"] = int(masks.max())
    record["ap_vs_truth_cellpose_metric"] = [
        float(v) for v in metrics.average_precision([labels], [masks.astype(np.int32)])[0][0]
    ]
    record["peak_rss_mb"] = peaks
    record["peak_rss_per_stage"] = resettable
    for key in ["masks_to_flows_s", "flows_to_masks_s", *(f"{s}_s" for s in STAGES)]:
        record[key.removesuffix("_s") + "_median_s"] = _median(record[key])
    return record


def _label_files(inputs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        files.extend(sorted(item.glob("*.npy")) if item.is_dir() else [item])
    missing = [f for f in files if not f.is_file()]
    if missing or not files:
        raise SystemExit(f"no label files found (missing: {missing or inputs})")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", type=Path, nargs="+", help=".npy label files or directories")
    parser.add_argument("--out-dir", type=Path, required=True, help="where masks are saved")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--niter", type=int, default=200)
    parser.add_argument("--cellprob-threshold", type=float, default=0.0)
    parser.add_argument("--flow-threshold", type=float, default=0.4)
    parser.add_argument("--min-size", type=int, default=15)
    parser.add_argument("--no-warm-up", action="store_true")
    args = parser.parse_args()
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    _install_stage_timers()
    if not args.no_warm_up:
        _warm_up(args)
    results = {
        "versions": {
            "cellpose": cellpose_version,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "params": {
            "niter": args.niter,
            "cellprob_threshold": args.cellprob_threshold,
            "flow_threshold": args.flow_threshold,
            "min_size": args.min_size,
        },
        "images": [run_one(path, args) for path in _label_files(args.inputs)],
    }
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
