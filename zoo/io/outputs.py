"""The output formats of a segmentation, and the one function that writes any of them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from zoo.errors import UnsupportedFormatError
from zoo.io.labels import write_labels
from zoo.io.rle import write_coco
from zoo.io.vector import write_geojson, write_imagej_roi_zip

#: The output formats: name → (file suffix, media type). ``zoo segment --format``, the
#: service's ``output`` field and the web page all read this one table.
OUTPUT_FORMATS: dict[str, tuple[str, str]] = {
    "tiff": ("_masks.tif", "image/tiff"),
    "png": ("_masks.png", "image/png"),
    "coco": ("_masks.json", "application/json"),
    "geojson": ("_masks.geojson", "application/geo+json"),
    "roi": ("_rois.zip", "application/zip"),
}
#: Output format → the suffix of the file it writes.
OUTPUT_SUFFIXES = {name: suffix for name, (suffix, _) in OUTPUT_FORMATS.items()}


def write_segmentation(
    out_dir: str | os.PathLike[str], stem: str, labels: np.ndarray, fmt: str = "tiff"
) -> Path:
    """Write ``labels`` as ``out_dir/<stem><suffix>`` in one of ``OUTPUT_FORMATS``.

    Raises:
        UnsupportedFormatError: ``fmt`` is not a known output format.
    """
    if fmt not in OUTPUT_FORMATS:
        raise UnsupportedFormatError(
            f"unknown output format {fmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}"
        )
    path = Path(out_dir) / f"{stem}{OUTPUT_SUFFIXES[fmt]}"
    if fmt in ("tiff", "png"):
        return write_labels(path, labels)
    if fmt == "coco":
        return write_coco(path, labels, image_name=stem)
    if fmt == "geojson":
        return write_geojson(path, labels)
    return write_imagej_roi_zip(path, labels)


def encode_segmentation(labels: np.ndarray, fmt: str, stem: str = "image") -> tuple[bytes, str]:
    """The bytes of ``write_segmentation``'s file and its media type (for HTTP answers)."""
    with tempfile.TemporaryDirectory(prefix="cellzoo-") as tmp:
        path = write_segmentation(tmp, stem, labels, fmt)
        return path.read_bytes(), OUTPUT_FORMATS[fmt][1]
