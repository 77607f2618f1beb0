"""Lazy readers: large images read window by window, never whole.

``open_image(path)`` opens, without reading pixels:

- TIFF (striped, tiled, BigTIFF, pyramidal: level 0) through tifffile's zarr store
  (``tifffile.imread(path, aszarr=True)``), so a window reads only the strips/tiles under it;
- OME-Zarr (NGFF 0.4 and 0.5: the first dataset of the first multiscale) and plain zarr
  arrays (a ``.zarr`` folder);
- PNG and JPEG, which cannot be read in parts: decoded whole into memory.

Windows come back channels-last ``(h, w, C)`` in the stored dtype, like ``zoo.io.read_image``
(``C`` is 1 for a grey image). Singleton T/Z axes are dropped; an image with several Z planes
or time points raises ``InvalidImageError`` naming its shape. zarr is imported when a TIFF or
zarr image is opened, never at import time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import InvalidImageError, UnsupportedFormatError
from zoo.large.blocks import Window

_CHANNEL_AXES = "CS"  # tifffile: channel, sample (RGB)
_UNLABELLED_AXES = "QI"  # tifffile: unknown axis, sequence of pages
_MAX_UNLABELLED_CHANNELS = 8
_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


class LazyImage:
    """A 2-D image, optionally with channels, read one window at a time.

    Attributes:
        path: the file or folder.
        shape: ``(Y, X)``.
        channels: number of channels ``C`` (1 for grey).
        dtype: the stored dtype.

    Use as a context manager (or call ``close``): a TIFF keeps its file open.
    """

    def __init__(self, path: Path, array: Any, axes: str, *, closer: Any = None) -> None:
        self.path = path
        self._array = array
        self._closer = closer
        axes = axes.upper()
        kept = axes.replace("_", "")
        if len(axes) != len(array.shape) or sorted(kept.replace("C", "", 1)) != ["X", "Y"]:
            raise InvalidImageError(
                f"{path}: cannot find the Y and X axes in {axes!r} for shape {array.shape}")
        self._axes = axes
        self._kept = kept
        dims = dict(zip(axes, array.shape))
        self.shape = (int(dims["Y"]), int(dims["X"]))
        self.channels = int(dims.get("C", 1))
        self.dtype = np.dtype(array.dtype)
        if min(self.shape) < 1:
            raise InvalidImageError(f"{path}: empty image of shape {tuple(array.shape)}")
        if self.dtype == bool or not np.issubdtype(self.dtype, np.number) \
                or np.issubdtype(self.dtype, np.complexfloating):
            raise InvalidImageError(f"{path}: image must hold real numbers, got dtype {self.dtype}")

    @property
    def pixels(self) -> int:
        return self.shape[0] * self.shape[1]

    def read(self, window: Window, *, step: int = 1) -> np.ndarray:
        """The pixels of ``window`` (every ``step``-th row and column), ``(h, w, C)``."""
        if window.y0 < 0 or window.x0 < 0 or window.y1 > self.shape[0] \
                or window.x1 > self.shape[1] or window.size == 0:
            raise InvalidImageError(f"{self.path}: window {window} is outside {self.shape}")
        rows, cols = slice(window.y0, window.y1, step), slice(window.x0, window.x1, step)
        pick = {"Y": rows, "X": cols, "C": slice(None), "_": 0}
        data = np.asarray(self._array[tuple(pick[a] for a in self._axes)])
        order = [self._kept.index(a) for a in "YXC" if a in self._kept]
        data = np.transpose(data, order)
        return np.ascontiguousarray(data if "C" in self._kept else data[..., None])

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()
            self._closer = None

    def __enter__(self) -> LazyImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LazyImage({str(self.path)!r}, shape={self.shape}, channels={self.channels}, " \
               f"dtype={self.dtype})"


def is_zarr(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a zarr folder (v2 or v3, array or group)."""
    path = Path(path)
    return path.is_dir() and any((path / marker).is_file() for marker in _ZARR_MARKERS)


