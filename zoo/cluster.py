"""The style bank: style vectors of reference images, clustered into segmentation styles.

How it works (Cellpose 2.0, "Style clustering and classification"): every reference
image gives one L2-normalised style vector; a k-nearest-neighbour graph over them is
partitioned with the Leiden algorithm (``RBConfigurationVertexPartition``); clusters
are numbered by size and named after the most common source style of their members.
At routing time (``zoo.router``) a new style joins the cluster that most of its 5
nearest reference vectors belong to.

One safetensors file holds a bank:

- tensors ``vectors (N, S)`` float32, ``labels (N,)`` int64, ``centroids (K, S)`` float32;
- metadata ``cellzoo``: JSON with the cluster names, per-vector sources, the
  cluster → specialist map, the OOD threshold, ``k`` and the ``ClusterParams`` used;
- optionally the calibrated OOD check (``zoo.ood``: tensors ``ood.*``, metadata ``ood``)
  and the validation figures that chose each cluster's model (metadata ``selection``).

Never pickles. ``igraph``, ``leidenalg`` and scikit-learn are imported only when
clustering, so loading a bank for routing needs numpy and safetensors alone.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from zoo.errors import InvalidParamsError, ZooError
from zoo.ood import OODModel

FORMAT_VERSION = 1
_UNIT_TOLERANCE = 1e-3
_ROW_CHUNK = 1024
_AUTO_FRACTION = 0.05
_AUTO_RANGE = (10, 200)


@dataclass(frozen=True)
class ClusterParams:
    """How the style bank is clustered.

    Leiden on a kNN graph finds finer clusters as the bank grows when the neighbour
    count is fixed, so by default the count scales with the bank: 5% of N, clipped
    to 10..200 (and to N - 1). That is Cellpose 2.0's own ratio: 100 neighbours on
    ~1,700 images (resolution 0.45, 9 clusters) and 50 on ~1,000 nuclei images
    (resolution 0.25, 6 clusters). A neighbourhood must stay smaller than the
    smallest style worth its own cluster (else that style merges into a neighbour),
    and 5% keeps styles down to ~5% of the bank apart (smaller ones merge; pass
    ``n_neighbors`` to resolve them). Resolution 0.25 (Cellpose's nuclei setting,
    coarse) suits our ~6-7 styles: on synthetic banks of 300-3,000 unit vectors
    (dim 128) holding 7 styles of unequal size, each with internal sub-structure, it
    gave 7-9 clusters at every size (adjusted Rand 0.87-1.0), where 0.45 gave 8-9;
    with a fixed 30 neighbours (resolution 0.45) the count drifted from 6 clusters at
    N=300 to 13 at N=3,000. Clean blobs came out exact with 3-5% neighbours at
    every resolution tried (0.25-1.0).

    ``whiten`` clusters in a different space: the styles' top principal components,
    each scaled to unit variance, then L2-normalised. It helps when what tells
    segmentation styles apart lies in low-variance directions while a few
    high-variance directions carry nuisance (cell density, brightness). On the
    default zoo's bank (288 styles, 6 sources) plain Leiden at any of 27 settings
    tried reached adjusted Rand 0.68-0.78 against the source styles, mixing cyto
    with nuclei and phase with brightfield; whitened to 20 components, with 20
    neighbours at resolution 1.0, it reached 0.93 at all of 5 Leiden seeds. The
    gain is fragile: nearby settings gave 0.70-0.92, and whitening hurts when
    fewer components carry signal than are kept (noise is scaled up with them),
    so it is off by default and chosen per bank (``zoo.build`` sets it).

    Attributes:
        n_neighbors: neighbours per vector in the kNN graph; None = 5% of N (10..200).
        resolution: Leiden resolution; higher gives more, smaller clusters.
        seed: Leiden's random seed; the same seed gives the same clusters.
        whiten: cluster on this many whitened principal components (None: on the
            L2-normalised styles themselves). Routing always uses the styles.
    """

    n_neighbors: int | None = None
    resolution: float = 0.25
    seed: int = 0
    whiten: int | None = None

    def __post_init__(self) -> None:
        if self.n_neighbors is not None and self.n_neighbors < 1:
            raise InvalidParamsError(f"n_neighbors must be >= 1 or None, got {self.n_neighbors}")
        if not self.resolution > 0:
            raise InvalidParamsError(f"resolution must be positive, got {self.resolution}")
        if self.whiten is not None and self.whiten < 1:
            raise InvalidParamsError(f"whiten must be >= 1 or None, got {self.whiten}")

    def neighbors_for(self, n: int) -> int:
        """Neighbours per vector for a bank of ``n`` vectors (always <= n - 1)."""
        wanted = self.n_neighbors
        if wanted is None:
            wanted = int(np.clip(round(_AUTO_FRACTION * n), *_AUTO_RANGE))
        return max(1, min(wanted, n - 1))


def normalize_styles(styles: np.ndarray) -> np.ndarray:
    """L2-normalise each row of ``(N, S)`` styles to float32; zero or non-finite rows raise."""
    styles = np.asarray(styles, dtype=np.float64)
    if styles.ndim != 2 or styles.shape[1] == 0:
        raise InvalidParamsError(f"styles must be shaped (N, S) with S > 0, got {styles.shape}")
    if not np.all(np.isfinite(styles)):
        raise InvalidParamsError("styles contain NaN or infinite values")
    norms = np.linalg.norm(styles, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise InvalidParamsError(f"styles at rows {zero[:5].tolist()} are zero vectors")
    return (styles / norms).astype(np.float32)


def whitened(vectors: np.ndarray, components: int) -> np.ndarray:
    """The top ``components`` principal components of ``vectors``, each scaled to unit
    variance, rows then L2-normalised (float32; a row at the mean stays zero).
    Components with no variance are dropped."""
    centred = np.asarray(vectors, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    keep = min(components, int(np.sum(singular > singular[0] * 1e-6)) if singular.size else 0)
    if keep < 1:
        raise InvalidParamsError("styles have no variance to whiten: all vectors are equal")
    projected = centred @ axes[:keep].T / singular[:keep]
    norms = np.linalg.norm(projected, axis=1, keepdims=True)
    return (projected / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def cluster_styles(styles: np.ndarray, params: ClusterParams | None = None) -> np.ndarray:
    """Leiden clusters of a kNN graph over style vectors.

    The graph links each vector to its ``n_neighbors`` nearest others (euclidean on
    L2-normalised vectors, which ranks as cosine; on whitened components when
    ``params.whiten`` is set); an edge found from both ends gets weight 2, else 1.

    Args:
        styles: ``(N, S)`` style vectors, N >= 2 (normalised here).
        params: clustering parameters; defaults to ``ClusterParams()``.

    Returns:
        ``(N,)`` int64 labels 0..K-1; cluster 0 is the largest (ties: the cluster
        whose first member comes first). Deterministic for ``params.seed``.
    """
    import igraph
    import leidenalg
    from sklearn.neighbors import NearestNeighbors

    params = params or ClusterParams()
    vectors = normalize_styles(styles)
    n = len(vectors)
    if n < 2:
        raise InvalidParamsError(f"clustering needs at least 2 styles, got {n}")
    k = params.neighbors_for(n)
    if params.whiten is not None:
        vectors = whitened(vectors, params.whiten)
    neighbors = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(vectors)
    indices = neighbors.kneighbors(return_distance=False)  # excludes each point itself
    edges = np.stack([np.repeat(np.arange(n), k), indices.ravel()], axis=1)
    graph = igraph.Graph(n=n, edges=edges.tolist(), directed=False)
    graph.es["weight"] = 1.0
    graph.simplify(multiple=True, loops=True, combine_edges="sum")
    partition = leidenalg.find_partition(
        graph,
        leidenalg.RBConfigurationVertexPartition,
        weights="weight",
        resolution_parameter=params.resolution,
        seed=params.seed,
        n_iterations=-1,
    )
    return _renumber_by_size(np.asarray(partition.membership, dtype=np.int64))


def _renumber_by_size(labels: np.ndarray) -> np.ndarray:
    ids, first, sizes = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -sizes))
    mapping = np.empty(ids.max() + 1, dtype=np.int64)
    mapping[ids[order]] = np.arange(len(ids))
    return mapping[labels]


def name_clusters(labels: np.ndarray, sources: Sequence[str]) -> list[str]:
    """Name each cluster after the most common non-empty source among its members.

    Ties go to the alphabetically first source; a cluster whose sources are all empty
    is named ``"cluster"``. Repeated names get suffixes in cluster order (cluster 0
    first): ``"phase"``, ``"phase-2"``, ``"phase-3"``.

    Args:
        labels: ``(N,)`` int cluster ids 0..K-1.
        sources: N source style names (``""`` where unknown).

    Returns:
        K unique names, one per cluster id.
    """
    labels = np.asarray(labels)
    if len(sources) != len(labels):
        raise InvalidParamsError(f"got {len(sources)} sources for {len(labels)} labels")
    names: list[str] = []
    for cluster in range(int(labels.max()) + 1 if labels.size else 0):
        votes = Counter(sources[i] for i in np.flatnonzero(labels == cluster) if sources[i])
        base = min(votes, key=lambda s: (-votes[s], s)) if votes else "cluster"
        name, suffix = base, 2
        while name in names:
            name, suffix = f"{base}-{suffix}", suffix + 1
        names.append(name)
    return names


def nearest_other_distances(vectors: np.ndarray) -> np.ndarray:
    """Each unit vector's euclidean distance to its nearest OTHER vector.

    Args:
        vectors: ``(N, S)`` L2-normalised, N >= 2.

    Returns:
        ``(N,)`` float64 leave-one-out nearest-neighbour distances.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    best = np.empty(len(vectors))
    for start in range(0, len(vectors), _ROW_CHUNK):
        rows = vectors[start : start + _ROW_CHUNK]
        sq = ((rows**2).sum(1)[:, None] + (vectors**2).sum(1)[None] - 2 * rows @ vectors.T)
        sq[np.arange(len(rows)), np.arange(start, start + len(rows))] = np.inf
        best[start : start + len(rows)] = np.sqrt(np.maximum(sq.min(axis=1), 0.0))
    return best


