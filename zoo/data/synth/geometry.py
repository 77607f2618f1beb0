"""Label layouts of the synthetic generator: where cells, nuclei, rods, buds and debris lie.

Every function draws from the ``numpy.random.Generator`` it is given and returns int32
label images (0 = background, 1..N = objects, each one 4-connected region).

How it works: round-ish cells are irregular ellipses on a jittered grid, painted by
``kernels._paint_ellipses`` (a pixel goes to the cell of smallest normalised distance, so
neighbours meet on curved borders); rods and yeast are capsules placed one after another by
``kernels._place_capsules`` (touching allowed, overlap rejected). Cells may then grow thin
processes, split in two (division), and get an elliptic nucleus at their deepest point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from zoo.data.shapes import ShapeParams
from zoo.data.synth import kernels

MIN_CELLS = 8
"""Clumping never leaves fewer grid sites than this occupied."""


@dataclass(frozen=True)
class Cells:
    """Label geometry plus the per-cell ellipse orientation, index 0 unused."""

    labels: np.ndarray  # (Y, X) int32, 1..N consecutive
    angle: np.ndarray  # (N + 1,) float64, long-axis angle in radians
    ratio: np.ndarray  # (N + 1,) float64, long/short axis ratio


def ellipse_cells(
    rng: np.random.Generator, shape: tuple[int, int], params: ShapeParams, *, clump: float = 0.0
) -> Cells:
    """Irregular, possibly touching ellipses on a jittered grid (see the module docstring).

    ``clump`` > 0 modulates the keep probability with smooth noise so cells form colonies.
    """
    centres = _draw_centres(rng, shape, params, clump)
    n = len(centres)
    jitter = params.diameter_jitter * rng.standard_normal(n)
    diameter = params.diameter * np.maximum(0.4, 1 + jitter)
    ratio = rng.uniform(1.0, params.elongation, n)
    table = np.empty((n, 12), dtype=np.float64)
    table[:, 0:2] = centres
    table[:, 2] = diameter / 2 * np.sqrt(ratio)
    table[:, 3] = diameter / 2 / np.sqrt(ratio)
    table[:, 4] = rng.uniform(0.0, np.pi, n)
    table[:, 5] = params.irregularity * rng.uniform(0.5, 1.5, n)
    table[:, 6:8] = rng.integers(2, 6, size=(n, 2))
    table[:, 8] = rng.integers(6, 11, size=n)
    table[:, 9:12] = rng.uniform(0.0, 2 * np.pi, size=(n, 3))
    labels = np.zeros(shape, dtype=np.int32)
    kernels._paint_ellipses(labels, np.full(shape, np.inf, dtype=np.float32), table)
    labels, kept = clean_labels(labels, min_area=0.15 * np.pi * (params.diameter / 2) ** 2)
    return Cells(
        labels=labels,
        angle=np.concatenate([[0.0], table[kept - 1, 4]]),
        ratio=np.concatenate([[1.0], ratio[kept - 1]]),
    )


def _draw_centres(
    rng: np.random.Generator, shape: tuple[int, int], params: ShapeParams, clump: float
) -> np.ndarray:
    spacing = params.diameter * params.packing
    ys = np.arange(spacing / 2, shape[0], spacing)
    xs = np.arange(spacing / 2, shape[1], spacing)
    # white noise smoothed by a Gaussian of sigma s has std 1 / (2 sqrt(pi) s)
    field = ndimage.gaussian_filter(rng.standard_normal((len(ys), len(xs))), 1.5, mode="wrap")
    field *= 2 * np.sqrt(np.pi) * 1.5
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    grid = grid + rng.uniform(-0.35, 0.35, size=grid.shape) * spacing
    keep_prob = np.clip(params.density * (1 + clump * field.ravel()), 0.0, 1.0)
    draw = rng.random(len(grid))
    keep = draw < keep_prob
    if keep.sum() < MIN_CELLS:  # clumping must not leave an image (almost) empty
        keep[np.argsort(draw - keep_prob)[:MIN_CELLS]] = True
    return grid[keep]


def clean_labels(labels: np.ndarray, min_area: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Keep each label's largest 4-connected part and renumber 1..N in the original order.

    Parts smaller than ``min_area`` pixels are dropped unless they touch the image border
    (slivers squeezed out between neighbours; border cells are legitimately cut).

    Returns:
        ``(labels, kept)``: int32 labels and the original id of every new id 1..N.
    """
    labels = kernels._largest_parts_kernel(np.ascontiguousarray(labels, dtype=np.int32))
    areas = np.bincount(labels.ravel())
    on_border = np.zeros(len(areas), dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        on_border[edge] = True
    present = (areas > 0) & ((areas >= min_area) | on_border)
    present[0] = False
    kept = np.flatnonzero(present)
    lut = np.zeros(len(present), dtype=np.int32)
    lut[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return lut[labels], kept


def boundary(labels: np.ndarray) -> np.ndarray:
    """``(Y, X)`` bool: object pixels with a 4-neighbour of another label (or background)."""
    edge = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:, :] != labels[:-1, :]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge & (labels > 0)


def cell_depth(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised distance to each cell's own border.

    Returns:
        ``(depth, poles)``: ``(Y, X)`` float32 depth in [0, 1] (1 at the cell's deepest
        pixel) and ``(N + 1, 3)`` float64 rows ``(max distance, y, x)`` of that pixel.
    """
    inner = (labels > 0) & ~boundary(labels)
    distance = ndimage.distance_transform_edt(inner).astype(np.float32)
    poles = kernels._poles_kernel(labels, distance, int(labels.max()))
    depth = distance / np.maximum(poles[:, 0], 1.0).astype(np.float32)[labels]
    return depth, poles


def nuclei_in_cells(
    rng: np.random.Generator, cells: Cells, poles: np.ndarray, size: tuple[float, float]
) -> np.ndarray:
    """One elliptic nucleus near the deepest point of every cell, clipped to the cell.

    Returns:
        ``(Y, X)`` int32 with nucleus ``i`` carrying the id of its cell ``i`` (0 elsewhere).
    """
    n = len(poles) - 1
    radius = np.maximum(poles[1:, 0] * rng.uniform(*size, n), 1.5)
    stretch = np.sqrt(cells.ratio[1:])
    table = np.empty((n, 12), dtype=np.float64)
    table[:, 0:2] = poles[1:, 1:3] + rng.uniform(-0.25, 0.25, (n, 2)) * radius[:, None]
    table[:, 2] = radius * stretch
    table[:, 3] = radius / np.sqrt(stretch)
    table[:, 4] = cells.angle[1:] + rng.normal(0.0, 0.2, n)
    table[:, 5] = rng.uniform(0.02, 0.08, n)
    table[:, 6:8] = rng.integers(2, 5, size=(n, 2))
    table[:, 8] = rng.integers(5, 9, size=n)
    table[:, 9:12] = rng.uniform(0.0, 2 * np.pi, size=(n, 3))
    nuclei = np.zeros(cells.labels.shape, dtype=np.int32)
    kernels._paint_ellipses(nuclei, np.full(nuclei.shape, np.inf, dtype=np.float32), table)
    nuclei[nuclei != cells.labels] = 0
    return nuclei


def divide_cells(
    rng: np.random.Generator, cells: Cells, fraction: float, *, gap: float, waist: float
) -> tuple[Cells, np.ndarray]:
    """Split about ``fraction`` of the cells across their long axis into two daughters.

    The daughters touch along a pinched furrow (``gap`` = 0, ``waist`` < 1) or separate
    (``gap`` > 0, telophase nuclei). Each daughter is its own label, as annotators draw them.

    Returns:
        ``(cells, daughters)``: the new geometry, and an ``(N + 1,)`` bool marking the
        labels that are daughters of a division.
    """
    labels = cells.labels
    n = int(labels.max())
    chosen = np.flatnonzero(rng.random(n) < fraction) + 1
    if len(chosen) == 0:
        return cells, np.zeros(n + 1, dtype=bool)
    centres = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, chosen)).reshape(-1, 2)
    table = np.empty((len(chosen), 6), dtype=np.float64)
    table[:, 0] = chosen
    table[:, 1:3] = centres
    table[:, 3] = cells.angle[chosen]
    table[:, 4] = gap
    table[:, 5] = waist
    split = np.ascontiguousarray(labels.copy())
    kernels._split_cells(split, table, n + 1)
    split, kept = clean_labels(split, min_area=4)
    old = np.concatenate([np.arange(n + 1), chosen])  # old id of every id before cleaning
    source = old[kept]
    daughters = np.zeros(len(kept) + 1, dtype=bool)
    daughters[1:] = np.isin(source, chosen)
    return Cells(
        labels=split,
        angle=np.concatenate([[0.0], cells.angle[source]]),
        ratio=np.concatenate([[1.0], cells.ratio[source] / 2 + 0.5]),
    ), daughters


def grow_processes(
    rng: np.random.Generator,
    cells: Cells,
    poles: np.ndarray,
    *,
    count: tuple[int, int],
    length: tuple[float, float],
    bipolar: bool,
) -> Cells:
    """Let every cell grow thin, wiggly processes (2-3 px wide) into the background.

    A process starts at the cell's deepest point, paints only background pixels, and stops
    where it would enter another cell, so labels stay single connected regions.

    Args:
        count: ``(low, high)`` processes per cell (inclusive).
        length: ``(low, high)`` length beyond the cell body, in cell diameters.
        bipolar: neuron-like: processes leave along the long axis, in both directions.
    """
    labels = cells.labels.copy()
    for cell in range(1, len(poles)):
        reach, y, x = poles[cell]
        if reach < 1.5:
            continue
        body = reach * cells.ratio[cell] * 1.2
        for index in range(int(rng.integers(count[0], count[1] + 1))):
            if bipolar:
                angle = cells.angle[cell] + np.pi * (index % 2) + rng.normal(0.0, 0.15)
            else:
                angle = rng.uniform(0.0, 2 * np.pi)
            extent = body + rng.uniform(*length) * 2 * reach * np.sqrt(cells.ratio[cell])
            path = _wiggle(rng, y, x, angle, extent)
            kernels._draw_path_kernel(labels, path, cell, int(body / 0.5))
            if rng.random() < 0.35:
                start = int(len(path) * rng.uniform(0.55, 0.8))
                turn = angle + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 0.9)
                branch = _wiggle(rng, *path[start], turn, 0.35 * extent)
                kernels._draw_path_kernel(labels, branch, cell, 0)
    labels, _ = clean_labels(labels)
    return Cells(labels=labels, angle=cells.angle, ratio=cells.ratio)


def _wiggle(
    rng: np.random.Generator, y: float, x: float, angle: float, extent: float
) -> np.ndarray:
    """``(K, 2)`` float64 points every 0.5 px along a gently curving path from ``(y, x)``."""
    steps = max(int(extent / 0.5), 2)
    angles = angle + np.cumsum(rng.normal(0.0, 0.06, steps))
    path = np.empty((steps, 2), dtype=np.float64)
    path[:, 0] = y + np.cumsum(0.5 * np.cos(angles))
    path[:, 1] = x + np.cumsum(0.5 * np.sin(angles))
    return path


def keep_away(cells: Cells, occupied: np.ndarray, gap: int) -> Cells:
    """The objects of ``cells`` that keep at least ``gap`` px away from ``occupied``."""
    near = ndimage.maximum_filter(occupied.astype(np.uint8), size=2 * gap + 1) > 0
    hits = np.bincount(cells.labels[near], minlength=len(cells.angle))
    keep = hits == 0
    keep[0] = False
    lut = np.zeros(len(keep), dtype=np.int32)
    lut[keep] = np.arange(1, keep.sum() + 1, dtype=np.int32)
    chosen = np.concatenate([[0], np.flatnonzero(keep)])
    return Cells(labels=lut[cells.labels], angle=cells.angle[chosen], ratio=cells.ratio[chosen])


def extra_objects(
    rng: np.random.Generator,
    shape: tuple[int, int],
    params: ShapeParams,
    occupied: np.ndarray,
    *,
    gap: int = 2,
) -> Cells:
    """A second grid of objects that keep at least ``gap`` px away from ``occupied``."""
    return keep_away(ellipse_cells(rng, shape, params), occupied, gap)


def debris(
    rng: np.random.Generator,
    shape: tuple[int, int],
    occupied: np.ndarray,
    *,
    count: int,
    size: tuple[float, float],
    gap: int = 2,
) -> np.ndarray:
    """Small irregular fragments (dust, dead-cell debris) away from ``occupied``.

    Args:
        count: fragments drawn before those too close to ``occupied`` are dropped.
        size: ``(low, high)`` fragment diameter in px (log-uniform).

    Returns:
        ``(Y, X)`` int32 labels 1..K of the kept fragments.
    """
    if count <= 0:
        return np.zeros(shape, dtype=np.int32)
    diameter = np.exp(rng.uniform(np.log(size[0]), np.log(size[1]), count))
    ratio = rng.uniform(1.0, 2.5, count)
    table = np.empty((count, 12), dtype=np.float64)
    table[:, 0] = rng.uniform(0, shape[0], count)
    table[:, 1] = rng.uniform(0, shape[1], count)
    table[:, 2] = diameter / 2 * np.sqrt(ratio)
    table[:, 3] = diameter / 2 / np.sqrt(ratio)
    table[:, 4] = rng.uniform(0.0, np.pi, count)
    table[:, 5] = rng.uniform(0.1, 0.3, count)
    table[:, 6:8] = rng.integers(2, 6, size=(count, 2))
    table[:, 8] = rng.integers(6, 11, size=count)
    table[:, 9:12] = rng.uniform(0.0, 2 * np.pi, size=(count, 3))
    labels = np.zeros(shape, dtype=np.int32)
    kernels._paint_ellipses(labels, np.full(shape, np.inf, dtype=np.float32), table)
    labels, _ = clean_labels(labels)
    n = int(labels.max())
    fragments = Cells(labels=labels, angle=np.zeros(n + 1), ratio=np.ones(n + 1))
    return keep_away(fragments, occupied, gap).labels


def place_capsules(
    shape: tuple[int, int], table: np.ndarray, *, max_overlap: float, min_area: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint capsules row by row (see ``kernels._place_capsules``) and clean the result.

    Args:
        table: ``(K, 5)`` rows ``cy, cx, half_length, radius, angle``.
        max_overlap: reject a capsule whose area is already taken beyond this fraction.
        min_area: drop painted pieces smaller than this (squeezed between neighbours).

    Returns:
        ``(labels, profile, rows)``: int32 labels 1..N, float32 cross-section height in
        [0, 1], and the table row of every label 1..N (``(N,)`` int64).
    """
    labels = np.zeros(shape, dtype=np.int32)
    profile = np.zeros(shape, dtype=np.float32)
    given = kernels._place_capsules(labels, profile, np.ascontiguousarray(table, np.float64),
                                    max_overlap)
    labels, kept = clean_labels(labels, min_area=min_area)
    row_of_label = np.zeros(int(given.max()) + 1, dtype=np.int64)
    accepted = np.flatnonzero(given)
    row_of_label[given[accepted]] = accepted
    profile[labels == 0] = 0.0
    return labels, profile, row_of_label[kept]
