"""COCO run-length encoding of label images, both ways (one codec for the whole project).

COCO RLE is computed from the runs of the column-major flattened label image, so all
cells are encoded in one pass.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import (
    InvalidLabelsError,
)
from zoo.io.labels import check_labels, run_lengths

# --------------------------------------------------------------------------- COCO


def labels_to_coco_rle(labels: np.ndarray) -> list[dict[str, Any]]:
    """Encode every cell as a COCO annotation with a compressed RLE mask.

    The RLE matches ``pycocotools.mask.encode`` byte for byte: run lengths of the mask
    flattened in column-major order, starting with a (possibly empty) background run,
    compressed into pycocotools' 6-bit ASCII string.

    Args:
        labels: ``(Y, X)`` integer labels, 0 = background.

    Returns:
        One dict per cell in ascending id order, with keys ``id`` (the label id),
        ``category_id`` (1), ``iscrowd`` (0), ``area`` (pixel count, int), ``bbox``
        (``[x, y, width, height]`` floats) and ``segmentation``
        (``{"size": [Y, X], "counts": str}``).
    """
    labels = check_labels(labels, ndim=2)
    height, width = labels.shape
    starts, lengths, values = run_lengths(labels.ravel(order="F"))
    cell = values > 0
    order = np.argsort(values[cell], kind="stable")  # group runs by id, keep position order
    ids, starts, lengths = values[cell][order], starts[cell][order], lengths[cell][order]
    if ids.size == 0:
        return []
    first = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    counts, count_first = _rle_counts(starts, lengths, first, height * width)
    strings = _compress_counts(counts, count_first)
    boxes = _run_boxes(starts, lengths, first, height)
    areas = np.add.reduceat(lengths, first)
    return [
        {
            "id": int(ids[f]),
            "category_id": 1,
            "iscrowd": 0,
            "area": int(area),
            "bbox": [float(v) for v in box],
            "segmentation": {"size": [height, width], "counts": text},
        }
        for f, area, box, text in zip(first, areas, boxes, strings, strict=True)
    ]


def _rle_counts(
    starts: np.ndarray, lengths: np.ndarray, first: np.ndarray, total: int
) -> tuple[np.ndarray, np.ndarray]:
    """Interleave background gaps and cell runs per cell; return counts and group starts."""
    n_runs = np.diff(np.append(first, starts.size))
    ends = starts + lengths
    previous_end = np.concatenate(([0], ends[:-1]))
    previous_end[first] = 0
    tail = total - ends[first + n_runs - 1]
    group_size = 2 * n_runs + (tail > 0)
    count_first = np.concatenate(([0], np.cumsum(group_size)[:-1]))
    group = np.repeat(np.arange(first.size), n_runs)
    position = count_first[group] + 2 * (np.arange(starts.size) - first[group])
    counts = np.empty(int(group_size.sum()), dtype=np.int64)
    counts[position] = starts - previous_end
    counts[position + 1] = lengths
    counts[(count_first + 2 * n_runs)[tail > 0]] = tail[tail > 0]
    return counts, count_first


def _compress_counts(counts: np.ndarray, count_first: np.ndarray) -> list[str]:
    """pycocotools' ``rleToString``, vectorised: delta to the count two back, 5 bits a char."""
    group = np.repeat(np.arange(count_first.size), np.diff(np.append(count_first, counts.size)))
    within = np.arange(counts.size) - count_first[group]
    value = counts.copy()
    later = within > 2
    value[later] -= counts[np.flatnonzero(later) - 2]
    chars = np.zeros((counts.size, 14), dtype=np.uint8)  # 14 * 5 bits covers int64
    n_chars = np.zeros(counts.size, dtype=np.int64)
    active = np.ones(counts.size, dtype=bool)
    for j in range(chars.shape[1]):
        bits = value & 0x1F
        value >>= 5  # arithmetic shift, as in C for negative deltas
        more = np.where(bits & 0x10, value != -1, value != 0)
        chars[:, j] = 48 + (bits | (more.astype(np.int64) << 5))
        n_chars += active
        active &= more
        if not active.any():
            break
    flat = chars[np.arange(chars.shape[1]) < n_chars[:, None]].tobytes()
    bounds = np.concatenate(([0], np.cumsum(n_chars)))[np.append(count_first, counts.size)]
    return [flat[a:b].decode("ascii") for a, b in itertools.pairwise(bounds)]


