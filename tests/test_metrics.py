"""Tests for zoo.metrics: hand-computed counts, brute force, and pycocotools' COCOeval."""

from __future__ import annotations

import contextlib
import io
import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from zoo.data.shapes import ShapeParams, random_labels
from zoo.errors import InvalidLabelsError, InvalidParamsError
from zoo.metrics import (
    COCO_THRESHOLDS,
    MatchCounts,
    SegmentationScores,
    aggregate,
    average_precision,
    coco_average_precision,
    coco_map,
    match_counts,
    matched_pairs,
    score,
)

mask_utils = pytest.importorskip("pycocotools.mask")
# pycocotools 2.0.x calls np.array(copy=False) paths that numpy 2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
coco_module = pytest.importorskip("pycocotools.coco")
cocoeval_module = pytest.importorskip("pycocotools.cocoeval")


# --------------------------------------------------------------------------- helpers


def _squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 true squares; pred: one exact, one shifted by 1 px (IoU 12/20), one extra."""
    true = np.zeros((12, 20), dtype=np.int32)
    pred = np.zeros_like(true)
    true[1:5, 1:5] = 1
    true[1:5, 8:12] = 2
    pred[1:5, 1:5] = 5
    pred[1:5, 9:13] = 7
    pred[8:11, 15:18] = 9
    return true, pred


def _chain() -> tuple[np.ndarray, np.ndarray]:
    """A case where taking each true object's best partner loses a match.

    t1 = cols 0..9, t2 = cols 10..19; p2 = cols 0..2 (IoU with t1 0.3), p1 = cols 3..12
    (IoU with t1 70/130, with t2 30/170). At t = 0.15 the optimum pairs t1-p2, t2-p1.
    """
    true = np.zeros((10, 24), dtype=np.int32)
    pred = np.zeros_like(true)
    true[:, 0:10], true[:, 10:20] = 1, 2
    pred[:, 0:3], pred[:, 3:13] = 2, 1
    return true, pred


def _dense_iou(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    true_ids, pred_ids = np.unique(true)[1:], np.unique(pred)[1:]
    iou = np.zeros((true_ids.size, pred_ids.size))
    for i, t in enumerate(true_ids):
        for j, p in enumerate(pred_ids):
            a, b = true == t, pred == p
            iou[i, j] = (a & b).sum() / (a | b).sum()
    return iou


def _cellpose_tp(iou: np.ndarray, threshold: float) -> int:
    """cellpose.metrics._true_positive, verbatim logic on a dense IoU matrix."""
    n_min = min(iou.shape)
    if n_min == 0:
        return 0
    costs = -(iou >= threshold).astype(float) - iou / (2 * n_min)
    rows, cols = linear_sum_assignment(costs)
    return int((iou[rows, cols] >= threshold).sum())


def _brute_force_tp(iou: np.ndarray, threshold: float) -> int:
    """Largest one-to-one matching with IoU >= threshold, by trying every assignment."""
    n_true, n_pred = iou.shape
    best = 0
    if n_true > n_pred:
        iou, (n_true, n_pred) = iou.T, (n_pred, n_true)
    for assignment in itertools.permutations(range(n_pred), n_true):
        best = max(best, sum(iou[i, j] >= threshold for i, j in enumerate(assignment)))
    return best


def _pycocotools_ap(
    trues: list[np.ndarray], preds: list[np.ndarray], scores: list[np.ndarray], max_dets: int
) -> np.ndarray:
    """AP per IoU threshold from COCOeval (segm, area 'all'), on masks encoded as RLE."""
    images, gts, dts = [], [], []
    triples = zip(trues, preds, scores, strict=True)
    for image_id, (true, pred, image_scores) in enumerate(triples, start=1):
        images.append({"id": image_id, "height": true.shape[0], "width": true.shape[1]})
        for label in np.unique(true)[1:]:
            rle = mask_utils.encode(np.asfortranarray((true == label).astype(np.uint8)))
            gts.append(
                {
                    "id": len(gts) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": 0,
                }
            )
        for label, value in zip(np.unique(pred)[1:], image_scores, strict=True):
            rle = mask_utils.encode(np.asfortranarray((pred == label).astype(np.uint8)))
            dts.append(
                {"image_id": image_id, "category_id": 1, "segmentation": rle, "score": float(value)}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = coco_module.COCO()
        ground_truth.dataset = {
            "images": images,
            "annotations": gts,
            "categories": [{"id": 1, "name": "cell"}],
        }
        ground_truth.createIndex()
        detections = ground_truth.loadRes(dts) if dts else coco_module.COCO()
        evaluator = cocoeval_module.COCOeval(ground_truth, detections, "segm")
        evaluator.params.maxDets = [max_dets]
        evaluator.params.areaRng = [[0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, 0, 0, 0]  # (T, R)
    return precision.mean(axis=1)


def _perturbed(true: np.ndarray, seed: int) -> np.ndarray:
    """A plausible prediction: shifted, some cells dropped, others merged, some noise cells."""
    rng = np.random.default_rng(seed)
    pred = np.roll(true, (int(rng.integers(-2, 3)), int(rng.integers(-3, 4))), axis=(0, 1))
    ids = np.unique(pred)[1:]
    lookup = np.arange(pred.max() + 1)
    lookup[rng.choice(ids, size=ids.size // 8, replace=False)] = 0  # misses
    merge = rng.choice(ids, size=ids.size // 10, replace=False)
    lookup[merge] = lookup[np.maximum(merge - 1, 0)]  # merges with a neighbour id
    pred = lookup[pred]
    extra = random_labels(true.shape, ShapeParams(diameter=9, density=0.2), seed=seed + 100)
    pred = np.where((pred == 0) & (extra > 0), extra + pred.max(), pred)
    return np.unique(pred, return_inverse=True)[1].reshape(pred.shape)  # ids 1..N (0 stays)


# --------------------------------------------------------------------------- matched AP


def test_hand_computed_counts() -> None:
    true, pred = _squares()
    counts = match_counts(true, pred, thresholds=(0.5, 0.6, 0.75))
    np.testing.assert_array_equal(counts.tp, [2, 2, 1])
    np.testing.assert_array_equal(counts.fp, [1, 1, 2])
    np.testing.assert_array_equal(counts.fn, [0, 0, 1])
    assert (counts.n_true, counts.n_pred) == (2, 3)
    np.testing.assert_allclose(counts.average_precision, [2 / 3, 2 / 3, 1 / 4])
    np.testing.assert_allclose(counts.precision, [2 / 3, 2 / 3, 1 / 3])
    np.testing.assert_allclose(counts.recall, [1.0, 1.0, 0.5])
    np.testing.assert_allclose(counts.f1, [0.8, 0.8, 0.4])
    true_ids, pred_ids, iou = matched_pairs(true, pred, 0.5)
    np.testing.assert_array_equal(true_ids, [1, 2])
    np.testing.assert_array_equal(pred_ids, [5, 7])
    np.testing.assert_allclose(iou, [1.0, 0.6])


def test_optimal_matching_beats_best_partner() -> None:
    true, pred = _chain()
    counts = match_counts(true, pred, thresholds=(0.15, 0.25, 0.5))
    np.testing.assert_array_equal(counts.tp, [2, 1, 1])
    true_ids, pred_ids, iou = matched_pairs(true, pred, 0.15)
    np.testing.assert_array_equal(true_ids, [1, 2])
    np.testing.assert_array_equal(pred_ids, [2, 1])
    np.testing.assert_allclose(iou, [0.3, 30 / 170])


def test_identical_masks_score_one() -> None:
    true = random_labels((96, 96), seed=3)
    np.testing.assert_array_equal(average_precision(true, true, (0.5, 0.9, 1.0)), 1.0)
    assert coco_map(true, true) == pytest.approx(1.0)
    result = score(true, true)
    assert result.ap == (1.0, 1.0, 1.0) and result.afnr == 0.0


def test_shifted_masks_lose_precision_at_high_iou() -> None:
    true = random_labels((128, 128), ShapeParams(diameter=24), seed=4)
    pred = np.roll(true, 3, axis=1)
    ap = average_precision(true, pred, thresholds=np.linspace(0.1, 0.95, 18))
    assert ap[0] > 0.9 and ap[-1] == 0.0
    assert np.all(np.diff(ap) <= 1e-12)


@pytest.mark.parametrize(
    ("true_cells", "pred_cells", "ap", "precision", "recall", "afnr"),
    [
        (False, False, 1.0, 1.0, 1.0, 0.0),
        (False, True, 0.0, 0.0, 0.0, 0.0),
        (True, False, 0.0, 0.0, 0.0, 1.0),
    ],
)
def test_empty_images(
    true_cells: bool, pred_cells: bool, ap: float, precision: float, recall: float, afnr: float
) -> None:
    cells = random_labels((64, 64), seed=5)
    empty = np.zeros_like(cells)
    true, pred = (cells if true_cells else empty), (cells if pred_cells else empty)
    result = score(true, pred)
    assert result.ap == (ap,) * 3
    assert result.precision == (precision,) * 3 and result.recall == (recall,) * 3
    assert result.afnr == afnr
    assert result.coco_map == ap  # no true objects: 1.0 if nothing predicted, else 0.0


def test_label_ids_need_not_be_contiguous() -> None:
    true = random_labels((96, 96), seed=6)
    pred = np.roll(true, 2, axis=0)
    base = match_counts(true, pred, (0.3, 0.5, 0.7))
    sparse_ids = (true.astype(np.uint32) * 7919 + 3_000_000_000) * (true > 0)
    shuffled = (np.random.default_rng(0).permutation(pred.max() + 1) + 1)[pred] * 11
    shuffled[pred == 0] = 0
    other = match_counts(sparse_ids, shuffled.astype(np.int64), (0.3, 0.5, 0.7))
    np.testing.assert_array_equal(base.tp, other.tp)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_small_inputs(seed: int) -> None:
    params = ShapeParams(diameter=10, density=0.6)
    true = random_labels((24, 24), params, seed=seed)
    pred = random_labels((24, 24), params, seed=seed + 50)  # unrelated: many partial overlaps
    iou = _dense_iou(true, pred)
    if min(iou.shape) > 7:
        pytest.skip("too many objects to enumerate")
    for threshold in (0.1, 0.3, 0.5):
        tp = match_counts(true, pred, (threshold,)).tp[0]
        assert tp == _brute_force_tp(iou, threshold) == _cellpose_tp(iou, threshold)


@pytest.mark.parametrize("seed", range(4))
def test_matches_cellpose_dense_hungarian(seed: int) -> None:
    true = random_labels((80, 80), ShapeParams(diameter=14), seed=seed)
    pred = _perturbed(true, seed)
    iou = _dense_iou(true, pred)
    thresholds = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 0.9)
    counts = match_counts(true, pred, thresholds)
    np.testing.assert_array_equal(counts.tp, [_cellpose_tp(iou, t) for t in thresholds])


def test_aggregate_pools_counts_like_one_wide_image() -> None:
    trues = [random_labels((64, 64), seed=s) for s in (7, 8)]
    preds = [_perturbed(t, s) for t, s in zip(trues, (7, 8), strict=True)]
    pooled = aggregate(match_counts(t, p) for t, p in zip(trues, preds, strict=True))
    wide_true = np.hstack([trues[0], np.where(trues[1] > 0, trues[1] + trues[0].max(), 0)])
    wide_pred = np.hstack([preds[0], np.where(preds[1] > 0, preds[1] + preds[0].max(), 0)])
    wide = match_counts(wide_true, wide_pred)
    for field in ("tp", "fp", "fn"):
        np.testing.assert_array_equal(getattr(pooled, field), getattr(wide, field))
    dataset = score(trues, preds)
    assert dataset.n_images == 2 and dataset.ap == tuple(wide.average_precision.tolist())


def test_large_image_is_fast_and_exact() -> None:
    """20,000 8x8 blocks shifted by 2 px: IoU 48/80 with their own, 16/112 with the next."""
    blocks = np.arange(160 * 125).reshape(160, 125) + 1
    true = np.zeros((1280, 1010), dtype=np.int32)
    pred = np.zeros_like(true)
    true[:, :1000] = np.kron(blocks, np.ones((8, 8), dtype=np.int32))
    pred[:, 2:1002] = true[:, :1000]
    counts = match_counts(true, pred, (0.1, 0.5, 0.6, 0.61))
    np.testing.assert_array_equal(counts.tp, [20_000, 20_000, 20_000, 0])


def test_score_report_fields() -> None:
    true, pred = _squares()
    result = score(true, pred, thresholds=(0.5, 0.75))
    assert isinstance(result, SegmentationScores)
    assert result.thresholds == (0.5, 0.75) and (result.n_true, result.n_pred) == (2, 3)
    coco = match_counts(true, pred, COCO_THRESHOLDS)
    assert result.afnr == pytest.approx(float(np.mean(coco.fn / 2)))
    report = result.as_dict()
    assert report["ap"] == [pytest.approx(2 / 3), 0.25] and report["n_images"] == 1


def test_invalid_inputs_raise() -> None:
    true, pred = _squares()
    with pytest.raises(InvalidLabelsError, match=r"\(12, 20\)"):
        match_counts(true, pred[:, :10])
    with pytest.raises(InvalidLabelsError, match="float"):
        match_counts(true.astype(float), pred)
    with pytest.raises(InvalidLabelsError, match="-3"):
        match_counts(true - 3, pred)
    with pytest.raises(InvalidParamsError, match="1.5"):
        match_counts(true, pred, thresholds=(0.5, 1.5))
    with pytest.raises(InvalidLabelsError):
        score(true, [pred])
    with pytest.raises(InvalidParamsError, match="3 predicted"):
        coco_map(true, pred, scores=[0.1, 0.2])
    with pytest.raises(InvalidParamsError, match="thresholds"):
        match_counts(true, pred, (0.5,)) + match_counts(true, pred, (0.75,))
    assert isinstance(match_counts(true, pred), MatchCounts)


# --------------------------------------------------------------------------- COCO


@pytest.mark.parametrize("seed", range(4))
def test_coco_map_matches_pycocotools_without_scores(seed: int) -> None:
    true = random_labels((96, 96), ShapeParams(diameter=16), seed=seed)
    pred = _perturbed(true, seed)
    expected = _pycocotools_ap([true], [pred], [np.ones(pred.max())], max_dets=10_000)
    np.testing.assert_allclose(coco_average_precision(true, pred), expected, atol=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_coco_map_matches_pycocotools_with_scores_on_a_dataset(ties: bool) -> None:
    rng = np.random.default_rng(11)
    trues = [random_labels((80, 96), ShapeParams(diameter=14), seed=s) for s in range(3)]
    preds = [_perturbed(t, s + 20) for s, t in enumerate(trues)]
    scores = [rng.random(p.max()) for p in preds]
    if ties:  # equal scores within and across images: ranked by label id, then image order
        scores = [np.round(s, 1) for s in scores]
    expected = _pycocotools_ap(trues, preds, scores, max_dets=10_000)
    np.testing.assert_allclose(coco_average_precision(trues, preds, scores), expected, atol=1e-12)
    assert coco_map(trues, preds, scores) == pytest.approx(expected.mean(), abs=1e-12)


def test_coco_max_dets_matches_pycocotools() -> None:
    true = random_labels((96, 96), ShapeParams(diameter=16), seed=12)
    pred = _perturbed(true, 12)
    scores = np.random.default_rng(12).random(pred.max())
    expected = _pycocotools_ap([true], [pred], [scores], max_dets=7)
    np.testing.assert_allclose(
        coco_average_precision(true, pred, scores, max_dets=7), expected, atol=1e-12
    )


def _exact_half_ties() -> tuple[np.ndarray, np.ndarray]:
    """IoU exactly 0.5 with two partners, so COCO's greedy rule (not the fast path) decides.

    t1 (4 px) meets p1 and p2 (2 px each) at IoU 0.5; p3 (4 px) meets t2 and t3 (2 px
    each) at IoU 0.5; t4 = p4 match exactly.
    """
    true = np.zeros((3, 24), dtype=np.int32)
    pred = np.zeros_like(true)
    true[1, 0:4], true[1, 8:10], true[1, 10:12], true[1, 16:20] = 1, 2, 3, 4
    pred[1, 0:2], pred[1, 2:4], pred[1, 8:12], pred[1, 16:20] = 1, 2, 3, 4
    return true, pred


@pytest.mark.parametrize("scores", [[0.9, 0.8, 0.7, 0.6], [0.2, 0.8, 0.5, 0.5], [1, 1, 1, 1]])
def test_coco_greedy_tie_rule_matches_pycocotools(scores: list[float]) -> None:
    true, pred = _exact_half_ties()
    expected = _pycocotools_ap([true], [pred], [np.array(scores)], max_dets=100)
    np.testing.assert_allclose(coco_average_precision(true, pred, scores), expected, atol=1e-12)
    assert match_counts(true, pred, (0.5,)).tp[0] == 3  # the optimal matching agrees here
