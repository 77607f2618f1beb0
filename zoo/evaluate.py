"""Score a model (or the router) on an annotated dataset: per image and in total."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from zoo.data.readers import LabeledImage
from zoo.data.synthetic import STYLES, generate_dataset
from zoo.metrics import SegmentationScores, score
from zoo.params import PredictParams
from zoo.pipeline import AUTO, Zoo

#: Thresholds of the evaluation table and of the AP-vs-IoU curve.
CURVE_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
SYNTHETIC = "synthetic"


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


def synthetic_test_set(spec: str, *, seed: int = 1, n_per_style: int = 12) -> list[LabeledImage]:
    """``synthetic`` or ``synthetic:STYLE[,STYLE]``: the zoo build's held-out test images
    (seed 1 = build seed 0 + 1, 12 per style), named ``<style>-<index>``."""
    _, _, wanted = spec.partition(":")
    styles = tuple(s for s in wanted.split(",") if s) or STYLES
    samples = generate_dataset(styles, n_per_style, seed=seed)
    return [LabeledImage(image=s.image, labels=s.labels, name=f"{s.style}-{i % n_per_style:02d}",
                         channels=s.channels) for i, s in enumerate(samples)]


def evaluate(
    zoo: Zoo,
    dataset: Iterable,
    *,
    model: str = AUTO,
    params: PredictParams | None = None,
) -> Evaluation:
    """Segment every item of ``dataset`` (``.image``, ``.labels``, ``.name``) and score it."""
    truths, predictions, images = [], [], []
    for item in dataset:
        result = zoo.segment(item.image, model=model, params=params)
        labels = result.prediction.labels
        truths.append(np.asarray(item.labels))
        predictions.append(labels)
        images.append(ImageResult(getattr(item, "name", f"image-{len(images)}"), result.model,
                                  score(truths[-1], labels, CURVE_THRESHOLDS)))
    return Evaluation(images=images, total=score(truths, predictions, CURVE_THRESHOLDS))
