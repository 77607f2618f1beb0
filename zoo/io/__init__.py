"""Images in, segmentations out.

- ``decode``: read TIFF/PNG/JPEG into channels-last arrays (``read_image``);
- ``labels``: label-image checks and label files (TIFF, PNG);
- ``rle``: COCO run-length encoding, both ways (the project's one codec);
- ``vector``: traced outlines, ImageJ ROI zips, GeoJSON;
- ``outputs``: the table of output formats and ``write_segmentation``.

Pictures (overlays, plots) are in ``zoo.viz``.
"""

from __future__ import annotations

from zoo.io.decode import IMAGE_SUFFIXES, ImageSource, as_yxc, detect_image_format, read_image
from zoo.io.labels import check_labels, relabel_sequential, run_lengths, write_labels, write_png
from zoo.io.outputs import (
    OUTPUT_FORMATS,
    OUTPUT_SUFFIXES,
    encode_segmentation,
    write_segmentation,
)
from zoo.io.rle import coco_rle_to_labels, labels_to_coco_rle, rle_to_mask, write_coco
from zoo.io.vector import (
    labels_to_geojson,
    labels_to_imagej_rois,
    outline_polygons,
    outlines,
    write_geojson,
    write_imagej_roi_zip,
)

__all__ = [
    "IMAGE_SUFFIXES", "OUTPUT_FORMATS", "OUTPUT_SUFFIXES", "ImageSource", "as_yxc",
    "check_labels", "coco_rle_to_labels", "detect_image_format", "encode_segmentation",
    "labels_to_coco_rle", "labels_to_geojson", "labels_to_imagej_rois", "outline_polygons",
    "outlines", "read_image", "relabel_sequential", "rle_to_mask", "run_lengths", "write_coco",
    "write_geojson", "write_imagej_roi_zip", "write_labels", "write_png", "write_segmentation",
]
