"""Deterministic synthetic microscopy: raw-looking images plus instance labels in six styles.

Each style imitates one image family that Cellpose 2.0 routes to its own specialist model:

* ``tissue``: dense two-channel tissue (TissueNet): bright, patchy membranes in channel 0
  and a textured nucleus inside every cell in channel 1.
* ``nuclei``: fluorescent nuclei only (2018 Data Science Bowl): roundish, some touching,
  brightness varying several-fold, chromatin texture, a few condensed bright nuclei, dark
  background.
* ``phase``: phase contrast (LIVECell): grey background, dark-ish cells with bright halos;
  either a confluent monolayer or sparse elongated neuron-like cells with neurites.
* ``brightfield``: slightly defocused brightfield (EVICAN): cells a few percent darker than
  a bright, vignetted background, edges visible as a faint defocus fringe, dust.
* ``cyto``: sparse cultured cells with thin, branching processes in a cytoplasm channel
  (Cellpose ``cyto``), with a nuclear channel in about three images out of four.
* ``twophoton``: low-SNR two-photon GCaMP-like somata (most with a dark nuclear hole) on
  textured neuropil with dark blood vessels, a few photons per pixel, plus out-of-focus
  somata.

Channel convention: every image is ``(Y, X, 2)`` float32 in raw camera counts (offset + gain x
photo-electrons + read noise, clipped to ``[0, 65535]``), never normalised. Channel 0 holds the
cytoplasm / membrane / main signal; channel 1 holds the nuclear stain, or exact zeros when the
style has none. ``Sample.channels`` says which: ``(0, 1)`` or ``(0, None)``.

Annotation conventions (Cellpose 2.0, Figure 1) differ between styles, each a consistent rule:

* ``tissue``, ``phase``, ``brightfield``: every cell in the image is labelled.
* ``nuclei``: every nucleus is labelled.
* ``cyto``: nuclei *without cytoplasm* are visible in channel 1 but not labelled (Cellpose's
  own rule); every cell with cytoplasm is labelled, including its processes.
* ``twophoton``: out-of-focus somata are visible but not labelled; only in-focus somata
  are. Out-of-focus ones are blurred by an extra 2-3 px and add only 0.2-0.3 (in units of a
  typical focused soma) above the neuropil; focused cytoplasm is at least ~0.55 and sharp.

The objects visible but deliberately left out are returned in ``Sample.unannotated``.

How it works: cell outlines are irregular ellipses painted by a small numba kernel (a pixel
goes to the cell of smallest normalised distance, so neighbours meet on curved borders), then
each cell keeps its largest 4-connected part. Cells may grow thin processes, and get an
elliptic nucleus at their deepest point. A style-specific optical model turns the label
geometry into an expected photon image (fluorescence; phase contrast as a high-passed
optical thickness, which gives dark cells with bright halos; defocused brightfield as
absorption plus a Laplacian fringe), adds texture, debris, PSF blur and uneven illumination,
and a camera model adds Poisson-Gaussian noise. Every random draw comes from one
``numpy.random.Generator`` seeded from ``(seed, sha256(style))`` (never Python's salted
``hash``), so results are identical across runs and processes; bit-identity across CPU
platforms is not promised (FFT and libm rounding).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit
from scipy import fft as sfft
from scipy import ndimage

from zoo.data.shapes import ShapeParams
from zoo.errors import InvalidParamsError

STYLES: tuple[str, ...] = ("tissue", "nuclei", "phase", "brightfield", "cyto", "twophoton")
"""Names of the imaging styles ``generate`` knows."""

_MAX_COUNTS = 65535.0
_MIN_CELLS = 8


@dataclass(frozen=True)
class StyleSpec:
    """Knobs of one imaging style that are not geometry details.

    Attributes:
        diameter_range: ``(low, high)`` of the per-image mean cell diameter in pixels (drawn
            log-uniformly). Processes make the measured ``Sample.diameter`` somewhat larger.
        density_range: ``(low, high)`` fraction of grid sites that hold a cell.
        blur_range: ``(low, high)`` sigma in pixels of the Gaussian PSF.
        photons: expected photo-electrons per pixel of a typical bright cell (fluorescence)
            or of the background (transmitted light); the per-image exposure varies around it.
        gain: camera counts per photo-electron.
        offset: camera baseline in counts.
        read_noise: standard deviation of the Gaussian read noise in counts.
    """

    diameter_range: tuple[float, float]
    density_range: tuple[float, float]
    blur_range: tuple[float, float]
    photons: float
    gain: float = 1.0
    offset: float = 100.0
    read_noise: float = 3.0

    def __post_init__(self) -> None:
        for name in ("diameter_range", "density_range", "blur_range"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise InvalidParamsError(f"{name} must satisfy 0 <= low <= high, got {(low, high)}")
        if self.diameter_range[0] < 4:
            raise InvalidParamsError(
                f"diameter_range must start at >= 4 px, got {self.diameter_range}"
            )
        if self.density_range[0] <= 0 or self.density_range[1] > 1:
            raise InvalidParamsError(f"density_range must lie in (0, 1], got {self.density_range}")
        for name in ("photons", "gain"):
            if getattr(self, name) <= 0:
                raise InvalidParamsError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.offset < 0 or self.read_noise < 0:
            raise InvalidParamsError(
                f"offset and read_noise must be >= 0, got {self.offset}, {self.read_noise}"
            )


STYLE_SPECS: dict[str, StyleSpec] = {
    "tissue": StyleSpec((16.0, 26.0), (0.85, 1.0), (0.7, 1.2), photons=250.0),
    "nuclei": StyleSpec((10.0, 30.0), (0.35, 0.9), (0.6, 1.2), photons=900.0, read_noise=4.0),
    "phase": StyleSpec((16.0, 28.0), (0.3, 1.0), (0.7, 1.1), photons=500.0, read_noise=4.0),
    "brightfield": StyleSpec((28.0, 44.0), (0.35, 0.7), (1.3, 2.0), photons=3000.0, read_noise=6.0),
    "cyto": StyleSpec((30.0, 46.0), (0.3, 0.55), (0.9, 1.5), photons=800.0),
    "twophoton": StyleSpec(
        (12.0, 20.0), (0.45, 0.8), (0.9, 1.4), photons=9.0, gain=25.0, offset=40.0, read_noise=12.0
    ),
}
"""Default ``StyleSpec`` of every style in ``STYLES``."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One synthetic image with its instance labels.

    Attributes:
        image: ``(Y, X, 2)`` float32 raw camera counts; channel 0 = cytoplasm / main signal,
            channel 1 = nucleus or zeros.
        labels: ``(Y, X)`` int32, 0 = background, 1..N = cells (consecutive).
        style: the style name, one of ``STYLES``.
        diameter: median equivalent diameter ``sqrt(4 area / pi)`` of the labelled cells in
            pixels (Cellpose's ``diameters``); 0.0 when there are none.
        channels: ``(cyto, nucleus)`` channel indices, ``(0, 1)`` or ``(0, None)``.
        unannotated: ``(Y, X)`` int32 labels of objects that are visible in the image but,
            by the style's annotation convention, absent from ``labels``; zeros if none.
    """

    image: np.ndarray
    labels: np.ndarray
    style: str
    diameter: float
    channels: tuple[int, int | None]
    unannotated: np.ndarray


@dataclass(frozen=True)
class _Cells:
    """Label geometry plus the per-cell ellipse orientation, index 0 unused."""

    labels: np.ndarray  # (Y, X) int32, 1..N consecutive
    angle: np.ndarray  # (N + 1,) float64, long-axis angle in radians
    ratio: np.ndarray  # (N + 1,) float64, long/short axis ratio


@dataclass(frozen=True)
class _Scene:
    """Expected photo-electrons before the camera, and the labels that go with them."""

    signal: np.ndarray  # (Y, X, 2) float32 >= 0
    labels: np.ndarray
    unannotated: np.ndarray
    channels: tuple[int, int | None]


# ----------------------------------------------------------------------------- public API


def generate(
    style: str,
    *,
    seed: int,
    shape: tuple[int, int] = (256, 256),
    spec: StyleSpec | None = None,
) -> Sample:
    """Draw one synthetic image with labels.

    Args:
        style: one of ``STYLES``.
        seed: non-negative integer; the same ``(style, seed, shape, spec)`` gives identical
            arrays.
        shape: ``(Y, X)`` of the image, each at least 32.
        spec: style knobs; defaults to ``STYLE_SPECS[style]``.

    Returns:
        A ``Sample``; see its docstring for shapes, dtypes and the channel convention.

    Raises:
        InvalidParamsError: unknown style, negative seed or too small shape.
    """
    _check_style(style)
    shape = _check_shape(shape)
    if int(seed) != seed or seed < 0:
        raise InvalidParamsError(f"seed must be a non-negative integer, got {seed!r}")
    spec = spec or STYLE_SPECS[style]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _style_key(style)]))
    scene = _RENDERERS[style](rng, shape, spec)
    image = _expose(rng, scene, spec)
    return Sample(
        image=image,
        labels=scene.labels,
        style=style,
        diameter=median_diameter(scene.labels),
        channels=scene.channels,
        unannotated=scene.unannotated,
    )


def generate_dataset(
    styles: Sequence[str],
    n_per_style: int,
    *,
    seed: int,
    shape: tuple[int, int] = (256, 256),
) -> list[Sample]:
    """Draw ``n_per_style`` images of each style, style by style.

    Image ``i`` of ``style`` is ``generate(style, seed=sample_seed(style, i, seed=seed))``, so
    it does not depend on which other styles or how many images are requested.

    Args:
        styles: style names, each one of ``STYLES``.
        n_per_style: number of images per style, >= 0.
        seed: base seed, a non-negative integer.
        shape: ``(Y, X)`` of every image.

    Returns:
        ``len(styles) * n_per_style`` samples ordered by style, then index.

    Raises:
        InvalidParamsError: unknown style or negative count.
    """
    if isinstance(styles, str):
        styles = (styles,)
    for style in styles:
        _check_style(style)
    if n_per_style < 0:
        raise InvalidParamsError(f"n_per_style must be >= 0, got {n_per_style}")
    return [
        generate(style, seed=sample_seed(style, index, seed=seed), shape=shape)
        for style in styles
        for index in range(n_per_style)
    ]


def sample_seed(style: str, index: int, *, seed: int) -> int:
    """Seed of image ``index`` of ``style`` in a dataset with base ``seed`` (stable hash).

    Returns:
        A 63-bit non-negative integer derived with ``numpy.random.SeedSequence`` from
        ``(seed, sha256(style), index)``; Python's salted ``hash`` is never used.
    """
    state = np.random.SeedSequence([int(seed), _style_key(style), int(index)]).generate_state(
        2, dtype=np.uint32
    )
    return (int(state[0]) << 31) | (int(state[1]) >> 1)


def median_diameter(labels: np.ndarray) -> float:
    """Median equivalent diameter ``sqrt(4 area / pi)`` of the cells in ``labels``.

    Args:
        labels: ``(Y, X)`` integer labels, 0 = background.

    Returns:
        The diameter in pixels, 0.0 if there are no cells.
    """
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    if len(areas) == 0:
        return 0.0
    return float(np.median(np.sqrt(areas * 4.0 / np.pi)))


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise InvalidParamsError(f"unknown style {style!r}; valid styles are {', '.join(STYLES)}")


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) < 32:
        raise InvalidParamsError(f"shape must be (Y, X) with both >= 32, got {shape!r}")
    return int(shape[0]), int(shape[1])


def _style_key(style: str) -> int:
    return int.from_bytes(hashlib.sha256(style.encode()).digest()[:4], "little")


# ----------------------------------------------------------------------------- camera


def _expose(rng: np.random.Generator, scene: _Scene, spec: StyleSpec) -> np.ndarray:
    """Turn expected photo-electrons into raw counts: shot noise + Gaussian read noise.

    Shot noise is Poisson; above 100 expected photo-electrons it is drawn from the (then
    indistinguishable) normal approximation, which is several times faster.

    Returns:
        ``(Y, X, 2)`` float32 counts; channel 1 stays exact zeros when there is no nucleus.
    """
    exposure = spec.photons * rng.lognormal(0.0, 0.3)
    image = np.zeros(scene.signal.shape, dtype=np.float32)
    for channel in range(1 if scene.channels[1] is None else 2):
        photons = np.clip(scene.signal[..., channel] * exposure, 0.0, 1e7).astype(np.float32)
        electrons = photons + np.sqrt(photons) * rng.standard_normal(photons.shape, np.float32)
        dim = photons < 100
        electrons[dim] = rng.poisson(photons[dim])
        counts = spec.offset + spec.gain * np.round(electrons)
        counts += spec.read_noise * rng.standard_normal(photons.shape, np.float32)
        image[..., channel] = np.clip(counts, 0.0, _MAX_COUNTS)
    return image


# ----------------------------------------------------------------------------- geometry


def _ellipse_cells(
    rng: np.random.Generator, shape: tuple[int, int], params: ShapeParams, *, clump: float = 0.0
) -> _Cells:
    """Irregular, possibly touching ellipses on a jittered grid (see module docstring).

    ``clump`` > 0 modulates the keep probability with smooth noise so cells form colonies.
    """
    centres = _draw_centres(rng, shape, params, clump)
    n = len(centres)
    jitter = params.diameter_jitter * rng.standard_normal(n)
    diameter = params.diameter * np.maximum(0.4, 1 + jitter)
    ratio = rng.uniform(1.0, params.elongation, n)
    table = np.empty((n, 12), dtype=np.float64)
    table[:, 0:2] = centres
    table[:, 2] = diameter / 2 * np.sqrt(ratio)
    table[:, 3] = diameter / 2 / np.sqrt(ratio)
    table[:, 4] = rng.uniform(0.0, np.pi, n)
    table[:, 5] = params.irregularity * rng.uniform(0.5, 1.5, n)
    table[:, 6:8] = rng.integers(2, 6, size=(n, 2))
    table[:, 8] = rng.integers(6, 11, size=n)
    table[:, 9:12] = rng.uniform(0.0, 2 * np.pi, size=(n, 3))
    labels = np.zeros(shape, dtype=np.int32)
    _paint_ellipses(labels, np.full(shape, np.inf, dtype=np.float32), table)
    labels, kept = _clean_labels(labels, min_area=0.15 * np.pi * (params.diameter / 2) ** 2)
    return _Cells(
        labels=labels,
        angle=np.concatenate([[0.0], table[kept - 1, 4]]),
        ratio=np.concatenate([[1.0], ratio[kept - 1]]),
    )


def _draw_centres(
    rng: np.random.Generator, shape: tuple[int, int], params: ShapeParams, clump: float
) -> np.ndarray:
    spacing = params.diameter * params.packing
    ys = np.arange(spacing / 2, shape[0], spacing)
    xs = np.arange(spacing / 2, shape[1], spacing)
    # white noise smoothed by a Gaussian of sigma s has std 1 / (2 sqrt(pi) s)
    field = ndimage.gaussian_filter(rng.standard_normal((len(ys), len(xs))), 1.5, mode="wrap")
    field *= 2 * np.sqrt(np.pi) * 1.5
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    grid = grid + rng.uniform(-0.35, 0.35, size=grid.shape) * spacing
    keep_prob = np.clip(params.density * (1 + clump * field.ravel()), 0.0, 1.0)
    draw = rng.random(len(grid))
    keep = draw < keep_prob
    if keep.sum() < _MIN_CELLS:  # clumping must not leave an image (almost) empty
        keep[np.argsort(draw - keep_prob)[:_MIN_CELLS]] = True
    return grid[keep]


def _clean_labels(labels: np.ndarray, min_area: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Keep each label's largest 4-connected part and renumber 1..N in the original order.

    Parts smaller than ``min_area`` pixels are dropped unless they touch the image border
    (slivers squeezed out between neighbours; border cells are legitimately cut).

    Returns:
        ``(labels, kept)``: int32 labels and the original id of every new id 1..N.
    """
    labels = _largest_parts_kernel(np.ascontiguousarray(labels, dtype=np.int32))
    areas = np.bincount(labels.ravel())
    on_border = np.zeros(len(areas), dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        on_border[edge] = True
    present = (areas > 0) & ((areas >= min_area) | on_border)
    present[0] = False
    kept = np.flatnonzero(present)
    lut = np.zeros(len(present), dtype=np.int32)
    lut[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return lut[labels], kept


def _boundary(labels: np.ndarray) -> np.ndarray:
    """``(Y, X)`` bool: cell pixels with a 4-neighbour of another label (or background)."""
    edge = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:, :] != labels[:-1, :]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge & (labels > 0)


def _cell_depth(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised distance to each cell's own border.

    Returns:
        ``(depth, poles)``: ``(Y, X)`` float32 depth in [0, 1] (1 at the cell's deepest
        pixel) and ``(N + 1, 3)`` float64 rows ``(max distance, y, x)`` of that pixel.
    """
    inner = (labels > 0) & ~_boundary(labels)
    distance = ndimage.distance_transform_edt(inner).astype(np.float32)
    poles = _poles_kernel(labels, distance, int(labels.max()))
    depth = distance / np.maximum(poles[:, 0], 1.0).astype(np.float32)[labels]
    return depth, poles


def _nuclei_in_cells(
    rng: np.random.Generator, cells: _Cells, poles: np.ndarray, size: tuple[float, float]
) -> np.ndarray:
    """One elliptic nucleus near the deepest point of every cell, clipped to the cell.

    Returns:
        ``(Y, X)`` int32 with nucleus ``i`` carrying the id of its cell ``i`` (0 elsewhere).
    """
    n = len(poles) - 1
    radius = np.maximum(poles[1:, 0] * rng.uniform(*size, n), 1.5)
    stretch = np.sqrt(cells.ratio[1:])
    table = np.empty((n, 12), dtype=np.float64)
    table[:, 0:2] = poles[1:, 1:3] + rng.uniform(-0.25, 0.25, (n, 2)) * radius[:, None]
    table[:, 2] = radius * stretch
    table[:, 3] = radius / np.sqrt(stretch)
    table[:, 4] = cells.angle[1:] + rng.normal(0.0, 0.2, n)
    table[:, 5] = rng.uniform(0.02, 0.08, n)
    table[:, 6:8] = rng.integers(2, 5, size=(n, 2))
    table[:, 8] = rng.integers(5, 9, size=n)
    table[:, 9:12] = rng.uniform(0.0, 2 * np.pi, size=(n, 3))
    nuclei = np.zeros(cells.labels.shape, dtype=np.int32)
    _paint_ellipses(nuclei, np.full(nuclei.shape, np.inf, dtype=np.float32), table)
    nuclei[nuclei != cells.labels] = 0
    return nuclei


def _grow_processes(
    rng: np.random.Generator,
    cells: _Cells,
    poles: np.ndarray,
    *,
    count: tuple[int, int],
    length: tuple[float, float],
    bipolar: bool,
) -> _Cells:
    """Let every cell grow thin, wiggly processes (2-3 px wide) into the background.

    A process starts at the cell's deepest point, paints only background pixels, and stops
    where it would enter another cell, so labels stay single connected regions.

    Args:
        count: ``(low, high)`` processes per cell (inclusive).
        length: ``(low, high)`` length beyond the cell body, in cell diameters.
        bipolar: neuron-like: processes leave along the long axis, in both directions.
    """
    labels = cells.labels.copy()
    for cell in range(1, len(poles)):
        reach, y, x = poles[cell]
        if reach < 1.5:
            continue
        body = reach * cells.ratio[cell] * 1.2
        for index in range(int(rng.integers(count[0], count[1] + 1))):
            if bipolar:
                angle = cells.angle[cell] + np.pi * (index % 2) + rng.normal(0.0, 0.15)
            else:
                angle = rng.uniform(0.0, 2 * np.pi)
            extent = body + rng.uniform(*length) * 2 * reach * np.sqrt(cells.ratio[cell])
            path = _wiggle(rng, y, x, angle, extent)
            _draw_path_kernel(labels, path, cell, int(body / 0.5))
            if rng.random() < 0.35:
                start = int(len(path) * rng.uniform(0.55, 0.8))
                turn = angle + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 0.9)
                branch = _wiggle(rng, *path[start], turn, 0.35 * extent)
                _draw_path_kernel(labels, branch, cell, 0)
    labels, _ = _clean_labels(labels)
    return _Cells(labels=labels, angle=cells.angle, ratio=cells.ratio)


def _wiggle(
    rng: np.random.Generator, y: float, x: float, angle: float, extent: float
) -> np.ndarray:
    """``(K, 2)`` float64 points every 0.5 px along a gently curving path from ``(y, x)``."""
    steps = max(int(extent / 0.5), 2)
    angles = angle + np.cumsum(rng.normal(0.0, 0.06, steps))
    path = np.empty((steps, 2), dtype=np.float64)
    path[:, 0] = y + np.cumsum(0.5 * np.cos(angles))
    path[:, 1] = x + np.cumsum(0.5 * np.sin(angles))
    return path


def _extra_objects(
    rng: np.random.Generator,
    shape: tuple[int, int],
    params: ShapeParams,
    occupied: np.ndarray,
    *,
    gap: int = 2,
) -> _Cells:
    """Objects that keep at least ``gap`` px away from ``occupied`` (bool ``(Y, X)``)."""
    extra = _ellipse_cells(rng, shape, params)
    near = ndimage.maximum_filter(occupied.astype(np.uint8), size=2 * gap + 1) > 0
    hits = np.bincount(extra.labels[near], minlength=len(extra.angle))
    keep = hits == 0
    keep[0] = False
    lut = np.zeros(len(keep), dtype=np.int32)
    lut[keep] = np.arange(1, keep.sum() + 1, dtype=np.int32)
    chosen = np.concatenate([[0], np.flatnonzero(keep)])
    return _Cells(labels=lut[extra.labels], angle=extra.angle[chosen], ratio=extra.ratio[chosen])


# ----------------------------------------------------------------------------- textures, optics


def _noise(
    rng: np.random.Generator, shape: tuple[int, int], fine: float, coarse: float | None = None
) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean and unit std, float32 ``(Y, X)``.

    ``fine`` is the low-pass sigma in px; with ``coarse`` the band between the two is kept.
    The field is drawn on a padded grid and cropped so it does not wrap around.
    """
    pad = int(min(3 * (coarse or fine), 64))
    size = (shape[0] + pad, shape[1] + pad)
    spectrum = sfft.rfft2(rng.standard_normal(size, dtype=np.float32))
    fy = sfft.fftfreq(size[0]).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(size[1]).astype(np.float32)[None, :]
    freq2 = -2 * np.pi**2 * (fy**2 + fx**2)
    kernel = np.exp(fine**2 * freq2)
    if coarse is not None:
        kernel -= np.exp(coarse**2 * freq2)
    field = sfft.irfft2(spectrum * kernel, s=size)[: shape[0], : shape[1]]
    field -= field.mean()
    return (field / (field.std() + 1e-12)).astype(np.float32)


def _illumination(
    rng: np.random.Generator, shape: tuple[int, int], vignette: float, tilt: float
) -> np.ndarray:
    """Smooth ``(Y, X)`` float32 illumination, 1 at its brightest: off-centre vignette x tilt."""
    y = np.linspace(-1.0, 1.0, shape[0], dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, shape[1], dtype=np.float32)[None, :]
    cy, cx = rng.uniform(-0.5, 0.5, 2)
    angle = rng.uniform(0.0, 2 * np.pi)
    field = (1 - vignette * ((y - cy) ** 2 + (x - cx) ** 2) / 2) * (
        1 + tilt * (np.cos(angle) * y + np.sin(angle) * x)
    )
    field = np.maximum(field, 0.05)
    return (field / field.max()).astype(np.float32)


def _specks(
    rng: np.random.Generator, shape: tuple[int, int], count: int, sigma: float
) -> np.ndarray:
    """``count`` Gaussian blobs of width ``sigma``, peaks ~lognormal(0, 0.5); float32 ``(Y, X)``."""
    image = np.zeros(shape, dtype=np.float32)
    ys = rng.integers(0, shape[0], count)
    xs = rng.integers(0, shape[1], count)
    np.add.at(image, (ys, xs), rng.lognormal(0.0, 0.5, count) * 2 * np.pi * sigma**2)
    return ndimage.gaussian_filter(image, sigma)


def _per_cell(rng: np.random.Generator, n: int, spread: float, floor: float = 0.2) -> np.ndarray:
    """``(n + 1,)`` float32 lognormal per-cell factors around 1, entry 0 (background) = 0."""
    values = np.maximum(rng.lognormal(0.0, spread, n + 1), floor).astype(np.float32)
    values[0] = 0.0
    return values


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, sigma, mode="reflect", truncate=3.0)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


# ----------------------------------------------------------------------------- styles


def _render_tissue(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> _Scene:
    """Dense tissue: membrane channel 0 (bright, patchy borders), nuclear channel 1."""
    params = ShapeParams(
        diameter=_log_uniform(rng, spec.diameter_range),
        diameter_jitter=0.25,
        elongation=2.2,
        irregularity=0.12,
        density=_uniform(rng, spec.density_range),
        packing=0.8,
    )
    cells = _ellipse_cells(rng, shape, params, clump=0.5)
    labels = cells.labels
    depth, poles = _cell_depth(labels)
    nuclei = _nuclei_in_cells(rng, cells, poles, size=(0.5, 0.8))
    n = len(poles) - 1
    patchy = np.clip(1 + 0.7 * _noise(rng, shape, 0.8, 3.0), 0.0, None)
    membrane = _boundary(labels) * patchy * _per_cell(rng, n, 0.4)[labels]
    cytoplasm = 0.18 * _per_cell(rng, n, 0.5)[labels] * (1 + 0.4 * _noise(rng, shape, 1.0, 4.0))
    chromatin = np.clip(1 + 0.35 * _noise(rng, shape, 0.7, 2.5), 0.2, None)
    nucleus = _per_cell(rng, n, 0.35)[nuclei] * chromatin * (0.75 + 0.25 * depth)
    autofluorescence = 0.07 * np.clip(1 + 0.6 * _noise(rng, shape, 10.0), 0.1, None)
    blur = _uniform(rng, spec.blur_range)
    main = _blur(membrane + np.clip(cytoplasm, 0, None) + autofluorescence, blur)
    nuclear = _blur(nucleus + 0.5 * autofluorescence, blur)
    signal = np.stack([main, nuclear], axis=-1) * _illumination(rng, shape, 0.3, 0.15)[..., None]
    return _Scene(signal.astype(np.float32), labels, np.zeros_like(labels), (0, 1))


def _render_nuclei(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> _Scene:
    """Fluorescent nuclei on a dark background, single channel."""
    params = ShapeParams(
        diameter=_log_uniform(rng, spec.diameter_range),
        diameter_jitter=0.2,
        elongation=1.5,
        irregularity=0.06,
        density=_uniform(rng, spec.density_range),
        packing=_uniform(rng, (0.9, 1.35)),
    )
    cells = _ellipse_cells(rng, shape, params, clump=0.6)
    labels = cells.labels
    depth, poles = _cell_depth(labels)
    n = len(poles) - 1
    brightness = _per_cell(rng, n, 0.45)
    condensed = rng.random(n + 1) < 0.05
    brightness[condensed] *= 2.5
    chromatin = np.clip(1 + 0.25 * _noise(rng, shape, 0.8, 3.0), 0.2, None)
    nucleus = brightness[labels] * (0.55 + 0.45 * np.sqrt(depth)) * chromatin
    background = 0.02 * np.clip(1 + 0.5 * _noise(rng, shape, 16.0), 0.0, None)
    debris = 0.3 * _specks(rng, shape, int(rng.integers(0, 8)), 1.2)
    main = _blur(nucleus + background + debris, _uniform(rng, spec.blur_range))
    main *= _illumination(rng, shape, 0.25, 0.1)
    signal = np.stack([main, np.zeros_like(main)], axis=-1)
    return _Scene(signal.astype(np.float32), labels, np.zeros_like(labels), (0, None))


def _phase_geometry(
    rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec
) -> _Cells:
    """A confluent monolayer (60%) or sparse elongated neuron-like cells with neurites (40%)."""
    diameter = _log_uniform(rng, spec.diameter_range)
    if rng.random() < 0.6:
        params = ShapeParams(
            diameter=diameter,
            diameter_jitter=0.3,
            elongation=2.2,
            irregularity=0.1,
            density=_uniform(rng, (max(0.7, spec.density_range[0]), spec.density_range[1])),
            packing=0.82,
        )
        return _ellipse_cells(rng, shape, params, clump=0.6)
    params = ShapeParams(
        diameter=0.8 * diameter,
        diameter_jitter=0.2,
        elongation=4.0,
        irregularity=0.1,
        density=_uniform(rng, (spec.density_range[0], 0.55)),
        packing=1.5,
    )
    cells = _ellipse_cells(rng, shape, params, clump=0.4)
    _, poles = _cell_depth(cells.labels)
    return _grow_processes(rng, cells, poles, count=(1, 3), length=(0.8, 2.5), bipolar=True)


def _render_phase(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> _Scene:
    """Phase contrast: intensity ~ 1 - high-pass(optical thickness): dark cells, bright halos."""
    cells = _phase_geometry(rng, shape, spec)
    labels = cells.labels
    depth, poles = _cell_depth(labels)
    nuclei = _nuclei_in_cells(rng, cells, poles, size=(0.45, 0.7))
    n = len(poles) - 1
    granules = np.clip(_noise(rng, shape, 0.8, 2.5), 0.0, None)
    thickness = _per_cell(rng, n, 0.25, 0.5)[labels] * (
        depth**0.35 * (1 + 0.1 * _noise(rng, shape, 1.0, 4.0)) + 0.1 * granules
    )
    thickness += 0.25 * (nuclei > 0) * (1 + 1.5 * _specks(rng, shape, 3 * n, 0.9))
    thickness += 0.8 * _specks(rng, shape, int(rng.integers(5, 30)), 1.0) * (labels == 0)
    thickness = _blur(thickness, _uniform(rng, spec.blur_range))
    halo = thickness - _blur(thickness, _uniform(rng, (3.0, 5.0)))
    image = 1.0 - 1.2 * halo - 0.12 * thickness
    image *= 1 + 0.02 * _noise(rng, shape, 24.0)
    image = np.clip(image, 0.05, None) * _illumination(rng, shape, 0.2, 0.1)
    signal = np.stack([image, np.zeros_like(image)], axis=-1)
    return _Scene(signal.astype(np.float32), labels, np.zeros_like(labels), (0, None))


def _render_brightfield(
    rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec
) -> _Scene:
    """Defocused brightfield: weak absorption plus a Laplacian defocus fringe, dusty optics."""
    params = ShapeParams(
        diameter=_log_uniform(rng, spec.diameter_range),
        diameter_jitter=0.25,
        elongation=2.5,
        irregularity=0.14,
        density=_uniform(rng, spec.density_range),
        packing=1.05,
    )
    cells = _ellipse_cells(rng, shape, params, clump=0.7)
    labels = cells.labels
    depth, poles = _cell_depth(labels)
    nuclei = _nuclei_in_cells(rng, cells, poles, size=(0.45, 0.65))
    n = len(poles) - 1
    thickness = _per_cell(rng, n, 0.3, 0.4)[labels] * depth**0.4
    thickness *= 1 + 0.2 * _noise(rng, shape, 1.5, 5.0)
    thickness += 0.3 * (nuclei > 0) + 0.6 * _specks(rng, shape, 2 * n, 1.2) * (nuclei > 0)
    defocus = _uniform(rng, (1.5, 3.0))
    fringe = ndimage.gaussian_laplace(thickness, defocus) * defocus**2
    sign = rng.choice([-1.0, 1.0])
    image = 1.0 - 0.1 * _blur(thickness, defocus) + sign * 0.5 * fringe
    dust = ndimage.gaussian_laplace(_specks(rng, shape, int(rng.integers(0, 3)), 3.0), 5.0)
    image += 4.0 * dust - 0.15 * _specks(rng, shape, int(rng.integers(5, 25)), 0.8)
    image *= 1 + 0.015 * _noise(rng, shape, 30.0)
    image = _blur(image, _uniform(rng, spec.blur_range)) * _illumination(rng, shape, 0.3, 0.15)
    signal = np.stack([np.clip(image, 0.02, None), np.zeros_like(image)], axis=-1)
    return _Scene(signal.astype(np.float32), labels, np.zeros_like(labels), (0, None))


def _render_cyto(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> _Scene:
    """Sparse cultured cells with processes; nuclei without cytoplasm are not labelled."""
    params = ShapeParams(
        diameter=_log_uniform(rng, spec.diameter_range),
        diameter_jitter=0.25,
        elongation=2.5,
        irregularity=0.22,
        density=_uniform(rng, spec.density_range),
        packing=1.3,
    )
    cells = _ellipse_cells(rng, shape, params, clump=0.8)
    _, poles = _cell_depth(cells.labels)
    cells = _grow_processes(rng, cells, poles, count=(1, 4), length=(0.3, 1.0), bipolar=False)
    labels = cells.labels
    depth, poles = _cell_depth(labels)
    nuclei = _nuclei_in_cells(rng, cells, poles, size=(0.45, 0.65))
    n = len(poles) - 1
    texture = np.clip(1 + 0.35 * _noise(rng, shape, 1.0, 4.0), 0.2, None)
    cytoplasm = _per_cell(rng, n, 0.5, 0.25)[labels] * (0.3 + 0.7 * depth**0.7) * texture
    cytoplasm *= np.where(nuclei > 0, 0.75, 1.0)
    orphans = _extra_objects(rng, shape, _orphan_params(rng, params.diameter), labels > 0, gap=3)
    nucleus = _nuclear_stain(rng, cells, nuclei, orphans)
    background = 0.02 * np.clip(1 + 0.5 * _noise(rng, shape, 20.0), 0.0, None)
    debris = 0.5 * _specks(rng, shape, int(rng.integers(2, 15)), 1.0)
    blur = _uniform(rng, spec.blur_range)
    illumination = _illumination(rng, shape, 0.3, 0.1)
    main = _blur(cytoplasm + background + debris, blur) * illumination
    has_nucleus = rng.random() < 0.75
    nuclear = _blur(nucleus + background, blur) * illumination * has_nucleus
    unannotated = orphans.labels if has_nucleus else np.zeros_like(labels)
    signal = np.stack([main, nuclear], axis=-1).astype(np.float32)
    return _Scene(signal, labels, unannotated, (0, 1) if has_nucleus else (0, None))


def _orphan_params(rng: np.random.Generator, diameter: float) -> ShapeParams:
    return ShapeParams(
        diameter=0.4 * diameter,
        diameter_jitter=0.15,
        elongation=1.4,
        irregularity=0.05,
        density=_uniform(rng, (0.04, 0.1)),
        packing=1.2,
    )


def _nuclear_stain(
    rng: np.random.Generator, cells: _Cells, nuclei: np.ndarray, orphans: _Cells
) -> np.ndarray:
    """Channel-1 photons: textured nuclei of the cells plus the orphan nuclei, ``(Y, X)``."""
    chromatin = np.clip(1 + 0.3 * _noise(rng, nuclei.shape, 0.8, 3.0), 0.2, None)
    inside = _per_cell(rng, len(cells.angle) - 1, 0.3)[nuclei]
    outside = 0.9 * _per_cell(rng, len(orphans.angle) - 1, 0.3)[orphans.labels]
    return 1.2 * (inside + outside) * chromatin


def _render_twophoton(
    rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec
) -> _Scene:
    """Two-photon somata on neuropil; out-of-focus somata are visible but not labelled."""
    params = ShapeParams(
        diameter=_log_uniform(rng, spec.diameter_range),
        diameter_jitter=0.15,
        elongation=1.5,
        irregularity=0.1,
        density=_uniform(rng, spec.density_range),
        packing=1.4,
    )
    cells = _ellipse_cells(rng, shape, params, clump=0.3)
    labels = cells.labels
    depth, poles = _cell_depth(labels)
    nuclei = _nuclei_in_cells(rng, cells, poles, size=(0.55, 0.75))
    n = len(poles) - 1
    hollow = (nuclei > 0) & (rng.random(n + 1) < 0.75)[labels]
    soma = np.clip(_per_cell(rng, n, 0.2), 0.75, 2.0)[labels] * (0.75 + 0.25 * depth)
    soma = np.where(hollow, 0.25 * soma, soma)
    ghosts = _extra_objects(rng, shape, params, labels > 0, gap=2)
    ghost_level = rng.uniform(0.2, 0.3, len(ghosts.angle)).astype(np.float32)
    ghost_level[0] = 0.0
    ghost = _blur(ghost_level[ghosts.labels], _uniform(rng, (2.0, 3.0)))
    vessels = _blur((np.abs(_noise(rng, shape, 14.0)) < 0.12).astype(np.float32), 1.5)
    neuropil = 0.3 * np.clip(1 + 0.5 * _noise(rng, shape, 1.0, 4.0), 0.0, None)
    neuropil *= 1 - 0.8 * vessels
    main = np.where(labels > 0, soma, neuropil + ghost)
    main = _blur(main, _uniform(rng, spec.blur_range)) * _illumination(rng, shape, 0.5, 0.1)
    signal = np.stack([main, np.zeros_like(main)], axis=-1).astype(np.float32)
    return _Scene(signal, labels, ghosts.labels, (0, None))


_RENDERERS: dict[str, Callable[[np.random.Generator, tuple[int, int], StyleSpec], _Scene]] = {
    "tissue": _render_tissue,
    "nuclei": _render_nuclei,
    "phase": _render_phase,
    "brightfield": _render_brightfield,
    "cyto": _render_cyto,
    "twophoton": _render_twophoton,
}


# ----------------------------------------------------------------------------- sample sheet


def save_sample_sheet(
    path: str | Path,
    samples_per_style: int = 3,
    shape: tuple[int, int] = (256, 256),
    seed: int = 0,
    *,
    outlines: bool = True,
) -> Path:
    """Write a PNG grid: one row per style, ``samples_per_style`` examples per row.

    Panels show the percentile-normalised image (two-channel images as green cytoplasm +
    magenta nuclei), with labelled outlines in yellow and unannotated objects in red. The
    examples are those of ``generate_dataset(STYLES, samples_per_style, seed=seed)``.
    Needs matplotlib (a dev dependency), imported here only; pyplot's global state is not
    touched.

    Args:
        path: where to write the PNG; parent folders are created.
        samples_per_style: columns of the grid.
        shape: ``(Y, X)`` of every example.
        seed: base seed of the examples.
        outlines: draw label outlines on top of the images.

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(3 * samples_per_style, 3.2 * len(STYLES)))
    axes = fig.subplots(len(STYLES), samples_per_style, squeeze=False)
    for row, style in enumerate(STYLES):
        for col in range(samples_per_style):
            sample = generate(style, seed=sample_seed(style, col, seed=seed), shape=shape)
            axes[row, col].imshow(render_panel(sample, outlines=outlines))
            axes[row, col].set_title(f"{style}  d={sample.diameter:.0f}px", fontsize=9)
            axes[row, col].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def render_panel(sample: Sample, *, outlines: bool = True) -> np.ndarray:
    """Display image of a sample: ``(Y, X, 3)`` float32 RGB in [0, 1].

    Each channel is scaled between its 0.5th and 99.8th percentile; one-channel images are
    grey, two-channel ones green (cytoplasm) + magenta (nucleus).
    """
    main = _percentile_scale(sample.image[..., 0])
    if sample.channels[1] is None:
        rgb = np.repeat(main[..., None], 3, axis=-1)
    else:
        nucleus = _percentile_scale(sample.image[..., 1])
        rgb = np.stack([nucleus, main, nucleus], axis=-1)
    if outlines:
        rgb[_boundary(sample.labels)] = (1.0, 0.9, 0.0)
        rgb[_boundary(sample.unannotated)] = (1.0, 0.15, 0.15)
    return rgb.astype(np.float32)


def _percentile_scale(channel: np.ndarray) -> np.ndarray:
    low, high = np.percentile(channel, [0.5, 99.8])
    return np.clip((channel - low) / max(high - low, 1e-6), 0.0, 1.0)


# ----------------------------------------------------------------------------- numba kernels


@njit(nogil=True, cache=True)
def _paint_ellipses(labels: np.ndarray, best: np.ndarray, table: np.ndarray) -> None:
    """Paint cells ``1..n``: a pixel goes to the cell with the smallest distance ``d < 1``.

    ``table`` rows: ``cy, cx, semi_long, semi_short, angle, irregularity, h1, h2, h3, p1, p2,
    p3``; the outline radius is modulated by ``1 + irr (sin(h1 t + p1) + sin(h2 t + p2) / 2 +
    sin(h3 t + p3) / 4)`` in the ellipse's own angle ``t``, evaluated as powers of
    ``exp(i t)`` only where the pixel could still win.
    """
    ny, nx = labels.shape
    powers = np.empty(11, dtype=np.complex128)
    for i in range(table.shape[0]):
        cy, cx, semi_long, semi_short, angle, irr = table[i, 0:6]
        h1, h2, h3 = int(table[i, 6]), int(table[i, 7]), int(table[i, 8])
        e1, e2, e3 = np.exp(1j * table[i, 9]), np.exp(1j * table[i, 10]), np.exp(1j * table[i, 11])
        reach = int(np.ceil(semi_long * (1 + 2 * irr))) + 1
        cos, sin = np.cos(angle), np.sin(angle)
        for y in range(max(0, int(cy) - reach), min(ny, int(cy) + reach + 1)):
            for x in range(max(0, int(cx) - reach), min(nx, int(cx) + reach + 1)):
                u = ((y - cy) * cos + (x - cx) * sin) / semi_long
                v = (-(y - cy) * sin + (x - cx) * cos) / semi_short
                radius = np.sqrt(u * u + v * v)
                bound = radius / (1 + 1.75 * irr)
                if bound >= 1.0 or bound >= best[y, x]:
                    continue
                step = complex(u, v) / radius if radius > 0 else 1.0 + 0j
                powers[0] = 1.0
                for k in range(1, 11):
                    powers[k] = powers[k - 1] * step
                wobble = 1 + irr * (
                    (powers[h1] * e1).imag
                    + 0.5 * (powers[h2] * e2).imag
                    + 0.25 * (powers[h3] * e3).imag
                )
                dist = radius / wobble
                if dist < 1.0 and dist < best[y, x]:
                    best[y, x] = dist
                    labels[y, x] = i + 1


@njit(nogil=True, cache=True)
def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(nogil=True, cache=True)
def _largest_parts_kernel(labels: np.ndarray) -> np.ndarray:
    """Union-find over 4-neighbours of equal label; keep each label's largest component."""
    ny, nx = labels.shape
    flat = labels.ravel()
    parent = np.arange(ny * nx)
    for i in range(ny * nx):
        if flat[i] == 0:
            continue
        for j in (i - 1, i - nx):
            if j >= 0 and flat[j] == flat[i] and (j != i - 1 or i % nx != 0):
                a, b = _find(parent, i), _find(parent, j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    size = np.zeros(ny * nx, dtype=np.int64)
    for i in range(ny * nx):
        if flat[i] != 0:
            size[_find(parent, i)] += 1
    best_root = np.full(flat.max() + 1, -1, dtype=np.int64)
    for i in range(ny * nx):
        if size[i] > 0 and (best_root[flat[i]] < 0 or size[i] > size[best_root[flat[i]]]):
            best_root[flat[i]] = i
    out = np.zeros_like(flat)
    for i in range(ny * nx):
        if flat[i] != 0 and _find(parent, i) == best_root[flat[i]]:
            out[i] = flat[i]
    return out.reshape(ny, nx)


@njit(nogil=True, cache=True)
def _poles_kernel(labels: np.ndarray, distance: np.ndarray, n: int) -> np.ndarray:
    """``(n + 1, 3)`` rows ``(max distance, y, x)`` of each label's deepest pixel."""
    poles = np.zeros((n + 1, 3))
    ny, nx = labels.shape
    for y in range(ny):
        for x in range(nx):
            lab = labels[y, x]
            if lab > 0 and distance[y, x] > poles[lab, 0]:
                poles[lab, 0] = distance[y, x]
                poles[lab, 1] = y
                poles[lab, 2] = x
    return poles


@njit(nogil=True, cache=True)
def _draw_path_kernel(labels: np.ndarray, path: np.ndarray, owner: int, thick_steps: int) -> None:
    """Paint background pixels along ``path`` (``(K, 2)`` float) with ``owner``.

    Footprint: 3x3 for the first ``thick_steps`` points, then 2x2 (still 4-connected for
    steps of 0.5 px). Stops at the image border or where the path enters another cell.
    """
    ny, nx = labels.shape
    for k in range(path.shape[0]):
        y, x = int(np.round(path[k, 0])), int(np.round(path[k, 1]))
        if y < 0 or y >= ny or x < 0 or x >= nx:
            return
        if labels[y, x] != 0 and labels[y, x] != owner:
            return
        low, high = (-1, 2) if k < thick_steps else (0, 2)
        for dy in range(low, high):
            for dx in range(low, high):
                yy, xx = y + dy, x + dx
                if 0 <= yy < ny and 0 <= xx < nx and labels[yy, xx] == 0:
                    labels[yy, xx] = owner
