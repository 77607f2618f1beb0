"""Read images (TIFF, PNG, JPEG) and write segmentations (label images, COCO, ROIs, GeoJSON).

Images come back **channels-last**, the layout cellpose and scikit-image use:
``(Y, X)`` for one channel and ``(Y, X, C)`` for several, in the dtype stored in the
file (1-bit images become uint8 0/255). We segment 2-D images: singleton T/Z axes are
squeezed, and a file holding several Z planes or time points raises
:class:`~zoo.errors.InvalidImageError` naming its shape instead of picking a plane.

Labels follow the cellzoo convention: ``0`` is background, ``1..N`` are cells.

How the vector outputs work: :func:`outline_polygons` traces each cell's outer boundary
along pixel edges (vertices sit on pixel corners, so a polygon encloses exactly the
cell's pixels; holes are filled and only the largest 4-connected part is kept). ImageJ
ROIs and GeoJSON both use that one tracer. COCO RLE is computed from the runs of the
column-major flattened label image, so all cells are encoded in one pass.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import roifile
import tifffile
from PIL import Image
from scipy import ndimage

from zoo.errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidLabelsError,
    UnsupportedFormatError,
)

logger = logging.getLogger(__name__)

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
)
_UNSUPPORTED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"PK\x03\x04", "ZIP"),
    (b"%PDF", "PDF"),
    (b"\x93NUMPY", "NumPy .npy"),
    (b"\x89HDF", "HDF5"),
    (b"RIFF", "RIFF (WebP?)"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)
# Decoders raise a zoo of exception types on corrupt input; each becomes InvalidImageError.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    IndexError,
    KeyError,
    struct.error,
    zlib.error,
)
_CHANNEL_AXES = "CS"  # tifffile: C = channel, S = sample (RGB)
_UNLABELLED_AXES = "QI"  # tifffile: unknown axis, sequence of pages
_MAX_UNLABELLED_CHANNELS = 8


# --------------------------------------------------------------------------- reading


def detect_format(head: bytes, *, name: str = "<bytes>") -> str:
    """Name the image format from the file's first bytes (magic number), not its suffix.

    Args:
        head: at least the first 12 bytes of the file.
        name: file name for error messages.

    Returns:
        ``"tiff"``, ``"png"`` or ``"jpeg"``.

    Raises:
        InvalidImageError: ``head`` is empty.
        UnsupportedFormatError: the bytes belong to any other format.
    """
    if not head:
        raise InvalidImageError(f"{name}: file is empty (0 bytes)")
    for signature, fmt in _SIGNATURES:
        if head.startswith(signature):
            return fmt
    known = next((kind for sig, kind in _UNSUPPORTED_SIGNATURES if head.startswith(sig)), None)
    what = known or f"unrecognised, first bytes {head[:8].hex(' ')}"
    raise UnsupportedFormatError(
        f"{name}: unsupported image format ({what}); cellzoo reads TIFF, PNG and JPEG"
    )


def read_image(src: ImageSource, *, max_pixels: int | None = None) -> np.ndarray:
    """Read a 2-D image from a path or from raw bytes; the format comes from magic bytes.

    TIFF (including OME-TIFF and ImageJ hyperstacks) is read with tifffile, using the
    axes its metadata declares. Axes of length 1 are dropped. One channel-like axis may
    remain (``C`` or RGB samples ``S``; an unlabelled axis of at most 8 planes, such as a
    plain ``(3, Y, X)`` page stack, is also read as channels). PNG and JPEG are read with
    Pillow: grey → ``(Y, X)``, grey+alpha → ``(Y, X, 2)``, RGB → ``(Y, X, 3)``, RGBA →
    ``(Y, X, 4)``, 16-bit grey PNG → uint16; palette and CMYK images become RGB(A).

    Args:
        src: a file path, or the file's bytes (as the HTTP service receives them).
        max_pixels: refuse images with more than this many pixels (Y × X), checked
            from the header before any pixel data is decoded; None = no limit.

    Returns:
        ``(Y, X)`` or ``(Y, X, C)`` array, C-contiguous, in the stored dtype (uint8,
        uint16, int16, uint32, int32, float32, float64...); 1-bit images become uint8
        0/255.

    Raises:
        FileNotFoundError: ``src`` is a path that does not exist.
        UnsupportedFormatError: not a TIFF, PNG or JPEG file.
        InvalidImageError: empty, truncated or corrupt file, several image series, or
            axes that are not one 2-D plane (e.g. 5 Z planes), complex pixels.
        ImageTooLargeError: more than ``max_pixels`` pixels.
    """
    name, payload = _open_source(src)
    head = payload[:16] if isinstance(payload, bytes) else _read_head(payload)
    fmt = detect_format(head, name=name)
    stream: BinaryIO | Path = BytesIO(payload) if isinstance(payload, bytes) else payload
    limit = _PixelLimit(name, max_pixels)
    image = (_read_tiff(stream, name, limit) if fmt == "tiff"
             else _read_pillow(stream, name, fmt, limit))
    return _finish(image, name)


@dataclass(frozen=True)
class _PixelLimit:
    """Refuses a plane of more than ``limit`` pixels (None: no limit)."""

    name: str
    limit: int | None

    def check(self, y: int, x: int) -> None:
        if self.limit is not None and y * x > self.limit:
            raise ImageTooLargeError(
                f"{self.name}: {y} x {x} = {y * x / 1e6:.1f} megapixels exceeds the limit of "
                f"{self.limit / 1e6:.1f} megapixels", pixels=y * x, limit=self.limit)


def as_yxc(image: np.ndarray, *, channel_axis: int | None = None) -> np.ndarray:
    """View an image as channels-last ``(Y, X, C)``.

    Args:
        image: ``(Y, X)`` (gets ``C = 1``) or a 3-D array.
        channel_axis: where the channels of a 3-D ``image`` are (e.g. 0 for ``(C, Y, X)``);
            None means they are already last.

    Returns:
        ``(Y, X, C)`` view of ``image`` (no copy).

    Raises:
        InvalidImageError: ``image`` is not 2-D or 3-D, or ``channel_axis`` is out of range.
    """
    if image.ndim == 2:
        if channel_axis is not None:
            raise InvalidImageError(
                f"a 2-D image {image.shape} has no channel axis, got channel_axis={channel_axis}"
            )
        return image[..., np.newaxis]
    if image.ndim != 3:
        raise InvalidImageError(f"expected a 2-D or 3-D image, got shape {image.shape}")
    if channel_axis is None:
        return image
    if not -3 <= channel_axis < 3:
        raise InvalidImageError(f"channel_axis {channel_axis} out of range for {image.shape}")
    return np.moveaxis(image, channel_axis, -1)


def _open_source(src: ImageSource) -> tuple[str, bytes | Path]:
    """Return a display name and either the bytes or an existing, non-empty path."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise InvalidImageError("<bytes>: image data is empty (0 bytes)")
        return "<bytes>", data
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise InvalidImageError(f"{path}: file is empty (0 bytes)")
    return str(path), path


