"""Label images (0 = background, 1..N = cells): checks, relabelling, TIFF/PNG label files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

from zoo.errors import (
    InvalidImageError,
    InvalidLabelsError,
    UnsupportedFormatError,
)

# --------------------------------------------------------------------------- labels


def check_labels(
    labels: np.ndarray, *, name: str = "labels", ndim: int | None = None
) -> np.ndarray:
    """Validate a label image (0 = background, 1..N = cells) and return it as an array.

    Args:
        labels: integer array of any shape (or exactly ``ndim`` dimensions).
        name: what to call it in error messages.
        ndim: required number of dimensions, or None for any.

    Returns:
        ``labels`` as an ndarray (no copy).

    Raises:
        InvalidLabelsError: non-integer dtype (bool and float included), no pixels, the
            wrong number of dimensions, or negative ids.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise InvalidLabelsError(f"{name} must have an integer dtype, got {labels.dtype}")
    if labels.size == 0 or (ndim is not None and labels.ndim != ndim):
        want = f"{ndim}-D" if ndim is not None else "non-empty"
        raise InvalidLabelsError(f"{name} must be a {want} array, got shape {labels.shape}")
    if labels.dtype.kind == "i" and (low := labels.min()) < 0:
        raise InvalidLabelsError(f"{name} must be >= 0 (0 = background), found {low}")
    return labels


def run_lengths(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a 1-D array into runs of equal values.

    Args:
        values: ``(L,)`` array, ``L >= 1``.

    Returns:
        ``(starts, lengths, run_values)``: int64 start index and length of each run, and
        the value it repeats, all shaped ``(R,)``.
    """
    starts = np.concatenate(([0], np.flatnonzero(values[1:] != values[:-1]) + 1))
    lengths = np.diff(np.append(starts, values.size))
    return starts, lengths, values[starts]


def relabel_sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber cells ``1..N`` in ascending order of their ids.

    Args:
        labels: integer label image, any shape, ids >= 0.

    Returns:
        ``(relabelled, ids)``: int64 array shaped like ``labels`` with 0 kept as
        background, and ``(N,)`` original ids so that ``relabelled == k`` is cell ``ids[k-1]``.
    """
    flat = labels.ravel()
    top = int(flat.max())
    if top <= 4 * flat.size + 1024:  # small ids: a lookup table beats sorting
        present = np.zeros(top + 1, dtype=bool)
        present[flat] = True
        present[0] = False
        lookup = np.cumsum(present) * present
        return lookup[labels], np.flatnonzero(present)
    ids, inverse = np.unique(flat, return_inverse=True)
    if ids[0] == 0:
        return inverse.reshape(labels.shape).astype(np.int64), ids[1:]
    return inverse.reshape(labels.shape).astype(np.int64) + 1, ids


def label_boxes(labels: np.ndarray) -> list[tuple[int, tuple[slice, ...]]]:
    """``(id, bounding-box slices)`` of every cell, in ascending id order."""
    compact, ids = relabel_sequential(labels)
    boxes = ndimage.find_objects(compact)
    return [(int(ids[k]), box) for k, box in enumerate(boxes) if box is not None]


# --------------------------------------------------------------------------- label files


def write_labels(path: str | os.PathLike[str], labels: np.ndarray) -> Path:
    """Write a label image as a zlib-compressed TIFF or a PNG (chosen by suffix).

    uint8, uint16 and uint32 labels keep their dtype; other integer dtypes are stored as
    uint16 when the largest id fits, else uint32. ``read_image`` reads the file back as
    the same ``(Y, X)`` array.

    Args:
        path: ``.tif``/``.tiff`` or ``.png`` file to write.
        labels: ``(Y, X)`` integer labels, 0 = background.

    Returns:
        The path written.

    Raises:
        InvalidLabelsError: ``labels`` is not a valid 2-D label image or has ids >= 2**32.
        UnsupportedFormatError: another suffix, or PNG with ids above 65535 (use TIFF).
    """
    path = Path(path)
    labels = check_labels(labels, ndim=2)
    stored = _label_storage(labels)
    suffix = path.suffix.lower()
    if suffix in {".tif", ".tiff"}:
        tifffile.imwrite(
            path, stored, compression="zlib", photometric="minisblack", metadata={"axes": "YX"}
        )
    elif suffix == ".png":
        if stored.dtype == np.uint32:
            raise UnsupportedFormatError(
                f"{path}: PNG holds ids up to 65535, labels reach {int(labels.max())}; "
                "write a .tif instead"
            )
        Image.fromarray(stored).save(path, format="PNG")
    else:
        raise UnsupportedFormatError(
            f"{path}: labels are written as .tif, .tiff or .png, not {suffix or 'no suffix'!r}"
        )
    return path


def _label_storage(labels: np.ndarray) -> np.ndarray:
    if labels.dtype in (np.uint8, np.uint16, np.uint32):
        return labels
    top = int(labels.max())
    if top >= 2**32:
        raise InvalidLabelsError(f"label ids must be < 2**32 to be written, found {top}")
    return labels.astype(np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32)

def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write an 8-bit grey/RGB/RGBA or 16-bit grey image as PNG.

    Args:
        path: file to write (``.png``).
        image: ``(Y, X)`` uint8 or uint16, or ``(Y, X, 3|4)`` uint8.

    Returns:
        The path written.

    Raises:
        UnsupportedFormatError: ``path`` does not end in ``.png``.
        InvalidImageError: another shape or dtype.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UnsupportedFormatError(f"{path}: write_png writes .png files")
    grey = image.ndim == 2 and image.dtype in (np.uint8, np.uint16)
    colour = image.ndim == 3 and image.shape[-1] in (3, 4) and image.dtype == np.uint8
    if not (grey or colour):
        raise InvalidImageError(
            f"PNG needs (Y, X) uint8/uint16 or (Y, X, 3|4) uint8, got {image.shape} {image.dtype}"
        )
    Image.fromarray(np.ascontiguousarray(image)).save(path, format="PNG")
    return path
