"""Cells across block borders: which block decides a cell, canonical numbering, parts on disk.

How a seam is resolved (no merging of fragments): a block segments its outer window (core
plus halo) and keeps every cell that has pixels in its core. A cell that lies in two cores
is computed by both blocks, from the same network maps (``zoo.large.network``) and, as long
as it does not reach the edge of either outer window, from the same flows: both get the same
pixels. Each cell is *owned* by the block whose core holds its anchor, the first pixel of the
cell in raster order of the whole image; only the owner reports its statistics. The halo
must exceed the largest cell extent: a cell that reaches the inner edge of an outer window
is counted as ``cut`` (its mask is truncated there).

Canonical numbering: the owned anchors of all blocks, sorted, number the cells 1..N, which is
``flows_to_masks``' own rule (raster order of each mask's first pixel), so the labels do not
depend on the block size or on the order in which blocks finish. A block's core pixels take
the number of their cell's anchor; a cell whose anchor no block owns (two blocks disagreed
about it) is counted as an ``orphan`` and its pixels in that core stay 0.

Parts on disk, one per block, in the job's parts folder: ``block-<i>.zarr`` (the core's
block-local labels, zstd-compressed chunks) and ``block-<i>.npz`` (anchors and the owned
cells' statistics), written last and atomically: a block is done when its ``.npz`` exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from zoo.large.blocks import Block, BlockPlan, Window

#: Columns of the per-cell table, before the per-channel mean intensities.
TABLE_COLUMNS = ("label", "centroid_y", "centroid_x", "area", "bbox_y0", "bbox_x0",
                 "bbox_y1", "bbox_x1")
_CHUNK = 256


@dataclass
class BlockCells:
    """What a block decided.

    Attributes:
        core: ``(h, w)`` block-local labels of the core (0 = background).
        anchors: ``(n + 1,)`` int64 whole-image raster index of each local label's first
            pixel; -1 for 0 and for labels without pixels.
        owned: ``(k,)`` int64 anchors of the cells this block owns, sorted.
        stats: ``(k, 7 + C)`` float64 per owned cell: area, sum of y, sum of x, bbox
            y0, x0, y1, x1 (whole-image, stop exclusive), then the sum of each channel.
        cut: cells with pixels in the core that reach the inner edge of the outer window.
    """

    core: np.ndarray
    anchors: np.ndarray
    owned: np.ndarray
    stats: np.ndarray
    cut: int


def resolve(labels: np.ndarray, block: Block, shape: tuple[int, int], pixels: np.ndarray
            ) -> BlockCells:
    """Keep the cells of ``block``'s core, anchor them, and measure the ones it owns.

    Args:
        labels: ``(h, w)`` labels of the block's outer window (``flows_to_masks`` output).
        block: the block.
        shape: ``(Y, X)`` of the whole image.
        pixels: ``(h, w, C)`` the image over the outer window (for mean intensities).
    """
    outer, core = block.outer, block.core
    height, width = labels.shape
    flat = labels.ravel()
    foreground = np.flatnonzero(flat)
    ids = flat[foreground].astype(np.int64)
    n = int(flat.max()) if flat.size else 0
    present, first = np.unique(ids, return_index=True)
    ys, xs = np.divmod(foreground[first], width)
    anchors = np.full(n + 1, -1, dtype=np.int64)
    anchors[present] = (ys + outer.y0) * shape[1] + (xs + outer.x0)
    core_labels = labels[core.relative_to(outer)]
    in_core = np.unique(core_labels)
    in_core = in_core[in_core > 0].astype(np.int64)
    boxes = ndimage.find_objects(labels)
    cut = 0
    for label in in_core:
        rows, cols = boxes[label - 1]
        if (rows.start == 0 and outer.y0 > 0) or (rows.stop == height and outer.y1 < shape[0]) \
                or (cols.start == 0 and outer.x0 > 0) or (cols.stop == width and outer.x1 < shape[1]):
            cut += 1
    ay, ax = np.divmod(anchors[in_core], shape[1])
    mine = in_core[(ay >= core.y0) & (ay < core.y1) & (ax >= core.x0) & (ax < core.x1)]
    stats = _measure(labels, ids, foreground, mine, boxes, outer, pixels)
    order = np.argsort(anchors[mine], kind="stable")
    return BlockCells(core_labels, anchors, anchors[mine][order], stats[order], cut)


def _measure(labels: np.ndarray, ids: np.ndarray, foreground: np.ndarray, mine: np.ndarray,
             boxes: list, outer: Window, pixels: np.ndarray) -> np.ndarray:
    """Area, coordinate sums, bbox and channel sums of the labels in ``mine``."""
    size = int(labels.max()) + 1 if labels.size else 1
    ys, xs = np.divmod(foreground, labels.shape[1])
    columns = [np.bincount(ids, minlength=size).astype(np.float64),
               np.bincount(ids, weights=(ys + outer.y0).astype(np.float64), minlength=size),
               np.bincount(ids, weights=(xs + outer.x0).astype(np.float64), minlength=size)]
    channels = pixels.reshape(-1, pixels.shape[-1])[foreground].astype(np.float64)
    sums = [np.bincount(ids, weights=channels[:, c], minlength=size)
            for c in range(channels.shape[1])]
    stats = np.zeros((len(mine), 7 + len(sums)), dtype=np.float64)
    for row, label in enumerate(mine):
        rows, cols = boxes[label - 1]
        stats[row, :3] = [column[label] for column in columns]
        stats[row, 3:7] = (rows.start + outer.y0, cols.start + outer.x0,
                           rows.stop + outer.y0, cols.stop + outer.x0)
        stats[row, 7:] = [s[label] for s in sums]
    return stats


# ----------------------------------------------------------------------------- parts on disk


def part_paths(parts: Path, index: int) -> tuple[Path, Path]:
    """The labels store and the metadata file of block ``index``."""
    return parts / f"block-{index:06d}.zarr", parts / f"block-{index:06d}.npz"


def done_blocks(parts: Path, plan: BlockPlan) -> set[int]:
    """Blocks whose parts are complete (their ``.npz`` exists)."""
    return {b.index for b in plan.blocks if part_paths(parts, b.index)[1].is_file()}


def save(parts: Path, index: int, cells: BlockCells) -> None:
    """Write block ``index``'s parts; the ``.npz`` last, renamed into place."""
    import zarr

    store, meta = part_paths(parts, index)
    core = cells.core.astype(np.uint32, copy=False)
    chunks = (min(_CHUNK, core.shape[0]), min(_CHUNK, core.shape[1]))
    array = zarr.create_array(str(store), shape=core.shape, chunks=chunks, dtype=np.uint32,
                              fill_value=0, overwrite=True)
    array[...] = core
    staging = meta.with_name(f".{meta.stem}.tmp.npz")
    np.savez(staging, anchors=cells.anchors, owned=cells.owned, stats=cells.stats,
             cut=np.int64(cells.cut))
    os.replace(staging, meta)