def _run_boxes(
    starts: np.ndarray, lengths: np.ndarray, first: np.ndarray, height: int
) -> np.ndarray:
    """``(N, 4)`` ``[x, y, width, height]`` per cell from its column-major runs."""
    last = starts + lengths - 1
    x0, x1 = starts // height, last // height
    wraps = x1 > x0  # a run crossing a column covers row height-1 and row 0
    y0 = np.where(wraps, 0, starts % height)
    y1 = np.where(wraps, height - 1, last % height)
    xmin, ymin = np.minimum.reduceat(x0, first), np.minimum.reduceat(y0, first)
    xmax, ymax = np.maximum.reduceat(x1, first), np.maximum.reduceat(y1, first)
    return np.stack([xmin, ymin, xmax - xmin + 1, ymax - ymin + 1], axis=1)


def write_coco(
    path: str | os.PathLike[str], labels: np.ndarray, *, image_name: str, image_id: int = 1
) -> Path:
    """Write a one-image COCO instance-segmentation JSON file.

    Args:
        path: ``.json`` file to write.
        labels: ``(Y, X)`` integer labels, 0 = background.
        image_name: ``file_name`` of the image entry.
        image_id: id of the image entry; every annotation refers to it.

    Returns:
        The path written. Annotations are those of :func:`labels_to_coco_rle`, with
        ``image_id`` added; the single category is ``{"id": 1, "name": "cell"}``.
    """
    path = Path(path)
    annotations = [{**ann, "image_id": image_id} for ann in labels_to_coco_rle(labels)]
    height, width = labels.shape
    document = {
        "images": [{"id": image_id, "file_name": image_name, "height": height, "width": width}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cell"}],
    }
    path.write_text(json.dumps(document))
    return path


# --------------------------------------------------------------------------- COCO decoding


def coco_rle_to_labels(annotations: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """Paint COCO RLE annotations back into one label image (the inverse of
    :func:`labels_to_coco_rle`).

    Each annotation's ``segmentation["counts"]`` is pycocotools' compressed RLE string (or
    bytes), or an uncompressed list of run lengths; runs alternate background and mask,
    start with background and cover the image in column-major order.

    Args:
        annotations: dicts with ``id`` (the label, an integer >= 1) and ``segmentation``
            ``{"size": [Y, X], "counts": str | bytes | list[int]}``.
        shape: ``(Y, X)`` of the label image.

    Returns:
        ``(Y, X)`` labels, uint16 when every id fits, else uint32; 0 = background. Where
        masks overlap, the later annotation wins.

    Raises:
        InvalidLabelsError: an id below 1 or above 2**32 - 1, a size other than ``shape``,
            a malformed counts string, or runs that do not add up to ``Y * X`` pixels.
    """
    height, width = (int(v) for v in shape)
    total = height * width
    runs = [_annotation_runs(annotation, [height, width]) for annotation in annotations]
    top = max((label for label, _, _ in runs), default=0)
    flat = np.zeros(total, dtype=np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32)
    for label, starts, lengths in runs:
        before = np.cumsum(lengths) - lengths  # pixels in this mask's earlier runs
        flat[np.arange(int(lengths.sum())) + np.repeat(starts - before, lengths)] = label
    return flat.reshape((width, height)).T.copy()


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode one COCO RLE (compressed string/bytes or an uncompressed list of counts).

    Args:
        rle: ``{"size": [Y, X], "counts": str | bytes | list[int]}``; runs alternate
            background and mask, start with background, column-major.

    Returns:
        ``(Y, X)`` bool mask.

    Raises:
        InvalidLabelsError: malformed counts, or runs that do not cover ``Y * X`` pixels.
    """
    height, width = (int(v) for v in rle["size"])
    runs = _rle_counts_of(rle.get("counts"), "RLE")
    if int(runs.sum()) != height * width:
        raise InvalidLabelsError(
            f"RLE runs cover {int(runs.sum())} pixels, size {height}x{width} has {height * width}"
        )
    values = np.arange(runs.size) % 2 == 1
    return np.ascontiguousarray(np.repeat(values, runs).reshape(width, height).T)


def _annotation_runs(
    annotation: dict[str, Any], shape: list[int]
) -> tuple[int, np.ndarray, np.ndarray]:
    """``(id, starts, lengths)`` of one annotation's mask runs in the column-major image."""
    label = annotation.get("id")
    where = f"annotation {label!r}"
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not (
        1 <= label < 2**32
    ):
        raise InvalidLabelsError(f"{where}: id must be an integer in [1, 2**32), got {label!r}")
    segmentation = annotation.get("segmentation") or {}
    size = [int(v) for v in segmentation.get("size", ())]
    if size != shape:
        raise InvalidLabelsError(f"{where}: size {size} differs from shape {shape}")
    counts = _rle_counts_of(segmentation.get("counts"), where)
    if int(counts.sum()) != shape[0] * shape[1]:
        raise InvalidLabelsError(
            f"{where}: runs cover {int(counts.sum())} pixels, the image has {shape[0] * shape[1]}"
        )
    ends = np.cumsum(counts)
    n_runs = counts.size // 2
    return int(label), ends[0::2][:n_runs], counts[1::2]


def _rle_counts_of(counts: Any, where: str) -> np.ndarray:
    """Run lengths (int64) of a compressed RLE string/bytes or an uncompressed list."""
    if isinstance(counts, (list, tuple)):
        runs = np.asarray(counts, dtype=np.int64)
    elif isinstance(counts, (str, bytes)):
        runs = _decompress_counts(counts.encode("ascii") if isinstance(counts, str) else counts,
                                  where)
    else:
        raise InvalidLabelsError(f"{where}: counts must be a string or a list, got {counts!r}")
    if runs.ndim != 1 or (runs < 0).any():
        raise InvalidLabelsError(f"{where}: run lengths must be >= 0")
    return runs


def _decompress_counts(text: bytes, where: str) -> np.ndarray:
    """pycocotools' ``rleFrString``, vectorised: 5 data bits per char (0x20 = more chars
    follow, 0x10 on the last char = negative), then each count from the third on is a delta
    to the count two before it."""
    chars = np.frombuffer(text, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    if (chars < 0).any() or (chars > 63).any():
        raise InvalidLabelsError(f"{where}: counts string holds characters outside '0'..'o'")
    last = (chars & 0x20) == 0  # the final char of each value
    if not last[-1]:
        raise InvalidLabelsError(f"{where}: counts string is truncated")
    first = np.concatenate(([0], np.flatnonzero(last[:-1]) + 1))
    position = np.arange(chars.size) - np.repeat(first, np.diff(np.append(first, chars.size)))
    if position.max() >= 13:
        raise InvalidLabelsError(f"{where}: a run length in the counts string overflows")
    values = np.add.reduceat((chars & 0x1F) << (5 * position), first)
    n_chars = np.diff(np.append(first, chars.size))
    negative = (chars[last] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * n_chars[negative])
    counts = values.copy()
    counts[1::2] = np.cumsum(values[1::2])  # count 3 adds count 1, count 5 adds count 3, ...
    counts[2::2] = np.cumsum(values[2::2])  # count 4 adds count 2, ...; count 0 stands alone
    return counts
