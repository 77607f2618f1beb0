"""Image preparation for the network: channel selection, normalisation, resizing.

Images are channels-last: ``(Y, X)`` or ``(Y, X, C)``. The network input is
channels-first ``(C_in, Y, X)`` float32.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import InvalidImageError, InvalidParamsError


def select_channels(
    image: np.ndarray, cyto: int = 0, nucleus: int | None = None, *, n_in: int = 2
) -> np.ndarray:
    """Pick the cytoplasm and optional nucleus channel into a ``(n_in, Y, X)`` float32 stack.

    Args:
        image: ``(Y, X)`` or ``(Y, X, C)``.
        cyto: index of the cytoplasm (or only) channel.
        nucleus: index of the nuclear channel, or None for a zero channel.
        n_in: number of network input channels (first = cytoplasm, second = nucleus).
    """
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"expected an image shaped (Y, X) or (Y, X, C), got {image.shape}")
    n_channels = image.shape[-1]
    for name, index in (("cyto", cyto), ("nucleus", nucleus)):
        if index is not None and not 0 <= index < n_channels:
            raise InvalidImageError(
                f"{name} channel {index} does not exist in an image with {n_channels} channel(s)"
            )
    stack = np.zeros((n_in, *image.shape[:2]), dtype=np.float32)
    stack[0] = image[..., cyto]
    if nucleus is not None and n_in > 1:
        stack[1] = image[..., nucleus]
    return stack


def normalize(
    stack: np.ndarray,
    lower: float = 1.0,
    upper: float = 99.0,
    *,
    bounds: tuple[tuple[float, float], ...] | None = None,
) -> np.ndarray:
    """Percentile-normalise each channel of ``(C, Y, X)`` so ``lower``→0 and ``upper``→1.

    Args:
        stack: the channels, any real dtype.
        lower: percentile mapped to 0.
        upper: percentile mapped to 1.
        bounds: per-channel ``(low, high)`` values to use instead of this stack's own
            percentiles (a block of a large image, normalised as the whole image is).

    Flat channels (high == low) become zeros. Non-finite values raise.
    """
    if not np.all(np.isfinite(stack)):
        raise InvalidImageError("image contains NaN or infinite values")
    out = np.empty_like(stack, dtype=np.float32)
    for c, channel in enumerate(stack):
        if bounds is None:
            lo, hi = np.percentile(channel, [lower, upper])
        else:
            lo, hi = np.float64(bounds[c][0]), np.float64(bounds[c][1])
        out[c] = (channel - lo) / (hi - lo) if hi > lo else 0.0
    return out


def resize(stack: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(C, Y, X)`` float32 to ``(C, *shape)``."""
    if stack.shape[-2:] == tuple(shape):
        return stack
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[None]
    resized = F.interpolate(tensor, size=tuple(shape), mode="bilinear", align_corners=False)
    return resized[0].numpy()


def scaled_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """``shape`` multiplied by ``scale``, rounded, at least 1 pixel per side."""
    return max(1, int(round(shape[0] * scale))), max(1, int(round(shape[1] * scale)))


def parse_channels(text: str) -> tuple[int, int | None]:
    """``"0"`` → ``(0, None)``; ``"0,1"`` → ``(0, 1)`` (cytoplasm, optional nucleus index)."""
    parts = [p.strip() for p in text.split(",")]
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise InvalidParamsError(f"channels must be 'CYTO' or 'CYTO,NUCLEUS' (indices), got {text!r}")
    return int(parts[0]), int(parts[1]) if len(parts) == 2 else None


def central_crop(stack: np.ndarray, size: int) -> np.ndarray:
    """The central crop of at most ``size`` × ``size`` pixels of ``(C, Y, X)`` (no
    resampling): what the size-estimation pass sees, and what its regressor was fitted on."""
    _, y, x = stack.shape
    top, left = max(0, (y - size) // 2), max(0, (x - size) // 2)
    return stack[:, top : top + size, left : left + size]