def _read_head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(16)


def _read_tiff(stream: BinaryIO | Path, name: str, limit: _PixelLimit) -> np.ndarray:
    try:
        with tifffile.TiffFile(stream) as tif:
            n_series = len(tif.series)
            if n_series != 1:
                shapes = [s.shape for s in tif.series]
                raise InvalidImageError(
                    f"{name}: TIFF holds {n_series} image series {shapes}; expected one"
                )
            series = tif.series[0]
            if "Y" in series.axes and "X" in series.axes:
                limit.check(series.shape[series.axes.index("Y")],
                            series.shape[series.axes.index("X")])
            data, axes = series.asarray(), series.axes
    except InvalidImageError:
        raise
    except _DECODE_ERRORS as err:
        raise InvalidImageError(f"{name}: corrupt or truncated TIFF ({err})") from err
    return _to_channels_last(data, axes, name)


def _to_channels_last(data: np.ndarray, axes: str, name: str) -> np.ndarray:
    """Squeeze singleton axes and order the rest as ``(Y, X)`` or ``(Y, X, C)``."""
    where = f"{name}: image with axes {axes!r} and shape {data.shape}"
    if "Y" not in axes or "X" not in axes:
        raise InvalidImageError(f"{where} has no Y and X axes")
    keep = [i for i, axis in enumerate(axes) if axis in "YX" or data.shape[i] != 1]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    extra = [axis for axis in axes if axis not in "YX"]
    order = [axes.index("Y"), axes.index("X")]
    if not extra:
        return data.transpose(order)
    channel = extra[0]
    plane_axes = set(extra) - set(_CHANNEL_AXES + _UNLABELLED_AXES)
    if plane_axes or len(extra) > 1:
        raise InvalidImageError(
            f"{where} is not a single 2-D plane (non-singleton axes {''.join(extra)}); "
            "cellzoo segments 2-D images: select one plane first"
        )
    size = data.shape[axes.index(channel)]
    if channel in _UNLABELLED_AXES and size > _MAX_UNLABELLED_CHANNELS:
        raise InvalidImageError(
            f"{where} looks like a stack of {size} planes, not channels; "
            "cellzoo segments 2-D images: select one plane first"
        )
    return data.transpose([*order, axes.index(channel)])


