"""Read images (TIFF, PNG, JPEG) into channels-last arrays; the format comes from the bytes.

Images come back **channels-last**, the layout cellpose and scikit-image use:
``(Y, X)`` for one channel and ``(Y, X, C)`` for several, in the dtype stored in the
file (1-bit images become uint8 0/255). We segment 2-D images: singleton T/Z axes are
squeezed, and a file holding several Z planes or time points raises
:class:`~zoo.errors.InvalidImageError` naming its shape instead of picking a plane.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image

from zoo.errors import (
    ImageTooLargeError,
    InvalidImageError,
    UnsupportedFormatError,
)

logger = logging.getLogger(__name__)

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview
#: Suffixes of the image files a folder yields (compared in lower case). A file named
#: directly is read whatever its suffix: the format comes from its first bytes.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")

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
    RuntimeError,  # imagecodecs' codec errors (e.g. DeflateError), when tifffile uses it
)
_CHANNEL_AXES = "CS"  # tifffile: C = channel, S = sample (RGB)
_UNLABELLED_AXES = "QI"  # tifffile: unknown axis, sequence of pages
_MAX_UNLABELLED_CHANNELS = 8
#: Most pages a TIFF may have (cellzoo segments one 2-D plane, with a few channels).
MAX_TIFF_PAGES = 1024
#: Y × X summed over every page and plane of a file may reach this many times ``max_pixels``
#: (an image of the largest size with this many channels), checked before decoding.
MAX_PLANES = _MAX_UNLABELLED_CHANNELS


# --------------------------------------------------------------------------- reading


def detect_image_format(head: bytes, *, name: str = "<bytes>") -> str:
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
    plain ``(3, Y, X)`` page stack, is also read as channels, and so is the small last axis
    of a ``(Y, X, C)`` array that ``tifffile.imwrite`` stored as Y pages). PNG and JPEG are read with
    Pillow: grey → ``(Y, X)``, grey+alpha → ``(Y, X, 2)``, RGB → ``(Y, X, 3)``, RGBA →
    ``(Y, X, 4)``, 16-bit grey PNG → uint16; palette and CMYK images become RGB(A).

    Args:
        src: a file path, or the file's bytes (as the HTTP service receives them).
        max_pixels: refuse images with more than this many pixels (Y × X), and TIFFs whose
            pages and planes hold more than ``MAX_PLANES`` (8) times as many together (Y × X
            summed over every page), checked from the headers before any pixel data is
            decoded; None = no limit.

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
    fmt = detect_image_format(head, name=name)
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
                f"{self.name}: {y} x {x} = {y * x:,} pixels, over the limit of {self.limit:,} "
                f"({self.limit / 1e6:.3g} megapixels)", pixels=y * x, limit=self.limit)

    def check_total(self, total: int) -> None:
        """Refuse ``total`` pixels summed over every page and plane of a file: more than
        the limit's image with ``MAX_PLANES`` channels could hold."""
        budget = None if self.limit is None else self.limit * MAX_PLANES
        if budget is not None and total > budget:
            raise ImageTooLargeError(
                f"{self.name}: {total:,} pixels across its pages and planes, over the limit of "
                f"{budget:,} ({MAX_PLANES} planes of {self.limit:,})", pixels=total,
                limit=budget)


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
            _check_tiff_pages(tif, name, limit)
            n_series = len(tif.series)
            if n_series == 0:
                raise InvalidImageError(f"{name}: not a readable TIFF: it holds no image data "
                                        "(corrupt or truncated file?)")
            if n_series != 1:
                shapes = [s.shape for s in tif.series]
                raise InvalidImageError(
                    f"{name}: TIFF holds {n_series} image series {shapes}; expected one"
                )
            series = tif.series[0]
            if "Y" in series.axes and "X" in series.axes:
                limit.check(series.shape[series.axes.index("Y")],
                            series.shape[series.axes.index("X")])
            planes = [n for n, axis in zip(series.shape, series.axes) if axis != "S"]
            limit.check_total(int(np.prod(planes, dtype=np.int64)))
            data, axes = series.asarray(), series.axes
    except InvalidImageError:
        raise
    except _DECODE_ERRORS as err:
        raise InvalidImageError(f"{name}: not a readable TIFF: {err}") from err
    return _to_channels_last(data, axes, name)


def _check_tiff_pages(tif: tifffile.TiffFile, name: str, limit: _PixelLimit) -> None:
    """Refuse, from the page headers alone, a file whose pages hold more pixels than the
    limit together (or more than ``MAX_TIFF_PAGES`` pages): nothing is decoded."""
    total = 0
    pages = tif.pages
    for index in range(MAX_TIFF_PAGES + 1):
        try:
            page = pages[index]
        except IndexError:
            return
        if index == MAX_TIFF_PAGES:
            raise InvalidImageError(f"{name}: TIFF has more than {MAX_TIFF_PAGES} pages; "
                                    "cellzoo segments 2-D images")
        separate, depth, length, width, _ = page.shaped
        limit.check(length, width)
        total += separate * depth * length * width
        limit.check_total(total)


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
    if (channel in _UNLABELLED_AXES and axes == f"{channel}YX"
            and data.shape[2] <= _MAX_UNLABELLED_CHANNELS and data.shape[2] < size):
        # a channels-last (Y, X, C) array written as plain pages (tifffile.imwrite without
        # axes metadata stores it as Y pages of X × C): read its small last axis as channels
        return data
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
