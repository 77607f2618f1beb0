"""Write a built zoo to disk: weights, style bank, ``models.yaml``, model cards, report.

Layout under ``root`` (the repository root for the embedded zoo)::

    models.yaml                    the index (zoo.manifest schema)
    weights/<name>.safetensors     fp16 weights of every model
    weights/style_bank.safetensors the router's reference styles (with the generalist)
    weights/<name>.md              a model card per model
    docs/zoo.md                    the routed-vs-generalist report
    docs/figures/ap_vs_iou.png     AP against IoU threshold per method
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zoo.evaluate import CURVE_THRESHOLDS as EVAL_THRESHOLDS
from zoo.files import sha256_file
from zoo.manifest import (
    Cluster,
    FileSpec,
    Manifest,
    ModelEntry,
    TrainingData,
    dump_manifest,
    model_card,
)

if TYPE_CHECKING:
    from zoo.build import BuildConfig, BuildReport

GENERALIST = "cpnet.generalist"
NUCLEI = "cpnet.nuclei"
VERSION = "1.0.0"
LICENSE = "BSD-3-Clause"
METHODS = ("generalist", "routed", "oracle")


def _file(root: Path, path: Path) -> FileSpec:
    return FileSpec(path=path.relative_to(root).as_posix(), sha256=sha256_file(path),
                    size=path.stat().st_size)


def _ap_columns(report: BuildReport, method: str, styles: list[str]) -> dict[str, float]:
    rows = [s.ap for s in report.scores if s.method == method and s.style in styles]
    if not rows:
        return {}
    mean = np.mean(rows, axis=0)
    return {f"ap@{t:g}": round(float(mean[EVAL_THRESHOLDS.index(t)]), 4) for t in (0.5, 0.75, 0.9)}


def write_release(report: BuildReport, config: BuildConfig, root: Path) -> Manifest:
    """Write everything in the module docstring's layout and return the manifest.

    Metrics are the test split's AP (``report.scores``): the generalist's over every style,
    a specialist's (routed) over the styles whose home cluster it serves; a build not yet
    evaluated writes none.
    """
    weights = root / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    bank_path = report.bank.save(weights / "style_bank.safetensors")
    entries = []
    served_styles = _styles_by_specialist(report)
    for name, model in report.models.items():
        path = model.save(weights / f"{name}.safetensors", half=True)
        files = [_file(root, path)]
        kind, cluster, method, styles = "nuclei", None, "routed", served_styles.get(name, [])
        if name == GENERALIST:
            files.append(_file(root, bank_path))
            kind, method, styles = "generalist", "generalist", list(report.train_styles[name])
        elif name in report.specialists.values():
            cid = next(c for c, n in report.specialists.items() if n == name)
            centroid = [round(float(v), 5) for v in report.bank.centroids[cid]]
            kind, cluster = "specialist", Cluster(id=cid, name=report.bank.names[cid],
                                                  centroid=centroid)
        entry = ModelEntry(
            name=name, version=VERSION, kind=kind,
            description=_describe(kind, report.train_styles[name]),
            config=model.config.to_dict(), channels=model.config.in_channels, axes="cyx",
            diameter=model.diam_mean, flow_params=model.flow_params, cluster=cluster,
            style_bank=files[1].path if name == GENERALIST else None, files=files,
            training_data=TrainingData(
                summary=(f"cellzoo synthetic microscopy, seed {config.seed}, "
                         f"{config.shape[0]}x{config.shape[1]} images"),
                datasets=[f"synthetic:{s}" for s in report.train_styles[name]],
                images=_n_images(report, name)),
            metrics=_ap_columns(report, method, styles), license=LICENSE,
            parent=None if name == GENERALIST else f"{GENERALIST}@{VERSION}")
        (weights / f"{name}.md").write_text(model_card(entry), encoding="utf-8")
        entries.append(entry)
    manifest = Manifest(version=1, models=entries)
    dump_manifest(manifest, root / "models.yaml")
    return manifest


def _describe(kind: str, styles: list[str]) -> str:
    what = {"generalist": "Generalist trained on every synthetic style; its style vectors route images.",
            "specialist": "Specialist fine-tuned from the generalist on one style cluster",
            "nuclei": "Nuclei model fine-tuned from the generalist on fluorescent nuclei"}[kind]
    return what if kind == "generalist" else f"{what} ({', '.join(styles)})."


def _n_images(report: BuildReport, name: str) -> int:
    """Training images of a model: every reference (generalist), else those of the styles
    it was trained on that sit in its cluster."""
    if name == GENERALIST:
        return len(report.bank.vectors)
    cid = next((c for c, n in report.specialists.items() if n == name), None)
    if cid is not None:
        return int(np.sum(report.bank.labels == cid))
    sources = np.asarray(report.bank.sources)
    return int(np.sum(np.isin(sources, report.train_styles[name])))


def _styles_by_specialist(report: BuildReport) -> dict[str, list[str]]:
    """Model → the styles whose home cluster (most of their references) it serves."""
    by_model: dict[str, list[str]] = {}
    sources = np.array(report.bank.sources)
    for style in sorted(set(report.bank.sources)):
        cluster = int(np.bincount(report.bank.labels[sources == style]).argmax())
        by_model.setdefault(report.specialists.get(cluster, GENERALIST), []).append(style)
    return by_model


def results_table(report: BuildReport) -> str:
    """Markdown: AP at 0.5/0.75/0.9 per style and method, plus the mean row."""
    styles = sorted({s.style for s in report.scores})
    columns = [(m, t) for m in METHODS for t in (0.5, 0.75, 0.9)]
    lookup = {(s.style, s.method): s.ap for s in report.scores}
    head = "| style | " + " | ".join(f"{m} AP@{t:g}" for m, t in columns) + " | routing acc. |"
    lines = [head, "|---" * (len(columns) + 2) + "|"]
    for style in styles + ["mean"]:
        cells = []
        for method, threshold in columns:
            index = EVAL_THRESHOLDS.index(threshold)
            values = [lookup[(s, method)][index] for s in (styles if style == "mean" else [style])]
            cells.append(f"{np.mean(values):.3f}")
        accuracy = (report.routing_accuracy if style == "mean"
                    else report.routing_per_style.get(style, float("nan")))
        lines.append(f"| {style} | " + " | ".join(cells) + f" | {accuracy:.0%} |")
    return "\n".join(lines)


def plot_ap_vs_iou(report: BuildReport, path: Path) -> Path:
    """AP against IoU threshold, one line per method, averaged over styles."""
    from zoo.viz import plot_ap_curves

    curves = {method: (EVAL_THRESHOLDS, np.mean([s.ap for s in report.scores if s.method == method], axis=0))
              for method in METHODS}
    return plot_ap_curves(curves, path, title="Held-out synthetic test images, all styles")


def write_report(report: BuildReport, config: BuildConfig, root: Path) -> Path:
    """``docs/zoo.md``: the experiment table, routing accuracy, clusters and build times."""
    plot_ap_vs_iou(report, root / "docs" / "figures" / "ap_vs_iou.png")
    clusters = "\n".join(
        f"| {c} | {name} | {report.specialists.get(c, '-')} | {int(np.sum(report.bank.labels == c))} |"
        for c, name in enumerate(report.bank.names))
    timings = "\n".join(f"| {step} | {seconds / 60:.1f} |" for step, seconds in report.timings.items())
    total = sum(report.timings.values()) / 60
    text = f"""# The default zoo: routed specialists against one generalist

