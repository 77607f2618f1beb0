"""Rewrite the generated parts of README.md and docs/*.md from the data they report.

Usage (from anywhere):

    .venv/bin/python docs/render.py           # rewrite what is stale
    .venv/bin/python docs/render.py --check   # exit 1, naming the stale files, if any

Sources and what they fill:

* ``bench/results/<name>.json`` (written by each ``bench/bench_<name>.py``): the sections
  between ``<!-- bench:SECTION:start -->`` and ``<!-- bench:SECTION:end -->`` in README.md and
  docs/*.md; each table says the date, the machine and the command it was measured with;
* ``docs/zoo.json`` (written by ``zoo build``): docs/zoo.md as a whole (``zoo.report``), and
  the README's ``<!-- zoo:SECTION:start -->`` sections;
* ``models.yaml``: the README's model table (``<!-- zoo-table:start -->``).

A marker whose start ends its line makes a block; one followed by text on the same line is
inline. ``tests/test_docs.py`` renders everything in memory and fails when a file differs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
for path in (ROOT / "bench", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from _results import Table, format_value  # noqa: E402

from zoo import machine  # noqa: E402
from zoo.manifest import load_manifest  # noqa: E402
from zoo.release import README_START, with_zoo_table  # noqa: E402
from zoo.report import (  # noqa: E402
    README_SECTIONS,
    REPORT_JSON,
    REPORT_MD,
    fill_markers,
    load_report,
    marked_sections,
    readme_sections,
    render_report,
)

Result = dict[str, Any]


# ---- helpers ---------------------------------------------------------------------------------

def caption(result: Result, verb: str = "measured") -> str:
    """Where and how a result was measured, in one italic line."""
    where = machine.describe(result["machine"], load_end=result.get("load_average_end"))
    return f"*`{result['command']}`, {verb} {result['date'][:10]} on {where}.*"


def table(result: Result, key: str = "main", columns: list[str] | None = None) -> str:
    return Table.from_dict(result["tables"][key]).markdown(columns)


def rows(result: Result, key: str = "main") -> list[dict[str, Any]]:
    return result["tables"][key]["rows"]


def span(values: list[float], fmt: str, suffix: str = "") -> str:
    """``a–b`` (or one value) formatted like a table cell."""
    low, high = format_value(min(values), fmt), format_value(max(values), fmt)
    return (low if low == high else f"{low}–{high}") + suffix


# ---- one renderer per marked section -----------------------------------------------------------

def flows(r: Result) -> str:
    truth = [v for row in rows(r)
             for v in (row["ap90_ours_vs_truth"], row["ap90_cellpose_vs_truth"]) if v is not None]
    reference = r["summary"].get("reference") or "the reference"
    params = ", ".join(f"`{k}={v:g}`" for k, v in r["summary"]["flow_params"].items())
    return "\n\n".join([
        caption(r),
        f"flows → masks settings: {params}; medians of the repeats.",
        table(r, columns=["size", "n_cells", "ours_masks_to_flows_s", "cellpose_masks_to_flows_s",
                          "masks_to_flows_speedup", "ours_flows_to_masks_s",
                          "cellpose_flows_to_masks_s", "flows_to_masks_speedup",
                          "ap90_ours_vs_cellpose"]),
        f"Against the true labels, both mask sets reach AP@0.9 {span(truth, '.3f')} "
        f"({reference} and ours, every size).",
    ])


def flows_speedup(r: Result) -> str:
    """Inline: the flows → masks speed-up range, e.g. ``14–18×``."""
    speedups = [row["flows_to_masks_speedup"] for row in rows(r)
                if row["flows_to_masks_speedup"] is not None]
    return span(speedups, ".0f", "×") if speedups else "(not measured)"


def flows_memory(r: Result) -> str:
    s = r["summary"]
    per_stage = ("Peaks were reset before each stage." if s["peaks_per_stage"]
                 else "Peaks could not be reset: a stage's peak includes earlier stages.")
    return "\n\n".join([
        caption(r), table(r),
        f"{s['size']}² labels with {s['n_cells']:,} cells (int32 labels {s['input_mb']:.0f} MB, "
        f"float32 flows {2 * s['input_mb']:.0f} MB). Each implementation ran in its own "
        "process; the baseline is its RSS after imports, warm-up, loading the labels and "
        f"building cellprob. {per_stage}",
    ])


def net(r: Result) -> str:
    fastest = r["summary"]["fastest"]
    best = "; ".join(f"batch {b}: {f['path']}, {f['speedup']:.2f}×" for b, f in fastest.items())
    return "\n\n".join([caption(r), f"{r['tables']['main']['title']}:", table(r),
                        f"Fastest product path against eager fp32: {best}."])


def predict(r: Result) -> str:
    by_run = {row["run"]: row for row in rows(r)}
    text = [caption(r), f"{r['tables']['main']['title']} (seconds):", table(r)]
    if "torch, batch 8" in by_run and "onnx, batch 8" in by_run:
        ratio = by_run["torch, batch 8"]["network"] / by_run["onnx, batch 8"]["network"]
        text.append(f"At batch 8, onnxruntime ran the network {ratio:.2f}× as fast as torch"
                    + ("; prefer `ZOO_BACKEND=onnx` on CPU." if ratio > 1 else "."))
    return "\n\n".join(text)


def predict_postprocess_share(r: Result) -> str:
    """Inline: post-processing's share of the total, torch at batch 8, e.g. ``4%``."""
    row = next(row for row in rows(r) if row["run"] == "torch, batch 8")
    return f"{row['postprocess'] / row['total']:.0%}"


