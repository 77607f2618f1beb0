"""The randomised camera: expected photons to stored pixel values.

What a real acquisition does to a signal, in order: photon shot noise (Poisson), sensor read
noise (Gaussian, in electrons), an analogue gain and a black-level offset, an ADC of 8, 12
or 16 bits that clips at full scale (saturation), and for some 8-bit images a lossy JPEG
save. ``Sensor`` holds one image's draw.

Exposure: the camera maps a reference level of the expected signal (``reference``: the
99th percentile inside the cells for fluorescence, of the whole field for transmitted
light) to ``headroom`` of full scale. Photons per reference unit set the noise; headroom
sets the stored range. So a very dim, noisy image can still fill an 8-bit range, and a clean
16-bit image may use only a few percent of it, as real files do. Headroom above 1 saturates
the brightest structures.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from zoo.data.synth import kernels

_BIT_DEPTHS = (8, 12, 16)
_NORMAL_ABOVE = 60.0  # expected electrons above which shot noise is drawn as a Gaussian


@dataclass(frozen=True)
class Sensor:
    """One image's camera.

    Attributes:
        photons: expected photo-electrons per unit of signal (per channel).
        read_noise: Gaussian read noise in electrons.
        bit_depth: ADC depth, 8, 12 or 16; stored as uint8 (8) or uint16.
        offset: black level as a fraction of full scale.
        headroom: where the reference level lands, as a fraction of full scale (> 1
            saturates the reference level itself).
        jpeg_quality: 0 for lossless storage, else the JPEG quality of an 8-bit save.
    """

    photons: tuple[float, ...]
    read_noise: float
    bit_depth: int
    offset: float
    headroom: tuple[float, ...]
    jpeg_quality: int

    @property
    def full_scale(self) -> int:
        return 2**self.bit_depth - 1

    @property
    def dtype(self) -> type:
        return np.uint8 if self.bit_depth == 8 else np.uint16


def draw_sensor(
    rng: np.random.Generator,
    photon_range: tuple[float, float],
    n_channels: int,
    *,
    bit_depths: tuple[int, ...] = _BIT_DEPTHS,
    saturate_chance: float = 0.15,
    jpeg_chance: float = 0.4,
    headroom: tuple[float, float] | None = None,
    saturate: tuple[float, float] = (1.05, 2.0),
    randomise: bool = True,
) -> Sensor:
    """Draw one image's camera.

    Args:
        photon_range: ``(low, high)`` photo-electrons per unit of signal (log-uniform).
        n_channels: channels exposed separately (each gets its own photons and headroom).
        bit_depths: ADC depths to choose from, uniformly.
        saturate_chance: probability that the exposure saturates the reference level.
        jpeg_chance: probability that an 8-bit image is saved as JPEG.
        headroom: ``(low, high)`` headroom when not saturating (log-uniform); by default
            from a bit-depth dependent low end (8: 0.35, 12: 0.1, 16: 0.02) to 0.95.
        saturate: ``(low, high)`` headroom of a saturating exposure (uniform).
        randomise: False gives one fixed, clean camera instead: 16-bit, photons at the
            geometric middle of ``photon_range``, headroom 0.5, read noise 2 e-, no JPEG.
    """
    if not randomise:
        return Sensor(photons=(float(np.sqrt(photon_range[0] * photon_range[1])),) * n_channels,
                      read_noise=2.0, bit_depth=16, offset=0.0015, headroom=(0.5,) * n_channels,
                      jpeg_quality=0)
    bit_depth = int(rng.choice(bit_depths))
    low, high = headroom or ({8: 0.35, 12: 0.1, 16: 0.02}[bit_depth], 0.95)
    levels = []
    for _ in range(n_channels):
        if rng.random() < saturate_chance:
            levels.append(float(rng.uniform(*saturate)))
        else:
            levels.append(float(np.exp(rng.uniform(np.log(low), np.log(high)))))
    photons = tuple(
        float(np.exp(rng.uniform(np.log(photon_range[0]), np.log(photon_range[1]))))
        for _ in range(n_channels)
    )
    offset = 0.0 if rng.random() < 0.3 else float(np.exp(rng.uniform(np.log(0.001), np.log(0.05))))
    jpeg = int(rng.integers(50, 96)) if bit_depth == 8 and rng.random() < jpeg_chance else 0
    return Sensor(
        photons=photons,
        read_noise=float(np.exp(rng.uniform(np.log(0.5), np.log(8.0)))),
        bit_depth=bit_depth,
        offset=offset,
        headroom=tuple(levels),
        jpeg_quality=jpeg,
    )


def expose(
    rng: np.random.Generator, signal: np.ndarray, reference: np.ndarray, sensor: Sensor
) -> np.ndarray:
    """Stored pixel values of one channel.

    Args:
        signal: ``(Y, X)`` float32 expected signal (>= 0) in arbitrary units.
        reference: ``(C,)`` float; ``reference[c]`` is the signal level exposed to
            ``sensor.headroom[c]``; only its first entry is used here (see ``expose_all``).
        sensor: the camera.

    Returns:
        ``(Y, X)`` of ``sensor.dtype``.
    """
    photons = np.clip(signal * (sensor.photons[0] / max(float(reference[0]), 1e-9)), 0.0, 1e8)
    seed = int(rng.integers(0, 2**31 - 1))
    electrons = kernels._shot_and_read_noise(np.ascontiguousarray(photons, dtype=np.float32),
                                             float(sensor.read_noise), seed, _NORMAL_ABOVE)
    full = sensor.full_scale
    gain = sensor.headroom[0] * full * (1 - sensor.offset) / sensor.photons[0]
    counts = np.round(sensor.offset * full + gain * electrons)
    return np.clip(counts, 0, full).astype(sensor.dtype)


def expose_all(
    rng: np.random.Generator, signal: np.ndarray, reference: np.ndarray, sensor: Sensor
) -> np.ndarray:
    """Expose each channel of ``(Y, X, C)`` with its own photons and headroom.

    Returns:
        ``(Y, X, C)`` of ``sensor.dtype``.
    """
    out = np.empty(signal.shape, dtype=sensor.dtype)
    for c in range(signal.shape[-1]):
        one = Sensor(
            photons=(sensor.photons[c],), read_noise=sensor.read_noise,
            bit_depth=sensor.bit_depth, offset=sensor.offset,
            headroom=(sensor.headroom[c],), jpeg_quality=0,
        )
        out[..., c] = expose(rng, signal[..., c], reference[c : c + 1], one)
    return out


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Save and reload an 8-bit ``(Y, X)`` grey or ``(Y, X, 3)`` RGB image as JPEG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer)).copy()
