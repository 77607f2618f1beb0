"""zoo.ood: the whitened OOD score, its calibration, ROC, and its place in bank and router."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from zoo.cluster import StyleBank, build_style_bank, normalize_styles
from zoo.errors import InvalidParamsError, ZooError
from zoo.ood import (
    OODModel,
    OODParams,
    OODReport,
    calibrate_threshold,
    fit_ood,
    roc_curve,
)
from zoo.router import Router


def _blobs(rng: np.random.Generator, n: int = 40, dim: int = 16, spread: float = 0.05):
    """Three tight clusters of unit vectors around random directions, and their labels."""
    centres = normalize_styles(rng.normal(size=(3, dim)))
    labels = np.repeat(np.arange(3), n)
    vectors = normalize_styles(centres[labels] + spread * rng.normal(size=(3 * n, dim)))
    return vectors, labels, centres


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_in_distribution_scores_low_and_far_styles_high(rng, method):
    vectors, labels, centres = _blobs(rng)
    model = fit_ood(vectors, labels, OODParams(method=method, shrinkage=0.1, k=3))
    near = normalize_styles(centres + 0.05 * rng.normal(size=centres.shape))
    far = normalize_styles(rng.normal(size=(20, vectors.shape[1])))
    assert model.score(near).max() < model.score(far).min()
    assert math.isinf(model.threshold) and model.score(far).shape == (20,)


def test_mahalanobis_scores_a_cluster_mean_zero_and_whitening_counts_directions(rng):
    # one cluster stretched along axis 0: a step along it costs less than across it
    vectors = np.zeros((200, 4))
    vectors[:, 0] = rng.normal(scale=0.3, size=200)
    vectors[:, 1:] = rng.normal(scale=0.01, size=(200, 3))
    vectors[:, 3] += 1.0
    vectors = normalize_styles(vectors)
    model = fit_ood(vectors, np.zeros(200, int), OODParams(shrinkage=0.0))
    mean = vectors.mean(axis=0)
    assert model.score(mean[None])[0] == pytest.approx(0.0, abs=1e-4)
    along, across = mean.copy(), mean.copy()
    along[0] += 0.1
    across[1] += 0.1
    assert model.score(across[None])[0] > 5 * model.score(along[None])[0]
    # full shrinkage is plain euclidean distance, rescaled: both steps cost the same
    flat = fit_ood(vectors, np.zeros(200, int), OODParams(shrinkage=1.0))
    assert flat.score(along[None])[0] == pytest.approx(flat.score(across[None])[0], rel=1e-6)


def test_knn_scores_the_kth_neighbour(rng):
    vectors, labels, _ = _blobs(rng, n=10)
    first = fit_ood(vectors, labels, OODParams(method="knn", k=1, shrinkage=1.0))
    third = fit_ood(vectors, labels, OODParams(method="knn", k=3, shrinkage=1.0))
    query = vectors[:5]
    assert np.allclose(first.score(query), 0.0, atol=1e-4)  # each is its own nearest
    assert np.all(third.score(query) > first.score(query))


def test_logistic_learns_where_negatives_lie_and_round_trips(rng, tmp_path):
    # the negatives lie in one direction away from the clusters, as far as a held-out style
    # on the other side: distance alone cannot tell them apart, the learned check can
    vectors, labels, centres = _blobs(rng)
    dim = vectors.shape[1]
    away = normalize_styles(rng.normal(size=(1, dim)))[0]
    def off(direction, n):
        base = centres[rng.integers(0, 3, n)]
        return normalize_styles(base + 0.6 * direction + 0.05 * rng.normal(size=(n, dim)))
    negatives = off(away, 60)
    held_out_negatives, mirrored = off(away, 20), off(-away, 20)
    params = OODParams(method="logistic", regularisation=1.0)
    model = fit_ood(vectors, labels, params, negatives=negatives)
    assert model.method == "logistic" and model.coef.shape == (dim + 1,)
    inliers = model.score(normalize_styles(centres + 0.05 * rng.normal(size=centres.shape)))
    assert inliers.max() < model.score(held_out_negatives).min()
    distance = fit_ood(vectors, labels, OODParams(method="mahalanobis"))
    # Mahalanobis scores both sides alike; the learned score ranks the negatives' side higher
    assert abs(np.median(distance.score(mirrored)) / np.median(distance.score(held_out_negatives))
               - 1) < 0.5
    assert np.median(model.score(held_out_negatives)) > np.median(model.score(mirrored))
    bank = build_style_bank(vectors, [str(x) for x in labels]).with_specialists({})
    bank = replace(bank, ood=model.with_threshold(0.0))
    loaded = StyleBank.load(bank.save(tmp_path / "bank.safetensors"))
    np.testing.assert_allclose(loaded.ood.score(negatives[:5]), model.score(negatives[:5]),
                               rtol=1e-5, atol=1e-5)
    assert loaded.ood.description == "log-odds of not being microscopy"
    with pytest.raises(InvalidParamsError, match="negatives"):
        fit_ood(vectors, labels, params)
    with pytest.raises(InvalidParamsError, match="coef"):
        OODModel("logistic", model.mean, model.whitener, model.points)


def test_threshold_flags_the_asked_share_of_negatives_but_caps_false_alarms():
    inliers = np.linspace(0, 1, 101)
    outliers = np.linspace(2, 3, 101)
    params = OODParams(rejection=0.95, max_false_alarms=0.02)
    threshold = calibrate_threshold(inliers, outliers, params)
    assert threshold == pytest.approx(np.quantile(outliers, 0.05))
    assert np.mean(outliers > threshold) >= 0.94 and np.all(inliers <= threshold)
    # overlapping scores: the false-alarm cap wins and lifts the threshold
    overlapping = np.linspace(0.5, 1.5, 101)
    lifted = calibrate_threshold(inliers, overlapping, params)
    assert lifted == pytest.approx(np.quantile(inliers, 0.98))
    with pytest.raises(InvalidParamsError, match="calibration"):
        calibrate_threshold(inliers, [], params)


def test_roc_and_auroc():
    separated = roc_curve([0.1, 0.2, 0.3], [0.5, 0.6])
    assert separated.auroc == 1.0
    assert separated.false_alarms[0] == 0 and separated.detections[-1] == 1
    assert np.all(np.diff(separated.false_alarms) >= 0) and np.all(np.diff(separated.detections) >= 0)
    assert roc_curve([0.5, 0.6], [0.1, 0.2]).auroc == 0.0
    assert roc_curve([1.0, 1.0], [1.0, 1.0]).auroc == 0.5  # ties count half


def test_report_summarises_each_split_and_kind():
    report = OODReport(1.0, OODParams().to_dict(), "a score")
    report.record("test", [0.2, 0.5, 1.5], [2.0, 0.5, 3.0, 4.0], ["photo", "photo", "text", "noise"])
    summary = report.summary("test")
    assert summary["in_distribution"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["flagged"] == 0.75
    assert summary["flagged_by_kind"] == {"noise": 1.0, "photo": 0.5, "text": 1.0}
    data = report.to_dict()
    assert data["threshold"] == 1.0 and data["test"]["roc"]["detections"][-1] == 1.0
    with pytest.raises(InvalidParamsError, match="kinds"):
        report.record("validation", [0.1], [2.0], [])


def test_bad_params_and_arrays_raise():
    with pytest.raises(InvalidParamsError, match="method"):
        OODParams(method="density")
    with pytest.raises(InvalidParamsError, match="shrinkage"):
        OODParams(shrinkage=1.5)
    with pytest.raises(InvalidParamsError, match="whitener"):
        OODModel("mahalanobis", np.zeros(4), np.eye(3), np.zeros((1, 4)))
    with pytest.raises(InvalidParamsError, match="threshold"):
        OODModel("mahalanobis", np.zeros(4), np.eye(4), np.zeros((1, 4)), threshold=-1.0)
    with pytest.raises(InvalidParamsError, match="shaped"):
        OODModel("mahalanobis", np.zeros(4), np.eye(4), np.zeros((1, 4))).score(np.zeros((2, 3)))


def _bank_with_ood(rng) -> StyleBank:
    vectors, labels, _ = _blobs(rng, dim=32)
    bank = build_style_bank(vectors, [f"s{label}" for label in labels])
    model = fit_ood(bank.vectors, bank.labels, OODParams())
    inside = model.score(bank.vectors)
    evidence = {"images": 7, "at": [0.5, 0.75, 0.9], "generalist": [0.8, 0.6, 0.2],
                "specialist": [0.9, 0.7, 0.3], "serves": True}
    return replace(bank, specialists={0: "cpnet.a"}, selection={0: evidence},
                   ood=model.with_threshold(float(inside.max()) * 1.5))


def test_bank_stores_and_validates_its_ood_check(rng, tmp_path):
    bank = _bank_with_ood(rng)
    loaded = StyleBank.load(bank.save(tmp_path / "bank.safetensors"))
    assert loaded.ood is not None and loaded.ood.method == bank.ood.method
    assert loaded.ood.threshold == bank.ood.threshold
    np.testing.assert_array_equal(loaded.ood.whitener, bank.ood.whitener)
    np.testing.assert_allclose(loaded.ood.score(bank.vectors[:4]), bank.ood.score(bank.vectors[:4]))
    assert loaded.selection == bank.selection
    with pytest.raises(InvalidParamsError, match="dim"):
        replace(bank, ood=OODModel("knn", np.zeros(8), np.eye(8), np.zeros((2, 8))))
    with pytest.raises(InvalidParamsError, match="selection"):
        replace(bank, selection={99: {}})
    # a file whose OOD metadata lacks its tensors is refused with the path in the message
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    path = tmp_path / "bank.safetensors"
    with safe_open(str(path), framework="numpy") as handle:
        meta = handle.metadata()
    tensors = {k: v for k, v in load_file(str(path)).items() if not k.startswith("ood.")}
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=meta)
    with pytest.raises(ZooError, match="broken.safetensors"):
        StyleBank.load(broken)


def test_router_applies_the_banks_ood_check_and_explains_it(rng):
    bank = _bank_with_ood(rng)
    router = Router(bank, generalist="cpnet.generalist")
    inside = router.route_style(bank.vectors[0])
    assert not inside.ood and inside.model == "cpnet.a"
    assert inside.ood_threshold == bank.ood.threshold
    assert inside.ood_score == pytest.approx(bank.ood.score(bank.vectors[:1])[0])
    assert f"{inside.ood_score:.3f} <= {bank.ood.threshold:.3f}" in inside.reason
    assert "beat the generalist" in inside.reason and "7 validation images" in inside.reason
    assert "\n" not in inside.reason
    far = router.route_style(normalize_styles(rng.normal(size=(1, 32)))[0])
    assert far.ood and far.fallback and far.model == "cpnet.generalist"
    assert far.reason.startswith("out of distribution:") and "> threshold" in far.reason
    other = router.route_style(bank.vectors[-1])  # a cluster without a specialist
    assert not other.ood and other.model == "cpnet.generalist" and "no specialist" in other.reason
