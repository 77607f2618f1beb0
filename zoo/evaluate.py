"""Score a model (or the router) on an annotated dataset: per image and in total; and the zoo
build's protocol on a synthetic split (``evaluate_split``).

The protocol, for every image of a split (each with its own channels), through the product
pipeline (``Zoo.segment``):

- *generalist*: the generalist named (its own size estimate);
- *routed*: ``model="auto"``: the style pass, the router, then the chosen model at the style
  pass's diameter;
- *oracle*: the model that serves the cluster holding most of the image's style in the
  training bank, at the style pass's diameter (the routed result when routing chose it).

A route is *correct* when it is in distribution and its cluster is one where the image's
style is the most common source among the training references, or the cluster that holds
most of that style's references (a style merged into another's cluster is routed correctly
to it). AP is pooled per style (``zoo.metrics.aggregate``: summed TP, FP and FN).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from zoo.cluster import StyleBank
from zoo.data.readers import LabeledImage
from zoo.data.synthetic import STYLES, Sample, generate_dataset
from zoo.metrics import MatchCounts, SegmentationScores, aggregate, match_counts, score
from zoo.params import PredictParams
from zoo.pipeline import AUTO, Zoo
from zoo.router import RouteResult

#: Thresholds of the evaluation table and of the AP-vs-IoU curve.
CURVE_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
SYNTHETIC = "synthetic"
#: Base-seed offsets of the zoo build's three disjoint synthetic splits.
SPLIT_OFFSETS = {"train": 0, "validation": 1, "test": 2}
METHODS = ("generalist", "routed", "oracle")


@dataclass(frozen=True)
class ImageResult:
    """One image's scores and the model that segmented it."""

    name: str
    model: str
    scores: SegmentationScores


@dataclass(frozen=True)
class Evaluation:
    """Per-image results and the pooled total over the dataset."""

    images: list[ImageResult]
    total: SegmentationScores


def split_seed(split: str, seed: int = 0) -> int:
    """The synthetic base seed of ``split`` (train, validation or test) of build ``seed``."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(SPLIT_OFFSETS)}")
    return seed + SPLIT_OFFSETS[split]


def synthetic_test_set(spec: str, *, seed: int = 0, n_per_style: int = 12,
                       split: str = "test") -> list[LabeledImage]:
    """``synthetic`` or ``synthetic:STYLE[,STYLE]``: a split of the zoo build of ``seed``
    (default: the held-out test split of ``zoo build --seed 0``, 12 images per style), named
    ``<style>-<index>``, each with its own channels."""
    _, _, wanted = spec.partition(":")
    styles = tuple(s for s in wanted.split(",") if s) or STYLES
    samples = generate_dataset(styles, n_per_style, seed=split_seed(split, seed))
    return [LabeledImage(image=s.image, labels=s.labels, name=f"{s.style}-{i % n_per_style:02d}",
                         channels=s.channels) for i, s in enumerate(samples)]


def evaluate(
    zoo: Zoo,
    dataset: Iterable,
    *,
    model: str = AUTO,
    params: PredictParams | None = None,
) -> Evaluation:
    """Segment every item of ``dataset`` (``.image``, ``.labels``, ``.name``) and score it.

    ``params`` None uses each item's own ``channels`` (when it has them) and defaults.
    """
    truths, predictions, images = [], [], []
    for item in dataset:
        own = params if params is not None else _item_params(item)
        result = zoo.segment(item.image, model=model, params=own)
        labels = result.prediction.labels
        truths.append(np.asarray(item.labels))
        predictions.append(labels)
        images.append(ImageResult(getattr(item, "name", f"image-{len(images)}"), result.model,
                                  score(truths[-1], labels, CURVE_THRESHOLDS)))
    return Evaluation(images=images, total=score(truths, predictions, CURVE_THRESHOLDS))


def _item_params(item: object) -> PredictParams:
    channels = getattr(item, "channels", None)
    if channels is None:
        return PredictParams()
    return PredictParams(cyto_channel=channels[0], nucleus_channel=channels[1])


# ---- the build's protocol -----------------------------------------------------------------


def sample_params(sample: Sample) -> PredictParams:
    """The prediction parameters of a synthetic sample: its own channels."""
    cyto, nucleus = sample.channels
    return PredictParams(cyto_channel=cyto, nucleus_channel=nucleus)


@dataclass(frozen=True)
class ScoredImage:
    """One image of a split under the protocol (module docstring).

    Attributes:
        style: its synthetic style.
        route: where the router sent it.
        correct: whether that route is correct.
        counts: method → match counts at ``CURVE_THRESHOLDS``.
    """

    style: str
    route: RouteResult
    correct: bool
    counts: dict[str, MatchCounts]


@dataclass
class SplitResult:
    """The protocol's results on one split."""

    split: str
    images: list[ScoredImage] = field(default_factory=list)

    @property
    def styles(self) -> list[str]:
        return sorted({image.style for image in self.images})

    def ap(self, method: str, style: str | None = None) -> np.ndarray:
        """``(T,)`` pooled AP of ``method`` over one style's images (None: per-style mean)."""
        if style is None:
            return np.mean([self.ap(method, s) for s in self.styles], axis=0)
        return aggregate(i.counts[method] for i in self.images if i.style == style).average_precision

    def routing_accuracy(self, style: str | None = None) -> float:
        """Fraction of images (of ``style``, or all) routed correctly."""
        return float(np.mean([i.correct for i in self.images if style in (None, i.style)]))

    def in_distribution(self, style: str | None = None) -> float:
        """Fraction of images (of ``style``, or all) the router found in distribution."""
        return float(np.mean([not i.route.ood for i in self.images if style in (None, i.style)]))


