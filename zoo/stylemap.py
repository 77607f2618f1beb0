"""The style map: where the bank's reference styles, and a new image, sit in two dimensions.

The web page draws the style bank as a scatter (one dot per reference image, coloured by
cluster) and a routed image as a star beside its nearest references.

- ``layout``: the references' positions. The bank's own ``map_xy`` (a layout made when the
  bank was built) when it has one; else ``pca_layout``, the first two principal components
  of the reference styles, with each axis's sign fixed so every machine draws the same map.
- ``place``: a new image's position, the distance-weighted mean of its nearest references'
  positions (weights ``1 / distance``; an exact match sits on its reference). Unlike t-SNE,
  this places one image without refitting the map, so the references never move.

``zoo.router.Router`` puts a route's nearest references and its ``place`` on this map into
every ``RouteResult`` (its ``neighbours`` and ``map``), which is what the web page draws.

numpy only; nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from zoo.errors import InvalidParamsError

if TYPE_CHECKING:
    from zoo.cluster import StyleBank

#: Distances below this count as an exact match (the image sits on that reference).
_EXACT = 1e-9


def pca_layout(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components of ``vectors``: a deterministic 2-D layout.

    Each axis's sign is chosen so the reference with the largest absolute coordinate on it
    is positive (SVD leaves signs arbitrary). A bank with one direction of variance gets
    zeros on the second axis.

    Args:
        vectors: ``(N, S)`` style vectors, N >= 2.

    Returns:
        ``(N, 2)`` float32 positions.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) < 2 or not np.all(np.isfinite(vectors)):
        raise InvalidParamsError(
            f"vectors must be a finite (N, S) array with N >= 2, got shape {vectors.shape}")
    centred = vectors - vectors.mean(axis=0)
    left, singular, _ = np.linalg.svd(centred, full_matrices=False)
    xy = np.zeros((len(vectors), 2))
    keep = min(2, int(np.sum(singular > max(singular[0], 1e-300) * 1e-9)))
    xy[:, :keep] = left[:, :keep] * singular[:keep]
    for axis in range(keep):
        if xy[np.argmax(np.abs(xy[:, axis])), axis] < 0:
            xy[:, axis] = -xy[:, axis]
    return xy.astype(np.float32)


def layout(bank: StyleBank) -> np.ndarray:
    """The references' positions on the style map: ``bank.map_xy``, else ``pca_layout``.

    Returns:
        ``(N, 2)`` float32, one row per reference vector of ``bank``.
    """
    if bank.map_xy is not None:
        xy = np.asarray(bank.map_xy, dtype=np.float32)
        if xy.shape != (len(bank.vectors), 2):
            raise InvalidParamsError(
                f"map_xy must be shaped ({len(bank.vectors)}, 2), got {xy.shape}")
        return xy
    return pca_layout(bank.vectors)


def place(xy: np.ndarray, indices: Sequence[int] | np.ndarray,
          distances: Sequence[float] | np.ndarray) -> np.ndarray:
    """A new image's position: the ``1 / distance``-weighted mean of its neighbours' positions.

    Args:
        xy: ``(N, 2)`` reference positions (``layout``).
        indices: ``(k,)`` rows of ``xy`` of the image's nearest references, k >= 1.
        distances: ``(k,)`` the image's style distances to them (>= 0). When one is 0 (an
            exact match) the image sits on that reference (the mean of such references).

    Returns:
        ``(2,)`` float64 position.
    """
    xy = np.asarray(xy, dtype=np.float64)
    indices = np.asarray(indices, dtype=np.int64)
    distances = np.asarray(distances, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InvalidParamsError(f"xy must be shaped (N, 2), got {xy.shape}")
    if indices.ndim != 1 or indices.size == 0 or indices.shape != distances.shape:
        raise InvalidParamsError(
            f"indices {indices.shape} and distances {distances.shape} must be equal, non-empty 1-D")
    if indices.min() < 0 or indices.max() >= len(xy):
        raise InvalidParamsError(f"indices must lie in 0..{len(xy) - 1}, got {indices.tolist()}")
    if not np.all(np.isfinite(distances)) or distances.min() < 0:
        raise InvalidParamsError(f"distances must be finite and >= 0, got {distances.tolist()}")
    exact = distances <= _EXACT
    weights = exact.astype(np.float64) if exact.any() else 1.0 / distances
    return (weights[:, None] * xy[indices]).sum(axis=0) / weights.sum()
