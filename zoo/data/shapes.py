"""Synthetic instance-label images: irregular ellipses that may touch.

Labels follow the cellzoo convention: ``0`` is background and ``1..N`` are cells,
each cell one 4-connected region. Generation is deterministic for a given seed.

How it works: cell centres are drawn on a jittered grid (dense) or uniformly
(sparse). Each cell paints its bounding box with a normalised, outline-perturbed
ellipse distance ``d``; a pixel goes to the cell with the smallest ``d < 1``, so
neighbouring cells meet along a curved boundary instead of overlapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from zoo.errors import InvalidParamsError


@dataclass(frozen=True)
class ShapeParams:
    """How synthetic cells look.

    Attributes:
        diameter: mean cell diameter in pixels.
        diameter_jitter: relative standard deviation of the diameter.
        elongation: maximum ratio of long to short axis (1 = round).
        irregularity: amplitude of the low-frequency outline wobble (0 = smooth).
        density: fraction of grid sites that hold a cell (1 = packed, touching).
        packing: grid spacing relative to the diameter (< 1 makes cells touch).
    """

    diameter: float = 20.0
    diameter_jitter: float = 0.15
    elongation: float = 1.6
    irregularity: float = 0.08
    density: float = 0.8
    packing: float = 0.95

    def __post_init__(self) -> None:
        if self.diameter < 3:
            raise InvalidParamsError(f"diameter must be >= 3 pixels, got {self.diameter}")
        if not 0 < self.density <= 1:
            raise InvalidParamsError(f"density must be in (0, 1], got {self.density}")
        if self.elongation < 1:
            raise InvalidParamsError(f"elongation must be >= 1, got {self.elongation}")


def random_labels(
    shape: tuple[int, int], params: ShapeParams | None = None, *, seed: int = 0
) -> np.ndarray:
    """Draw a label image of irregular, possibly touching cells.

    Args:
        shape: ``(Y, X)`` of the output.
        params: cell appearance; defaults to ``ShapeParams()``.
        seed: random seed; the same seed gives the same labels.

    Returns:
        ``(Y, X)`` int32 labels, 0 = background, 1..N = cells (N may be 0).
    """
    params = params or ShapeParams()
    rng = np.random.default_rng(seed)
    centres = _draw_centres(shape, params, rng)
    best = np.full(shape, np.inf, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.int32)
    for index, centre in enumerate(centres, start=1):
        _paint_cell(labels, best, index, centre, params, rng)
    return _keep_largest_parts(labels)


def _draw_centres(
    shape: tuple[int, int], params: ShapeParams, rng: np.random.Generator
) -> np.ndarray:
    spacing = params.diameter * params.packing
    ys = np.arange(spacing / 2, shape[0], spacing)
    xs = np.arange(spacing / 2, shape[1], spacing)
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    grid = grid + rng.uniform(-0.3, 0.3, size=grid.shape) * spacing
    keep = rng.random(len(grid)) < params.density
    return grid[keep]


def _paint_cell(
    labels: np.ndarray,
    best: np.ndarray,
    index: int,
    centre: np.ndarray,
    params: ShapeParams,
    rng: np.random.Generator,
) -> None:
    diameter = params.diameter * max(0.4, 1 + params.diameter_jitter * rng.standard_normal())
    ratio = rng.uniform(1.0, params.elongation)
    semi_long, semi_short = diameter / 2 * np.sqrt(ratio), diameter / 2 / np.sqrt(ratio)
    angle = rng.uniform(0, np.pi)
    harmonics = rng.integers(2, 6, size=2)
    phases = rng.uniform(0, 2 * np.pi, size=2)
    reach = int(np.ceil(semi_long * (1 + 2 * params.irregularity))) + 1
    y0, x0 = int(max(0, centre[0] - reach)), int(max(0, centre[1] - reach))
    y1 = int(min(labels.shape[0], centre[0] + reach + 1))
    x1 = int(min(labels.shape[1], centre[1] + reach + 1))
    if y1 <= y0 or x1 <= x0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    along, across = dy * cos + dx * sin, -dy * sin + dx * cos
    distance = np.sqrt((along / semi_long) ** 2 + (across / semi_short) ** 2)
    theta = np.arctan2(across, along)
    wobble = 1 + params.irregularity * (
        np.sin(harmonics[0] * theta + phases[0]) + 0.5 * np.sin(harmonics[1] * theta + phases[1])
    )
    distance = distance / wobble
    box_best = best[y0:y1, x0:x1]
    win = (distance < 1) & (distance < box_best)
    box_best[win] = distance[win]
    labels[y0:y1, x0:x1][win] = index


def _keep_largest_parts(labels: np.ndarray) -> np.ndarray:
    """Keep each label's largest 4-connected part and renumber labels 1..N."""
    out = np.zeros_like(labels)
    next_label = 1
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        mask = labels[box] == index
        parts, count = ndimage.label(mask)
        if count > 1:
            sizes = np.bincount(parts.ravel())[1:]
            mask = parts == (np.argmax(sizes) + 1)
        out[box][mask] = next_label
        next_label += 1
    return out
