"""One normalisation for the whole image: percentiles from every pixel, applied per block.

The whole-image predictor maps each input channel's 1st/99th percentile to 0/1. Blocks must
share those values, or the same pixel would be normalised differently in two blocks (and
the result would depend on the block size). ``Histogram`` gathers, block by block, what the
percentiles need, and ``percentiles`` turns it into the values ``np.percentile`` gives on
the whole image:

- 8- and 16-bit integer images: a full histogram per channel, so the percentiles are exact
  (bit for bit those of ``np.percentile``, linear method, on the float32 channel);
- other dtypes: every pixel on a global grid of stride ``s`` (at most ``MAX_SAMPLES``
  pixels), so the sample does not depend on the blocks either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoo.errors import InvalidImageError
from zoo.large.blocks import Window
from zoo.preprocess import normalize

#: Pixels a non-integer image contributes to its percentile estimate.
MAX_SAMPLES = 4 * 2**20
_EXACT_KINDS = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16)}


@dataclass(frozen=True)
class Sampling:
    """How an image's percentiles are gathered.

    Attributes:
        exact: histogram every pixel (8/16-bit integers) rather than sample a grid.
        stride: the grid's stride in pixels when not ``exact``.
        offset: value subtracted before histogramming (the dtype's minimum).
        bins: histogram length.
    """

    exact: bool
    stride: int
    offset: int
    bins: int

    @classmethod
    def of(cls, dtype: np.dtype, shape: tuple[int, int]) -> Sampling:
        dtype = np.dtype(dtype)
        if dtype in _EXACT_KINDS:
            info = np.iinfo(dtype)
            return cls(True, 1, int(info.min), int(info.max) - int(info.min) + 1)
        stride = max(1, math.ceil(math.sqrt(shape[0] * shape[1] / MAX_SAMPLES)))
        return cls(False, stride, 0, 0)


def gather(pixels: np.ndarray, window: Window, channels: list[int], sampling: Sampling
           ) -> list[np.ndarray]:
    """What ``window``'s pixels ``(h, w, C)`` add to each channel in ``channels``: a histogram
    ``(bins,)`` int64, or the sampled values (float32) on the global grid."""
    out = []
    for channel in channels:
        values = pixels[..., channel]
        if sampling.exact:
            shifted = values.astype(np.int64).ravel() - sampling.offset
            out.append(np.bincount(shifted, minlength=sampling.bins).astype(np.int64))
        else:
            s = sampling.stride
            first_y, first_x = -window.y0 % s, -window.x0 % s
            sample = values[first_y::s, first_x::s].astype(np.float32).ravel()
            if not np.all(np.isfinite(sample)):
                raise InvalidImageError("image contains NaN or infinite values")
            out.append(sample)
    return out


def combine(parts: list[list[np.ndarray]], sampling: Sampling) -> list[np.ndarray]:
    """Sum histograms (or join samples) of many windows, channel by channel."""
    if not parts:
        raise InvalidImageError("no pixels to normalise")
    merged = []
    for channel in range(len(parts[0])):
        pieces = [part[channel] for part in parts]
        merged.append(np.sum(pieces, axis=0) if sampling.exact else np.concatenate(pieces))
    return merged


def percentiles(data: np.ndarray, sampling: Sampling, lower: float, upper: float
                ) -> tuple[float, float]:
    """The ``lower`` and ``upper`` percentiles of one channel's gathered ``data``."""
    if not sampling.exact:
        lo, hi = np.percentile(data, [lower, upper])
        return float(lo), float(hi)
    counts = np.asarray(data, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise InvalidImageError("no pixels to normalise")
    cumulative = np.cumsum(counts)
    # np.percentile's linear method, step by step, on the sorted float32 values
    q = np.true_divide(np.asarray([lower, upper], dtype=np.float64), 100)
    virtual = (total - 1) * q
    previous = np.floor(virtual)
    following = previous + 1
    last = virtual >= total - 1
    previous[last] = following[last] = total - 1
    gamma = virtual - previous

    def order_statistic(ranks: np.ndarray) -> np.ndarray:
        index = np.searchsorted(cumulative, ranks.astype(np.int64), side="right")
        return (index + sampling.offset).astype(np.float32)

    a, b = order_statistic(previous), order_statistic(following)
    diff = b - a
    result = a + diff * gamma
    high = gamma >= 0.5
    result[high] = (b - diff * (1 - gamma))[high]
    return float(result[0]), float(result[1])


def apply(stack: np.ndarray, bounds: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Normalise ``(C_in, h, w)`` with per-channel ``(low, high)``: low → 0, high → 1
    (``zoo.preprocess.normalize`` with the whole image's bounds, so a block equals the
    whole-image input bit for bit)."""
    return normalize(stack, bounds=bounds)
