"""Block plans: how a large image is cut into blocks, and how large a block may be.

A block is a ``core`` window of the image (the blocks' cores tile the image without
overlap) plus a ``halo`` of ``halo`` pixels on every side (clipped to the image): the
``outer`` window that is segmented. Blocks are numbered in row-major order.

How the block size follows the memory budget: a process holds a fixed base (Python, torch,
the model, numba's compiled kernels) plus, for each block it segments at the same time,
``block_bytes``: ``NET_BYTES_PER_PIXEL`` per pixel of the network's window (the block's outer
window resized by ``scale``, widened to whole tiles: input, blended maps, weights) and
``MASK_BYTES_PER_PIXEL`` per pixel of the outer window (maps at image resolution, flows,
flows → masks, statistics); measured on the shipped networks (``bench/bench_large.py``).
``block_side`` picks the largest block whose blocks fit (on the 2-core machine the measured
peak stayed at about half the model's figure: it is conservative). The whole-image path needs
``WHOLE_BASE`` (a batch of tiles through the network) plus ``WHOLE_BYTES_PER_PIXEL`` per pixel
(every tile's output and the maps at once): ``whole_image_limit``.

This module imports nothing heavy.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

from zoo.errors import InvalidParamsError

#: Block sides are multiples of this (and of the output chunk when they exceed it).
GRAIN = 64
#: Peak bytes per pixel of a block's network window (resized outer window + whole tiles).
NET_BYTES_PER_PIXEL = 48
#: Peak bytes per pixel of a block's outer window after the network.
MASK_BYTES_PER_PIXEL = 90
#: Peak bytes per pixel of the whole-image path (``Predictor.predict``; measured ~100 at 2048²).
WHOLE_BYTES_PER_PIXEL = 120
#: Memory of the whole-image path that does not grow with the image (a batch of 8 tiles).
WHOLE_BASE = 300 * 2**20
#: Memory a worker process holds before it segments anything (torch, model, numba).
PROCESS_BASE = 600 * 2**20
#: The default ``--max-memory``: per process, sized for a 2-core / 24 GB machine.
DEFAULT_MAX_MEMORY = 2 * 2**30
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40,
          "tib": 2**40}


@dataclass(frozen=True)
class Window:
    """A rectangle ``[y0, y1) × [x0, x1)`` of image pixels."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def size(self) -> int:
        return max(0, self.y1 - self.y0) * max(0, self.x1 - self.x0)

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def relative_to(self, outer: Window) -> tuple[slice, slice]:
        """The slices of this window inside an array that holds ``outer``."""
        return (slice(self.y0 - outer.y0, self.y1 - outer.y0),
                slice(self.x0 - outer.x0, self.x1 - outer.x0))

    def intersect(self, other: Window) -> Window | None:
        """The overlap of two windows, or None when they do not overlap."""
        window = Window(max(self.y0, other.y0), min(self.y1, other.y1),
                        max(self.x0, other.x0), min(self.x1, other.x1))
        return window if window.y1 > window.y0 and window.x1 > window.x0 else None

    def grow(self, margin: int, shape: tuple[int, int]) -> Window:
        """This window with ``margin`` pixels more on every side, clipped to ``shape``."""
        return Window(max(0, self.y0 - margin), min(shape[0], self.y1 + margin),
                      max(0, self.x0 - margin), min(shape[1], self.x1 + margin))


@dataclass(frozen=True)
class Block:
    """One block: ``core`` (the pixels it decides) inside ``outer`` (the pixels it segments)."""

    index: int
    core: Window
    outer: Window


