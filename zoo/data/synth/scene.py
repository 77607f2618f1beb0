"""What a style renderer returns, the per-style knobs, and the shared last steps.

A renderer draws label geometry and an expected, noise-free signal (``Scene``); ``capture``
then runs the randomised camera (``camera``) and records what was drawn (``meta``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from zoo.data.synth import camera
from zoo.errors import InvalidParamsError

Modality = Literal["fluorescence", "transmitted", "rgb"]


@dataclass(frozen=True)
class StyleSpec:
    """Knobs of one imaging style that are not geometry details.

    Attributes:
        diameter_range: ``(low, high)`` of the per-image mean cell diameter in pixels (drawn
            log-uniformly). Processes and rods make the measured ``Sample.diameter`` differ.
        density_range: ``(low, high)`` fraction of grid sites that hold a cell.
        blur_range: ``(low, high)`` sigma in pixels of the Gaussian PSF (log-uniform; the
            upper end is capped at 12% of the image's cell diameter).
        photon_range: ``(low, high)`` expected photo-electrons per pixel at the exposure
            reference (a typical bright cell in fluorescence, the background in transmitted
            light), log-uniform; the low end sets the worst shot noise.
        randomise: draw optics and camera at random (domain randomisation, the default); False
            holds them fixed and clean, so that only the specimen varies (the biology is
            always drawn).
    """

    diameter_range: tuple[float, float]
    density_range: tuple[float, float]
    blur_range: tuple[float, float]
    photon_range: tuple[float, float]
    randomise: bool = True

    def __post_init__(self) -> None:
        for name in ("diameter_range", "density_range", "blur_range", "photon_range"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise InvalidParamsError(f"{name} must satisfy 0 <= low <= high, got {(low, high)}")
        if self.diameter_range[0] < 4:
            raise InvalidParamsError(
                f"diameter_range must start at >= 4 px, got {self.diameter_range}"
            )
        if self.density_range[0] <= 0 or self.density_range[1] > 1:
            raise InvalidParamsError(f"density_range must lie in (0, 1], got {self.density_range}")
        if self.photon_range[0] <= 0:
            raise InvalidParamsError(f"photon_range must be > 0, got {self.photon_range}")


@dataclass(frozen=True)
class Scene:
    """A renderer's output: expected signal before the camera, and its labels.

    Attributes:
        signal: ``(Y, X, C)`` float32 >= 0; C = 2 (main, nucleus-or-zeros) or 3 (RGB).
        labels: ``(Y, X)`` int32, 1..N the annotated objects.
        unannotated: ``(Y, X)`` int32 of visible objects left out of ``labels``; ids
            ``1..debris_start - 1`` are the style's own (out-of-focus somata, orphan nuclei),
            ``debris_start..`` are debris.
        channels: ``(cyto, nucleus)`` indices into the channels; nucleus None = absent.
        modality: how the exposure reference is chosen (see ``capture``).
        debris_start: first debris id in ``unannotated``.
        info: renderer-specific draws worth recording in ``Sample.meta``.
    """

    signal: np.ndarray
    labels: np.ndarray
    unannotated: np.ndarray
    channels: tuple[int, int | None]
    modality: Modality
    debris_start: int = 1
    info: dict = field(default_factory=dict)


def merge_unannotated(own: np.ndarray, debris: np.ndarray) -> tuple[np.ndarray, int]:
    """``own`` labels followed by ``debris`` labels (renumbered after them) where free.

    Returns:
        ``(unannotated, debris_start)``.
    """
    start = int(own.max()) + 1
    merged = own.copy()
    free = (debris > 0) & (own == 0)
    merged[free] = debris[free] + (start - 1)
    return merged, start


def capture(rng: np.random.Generator, scene: Scene, spec: StyleSpec) -> tuple[np.ndarray, dict]:
    """Run one randomised camera over ``scene``.

    The exposure reference of a fluorescence channel is the 99th percentile of its signal
    inside the labelled cells (so a few saturating mitotic cells do not set the exposure);
    in transmitted light and RGB it is the 99.5th percentile of the whole field, shared by
    the three colour channels of an RGB camera.

    Returns:
        ``(image, meta)``: ``(Y, X, C)`` uint8 or uint16 stored values (absent channels stay
        exact zeros) and the camera draws.
    """
    signal = scene.signal
    active = signal.shape[-1] if scene.modality == "rgb" or scene.channels[1] is not None else 1
    rgb = scene.modality == "rgb"
    sensor = camera.draw_sensor(rng, spec.photon_range, 1 if rgb else active,
                                bit_depths=(8,) if rgb else (8, 12, 16),
                                headroom=(0.75, 0.98) if rgb else None,
                                saturate=(1.05, 2.0) if scene.modality == "fluorescence"
                                else (1.0, 1.08), randomise=spec.randomise)
    if rgb:
        sensor = _shared(sensor, active) if len(sensor.photons) == 1 else sensor
        level = float(np.percentile(signal, 99.5))
        reference = np.full(active, level)
    elif scene.modality == "fluorescence":
        inside = scene.labels > 0
        reference = np.array([_inside_percentile(signal[..., c], inside) for c in range(active)])
    else:
        reference = np.array([np.percentile(signal[..., c], 99.5) for c in range(active)])
    image = np.zeros(signal.shape, dtype=sensor.dtype)
    image[..., :active] = camera.expose_all(rng, signal[..., :active], reference, sensor)
    if sensor.jpeg_quality:
        if rgb:
            image = camera.jpeg(image, sensor.jpeg_quality)
        else:
            for c in range(active):
                image[..., c] = camera.jpeg(np.ascontiguousarray(image[..., c]), sensor.jpeg_quality)
    meta = {
        "bit_depth": sensor.bit_depth,
        "photons": sensor.photons[0],
        "read_noise": sensor.read_noise,
        "offset": sensor.offset,
        "headroom": sensor.headroom[0],
        "jpeg_quality": sensor.jpeg_quality,
        "saturated": float((image[..., :active] == sensor.full_scale).mean()),
    }
    return image, meta


def _inside_percentile(channel: np.ndarray, inside: np.ndarray) -> float:
    values = channel[inside] if inside.any() else channel.ravel()
    level = float(np.percentile(values, 99))
    return level if level > 0 else float(channel.max()) + 1e-6


def _shared(sensor: camera.Sensor, n: int) -> camera.Sensor:
    return camera.Sensor(
        photons=sensor.photons * n, read_noise=sensor.read_noise, bit_depth=sensor.bit_depth,
        offset=sensor.offset, headroom=sensor.headroom * n, jpeg_quality=sensor.jpeg_quality,
    )
