"""Shared fixtures: small networks and synthetic labels, all in tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.model import SegmentationModel
from zoo.nets.cpnet import NetConfig

SMALL = NetConfig(channels=(2, 8, 16, 32, 64))


@pytest.fixture(scope="session")
def small_model() -> SegmentationModel:
    """A small, freshly initialised network whose cell-probability head is biased positive,
    so untrained flows still produce masks."""
    model = SegmentationModel.create(SMALL, diam_mean=20.0, seed=0)
    with torch.no_grad():
        model.net.head[-1].bias[2] = 2.0
    return model


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
