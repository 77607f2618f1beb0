"""Writing a large segmentation without holding it: tiled BigTIFF, OME-Zarr, per-cell table.

- ``write_tiff``: a tiled (256²), zlib-compressed BigTIFF, streamed one row of tiles at a
  time (memory: 256 rows of the image).
- ``create_ome_zarr`` + ``write_level_region`` + ``downsample_region``: OME-NGFF 0.4
  (zarr v2, ``/`` chunk keys, Blosc-zstd), a multiscale pyramid (stride-2 nearest-neighbour
  levels, as labels need) with ``image-label`` metadata, so napari opens it as a labels layer
  and QuPath as an image. Regions are chunk-aligned, so workers write them in parallel.
- ``write_table``: one row per cell, sorted by label, as Parquet (pyarrow) or CSV.

Every writer writes to the path it is given; callers stage into a hidden name and rename.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import InvalidParamsError
from zoo.large.blocks import Window

#: TIFF tile and zarr chunk side.
CHUNK = 256
NGFF_VERSION = "0.4"
TABLE_FORMATS = ("parquet", "csv")


def write_tiff(path: Path, shape: tuple[int, int], dtype: np.dtype,
               read: Callable[[Window], np.ndarray]) -> Path:
    """Stream labels into a tiled BigTIFF; ``read(window)`` gives the labels of a window."""
    import tifffile

    tifffile.imwrite(
        path, data=_tiles(shape, np.dtype(dtype), read), shape=shape, dtype=dtype,
        tile=(CHUNK, CHUNK), bigtiff=True, compression="zlib", photometric="minisblack",
        metadata={"axes": "YX"},
    )
    return path


def _tiles(shape: tuple[int, int], dtype: np.dtype, read: Callable[[Window], np.ndarray]
           ) -> Iterator[np.ndarray]:
    for top in range(0, shape[0], CHUNK):
        band = read(Window(top, min(shape[0], top + CHUNK), 0, shape[1]))
        for left in range(0, shape[1], CHUNK):
            tile = np.zeros((CHUNK, CHUNK), dtype=dtype)
            piece = band[:, left : left + CHUNK]
            tile[: piece.shape[0], : piece.shape[1]] = piece
            yield tile


def pyramid(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Level shapes: halve (rounding up) until the level fits one chunk."""
    levels = [tuple(shape)]
    while max(levels[-1]) > CHUNK:
        levels.append(tuple(math.ceil(s / 2) for s in levels[-1]))
    return levels


def create_ome_zarr(path: Path, shape: tuple[int, int], dtype: np.dtype, *, name: str) -> int:
    """Create the group, its empty levels and the NGFF metadata; return the level count."""
    import numcodecs
    import zarr

    levels = pyramid(shape)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    for level, level_shape in enumerate(levels):
        group.create_array(
            str(level), shape=level_shape, chunks=(CHUNK, CHUNK), dtype=np.dtype(dtype),
            fill_value=0, chunk_key_encoding={"name": "v2", "separator": "/"},
            compressors=numcodecs.Blosc(cname="zstd", clevel=5,
                                        shuffle=numcodecs.Blosc.BITSHUFFLE),
        )
    group.attrs.update(ngff_metadata(len(levels), name=name))
    return len(levels)


def ngff_metadata(n_levels: int, *, name: str) -> dict[str, Any]:
    """``multiscales`` (y, x; level ``l`` has scale ``2**l``) and ``image-label`` attributes."""
    datasets = [{"path": str(level), "coordinateTransformations": [
        {"type": "scale", "scale": [float(2**level), float(2**level)]}]}
        for level in range(n_levels)]
    return {
        "multiscales": [{
            "version": NGFF_VERSION,
            "name": name,
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": datasets,
            "type": "nearest",
            "metadata": {"description": "every other pixel of the level above (labels)",
                         "method": "numpy stride [::2, ::2]"},
        }],
        "image-label": {"version": NGFF_VERSION},
    }


def regions(shape: tuple[int, int], side: int) -> list[Window]:
    """Chunk-aligned windows of at most ``side`` (a multiple of ``CHUNK``) tiling ``shape``."""
    side = max(CHUNK, side // CHUNK * CHUNK)
    return [Window(y, min(shape[0], y + side), x, min(shape[1], x + side))
            for y in range(0, shape[0], side) for x in range(0, shape[1], side)]


def write_level_region(path: Path, window: Window, labels: np.ndarray) -> None:
    """Write level 0's ``window`` (chunk-aligned) with ``labels``."""
    import zarr

    zarr.open_array(str(path / "0"), mode="r+")[window.slices] = labels


def downsample_region(path: Path, level: int, window: Window) -> None:
    """Fill ``window`` of ``level`` from every other pixel of ``level - 1``."""
    import zarr

    source = zarr.open_array(str(path / str(level - 1)), mode="r")
    target = zarr.open_array(str(path / str(level)), mode="r+")
    target[window.slices] = source[2 * window.y0 : 2 * window.y1 : 2,
                                   2 * window.x0 : 2 * window.x1 : 2]


def write_table(path: Path, columns: dict[str, np.ndarray], fmt: str) -> Path:
    """Write ``columns`` (equal lengths) as Parquet or CSV, in the given row order."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({k: np.asarray(v) for k, v in columns.items()}), path,
                       compression="zstd")
    elif fmt == "csv":
        names = list(columns)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(names)
            writer.writerows(zip(*(columns[n].tolist() for n in names)))
    else:
        raise InvalidParamsError(f"table format must be one of {', '.join(TABLE_FORMATS)}, "
                                 f"got {fmt!r}")
    return path
