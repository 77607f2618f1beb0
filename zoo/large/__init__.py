"""Whole images of any size in bounded memory, on this machine or a Dask cluster.

- ``blocks``: block plans and the memory model (how large a block may be);
- ``reader``: lazy TIFF / OME-Zarr / zarr readers (``open_image``);
- ``norm``: whole-image normalisation bounds, gathered block by block;
- ``network``: the network over a region, on the whole image's tile grid;
- ``stitch``: which block decides a cell, canonical numbering, per-block parts;
- ``writer``: tiled BigTIFF, OME-Zarr (NGFF 0.4) and the per-cell table;
- ``engine``: ``segment_large``, the stages of the block path, and resume;
- ``executors``: where tasks run (``ThreadExecutor``); ``distributed``: Dask
  (``connect``, ``DaskExecutor``, ``ZooPlugin``).

Importing ``zoo.large`` loads nothing heavy; zarr and pyarrow load when used, and dask only
in ``distributed`` (``pip install 'cellzoo[dask]'``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BlockPlan": "zoo.large.blocks",
    "block_side": "zoo.large.blocks",
    "parse_memory": "zoo.large.blocks",
    "open_image": "zoo.large.reader",
    "image_pixels": "zoo.large.reader",
    "LargeParams": "zoo.large.engine",
    "LargeResult": "zoo.large.engine",
    "segment_large": "zoo.large.engine",
    "ThreadExecutor": "zoo.large.executors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zoo.large' has no attribute {name!r}")
