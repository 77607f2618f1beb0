"""Shared fixtures: small networks and synthetic labels, all in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

# One numba cache for the whole run, its subprocesses and servers included (each test's own
# ZOO_HOME would otherwise compile the kernels again); set before numba is imported.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from zoo.model import SegmentationModel  # noqa: E402
from zoo.nets.cpnet import NetConfig  # noqa: E402

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