def load_meta(parts: Path, index: int) -> dict[str, np.ndarray]:
    with np.load(part_paths(parts, index)[1]) as data:
        return {key: data[key] for key in data.files}


def number_cells(parts: Path, plan: BlockPlan) -> np.ndarray:
    """All owned anchors of the image, sorted: cell ``i + 1`` has anchor ``result[i]``."""
    owned = [load_meta(parts, block.index)["owned"] for block in plan.blocks]
    anchors = np.sort(np.concatenate(owned)) if owned else np.zeros(0, np.int64)
    if anchors.size > 1 and np.any(anchors[1:] == anchors[:-1]):
        raise RuntimeError("two blocks own the same anchor: the block plan is inconsistent")
    return anchors


class LabelReader:
    """Final labels of any window, from the parts and the sorted anchors (picklable).

    Args:
        parts: the parts folder.
        plan: the block plan.
        anchors: the sorted owned anchors (``number_cells``).
        dtype: the output dtype (uint16 when there are fewer than 65536 cells, else uint32).

    Attributes:
        orphans: ``(block, local label)`` pairs read so far whose anchor no block owns.
    """

    def __init__(self, parts: Path, plan: BlockPlan, anchors: np.ndarray, dtype: np.dtype
                 ) -> None:
        self.parts, self.plan, self.dtype = Path(parts), plan, np.dtype(dtype)
        self._anchors = np.asarray(anchors, dtype=np.int64)
        self._maps: dict[int, np.ndarray] = {}
        self._stores: dict[int, object] = {}
        self.orphans: set[tuple[int, int]] = set()

    def mapping(self, index: int) -> np.ndarray:
        """Block-local label → final label (0 for an orphan) of block ``index``."""
        if index not in self._maps:
            local = load_meta(self.parts, index)["anchors"]
            mapping = np.zeros(local.size, dtype=self.dtype)
            if self._anchors.size:
                position = np.minimum(np.searchsorted(self._anchors, local), self._anchors.size - 1)
                found = (local >= 0) & (self._anchors[position] == local)
                mapping[found] = (position[found] + 1).astype(self.dtype)
            self._maps[index] = mapping
        return self._maps[index]

    def read(self, window: Window, *, step: int = 1) -> np.ndarray:
        """Final labels of ``window``: ``(h, w)``, or every ``step``-th row and column of it
        (nearest-neighbour downsampling) as ``(ceil(h / step), ceil(w / step))``."""
        import zarr

        height, width = -(-window.shape[0] // step), -(-window.shape[1] // step)
        out = np.zeros((height, width), dtype=self.dtype)
        for block in self.plan.covering(window):
            overlap = block.core.intersect(window)
            rows = _stepped(overlap.y0, overlap.y1, window.y0, step)
            cols = _stepped(overlap.x0, overlap.x1, window.x0, step)
            if rows is None or cols is None:
                continue
            if block.index not in self._stores:
                path = part_paths(self.parts, block.index)[0]
                self._stores[block.index] = zarr.open_array(str(path), mode="r")
            local = self._stores[block.index][rows[0] - block.core.y0 : rows[1] - block.core.y0 : step,
                          cols[0] - block.core.x0 : cols[1] - block.core.x0 : step]
            final = self.mapping(block.index)[local]
            lost = np.unique(local[(final == 0) & (local > 0)])
            self.orphans.update((block.index, int(label)) for label in lost)
            top, left = (rows[0] - window.y0) // step, (cols[0] - window.x0) // step
            out[top : top + final.shape[0], left : left + final.shape[1]] = final
        return out


def _stepped(start: int, stop: int, origin: int, step: int) -> tuple[int, int] | None:
    """The first and past-the-last sampled coordinate in ``[start, stop)`` on the grid
    ``origin + k * step``, or None when no grid point falls inside."""
    first = origin + -(-(start - origin) // step) * step
    return (first, stop) if first < stop else None