@dataclass(frozen=True)
class BlockPlan:
    """The blocks of an image.

    Attributes:
        shape: ``(Y, X)`` of the image.
        block: side of a block's core in pixels (edge blocks are smaller).
        halo: pixels added on every side of a core (clipped to the image).
    """

    shape: tuple[int, int]
    block: int
    halo: int

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise InvalidParamsError(f"image shape must be (Y, X) >= 1, got {self.shape}")
        if self.block < 16:
            raise InvalidParamsError(f"block side must be >= 16 pixels, got {self.block}")
        if self.halo < 0:
            raise InvalidParamsError(f"halo must be >= 0, got {self.halo}")
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))

    @property
    def grid(self) -> tuple[int, int]:
        """Blocks along Y and X."""
        return math.ceil(self.shape[0] / self.block), math.ceil(self.shape[1] / self.block)

    def __len__(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @cached_property
    def blocks(self) -> tuple[Block, ...]:
        """Every block, row-major."""
        rows, cols = self.grid
        out = []
        for row in range(rows):
            for col in range(cols):
                core = Window(row * self.block, min(self.shape[0], (row + 1) * self.block),
                              col * self.block, min(self.shape[1], (col + 1) * self.block))
                out.append(Block(len(out), core, core.grow(self.halo, self.shape)))
        return tuple(out)

    def covering(self, window: Window) -> list[Block]:
        """The blocks whose cores overlap ``window``, row-major."""
        rows, cols = self.grid
        first_row, last_row = window.y0 // self.block, min(rows - 1, (window.y1 - 1) // self.block)
        first_col, last_col = window.x0 // self.block, min(cols - 1, (window.x1 - 1) // self.block)
        return [self.blocks[row * cols + col] for row in range(first_row, last_row + 1)
                for col in range(first_col, last_col + 1)]

    @property
    def full(self) -> Window:
        return Window(0, self.shape[0], 0, self.shape[1])


def halo_for(diameter: float) -> int:
    """The default halo for cells of ``diameter`` pixels: 4 diameters, at least 48, a multiple
    of 8. A cell is resolved exactly when its extent (and the distance its pixels travel along
    the flows) stays below the halo; elongated cells reach about twice the mean diameter."""
    if not diameter > 0:
        raise InvalidParamsError(f"diameter must be positive, got {diameter}")
    return int(math.ceil(max(48.0, 4.0 * diameter) / 8) * 8)


def block_bytes(side: int, *, halo: int, scale: float = 1.0, tile: int = 256) -> int:
    """Peak bytes one block of core ``side`` needs while it is segmented (see module doc)."""
    outer = side + 2 * halo
    network = outer * scale + 2 * tile
    return int(NET_BYTES_PER_PIXEL * network**2 + MASK_BYTES_PER_PIXEL * outer**2)


def block_side(
    max_memory: int,
    *,
    concurrency: int = 1,
    halo: int = 64,
    scale: float = 1.0,
    chunk: int = 256,
    tile: int = 256,
) -> int:
    """The largest block side whose blocks fit ``max_memory`` bytes in one process.

    Args:
        max_memory: the process's budget in bytes (``--max-memory``).
        concurrency: blocks the process segments at the same time (its threads).
        halo: the halo in pixels.
        scale: the network's resize factor (``diam_mean / diameter``).
        chunk: the output chunk side; blocks of at least ``chunk`` are multiples of it.
        tile: the network tile side.

    Returns:
        A multiple of ``GRAIN`` (and of ``chunk`` when at least ``chunk``).

    Raises:
        InvalidParamsError: the budget does not hold the process's base and one small block.
    """
    if concurrency < 1:
        raise InvalidParamsError(f"concurrency must be >= 1, got {concurrency}")
    per_block = (max_memory - PROCESS_BASE) / concurrency

    def fits(side: int) -> bool:
        return block_bytes(side, halo=halo, scale=scale, tile=tile) <= per_block

    if not fits(GRAIN):
        need = PROCESS_BASE + concurrency * block_bytes(GRAIN, halo=halo, scale=scale, tile=tile)
        raise InvalidParamsError(
            f"--max-memory {format_bytes(max_memory)} is too small for {concurrency} block(s) "
            f"at once; give at least {format_bytes(need)}"
        )
    side = GRAIN
    while fits(side + GRAIN):
        side += GRAIN
    return side // chunk * chunk if side >= chunk else side


def whole_image_limit(max_memory: int) -> int:
    """Pixels above which one image does not fit ``max_memory`` whole (use blocks)."""
    return max(0, (max_memory - PROCESS_BASE - WHOLE_BASE) // WHOLE_BYTES_PER_PIXEL)


def parse_memory(text: str | int) -> int:
    """``"3GB"``, ``"512MiB"``, ``"2g"`` or a byte count → bytes (binary units: 1 GB = 2³⁰ B).

    Raises:
        InvalidParamsError: not a positive size.
    """
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _UNITS:
            raise InvalidParamsError(f"memory must look like 3GB, 512MB or 2g, got {text!r}")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise InvalidParamsError(f"memory must be positive, got {text!r}")
    return value


def format_bytes(value: int) -> str:
    """``3221225472`` → ``'3.0 GB'`` (binary units, as ``parse_memory`` reads them)."""
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"
