"""Vector outputs of a label image: traced outlines, ImageJ ROI zips, GeoJSON.

How it works: :func:`outline_polygons` traces each cell's outer boundary along pixel edges
(vertices sit on pixel corners, so a polygon encloses exactly the cell's pixels; holes are
filled and only the largest 4-connected part is kept). ImageJ ROIs and GeoJSON both use that
one tracer.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import roifile
from scipy import ndimage

from zoo.io.labels import check_labels, label_boxes, relabel_sequential

logger = logging.getLogger(__name__)

from zoo.errors import (
    UnsupportedFormatError,
)

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
    for label, box in label_boxes(labels):
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
