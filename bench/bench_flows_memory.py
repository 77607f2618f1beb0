"""Memory benchmark of the flow code: peak RSS on one large image, each side in its own process.

Usage:

    .venv/bin/python bench/bench_flows_memory.py [--size 8192] [--with-cellpose]

Draws an 8192² label image of about 20,000 touching cells (``zoo.data.shapes``, fixed seed),
then runs, each in a fresh subprocess so that peaks do not mix:

* ours (this venv): ``masks_to_flows`` then ``flows_to_masks`` with flow QC on;
* with ``--with-cellpose``, cellpose 3.1.1.2 (bench/.venv-cellpose, bench/_cellpose_ref.py):
  ``dynamics.masks_to_flows`` then ``dynamics.compute_masks`` with the same settings.
  Slow: on 2 cores it takes many minutes.

Each worker warms up on a small image, loads the labels and builds cellprob (the baseline),
then resets the peak RSS (``/proc/self/clear_refs``) before each stage, so a stage's peak
is its own. The table gives, per stage, the peak RSS, the peak above the baseline and the
seconds, with the input's size for context. It is also written to
bench/results/flows_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import Column, Run, Table
from _rss import current_rss_mb, peak_rss_mb, reset_peak
from bench_flows import CELLPOSE_PYTHON, CELLPOSE_SCRIPT, FLOW_PARAMS, RESULTS_DIR, cellprob_for

from zoo.data.shapes import ShapeParams, random_labels

# Touching cells: ~20,000 of them at 8192² (about 3,400 px per cell, 64% foreground).
CELLS = ShapeParams(diameter=55.0, density=0.82)
STAGES = ("masks_to_flows", "flows_to_masks")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_ours_worker(labels_path: Path, json_path: Path) -> None:
    """In a fresh process: warm up, load, then measure each stage of our implementation."""
    from zoo import flows

    params = flows.FlowParams(**FLOW_PARAMS)
    small = random_labels((128, 128), seed=1)
    flows.flows_to_masks(flows.masks_to_flows(small), cellprob_for(small), params)

    labels = np.load(labels_path)
    cellprob = cellprob_for(labels)
    record: dict[str, Any] = {"baseline_rss_mb": current_rss_mb(), "peak_rss_mb": {}}
    resettable = reset_peak()
    start = time.perf_counter()
    unit_flows = flows.masks_to_flows(labels)
    record["masks_to_flows_median_s"] = time.perf_counter() - start
    record["peak_rss_mb"]["masks_to_flows"] = peak_rss_mb()

    resettable &= reset_peak()
    start = time.perf_counter()
    masks = flows.flows_to_masks(unit_flows, cellprob, params)
    record["flows_to_masks_median_s"] = time.perf_counter() - start
    record["peak_rss_mb"]["flows_to_masks"] = peak_rss_mb()
    record["peak_rss_per_stage"] = resettable
    record["n_masks"] = int(masks.max())
    json_path.write_text(json.dumps(record, indent=2))


def _run_ours(labels_path: Path, work_dir: Path) -> dict[str, Any]:
    json_path = work_dir / "ours_memory.json"
    command = [sys.executable, __file__, "--worker-ours", str(labels_path), str(json_path)]
    subprocess.run(command, check=True)
    return json.loads(json_path.read_text())


def _run_cellpose(labels_path: Path, work_dir: Path) -> dict[str, Any]:
    json_path = work_dir / "cellpose_memory.json"
    command = [
        str(CELLPOSE_PYTHON), str(CELLPOSE_SCRIPT), str(labels_path),
        "--out-dir", str(work_dir), "--repeats", "1", "--json", str(json_path),
        "--niter", str(FLOW_PARAMS["niter"]),
        "--cellprob-threshold", str(FLOW_PARAMS["cellprob_threshold"]),
        "--flow-threshold", str(FLOW_PARAMS["flow_threshold"]),
        "--min-size", str(FLOW_PARAMS["min_size"]),
    ]  # fmt: skip
    env = {**os.environ, "CELLPOSE_LOCAL_MODELS_PATH": str(work_dir / "cellpose-models")}
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return json.loads(json_path.read_text())["images"][0]


def memory_table(records: dict[str, dict[str, Any]], *, size: int, n_cells: int) -> Table:
    """Per implementation and stage: seconds, peak RSS, peak above the baseline."""
    table = Table([
        Column("implementation", "implementation"), Column("stage", "stage"),
        Column("seconds", "seconds", ".1f", " s"),
        Column("peak_rss_mb", "peak RSS", ",.0f", " MB"),
        Column("above_baseline_mb", "peak above baseline", ",.0f", " MB"),
        Column("baseline_rss_mb", "baseline RSS", ",.0f", " MB"),
    ], title=f"{size}², {n_cells:,} cells")  # fmt: skip
    for name, record in records.items():
        baseline = record["baseline_rss_mb"]
        for stage in STAGES:
            peak = record["peak_rss_mb"][stage]
            table.add(implementation=name, stage=stage.replace("_to_", "→"),
                      seconds=record[stage + "_median_s"], peak_rss_mb=peak,
                      above_baseline_mb=peak - baseline, baseline_rss_mb=baseline)
    return table


def footnote(records: dict[str, dict[str, Any]], *, input_mb: float) -> str:
    per_stage = all(r.get("peak_rss_per_stage") for r in records.values())
    return (
        f"Labels int32 {input_mb:.0f} MB, flows float32 {2 * input_mb:.0f} MB. Each "
        "implementation ran in its own process; the baseline is its RSS after imports, "
        "warm-up, loading the labels and building cellprob. "
        + ("Peaks were reset before each stage." if per_stage
           else "Peaks could not be reset: a stage's peak includes earlier stages.")
    )


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker-ours":
        run_ours_worker(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description="Peak RSS of masks→flows→masks, ours vs cellpose.")
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--with-cellpose", action="store_true", help="also run cellpose (slow)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    run = Run("flows_memory", "Flows: peak memory on one large image, ours against cellpose "
              "3.1.1.2", vars(args))
    if args.with_cellpose and not CELLPOSE_PYTHON.exists():
        _log(
            f"The cellpose reference venv is missing ({CELLPOSE_PYTHON}).\n"
            "Create it once with:  bash bench/setup_cellpose.sh"
        )
        return 2
    _log(f"drawing {args.size}² labels ...")
    labels = random_labels((args.size, args.size), CELLS, seed=args.size)
    n_cells, input_mb = int(labels.max()), labels.nbytes / 2**20
    records: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-flows-memory-") as tmp:
        labels_path = Path(tmp) / f"labels_{args.size}.npy"
        np.save(labels_path, labels)
        del labels
        _log("ours ...")
        records["ours"] = _run_ours(labels_path, Path(tmp))
        if args.with_cellpose:
            _log("cellpose 3.1.1.2 (slow) ...")
            records["cellpose 3.1.1.2"] = _run_cellpose(labels_path, Path(tmp))
    table = memory_table(records, size=args.size, n_cells=n_cells)
    print(table.markdown() + "\n\n" + footnote(records, input_mb=input_mb))
    summary = {"size": args.size, "n_cells": n_cells, "input_mb": input_mb,
               "peaks_per_stage": all(r.get("peak_rss_per_stage") for r in records.values()),
               "flow_params": FLOW_PARAMS}
    run.write({"main": table}, summary, out_dir=args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