Built by `zoo build --seed {config.seed}` ({config.n_train} training and {config.n_test} held-out
test images per synthetic style, {config.shape[0]}x{config.shape[1]} pixels, network channels
{list(config.width)}). Test images were never trained on or clustered.

## AP per style (held-out test images)

{results_table(report)}

*generalist*: one model for every image; *routed*: the specialist chosen by 5-NN vote over the
style bank; *oracle*: the specialist of the cluster that holds most of the image's style.
*routing acc.*: the fraction of test images routed to the specialist of a cluster whose training
images are mostly of the image's own style (an out-of-distribution fallback counts as wrong).

![AP vs IoU](figures/ap_vs_iou.png)

## Style clusters (Leiden on the generalist's style vectors)

| cluster | name | specialist | training images |
|---|---|---|---|
{clusters}

## Build time (minutes, this machine)

| step | minutes |
|---|---:|
{timings}
| total | {total:.1f} |
"""
    path = root / "docs" / "zoo.md"
    path.write_text(text, encoding="utf-8")
    return path


README_START, README_END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"


def zoo_table(manifest: Manifest) -> str:
    """The README's model table, generated from ``models.yaml``."""
    lines = ["| model | kind | cluster | diameter | AP@0.5 | AP@0.75 | AP@0.9 | size |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for entry in manifest.models:
        cluster = f"{entry.cluster.id} ({entry.cluster.name})" if entry.cluster else "-"
        aps = [entry.metrics.get(f"ap@{t}") for t in ("0.5", "0.75", "0.9")]
        cells = " | ".join("-" if v is None else f"{v:.3f}" for v in aps)
        lines.append(f"| `{entry.name}` | {entry.kind} | {cluster} | {entry.diameter:g} | "
                     f"{cells} | {entry.size / 1e6:.1f} MB |")
    return "\n".join(lines)


def with_zoo_table(readme: str, manifest: Manifest) -> str:
    """``readme`` with the text between the zoo-table markers replaced by ``zoo_table``."""
    start, end = readme.index(README_START) + len(README_START), readme.index(README_END)
    return readme[:start] + "\n" + zoo_table(manifest) + "\n" + readme[end:]