def router(r: Result) -> str:
    s = r["summary"]
    verdict = "met" if s["passed"] else "missed"
    return "\n\n".join([
        caption(r), f"{r['tables']['main']['title']}:", table(r),
        f"Worst p99 {s['worst_p99_ms']:.2f} ms: the ≤ {s['target_ms']:g} ms target is {verdict}. "
        "For context, the style forward pass that precedes routing:",
        table(r, "forward"),
    ])


def pull(r: Result) -> str:
    s = r["summary"]
    return "\n\n".join([
        caption(r), f"{r['tables']['main']['title']}:", table(r),
        "A warm pull " + ("transferred nothing (0 requests, 0 bytes)." if s["warm_transfer_free"]
                          else "still transferred data."),
    ])


def service(r: Result) -> str:
    s = r["summary"]
    text = [caption(r), f"{r['tables']['main']['title']}; the library column is `Zoo.segment` "
            f"in-process, one image at a time, same run: {s['library_images_per_s']:.2f} "
            "images/s.", table(r)]
    if s.get("overhead_p50_at_1") is not None:
        text.append(f"Overhead at concurrency 1: service p50 / library time per image = "
                    f"{s['overhead_p50_at_1']:.2f}×. Batches the network service formed:")
    text.append(table(r, "batches"))
    return "\n\n".join(text)


def segment_cli(r: Result) -> str:
    s = r["summary"]
    return "\n\n".join([caption(r), f"{r['tables']['main']['title']}:", table(r),
                        f"Identical masks on {s['identical_masks']} of {s['images']} images."])


def auto(r: Result) -> str:
    s = r["summary"]
    verdict = "met" if s["passed"] else "missed"
    return "\n\n".join([
        caption(r), f"{r['tables']['main']['title']}:", table(r),
        f"Worst wall-time ratio {s['worst_time_ratio']:.2f}×: the ≤ {s['target']:g}× target "
        f"is {verdict}. The network ratio counts the pixels every forward pass was given "
        "(exact, independent of the machine's load).",
    ])


def start(r: Result) -> str:
    s = r["summary"]
    verdict = "met" if s["passed"] else "missed"
    return "\n\n".join([
        caption(r), f"{r['tables']['main']['title']}:", table(r),
        f"Cold start {s['cold_s']:.1f} s: the ≤ {s['target_s']:g} s target is {verdict}. Most of "
        "the difference between cold and warm is numba compiling the post-processing kernels "
        "(cached under `ZOO_HOME/numba` after the first run).",
    ])


def synthetic(r: Result) -> str:
    s = r["summary"]
    found = "" if s["reference_found"] else " (the reference could not be loaded)"
    return "\n\n".join([caption(r), f"{r['tables']['main']['title']}{found}:", table(r)])


def cellpose_import(r: Result) -> str:
    s = r["summary"]
    torch_rows = [row for row in s["ours"] if row["backend"] == "torch"]
    text = [caption(r), f"{r['tables']['main']['title']}:", table(r)]
    if torch_rows and not any(row["speedup"] >= s["targets"]["speedup"] for row in torch_rows):
        text.append(f"torch alone does not reach {s['targets']['speedup']:g}× here; "
                    "onnxruntime (`ZOO_BACKEND=onnx`) does the rest.")
    return "\n\n".join(text)


def large(r: Result) -> str:
    parts = r["summary"]["parts"]
    undated = r["summary"].get("undated_parts", [])
    verb = "rewritten" if r["settings"].get("readme") else "measured"
    text = [caption(r, verb), f"{r['tables']['main']['title']}:", table(r)]
    if undated:
        text.append(f"The parts {', '.join(undated)} were measured by earlier runs of this "
                    "script, before it dated each part; this file was rewritten from them "
                    "(`--readme`) without measuring again.")
    loads = [row["load_average"] for row in parts.get("scaling", {}).values()]
    loads += [parts[k]["load_average"] for k in ("seams", "efficiency")
              if "load_average" in parts.get(k, {})]
    if loads:
        text.append(f"The machine was shared with other jobs (load average {span(loads, '.0f')} "
                    "on 2 cores when the parts ended), so every time above is slower than on "
                    "an idle machine.")
    eff = parts.get("efficiency", {})
    if "cpu_ratio" in eff:
        text.append("The 2-worker row measures the cores the operating system left to the "
                    "workers, not how the work divides: the same work took "
                    f"{eff['cpu_ratio']:.2f}× the CPU seconds on 2 workers as on 1.")
    for side, row in sorted(parts.get("unfinished", {}).items(), key=lambda kv: int(kv[0])):
        text.append(f"The {side}² run was stopped at its time limit after {row['blocks_done']} "
                    "blocks; its peak memory is that of those blocks.")
    return "\n\n".join(text)