def style_clusters(bank: StyleBank) -> dict[str, set[int]]:
    """Source style → the clusters a route of that style may correctly go to (module doc)."""
    sources = np.asarray(bank.sources)
    allowed: dict[str, set[int]] = {}
    for cluster in range(bank.n_clusters):
        styles, counts = np.unique(sources[bank.labels == cluster], return_counts=True)
        allowed.setdefault(str(styles[counts.argmax()]), set()).add(cluster)
    for style in np.unique(sources):
        allowed.setdefault(str(style), set()).add(home_cluster(bank, str(style)))
    return allowed


def home_cluster(bank: StyleBank, style: str) -> int:
    """The cluster that holds most of ``style``'s training references."""
    labels = bank.labels[np.asarray(bank.sources) == style]
    return int(np.bincount(labels, minlength=bank.n_clusters).argmax())


def evaluate_split(
    zoo: Zoo,
    samples: Sequence[Sample],
    *,
    split: str,
    generalist: str,
    methods: Sequence[str] = METHODS,
    progress: callable | None = None,
) -> SplitResult:
    """Run the protocol (module docstring) on ``samples`` with ``zoo``.

    Args:
        zoo: the zoo under test (its router's bank names the clusters' sources).
        samples: annotated synthetic images.
        split: the split's name, for the result.
        generalist: the generalist's registry name.
        methods: which of ``METHODS`` to score (``routed`` is always run: it routes).
        progress: called with no argument after each image.
    """
    bank = zoo.router.bank
    allowed = style_clusters(bank)
    result = SplitResult(split)
    for sample in samples:
        params = sample_params(sample)
        routed = zoo.segment(sample.image, params=params)
        route = routed.route
        labels = {routed.model: routed.prediction.labels}
        wanted = {"routed": routed.model, "generalist": generalist}
        if "oracle" in methods:
            if sample.style in set(bank.sources):
                home = home_cluster(bank, sample.style)
                wanted["oracle"] = bank.specialists.get(home, generalist)
            else:
                wanted["oracle"] = generalist
        counts = {}
        for method in ("routed", *(m for m in methods if m != "routed")):
            model = wanted[method]
            if model not in labels:
                # a named generalist estimates its own size exactly as the style pass did
                own = params if model == generalist else replace(
                    params, diameter=routed.prediction.diameter)
                labels[model] = zoo.segment(sample.image, model=model, params=own).prediction.labels
            counts[method] = match_counts(sample.labels, labels[model], CURVE_THRESHOLDS)
        correct = not route.ood and route.cluster in allowed.get(sample.style, set())
        result.images.append(ScoredImage(sample.style, route, correct, counts))
        if progress is not None:
            progress()
    return result
