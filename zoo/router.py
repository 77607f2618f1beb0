"""Style vector → k nearest reference styles → cluster → model; out-of-distribution flag.

Two parts:

- the embedding: ``embed`` / ``embed_many`` compute an image's style with one forward
  pass on a downsampled view of the whole image (the same embedding builds the style
  bank and routes new images, so they must never differ);
- the router: ``Router.route_style`` votes among the ``bank.k`` nearest reference
  vectors (Cellpose 2.0's 5-nearest-neighbour classifier) and picks that cluster's
  specialist, or the generalist when the style is out of distribution or the cluster
  has no specialist.

How the exact kNN works: bank and queries are L2-normalised, so
``||a - b||² = 2 - 2 a·b``; one float32 matrix product ranks the whole bank, and the
distances of the k winners are then recomputed exactly as ``||a - b||``. The product
runs on one BLAS thread: a single query is memory-bound (0.1-0.7 ms for 2,000-10,000
vectors of dim 256), and on a busy CPU two BLAS threads that wait on each other made
the median for 10,000 vectors 12-16 ms instead of 0.7 ms (bench/bench_router.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

import numpy as np
from threadpoolctl import ThreadpoolController

from zoo.cluster import StyleBank, normalize_styles
from zoo.errors import InvalidParamsError
from zoo.params import PredictParams
from zoo.predict import Predictor
from zoo.preprocess import resize, scaled_shape
from zoo.tiling import extract_tiles, plan_tiles

_QUERY_CHUNK = 1024


def _view_params(predictor: Predictor, view: int, params: PredictParams | None) -> PredictParams:
    """``params`` with one tile that covers the whole view and no test-time augmentation."""
    if view < 16:
        raise InvalidParamsError(f"view must be >= 16 pixels, got {view}")
    divisor = predictor.model.config.divisor
    tile = int(math.ceil(view / divisor) * divisor)
    return replace(params or PredictParams(), tile_size=tile, augment=False)


def _view(predictor: Predictor, image: np.ndarray, view: int, params: PredictParams) -> np.ndarray:
    """Normalised ``(C_in, y, x)`` float32 view whose longest side is ``view`` pixels."""
    stack = predictor.prepare(image, params)
    return resize(stack, scaled_shape(stack.shape[1:], view / max(stack.shape[1:])))


def embed(
    predictor: Predictor,
    image: np.ndarray,
    *,
    view: int = 256,
    params: PredictParams | None = None,
) -> np.ndarray:
    """The style vector of a whole image, from one forward pass on a downsampled view.

    The image is normalised by ``predictor.prepare`` (channels and percentiles from
    ``params``), then resized bilinearly, aspect ratio kept, so its longest side is
    exactly ``view`` pixels. Small images are upsampled too: every image is seen at
    the same field of view relative to its extent, so the style does not depend on
    pixel count, and a tiny image still gives a deepest feature map large enough to
    pool (a 32-pixel image would pool a 4 × 4 map). The view is zero-padded only to
    the network divisor and run as a single tile; tile size and ``augment`` in
    ``params`` are ignored.

    Args:
        predictor: the network whose style is used (the bank's style network).
        image: ``(Y, X)`` or ``(Y, X, C)`` channels-last image.
        view: longest side of the view, in pixels (>= 16).
        params: channel selection and normalisation; defaults to ``PredictParams()``.

    Returns:
        ``(style_dim,)`` float32, L2-normalised.
    """
    params = _view_params(predictor, view, params)
    _, style = predictor.network_maps(_view(predictor, image, view, params), params)
    return style


def embed_many(
    predictor: Predictor,
    images: Iterable[np.ndarray],
    *,
    view: int = 256,
    batch_size: int = 8,
    params: PredictParams | None = None,
) -> np.ndarray:
    """``embed`` for many images, batching views of equal shape into one network call.

    Views are grouped by padded shape as they arrive; a group runs when it holds
    ``batch_size`` views, the rest at the end, so memory stays at most one batch per
    distinct shape. Gives the same vectors as ``embed`` (up to float rounding).

    Args:
        predictor: the network whose style is used.
        images: channels-last images (any iterable; consumed once).
        view: longest side of each view, in pixels.
        batch_size: views per network call.
        params: channel selection and normalisation; defaults to ``PredictParams()``.

    Returns:
        ``(N, style_dim)`` float32, L2-normalised rows, in input order.
    """
    if batch_size < 1:
        raise InvalidParamsError(f"batch_size must be >= 1, got {batch_size}")
    params = _view_params(predictor, view, params)
    pending: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    styles: dict[int, np.ndarray] = {}
    for index, image in enumerate(images):
        stack = _view(predictor, image, view, params)
        grid = plan_tiles(
            stack.shape[1:], tile=params.tile_size, divisor=predictor.model.config.divisor
        )
        tile = extract_tiles(stack, grid)[0]
        group = pending.setdefault(tile.shape, [])
        group.append((index, tile))
        if len(group) == batch_size:
            styles.update(_run_group(predictor, group))
            group.clear()
    for group in pending.values():
        styles.update(_run_group(predictor, group))
    if not styles:
        return np.zeros((0, predictor.model.config.style_dim), dtype=np.float32)
    return np.stack([styles[i] for i in range(len(styles))])


def _run_group(predictor: Predictor, group: list[tuple[int, np.ndarray]]) -> dict[int, np.ndarray]:
    if not group:
        return {}
    _, batch_styles = predictor.runner.run(np.stack([tile for _, tile in group]))
    norms = np.maximum(np.linalg.norm(batch_styles, axis=1, keepdims=True), 1e-12)
    unit = (batch_styles / norms).astype(np.float32)
    return {index: unit[row] for row, (index, _) in enumerate(group)}


@dataclass(frozen=True)
class RouteResult:
    """Where one image goes, and why.

    Attributes:
        model: the winning cluster's specialist, or the generalist (out of
            distribution, or the cluster has no specialist).
        cluster: the winning cluster id (reported even when out of distribution).
        cluster_name: that cluster's name.
        confidence: fraction of the k nearest reference vectors in the winning cluster.
        distance: euclidean distance from the (normalised) style to the nearest
            reference vector, in [0, 2].
        ood: True when ``distance`` exceeds the bank's ``ood_threshold``.
        fallback: True when the generalist was chosen because the style is out of
            distribution (a cluster without a specialist sets ``model`` to the
            generalist but leaves this False; ``reason`` tells the two apart).
        reason: one sentence explaining the choice.
    """

    model: str
    cluster: int
    cluster_name: str
    confidence: float
    distance: float
    ood: bool
    fallback: bool
    reason: str

    def to_dict(self) -> dict[str, str | int | float | bool]:
        """JSON-ready dict of every field (plain Python types)."""
        return asdict(self)


class Router:
    """Routes style vectors to models with a k-nearest-neighbour vote over a style bank.

    The winning cluster has the most votes among the ``bank.k`` nearest reference
    vectors; ties go to the cluster with the larger summed inverse distance of its
    voters, then to the lowest cluster id.

    Args:
        bank: the reference styles, their clusters and the cluster → specialist map.
        generalist: model used for out-of-distribution styles and clusters without
            a specialist.
    """

    def __init__(self, bank: StyleBank, *, generalist: str) -> None:
        if not generalist:
            raise InvalidParamsError(f"generalist must be a model name, got {generalist!r}")
        self.bank = bank
        self.generalist = generalist
        self._vectors = np.ascontiguousarray(bank.vectors, dtype=np.float32)
        self._k = min(bank.k, len(bank.vectors))
        self._blas = ThreadpoolController().select(user_api="blas")

    def route_style(self, style: np.ndarray) -> RouteResult:
        """Route one ``(style_dim,)`` style vector (L2-normalised here)."""
        style = np.asarray(style)
        if style.ndim != 1:
            raise InvalidParamsError(f"style must be shaped (style_dim,), got {style.shape}")
        return self.route_styles(style[None])[0]

    def route_styles(self, styles: np.ndarray) -> list[RouteResult]:
        """Route ``(M, style_dim)`` style vectors (rows L2-normalised here), vectorised."""
        queries = self._check(styles)
        results: list[RouteResult] = []
        for start in range(0, len(queries), _QUERY_CHUNK):
            chunk = queries[start : start + _QUERY_CHUNK]
            winners, votes, distances = self._vote(chunk)
            results.extend(
                self._result(int(w), int(v), float(d)) for w, v, d in zip(winners, votes, distances)
            )
        return results

    def _check(self, styles: np.ndarray) -> np.ndarray:
        styles = np.asarray(styles, dtype=np.float32)
        if styles.ndim != 2 or styles.shape[1] != self.bank.style_dim:
            raise InvalidParamsError(
                f"styles must be shaped (M, {self.bank.style_dim}), got {styles.shape}"
            )
        return normalize_styles(styles)

    def _vote(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Winning cluster, its vote count and the nearest distance for each query row."""
        k, n_clusters = self._k, self.bank.n_clusters
        with self._blas.limit(limits=1):  # process-wide while it lasts; see the module doc
            similarity = queries @ self._vectors.T
        if k < similarity.shape[1]:
            nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        else:
            nearest = np.broadcast_to(np.arange(k), (len(queries), k))
        gaps = self._vectors[nearest] - queries[:, None, :]
        distances = np.sqrt(np.einsum("mks,mks->mk", gaps, gaps, dtype=np.float64))
        labels = self.bank.labels[nearest]
        onehot = labels[:, :, None] == np.arange(n_clusters)
        votes = onehot.sum(axis=1)
        closeness = (onehot / np.maximum(distances, 1e-12)[:, :, None]).sum(axis=1)
        closeness[votes < votes.max(axis=1, keepdims=True)] = -np.inf
        winners = closeness.argmax(axis=1)  # first maximum = lowest id among exact ties
        return winners, votes[np.arange(len(queries)), winners], distances.min(axis=1)

    def _result(self, cluster: int, votes: int, distance: float) -> RouteResult:
        bank, name = self.bank, self.bank.names[cluster]
        where = f"{votes}/{self._k} nearest reference styles are in cluster {cluster} ({name!r})"
        ood = distance > bank.ood_threshold
        specialist = bank.specialists.get(cluster)
        if ood:
            model = self.generalist
            reason = (
                f"out of distribution: nearest reference style at distance {distance:.4f} > "
                f"threshold {bank.ood_threshold:.4f} (nearest cluster {cluster}, {name!r}); "
                f"falling back to the generalist {model!r}"
            )
        elif specialist is None:
            model = self.generalist
            reason = f"{where}, which has no specialist; using the generalist {model!r}"
        else:
            model = specialist
            reason = f"{where}; using its specialist {model!r}"
        return RouteResult(
            model=model,
            cluster=cluster,
            cluster_name=name,
            confidence=votes / self._k,
            distance=distance,
            ood=ood,
            fallback=ood,
            reason=reason,
        )