def _read_pillow(stream: BinaryIO | Path, name: str, fmt: str, limit: _PixelLimit) -> np.ndarray:
    try:
        with Image.open(stream, formats=[fmt.upper()]) as img:
            limit.check(img.height, img.width)
            n_frames = getattr(img, "n_frames", 1)
            if fmt == "png" and n_frames > 1:
                raise InvalidImageError(f"{name}: animated PNG with {n_frames} frames")
            img.load()
            return _pillow_to_array(img)
    except InvalidImageError:
        raise
    except Image.DecompressionBombError as err:
        raise InvalidImageError(f"{name}: image too large to decode safely ({err})") from err
    except _DECODE_ERRORS as err:
        raise InvalidImageError(f"{name}: corrupt or truncated {fmt.upper()} ({err})") from err


def _pillow_to_array(img: Image.Image) -> np.ndarray:
    if img.mode not in {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "RGB", "RGBA"}:
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    array = np.asarray(img)
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _finish(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype == bool:
        image = image.astype(np.uint8) * np.uint8(255)
    if image.dtype.kind not in "uif":
        raise InvalidImageError(f"{name}: unsupported pixel type {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"{name}: image has no pixels, shape {image.shape}")
    return np.ascontiguousarray(image)


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


def _label_boxes(labels: np.ndarray) -> list[tuple[int, tuple[slice, ...]]]:
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


# --------------------------------------------------------------------------- outlines


def outline_polygons(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Trace each cell's outer boundary along pixel edges.

    Vertices sit on pixel corners: pixel ``(y, x)`` spans ``[x, x+1] x [y, y+1]``, so the
    polygon of a hole-free, 4-connected cell encloses exactly its pixels. Holes are
    filled; a cell made of several 4-connected parts is outlined by its largest part
    (a warning is logged). Collinear vertices are dropped.

    Args:
        labels: ``(Y, X)`` integer labels, 0 = background.

    Returns:
        ``{id: (V, 2) int64 array of (x, y) vertices}`` in ascending id order. The ring
        is not closed (first vertex not repeated) and runs clockwise on screen (y down),
        i.e. its shoelace area on raw (x, y) is positive and equals the enclosed pixels.
    """
    labels = check_labels(labels, ndim=2)
    polygons: dict[int, np.ndarray] = {}
    split = []
    for label, box in _label_boxes(labels):
        filled, n_parts = _solid_part(labels[box] == label)
        if n_parts > 1:
            split.append(label)
        polygons[label] = _trace_ring(filled) + np.array([box[1].start, box[0].start])
    if split:
        logger.warning(
            "%d cells have several parts; outlined their largest part: ids %s",
            len(split),
            split[:10],
        )
    return polygons


_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def _solid_part(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Pad ``mask`` by one pixel, keep its largest 4-connected part and fill its holes.

    Returns the padded ``(Y+2, X+2)`` bool mask and the number of parts found.
    """
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    parts, n_parts = ndimage.label(padded, _FOUR_CONNECTED)
    if n_parts > 1:
        padded = parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1
    outside, _ = ndimage.label(~padded, _FOUR_CONNECTED)
    return outside != outside[0, 0], n_parts  # everything not reachable from the border


def _trace_ring(padded: np.ndarray) -> np.ndarray:
    """Boundary of a padded, 4-connected, hole-free mask as ``(V, 2)`` (x, y) corners.

    Every boundary pixel edge becomes a directed edge between corners, oriented so the
    cell lies on its right; for such a mask each corner has at most one outgoing edge,
    so following successors from the top-left corner walks the single boundary cycle.
    Coordinates are those of the unpadded mask.
    """
    mask = padded[1:-1, 1:-1]
    height, width = mask.shape
    stride = width + 1
    successor = np.full((height + 1) * stride, -1, dtype=np.int64)
    sides = (  # (neighbour that must be background, from corner, to corner) as (dy, dx)
        (padded[:-2, 1:-1], (0, 0), (0, 1)),  # top edge, heading +x
        (padded[1:-1, 2:], (0, 1), (1, 1)),  # right edge, heading +y
        (padded[2:, 1:-1], (1, 1), (1, 0)),  # bottom edge, heading -x
        (padded[1:-1, :-2], (1, 0), (0, 0)),  # left edge, heading -y
    )
    for neighbour, (fy, fx), (ty, tx) in sides:
        rows, cols = np.nonzero(mask & ~neighbour)
        successor[(rows + fy) * stride + cols + fx] = (rows + ty) * stride + cols + tx
    start = int(np.argmax(successor >= 0))
    step = successor.tolist()
    path = [start]
    corner = step[start]
    while corner != start:
        path.append(corner)
        corner = step[corner]
    ring = np.stack(np.divmod(np.array(path), stride)[::-1], axis=1)
    closed = np.concatenate([ring[-1:], ring, ring[:1]])
    turns = np.any(closed[1:-1] - closed[:-2] != closed[2:] - closed[1:-1], axis=1)
    return ring[turns]


def outlines(labels: np.ndarray) -> np.ndarray:
    """Boundary pixels of every cell, for overlays.

    Args:
        labels: ``(Y, X)`` integer labels, 0 = background.

    Returns:
        ``(Y, X)`` bool, True on cell pixels whose 4-neighbour has another id (a
        neighbour or background; outside the image counts as background).
    """
    labels = check_labels(labels, ndim=2)
    padded = np.pad(labels, 1)
    centre = padded[1:-1, 1:-1]
    differs = (
        (centre != padded[:-2, 1:-1])
        | (centre != padded[2:, 1:-1])
        | (centre != padded[1:-1, :-2])
        | (centre != padded[1:-1, 2:])
    )
    return differs & (centre > 0)


# --------------------------------------------------------------------------- ROI, GeoJSON


def labels_to_imagej_rois(labels: np.ndarray) -> list[roifile.ImagejRoi]:
    """One ImageJ traced-polygon ROI per cell, named by its zero-padded id.

    Coordinates are pixel corners, as ImageJ's wand tool traces them, so each ROI's
    bounds ``left, top, right, bottom`` equal the cell's pixel bounding box (right and
    bottom exclusive).

    Args:
        labels: ``(Y, X)`` integer labels, 0 = background.

    Returns:
        ROIs in ascending id order.
    """
    rois = []
    for label, ring in outline_polygons(labels).items():
        roi = roifile.ImagejRoi.frompoints(ring, name=f"{label:05d}")
        roi.roitype = roifile.ROI_TYPE.TRACED
        roi.right, roi.bottom = (int(v) for v in ring.max(axis=0))  # corners: exclusive
        rois.append(roi)
    return rois


def write_imagej_roi_zip(path: str | os.PathLike[str], labels: np.ndarray) -> Path:
    """Write every cell's outline to an ImageJ/Fiji RoiSet ``.zip`` (overwriting).

    Args:
        path: ``.zip`` file to write.
        labels: ``(Y, X)`` integer labels, 0 = background.

    Returns:
        The path written.

    Raises:
        UnsupportedFormatError: ``path`` does not end in ``.zip``.
    """
    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise UnsupportedFormatError(f"{path}: an ImageJ ROI set is a .zip file")
    roifile.roiwrite(path, labels_to_imagej_rois(labels), mode="w")
    return path


def labels_to_geojson(labels: np.ndarray) -> dict[str, Any]:
    """Cell outlines as a GeoJSON FeatureCollection of Polygons (QuPath can import it).

    Args:
        labels: ``(Y, X)`` integer labels, 0 = background.

    Returns:
        ``{"type": "FeatureCollection", "features": [...]}``, one Feature per cell in
        ascending id order, with a closed exterior ring in pixel-corner (x, y)
        coordinates (counter-clockwise by the shoelace formula, as RFC 7946 asks) and
        properties ``{"label": id, "area": pixel count}``.
    """
    labels = check_labels(labels, ndim=2)
    compact, ids = relabel_sequential(labels)
    areas = dict(zip(ids.tolist(), np.bincount(compact.ravel())[1:].tolist(), strict=True))
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [np.vstack([ring, ring[:1]]).tolist()]},
            "properties": {"label": label, "area": areas[label]},
        }
        for label, ring in outline_polygons(labels).items()
    ]
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike[str], labels: np.ndarray) -> Path:
    """Write :func:`labels_to_geojson` to ``path`` and return the path."""
    path = Path(path)
    path.write_text(json.dumps(labels_to_geojson(labels)))
    return path


