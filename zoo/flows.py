"""Cellpose-style flows on the CPU: labels → flows, and flows → labels.

Conventions: ``labels`` are ``(Y, X)`` integers, 0 = background, 1..N = cells.
``flows`` are ``(2, Y, X)`` float32 *unit-scale* vectors, channel 0 = flow Y and
channel 1 = flow X, pointing towards each cell's centre. A Cellpose network predicts
five times these flows; divide its output by 5 before calling ``flows_to_masks``.

How labels → flows works (``masks_to_flows``): every cell is processed in its own
padded bounding box, in parallel over cells. Heat is injected at the cell pixel
nearest the cell's centroid and spread by a 3×3 mean that is zero outside the cell
(an absorbing boundary), for ``2 * (box height + box width + 4)`` iterations. The
flow is the central-difference gradient of the heat, normalised to unit length.
This is Cellpose 3's CPU recipe, and the result equals its float64 flows rounded to
float32. Cost is about (box area × box extent) per cell, whatever the image size.

How flows → labels works (``flows_to_masks``): every foreground pixel
(``cellprob > cellprob_threshold``, and only those) follows the bilinearly
interpolated flows, taken as zero on background pixels, for ``niter`` Euler steps of
size 1 clamped to the image. A pixel whose position repeats after one or two steps
stops early with the identical result. Final positions are histogrammed; a bin that
holds more than 10 pixels and is the maximum of its 5×5 neighbourhood seeds a mask,
which grows for 5 king moves over bins holding more than 2 pixels (the seed with
more pixels wins a shared bin). Every pixel takes the mask of its final bin. Then
giant masks are dropped, holes filled, small masks dropped, masks whose own flows
disagree with the given ones dropped (flow-error QC), and masks renumbered 1..N in
raster order of their first pixel. Results do not depend on the thread count.

Threads: per-cell and per-row work runs in chunks on ``numba.get_num_threads()``
Python threads calling GIL-free numba kernels, rather than numba ``prange``: the
same parallelism, dynamic load balancing, half the cold compile time, and it is safe
in forked workers and when several threads segment at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numba
import numpy as np
from numba import njit

from zoo.errors import InvalidImageError, InvalidParamsError
from zoo.params import FlowParams

__all__ = [
    "FlowParams",
    "fill_holes_and_remove_small",
    "flow_error",
    "flows_to_masks",
    "follow_flows",
    "masks_to_flows",
]

_SEED_MIN_COUNT = 10  # a histogram bin must hold more pixels than this to seed a mask
_GROW_MIN_COUNT = 2  # bins holding more pixels than this join a growing mask
_GROW_STEPS = 5  # king moves a mask grows from its seed
_LANES = 16  # pixels followed together, so that their dependency chains overlap
_TASKS_PER_THREAD = 16  # work is split this finely, so threads finish together


class _LabelTable(NamedTuple):
    """Per-label statistics of an int32 label image; row ``k`` describes label ``k``.

    Attributes:
        boxes: ``(n + 1, 4)`` int64 ``y_start, y_stop, x_start, x_stop``; all 0 for
            labels without pixels.
        counts: ``(n + 1,)`` int64 pixel counts (``counts[0]`` is 0).
        first: ``(n + 1,)`` int64 raster index of each label's first pixel.
    """

    boxes: np.ndarray
    counts: np.ndarray
    first: np.ndarray


# ----------------------------------------------------------------------------- public API


def masks_to_flows(labels: np.ndarray) -> np.ndarray:
    """Unit flows towards each cell's centre, from heat diffusion inside the cell.

    Args:
        labels: ``(Y, X)`` non-negative integer labels, 0 = background; values need
            not be consecutive.

    Returns:
        ``(2, Y, X)`` float32 flows (Y, X): unit length inside cells, 0 outside. A
        pixel where the heat gradient vanishes (a one-pixel cell) gets 0.

    Raises:
        InvalidImageError: ``labels`` is not a 2-D array of non-negative integers.
    """
    image = _as_label_image(labels, compact=True)
    flows = np.zeros((2, *image.shape), dtype=np.float32)
    table = _label_table(image)
    _cell_flows_parallel(image, table, table.counts > 0, flows, compare=False)
    return flows


def flow_error(labels: np.ndarray, flows: np.ndarray) -> np.ndarray:
    """Mean squared difference between each mask's own flows and the given flows.

    Each mask's flows are recomputed as ``masks_to_flows`` does; its error is the
    mean over its pixels of ``|recomputed - flows|²`` (Y and X summed). ``flows``
    are unit-scale like ``masks_to_flows`` output, so they are compared as they are
    (Cellpose compares its network output divided by 5: the same quantity).

    Args:
        labels: ``(Y, X)`` non-negative integer labels.
        flows: ``(2, Y, X)`` float unit-scale flows (Y, X).

    Returns:
        ``(labels.max(),)`` float64; entry ``i`` is the error of label ``i + 1``,
        NaN where that label has no pixels.

    Raises:
        InvalidImageError: on a bad ``labels`` array, a label value above
            ``max(2**20, labels.size)``, or a shape mismatch.
    """
    image = _as_label_image(labels, compact=False)
    flows32 = _as_flows(flows, image.shape)
    table = _label_table(image)
    keep = table.counts > 0
    errors = _cell_flows_parallel(image, table, keep, flows32, compare=True)
    errors[~keep] = np.nan
    return errors[1:]


def fill_holes_and_remove_small(labels: np.ndarray, *, min_size: int = 15) -> np.ndarray:
    """Fill the holes of every mask, drop masks under ``min_size`` pixels, renumber.

    A hole of a mask is a 4-connected group of background pixels that touches that
    mask only: not another mask, not the edge of the mask's bounding box. Background
    enclosed by several masks stays background, so no mask overwrites another.

    Args:
        labels: ``(Y, X)`` non-negative integer labels.
        min_size: masks with fewer pixels than this after filling are removed.

    Returns:
        ``(Y, X)`` labels renumbered 1..N in raster order of each mask's first pixel;
        uint16 when N < 65536, else uint32.

    Raises:
        InvalidImageError: ``labels`` is not a 2-D array of non-negative integers.
        InvalidParamsError: ``min_size`` is negative.
    """
    if min_size < 0:
        raise InvalidParamsError(f"min_size must be >= 0, got {min_size}")
    image = _as_label_image(labels, compact=True, copy=True)
    table = _label_table(image)
    keep = table.counts > 0
    counts = table.counts + _fill_holes_parallel(image, table, keep)
    return _renumber(image, table.first, keep & (counts >= min_size))


def follow_flows(flows: np.ndarray, foreground: np.ndarray, *, niter: int = 200) -> np.ndarray:
    """Where each foreground pixel ends up after ``niter`` Euler steps along the flows.

    Flows are bilinearly interpolated and taken as zero on background pixels; each
    step adds the interpolated flow (float32) and clamps the position to the image.

    Args:
        flows: ``(2, Y, X)`` float unit-scale flows (Y, X).
        foreground: ``(Y, X)`` bool, the pixels to move.
        niter: number of steps, >= 1.

    Returns:
        ``(N,)`` int32 (int64 for images of 2**31 pixels or more): for the N
        foreground pixels in raster order, the raster index ``y * X + x`` of the
        integer part of the final position.

    Raises:
        InvalidImageError: ``foreground`` is not 2-D or ``flows`` do not match it.
        InvalidParamsError: ``niter`` is below 1.
    """
    if niter < 1:
        raise InvalidParamsError(f"niter must be >= 1, got {niter}")
    foreground = np.ascontiguousarray(foreground, dtype=bool)
    if foreground.ndim != 2:
        raise InvalidImageError(f"foreground must be 2-D, got shape {foreground.shape}")
    flows32 = _as_flows(flows, foreground.shape)
    row_start = np.zeros(foreground.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.count_nonzero(foreground, axis=1), out=row_start[1:])
    final = np.empty(int(row_start[-1]), dtype=np.int32 if foreground.size < 2**31 else np.int64)
    corners = _corner_codes(foreground)
    args = (flows32[0], flows32[1], corners, row_start, int(niter), final)
    _parallel_for(_track_kernel, foreground.shape[0], args)
    return final


def flows_to_masks(
    flows: np.ndarray, cellprob: np.ndarray, params: FlowParams | None = None
) -> np.ndarray:
    """Labels from unit-scale flows and cell probability, as Cellpose's dynamics do.

    The flow-error QC compares ``flows`` directly with ``masks_to_flows`` of each
    mask (see ``flow_error``); both are unit-scale, so no factor 5 is involved.

    Args:
        flows: ``(2, Y, X)`` float unit-scale flows (Y, X), the scale of
            ``masks_to_flows`` output (a Cellpose network's output divided by 5).
        cellprob: ``(Y, X)`` real cell-probability logits.
        params: post-processing parameters; defaults to ``FlowParams()``.

    Returns:
        ``(Y, X)`` labels, 0 = background, 1..N numbered in raster order of each
        mask's first pixel; uint16 when N < 65536, else uint32.

    Raises:
        InvalidImageError: on bad shapes or dtypes.
    """
    params = params or FlowParams()
    cellprob = np.asarray(cellprob)
    if cellprob.ndim != 2 or cellprob.dtype == bool or not np.issubdtype(cellprob.dtype, np.number):
        raise InvalidImageError(
            f"cellprob must be a 2-D real array, got shape {cellprob.shape} {cellprob.dtype}"
        )
    flows32 = _as_flows(flows, cellprob.shape)
    foreground = cellprob > params.cellprob_threshold
    if not foreground.any():
        return np.zeros(cellprob.shape, dtype=np.uint16)
    final = follow_flows(flows32, foreground, niter=params.niter)
    image = _cluster(final, foreground)
    del final, foreground
    return _clean_masks(image, flows32, params)


# ----------------------------------------------------------------------------- wrappers


def _as_label_image(labels: np.ndarray, *, compact: bool, copy: bool = False) -> np.ndarray:
    """Validate labels; return them as a C-contiguous int32 image (a new one if ``copy``).

    Label values above ``max(2**20, labels.size)`` are renumbered in order when
    ``compact``, and raise otherwise, so per-label tables stay small.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InvalidImageError(f"labels must be 2-D, got shape {labels.shape}")
    if labels.dtype != bool and not np.issubdtype(labels.dtype, np.integer):
        raise InvalidImageError(f"labels must hold integers, got dtype {labels.dtype}")
    if labels.size == 0:
        return np.zeros(labels.shape, dtype=np.int32)
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise InvalidImageError(f"labels must be >= 0, got minimum {low}")
    if high > max(2**20, labels.size):
        if not compact:
            raise InvalidImageError(f"label {high} is too large for a {labels.shape} image")
        values, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.reshape(labels.shape).astype(np.int32)
        return inverse if values[0] == 0 else inverse + 1
    if labels.dtype == np.int32 and not copy:
        return np.ascontiguousarray(labels)
    return labels.astype(np.int32, order="C")


def _as_flows(flows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Validate ``(2, Y, X)`` flows against ``shape``; return C-contiguous float32."""
    flows = np.asarray(flows)
    if flows.shape != (2, *shape):
        raise InvalidImageError(f"flows must have shape {(2, *shape)}, got {flows.shape}")
    if not np.issubdtype(flows.dtype, np.floating):
        raise InvalidImageError(f"flows must be floating point, got dtype {flows.dtype}")
    return np.ascontiguousarray(flows, dtype=np.float32)


def _label_table(image: np.ndarray) -> _LabelTable:
    """Bounding boxes, pixel counts and first pixels of every label of an int32 image."""
    n = int(image.max()) if image.size else 0
    boxes = np.zeros((n + 1, 4), dtype=np.int64)
    counts = np.zeros(n + 1, dtype=np.int64)
    first = np.full(n + 1, -1, dtype=np.int64)
    _table_kernel(image, boxes, counts, first)
    return _LabelTable(boxes, counts, first)


def _cluster(final: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Group final bins into masks; ``(Y, X)`` int32 labels 1..n_seeds, unordered.

    ``final`` (from ``follow_flows``) is overwritten with each pixel's label.
    """
    height, width = foreground.shape
    hist = np.zeros(height * width, dtype=np.int32)
    candidates = np.empty(final.size // (_SEED_MIN_COUNT + 1) + 1, dtype=np.int64)
    candidates = np.sort(candidates[: _histogram_kernel(final, hist, candidates)])
    seeds = candidates[_local_maxima_kernel(hist, candidates, height, width)]
    order = np.lexsort((seeds, hist[seeds]))[::-1]  # most pixels first, ties by position
    _claim_bins_kernel(hist, seeds[order], height, width)
    _bins_to_labels_kernel(hist, final)
    del hist
    image = np.zeros((height, width), dtype=np.int32)
    image[foreground] = final
    return image


def _clean_masks(image: np.ndarray, flows: np.ndarray, params: FlowParams) -> np.ndarray:
    """Drop giant masks, fill holes, drop small and bad-flow masks, then renumber."""
    table = _label_table(image)
    keep = (table.counts > 0) & (table.counts <= params.max_size_fraction * image.size)
    counts = table.counts + _fill_holes_parallel(image, table, keep)
    keep &= counts >= params.min_size
    if params.flow_threshold > 0 and keep.any():
        errors = _cell_flows_parallel(image, table, keep, flows, compare=True)
        keep &= errors <= params.flow_threshold  # a NaN error fails too
    return _renumber(image, table.first, keep)


def _renumber(image: np.ndarray, first: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Relabel kept labels 1..N by first pixel; uint16 if N < 65536 else uint32."""
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(first[kept], kind="stable")]
    dtype = np.uint16 if kept.size < 2**16 else np.uint32
    mapping = np.zeros(keep.size, dtype=dtype)
    mapping[kept] = np.arange(1, kept.size + 1, dtype=dtype)
    out = np.empty(image.shape, dtype=dtype)
    _relabel_kernel(image, mapping, out)
    return out


def _cell_flows_parallel(
    image: np.ndarray, table: _LabelTable, keep: np.ndarray, flows: np.ndarray, *, compare: bool
) -> np.ndarray:
    """``_cell_flows`` of every kept label on all threads; ``(n + 1,)`` float64 errors."""
    errors = np.zeros(keep.size)
    _parallel_for(_cells_kernel, keep.size, (image, table.boxes, keep, flows, compare, errors))
    return errors


def _fill_holes_parallel(image: np.ndarray, table: _LabelTable, keep: np.ndarray) -> np.ndarray:
    """Fill holes of every kept label in place on all threads; ``(n + 1,)`` int64 filled."""
    filled = np.zeros(keep.size, dtype=np.int64)
    _parallel_for(_fill_holes_kernel, keep.size, (image, table.boxes, keep, filled))
    return filled


def _parallel_for(kernel: Callable[..., None], n_items: int, args: tuple[object, ...]) -> None:
    """Call ``kernel(*args, start, stop)`` over chunks of ``range(n_items)`` on threads.

    The kernels release the GIL and write disjoint outputs, so chunks run in
    parallel and the result does not depend on the thread count. The pool has
    ``numba.get_num_threads()`` threads; many small chunks balance uneven work.
    """
    threads = numba.get_num_threads()
    if threads <= 1 or n_items < 2:
        kernel(*args, 0, n_items)
        return
    size = max(1, -(-n_items // (threads * _TASKS_PER_THREAD)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        tasks = [
            pool.submit(kernel, *args, start, min(start + size, n_items))
            for start in range(0, n_items, size)
        ]
        for task in tasks:
            task.result()


# ----------------------------------------------------------------------------- kernels: tables


@njit(nogil=True, cache=True)
def _table_kernel(
    image: np.ndarray, boxes: np.ndarray, counts: np.ndarray, first: np.ndarray
) -> None:
    """Fill per-label boxes, counts and first raster index (see ``_LabelTable``)."""
    height, width = image.shape
    for y in range(height):
        for x in range(width):
            label = image[y, x]
            if label == 0:
                continue
            if counts[label] == 0:
                boxes[label, 0], boxes[label, 2], boxes[label, 3] = y, x, x + 1
                first[label] = y * width + x
            boxes[label, 1] = y + 1
            boxes[label, 2] = min(boxes[label, 2], x)
            boxes[label, 3] = max(boxes[label, 3], x + 1)
            counts[label] += 1


@njit(nogil=True, cache=True)
def _relabel_kernel(image: np.ndarray, mapping: np.ndarray, out: np.ndarray) -> None:
    """``out[y, x] = mapping[image[y, x]]`` for int32 ``image``."""
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            out[y, x] = mapping[image[y, x]]


# ----------------------------------------------------------------------------- kernels: diffusion


@njit(nogil=True, cache=True)
def _cell_weights(image: np.ndarray, label: int, box: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Padded ``(h + 2, w + 2)`` float64 weights, 1/9 on the cell, and its centre pixel.

    The centre is the cell pixel nearest the centroid (first in raster order on a
    tie), in padded box coordinates; the arithmetic is Cellpose's, so ties match.
    """
    y0, height, x0, width = box[0], box[1] - box[0], box[2], box[3] - box[2]
    weight = np.zeros((height + 2, width + 2))
    sum_y, sum_x, n = 0.0, 0.0, 0
    for i in range(1, height + 1):
        for j in range(1, width + 1):
            if image[y0 + i - 1, x0 + j - 1] == label:
                weight[i, j] = 1.0 / 9.0
                sum_y, sum_x, n = sum_y + i, sum_x + j, n + 1
    mean_y, mean_x = sum_y / n, sum_x / n
    best, centre_y, centre_x = np.inf, 0, 0
    for i in range(1, height + 1):
        for j in range(1, width + 1):
            if weight[i, j] > 0:
                dist = (j - mean_x) * (j - mean_x) + (i - mean_y) * (i - mean_y)
                if dist < best:
                    best, centre_y, centre_x = dist, i, j
    return weight, centre_y, centre_x


@njit(nogil=True, cache=True)
def _diffuse(weight: np.ndarray, centre_y: int, centre_x: int, niter: int) -> np.ndarray:
    """Add 1 at the centre, then apply the weighted 3×3 sum, ``niter`` times.

    Each step updates only the rows the heat can have reached (t + 1 rows from the
    centre at step t); the rest is still 0. Returns the ``weight``-shaped heat.
    """
    rows, cols = weight.shape
    flat_weight = weight.ravel()
    heat = np.zeros(rows * cols)
    spare = np.zeros(rows * cols)
    for t in range(niter):
        heat[centre_y * cols + centre_x] += 1.0
        i0, i1 = max(1, centre_y - t - 1), min(rows - 1, centre_y + t + 2)
        _mean_filter(heat, spare, flat_weight, i0 * cols + 1, i1 * cols - 1, cols)
        heat, spare = spare, heat
    return heat.reshape((rows, cols))


@njit(nogil=True, cache=True)
def _mean_filter(
    heat: np.ndarray, out: np.ndarray, weight: np.ndarray, start: int, stop: int, cols: int
) -> None:
    """``out[p] = weight[p] * (3×3 sum of heat around p)`` for flat ``p`` in [start, stop).

    Views indexed from 0 keep numba's negative-index handling out of the loop, so it
    compiles to contiguous SIMD loads. The summation order is Cellpose's.
    """
    top, mid, bottom = heat[start - cols - 1 :], heat[start - 1 :], heat[start + cols - 1 :]
    out_view, weight_view = out[start:], weight[start:]
    for k in range(stop - start):
        out_view[k] = weight_view[k] * (
            mid[k + 1]
            + top[k + 1]
            + bottom[k + 1]
            + mid[k]
            + mid[k + 2]
            + top[k]
            + top[k + 2]
            + bottom[k]
            + bottom[k + 2]
        )


@njit(nogil=True, cache=True)
def _cell_flows(
    image: np.ndarray, label: int, box: np.ndarray, flows: np.ndarray, compare: bool
) -> float:
    """Unit heat gradient of one cell: written into ``flows``, or compared with them.

    With ``compare`` the flows are only read and the mean over the cell of
    ``|own - flows|²`` is returned; otherwise they are written and 0 is returned.
    """
    weight, centre_y, centre_x = _cell_weights(image, label, box)
    niter = 2 * (weight.shape[0] + weight.shape[1])
    heat = _diffuse(weight, centre_y, centre_x, niter)
    y0, x0 = box[0] - 1, box[2] - 1
    total, n = 0.0, 0
    for i in range(1, heat.shape[0] - 1):
        for j in range(1, heat.shape[1] - 1):
            if weight[i, j] == 0:
                continue
            dy = heat[i + 1, j] - heat[i - 1, j]
            dx = heat[i, j + 1] - heat[i, j - 1]
            norm = 1e-60 + math.sqrt(dy * dy + dx * dx)
            if compare:
                ey = dy / norm - flows[0, y0 + i, x0 + j]
                ex = dx / norm - flows[1, y0 + i, x0 + j]
                total, n = total + ey * ey + ex * ex, n + 1
            else:
                flows[0, y0 + i, x0 + j] = dy / norm
                flows[1, y0 + i, x0 + j] = dx / norm
    return total / n if n else 0.0


@njit(nogil=True, cache=True)
def _cells_kernel(
    image: np.ndarray,
    boxes: np.ndarray,
    keep: np.ndarray,
    flows: np.ndarray,
    compare: bool,
    errors: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """``_cell_flows`` for the kept labels in [start, stop); errors go to ``errors``.

    One kernel serves both uses (write flows, or compare with them) to save compile
    time; label 0 is skipped.
    """
    for label in range(max(start, 1), stop):
        if keep[label]:
            errors[label] = _cell_flows(image, label, boxes[label], flows, compare)


# ----------------------------------------------------------------------------- kernels: holes


@njit(nogil=True, cache=True)
def _fill_cell_holes(image: np.ndarray, label: int, box: np.ndarray) -> int:
    """Fill background pixels enclosed by ``label`` alone; returns how many were filled.

    Box-local states: 0 background not reached yet, 1 this cell, 2 another cell,
    3 background reached (4-connected) from the box edge or from another cell.
    """
    y0, height, x0, width = box[0], box[1] - box[0], box[2], box[3] - box[2]
    state = np.full((height + 2, width + 2), 3, dtype=np.uint8)  # a ring of "reached"
    for i in range(height):
        for j in range(width):
            value = image[y0 + i, x0 + j]
            state[i + 1, j + 1] = 0 if value == 0 else (1 if value == label else 2)
    stack = np.empty(height * width, dtype=np.int64)
    top = 0
    for i in range(1, height + 1):
        for j in range(1, width + 1):
            if state[i, j] == 0 and _next_to(state, i, j, 3, 2):
                state[i, j] = 3
                stack[top], top = i * (width + 2) + j, top + 1
    while top > 0:
        top -= 1
        i, j = divmod(stack[top], width + 2)
        for ni, nj in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
            if state[ni, nj] == 0:
                state[ni, nj] = 3
                stack[top], top = ni * (width + 2) + nj, top + 1
    filled = 0
    for i in range(height):
        for j in range(width):
            if state[i + 1, j + 1] == 0:
                image[y0 + i, x0 + j] = label
                filled += 1
    return filled


@njit(nogil=True, cache=True)
def _next_to(state: np.ndarray, i: int, j: int, first: int, second: int) -> bool:
    """Whether a 4-neighbour of (i, j) has state ``first`` or ``second``."""
    for value in (state[i - 1, j], state[i + 1, j], state[i, j - 1], state[i, j + 1]):
        if value == first or value == second:
            return True
    return False


@njit(nogil=True, cache=True)
def _fill_holes_kernel(
    image: np.ndarray,
    boxes: np.ndarray,
    keep: np.ndarray,
    filled: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """Fill the holes of the kept labels in [start, stop) in place, counting into ``filled``.

    Holes of different labels are disjoint, and a label sees another label's hole
    as "reached" whether or not it is filled yet, so concurrent chunks give the
    same result in any order.
    """
    for label in range(max(start, 1), stop):
        if keep[label]:
            filled[label] = _fill_cell_holes(image, label, boxes[label])


# ----------------------------------------------------------------------------- kernels: dynamics


@njit(nogil=True, cache=True)
def _corner_codes(foreground: np.ndarray) -> np.ndarray:
    """uint8 bits 1, 2, 4, 8: foreground at (y, x), (y, x+1), (y+1, x), (y+1, x+1).

    Past the last row or column the last one repeats, as the clamped interpolation
    reads it.
    """
    height, width = foreground.shape
    codes = np.empty((height, width), dtype=np.uint8)
    for y in range(height):
        y1 = min(y + 1, height - 1)
        for x in range(width):
            x1 = min(x + 1, width - 1)
            codes[y, x] = (
                foreground[y, x]
                | (foreground[y, x1] << 1)
                | (foreground[y1, x] << 2)
                | (foreground[y1, x1] << 3)
            )
    return codes


@njit(nogil=True, cache=True)
def _interp_step(
    flow_y: np.ndarray, flow_x: np.ndarray, corners: np.ndarray, py: float, px: float
) -> tuple[float, float]:
    """One clamped float32 Euler step from (py, px) along masked bilinear flows.

    Background corners (per ``_corner_codes``) contribute no flow; a NaN flow does
    not move the pixel. Unsigned indices keep numba's negative-index handling out of
    the loads.
    """
    last_y, last_x = np.uint64(corners.shape[0] - 1), np.uint64(corners.shape[1] - 1)
    yf, xf = np.uint64(py), np.uint64(px)
    fy, fx = py - np.float32(yf), px - np.float32(xf)
    yf1, xf1 = min(yf + np.uint64(1), last_y), min(xf + np.uint64(1), last_x)
    gy, gx = np.float32(1.0) - fy, np.float32(1.0) - fx
    w00, w01, w10, w11 = gy * gx, gy * fx, fy * gx, fy * fx
    code = corners[yf, xf]
    if code != 15:
        w00 = w00 if code & 1 else np.float32(0.0)
        w01 = w01 if code & 2 else np.float32(0.0)
        w10 = w10 if code & 4 else np.float32(0.0)
        w11 = w11 if code & 8 else np.float32(0.0)
    dy = (
        flow_y[yf, xf] * w00
        + flow_y[yf, xf1] * w01
        + flow_y[yf1, xf] * w10
        + flow_y[yf1, xf1] * w11
    )
    dx = (
        flow_x[yf, xf] * w00
        + flow_x[yf, xf1] * w01
        + flow_x[yf1, xf] * w10
        + flow_x[yf1, xf1] * w11
    )
    return _clamp(py + dy, py, np.float32(last_y)), _clamp(px + dx, px, np.float32(last_x))


@njit(nogil=True, cache=True)
def _clamp(value: float, fallback: float, high: float) -> float:
    """Clamp a float32 to [0, high]; NaN (from a NaN flow) gives ``fallback``."""
    if value != value:
        return fallback
    if value < 0:
        return np.float32(0.0)
    if value > high:
        return high
    return value


@njit(nogil=True, cache=True)
def _track_row(
    flow_y: np.ndarray,
    flow_x: np.ndarray,
    corners: np.ndarray,
    y: int,
    niter: int,
    final: np.ndarray,
) -> None:
    """Follow the foreground pixels of row ``y``, ``_LANES`` at a time.

    A pixel stops early, with the same result, once its position repeats after one
    step (a fixed point) or two (a 2-cycle, whose phase at ``niter`` is known).
    """
    xs = np.empty(corners.shape[1], dtype=np.int64)
    count = 0
    for x in range(corners.shape[1]):
        if corners[y, x] & 1:
            xs[count], count = x, count + 1
    pixel = np.empty(_LANES, dtype=np.int64)  # index into xs; -1 = idle lane
    step = np.zeros(_LANES, dtype=np.int64)
    pos = np.empty((4, _LANES), dtype=np.float32)  # y, x, previous y, previous x
    loaded = 0
    for k in range(_LANES):
        pixel[k] = -1
        if loaded < count:
            loaded = _load_lane(pos, pixel, step, k, loaded, y, xs)
    active = loaded
    while active > 0:
        for k in range(_LANES):
            if pixel[k] < 0:
                continue
            ny, nx = _interp_step(flow_y, flow_x, corners, pos[0, k], pos[1, k])
            step[k] += 1
            if (ny == pos[0, k] and nx == pos[1, k]) or step[k] == niter:
                end_y, end_x = ny, nx
            elif ny == pos[2, k] and nx == pos[3, k]:
                odd = (niter - step[k]) % 2 == 1
                end_y, end_x = (pos[0, k], pos[1, k]) if odd else (ny, nx)
            else:
                pos[2, k], pos[3, k], pos[0, k], pos[1, k] = pos[0, k], pos[1, k], ny, nx
                continue
            final[pixel[k]] = int(end_y) * corners.shape[1] + int(end_x)
            pixel[k], active = -1, active - 1
            if loaded < count:
                loaded, active = _load_lane(pos, pixel, step, k, loaded, y, xs), active + 1


@njit(nogil=True, cache=True)
def _load_lane(
    pos: np.ndarray,
    pixel: np.ndarray,
    step: np.ndarray,
    k: int,
    loaded: int,
    y: int,
    xs: np.ndarray,
) -> int:
    """Start the row's pixel ``loaded`` in lane ``k``; returns the next one to load."""
    pixel[k], step[k] = loaded, 0
    pos[0, k], pos[1, k] = np.float32(y), np.float32(xs[loaded])
    pos[2, k], pos[3, k] = np.float32(-1.0), np.float32(-1.0)
    return loaded + 1


@njit(nogil=True, cache=True)
def _track_kernel(
    flow_y: np.ndarray,
    flow_x: np.ndarray,
    corners: np.ndarray,
    row_start: np.ndarray,
    niter: int,
    final: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """Final raster bins of the foreground pixels of rows [start, stop)."""
    for y in range(start, stop):
        _track_row(flow_y, flow_x, corners, y, niter, final[row_start[y] : row_start[y + 1]])


# ----------------------------------------------------------------------------- kernels: clustering


@njit(nogil=True, cache=True)
def _histogram_kernel(final: np.ndarray, hist: np.ndarray, candidates: np.ndarray) -> int:
    """Count pixels per raster bin into ``hist``; list bins exceeding 10 in ``candidates``.

    Returns how many candidates were written.
    """
    n = 0
    for k in range(final.size):
        b = final[k]
        hist[b] += 1
        if hist[b] == _SEED_MIN_COUNT + 1:
            candidates[n], n = b, n + 1
    return n


@njit(nogil=True, cache=True)
def _local_maxima_kernel(
    hist: np.ndarray, candidates: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Which candidate bins are the maximum (ties allowed) of their 5×5 neighbourhood."""
    keep = np.zeros(candidates.size, dtype=np.bool_)
    for k in range(candidates.size):
        y, x = divmod(candidates[k], width)
        value, is_max = hist[candidates[k]], True
        for ny in range(max(0, y - 2), min(height, y + 3)):
            for nx in range(max(0, x - 2), min(width, x + 3)):
                is_max = is_max and hist[ny * width + nx] <= value
        keep[k] = is_max
    return keep


@njit(nogil=True, cache=True)
def _claim_bins_kernel(hist: np.ndarray, seeds: np.ndarray, height: int, width: int) -> None:
    """Grow the seeds in order; each claims free bins it reaches, as ``-(rank + 1)``.

    A seed reaches the bins within 5 king moves through bins holding more than 2
    pixels. Claimed bins (negative) held more than 2 pixels, so later seeds still
    pass through them. Seeds come with the most pixels first, so this equals
    Cellpose's "grow every seed, the larger overwrites".
    """
    side = 2 * _GROW_STEPS + 1
    queue = np.empty(side * side, dtype=np.int64)
    seen = np.zeros((side, side), dtype=np.bool_)
    for rank in range(seeds.size):
        seen.fill(False)
        sy, sx = divmod(seeds[rank], width)
        seen[_GROW_STEPS, _GROW_STEPS], queue[0] = True, seeds[rank]
        done, size = 0, 1
        for _ in range(_GROW_STEPS):
            level_end = size
            for k in range(done, level_end):
                y, x = divmod(queue[k], width)
                for ny in range(max(0, y - 1), min(height, y + 2)):
                    for nx in range(max(0, x - 1), min(width, x + 2)):
                        wy, wx, b = ny - sy + _GROW_STEPS, nx - sx + _GROW_STEPS, ny * width + nx
                        if not seen[wy, wx] and (hist[b] > _GROW_MIN_COUNT or hist[b] < 0):
                            seen[wy, wx], queue[size], size = True, b, size + 1
            done = level_end
        for k in range(size):
            if hist[queue[k]] > 0:
                hist[queue[k]] = -(rank + 1)


@njit(nogil=True, cache=True)
def _bins_to_labels_kernel(hist: np.ndarray, final: np.ndarray) -> None:
    """Replace each final bin by the label of the seed that claimed it (or 0), in place."""
    for k in range(final.size):
        value = hist[final[k]]
        final[k] = -value if value < 0 else 0
