"""Flows benchmark: ours (``zoo.flows``) against cellpose 3.1.1.2, side by side, on the CPU.

Usage:

    bash bench/setup_cellpose.sh                       # once: the reference venv
    .venv/bin/python bench/bench_flows.py [--sizes 512 2048 4096] [--repeats N]

For each size it draws synthetic touching cells (``zoo.data.shapes``, fixed seed, the same
density at every size: about 2,400 cells at 2048²), then times both implementations on the
same labels:

* masks -> flows: ours ``masks_to_flows``; cellpose ``dynamics.masks_to_flows`` (CPU path);
* flows -> masks, flow QC on: each side follows its own flows with cellprob = +5 inside
  cells and -5 outside, niter=200, cellprob_threshold=0, flow_threshold=0.4, min_size=15.
  Our flows are unit-scale; cellpose's ``compute_masks`` expects 5x (network-scale) flows,
  so it gets 5 x its own ``masks_to_flows`` output (see bench/_cellpose_ref.py).

Ours runs in this process after a warm-up; cellpose runs in bench/.venv-cellpose through
bench/_cellpose_ref.py, also warmed up. Timings are medians over ``--repeats`` (default 3
up to 2048², 1 above). Mask agreement is AP at IoU 0.9 (``zoo.metrics``). The table and the
pass/fail of each target are printed and written to bench/results/flows.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _results import RESULTS_DIR, Column, Run, Table

from zoo.data.shapes import ShapeParams, random_labels

BENCH_DIR = Path(__file__).resolve().parent
CELLPOSE_PYTHON = BENCH_DIR / ".venv-cellpose" / "bin" / "python"
CELLPOSE_SCRIPT = BENCH_DIR / "_cellpose_ref.py"

# ~2,400 touching cells at 2048² (about 1,750 px per cell); the same density at every size.
CELLS = ShapeParams(diameter=40.0, density=0.82)
CELLPROB_INSIDE = 5.0
FLOW_PARAMS = {"niter": 200, "cellprob_threshold": 0.0, "flow_threshold": 0.4, "min_size": 15}

SPEED_TARGET = 5.0  # x faster, both directions, at sizes >= SPEED_TARGET_MIN_SIZE
SPEED_AIM = 10.0  # flows -> masks, the real aim
SPEED_TARGET_MIN_SIZE = 2048
AGREEMENT_TARGET = 0.95  # AP@0.9, ours vs cellpose and each vs the true labels


@dataclass
class SizeResult:
    """One row of the table: timings in seconds (medians), AP at IoU 0.9."""

    size: int
    n_cells: int
    repeats: int
    ours_masks_to_flows_s: float
    ours_flows_to_masks_s: float
    ours_n_masks: int
    cellpose_masks_to_flows_s: float | None = None
    cellpose_flows_to_masks_s: float | None = None
    cellpose_n_masks: int | None = None
    ap90_ours_vs_cellpose: float | None = None
    ap90_ours_vs_truth: float | None = None
    ap90_cellpose_vs_truth: float | None = None
    ours_runs: dict[str, list[float]] = field(default_factory=dict)
    cellpose_detail: dict[str, Any] = field(default_factory=dict)

    @property
    def masks_to_flows_speedup(self) -> float | None:
        return _ratio(self.cellpose_masks_to_flows_s, self.ours_masks_to_flows_s)

    @property
    def flows_to_masks_speedup(self) -> float | None:
        return _ratio(self.cellpose_flows_to_masks_s, self.ours_flows_to_masks_s)


@dataclass(frozen=True)
class Target:
    """A target from the issue, checked on one size; ``passed`` is None when not measured."""

    name: str
    size: int
    value: float | None
    threshold: float
    required: bool = True

    @property
    def passed(self) -> bool | None:
        return None if self.value is None else self.value >= self.threshold


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _import_ours() -> tuple[Any, Any]:
    """``zoo.flows`` and ``zoo.metrics``, or exit with a message saying which one is missing."""
    try:
        from zoo import flows, metrics
    except ImportError as error:
        raise SystemExit(
            f"cannot import our implementation ({error}); is zoo/flows.py there?"
        ) from error
    return flows, metrics


def draw_labels(size: int) -> np.ndarray:
    """Synthetic ``(size, size)`` int32 labels; the seed is the size, so reruns agree."""
    return random_labels((size, size), CELLS, seed=size)


def cellprob_for(labels: np.ndarray) -> np.ndarray:
    """A perfect network's cell probability: +5 inside cells, -5 outside, float32."""
    return np.where(labels > 0, CELLPROB_INSIDE, -CELLPROB_INSIDE).astype(np.float32)


def time_ours(
    flows_module: Any, labels: np.ndarray, *, repeats: int
) -> tuple[dict[str, list[float]], np.ndarray]:
    """Time our masks -> flows and flows -> masks (QC on); return the times and the masks."""
    params = flows_module.FlowParams(**FLOW_PARAMS)
    cellprob = cellprob_for(labels)
    runs: dict[str, list[float]] = {"masks_to_flows_s": [], "flows_to_masks_s": []}
    masks = np.zeros_like(labels)
    for _ in range(repeats):
        start = time.perf_counter()
        flows = flows_module.masks_to_flows(labels)
        runs["masks_to_flows_s"].append(time.perf_counter() - start)
        start = time.perf_counter()
        masks = flows_module.flows_to_masks(flows, cellprob, params)
        runs["flows_to_masks_s"].append(time.perf_counter() - start)
    return runs, masks