def centroids_of(vectors: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """L2-normalised mean vector of each cluster: ``(K, S)`` float32."""
    sums = np.zeros((n_clusters, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, vectors.astype(np.float64))
    return normalize_styles(sums)


@dataclass(frozen=True, eq=False)
class StyleBank:
    """Reference style vectors with their clusters: what the router searches.

    Attributes:
        vectors: ``(N, S)`` float32 L2-normalised reference styles, N >= 2.
        labels: ``(N,)`` int64 cluster ids 0..K-1, every cluster non-empty.
        names: K unique cluster names.
        centroids: ``(K, S)`` float32 L2-normalised mean style of each cluster.
        sources: N source style names of the vectors (``""`` where unknown).
        specialists: cluster id → specialist model name; clusters missing here route
            to the generalist.
        ood_threshold: a style farther than this (euclidean) from every reference
            vector is out of distribution; ``build_style_bank`` sets it to the 99th
            percentile of the bank's leave-one-out nearest-neighbour distances.
        k: neighbours that vote when routing.
        params: the clustering parameters used, or None for a hand-made bank.
        refs: N reference ids, unique (e.g. the image file a style came from); default
            ``<source or "ref">-<index>``. ``zoo route --json`` and the web page name the
            nearest references by these.
        thumbnails: ``(N, T, T, 3)`` uint8 small pictures of the references, or None.
        map_xy: ``(N, 2)`` float32 positions of the references on the style map (a 2-D
            layout made when the bank was built), or None.
        embedding: how the reference styles were computed (the embedding model's name
            and the embedding's settings); queries must be embedded the same way.
        ood: the calibrated out-of-distribution check (``zoo.ood``), or None: then a style
            farther than ``ood_threshold`` from every reference is out of distribution.
        selection: cluster id → the validation figures that chose its model: ``images``
            (validation images routed there), ``at`` (IoU thresholds), ``generalist`` and
            ``specialist`` (pooled AP at those thresholds) and ``serves`` (whether the
            specialist serves); empty for a bank built without validation.
    """

    vectors: np.ndarray
    labels: np.ndarray
    names: list[str]
    centroids: np.ndarray
    sources: list[str]
    specialists: dict[int, str] = field(default_factory=dict)
    ood_threshold: float = 0.0
    k: int = 5
    params: ClusterParams | None = None
    refs: list[str] = field(default_factory=list)
    thumbnails: np.ndarray | None = None
    map_xy: np.ndarray | None = None
    embedding: dict[str, Any] = field(default_factory=dict)
    ood: OODModel | None = None
    selection: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vectors", np.ascontiguousarray(self.vectors, np.float32))
        object.__setattr__(self, "labels", np.ascontiguousarray(self.labels, np.int64))
        object.__setattr__(self, "centroids", np.ascontiguousarray(self.centroids, np.float32))
        object.__setattr__(self, "names", [str(n) for n in self.names])
        object.__setattr__(self, "sources", [str(s) for s in self.sources])
        specialists = {int(c): str(m) for c, m in self.specialists.items()}
        object.__setattr__(self, "specialists", specialists)
        object.__setattr__(self, "ood_threshold", float(self.ood_threshold))
        refs = [str(r) for r in self.refs] or [
            f"{source or 'ref'}-{index:04d}" for index, source in enumerate(self.sources)]
        object.__setattr__(self, "refs", refs)
        if self.thumbnails is not None:
            object.__setattr__(self, "thumbnails", np.ascontiguousarray(self.thumbnails, np.uint8))
        if self.map_xy is not None:
            object.__setattr__(self, "map_xy", np.ascontiguousarray(self.map_xy, np.float32))
        object.__setattr__(self, "embedding", dict(self.embedding))
        object.__setattr__(self, "selection",
                           {int(c): dict(v) for c, v in self.selection.items()})
        _check_arrays(self.vectors, self.labels, self.centroids)
        _check_metadata(self)

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)

    @property
    def style_dim(self) -> int:
        return self.vectors.shape[1]

    def with_specialists(self, specialists: Mapping[int, str]) -> StyleBank:
        """A copy whose cluster → specialist map is ``specialists``."""
        return replace(self, specialists=dict(specialists))

    def save(self, path: str | Path) -> Path:
        """Write the bank to one safetensors file."""
        path = Path(path)
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "style_bank",
            "names": self.names,
            "sources": self.sources,
            "specialists": {str(c): m for c, m in sorted(self.specialists.items())},
            "ood_threshold": self.ood_threshold,
            "k": self.k,
            "params": asdict(self.params) if self.params is not None else None,
            "refs": self.refs,
            "embedding": self.embedding,
            "ood": self.ood.meta() if self.ood is not None else None,
            "selection": {str(c): v for c, v in sorted(self.selection.items())},
        }
        tensors = {"vectors": self.vectors, "labels": self.labels, "centroids": self.centroids}
        if self.ood is not None:
            tensors.update(self.ood.tensors())
        if self.thumbnails is not None:
            tensors["thumbnails"] = self.thumbnails
        if self.map_xy is not None:
            tensors["map_xy"] = self.map_xy
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={"cellzoo": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> StyleBank:
        """Read a bank written by ``save``; foreign or inconsistent files raise ``ZooError``."""
        path = Path(path)
        try:
            with safe_open(str(path), framework="numpy") as handle:
                raw = (handle.metadata() or {}).get("cellzoo")
            tensors = load_file(str(path))
        except (OSError, SafetensorError) as error:
            raise ZooError(f"{path}: not a readable safetensors file ({error})") from error
        meta = _parse_meta(path, raw)
        missing = {"vectors", "labels", "centroids"} - set(tensors)
        if missing:
            raise ZooError(f"{path}: style bank lacks tensors {sorted(missing)}")
        try:
            return cls(
                vectors=tensors["vectors"],
                labels=tensors["labels"],
                names=meta["names"],
                centroids=tensors["centroids"],
                sources=meta["sources"],
                specialists={int(c): m for c, m in meta["specialists"].items()},
                ood_threshold=meta["ood_threshold"],
                k=meta["k"],
                params=ClusterParams(**meta["params"]) if meta["params"] is not None else None,
                refs=meta.get("refs", []),
                thumbnails=tensors.get("thumbnails"),
                map_xy=tensors.get("map_xy"),
                embedding=meta.get("embedding", {}),
                ood=(OODModel.from_stored(meta["ood"], tensors)
                     if meta.get("ood") is not None else None),
                selection={int(c): v for c, v in (meta.get("selection") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ZooError(f"{path}: inconsistent style bank: {error}") from error


def _parse_meta(path: Path, raw: str | None) -> dict:
    if raw is None:
        raise ZooError(f"{path}: safetensors file has no cellzoo metadata")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ZooError(f"{path}: cellzoo metadata is not valid JSON ({error})") from error
    if not isinstance(meta, dict) or meta.get("kind") != "style_bank":
        kind = meta.get("kind") if isinstance(meta, dict) else None
        raise ZooError(f"{path}: not a style bank (kind {kind!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ZooError(f"{path}: format version {meta['format_version']} is newer than supported")
    keys = {"names", "sources", "specialists", "ood_threshold", "k", "params"}
    if keys - set(meta):
        raise ZooError(f"{path}: style bank metadata lacks {sorted(keys - set(meta))}")
    return meta


def _check_arrays(vectors: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> None:
    if vectors.ndim != 2 or len(vectors) < 2 or vectors.shape[1] == 0:
        raise InvalidParamsError(f"vectors must be (N, S) with N >= 2, got {vectors.shape}")
    if labels.shape != (len(vectors),):
        raise InvalidParamsError(f"labels shape {labels.shape} != ({len(vectors)},)")
    if centroids.ndim != 2 or centroids.shape[1] != vectors.shape[1] or len(centroids) == 0:
        raise InvalidParamsError(
            f"centroids shape {centroids.shape} does not match (K, {vectors.shape[1]})"
        )
    for name, array in (("vectors", vectors), ("centroids", centroids)):
        if not np.all(np.isfinite(array)):
            raise InvalidParamsError(f"{name} contain NaN or infinite values")
        worst = float(np.abs(np.linalg.norm(array, axis=1) - 1).max())
        if worst > _UNIT_TOLERANCE:
            raise InvalidParamsError(
                f"{name} must be L2-normalised; a norm is off by {worst:.3g}"
            )
    present = np.unique(labels)
    if not np.array_equal(present, np.arange(len(centroids))):
        raise InvalidParamsError(
            f"labels must use every cluster id 0..{len(centroids) - 1}, got {present[:20].tolist()}"
        )


def _check_metadata(bank: StyleBank) -> None:
    k_clusters, n = bank.n_clusters, len(bank.vectors)
    if len(bank.names) != k_clusters or len(set(bank.names)) != k_clusters:
        raise InvalidParamsError(f"need {k_clusters} unique cluster names, got {bank.names}")
    if len(bank.sources) != n:
        raise InvalidParamsError(f"got {len(bank.sources)} sources for {n} vectors")
    if len(bank.refs) != n or len(set(bank.refs)) != n:
        raise InvalidParamsError(f"need {n} unique reference ids, got {len(set(bank.refs))}")
    if bank.thumbnails is not None and (
        bank.thumbnails.ndim != 4 or len(bank.thumbnails) != n or bank.thumbnails.shape[3] != 3
    ):
        raise InvalidParamsError(f"thumbnails must be ({n}, T, T, 3), got {bank.thumbnails.shape}")
    if bank.map_xy is not None and (
        bank.map_xy.shape != (n, 2) or not np.all(np.isfinite(bank.map_xy))
    ):
        raise InvalidParamsError(f"map_xy must be ({n}, 2) and finite, got {bank.map_xy.shape}")
    if bank.ood is not None and bank.ood.dim != bank.style_dim:
        raise InvalidParamsError(
            f"the OOD check is for styles of dim {bank.ood.dim}, the bank's are {bank.style_dim}")
    outside = sorted(set(bank.selection) - set(range(k_clusters)))
    if outside:
        raise InvalidParamsError(f"selection names clusters {outside} outside 0..{k_clusters - 1}")
    unknown = sorted(set(bank.specialists) - set(range(k_clusters)))
    if unknown:
        raise InvalidParamsError(f"specialists name clusters {unknown} outside 0..{k_clusters - 1}")
    if not 1 <= bank.k <= n:
        raise InvalidParamsError(f"k must be in 1..{n}, got {bank.k}")
    if not (np.isfinite(bank.ood_threshold) and bank.ood_threshold >= 0):
        raise InvalidParamsError(
            f"ood_threshold must be finite and >= 0, got {bank.ood_threshold}"
        )


def build_style_bank(
    styles: np.ndarray,
    sources: Sequence[str] | None = None,
    params: ClusterParams | None = None,
    *,
    k: int = 5,
) -> StyleBank:
    """Cluster reference styles and package them for routing.

    Args:
        styles: ``(N, S)`` style vectors of the reference images (normalised here).
        sources: N source style names (e.g. ``"phase"``), used to name clusters;
            None means all unknown.
        params: clustering parameters; defaults to ``ClusterParams()``.
        k: neighbours that vote when routing (Cellpose 2.0 used 5).

    Returns:
        The bank, with no specialists assigned yet (see ``StyleBank.with_specialists``).
    """
    params = params or ClusterParams()
    vectors = normalize_styles(styles)
    sources = [""] * len(vectors) if sources is None else [str(s) for s in sources]
    if len(sources) != len(vectors):
        raise InvalidParamsError(f"got {len(sources)} sources for {len(vectors)} styles")
    labels = cluster_styles(vectors, params)
    n_clusters = int(labels.max()) + 1
    return StyleBank(
        vectors=vectors,
        labels=labels,
        names=name_clusters(labels, sources),
        centroids=centroids_of(vectors, labels, n_clusters),
        sources=sources,
        ood_threshold=float(np.percentile(nearest_other_distances(vectors), 99)),
        k=k,
        params=params,
    )
