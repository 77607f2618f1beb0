"""The network over one region of a large image, on the whole image's tile grid.

How it works: the whole image is resized by ``scale`` (network pixels) and cut into tiles
by ``zoo.tiling.plan_tiles`` over the whole resized image, exactly as ``Predictor`` does.
For a region, only the tiles that touch it run; their outputs are blended with the same
raised-cosine weights, added in the same (row-major) order, so every network pixel gets the
value it gets in any other region. Resizing uses bilinear sampling in whole-image
coordinates (``Resampler``), so a region of the resized image does not depend on which
window of the original it was computed from.

Two more things make a region's maps independent of the blocks and of the worker count:
tiles run in batches of a fixed size (``tile_batch``; the last batch is zero-padded), and
the network runs with one intra-op thread (torch's CPU results differ with the batch size
and the thread count; per tile, at a fixed size and thread count, they do not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from zoo.large import norm
from zoo.large.blocks import Window
from zoo.model import NET_FLOW_SCALE
from zoo.preprocess import scaled_shape, select_channels
from zoo.tiling import TileGrid, plan_tiles, taper


@dataclass(frozen=True)
class Resampler:
    """Bilinear resizing of the whole image from ``source`` to ``target`` shape, evaluated
    window by window (``align_corners=False`` geometry, as ``torch`` and ``zoo.preprocess``)."""

    source: tuple[int, int]
    target: tuple[int, int]

    @property
    def identity(self) -> bool:
        return tuple(self.source) == tuple(self.target)

    def _axis(self, axis: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source indices (below, above) and weights of ``above`` for targets start..stop-1."""
        n_in, n_out = self.source[axis], self.target[axis]
        where = (np.arange(start, stop, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        where = np.maximum(where, 0.0)
        below = np.minimum(np.floor(where).astype(np.int64), n_in - 1)
        above = np.minimum(below + 1, n_in - 1)
        return below, above, (where - below).astype(np.float32)

    def needs(self, window: Window) -> Window:
        """The source window that the target ``window`` is interpolated from."""
        if self.identity:
            return window
        rows, cols = self._axis(0, window.y0, window.y1), self._axis(1, window.x0, window.x1)
        return Window(int(rows[0][0]), int(rows[1][-1]) + 1, int(cols[0][0]), int(cols[1][-1]) + 1)

    def apply(self, data: np.ndarray, held: Window, window: Window) -> np.ndarray:
        """Target pixels of ``window`` from ``data`` ``(C, h, w)`` that holds source ``held``."""
        if self.identity:
            return np.ascontiguousarray(data[(slice(None), *window.relative_to(held))])
        below, above, weight = self._axis(0, window.y0, window.y1)
        top, bottom = data[:, below - held.y0], data[:, above - held.y0]
        rows = top * (1 - weight)[:, None] + bottom * weight[:, None]
        below, above, weight = self._axis(1, window.x0, window.x1)
        left, right = rows[:, :, below - held.x0], rows[:, :, above - held.x0]
        return (left * (1 - weight) + right * weight).astype(np.float32)


@dataclass(frozen=True)
class Geometry:
    """Where network tiles lie for a whole image.

    Attributes:
        shape: ``(Y, X)`` of the image.
        scale: resize factor (``diam_mean / diameter``).
        tile: network tile side; ``overlap``: fraction neighbouring tiles share.
        divisor: the network's size divisor.
    """

    shape: tuple[int, int]
    scale: float
    tile: int
    overlap: float
    divisor: int

    @cached_property
    def scaled(self) -> tuple[int, int]:
        return scaled_shape(self.shape, self.scale)

    @cached_property
    def grid(self) -> TileGrid:
        return plan_tiles(self.scaled, tile=self.tile, overlap=self.overlap, divisor=self.divisor)

    @cached_property
    def weights(self) -> np.ndarray:
        ty, tx = self.grid.tile
        return taper(self.grid.tile, int(round(self.overlap * min(ty, tx))))

    def tiles_over(self, window: Window) -> list[tuple[int, int]]:
        """Origins of the tiles that overlap scaled ``window``, in the grid's row-major order."""
        ty, tx = self.grid.tile
        ys = [y for y in self.grid.starts_y if y < window.y1 and y + ty > window.y0]
        xs = [x for x in self.grid.starts_x if x < window.x1 and x + tx > window.x0]
        return [(y, x) for y in ys for x in xs]


@dataclass(frozen=True)
class RegionInput:
    """How a region's network input is made: channels, normalisation and tile batching.

    Attributes:
        cyto: source channel of the cytoplasm; nucleus: of the nucleus, or None.
        n_in: network input channels.
        bounds: per input channel ``(low, high)`` normalisation bounds.
        tile_batch: tiles per network call (fixed; the last batch is zero-padded).
        augment: average the four flips (test-time augmentation).
    """

    cyto: int
    nucleus: int | None
    n_in: int
    bounds: tuple[tuple[float, float], ...]
    tile_batch: int = 1
    augment: bool = False


def region_maps(predictor, image, region: Window, geometry: Geometry, given: RegionInput
                ) -> tuple[np.ndarray, np.ndarray]:
    """Unit flows and cell probability of ``region``, at image resolution.

    Args:
        predictor: a ``zoo.predict.Predictor`` (its runner runs the tiles).
        image: a ``LazyImage``.
        region: the window of the image to compute.
        geometry: the whole image's tile grid.
        given: channels, normalisation and batching.

    Returns:
        ``flows (2, h, w)`` float32 unit-scale and ``cellprob (h, w)`` float32 logits.
    """
    down = Resampler(geometry.shape, geometry.scaled)  # image → network pixels
    up = Resampler(geometry.scaled, geometry.shape)  # network pixels → image
    needed = up.needs(region)
    origins = geometry.tiles_over(needed)
    ty, tx = geometry.grid.tile
    union = Window(min(y for y, _ in origins), max(y for y, _ in origins) + ty,
                   min(x for _, x in origins), max(x for _, x in origins) + tx)
    inside = union.intersect(Window(0, geometry.scaled[0], 0, geometry.scaled[1]))
    source = down.needs(inside)
    stack = select_channels(image.read(source), given.cyto, given.nucleus, n_in=given.n_in)
    stack = down.apply(norm.apply(stack, given.bounds), source, inside)
    padded = np.zeros((given.n_in, *union.shape), dtype=np.float32)
    padded[(slice(None), *inside.relative_to(union))] = stack
    del stack
    maps = _blend(predictor, padded, union, origins, geometry, given)
    maps = up.apply(maps[(slice(None), *needed.relative_to(union))], needed, region)
    return maps[:2] / NET_FLOW_SCALE, maps[2]


def _blend(predictor, padded: np.ndarray, union: Window, origins: list[tuple[int, int]],
           geometry: Geometry, given: RegionInput) -> np.ndarray:
    """Run the tiles at ``origins`` and blend them into ``(3, *union.shape)`` maps."""
    ty, tx = geometry.grid.tile
    weights = geometry.weights
    total = np.zeros((3, *union.shape), dtype=np.float32)
    norm_sum = np.zeros(union.shape, dtype=np.float32)
    batch = np.zeros((given.tile_batch, given.n_in, ty, tx), dtype=np.float32)
    for first in range(0, len(origins), given.tile_batch):
        chunk = origins[first : first + given.tile_batch]
        batch[:] = 0
        for i, (y, x) in enumerate(chunk):
            batch[i] = padded[:, y - union.y0 : y - union.y0 + ty, x - union.x0 : x - union.x0 + tx]
        out = _run(predictor, batch, given.augment)
        for i, (y, x) in enumerate(chunk):
            rows = slice(y - union.y0, y - union.y0 + ty)
            cols = slice(x - union.x0, x - union.x0 + tx)
            total[:, rows, cols] += out[i] * weights
            norm_sum[rows, cols] += weights
    total /= norm_sum
    return total


def _run(predictor, batch: np.ndarray, augment: bool) -> np.ndarray:
    """Network outputs ``(B, 3, ty, tx)`` of one batch (with flips when ``augment``)."""
    return predictor.run_tiles(batch, augment)[0]  # the one place that knows the flips


def tiles_per_pixel(geometry: Geometry, block: int, halo: int) -> float:
    """Network tile pixels run per image pixel for square blocks of ``block`` (a cost model)."""
    side = (block + 2 * halo) * geometry.scale
    step = geometry.tile * (1 - geometry.overlap)
    per_axis = math.ceil(side / step) + 1
    return per_axis**2 * geometry.tile**2 / block**2