def open_image(path: str | os.PathLike[str]) -> LazyImage:
    """Open ``path`` for windowed reading (see the module docstring for the formats).

    Raises:
        InvalidImageError: the image is not 2-D (several Z planes or time points), has no
            pixels, or holds no real numbers.
        UnsupportedFormatError: neither TIFF, zarr, PNG nor JPEG.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if is_zarr(path):
        return _open_zarr(path)
    if path.is_dir():
        raise UnsupportedFormatError(f"{path}: a folder that is not a zarr store")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    from zoo.io import detect_image_format

    with open(path, "rb") as handle:
        fmt = detect_image_format(handle.read(16), name=str(path))
    if fmt == "tiff":
        return _open_tiff(path)
    from zoo.io import read_image

    pixels = read_image(path)
    return LazyImage(path, pixels, "YXC" if pixels.ndim == 3 else "YX")


def _open_tiff(path: Path) -> LazyImage:
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, series.shape
        store = tifffile.imread(path, aszarr=True, series=0, level=0)
    except (OSError, ValueError, IndexError, KeyError) as error:
        raise InvalidImageError(f"{path}: unreadable TIFF ({error})") from error
    node = zarr.open(store, mode="r")
    array = node if isinstance(node, zarr.Array) else node["0"]
    if tuple(array.shape) != tuple(shape):
        store.close()
        raise InvalidImageError(f"{path}: TIFF series shape {shape} differs from its store")
    try:
        return LazyImage(path, array, _tiff_axes(axes, shape, path), closer=store)
    except InvalidImageError:
        store.close()
        raise


def _tiff_axes(axes: str, shape: tuple[int, ...], path: Path) -> str:
    """tifffile axes → ours: ``Y``, ``X``, ``C`` (channel), ``_`` (a singleton to drop)."""
    out = []
    for axis, size in zip(axes, shape):
        if axis in "YX":
            out.append(axis)
        elif axis in _CHANNEL_AXES or (axis in _UNLABELLED_AXES
                                       and size <= _MAX_UNLABELLED_CHANNELS):
            out.append("C")
        elif size == 1:
            out.append("_")
        else:
            raise InvalidImageError(
                f"{path}: a 2-D image is needed, but axis {axis!r} holds {size} planes "
                f"(axes {axes}, shape {shape})")
    if out.count("C") > 1:
        raise InvalidImageError(f"{path}: more than one channel axis in {axes} {shape}")
    return "".join(out)


def _open_zarr(path: Path) -> LazyImage:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except (OSError, ValueError, KeyError) as error:
        raise InvalidImageError(f"{path}: unreadable zarr ({error})") from error
    if isinstance(node, zarr.Array):
        return LazyImage(path, node, _guess_axes(node.shape, path))
    multiscales = _multiscales(dict(node.attrs))
    if not multiscales:
        raise InvalidImageError(f"{path}: a zarr group without OME-NGFF multiscales metadata")
    first = multiscales[0]
    array = node[first["datasets"][0]["path"]]
    names = [a["name"] if isinstance(a, dict) else a for a in first.get("axes", [])]
    if not names:  # NGFF 0.1-0.3 were always 5-D
        names = list("tczyx")[-array.ndim:]
    return LazyImage(path, array, _ngff_axes(names, array.shape, path))


def _multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """NGFF 0.5 keeps metadata under ``ome``; 0.4 at the top level."""
    return attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales") or []


def _ngff_axes(names: list[str], shape: tuple[int, ...], path: Path) -> str:
    out = []
    for name, size in zip(names, shape):
        name = name.lower()
        if name in ("y", "x"):
            out.append(name.upper())
        elif name == "c":
            out.append("C")
        elif size == 1:
            out.append("_")
        else:
            raise InvalidImageError(
                f"{path}: a 2-D image is needed, but axis {name!r} holds {size} planes "
                f"(axes {names}, shape {tuple(shape)})")
    return "".join(out)


def _guess_axes(shape: tuple[int, ...], path: Path) -> str:
    """Axes of a zarr array without metadata: YX, YXC (last axis ≤ 4) or CYX (first ≤ 8)."""
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3 and shape[-1] <= 4:
        return "YXC"
    if len(shape) == 3 and shape[0] <= _MAX_UNLABELLED_CHANNELS:
        return "CYX"
    raise InvalidImageError(
        f"{path}: cannot tell the axes of a zarr array of shape {tuple(shape)}; "
        "write it as OME-Zarr with axes metadata")


def image_pixels(path: str | os.PathLike[str]) -> int:
    """``Y × X`` of an image, read from its header (TIFF, zarr, PNG, JPEG) without decoding."""
    path = Path(path)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        try:
            with Image.open(path) as image:
                return image.size[0] * image.size[1]
        except OSError:
            pass  # not what its name says: open_image decides below
    with open_image(path) as image:
        return image.pixels


def describe(image: LazyImage) -> dict[str, Any]:
    """What identifies an input for resuming: path, size and modification time, shape."""
    stat = image.path.stat()
    if image.path.is_dir():
        meta = [image.path / m for m in _ZARR_MARKERS if (image.path / m).is_file()]
        stat = max((m.stat() for m in meta), key=lambda s: s.st_mtime_ns, default=stat)
    return json.loads(json.dumps({
        "path": str(image.path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "shape": list(image.shape), "channels": image.channels, "dtype": str(image.dtype)}))
