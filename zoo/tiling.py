"""Tiling of large images into overlapping network-sized tiles and smooth re-assembly.

How it works: the image ``(C, Y, X)`` is zero-padded to at least one tile and to a
multiple of the network divisor; tile starts are spread evenly so neighbours
overlap by at least ``overlap`` of a tile; outputs are blended with a separable
raised-cosine taper, normalised by the summed weights, so seams vanish.

``plan_tiles_cellpose`` lays tiles out as cellpose 3.1.1.2's ``run_net`` does, so that an
imported Cellpose network sees exactly the input it sees in cellpose: the image is padded on
every side (8 pixels, plus centring to a multiple of 16), cut into ``ceil((1 + 2 overlap)
L / tile)`` tiles per axis at ``linspace`` starts rounded down, and blended with Cellpose's
sigmoid taper (``blend="cellpose"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoo.errors import InvalidParamsError


@dataclass(frozen=True)
class TileGrid:
    """Where tiles lie in the padded image.

    Attributes:
        shape: ``(Y, X)`` of the original image.
        padded: ``(Y, X)`` after padding.
        tile: ``(ty, tx)`` tile size.
        starts_y: top rows of the tiles.
        starts_x: left columns of the tiles.
        offset: ``(top, left)`` padding before the image (0 = padded at the end only).
        blend: ``cosine`` (raised-cosine taper) or ``cellpose`` (Cellpose's sigmoid taper).
    """

    shape: tuple[int, int]
    padded: tuple[int, int]
    tile: tuple[int, int]
    starts_y: tuple[int, ...]
    starts_x: tuple[int, ...]
    offset: tuple[int, int] = (0, 0)
    blend: str = "cosine"

    @property
    def origins(self) -> list[tuple[int, int]]:
        """Tile origins in row-major order."""
        return [(y, x) for y in self.starts_y for x in self.starts_x]


def _round_up(value: int, divisor: int) -> int:
    return int(math.ceil(value / divisor) * divisor)


def _starts(length: int, tile: int, overlap: float) -> tuple[int, ...]:
    if length <= tile:
        return (0,)
    step = tile * (1 - overlap)
    count = int(math.ceil((length - tile) / step)) + 1
    return tuple(int(round(s)) for s in np.linspace(0, length - tile, count))


def plan_tiles(
    shape: tuple[int, int], *, tile: int = 256, overlap: float = 0.1, divisor: int = 8
) -> TileGrid:
    """Plan tiles of at most ``tile`` pixels for an image of ``shape``."""
    if tile % divisor or tile <= 0:
        raise InvalidParamsError(f"tile size must be a positive multiple of {divisor}, got {tile}")
    if not 0 <= overlap < 0.9:
        raise InvalidParamsError(f"tile overlap must be in [0, 0.9), got {overlap}")
    padded = tuple(_round_up(s, divisor) for s in shape)
    sizes = tuple(min(tile, p) for p in padded)
    return TileGrid(
        shape=tuple(shape),
        padded=padded,
        tile=sizes,
        starts_y=_starts(padded[0], sizes[0], overlap),
        starts_x=_starts(padded[1], sizes[1], overlap),
    )


CELLPOSE_DIVISOR = 16  # cellpose pads to a multiple of 16 ...
CELLPOSE_MARGIN = 8  # ... plus 8 pixels on every side (get_pad_yx(div=16, extra=1))


def _cellpose_pads(length: int) -> tuple[int, int]:
    extra = int(CELLPOSE_DIVISOR * math.ceil(length / CELLPOSE_DIVISOR) - length)
    return CELLPOSE_MARGIN + extra // 2, CELLPOSE_MARGIN + extra - extra // 2


def _cellpose_starts(length: int, tile: int, overlap: float) -> tuple[int, ...]:
    count = 1 if length <= tile else int(math.ceil((1.0 + 2 * overlap) * length / tile))
    return tuple(int(s) for s in np.linspace(0, length - min(tile, length), count).astype(int))


def plan_tiles_cellpose(
    shape: tuple[int, int], *, tile: int = 224, overlap: float = 0.1
) -> TileGrid:
    """Tiles as cellpose 3.1.1.2's ``run_net`` / ``make_tiles`` lay them out (module doc)."""
    if tile % CELLPOSE_DIVISOR or tile <= 0:
        raise InvalidParamsError(f"tile size must be a positive multiple of 16, got {tile}")
    overlap = min(0.5, max(0.05, overlap))
    pads = [_cellpose_pads(s) for s in shape]
    padded = tuple(s + a + b for s, (a, b) in zip(shape, pads))
    return TileGrid(
        shape=tuple(shape), padded=padded, tile=tuple(min(tile, p) for p in padded),
        starts_y=_cellpose_starts(padded[0], tile, overlap),
        starts_x=_cellpose_starts(padded[1], tile, overlap),
        offset=(pads[0][0], pads[1][0]), blend="cellpose",
    )


def cellpose_taper(size: tuple[int, int], sigma: float = 7.5) -> np.ndarray:
    """Cellpose's blending weights ``(ty, tx)``: a separable sigmoid falling 20 pixels from
    the edges of a (at least) 224-pixel square, cropped to ``size``."""
    ty, tx = size
    side = max(224, ty, tx)
    distance = np.abs(np.arange(side) - (side - 1) / 2)
    ramp = 1 / (1 + np.exp((distance - (side / 2 - 20)) / sigma))
    weights = ramp[:, None] * ramp[None, :]
    centre = side // 2
    return weights[centre - ty // 2: centre + ty // 2 + ty % 2,
                   centre - tx // 2: centre + tx // 2 + tx % 2].astype(np.float32)


def pad_to_divisor(stack: np.ndarray, divisor: int) -> np.ndarray:
    """``(C, Y, X)`` zero-padded at the bottom and right to multiples of ``divisor``."""
    pad_y, pad_x = (-stack.shape[1]) % divisor, (-stack.shape[2]) % divisor
    return np.ascontiguousarray(np.pad(stack, ((0, 0), (0, pad_y), (0, pad_x))))


def extract_tiles(stack: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Cut ``(C, Y, X)`` into ``(N, C, ty, tx)`` tiles (zero-padded)."""
    padded = np.zeros((stack.shape[0], *grid.padded), dtype=np.float32)
    top, left = grid.offset
    padded[:, top: top + stack.shape[1], left: left + stack.shape[2]] = stack
    ty, tx = grid.tile
    return np.stack([padded[:, y : y + ty, x : x + tx] for y, x in grid.origins])


def taper(size: tuple[int, int], overlap_px: int) -> np.ndarray:
    """Blending weights ``(ty, tx)``: 1 inside, raised-cosine ramps of ``overlap_px`` at edges."""
    axes = []
    for n in size:
        ramp_len = max(1, min(overlap_px, n // 2))
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp_len) + 0.5) / ramp_len)
        weights = np.ones(n, dtype=np.float32)
        weights[:ramp_len] = ramp
        weights[n - ramp_len :] = np.minimum(weights[n - ramp_len :], ramp[::-1])
        axes.append(np.maximum(weights, 1e-3))
    return np.outer(axes[0], axes[1]).astype(np.float32)


def stitch_tiles(tiles: np.ndarray, grid: TileGrid, *, overlap: float = 0.1) -> np.ndarray:
    """Blend ``(N, K, ty, tx)`` tile outputs into ``(K, Y, X)`` for the original shape."""
    ty, tx = grid.tile
    weights = (cellpose_taper(grid.tile) if grid.blend == "cellpose"
               else taper(grid.tile, int(round(overlap * min(ty, tx)))))
    total = np.zeros((tiles.shape[1], *grid.padded), dtype=np.float32)
    norm = np.zeros(grid.padded, dtype=np.float32)
    for tile, (y, x) in zip(tiles, grid.origins):
        total[:, y : y + ty, x : x + tx] += tile * weights
        norm[y : y + ty, x : x + tx] += weights
    total /= norm
    top, left = grid.offset
    return total[:, top: top + grid.shape[0], left: left + grid.shape[1]]
