from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL

from zoo.data.shapes import ShapeParams, random_labels
from zoo.data.synthetic import median_diameter
from zoo.errors import InvalidParamsError, ZooError
from zoo.flows import masks_to_flows
from zoo.model import SegmentationModel
from zoo.train import (
    TrainConfig,
    TrainingImage,
    augment_batch,
    prepare_images,
    train,
)


class _Item:
    def __init__(self, labels: np.ndarray, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.labels = labels
        self.image = ((labels > 0) * 100 + rng.normal(10, 3, labels.shape)).astype(np.float32)
        self.channels = (0, None)


def test_schedule_warms_up_then_anneals():
    config = TrainConfig(epochs=30, learning_rate=0.2, warmup_epochs=10, anneal_epochs=10, anneal_every=5)
    rates = [config.learning_rate_at(e) for e in range(30)]
    assert rates[0] < rates[5] < rates[9] < 0.2 and rates[10] == 0.2 == rates[19]
    assert rates[20] == 0.1 and rates[25] == 0.05


def test_bad_config_raises():
    with pytest.raises(InvalidParamsError, match="tile"):
        TrainConfig(tile=100)
    with pytest.raises(InvalidParamsError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")


def test_images_with_few_cells_are_excluded():
    many = random_labels((64, 64), ShapeParams(diameter=12), seed=0)
    few = np.zeros((64, 64), np.int32)
    few[10:20, 10:20] = 1
    prepared = prepare_images([_Item(many, 0), _Item(few, 1)], n_in=2, config=TrainConfig())
    assert len(prepared) == 1 and prepared[0].diameter == pytest.approx(median_diameter(many))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_augmented_flows_follow_the_transformed_cells(seed):
    labels = random_labels((96, 96), ShapeParams(diameter=18, density=0.5), seed=seed)
    item = TrainingImage(
        stack=(labels > 0)[None].astype(np.float32).repeat(2, 0),
        flows=masks_to_flows(labels),
        labels=labels,
        diameter=median_diameter(labels),
    )
    rng = np.random.default_rng(seed)
    _, flows, _ = augment_batch([item], tile=64, diam_mean=item.diameter, scale_range=0.0, rng=rng)
    # the same transform applied to the labels themselves
    rng = np.random.default_rng(seed)
    from zoo.train import _sample_transform

    grid, _ = _sample_transform(item, 64, item.diameter, 0.0, rng)
    warped = torch.nn.functional.grid_sample(
        torch.from_numpy(labels.astype(np.float32))[None, None], grid, mode="nearest",
        align_corners=False,
    )[0, 0].numpy().astype(np.int32)
    inner = np.zeros_like(warped, dtype=bool)
    border = set(np.unique(np.r_[warped[0], warped[-1], warped[:, 0], warped[:, -1]]))
    for label in set(np.unique(warped)) - border - {0}:
        inner |= warped == label
    if inner.sum() < 50:
        pytest.skip("crop holds no whole cell")
    expected = masks_to_flows(warped)
    got = flows[0].numpy()
    cosine = (expected * got).sum(0)[inner] / (np.linalg.norm(got, axis=0)[inner] + 1e-6)
    assert np.median(cosine) > 0.9


def test_training_lowers_the_loss_and_keeps_weights_finite(tmp_path):
    items = [_Item(random_labels((96, 96), ShapeParams(diameter=16), seed=s), s) for s in range(4)]
    model = SegmentationModel.create(SMALL, diam_mean=16.0, seed=0)
    config = TrainConfig(epochs=12, batch_size=4, tile=64, optimizer="adamw", learning_rate=5e-3, warmup_epochs=1)
    seen = []
    result = train(model, items, config, progress=lambda e, n, loss: seen.append((e, n)),
                   checkpoint=tmp_path / "ckpt.safetensors")
    assert seen[-1] == (12, 12) and result.n_images == 4
    assert np.mean(result.losses[-3:]) < 0.7 * np.mean(result.losses[:3])
    reloaded = SegmentationModel.load(tmp_path / "ckpt.safetensors")
    assert all(torch.isfinite(p).all() for p in reloaded.net.parameters())


def test_training_without_usable_images_raises():
    empty = _Item(np.zeros((64, 64), np.int32), 0)
    with pytest.raises(ZooError, match="at least 5 cells"):
        train(SegmentationModel.create(SMALL), [empty], TrainConfig(epochs=1))