def warm_up_ours(flows_module: Any) -> None:
    """Compile numba kernels outside the timed region."""
    time_ours(flows_module, random_labels((128, 128), CELLS, seed=1), repeats=1)


def run_cellpose(labels_path: Path, out_dir: Path, *, repeats: int) -> dict[str, Any]:
    """Run bench/_cellpose_ref.py in the cellpose venv on one label file; its JSON record."""
    json_path = out_dir / f"{labels_path.stem}_cellpose.json"
    command = [
        str(CELLPOSE_PYTHON), str(CELLPOSE_SCRIPT), str(labels_path),
        "--out-dir", str(out_dir), "--repeats", str(repeats), "--json", str(json_path),
        "--niter", str(FLOW_PARAMS["niter"]),
        "--cellprob-threshold", str(FLOW_PARAMS["cellprob_threshold"]),
        "--flow-threshold", str(FLOW_PARAMS["flow_threshold"]),
        "--min-size", str(FLOW_PARAMS["min_size"]),
    ]  # fmt: skip
    env = {**os.environ, "CELLPOSE_LOCAL_MODELS_PATH": str(out_dir / "cellpose-models")}
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    results = json.loads(json_path.read_text())
    return {"versions": results["versions"], **results["images"][0]}


def ap90(metrics_module: Any, true_labels: np.ndarray, pred_labels: np.ndarray) -> float:
    """Average precision at IoU 0.9 of ``pred_labels`` against ``true_labels``."""
    scores = metrics_module.average_precision(
        true_labels.astype(np.int32), pred_labels.astype(np.int32), thresholds=(0.9,)
    )
    return float(np.asarray(scores).ravel()[0])


def bench_size(
    size: int, *, repeats: int, work_dir: Path, modules: tuple[Any, Any], with_cellpose: bool
) -> SizeResult:
    flows_module, metrics_module = modules
    labels = draw_labels(size)
    labels_path = work_dir / f"labels_{size}.npy"
    np.save(labels_path, labels)
    _log(f"[{size}²] {int(labels.max())} cells, {repeats} repeat(s): ours ...")
    runs, ours_masks = time_ours(flows_module, labels, repeats=repeats)
    result = SizeResult(
        size=size,
        n_cells=int(labels.max()),
        repeats=repeats,
        ours_masks_to_flows_s=statistics.median(runs["masks_to_flows_s"]),
        ours_flows_to_masks_s=statistics.median(runs["flows_to_masks_s"]),
        ours_n_masks=int(ours_masks.max()),
        ours_runs=runs,
        ap90_ours_vs_truth=ap90(metrics_module, labels, ours_masks),
    )
    if with_cellpose:
        _log(f"[{size}²] cellpose ...")
        detail = run_cellpose(labels_path, work_dir, repeats=repeats)
        cellpose_masks = np.load(detail["masks_file"])
        result.cellpose_masks_to_flows_s = detail["masks_to_flows_median_s"]
        result.cellpose_flows_to_masks_s = detail["flows_to_masks_median_s"]
        result.cellpose_n_masks = detail["n_masks"]
        result.cellpose_detail = detail
        result.ap90_cellpose_vs_truth = ap90(metrics_module, labels, cellpose_masks)
        result.ap90_ours_vs_cellpose = ap90(metrics_module, cellpose_masks, ours_masks)
    _log(f"[{size}²] done")
    return result


def check_targets(results: list[SizeResult]) -> list[Target]:
    targets: list[Target] = []
    for row in results:
        if row.size >= SPEED_TARGET_MIN_SIZE:
            f2m, m2f = row.flows_to_masks_speedup, row.masks_to_flows_speedup
            targets += [
                Target("flows→masks (QC on) speed-up", row.size, f2m, SPEED_TARGET),
                Target("flows→masks (QC on) speed-up, aim", row.size, f2m, SPEED_AIM, False),
                Target("masks→flows speed-up", row.size, m2f, SPEED_TARGET),
            ]
        targets += [
            Target(
                "AP@0.9 ours vs cellpose", row.size, row.ap90_ours_vs_cellpose, AGREEMENT_TARGET
            ),
            Target("AP@0.9 ours vs truth", row.size, row.ap90_ours_vs_truth, AGREEMENT_TARGET),
            Target(
                "AP@0.9 cellpose vs truth", row.size, row.ap90_cellpose_vs_truth, AGREEMENT_TARGET
            ),
        ]
    return targets


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def results_table(results: list[SizeResult]) -> Table:
    """One row per size: medians in seconds, speed-ups (cellpose / ours), AP at IoU 0.9."""
    table = Table([
        Column("size", "size", "d", "²"), Column("n_cells", "cells", ","),
        Column("ours_masks_to_flows_s", "ours masks→flows", ".3f", " s"),
        Column("cellpose_masks_to_flows_s", "cellpose masks→flows", ".2f", " s"),
        Column("masks_to_flows_speedup", "speed-up", ".1f", "×"),
        Column("ours_flows_to_masks_s", "ours flows→masks", ".3f", " s"),
        Column("cellpose_flows_to_masks_s", "cellpose flows→masks", ".2f", " s"),
        Column("flows_to_masks_speedup", "speed-up", ".1f", "×"),
        Column("ap90_ours_vs_cellpose", "AP@0.9 ours vs cellpose", ".3f"),
        Column("ap90_ours_vs_truth", "AP@0.9 ours vs truth", ".3f"),
        Column("ap90_cellpose_vs_truth", "AP@0.9 cellpose vs truth", ".3f"),
    ], title="masks → flows and flows → masks (flow QC on), medians")  # fmt: skip
    for row in results:
        table.add(**{c.key: getattr(row, c.key) for c in table.columns})
    return table


