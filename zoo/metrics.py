"""Instance-segmentation metrics: matched AP, precision/recall/F1, AFNR and COCO mAP.

Labels follow the cellzoo convention: 0 = background, 1..N = cells (ids need not be
contiguous). ``true`` is the ground truth, ``pred`` the prediction, same shape.

How it works:

1. **Overlap → IoU.** Both label images are flattened together into runs of identical
   ``(true id, pred id)`` pairs; summing run lengths per pair gives the sparse overlap
   matrix (only pairs that share pixels are stored, so 20,000 cells cost memory in
   proportion to the touching pairs, never 20k x 20k), and
   ``IoU = overlap / (area_true + area_pred - overlap)``.
2. **Matching (AP, precision, recall, F1, AFNR).** At threshold ``t``, pairs with
   ``IoU >= t`` are the edges of a bipartite graph. The one-to-one matching with the
   most edges (ties: largest IoU sum) gives TP; ``FP = n_pred - TP``,
   ``FN = n_true - TP``; ``AP = TP / (TP + FP + FN)`` as in the Cellpose papers. This TP
   equals cellpose's ``_true_positive`` (Hungarian on ``-(IoU >= t) - IoU / 2n``). When
   no object has two candidates (always the case for ``t > 0.5``) the edges are the
   matching; otherwise scipy's sparse Hungarian-type solver (LAPJVsp,
   ``min_weight_full_bipartite_matching``) runs on the graph augmented with dummy
   nodes, which always has a perfect matching.
3. **COCO mAP.** As pycocotools' ``COCOeval`` (segm, one category, area "all"): per
   image, detections in descending score order greedily take the unmatched ground
   truth of highest IoU ``>= t``; over the dataset, detections are ranked by score,
   precision is made monotone and read at 101 recall points; the mean over
   ``t = 0.50, 0.55, ..., 0.95`` is mAP. Unlike COCOeval's default of 100 detections
   per image, all detections count unless ``max_dets`` is given.

Empty images: when there are neither true nor predicted objects, AP, precision, recall
and F1 are 1.0 (a perfect, empty answer); any other zero denominator gives 0.0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from zoo.errors import InvalidLabelsError, InvalidParamsError
from zoo.io import check_labels, relabel_sequential, run_lengths

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.75, 0.9)
#: IoU thresholds 0.50:0.05:0.95, the same floats as pycocotools' ``iouThrs``.
COCO_THRESHOLDS: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
_COCO_RECALLS = np.linspace(0.0, 1.0, 101)

Labels = np.ndarray
LabelsOrList = np.ndarray | Sequence[np.ndarray]


@dataclass(frozen=True, eq=False)  # array fields: identity equality
class _Overlap:
    """Sparse IoU between the objects of one image pair (indices are 0-based)."""

    n_true: int
    n_pred: int
    true_index: np.ndarray  # (P,) int64
    pred_index: np.ndarray  # (P,) int64
    iou: np.ndarray  # (P,) float64


@dataclass(frozen=True, eq=False)  # array fields: identity equality
class MatchCounts:
    """Matched-object counts at each IoU threshold, for one image or summed over many.

    Attributes:
        thresholds: ``(T,)`` float64 IoU thresholds.
        tp: ``(T,)`` int64 true positives (matched pairs with IoU >= threshold).
        fp: ``(T,)`` int64 unmatched predictions.
        fn: ``(T,)`` int64 unmatched true objects.
        n_true: number of true objects.
        n_pred: number of predicted objects.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    n_true: int
    n_pred: int

    def __add__(self, other: MatchCounts) -> MatchCounts:
        if not np.array_equal(self.thresholds, other.thresholds):
            raise InvalidParamsError(
                f"cannot add counts at thresholds {self.thresholds} and {other.thresholds}"
            )
        return MatchCounts(
            self.thresholds,
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.n_true + other.n_true,
            self.n_pred + other.n_pred,
        )

    @property
    def average_precision(self) -> np.ndarray:
        """``(T,)`` float64 ``TP / (TP + FP + FN)``."""
        return self._ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def precision(self) -> np.ndarray:
        """``(T,)`` float64 ``TP / (TP + FP)``."""
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> np.ndarray:
        """``(T,)`` float64 ``TP / (TP + FN)``."""
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> np.ndarray:
        """``(T,)`` float64 ``2 TP / (2 TP + FP + FN)``."""
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def _ratio(self, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        empty = 1.0 if self.n_true == 0 and self.n_pred == 0 else 0.0
        safe = np.maximum(denominator, 1)
        return np.where(denominator > 0, numerator / safe, empty).astype(np.float64)


@dataclass(frozen=True)
class SegmentationScores:
    """Every metric of one image or one dataset, as plain numbers for tables and JSON.

    Attributes:
        thresholds: IoU thresholds of the per-threshold fields.
        ap: ``TP / (TP + FP + FN)`` per threshold (Cellpose's AP).
        precision: per threshold.
        recall: per threshold.
        f1: per threshold.
        coco_map: COCO mAP@[.50:.95] (101-point interpolated, all detections).
        afnr: average false-negative ratio over IoU 0.50:0.05:0.95 (seed paper 002).
        n_true: number of true objects.
        n_pred: number of predicted objects.
        n_images: number of images scored.
    """

    thresholds: tuple[float, ...]
    ap: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    coco_map: float
    afnr: float
    n_true: int
    n_pred: int
    n_images: int

    def as_dict(self) -> dict[str, float | int | list[float]]:
        """JSON-ready dict with one key per field (tuples become lists)."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        return {key: list(v) if isinstance(v, tuple) else v for key, v in values.items()}


# --------------------------------------------------------------------------- public API


def match_counts(
    true_labels: Labels, pred_labels: Labels, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> MatchCounts:
    """Count TP, FP and FN of one image at each IoU threshold (optimal one-to-one matching).

    Args:
        true_labels: integer ground-truth labels, any shape, 0 = background.
        pred_labels: integer predicted labels, same shape.
        thresholds: IoU thresholds in (0, 1]; a pair matches when IoU >= threshold.

    Returns:
        Counts at each threshold; add several with ``+`` or :func:`aggregate`.

    Raises:
        InvalidLabelsError: invalid labels or shapes that differ.
        InvalidParamsError: a threshold outside (0, 1].
    """
    return _counts(_overlap(true_labels, pred_labels), _check_thresholds(thresholds))


def aggregate(counts: Iterable[MatchCounts]) -> MatchCounts:
    """Sum counts over images, as cellpose does for a dataset's AP.

    Args:
        counts: counts of each image, all at the same thresholds (at least one).

    Returns:
        Summed counts; their ``average_precision`` is the pooled dataset AP.
    """
    counts = list(counts)
    if not counts:
        raise InvalidParamsError("aggregate needs at least one MatchCounts, got none")
    total = counts[0]
    for item in counts[1:]:
        total = total + item
    return total


def average_precision(
    true_labels: Labels, pred_labels: Labels, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> np.ndarray:
    """Cellpose AP ``TP / (TP + FP + FN)`` of one image at each threshold.

    No true and no predicted objects gives 1.0. For a dataset, use
    ``aggregate(match_counts(t, p) for t, p in ...).average_precision`` (pooled counts).

    Args:
        true_labels: integer ground-truth labels, any shape, 0 = background.
        pred_labels: integer predicted labels, same shape.
        thresholds: IoU thresholds in (0, 1].

    Returns:
        ``(T,)`` float64 AP per threshold.
    """
    return match_counts(true_labels, pred_labels, thresholds).average_precision


def matched_pairs(
    true_labels: Labels, pred_labels: Labels, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The optimal one-to-one matching of one image at one IoU threshold.

    Args:
        true_labels: integer ground-truth labels, any shape, 0 = background.
        pred_labels: integer predicted labels, same shape.
        threshold: IoU threshold in (0, 1].

    Returns:
        ``(true_ids, pred_ids, iou)``, each ``(TP,)``: matched label ids (in the images'
        own numbering, sorted by true id) and their IoU (float64).
    """
    (threshold,) = _check_thresholds([threshold])
    overlap = _overlap(true_labels, pred_labels)
    true_index, pred_index, iou = _match(overlap, threshold)
    order = np.argsort(true_index)
    true_ids = relabel_sequential(np.asarray(true_labels))[1]
    pred_ids = relabel_sequential(np.asarray(pred_labels))[1]
    return true_ids[true_index[order]], pred_ids[pred_index[order]], iou[order]


def coco_average_precision(
    true_labels: LabelsOrList,
    pred_labels: LabelsOrList,
    scores: ArrayLike | Sequence[ArrayLike] | None = None,
    *,
    max_dets: int | None = None,
) -> np.ndarray:
    """COCO AP at each IoU threshold 0.50:0.05:0.95, as pycocotools' COCOeval computes it.

    Without scores every prediction scores 1.0, and ties rank by ascending label id
    within an image and by image order across images (pycocotools' stable sort does
    the same when annotations are listed that way).

    Args:
        true_labels: one label image, or a list of them (a dataset).
        pred_labels: the matching prediction(s), same shapes.
        scores: per image, ``(N_pred,)`` confidences in ascending pred-id order (the
            order of ``np.unique(pred)[1:]``); a list of those for a dataset.
        max_dets: keep only the best-scored ``max_dets`` predictions per image
            (COCOeval's ``maxDets``); None keeps all.

    Returns:
        ``(10,)`` float64 AP per threshold. With no true objects at all (where
        pycocotools reports -1) it is 1.0 if there are no predictions either, else 0.0.
    """
    overlaps = _overlaps(true_labels, pred_labels)
    single = isinstance(true_labels, np.ndarray)
    per_image_scores = _per_image_scores(scores, overlaps, single=single)
    return _coco_ap(overlaps, per_image_scores, max_dets)


def coco_map(
    true_labels: LabelsOrList,
    pred_labels: LabelsOrList,
    scores: ArrayLike | Sequence[ArrayLike] | None = None,
    *,
    max_dets: int | None = None,
) -> float:
    """COCO mAP@[.50:.95]: the mean of :func:`coco_average_precision` (same arguments)."""
    return float(coco_average_precision(true_labels, pred_labels, scores, max_dets=max_dets).mean())


def score(
    true_labels: LabelsOrList,
    pred_labels: LabelsOrList,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    scores: ArrayLike | Sequence[ArrayLike] | None = None,
) -> SegmentationScores:
    """All metrics of one image (arrays) or a dataset (lists, counts pooled over images).

    AFNR is the mean over IoU 0.50:0.05:0.95 of ``FN / n_true`` (seed paper 002:
    ``FNR = 1 - recall``), with FN from the optimal matching; with no true objects
    nothing can be missed and it is 0.0.

    Args:
        true_labels: one label image, or a list of them.
        pred_labels: the matching prediction(s), same shapes.
        thresholds: IoU thresholds of the per-threshold metrics, in (0, 1].
        scores: prediction confidences for COCO mAP, as in :func:`coco_average_precision`.

    Returns:
        The scores, ready for tabulation (``as_dict`` for JSON).
    """
    thresholds = _check_thresholds(thresholds)
    overlaps = _overlaps(true_labels, pred_labels)
    counts = aggregate(_counts(overlap, thresholds) for overlap in overlaps)
    coco = aggregate(_counts(overlap, np.array(COCO_THRESHOLDS)) for overlap in overlaps)
    afnr = float((coco.fn / coco.n_true).mean()) if coco.n_true else 0.0
    single = isinstance(true_labels, np.ndarray)
    coco_ap = _coco_ap(overlaps, _per_image_scores(scores, overlaps, single=single), None)
    return SegmentationScores(
        thresholds=tuple(thresholds.tolist()),
        ap=tuple(counts.average_precision.tolist()),
        precision=tuple(counts.precision.tolist()),
        recall=tuple(counts.recall.tolist()),
        f1=tuple(counts.f1.tolist()),
        coco_map=float(coco_ap.mean()),
        afnr=afnr,
        n_true=counts.n_true,
        n_pred=counts.n_pred,
        n_images=len(overlaps),
    )


# --------------------------------------------------------------------------- overlap


def _check_thresholds(thresholds: Sequence[float]) -> np.ndarray:
    values = np.asarray(thresholds, dtype=np.float64).ravel()
    if values.size == 0 or not np.all((values > 0) & (values <= 1)):
        raise InvalidParamsError(f"IoU thresholds must be in (0, 1], got {list(thresholds)}")
    return values


def _overlaps(true_labels: LabelsOrList, pred_labels: LabelsOrList) -> list[_Overlap]:
    """Overlaps of one image pair or of two equally long lists of images."""
    if isinstance(true_labels, np.ndarray) and isinstance(pred_labels, np.ndarray):
        return [_overlap(true_labels, pred_labels)]
    if isinstance(true_labels, np.ndarray) or isinstance(pred_labels, np.ndarray):
        raise InvalidLabelsError(
            "pass two label arrays (one image) or two lists of arrays (a dataset), got "
            f"{type(true_labels).__name__} and {type(pred_labels).__name__}"
        )
    if len(true_labels) != len(pred_labels) or not true_labels:
        raise InvalidLabelsError(
            f"need equally many true and predicted images (>= 1), got "
            f"{len(true_labels)} and {len(pred_labels)}"
        )
    return [_overlap(t, p) for t, p in zip(true_labels, pred_labels, strict=True)]


def _overlap(true_labels: Labels, pred_labels: Labels) -> _Overlap:
    """Sparse IoU of every (true, pred) pair that shares at least one pixel."""
    true_labels = check_labels(true_labels, name="true labels")
    pred_labels = check_labels(pred_labels, name="predicted labels")
    if true_labels.shape != pred_labels.shape:
        raise InvalidLabelsError(
            f"true labels {true_labels.shape} and predicted labels {pred_labels.shape} differ"
        )
    true_index, true_ids = relabel_sequential(true_labels)
    pred_index, pred_ids = relabel_sequential(pred_labels)
    n_true, n_pred = true_ids.size, pred_ids.size
    # Runs of identical (true, pred) pairs along the flattened images: few per row.
    _, lengths, keys = run_lengths((true_index * (n_pred + 1) + pred_index).ravel())
    true_run, pred_run = np.divmod(keys, n_pred + 1)
    true_area = np.bincount(true_run, weights=lengths, minlength=n_true + 1)[1:]
    pred_area = np.bincount(pred_run, weights=lengths, minlength=n_pred + 1)[1:]
    both = (true_run > 0) & (pred_run > 0)
    pairs, inverse = np.unique(keys[both], return_inverse=True)
    intersection = np.bincount(inverse, weights=lengths[both], minlength=pairs.size)
    true_pair, pred_pair = np.divmod(pairs, n_pred + 1)
    true_pair, pred_pair = true_pair - 1, pred_pair - 1
    union = true_area[true_pair] + pred_area[pred_pair] - intersection
    return _Overlap(n_true, n_pred, true_pair, pred_pair, intersection / union)


# --------------------------------------------------------------------------- matching


def _counts(overlap: _Overlap, thresholds: np.ndarray) -> MatchCounts:
    tp = np.array([_match(overlap, t)[0].size for t in thresholds], dtype=np.int64)
    return MatchCounts(
        thresholds, tp, overlap.n_pred - tp, overlap.n_true - tp, overlap.n_true, overlap.n_pred
    )


def _match(overlap: _Overlap, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matched ``(true_index, pred_index, iou)``: most pairs with IoU >= t, then most IoU."""
    keep = overlap.iou >= threshold
    true_index, pred_index = overlap.true_index[keep], overlap.pred_index[keep]
    iou = overlap.iou[keep]
    if _at_most_one_partner(true_index, pred_index):
        return true_index, pred_index, iou
    rows, cols = _solve_matching(true_index, pred_index, iou)
    return rows, cols, iou[_edge_lookup(true_index, pred_index, rows, cols)]


def _at_most_one_partner(true_index: np.ndarray, pred_index: np.ndarray) -> bool:
    """True when no object has two candidate partners (then the edges are the matching)."""
    return bool(
        np.unique(true_index).size == true_index.size
        and np.unique(pred_index).size == pred_index.size
    )


def _solve_matching(
    true_index: np.ndarray, pred_index: np.ndarray, iou: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Max-cardinality, then max-IoU, matching on a sparse bipartite graph.

    The graph gets a dummy partner for every node: true i ↔ dummy column i (cost 2),
    dummy row j ↔ pred j (cost 2), and dummy row j ↔ dummy column i for each edge
    (i, j) (cost 1). A real edge costs ``2 - IoU / (2 min(r, c))``. Any matching with k
    real edges extends to a perfect one, costing ``const - k - ΣIoU / (2 min(r, c))``,
    so the minimum perfect matching maximises k first and the IoU sum second.
    """
    rows, true_node = np.unique(true_index, return_inverse=True)
    cols, pred_node = np.unique(pred_index, return_inverse=True)
    r, c = rows.size, cols.size
    weight = 1.0 / (2 * min(r, c))
    graph_rows = np.concatenate([true_node, np.arange(r), r + np.arange(c), r + pred_node])
    graph_cols = np.concatenate([pred_node, c + np.arange(r), np.arange(c), c + true_node])
    costs = np.concatenate([2.0 - weight * iou, np.full(r + c, 2.0), np.ones(iou.size)])
    graph = sparse.csr_array((costs, (graph_rows, graph_cols)), shape=(r + c, r + c))
    row_match, col_match = min_weight_full_bipartite_matching(graph)
    real = (row_match < r) & (col_match < c)
    return rows[row_match[real]], cols[col_match[real]]


def _edge_lookup(
    true_index: np.ndarray, pred_index: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """Positions of the edges ``(rows[k], cols[k])`` in ``(true_index, pred_index)``."""
    width = int(max(pred_index.max(), cols.max())) + 1
    edge_keys = true_index.astype(np.int64) * width + pred_index
    order = np.argsort(edge_keys)
    found = np.searchsorted(edge_keys, rows.astype(np.int64) * width + cols, sorter=order)
    return order[found]


# --------------------------------------------------------------------------- COCO


def _per_image_scores(
    scores: ArrayLike | Sequence[ArrayLike] | None, overlaps: list[_Overlap], *, single: bool
) -> list[np.ndarray]:
    """Scores as one float64 array per image (ones when None), checked against n_pred."""
    if scores is None:
        return [np.ones(overlap.n_pred) for overlap in overlaps]
    per_image = [scores] if single else list(scores)
    if len(per_image) != len(overlaps):
        raise InvalidParamsError(
            f"got scores for {len(per_image)} images, expected {len(overlaps)}"
        )
    arrays = [np.asarray(s, dtype=np.float64).ravel() for s in per_image]
    for index, (array, overlap) in enumerate(zip(arrays, overlaps, strict=True)):
        if array.size != overlap.n_pred:
            raise InvalidParamsError(
                f"image {index}: {array.size} scores for {overlap.n_pred} predicted objects"
            )
    return arrays


def _coco_ap(
    overlaps: list[_Overlap], scores: list[np.ndarray], max_dets: int | None
) -> np.ndarray:
    """COCOeval's ``accumulate`` for one category and area range "all"."""
    thresholds = np.minimum(np.array(COCO_THRESHOLDS), 1 - 1e-10)
    ranked = [
        _coco_image(o, s, thresholds, max_dets) for o, s in zip(overlaps, scores, strict=True)
    ]
    n_true = sum(overlap.n_true for overlap in overlaps)
    ranked_scores = np.concatenate([image_scores for image_scores, _ in ranked])
    matched = np.concatenate([image_matched for _, image_matched in ranked], axis=1)
    if n_true == 0:
        return np.full(thresholds.size, 0.0 if ranked_scores.size else 1.0)
    order = np.argsort(-ranked_scores, kind="mergesort")
    tp = np.cumsum(matched[:, order], axis=1).astype(np.float64)
    fp = np.cumsum(~matched[:, order], axis=1).astype(np.float64)
    ap = np.zeros(thresholds.size)
    for t in range(thresholds.size):
        if tp.shape[1] == 0:
            continue
        recall = tp[t] / n_true
        precision = tp[t] / (fp[t] + tp[t] + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(recall, _COCO_RECALLS, side="left")
        ap[t] = np.where(
            at < precision.size, precision[np.minimum(at, precision.size - 1)], 0.0
        ).mean()
    return ap


def _coco_image(
    overlap: _Overlap, scores: np.ndarray, thresholds: np.ndarray, max_dets: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """One image's detections in score order and whether each is matched, ``(T, D)``.

    COCOeval's greedy rule: each detection, best score first, takes the unmatched true
    object of highest IoU >= t; equal IoUs go to the later true object (higher id).
    """
    order = np.argsort(-scores, kind="mergesort")[:max_dets]
    rank = np.full(overlap.n_pred, -1)
    rank[order] = np.arange(order.size)
    matched = np.zeros((thresholds.size, order.size), dtype=bool)
    for t, threshold in enumerate(thresholds):
        keep = (overlap.iou >= threshold) & (rank[overlap.pred_index] >= 0)
        true_index, det = overlap.true_index[keep], rank[overlap.pred_index[keep]]
        if _at_most_one_partner(true_index, det):
            matched[t, det] = True
        else:
            matched[t] = _greedy(true_index, det, overlap.iou[keep], order.size)
    return scores[order], matched


def _greedy(true_index: np.ndarray, det: np.ndarray, iou: np.ndarray, n_dets: int) -> np.ndarray:
    """``(D,)`` bool: COCOeval's greedy matching of ranked detections to true objects."""
    order = np.lexsort((true_index, det))  # by detection rank, then true index
    dets, trues, ious = (det[order].tolist(), true_index[order].tolist(), iou[order].tolist())
    matched = np.zeros(n_dets, dtype=bool)
    taken: set[int] = set()
    start = 0
    while start < len(dets):
        choice, best, end = -1, -1.0, start
        while end < len(dets) and dets[end] == dets[start]:
            if trues[end] not in taken and ious[end] >= best:
                choice, best = trues[end], ious[end]
            end += 1
        if choice >= 0:
            taken.add(choice)
            matched[dets[start]] = True
        start = end
    return matched