def hardening(r: Result) -> str:
    s = r["summary"]
    t = s["latency"]
    verdict = "every target is met" if s["passed"] else "a target is missed (`NO` above)"
    return "\n\n".join([
        caption(r), table(r), table(r, "targets"),
        f"Burst ({r['settings']['burst_clients']} clients × {r['settings']['burst_requests']} "
        f"requests): idle median {t['idle_s']:.2f} s, after the burst {t['after_s']:.2f} s; "
        f"schemathesis ran {s['schemathesis_cases']} cases; `zoo serve` stopped "
        f"{s['stop_seconds']:.1f} s after SIGTERM; {verdict}.",
        f"{r['tables']['cli']['title'].capitalize()}:", table(r, "cli"),
    ])


#: section name → (result file stem, renderer)
BENCH_SECTIONS: dict[str, tuple[str, Callable[[Result], str]]] = {
    "bench:flows": ("flows", flows),
    "bench:flows-speedup": ("flows", flows_speedup),
    "bench:flows-memory": ("flows_memory", flows_memory),
    "bench:net": ("net", net),
    "bench:predict": ("predict", predict),
    "bench:predict-postprocess-share": ("predict", predict_postprocess_share),
    "bench:router": ("router", router),
    "bench:pull": ("pull", pull),
    "bench:service": ("service", service),
    "bench:segment-cli": ("segment_cli", segment_cli),
    "bench:auto": ("auto", auto),
    "bench:start": ("start", start),
    "bench:synthetic": ("synthetic", synthetic),
    "bench:cellpose-import": ("cellpose_import", cellpose_import),
    "bench:large": ("large", large),
    "bench:hardening": ("hardening", hardening),
}


def load_results(results_dir: Path = RESULTS_DIR) -> dict[str, Result]:
    """Every ``<stem>.json`` under ``results_dir``, by stem."""
    import json

    return {path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(results_dir.glob("*.json"))}


def bench_sections(results: dict[str, Result]) -> dict[str, str]:
    """Section name → text, for every section whose result file exists."""
    return {name: render(results[stem]) for name, (stem, render) in BENCH_SECTIONS.items()
            if stem in results}


# ---- files -------------------------------------------------------------------------------------

def render(root: Path = ROOT) -> dict[Path, str]:
    """What README.md and docs/*.md should hold, from the data under ``root``.

    Returns:
        path → expected text, for every file with generated content.

    Raises:
        KeyError: a marked section names no renderer, or its result file is missing.
    """
    sections = bench_sections(load_results(root / "bench" / "results"))
    report_path = root / REPORT_JSON
    if report_path.is_file():
        report = load_report(report_path)
        sections |= readme_sections(report)
    expected: dict[Path, str] = {}
    if report_path.is_file():
        expected[root / REPORT_MD] = render_report(report)
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        if path in expected:
            continue
        text = path.read_text(encoding="utf-8")
        _check_sources(path, text, sections)
        new = fill_markers(text, sections, kinds=("bench", "zoo"))
        if path.name == "README.md" and README_START in new:
            new = with_zoo_table(new, load_manifest(root / "models.yaml"))
        if new != text:
            expected[path] = new
        elif "<!-- bench:" in text or "<!-- zoo:" in text or README_START in text:
            expected[path] = text
    return expected


def _check_sources(path: Path, text: str, sections: dict[str, str]) -> None:
    """Raise KeyError naming the data or renderer a marked section of ``path`` lacks."""
    for name in marked_sections(text):
        if name in sections or not name.startswith(("bench:", "zoo:")):
            continue
        if name in BENCH_SECTIONS:
            stem = BENCH_SECTIONS[name][0]
            raise KeyError(f"{path.name}: section {name!r} needs bench/results/{stem}.json "
                           f"(run bench/bench_{stem}.py)")
        if name in README_SECTIONS:
            raise KeyError(f"{path.name}: section {name!r} needs {REPORT_JSON} (run zoo build)")
        raise KeyError(f"{path.name}: no renderer for the marked section {name!r}")


def stale(root: Path = ROOT) -> list[Path]:
    """Files whose text differs from what ``render`` gives."""
    return [path for path, text in render(root).items()
            if not path.is_file() or path.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    try:
        outdated = stale()
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 1
    if args.check:
        for path in outdated:
            print(f"stale: {path.relative_to(ROOT)}", file=sys.stderr)
        return 1 if outdated else 0
    expected = render()
    for path in outdated:
        path.write_text(expected[path], encoding="utf-8")
        print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
