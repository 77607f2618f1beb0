"""Draw docs/figures/architecture.png: entry points → the one pipeline → engine, registry, router.

Usage: .venv/bin/python docs/architecture.py
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).resolve().parent / "figures" / "architecture.png"

# (label, detail, x, y, colour); rows top to bottom: entry points, pipeline, layers below
BOXES = {
    "cli": ("zoo CLI", "zoo.cli: segment, route,\ntrain, eval, import/export", 0.125, 0.84, "#dbe9f6"),
    "service": ("HTTP service", "zoo.service: BentoML API\n+ batched network, /ui", 0.375, 0.84, "#dbe9f6"),
    "library": ("Python API", "zoo.segment(), Zoo(),\nnotebooks", 0.625, 0.84, "#dbe9f6"),
    "dask": ("Dask / whole slides", "blocks of large images,\nfolders on a cluster", 0.875, 0.84, "#dbe9f6"),
    "pipeline": ("zoo.pipeline.Zoo", "route → infer → finish\n(one pipeline, pluggable runner)", 0.50, 0.55, "#fde7c8"),
    "router": ("routing", "zoo.embedding style pass\nzoo.router k-NN + OOD", 0.17, 0.22, "#e3f1df"),
    "engine": ("engine", "zoo.predict tiles → runner\nzoo.flows numba masks", 0.50, 0.22, "#e3f1df"),
    "registry": ("registry", "zoo.registry models.yaml\n+ user zoo, zoo.hub", 0.83, 0.22, "#e3f1df"),
}
ARROWS = [("cli", "pipeline"), ("service", "pipeline"), ("library", "pipeline"),
          ("dask", "pipeline"), ("pipeline", "router"), ("pipeline", "engine"),
          ("pipeline", "registry")]


def draw(path: Path = OUT) -> Path:
    figure = Figure(figsize=(9, 4.6), dpi=110)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    axes.set(xlim=(0, 1), ylim=(0, 1))
    width, height = 0.225, 0.17
    for label, detail, x, y, colour in BOXES.values():
        axes.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                      boxstyle="round,pad=0.01,rounding_size=0.02",
                                      facecolor=colour, edgecolor="#555555", linewidth=1))
        axes.text(x, y + 0.035, label, ha="center", va="center", fontsize=10, weight="bold")
        axes.text(x, y - 0.03, detail, ha="center", va="center", fontsize=7.5, color="#333333")
    for start, end in ARROWS:
        (_, _, x0, y0, _), (_, _, x1, y1, _) = BOXES[start], BOXES[end]
        axes.add_patch(FancyArrowPatch((x0, y0 - height / 2), (x1, y1 + height / 2),
                                       arrowstyle="-|>", mutation_scale=12, color="#555555",
                                       linewidth=1))
    axes.text(0.01, 0.98, "entry points", fontsize=8, color="#777777", va="top")
    axes.text(0.01, 0.04, "library layers (nothing here imports bentoml or typer)", fontsize=8,
              color="#777777", va="bottom")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


if __name__ == "__main__":
    print(draw())
