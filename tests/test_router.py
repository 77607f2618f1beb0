from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from zoo.cluster import ClusterParams, StyleBank, build_style_bank
from zoo.errors import InvalidParamsError
from zoo.router import Router, RouteResult

N_BLOBS, DIM, GENERALIST = 6, 32, "cpnet.generalist"


def unit_blobs(rng: np.random.Generator, centres: np.ndarray, per_blob: int):
    truth = np.repeat(np.arange(len(centres)), per_blob)
    points = centres[truth] + 0.05 * rng.normal(size=(len(truth), centres.shape[1]))
    return points / np.linalg.norm(points, axis=1, keepdims=True), truth


@pytest.fixture(scope="module")
def blob_world() -> tuple[StyleBank, np.ndarray, np.ndarray, np.ndarray]:
    """A bank of 6 blobs × 60, plus held-out points (and their blob) from the same blobs."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(N_BLOBS, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points, truth = unit_blobs(rng, centres, 60)
    held_out, held_truth = unit_blobs(rng, centres, 40)
    bank = build_style_bank(points, [f"style{t}" for t in truth], ClusterParams())
    return bank, truth, held_out, held_truth


def hand_bank(specialists: dict[int, str] | None = None, ood_threshold: float = 1.0) -> StyleBank:
    """7 unit vectors in 2-D: cluster 0 near angle 0, cluster 1 near angle 0.3 rad."""
    angles = np.array([0.0, 0.02, 0.04, 0.06, 0.30, 0.32, 0.34])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    centroids = np.array([[np.cos(0.03), np.sin(0.03)], [np.cos(0.32), np.sin(0.32)]])
    return StyleBank(
        vectors=vectors, labels=labels, names=["fluo", "phase"], centroids=centroids,
        sources=[""] * 7, specialists=specialists if specialists is not None else
        {0: "cpnet.fluo", 1: "cpnet.phase"}, ood_threshold=ood_threshold, k=5,
    )


def at(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def test_vote_routes_held_out_points_to_their_blob(blob_world):
    bank, truth, held_out, held_truth = blob_world
    # map each found cluster to the blob most of its members came from
    blob_of = {c: np.bincount(truth[bank.labels == c]).argmax() for c in range(bank.n_clusters)}
    specialists = {c: f"cpnet.style{blob_of[c]}" for c in range(bank.n_clusters)}
    router = Router(bank.with_specialists(specialists), generalist=GENERALIST)
    results = router.route_styles(held_out)
    hits = np.mean([blob_of[r.cluster] == t for r, t in zip(results, held_truth)])
    assert hits >= 0.95
    assert np.mean([r.model == f"cpnet.style{t}" for r, t in zip(results, held_truth)]) >= 0.9
    assert all(0.0 <= r.confidence <= 1.0 for r in results)


def test_confidence_is_the_vote_fraction():
    router = Router(hand_bank(), generalist=GENERALIST)
    # nearest five to angle 0.1: 0.06, 0.04, 0.02 (cluster 0) and 0.30, 0.0 → 4 vs 1
    result = router.route_style(at(0.1))
    assert (result.cluster, result.confidence) == (0, pytest.approx(4 / 5))
    assert result.model == "cpnet.fluo" and result.cluster_name == "fluo"
    # nearest five to angle 0.26: 0.30, 0.32, 0.34 (cluster 1), 0.06, 0.04 → 3 vs 2
    result = router.route_style(at(0.26))
    assert (result.cluster, result.confidence) == (1, pytest.approx(3 / 5))
    assert result.distance == pytest.approx(np.linalg.norm(at(0.26) - at(0.30)), abs=1e-7)
    assert not result.ood and not result.fallback and "cpnet.phase" in result.reason


def test_ties_go_to_the_closer_cluster_then_the_lowest_id():
    vectors = np.stack([at(a) for a in (0.0, 0.1, 0.5, 0.6)])
    bank = StyleBank(
        vectors=vectors, labels=np.array([0, 0, 1, 1]), names=["a", "b"],
        centroids=np.stack([at(0.05), at(0.55)]), sources=[""] * 4, ood_threshold=1.0, k=4,
    )
    router = Router(bank, generalist=GENERALIST)
    assert router.route_style(at(0.45)).cluster == 1  # 2 votes each, cluster 1 is closer
    assert router.route_style(at(0.15)).cluster == 0
    symmetric = StyleBank(
        vectors=np.stack([at(-0.1), at(0.1)]), labels=np.array([1, 0]), names=["a", "b"],
        centroids=np.stack([at(0.1), at(-0.1)]), sources=["", ""], ood_threshold=1.0, k=2,
    )
    assert Router(symmetric, generalist=GENERALIST).route_style(at(0.0)).cluster == 0


def test_far_style_is_ood_and_falls_back_to_the_generalist():
    router = Router(hand_bank(ood_threshold=0.05), generalist=GENERALIST)
    result = router.route_style(at(2.0))
    assert result.ood and result.fallback and result.model == GENERALIST
    assert result.distance > 0.05 and "out of distribution" in result.reason
    assert GENERALIST in result.reason
    near = router.route_style(at(0.01))
    assert not near.ood and near.model == "cpnet.fluo"


def test_cluster_without_specialist_uses_the_generalist():
    router = Router(hand_bank(specialists={0: "cpnet.fluo"}), generalist=GENERALIST)
    result = router.route_style(at(0.33))
    assert result.cluster == 1 and result.model == GENERALIST
    assert not result.ood and not result.fallback and "no specialist" in result.reason


def test_route_styles_equals_route_style_per_item(blob_world):
    bank, _, held_out, _ = blob_world
    router = Router(bank.with_specialists({0: "cpnet.a", 2: "cpnet.b"}), generalist=GENERALIST)
    far = np.zeros(DIM)
    far[0] = 1.0
    queries = np.vstack([held_out[::7], far, 3.0 * held_out[:2]])  # unnormalised rows too
    batched = router.route_styles(queries)
    assert batched == [router.route_style(q) for q in queries]


def test_route_result_to_dict_is_json_ready():
    result = Router(hand_bank(), generalist=GENERALIST).route_style(at(0.0))
    data = json.loads(json.dumps(result.to_dict()))
    assert {"model", "cluster", "confidence", "distance", "ood"} <= set(data)
    assert data == result.to_dict()
    assert isinstance(result, RouteResult)


def test_router_rejects_bad_styles():
    router = Router(hand_bank(), generalist=GENERALIST)
    with pytest.raises(InvalidParamsError, match=r"\(3,\)|\(1, 3\)"):
        router.route_style(np.ones(3))
    with pytest.raises(InvalidParamsError, match="zero"):
        router.route_style(np.zeros(2))
    with pytest.raises(InvalidParamsError, match="generalist"):
        Router(hand_bank(), generalist="")




def test_neighbours_are_the_nearest_references_and_the_map_place_is_between_them():
    layout = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [10, 10], [11, 10], [12, 10]], np.float32)
    bank = replace(hand_bank(), map_xy=layout, refs=[f"r{i}" for i in range(7)], k=2)
    result = Router(bank, generalist=GENERALIST).route_style(at(0.049))
    assert [n.ref for n in result.neighbours] == ["r2", "r3"]  # angles 0.04 and 0.06, nearest first
    assert result.neighbours[0].distance < result.neighbours[1].distance
    assert result.neighbours[0].distance == pytest.approx(result.distance)
    assert 2 < result.map["x"] < 2.5 and result.map["y"] == pytest.approx(0)  # nearer r2 than r3
    assert json.loads(json.dumps(result.to_dict()))["neighbours"][0]["ref"] == "r2"
    fallback = Router(hand_bank(), generalist=GENERALIST).route_style(at(0.05)).map  # PCA layout
    assert np.isfinite([fallback["x"], fallback["y"]]).all()
