"""Deterministic, domain-randomised synthetic microscopy: raw-looking images plus labels.

Styles (``STYLES``), each imitating an image family that real model zoos route to their own
specialist:

* ``tissue``: dense two-channel tissue (TissueNet): membrane or cytoplasm stain in channel 0,
  textured nuclei in channel 1.
* ``nuclei``: fluorescent nuclei only (2018 Data Science Bowl): clumped and touching, dim to
  saturated, chromatin texture, telophase pairs, debris.
* ``phase``: phase contrast (LIVECell): dark cells with bright halos, a monolayer or sparse
  neuron-like cells; rounded mitotic cells go phase-bright.
* ``brightfield``: unstained cells in brightfield (EVICAN): faint near focus, or defocused
  with dark rims or bright halos; grey or colour camera.
* ``cyto``: sparse cultured cells with processes in a cytoplasm channel (Cellpose ``cyto``),
  a nuclear channel in about three images out of four.
* ``twophoton``: low-SNR two-photon GCaMP-like somata on neuropil, plus out-of-focus somata.
* ``bacteria``: rod-shaped bacteria in phase contrast, dense aligned colonies, dividing rods.
* ``yeast``: round and budding yeast in phase contrast or brightfield (buds are labelled
  on their own).
* ``he``: H&E histology (RGB): haematoxylin-blue nuclei on eosin-pink tissue.
* ``dic``: differential interference contrast: cells in relief lit from one side.

Every image draws its acquisition at random (``zoo.data.synth``): PSF, defocus and haze;
Poisson-Gaussian noise down to a few photons, offset, 8/12/16-bit ADC with saturation, JPEG;
vignetting, gradients, autofluorescent background; and its biology: per-cell brightness from
very dim to saturated mitotic figures, chromatin texture, clumped, elongated, irregular and
dividing cells, and debris. ``Sample.meta`` records the draws.

Channel convention: ``Sample.image`` is channels-last, in stored camera values (never
normalised): uint8 for 8-bit cameras, uint16 for 12- and 16-bit ones (a 12-bit image never
exceeds 4095). Grey and two-channel styles are ``(Y, X, 2)``: channel 0 holds the cytoplasm
/ membrane / main signal, channel 1 the nuclear stain or exact zeros. RGB images (``he``
always; some ``brightfield``, ``dic`` and ``yeast`` images from colour cameras) are
``(Y, X, 3)``. ``Sample.channels`` says what to feed a two-channel network as
``(cyto, nucleus)``: ``(0, 1)`` or ``(0, None)``; for RGB it is ``(0, None)``, the red
channel, where haematoxylin-stained nuclei (and unstained cells) have their contrast.

Annotation conventions (Cellpose 2.0, Figure 1) differ between styles, each a consistent rule:

* ``nuclei``, ``he``: every nucleus is labelled.
* ``tissue``, ``phase``, ``brightfield``, ``dic``, ``bacteria``, ``yeast``: every cell is
  labelled; daughters of a division (and yeast buds) are labelled separately.
* ``cyto``: nuclei *without cytoplasm* are visible in channel 1 but not labelled (Cellpose's
  own rule); every cell with cytoplasm is labelled, including its processes.
* ``twophoton``: out-of-focus somata are visible but not labelled.

Visible objects left out are in ``Sample.unannotated``: the style's own (out-of-focus somata,
orphan nuclei, red blood cells in ``he``) first, then debris (``meta["debris_start"]`` is the
first debris id).

Every random draw comes from one ``numpy.random.Generator`` seeded from
``(seed, sha256(style))`` (never Python's salted ``hash``), so results are identical across
runs and processes; bit-identity across CPU platforms is not promised (FFT, libm, JPEG).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.data.synth import fluorescence, histology, transmitted
from zoo.data.synth.scene import Scene, StyleSpec, capture
from zoo.errors import InvalidParamsError

__all__ = [
    "STYLES", "STYLE_SPECS", "Sample", "StyleSpec", "generate", "generate_dataset",
    "median_diameter", "render_panel", "sample_seed", "save_sample_sheet",
]

STYLES: tuple[str, ...] = (
    "tissue", "nuclei", "phase", "brightfield", "cyto", "twophoton",
    "bacteria", "yeast", "he", "dic",
)
"""Names of the imaging styles ``generate`` knows."""

STYLE_SPECS: dict[str, StyleSpec] = {
    "tissue": StyleSpec((12.0, 30.0), (0.8, 1.0), (0.5, 2.5), (15.0, 2000.0)),
    "nuclei": StyleSpec((8.0, 40.0), (0.25, 0.95), (0.5, 3.0), (20.0, 3000.0)),
    "phase": StyleSpec((14.0, 32.0), (0.3, 1.0), (0.5, 1.5), (200.0, 20000.0)),
    "brightfield": StyleSpec((24.0, 48.0), (0.3, 0.7), (0.8, 2.5), (300.0, 30000.0)),
    "cyto": StyleSpec((26.0, 50.0), (0.25, 0.55), (0.6, 2.5), (15.0, 3000.0)),
    "twophoton": StyleSpec((10.0, 22.0), (0.45, 0.8), (0.7, 2.0), (4.0, 150.0)),
    "bacteria": StyleSpec((10.0, 24.0), (0.3, 0.9), (0.5, 1.5), (200.0, 20000.0)),
    "yeast": StyleSpec((16.0, 40.0), (0.2, 0.8), (0.6, 2.0), (200.0, 20000.0)),
    "he": StyleSpec((10.0, 30.0), (0.5, 0.95), (0.5, 1.8), (300.0, 20000.0)),
    "dic": StyleSpec((24.0, 48.0), (0.3, 0.8), (0.6, 2.0), (200.0, 20000.0)),
}
"""Default ``StyleSpec`` of every style in ``STYLES``."""

_Renderer = Callable[[np.random.Generator, tuple[int, int], StyleSpec], Scene]
_RENDERERS: dict[str, _Renderer] = {
    "tissue": fluorescence.render_tissue,
    "nuclei": fluorescence.render_nuclei,
    "phase": transmitted.render_phase,
    "brightfield": transmitted.render_brightfield,
    "cyto": fluorescence.render_cyto,
    "twophoton": fluorescence.render_twophoton,
    "bacteria": transmitted.render_bacteria,
    "yeast": transmitted.render_yeast,
    "he": histology.render_he,
    "dic": transmitted.render_dic,
}


@dataclass(frozen=True, eq=False)
class Sample:
    """One synthetic image with its instance labels.

    Attributes:
        image: ``(Y, X, 2)`` or ``(Y, X, 3)`` (RGB) uint8 or uint16 stored camera values;
            see the module docstring for the channel convention.
        labels: ``(Y, X)`` int32, 0 = background, 1..N = cells (consecutive).
        style: the style name, one of ``STYLES``.
        diameter: median equivalent diameter ``sqrt(4 area / pi)`` of the labelled cells in
            pixels (Cellpose's ``diameters``); 0.0 when there are none.
        channels: ``(cyto, nucleus)`` channel indices, ``(0, 1)`` or ``(0, None)``.
        unannotated: ``(Y, X)`` int32 labels of objects that are visible in the image but,
            by the style's annotation convention, absent from ``labels`` (debris last).
        meta: what was drawn for this image: ``modality`` ("fluorescence", "transmitted",
            "rgb"), ``bit_depth``, ``photons``, ``read_noise``, ``offset``, ``headroom``,
            ``jpeg_quality`` (0 = none), ``saturated`` (fraction of clipped pixels),
            ``psf_sigma``, ``defocus``, ``haze``, ``vignette``, ``tilt``, ``debris_start``,
            ``n_debris`` and style-specific entries; all plain numbers or strings.
    """

    image: np.ndarray
    labels: np.ndarray
    style: str
    diameter: float
    channels: tuple[int, int | None]
    unannotated: np.ndarray
    meta: dict = field(default_factory=dict)


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
    image, camera_meta = capture(rng, scene, spec)
    return Sample(
        image=image,
        labels=scene.labels,
        style=style,
        diameter=median_diameter(scene.labels),
        channels=scene.channels,
        unannotated=scene.unannotated,
        meta=_meta(scene, camera_meta),
    )


def _meta(scene: Scene, camera_meta: dict) -> dict:
    info = dict(scene.info)
    optics = info.pop("optics", None)
    meta: dict = {"modality": scene.modality, **camera_meta}
    if optics is not None:
        meta.update({name: float(getattr(optics, name))
                     for name in ("psf_sigma", "defocus", "haze", "vignette", "tilt")})
    meta["debris_start"] = int(scene.debris_start)
    meta["n_debris"] = max(0, int(scene.unannotated.max()) - scene.debris_start + 1)
    meta.update({key: (value if isinstance(value, (bool, str)) else float(value))
                 for key, value in info.items()})
    return meta


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


# ----------------------------------------------------------------------------- sample sheet


def render_panel(sample: Sample, *, outlines: bool = True) -> np.ndarray:
    """Display image of a sample: ``(Y, X, 3)`` float32 RGB in [0, 1] (``zoo.viz.sample_panel``)."""
    from zoo.viz import sample_panel

    return sample_panel(sample.image, sample.channels, sample.labels,
                        sample.unannotated if outlines else None, outlines=outlines)


def save_sample_sheet(
    path: str | Path,
    samples_per_style: int = 3,
    shape: tuple[int, int] = (256, 256),
    seed: int = 0,
    *,
    outlines: bool = True,
    styles: Sequence[str] = STYLES,
    panel_inches: float = 3.0,
) -> Path:
    """Write a PNG grid: one row per style, ``samples_per_style`` examples per row.

    The examples are those of ``generate_dataset(styles, samples_per_style, seed=seed)``;
    panels are drawn by ``zoo.viz.sample_panel`` and laid out by
    ``zoo.viz.plot_sample_sheet`` (matplotlib, imported there only).

    Args:
        path: where to write the PNG; parent folders are created.
        samples_per_style: columns of the grid.
        shape: ``(Y, X)`` of every example.
        seed: base seed of the examples.
        outlines: draw label outlines (yellow) and unannotated objects (red).
        styles: the rows.
        panel_inches: size of one panel (at 100 dpi).

    Returns:
        The path written.
    """
    from zoo.viz import plot_sample_sheet

    rows = []
    for style in styles:
        row = []
        for col in range(samples_per_style):
            sample = generate(style, seed=sample_seed(style, col, seed=seed), shape=shape)
            meta = sample.meta
            caption = (f"{style} d={sample.diameter:.0f}px {meta['bit_depth']}-bit"
                       + (f" jpeg{meta['jpeg_quality']}" if meta["jpeg_quality"] else "")
                       + (" RGB" if meta["modality"] == "rgb" else ""))
            row.append((caption, render_panel(sample, outlines=outlines)))
        rows.append(row)
    return plot_sample_sheet(rows, path, panel_inches=panel_inches)
