"""Few-shot specialists (Cellpose 2.0's human-in-the-loop result) on the shipped generalist:
fine-tuning on two annotated images of a new style improves AP on that style."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from zoo.data.synthetic import Sample, generate
from zoo.metrics import aggregate, match_counts
from zoo.model import SegmentationModel
from zoo.params import PredictParams
from zoo.predict import Predictor
from zoo.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "cpnet.generalist.safetensors"
PARAMS = PredictParams(cyto_channel=0, nucleus_channel=1)


def _new_style(seed: int) -> Sample:
    """A style absent from the zoo's training data: inverted nuclei (dark on bright)."""
    sample = generate("nuclei", seed=seed, shape=(160, 160))
    image = sample.image.copy()
    image[..., 0] = image[..., 0].max() - image[..., 0]
    return replace(sample, image=image)


def _ap50(model: SegmentationModel, samples: list[Sample]) -> float:
    predictor = Predictor(model)
    counts = [match_counts(s.labels, predictor.predict(s.image, PARAMS).labels, (0.5,))
              for s in samples]
    return float(aggregate(counts).average_precision[0])


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped zoo")
def test_two_annotated_images_teach_a_new_style():
    model = SegmentationModel.load(WEIGHTS)
    train_images = [_new_style(seed) for seed in (7001, 7002)]
    test_images = [_new_style(seed) for seed in (8001, 8002, 8003, 8004)]
    before = _ap50(model, test_images)
    config = TrainConfig(epochs=40, optimizer="adamw", learning_rate=1e-3, warmup_epochs=2, tile=96)
    train(model, train_images, config)
    after = _ap50(model, test_images)
    assert after >= before + 0.1, (before, after)
    assert np.isfinite(after)
