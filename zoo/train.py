"""Training and fine-tuning of segmentation models, and fitting of the size regressor.

Targets: unit flows from ``zoo.flows.masks_to_flows`` (computed once per image) and the
foreground mask. Every step draws a batch of augmented crops: each image is rescaled so
its cells match the model's mean diameter (times a random factor), rotated by a random
angle, randomly flipped and cropped to ``tile`` pixels; flow vectors are rotated and
flipped with the image.

Loss (as Cellpose): ``MSE(predicted flows, 5 × unit flows) / 2 + BCE(cellprob logit,
foreground)``.

Schedule (Cellpose 2.0, Methods): SGD with momentum 0.9, the learning rate rising
linearly from 0 over ``warmup_epochs``, then constant, then halved every
``anneal_every`` epochs over the last ``anneal_epochs`` epochs; weight decay
``weight_decay``. Each epoch sees every training image once (at least ``min_per_epoch``
draws, with replacement when there are fewer images). Images with fewer than
``min_rois`` cells are excluded. AdamW is available for short CPU schedules.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from zoo.data.synthetic import median_diameter
from zoo.errors import InvalidParamsError, ZooError
from zoo.flows import masks_to_flows
from zoo.model import NET_FLOW_SCALE, SegmentationModel, SizeRegressor
from zoo.preprocess import central_crop, normalize, resize, scaled_shape, select_channels
from zoo.tiling import pad_to_divisor

log = logging.getLogger(__name__)


class Annotated(Protocol):
    """An image with instance labels (``LabeledImage`` and synthetic ``Sample`` both fit)."""

    image: np.ndarray
    labels: np.ndarray
    channels: tuple[int, int | None]


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (see the module docstring for the schedule)."""

    epochs: int = 100
    batch_size: int = 8
    tile: int = 128
    optimizer: Literal["sgd", "adamw"] = "sgd"
    learning_rate: float = 0.1
    weight_decay: float = 1e-5
    warmup_epochs: int = 10
    anneal_epochs: int = 0
    anneal_every: int = 5
    scale_range: float = 0.5
    min_rois: int = 5
    min_per_epoch: int = 8
    percentiles: tuple[float, float] = (1.0, 99.0)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "min_per_epoch", "anneal_every"):
            if getattr(self, name) < 1:
                raise InvalidParamsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tile % 16 or self.tile < 32:
            raise InvalidParamsError(f"tile must be a multiple of 16 and >= 32, got {self.tile}")
        if self.optimizer not in ("sgd", "adamw"):
            raise InvalidParamsError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if not 0 <= self.scale_range < 2:
            raise InvalidParamsError(f"scale_range must be in [0, 2), got {self.scale_range}")

    def learning_rate_at(self, epoch: int) -> float:
        """Learning rate for ``epoch`` (0-based)."""
        if epoch < self.warmup_epochs:
            return self.learning_rate * (epoch + 1) / (self.warmup_epochs + 1)
        into_anneal = epoch - (self.epochs - self.anneal_epochs)
        if self.anneal_epochs and into_anneal >= 0:
            return self.learning_rate / 2 ** (into_anneal // self.anneal_every + 1)
        return self.learning_rate


@dataclass(frozen=True)
class TrainingImage:
    """A training image ready for augmentation.

    Attributes:
        stack: ``(C_in, Y, X)`` float32 normalised network input.
        flows: ``(2, Y, X)`` float32 unit flows.
        labels: ``(Y, X)`` int32 labels.
        diameter: median cell diameter in pixels.
    """

    stack: np.ndarray
    flows: np.ndarray
    labels: np.ndarray
    diameter: float


@dataclass
class TrainResult:
    """The trained model and its per-epoch mean losses."""

    model: SegmentationModel
    losses: list[float] = field(default_factory=list)
    n_images: int = 0


ProgressFn = Callable[[int, int, float], None]


def prepare_images(
    images: Sequence[Annotated], *, n_in: int, config: TrainConfig
) -> list[TrainingImage]:
    """Normalise images and compute flow targets; drops images with < ``min_rois`` cells."""
    prepared = []
    for item in images:
        labels = np.asarray(item.labels).astype(np.int32)
        if len(np.unique(labels)) - 1 < config.min_rois:
            continue
        stack = select_channels(np.asarray(item.image), *item.channels, n_in=n_in)
        prepared.append(
            TrainingImage(
                stack=normalize(stack, *config.percentiles),
                flows=masks_to_flows(labels),
                labels=labels,
                diameter=median_diameter(labels),
            )
        )
    return prepared


def _sample_transform(
    item: TrainingImage, tile: int, diam_mean: float, scale_range: float, rng: np.random.Generator
) -> tuple[torch.Tensor, np.ndarray]:
    """Sampling grid ``(1, tile, tile, 2)`` and the 2×2 vector map for one augmented crop."""
    scale = diam_mean / item.diameter * (1 + scale_range * (rng.random() - 0.5))
    angle = rng.uniform(0, 2 * np.pi)
    flip = np.diag([1.0, -1.0 if rng.random() < 0.5 else 1.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    out_to_src = rotation @ flip / scale  # (y, x) offsets in the crop → source pixels
    height, width = item.labels.shape
    centre = np.array([rng.uniform(0, height), rng.uniform(0, width)])
    offsets = np.arange(tile) - (tile - 1) / 2
    grid_yx = np.stack(np.meshgrid(offsets, offsets, indexing="ij"), axis=-1) @ out_to_src.T
    src = grid_yx + centre
    norm_x = (2 * src[..., 1] + 1) / width - 1
    norm_y = (2 * src[..., 0] + 1) / height - 1
    grid = torch.from_numpy(np.stack([norm_x, norm_y], axis=-1)[None].astype(np.float32))
    # flow vectors transform with the inverse map; scale drops out after normalisation
    vector_map = flip @ rotation.T
    return grid, vector_map


def augment_batch(
    items: Sequence[TrainingImage],
    *,
    tile: int,
    diam_mean: float,
    scale_range: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random rescale, rotation, flip and crop of each item.

    Returns:
        inputs ``(B, C_in, tile, tile)``, unit flows ``(B, 2, tile, tile)`` and
        foreground ``(B, tile, tile)``, all float32.
    """
    inputs, flows, foreground = [], [], []
    for item in items:
        grid, vector_map = _sample_transform(item, tile, diam_mean, scale_range, rng)
        stack = torch.from_numpy(item.stack)[None]
        inputs.append(F.grid_sample(stack, grid, mode="bilinear", align_corners=False)[0])
        flow = F.grid_sample(
            torch.from_numpy(item.flows)[None], grid, mode="bilinear", align_corners=False
        )[0]
        flows.append(torch.einsum("ij,jyx->iyx", torch.from_numpy(vector_map).float(), flow))
        labels = torch.from_numpy((item.labels > 0).astype(np.float32))[None, None]
        foreground.append(F.grid_sample(labels, grid, mode="nearest", align_corners=False)[0, 0])
    return torch.stack(inputs), torch.stack(flows), torch.stack(foreground)


def segmentation_loss(
    outputs: torch.Tensor, flows: torch.Tensor, foreground: torch.Tensor
) -> torch.Tensor:
    """``MSE(outputs[:, :2], 5 · flows) / 2 + BCE(outputs[:, 2], foreground)``."""
    flow_loss = F.mse_loss(outputs[:, :2], NET_FLOW_SCALE * flows) / 2
    return flow_loss + F.binary_cross_entropy_with_logits(outputs[:, 2], foreground)


def _optimizer(model: SegmentationModel, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.net.parameters()
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.learning_rate, momentum=0.9, weight_decay=config.weight_decay
    )


def _epoch_order(n_images: int, config: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    draws = max(n_images, config.min_per_epoch)
    return rng.choice(n_images, size=draws, replace=draws > n_images)


def train(
    model: SegmentationModel,
    images: Sequence[Annotated],
    config: TrainConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    checkpoint: Path | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``images`` (from scratch or fine-tuning) and return it.

    Args:
        model: the model to train; its ``diam_mean`` sets the training scale.
        images: annotated images (channels-last image, labels, channels).
        config: hyper-parameters; defaults to ``TrainConfig()``.
        progress: called after each epoch with ``(epoch, epochs, mean loss)``.
        checkpoint: a ``.safetensors`` path rewritten after every epoch (fp32).
    """
    config = config or TrainConfig()
    prepared = prepare_images(images, n_in=model.config.in_channels, config=config)
    if not prepared:
        raise ZooError(f"no training image has at least {config.min_rois} cells")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    optimizer = _optimizer(model, config)
    result = TrainResult(model=model, n_images=len(prepared))
    model.net.train()
    for epoch in range(config.epochs):
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate_at(epoch)
        order = _epoch_order(len(prepared), config, rng)
        losses = []
        for first in range(0, len(order), config.batch_size):
            batch = [prepared[i] for i in order[first : first + config.batch_size]]
            inputs, flows, foreground = augment_batch(
                batch, tile=config.tile, diam_mean=model.diam_mean,
                scale_range=config.scale_range, rng=rng,
            )
            outputs, _ = model.net(inputs)
            loss = segmentation_loss(outputs, flows, foreground)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        result.losses.append(float(np.mean(losses)))
        if not math.isfinite(result.losses[-1]):
            raise ZooError(f"training diverged at epoch {epoch} (loss {result.losses[-1]})")
        if checkpoint is not None:
            model.net.eval()
            model.save(checkpoint)
            model.net.train()
        if progress is not None:
            progress(epoch + 1, config.epochs, result.losses[-1])
    model.net.eval()
    return result


def fit_size_model(
    model: SegmentationModel,
    images: Sequence[Annotated],
    *,
    view: int = 256,
    scales: Sequence[float] = (0.6, 0.8, 1.0, 1.25, 1.6),
    config: TrainConfig | None = None,
) -> SizeRegressor:
    """Fit and attach the model's size regressor (style vector → diameter).

    Each image is rescaled by each of ``scales`` and its central ``view`` crop goes
    through the network at native scale, as the predictor does when it estimates the
    diameter; the regression target is the rescaled median cell diameter.
    """
    config = config or TrainConfig()
    prepared = prepare_images(images, n_in=model.config.in_channels, config=config)
    if not prepared:
        raise ZooError(f"no image has at least {config.min_rois} cells to fit the size model")
    divisor = model.config.divisor
    styles, diameters = [], []
    model.net.eval()
    with torch.inference_mode():
        for item in prepared:
            for factor in scales:
                stack = resize(item.stack, scaled_shape(item.stack.shape[1:], factor))
                crop = pad_to_divisor(central_crop(stack, view), divisor)
                _, style = model.net(torch.from_numpy(crop)[None])
                styles.append(style[0].numpy())
                diameters.append(item.diameter * factor)
    model.size = SizeRegressor.fit(np.array(styles), np.array(diameters), model.diam_mean)
    return model.size