def stages_table(results: list[SizeResult]) -> Table:
    """cellpose's flows -> masks split into its stages (medians, seconds)."""
    stages = ["follow_flows", "get_masks", "flow_qc", "fill_holes", "flows_to_masks"]
    labels = ["follow_flows", "get_masks", "flow QC", "fill holes + min size", "total"]
    table = Table([Column("size", "size", "d", "²")]
                  + [Column(s, label, ".3f", " s") for s, label in zip(stages, labels)],
                  title="cellpose flows→masks by stage")
    for row in results:
        if row.cellpose_detail:
            table.add(size=row.size, **{s: row.cellpose_detail[s + "_median_s"] for s in stages})
    return table


def render_targets(targets: list[Target]) -> str:
    lines = [
        f"Targets (speed-ups at sizes >= {SPEED_TARGET_MIN_SIZE}², agreement at every size; "
        "'aim' lines are informative, not required):"
    ]
    for target in targets:
        verdict = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[target.passed]
        if not target.required and target.passed is not None:
            verdict = "MET" if target.passed else "NOT MET"
        unit = "x" if "speed-up" in target.name else ""
        value = _fmt(target.value, ".2f" if unit else ".3f", unit)
        lines.append(
            f"- [{verdict}] {target.name} at {target.size}²: {value} "
            f"(target >= {target.threshold:g}{unit})"
        )
    return "\n".join(lines)


def write_results(run: Run, results: list[SizeResult], targets: list[Target],
                  out_dir: Path) -> str:
    """Write bench/results/flows.json for the sizes measured so far; return the printout."""
    tables = {"main": results_table(results), "stages": stages_table(results)}
    versions = next((r.cellpose_detail["versions"] for r in results if r.cellpose_detail), None)
    summary = {
        "cells": asdict(CELLS),
        "flow_params": FLOW_PARAMS,
        "reference": None if versions is None else f"cellpose {versions['cellpose']}",
        "reference_versions": versions,
        "targets": [{**asdict(t), "passed": t.passed} for t in targets],
        "runs": [{"size": r.size, "ours": r.ours_runs,
                  "cellpose": {k: v for k, v in r.cellpose_detail.items()
                               if k.endswith("_s") or k.startswith("peak")}}
                 for r in results],
    }
    run.write(tables, summary, out_dir=out_dir)
    parts = [tables["main"].markdown()]
    if tables["stages"].rows:
        parts.append("cellpose flows→masks by stage:\n\n" + tables["stages"].markdown())
    parts.append(render_targets(targets))
    return "\n\n".join(parts)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Ours vs cellpose 3.1.1.2: masks→flows and flows→masks on the CPU."
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 4096])
    parser.add_argument(
        "--repeats", type=int, help="timed repeats per size (default: 3 up to 2048², else 1)"
    )
    parser.add_argument(
        "--skip-cellpose", action="store_true", help="time ours only (no reference venv needed)"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="flows.json here")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    args = parser.parse_args()
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if any(size < 64 for size in args.sizes):
        parser.error(f"sizes must be >= 64, got {args.sizes}")
    return args


def main() -> int:
    args = parse_args()
    if not args.skip_cellpose and not CELLPOSE_PYTHON.exists():
        _log(
            f"The cellpose reference venv is missing ({CELLPOSE_PYTHON}).\n"
            "Create it once with:  bash bench/setup_cellpose.sh\n"
            "(or pass --skip-cellpose to time ours only)."
        )
        return 2
    run = Run("flows", "Flows: ours against cellpose 3.1.1.2, CPU", vars(args))
    modules = _import_ours()
    warm_up_ours(modules[0])
    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-flows-") as tmp:
        for size in args.sizes:
            repeats = args.repeats or (3 if size <= 2048 else 1)
            results.append(
                bench_size(
                    size,
                    repeats=repeats,
                    work_dir=Path(tmp),
                    modules=modules,
                    with_cellpose=not args.skip_cellpose,
                )
            )
            targets = check_targets(results)
            # after each size: a kill keeps the rows measured so far
            printout = write_results(run, results, targets, args.out_dir)
    print(printout)
    failed = any(t.required and t.passed is False for t in targets)
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
