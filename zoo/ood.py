"""The out-of-distribution check: is an image's style like the zoo's references?

How it works: styles (L2-normalised, ``(S,)``) are *whitened* with the bank's pooled
within-cluster covariance, shrunk towards its mean variance (``shrinkage``) so that every
direction counts and none is noise blown up:
``W = ((1 - λ) Σ_w + λ tr(Σ_w)/S · I)^(-1/2)``. The score is

- ``mahalanobis``: the Mahalanobis distance to the nearest cluster mean,
  ``min_k ||W (x - μ_k)||`` (class-conditional Gaussians with one shared covariance), or
- ``knn``: the distance to the ``k``-th nearest reference in the whitened space, or
- ``logistic``: the log-odds that the style is not microscopy, from a logistic regression
  on the whitened style and its Mahalanobis distance, fitted on the bank's styles against
  the styles of non-microscopy training negatives (``zoo.data.negatives``). The two
  distances above only say how far a style is from the references; this one also learns
  which directions lead away from microscopy rather than merely away from our renderer.

A style scoring above ``threshold`` is out of distribution. The threshold is calibrated on
data the zoo was not built from (``calibrate_threshold``): in-distribution validation images
and non-microscopy validation negatives (``zoo.data.negatives``). The whitening and the means
come from the bank alone. ``evaluate_scores`` gives the figures a threshold is judged by:
the ROC curve, its AUROC and the two rates at the threshold.

The model is stored in the style bank (``StyleBank.ood``); the router applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from zoo.errors import InvalidParamsError

METHODS = ("mahalanobis", "knn", "logistic")
Method = Literal["mahalanobis", "knn", "logistic"]
#: methods fitted on negatives too (their training negatives cannot calibrate them)
DISCRIMINATIVE = ("logistic",)
_CHUNK = 1024


@dataclass(frozen=True)
class OODParams:
    """How the OOD check is fitted and calibrated.

    Attributes:
        method: ``mahalanobis`` (nearest cluster mean), ``knn`` (k-th nearest reference),
            or ``logistic`` (learned against negatives), all in the whitened space (module
            docstring).
        shrinkage: λ in [0, 1]: 0 whitens with the covariance itself, 1 with its mean
            variance alone (plain euclidean distance, rescaled).
        k: the neighbour whose distance ``knn`` scores (1 = the nearest).
        rejection: the fraction of validation negatives the threshold flags (the threshold
            is the score below which ``1 - rejection`` of them fall), unless that would
            flag more than ``max_false_alarms`` of the validation images.
        max_false_alarms: the largest fraction of in-distribution validation images the
            threshold may flag.
        regularisation: ``logistic`` only: the inverse L2 penalty (scikit-learn's ``C``) on
            the standardised features.
    """

    method: Method = "mahalanobis"
    shrinkage: float = 0.1
    k: int = 5
    rejection: float = 0.975
    max_false_alarms: float = 0.02
    regularisation: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidParamsError(f"method must be one of {METHODS}, got {self.method!r}")
        if not 0 <= self.shrinkage <= 1:
            raise InvalidParamsError(f"shrinkage must be in [0, 1], got {self.shrinkage}")
        if self.k < 1:
            raise InvalidParamsError(f"k must be >= 1, got {self.k}")
        if not self.regularisation > 0:
            raise InvalidParamsError(f"regularisation must be > 0, got {self.regularisation}")
        for name in ("rejection", "max_false_alarms"):
            if not 0 <= getattr(self, name) <= 1:
                raise InvalidParamsError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "shrinkage": self.shrinkage, "k": self.k,
                "rejection": self.rejection, "max_false_alarms": self.max_false_alarms,
                "regularisation": self.regularisation}


@dataclass(frozen=True, eq=False)
class OODModel:
    """A fitted OOD score and its threshold.

    Attributes:
        method: ``mahalanobis`` or ``knn``.
        mean: ``(S,)`` float32 centre subtracted before whitening.
        whitener: ``(S, S)`` float32 whitening matrix ``W`` (symmetric).
        points: ``(P, S)`` float32 whitened cluster means (``mahalanobis``) or whitened
            references (``knn``).
        threshold: scores above it are out of distribution (inf until calibrated).
        k: the neighbour ``knn`` scores (1 for ``mahalanobis`` and ``logistic``).
        params: the settings it was fitted and calibrated with.
        coef: ``logistic`` only: ``(S + 1,)`` float32 weights of the whitened style and of
            its distance to the nearest point; the score is ``features @ coef + intercept``.
        intercept: ``logistic`` only.
    """

    method: str
    mean: np.ndarray
    whitener: np.ndarray
    points: np.ndarray
    threshold: float = math.inf
    k: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    coef: np.ndarray | None = None
    intercept: float = 0.0

    def __post_init__(self) -> None:
        for name in ("mean", "whitener", "points"):
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), np.float32))
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "intercept", float(self.intercept))
        if self.coef is not None:
            object.__setattr__(self, "coef", np.ascontiguousarray(self.coef, np.float32))
        dim = self.mean.shape[0] if self.mean.ndim == 1 else -1
        if self.method not in METHODS:
            raise InvalidParamsError(f"OOD method must be one of {METHODS}, got {self.method!r}")
        if dim < 1 or self.whitener.shape != (dim, dim) or self.points.ndim != 2 \
                or self.points.shape[1] != dim or len(self.points) == 0:
            raise InvalidParamsError(
                f"OOD arrays must be mean (S,), whitener (S, S), points (P, S); got "
                f"{self.mean.shape}, {self.whitener.shape}, {self.points.shape}")
        if not 1 <= self.k <= len(self.points):
            raise InvalidParamsError(f"k must be in 1..{len(self.points)}, got {self.k}")
        if self.method in DISCRIMINATIVE:
            if self.coef is None or self.coef.shape != (dim + 1,):
                raise InvalidParamsError(
                    f"a {self.method} OOD check needs coef shaped ({dim + 1},), got "
                    f"{None if self.coef is None else self.coef.shape}")
            if not (np.all(np.isfinite(self.coef)) and math.isfinite(self.intercept)):
                raise InvalidParamsError("OOD coef or intercept contain NaN or infinite values")
        if math.isnan(self.threshold) or (self.threshold < 0 and self.method not in DISCRIMINATIVE):
            raise InvalidParamsError(f"threshold must be >= 0, got {self.threshold}")
        for name in ("mean", "whitener", "points"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise InvalidParamsError(f"OOD {name} contain NaN or infinite values")

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @property
    def description(self) -> str:
        """What the score measures, in a few words (for a route's reason)."""
        if self.method == "mahalanobis":
            return "Mahalanobis distance to the nearest cluster"
        if self.method == "logistic":
            return "log-odds of not being microscopy"
        return f"whitened distance to the {_ordinal(self.k)} nearest reference"

    def score(self, styles: np.ndarray) -> np.ndarray:
        """Scores of ``(M, S)`` styles (L2-normalised by the caller): ``(M,)`` float64."""
        styles = np.asarray(styles, dtype=np.float64)
        if styles.ndim != 2 or styles.shape[1] != self.dim:
            raise InvalidParamsError(f"styles must be shaped (M, {self.dim}), got {styles.shape}")
        whitened = (styles - self.mean) @ self.whitener.astype(np.float64)
        points = self.points.astype(np.float64)
        scores = np.empty(len(styles))
        for start in range(0, len(styles), _CHUNK):
            rows = whitened[start : start + _CHUNK]
            sq = (rows**2).sum(1)[:, None] + (points**2).sum(1)[None] - 2 * rows @ points.T
            kth = np.partition(sq, self.k - 1, axis=1)[:, self.k - 1]
            scores[start : start + len(rows)] = np.sqrt(np.maximum(kth, 0.0))
        if self.method in DISCRIMINATIVE:
            features = np.concatenate([whitened, scores[:, None]], axis=1)
            return features @ self.coef.astype(np.float64) + self.intercept
        return scores

    def with_threshold(self, threshold: float) -> OODModel:
        return replace(self, threshold=threshold)

    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays to store (``StyleBank.save``)."""
        out = {"ood.mean": self.mean, "ood.whitener": self.whitener, "ood.points": self.points}
        if self.coef is not None:
            out["ood.coef"] = self.coef
        return out

    def meta(self) -> dict[str, Any]:
        """The JSON-able rest (``StyleBank.save``)."""
        return {"method": self.method, "threshold": self.threshold, "k": self.k,
                "params": self.params, "intercept": self.intercept}

    @classmethod
    def from_stored(cls, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> OODModel:
        """Inverse of ``meta`` and ``tensors``; missing keys raise ``KeyError``."""
        return cls(meta["method"], tensors["ood.mean"], tensors["ood.whitener"],
                   tensors["ood.points"], meta["threshold"], meta["k"], meta.get("params", {}),
                   tensors.get("ood.coef"), meta.get("intercept", 0.0))


def fit_ood(vectors: np.ndarray, labels: np.ndarray, params: OODParams | None = None,
            negatives: np.ndarray | None = None) -> OODModel:
    """Fit the whitening and the points on reference styles (threshold left at inf).

    Args:
        vectors: ``(N, S)`` L2-normalised reference styles.
        labels: ``(N,)`` cluster ids 0..K-1.
        params: method and shrinkage.
        negatives: ``(M, S)`` L2-normalised styles of non-microscopy images; needed (and
            used) by ``logistic`` only.
    """
    params = params or OODParams()
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(labels)
    if vectors.ndim != 2 or len(vectors) < 2 or labels.shape != (len(vectors),):
        raise InvalidParamsError(
            f"need (N, S) vectors with N >= 2 and (N,) labels, got {vectors.shape}, {labels.shape}")
    clusters = np.unique(labels)
    means = np.stack([vectors[labels == c].mean(axis=0) for c in clusters])
    within = vectors - means[np.searchsorted(clusters, labels)]
    covariance = within.T @ within / max(len(vectors) - len(clusters), 1)
    whitener = _inverse_sqrt(covariance, params.shrinkage)
    centre = vectors.mean(axis=0)
    if params.method == "knn":
        points, k = (vectors - centre) @ whitener, min(params.k, len(vectors))
    else:
        points, k = (means - centre) @ whitener, 1
    model = OODModel("mahalanobis" if params.method in DISCRIMINATIVE else params.method,
                     centre, whitener, points, math.inf, k, params.to_dict())
    if params.method not in DISCRIMINATIVE:
        return model
    if negatives is None or len(negatives) < 2:
        raise InvalidParamsError(f"the {params.method} OOD check is fitted against negatives; "
                                 "give the styles of at least 2 non-microscopy images")
    return _fit_logistic(model, vectors, np.asarray(negatives, np.float64), params)


def _fit_logistic(distance: OODModel, vectors: np.ndarray, negatives: np.ndarray,
                  params: OODParams) -> OODModel:
    """Logistic regression (negatives = 1) on [whitened style, Mahalanobis distance],
    standardised for the fit, the scaling folded into the stored weights."""
    from sklearn.linear_model import LogisticRegression

    def features(styles: np.ndarray) -> np.ndarray:
        whitened = (styles - distance.mean) @ distance.whitener.astype(np.float64)
        return np.concatenate([whitened, distance.score(styles)[:, None]], axis=1)

    x = np.concatenate([features(vectors), features(negatives)])
    y = np.concatenate([np.zeros(len(vectors)), np.ones(len(negatives))])
    centre, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    fit = LogisticRegression(C=params.regularisation, class_weight="balanced", max_iter=5000)
    fit.fit((x - centre) / scale, y)
    coef = fit.coef_[0] / scale
    intercept = float(fit.intercept_[0] - coef @ centre)
    return replace(distance, method=params.method, coef=coef, intercept=intercept)


def _inverse_sqrt(covariance: np.ndarray, shrinkage: float) -> np.ndarray:
    dim = len(covariance)
    scale = float(np.trace(covariance)) / dim
    if not scale > 0:
        raise InvalidParamsError("reference styles have no within-cluster variance to whiten")
    shrunk = (1 - shrinkage) * covariance + shrinkage * scale * np.eye(dim)
    values, vectors = np.linalg.eigh(shrunk)
    values = np.maximum(values, scale * 1e-6)
    return (vectors / np.sqrt(values)) @ vectors.T


def calibrate_threshold(inliers: np.ndarray, outliers: np.ndarray, params: OODParams) -> float:
    """The threshold for validation scores of in-distribution images and negatives.

    The threshold flags ``params.rejection`` of the negatives (their lower quantile), but
    never more than ``params.max_false_alarms`` of the in-distribution images (their upper
    quantile caps it from below).
    """
    inliers, outliers = np.asarray(inliers, float), np.asarray(outliers, float)
    if inliers.size == 0 or outliers.size == 0:
        raise InvalidParamsError("calibration needs in-distribution and negative scores")
    flags_negatives = float(np.quantile(outliers, 1 - params.rejection))
    spares_inliers = float(np.quantile(inliers, 1 - params.max_false_alarms))
    return max(flags_negatives, spares_inliers)


def calibration_negatives(params: OODParams, train: np.ndarray, validation: np.ndarray
                          ) -> np.ndarray:
    """The negatives' scores a threshold is calibrated on: the training and validation
    negatives, or the validation ones alone for a method fitted on the training negatives
    (``DISCRIMINATIVE``: their scores are not those of unseen images)."""
    if params.method in DISCRIMINATIVE:
        return np.asarray(validation, float)
    return np.concatenate([np.asarray(train, float), np.asarray(validation, float)])


@dataclass(frozen=True)
class ROC:
    """A receiver operating characteristic of an OOD score (positives = negatives images).

    Attributes:
        false_alarms: ``(T,)`` fraction of in-distribution images flagged, ascending.
        detections: ``(T,)`` fraction of out-of-distribution images flagged.
        auroc: area under the curve (probability that a random negative image scores above
            a random in-distribution one; ties count half).
    """

    false_alarms: np.ndarray
    detections: np.ndarray
    auroc: float


def roc_curve(inliers: np.ndarray, outliers: np.ndarray) -> ROC:
    """The ROC of scores where higher means more out of distribution."""
    inliers, outliers = np.asarray(inliers, float), np.asarray(outliers, float)
    if inliers.size == 0 or outliers.size == 0:
        raise InvalidParamsError("an ROC needs in-distribution and out-of-distribution scores")
    thresholds = np.unique(np.concatenate([inliers, outliers]))[::-1]
    false_alarms = np.concatenate([[0.0], [(inliers >= t).mean() for t in thresholds]])
    detections = np.concatenate([[0.0], [(outliers >= t).mean() for t in thresholds]])
    greater = (outliers[:, None] > inliers[None]).mean()
    ties = (outliers[:, None] == inliers[None]).mean()
    return ROC(false_alarms, detections, float(greater + ties / 2))


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


@dataclass
class OODReport:
    """The OOD check's scores on each split, and what they say at the threshold.

    Attributes:
        threshold: the calibrated threshold.
        params: the settings (``OODParams.to_dict``).
        description: what the score measures (``OODModel.description``).
        inliers: split → ``(N,)`` scores of in-distribution synthetic images.
        outliers: split → ``(M,)`` scores of non-microscopy negatives.
        kinds: split → the M negatives' kinds (``zoo.data.negatives.KINDS``).
    """

    threshold: float
    params: dict[str, Any]
    description: str
    inliers: dict[str, np.ndarray] = field(default_factory=dict)
    outliers: dict[str, np.ndarray] = field(default_factory=dict)
    kinds: dict[str, list[str]] = field(default_factory=dict)

    def record(self, split: str, inliers: np.ndarray, outliers: np.ndarray,
               kinds: list[str]) -> None:
        """Keep one split's scores."""
        if len(kinds) != len(outliers):
            raise InvalidParamsError(f"got {len(kinds)} kinds for {len(outliers)} negatives")
        self.inliers[split] = np.asarray(inliers, dtype=np.float64)
        self.outliers[split] = np.asarray(outliers, dtype=np.float64)
        self.kinds[split] = list(kinds)

    def roc(self, split: str) -> ROC:
        return roc_curve(self.inliers[split], self.outliers[split])

    def summary(self, split: str) -> dict[str, Any]:
        """AUROC, the fraction of images in distribution and of negatives flagged (overall
        and per kind) at the threshold, and the counts."""
        inliers, outliers = self.inliers[split], self.outliers[split]
        kinds = np.asarray(self.kinds[split])
        return {
            "auroc": round(self.roc(split).auroc, 4),
            "in_distribution": round(float(np.mean(inliers <= self.threshold)), 4),
            "flagged": round(float(np.mean(outliers > self.threshold)), 4),
            "flagged_by_kind": {str(k): round(float(np.mean(outliers[kinds == k] > self.threshold)), 4)
                                for k in sorted(set(kinds.tolist()))},
            "images": int(inliers.size), "negatives": int(outliers.size),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, threshold, per-split summaries and the ROC points."""
        splits = sorted(self.inliers, key=["train", "validation", "test"].index
                        if set(self.inliers) <= {"train", "validation", "test"} else str)
        out: dict[str, Any] = {"threshold": round(self.threshold, 4), "params": self.params,
                               "score": self.description}
        for split in splits:
            roc = self.roc(split)
            out[split] = {**self.summary(split),
                          "roc": {"false_alarms": np.round(roc.false_alarms, 4).tolist(),
                                  "detections": np.round(roc.detections, 4).tolist()}}
        return out
