from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from safetensors.numpy import save_file
from scipy.spatial.distance import cdist
from sklearn.metrics import adjusted_rand_score

from zoo.cluster import (
    ClusterParams,
    StyleBank,
    build_style_bank,
    cluster_styles,
    name_clusters,
    whitened,
)
from zoo.errors import InvalidParamsError, ZooError

N_BLOBS, PER_BLOB, DIM = 6, 60, 32


def unit_blobs(
    rng: np.random.Generator, *, per_blob: int = PER_BLOB, spread: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs of unit vectors: (points, truth labels, centres)."""
    centres = rng.normal(size=(N_BLOBS, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(N_BLOBS), per_blob)
    points = centres[truth] + spread * rng.normal(size=(len(truth), DIM))
    return points / np.linalg.norm(points, axis=1, keepdims=True), truth, centres


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    points, truth, _ = unit_blobs(np.random.default_rng(0))
    return points, truth


@pytest.fixture(scope="module")
def bank(blobs) -> StyleBank:
    points, truth = blobs
    sources = [("phase", "fluo", "phase", "nuclei", "tissue", "fluo")[t] for t in truth]
    return build_style_bank(points, sources, ClusterParams(seed=3))


def test_leiden_recovers_separated_blobs(blobs):
    points, truth = blobs
    labels = cluster_styles(points, ClusterParams())
    assert labels.shape == truth.shape and labels.dtype == np.int64
    assert adjusted_rand_score(truth, labels) >= 0.95


def test_clusters_are_deterministic_per_seed_and_numbered_by_size(blobs):
    points, truth = blobs
    keep = np.concatenate([np.flatnonzero(truth == b)[: 20 + 8 * b] for b in range(N_BLOBS)])
    params = ClusterParams(n_neighbors=10, resolution=0.5, seed=7)
    first, second = cluster_styles(points[keep], params), cluster_styles(points[keep], params)
    np.testing.assert_array_equal(first, second)
    sizes = np.bincount(first)
    assert np.all(np.diff(sizes) <= 0), sizes


def test_default_neighbours_scale_with_the_bank():
    params = ClusterParams()
    assert [params.neighbors_for(n) for n in (5, 100, 1000, 10_000)] == [4, 10, 50, 200]
    assert ClusterParams(n_neighbors=30).neighbors_for(12) == 11
    with pytest.raises(InvalidParamsError, match="-1"):
        ClusterParams(n_neighbors=-1)


def test_names_follow_majority_source_with_suffixes():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    sources = ["phase", "phase", "fluo", "phase", "", "fluo", "nuclei", "nuclei", ""]
    assert name_clusters(labels, sources) == ["phase", "phase-2", "nuclei", "cluster"]
    # a tie goes to the alphabetically first source
    assert name_clusters(np.array([0, 0]), ["tissue", "fluo"]) == ["fluo"]
    with pytest.raises(InvalidParamsError, match="3 sources for 2 labels"):
        name_clusters(np.array([0, 0]), ["a", "b", "c"])


def test_bank_is_consistent(bank, blobs):
    points, truth = blobs
    assert bank.n_clusters == N_BLOBS and bank.style_dim == DIM
    assert sorted(bank.names) == ["fluo", "fluo-2", "nuclei", "phase", "phase-2", "tissue"]
    assert bank.vectors.dtype == np.float32 and bank.centroids.shape == (N_BLOBS, DIM)
    np.testing.assert_allclose(np.linalg.norm(bank.centroids, axis=1), 1, atol=1e-6)
    for cluster in range(bank.n_clusters):
        mean = points[bank.labels == cluster].mean(axis=0)
        np.testing.assert_allclose(bank.centroids[cluster], mean / np.linalg.norm(mean), atol=1e-6)


def test_ood_threshold_is_leave_one_out_99th_percentile(bank):
    distances = cdist(bank.vectors.astype(np.float64), bank.vectors.astype(np.float64))
    np.fill_diagonal(distances, np.inf)
    expected = np.percentile(distances.min(axis=1), 99)
    assert bank.ood_threshold == pytest.approx(expected, rel=1e-6)


def test_save_load_round_trip_is_exact(bank, tmp_path):
    bank = bank.with_specialists({0: "cpnet.phase", 2: "cpnet.nuclei"})
    loaded = StyleBank.load(bank.save(tmp_path / "bank.safetensors"))
    for name in ("vectors", "labels", "centroids"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(bank, name))
        assert getattr(loaded, name).dtype == getattr(bank, name).dtype
    assert loaded.names == bank.names and loaded.sources == bank.sources
    assert loaded.specialists == {0: "cpnet.phase", 2: "cpnet.nuclei"}
    assert loaded.ood_threshold == bank.ood_threshold and loaded.k == bank.k
    assert loaded.params == bank.params


def _write(path, tensors: dict, meta: dict | None) -> None:
    save_file(tensors, str(path), metadata=None if meta is None else {"cellzoo": json.dumps(meta)})


def _saved(bank: StyleBank, path) -> tuple[dict, dict]:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    bank.save(path)
    with safe_open(str(path), framework="numpy") as handle:
        meta = json.loads(handle.metadata()["cellzoo"])
    return load_file(str(path)), meta


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda t, m: m["names"].pop(), "unique cluster names"),
        (lambda t, m: t.update(labels=t["labels"][:-1]), "labels shape"),
        (lambda t, m: t.update(centroids=t["centroids"][:, :-1]), "centroids shape"),
        (lambda t, m: t.update(vectors=2 * t["vectors"]), "L2-normalised"),
        (lambda t, m: t.update(labels=np.minimum(t["labels"], 1)), "every cluster id"),
        (lambda t, m: m["sources"].append("x"), "sources for"),
        (lambda t, m: m.update(specialists={"99": "cpnet.x"}), "outside"),
        (lambda t, m: t.pop("centroids"), "lacks tensors"),
        (lambda t, m: m.pop("k"), "metadata lacks"),
        (lambda t, m: m.update(kind="model"), "not a style bank"),
    ],
)
def test_inconsistent_bank_file_raises(bank, tmp_path, corrupt, message):
    tensors, meta = _saved(bank, tmp_path / "good.safetensors")
    corrupt(tensors, meta)
    _write(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(ZooError, match=message) as info:
        StyleBank.load(tmp_path / "bad.safetensors")
    assert "bad.safetensors" in str(info.value)


def test_foreign_or_garbage_file_raises(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file")
    with pytest.raises(ZooError, match="not a readable safetensors"):
        StyleBank.load(garbage)
    bare = tmp_path / "bare.safetensors"
    _write(bare, {"vectors": np.zeros((2, 2), np.float32)}, None)
    with pytest.raises(ZooError, match="no cellzoo metadata"):
        StyleBank.load(bare)
    with pytest.raises(ZooError, match="not a readable"):
        StyleBank.load(tmp_path / "missing.safetensors")


def test_bad_styles_raise_naming_the_value():
    with pytest.raises(InvalidParamsError, match=r"\(3,\)"):
        cluster_styles(np.ones(3))
    with pytest.raises(InvalidParamsError, match=r"rows \[1\]"):
        build_style_bank(np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))


def test_whitening_finds_clusters_that_large_nuisance_directions_hide():
    """Styles whose clusters differ along quiet directions, while a few loud directions vary
    regardless of cluster: plain distances follow the loud ones, whitened ones do not."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 60)
    points = rng.normal(size=(4, 64))[labels] * 0.2 + rng.normal(size=(240, 64)) * 0.05
    points[:, :4] += rng.normal(size=(240, 4)) * 1.5  # loud and blind to the clusters
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    chosen = ClusterParams(n_neighbors=20, resolution=1.0, whiten=8)
    for seed in range(3):
        white = cluster_styles(points, replace(chosen, seed=seed))
        plain = cluster_styles(points, replace(chosen, whiten=None, seed=seed))
        assert adjusted_rand_score(labels, white) >= 0.9
        assert adjusted_rand_score(labels, plain) < 0.5


def test_whitened_keeps_the_top_components_as_unit_rows():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(200, 16)) * np.linspace(3.0, 0.1, 16)
    white = whitened(points, 5)
    assert white.shape == (200, 5) and white.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(white, axis=1), 1.0, atol=1e-5)
    with pytest.raises(InvalidParamsError, match="no variance"):
        whitened(np.ones((10, 4)), 3)
    with pytest.raises(InvalidParamsError, match="whiten"):
        ClusterParams(whiten=0)