# --------------------------------------------------------------------------- overlays


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Draw cell outlines in colour over the image in grey.

    Each channel is percentile-normalised (1st → black, 99th → white, as the network
    input is) and the channels are averaged into grey. Each cell's outline gets a
    saturated colour fixed by its id (golden-ratio hue steps), so colours are the same
    on every run.

    Args:
        image: ``(Y, X)`` or ``(Y, X, C)`` image of any real dtype.
        labels: ``(Y, X)`` integer labels, 0 = background.

    Returns:
        ``(Y, X, 3)`` uint8 RGB, ready for :func:`write_png`.

    Raises:
        InvalidImageError: shapes differ, or the image holds NaN or infinite values.
    """
    from zoo.preprocess import normalize  # imports torch; only overlay needs it

    labels = check_labels(labels, ndim=2)
    stack = np.moveaxis(as_yxc(np.asarray(image)), -1, 0)
    if stack.shape[1:] != labels.shape:
        raise InvalidImageError(f"image {image.shape} and labels {labels.shape} differ in (Y, X)")
    grey = np.clip(normalize(stack.astype(np.float32)).mean(axis=0), 0.0, 1.0)
    rgb = np.repeat(np.round(grey * 255).astype(np.uint8)[..., np.newaxis], 3, axis=-1)
    edge = outlines(labels)
    rgb[edge] = _label_colours(labels[edge])
    return rgb


def _label_colours(ids: np.ndarray) -> np.ndarray:
    """``(N,)`` ids → ``(N, 3)`` uint8 RGB: hue = frac(id · golden ratio), s = 0.85, v = 1."""
    hue = (ids.astype(np.float64) * 0.6180339887498949) % 1.0 * 6.0
    sector, frac = np.floor(hue).astype(np.int64) % 6, hue - np.floor(hue)
    low, falling, rising = 0.15, 1.0 - 0.85 * frac, 1.0 - 0.85 * (1.0 - frac)
    one = np.ones_like(hue)
    table = np.stack(
        [  # (r, g, b) per HSV sector
            np.stack([one, rising, low * one], -1),
            np.stack([falling, one, low * one], -1),
            np.stack([low * one, one, rising], -1),
            np.stack([low * one, falling, one], -1),
            np.stack([rising, low * one, one], -1),
            np.stack([one, low * one, falling], -1),
        ]
    )
    rgb = table[sector, np.arange(ids.size)]
    return np.round(rgb * 255).astype(np.uint8)


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


# --------------------------------------------------------------------------- one entry point

#: Output formats of ``write_segmentation`` and the file suffix each one writes.
OUTPUT_SUFFIXES = {
    "tiff": "_masks.tif",
    "png": "_masks.png",
    "coco": "_masks.json",
    "geojson": "_masks.geojson",
    "roi": "_rois.zip",
}


def write_segmentation(
    out_dir: str | os.PathLike[str], stem: str, labels: np.ndarray, fmt: str = "tiff"
) -> Path:
    """Write ``labels`` as ``out_dir/<stem><suffix>`` in one of ``OUTPUT_SUFFIXES``' formats.

    Raises:
        UnsupportedFormatError: ``fmt`` is not a known output format.
    """
    if fmt not in OUTPUT_SUFFIXES:
        raise UnsupportedFormatError(
            f"unknown output format {fmt!r}; choose one of {', '.join(OUTPUT_SUFFIXES)}"
        )
    path = Path(out_dir) / f"{stem}{OUTPUT_SUFFIXES[fmt]}"
    if fmt in ("tiff", "png"):
        return write_labels(path, labels)
    if fmt == "coco":
        return write_coco(path, labels, image_name=stem)
    if fmt == "geojson":
        return write_geojson(path, labels)
    return write_imagej_roi_zip(path, labels)


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
