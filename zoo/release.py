"""Write a built zoo to disk: weights, style bank, ``models.yaml``, model cards.

Layout under ``root`` (the repository root for the embedded zoo)::

    models.yaml                    the index (zoo.manifest schema)
    weights/<name>.safetensors     fp16 weights of every model
    weights/style_bank.safetensors the router's reference styles (with the generalist)
    weights/<name>.md              a model card per model

The build's report (``docs/zoo.json``, ``docs/zoo.md`` and the AP plot) is ``zoo.report``'s.
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
