"""The style pass: one small look at an image that serves both routing and the size estimate.

How it works, for one image and the embedding model (the generalist whose styles the
router's bank holds):

1. **Size.** The diameter is the one given, else the model's size regressor applied to the
   style of the central ``style_size`` crop at the image's own scale (the crop its
   regressor was fitted on), else the model's mean diameter.
2. **Style.** ``n_tiles`` crops spread over the image are cut at the image's own scale,
   ``tile × diameter / diam_mean`` native pixels each, and resized to ``tile`` pixels: the
   cells then have the model's diameter whatever the image's magnification, so an image,
   an upsampled copy and a crop of it give the same style. The crops run as one batch;
   their L2-normalised styles are averaged and normalised again.

Routing uses the style; the segmentation pass uses the diameter, so a routed image costs
two small forward passes more than nothing, and when it is routed to the embedding model
itself, the size pass is not run again. The same function embeds a bank's references and
a query, so the two can never differ; the bank records the ``EmbedParams`` it used.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from zoo.errors import InvalidParamsError
from zoo.params import EmbedParams, PredictParams
from zoo.predict import Predictor
from zoo.preprocess import resize
from zoo.tiling import pad_to_divisor


@dataclass(frozen=True)
class StylePass:
    """What the style pass learns about one image.

    Attributes:
        style: ``(style_dim,)`` float32, L2-normalised routing style.
        diameter: the cell diameter in pixels (given, or estimated).
        timings: seconds spent on ``diameter`` and ``style``.
    """

    style: np.ndarray
    diameter: float
    timings: dict[str, float] = field(default_factory=dict)


def style_pass(
    predictor: Predictor,
    stack: np.ndarray,
    params: PredictParams,
    embed: EmbedParams | None = None,
) -> StylePass:
    """The routing style and the diameter of one prepared image.

    Args:
        predictor: the embedding model.
        stack: ``(C_in, Y, X)`` normalised input (``predictor.prepare``).
        params: ``diameter`` None estimates it; the rest as for a prediction.
        embed: crop size and count; default ``EmbedParams()``.
    """
    embed = embed or EmbedParams()
    start = time.perf_counter()
    diameter = predictor.diameter_for(stack, params)
    middle = time.perf_counter()
    crops = style_crops(stack, predictor.model.diam_mean / diameter, embed,
                        divisor=predictor.model.config.divisor)
    _, styles = predictor.runner.run(crops)
    end = time.perf_counter()
    return StylePass(mean_style(styles), diameter,
                     {"diameter": middle - start, "style": end - middle})


def embed_many(
    predictor: Predictor,
    images: Iterable[np.ndarray],
    params: PredictParams | Sequence[PredictParams] | None = None,
    embed: EmbedParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``style_pass`` for many images (a style bank's references).

    Args:
        predictor: the embedding model.
        images: channels-last images.
        params: one ``PredictParams`` for all, or one per image (e.g. their channels).
        embed: crop size and count.

    Returns:
        ``(N, style_dim)`` float32 L2-normalised styles and ``(N,)`` float64 diameters, in
        input order.
    """
    each = (itertools.repeat(params or PredictParams()) if not isinstance(params, Sequence)
            else iter(params))
    styles, diameters = [], []
    for image, own in zip(images, each):
        result = style_pass(predictor, predictor.prepare(image, own), own, embed)
        styles.append(result.style)
        diameters.append(result.diameter)
    if not styles:
        return np.zeros((0, predictor.model.config.style_dim), np.float32), np.zeros(0)
    return np.stack(styles), np.asarray(diameters, dtype=np.float64)


def style_crops(
    stack: np.ndarray, scale: float, embed: EmbedParams, *, divisor: int = 8
) -> np.ndarray:
    """The crops the style pass looks at: ``(n, C, tile, tile)`` float32.

    Args:
        stack: ``(C, Y, X)`` image at its own resolution.
        scale: the model's diameter over the image's (> 0).
        embed: ``tile`` and ``n_tiles``.
        divisor: the network's size divisor (``tile`` is rounded up to it).

    A crop covers ``tile / scale`` native pixels; along an axis shorter than that, the
    whole axis is taken and the resized crop is padded by reflection up to ``tile``.
    Crop centres sit on a ``sqrt(n_tiles)``-square grid at the centres of equal parts of
    the image; crops that coincide (a small image) are kept once.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise InvalidParamsError(f"scale must be a positive number, got {scale}")
    tile = int(math.ceil(embed.tile / divisor) * divisor)
    _, height, width = stack.shape
    side = tile / scale  # native pixels per crop side
    per_axis = int(round(math.sqrt(embed.n_tiles)))
    boxes = []
    for fy in ((i + 0.5) / per_axis for i in range(per_axis)):
        for fx in ((j + 0.5) / per_axis for j in range(per_axis)):
            box = (*_span(height, fy, side), *_span(width, fx, side))
            if box not in boxes:
                boxes.append(box)
    crops = [_crop(stack, box, scale, tile, divisor) for box in boxes]
    return np.ascontiguousarray(np.stack(crops), dtype=np.float32)


def mean_style(styles: np.ndarray) -> np.ndarray:
    """The L2-normalised mean of L2-normalised rows of ``(n, S)``: ``(S,)`` float32."""
    styles = np.asarray(styles, dtype=np.float64)
    unit = styles / np.maximum(np.linalg.norm(styles, axis=1, keepdims=True), 1e-12)
    mean = unit.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def _span(length: int, centre_fraction: float, side: float) -> tuple[int, int]:
    """``[start, stop)`` of a crop of ``side`` pixels centred at ``centre_fraction`` of an
    axis of ``length``, kept inside the axis (the whole axis when it is shorter)."""
    size = min(length, max(1, int(round(side))))
    start = int(round(centre_fraction * length - size / 2))
    start = min(max(start, 0), length - size)
    return start, start + size


def _crop(stack: np.ndarray, box: tuple[int, int, int, int], scale: float, tile: int,
          divisor: int) -> np.ndarray:
    top, bottom, left, right = box
    region = stack[:, top:bottom, left:right]
    target = (min(tile, max(1, round(region.shape[1] * scale))),
              min(tile, max(1, round(region.shape[2] * scale))))
    resized = resize(np.ascontiguousarray(region, dtype=np.float32), target)
    pad_y, pad_x = tile - resized.shape[1], tile - resized.shape[2]
    if pad_y or pad_x:
        resized = np.pad(resized, ((0, 0), (0, pad_y), (0, pad_x)), mode="symmetric")
    return pad_to_divisor(resized, divisor)
