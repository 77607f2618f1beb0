"""Noise fields, textures and the randomised optics of the synthetic generator.

Optics here is what happens between the specimen and the sensor: the PSF (a Gaussian of
random width), defocus (a disk, the geometric-optics blur of an out-of-focus point), haze
(light from planes above and below focus: a broad blur of the signal added back), and
uneven illumination (an off-centre vignette times a linear gradient). ``Optics`` holds one
image's draw; ``draw_optics`` draws it within ranges that scale with the cell diameter, so
small cells are not blurred beyond recognition more often than real microscopes do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage


@dataclass(frozen=True)
class Optics:
    """One image's optics.

    Attributes:
        psf_sigma: Gaussian PSF sigma in px.
        defocus: radius in px of the defocus disk (0 = in focus).
        haze: weight of out-of-focus haze (0 = none), relative to the in-focus signal.
        haze_sigma: width in px of the haze blur.
        vignette: relative fall-off from the optical centre to the corners (0 = flat).
        tilt: relative linear illumination gradient across the field (0 = flat).
    """

    psf_sigma: float
    defocus: float
    haze: float
    haze_sigma: float
    vignette: float
    tilt: float


def draw_optics(
    rng: np.random.Generator,
    diameter: float,
    blur_range: tuple[float, float],
    *,
    defocus_chance: float = 0.25,
    haze_chance: float = 0.4,
    randomise: bool = True,
) -> Optics:
    """Draw one image's optics.

    Args:
        diameter: the image's mean cell diameter in px; defocus and the PSF's upper end
            scale with it (a 10 px nucleus is never blurred by a 6 px disk).
        blur_range: ``(low, high)`` PSF sigma in px before that cap.
        defocus_chance: probability of a defocus disk.
        haze_chance: probability of out-of-focus haze.
        randomise: False gives one fixed, clean setting instead (the PSF at the geometric
            middle of its range, in focus, no haze, a faint vignette, no gradient).
    """
    low, high = blur_range
    high = max(low, min(high, 0.12 * diameter))
    if not randomise:
        return Optics(psf_sigma=float(np.sqrt(max(low, 0.3) * max(high, 0.31))), defocus=0.0,
                      haze=0.0, haze_sigma=2.0 * diameter, vignette=0.1, tilt=0.0)
    psf = float(np.exp(rng.uniform(np.log(max(low, 0.3)), np.log(max(high, 0.31)))))
    defocus = float(rng.uniform(1.0, max(1.0, 0.12 * diameter))) if rng.random() < defocus_chance else 0.0
    haze = float(rng.uniform(0.1, 0.6)) if rng.random() < haze_chance else 0.0
    return Optics(
        psf_sigma=psf,
        defocus=defocus,
        haze=haze,
        haze_sigma=float(rng.uniform(1.0, 3.0) * diameter),
        vignette=float(rng.uniform(0.0, 0.4) if rng.random() < 0.7 else 0.0),
        tilt=float(rng.uniform(0.0, 0.25) if rng.random() < 0.6 else 0.0),
    )


def focus(image: np.ndarray, optics: Optics) -> np.ndarray:
    """The PSF, then the defocus disk, of a ``(Y, X)`` image (no haze, no illumination)."""
    out = blur(image, optics.psf_sigma)
    if optics.defocus > 0:
        out = disk_blur(out, optics.defocus)
    return out


def add_haze(image: np.ndarray, optics: Optics) -> np.ndarray:
    """Fluorescence haze: ``image + haze * broad_blur(image)`` (out-of-focus emitters)."""
    if optics.haze == 0:
        return image
    return image + optics.haze * blur(image, optics.haze_sigma, truncate=2.0)


def flatten_contrast(image: np.ndarray, optics: Optics, background: float = 1.0) -> np.ndarray:
    """Transmitted-light haze: stray light pulls contrast towards ``background``."""
    if optics.haze == 0:
        return image
    keep = 1.0 - 0.6 * optics.haze
    return background + keep * (image - background)


def illumination(rng: np.random.Generator, shape: tuple[int, int], optics: Optics) -> np.ndarray:
    """Smooth ``(Y, X)`` float32 illumination, 1 at its brightest: off-centre vignette x tilt."""
    y = np.linspace(-1.0, 1.0, shape[0], dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, shape[1], dtype=np.float32)[None, :]
    cy, cx = rng.uniform(-0.6, 0.6, 2)
    angle = rng.uniform(0.0, 2 * np.pi)
    field = (1 - optics.vignette * ((y - cy) ** 2 + (x - cx) ** 2) / 2) * (
        1 + optics.tilt * (np.cos(angle) * y + np.sin(angle) * x)
    )
    field = np.maximum(field, 0.05)
    return (field / field.max()).astype(np.float32)


def noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    fine: float,
    coarse: float | None = None,
    *,
    stretch: float = 1.0,
    angle: float = 0.0,
) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean and unit std, float32 ``(Y, X)``.

    ``fine`` is the low-pass sigma in px; with ``coarse`` the band between the two is kept.
    ``stretch`` > 1 elongates the grain ``stretch`` times along ``angle`` (radians from the
    y axis): fibres. Smooth fields (``fine`` > 6 px) are drawn on a 4x coarser grid and
    interpolated. The field is drawn on a padded grid and cropped so it does not wrap.
    """
    step = 4 if fine > 6 and coarse is None and stretch == 1.0 else 1
    grid = shape if step == 1 else (-(-shape[0] // step) + 1, -(-shape[1] // step) + 1)
    fine, coarse = fine / step, (coarse / step if coarse is not None else None)
    pad = int(min(3 * stretch * (coarse or fine), 64))
    size = (sfft.next_fast_len(grid[0] + pad, real=True),
            sfft.next_fast_len(grid[1] + pad, real=True))
    spectrum = sfft.rfft2(rng.standard_normal(size, dtype=np.float32))
    fy = sfft.fftfreq(size[0]).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(size[1]).astype(np.float32)[None, :]
    if stretch != 1.0:
        along = np.cos(angle) * fy + np.sin(angle) * fx
        across = -np.sin(angle) * fy + np.cos(angle) * fx
        freq2 = -2 * np.pi**2 * (stretch**2 * along**2 + across**2)
    else:
        freq2 = -2 * np.pi**2 * (fy**2 + fx**2)
    kernel = np.exp(fine**2 * freq2)
    if coarse is not None:
        kernel -= np.exp(coarse**2 * freq2)
    field = sfft.irfft2(spectrum * kernel, s=size)[: grid[0], : grid[1]]
    if step > 1:
        field = ndimage.zoom(field, step, order=1)[: shape[0], : shape[1]]
    field = field - field.mean()
    return (field / (field.std() + 1e-12)).astype(np.float32)


def specks(
    rng: np.random.Generator, shape: tuple[int, int], count: int, sigma: float
) -> np.ndarray:
    """``count`` Gaussian blobs of width ``sigma``, peaks ~lognormal(0, 0.5); float32 ``(Y, X)``."""
    image = np.zeros(shape, dtype=np.float32)
    ys = rng.integers(0, shape[0], count)
    xs = rng.integers(0, shape[1], count)
    np.add.at(image, (ys, xs), rng.lognormal(0.0, 0.5, count) * 2 * np.pi * sigma**2)
    return blur(image, sigma)


def chromatin(
    rng: np.random.Generator, shape: tuple[int, int], diameter: float
) -> np.ndarray:
    """Multiplicative chromatin texture around 1, float32 ``(Y, X)``, randomised per image.

    A band of smooth noise (granularity 3-12% of a nucleus) of random strength, plus bright
    heterochromatin foci and dark nucleoli, each present in some images only.
    """
    grain = diameter * rng.uniform(0.03, 0.12)
    texture = 1 + rng.uniform(0.08, 0.45) * noise(rng, shape, max(grain, 0.6), 3 * max(grain, 0.6))
    area = shape[0] * shape[1] / max(diameter, 4.0) ** 2
    if rng.random() < 0.4:  # chromocentres: bright foci
        texture += rng.uniform(0.5, 1.5) * specks(rng, shape, int(area * rng.uniform(2, 6)),
                                                 max(0.06 * diameter, 0.7))
    if rng.random() < 0.5:  # nucleoli: dark holes
        texture -= rng.uniform(0.2, 0.5) * specks(rng, shape, int(area * rng.uniform(1, 3)),
                                                 max(0.08 * diameter, 0.8))
    return np.clip(texture, 0.1, None).astype(np.float32)


def per_cell(rng: np.random.Generator, n: int, spread: float, floor: float = 0.2) -> np.ndarray:
    """``(n + 1,)`` float32 lognormal per-cell factors around 1, entry 0 (background) = 0."""
    values = np.maximum(rng.lognormal(0.0, spread, n + 1), floor).astype(np.float32)
    values[0] = 0.0
    return values


def brightness(
    rng: np.random.Generator, n: int, *, spread: tuple[float, float] = (0.2, 0.6),
    dim: float = 0.15, bright: float = 0.05,
) -> np.ndarray:
    """Per-cell brightness from very dim to saturating, ``(n + 1,)`` float32, entry 0 = 0.

    Lognormal around 1 with a per-image spread, then up to ``dim`` of the cells at 0.1-0.35
    (barely above background) and up to ``bright`` at 2.5-6 (condensed mitotic figures that
    saturate a camera exposed for the typical cell).
    """
    values = per_cell(rng, n, float(rng.uniform(*spread)), floor=0.05)
    draw = rng.random(n + 1)
    dim_share, bright_share = rng.uniform(0.0, dim), rng.uniform(0.0, bright)
    values[draw < dim_share] *= rng.uniform(0.1, 0.35, int((draw < dim_share).sum()))
    very = draw > 1 - bright_share
    values[very] = rng.uniform(2.5, 6.0, int(very.sum()))
    values[0] = 0.0
    return values


def blur(image: np.ndarray, sigma: float, truncate: float = 3.0) -> np.ndarray:
    """Gaussian blur of a ``(Y, X)`` image (reflecting borders); identity for tiny sigma.

    Wide blurs (sigma > 8 px: haze, backgrounds) run on a block-averaged copy ``sigma / 4``
    times smaller and are interpolated back, which is many times faster and smooth enough.
    """
    if sigma < 0.2:
        return image
    if sigma <= 8.0:
        return ndimage.gaussian_filter(image, sigma, mode="reflect", truncate=truncate)
    factor = int(sigma // 4)
    ny, nx = image.shape
    py, px = (-ny) % factor, (-nx) % factor
    padded = np.pad(image, ((0, py), (0, px)), mode="reflect")
    small = padded.reshape(padded.shape[0] // factor, factor, -1, factor).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma / factor, mode="reflect", truncate=truncate)
    zoom = (padded.shape[0] / small.shape[0], padded.shape[1] / small.shape[1])
    return ndimage.zoom(small, zoom, order=1, mode="nearest", grid_mode=True)[:ny, :nx].astype(
        image.dtype, copy=False)


def disk_blur(image: np.ndarray, radius: float) -> np.ndarray:
    """Convolve a ``(Y, X)`` image with a normalised, anti-aliased disk of ``radius`` px."""
    reach = int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    kernel = np.clip(radius + 0.5 - np.sqrt(yy**2 + xx**2), 0.0, 1.0).astype(np.float32)
    kernel /= kernel.sum()
    padded = np.pad(image, reach, mode="reflect")
    size = (sfft.next_fast_len(padded.shape[0] + 2 * reach, real=True),
            sfft.next_fast_len(padded.shape[1] + 2 * reach, real=True))
    product = sfft.rfft2(padded, s=size) * sfft.rfft2(kernel, s=size)
    full = sfft.irfft2(product, s=size)
    return full[2 * reach : 2 * reach + image.shape[0],
                2 * reach : 2 * reach + image.shape[1]].astype(np.float32)


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))
