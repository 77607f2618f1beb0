"""Style vector → k nearest reference styles → cluster → model; out-of-distribution flag.

``Router.route_style`` votes among the ``bank.k`` nearest reference vectors (Cellpose 2.0's
5-nearest-neighbour classifier) and picks that cluster's specialist, or the generalist when
the style is out of distribution or the cluster has no specialist. The style comes from
``zoo.embedding.style_pass`` (the same function embedded the bank's references).

Out of distribution: when the bank carries a calibrated check (``bank.ood``, ``zoo.ood``),
a style whose score exceeds its threshold; else (older banks) a style farther than
``bank.ood_threshold`` from every reference. Each route's ``reason`` says in one line what
was measured against which threshold, and why its model serves the image (for a bank built
with validation, the figures that chose the cluster's model: ``bank.selection``).

How the exact kNN works: bank and queries are L2-normalised, so
``||a - b||² = 2 - 2 a·b``; one float32 matrix product ranks the whole bank, and the
distances of the k winners are then recomputed exactly as ``||a - b||``. The product
runs on one BLAS thread: a single query is memory-bound (0.1-0.7 ms for 2,000-10,000
vectors of dim 256), and on a busy CPU two BLAS threads that wait on each other made
the median for 10,000 vectors 12-16 ms instead of 0.7 ms (bench/bench_router.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController

from zoo.cluster import StyleBank, normalize_styles
from zoo.errors import InvalidParamsError
from zoo.stylemap import layout, place

_QUERY_CHUNK = 1024


@dataclass(frozen=True)
class Neighbour:
    """One of the reference styles nearest to a query.

    Attributes:
        ref: the reference's id in the bank (``StyleBank.refs``).
        cluster: its cluster id.
        distance: euclidean distance to the query's style.
    """

    ref: str
    cluster: int
    distance: float


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
        ood: True when ``ood_score`` exceeds ``ood_threshold``.
        fallback: True when the generalist was chosen because the style is out of
            distribution (a cluster without a specialist sets ``model`` to the
            generalist but leaves this False; ``reason`` tells the two apart).
        reason: one line explaining the choice.
        neighbours: the ``k`` nearest references, nearest first.
        map: the query's position on the style map (``{"x", "y"}``: the distance-weighted
            mean of its neighbours' positions on ``zoo.stylemap.layout(bank)``).
        ood_score: the out-of-distribution score (``bank.ood``'s, else ``distance``).
        ood_threshold: the score above which a style is out of distribution.
    """

    model: str
    cluster: int
    cluster_name: str
    confidence: float
    distance: float
    ood: bool
    fallback: bool
    reason: str
    neighbours: tuple[Neighbour, ...] = field(default=())
    map: dict[str, float] | None = None
    ood_score: float = 0.0
    ood_threshold: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready dict of every field (plain Python types)."""
        data = asdict(self)
        data["neighbours"] = [asdict(n) for n in self.neighbours]
        return data


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
        self._layout = layout(bank)

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
            winners, votes, nearest, distances = self._vote(chunk)
            scores = (self.bank.ood.score(chunk) if self.bank.ood is not None
                      else distances[:, 0])
            results.extend(
                self._result(int(w), int(v), n, d, float(o))
                for w, v, n, d, o in zip(winners, votes, nearest, distances, scores)
            )
        return results

    def _check(self, styles: np.ndarray) -> np.ndarray:
        styles = np.asarray(styles, dtype=np.float32)
        if styles.ndim != 2 or styles.shape[1] != self.bank.style_dim:
            raise InvalidParamsError(
                f"styles must be shaped (M, {self.bank.style_dim}), got {styles.shape}"
            )
        return normalize_styles(styles)

    def _vote(
        self, queries: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per query row: the winning cluster, its vote count, and the indices and distances
        of the k nearest references, nearest first."""
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
        order = np.argsort(distances, axis=1, kind="stable")
        rows = np.arange(len(queries))[:, None]
        return (winners, votes[np.arange(len(queries)), winners], np.asarray(nearest)[rows, order],
                distances[rows, order])

    def _result(self, cluster: int, votes: int, nearest: np.ndarray,
                distances: np.ndarray, score: float) -> RouteResult:
        bank, name = self.bank, self.bank.names[cluster]
        threshold = bank.ood.threshold if bank.ood is not None else bank.ood_threshold
        measure = (bank.ood.description if bank.ood is not None
                   else "distance to the nearest reference style")
        ood = score > threshold
        specialist = bank.specialists.get(cluster)
        where = f"{votes}/{self._k} nearest references in cluster {cluster} ({name!r})"
        if ood:
            model = self.generalist
            reason = (f"out of distribution: {measure} {score:.3f} > threshold {threshold:.3f}"
                      f" (nearest cluster {cluster}, {name!r}); using the generalist {model!r}")
        else:
            model = specialist or self.generalist
            reason = (f"in distribution ({measure} {score:.3f} <= {threshold:.3f}); {where}; "
                      + self._why(cluster, specialist))
        return RouteResult(
            model=model,
            cluster=cluster,
            cluster_name=name,
            confidence=votes / self._k,
            distance=float(distances[0]),
            ood=ood,
            fallback=ood,
            reason=reason,
            neighbours=tuple(Neighbour(bank.refs[i], int(bank.labels[i]), float(d))
                             for i, d in zip(nearest, distances)),
            map=self._place(nearest, distances),
            ood_score=score,
            ood_threshold=threshold,
        )

    def _why(self, cluster: int, specialist: str | None) -> str:
        """Why the cluster's model serves it: the validation figures when the bank has them."""
        evidence = self.bank.selection.get(cluster)
        if evidence is None or not evidence.get("specialist"):
            return (f"using its specialist {specialist!r}" if specialist is not None else
                    f"it has no specialist; using the generalist {self.generalist!r}")
        at = "/".join(f"{t:g}" for t in evidence["at"])
        figures = (f"AP@{at} {_joined(evidence['specialist'])} against the generalist's "
                   f"{_joined(evidence['generalist'])} on {evidence['images']} validation images")
        if specialist is not None:
            return f"its specialist {specialist!r} beat the generalist ({figures})"
        return (f"its specialist did not beat the generalist ({figures}); using the generalist "
                f"{self.generalist!r}")

    def _place(self, nearest: np.ndarray, distances: np.ndarray) -> dict[str, float]:
        """The query's place on the style map (``zoo.stylemap.place``)."""
        x, y = place(self._layout, nearest, distances)
        return {"x": float(x), "y": float(y)}


def _joined(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)
