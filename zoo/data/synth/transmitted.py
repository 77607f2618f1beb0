"""Transmitted-light styles: ``phase``, ``brightfield``, ``dic``, ``bacteria``, ``yeast``.

Unstained cells barely absorb; they delay light. Every renderer here builds an optical
thickness map (cells, nuclei, nucleoli, granules, debris), passes it through the PSF and
defocus of a randomised ``optics.Optics``, and turns it into intensity by the contrast
method's rule:

* phase contrast: ``1 - strength * highpass(thickness) - absorption * thickness``: dark cells
  with the bright halo a phase ring leaves around them;
* brightfield: ``1 - absorption * thickness + fringe * defocus * laplacian(thickness)``: the
  fringe's sign flips with the side of focus (dark rims with bright centres, or bright halos);
* DIC: ``1 + shear * d(thickness)/d(direction)``: relief shading lit from one side.

Haze flattens contrast towards the background, then an uneven illumination field multiplies
everything. Colour cameras (some brightfield, DIC and yeast images) get a lamp tint and store
RGB; channel 0 (red) is then the one to segment.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from zoo.data.shapes import ShapeParams
from zoo.data.synth import geometry as geo
from zoo.data.synth import optics as opt
from zoo.data.synth.scene import Scene, StyleSpec, merge_unannotated

_RGB_CHANCE = 0.3


def _finish(
    rng: np.random.Generator, image: np.ndarray, optics: opt.Optics, *, rgb_chance: float = 0.0
) -> tuple[np.ndarray, str]:
    """Haze, illumination, optional colour camera: ``(signal (Y, X, C), modality)``."""
    image = opt.flatten_contrast(image, optics)
    image = np.clip(image, 0.02, None) * opt.illumination(rng, image.shape, optics)
    if rng.random() < rgb_chance:
        warm = rng.uniform(0.0, 0.2)  # halogen lamp without a daylight filter: yellowish
        tint = np.array([1.0, 1.0 - 0.4 * warm, 1.0 - warm]) * rng.uniform(0.95, 1.05, 3)
        return (image[..., None] * tint).astype(np.float32), "rgb"
    return np.stack([image, np.zeros_like(image)], axis=-1).astype(np.float32), "transmitted"


def phase_contrast(
    rng: np.random.Generator, thickness: np.ndarray, optics: opt.Optics, diameter: float
) -> np.ndarray:
    """Phase-contrast intensity of a thickness map (dark objects, bright halos)."""
    focused = opt.focus(thickness, optics)
    halo_sigma = opt.uniform(rng, (0.06, 0.2)) * diameter
    halo = focused - opt.blur(focused, max(halo_sigma, 1.2))
    return 1.0 - opt.uniform(rng, (1.0, 2.0)) * halo - opt.uniform(rng, (0.05, 0.2)) * focused


def brightfield(
    rng: np.random.Generator, thickness: np.ndarray, optics: opt.Optics, *, halo: bool
) -> np.ndarray:
    """Brightfield intensity: weak absorption plus the defocus fringe (bright halos if ``halo``)."""
    sigma = opt.uniform(rng, (1.2, 3.5))
    fringe = ndimage.gaussian_laplace(opt.focus(thickness, optics), sigma) * sigma**2
    sign = 1.0 if halo else float(rng.choice([-1.0, 1.0]))
    amplitude = opt.uniform(rng, (0.5, 1.2)) if halo else opt.uniform(rng, (0.1, 0.6))
    absorbed = opt.uniform(rng, (0.05, 0.2)) * opt.blur(thickness, sigma)
    return 1.0 - absorbed + sign * amplitude * fringe


def _adherent(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec,
              diameter: float, *, confluent: bool) -> geo.Cells:
    params = ShapeParams(
        diameter=diameter, diameter_jitter=opt.uniform(rng, (0.15, 0.35)),
        elongation=opt.uniform(rng, (1.5, 3.5)), irregularity=opt.uniform(rng, (0.06, 0.2)),
        density=opt.uniform(rng, (0.7, 1.0) if confluent else spec.density_range),
        packing=opt.uniform(rng, (0.78, 0.9) if confluent else (0.95, 1.3)),
    )
    return geo.ellipse_cells(rng, shape, params, clump=opt.uniform(rng, (0.3, 0.9)))


def _cell_thickness(rng: np.random.Generator, cells: geo.Cells, diameter: float,
                    *, nucleus: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Divide some cells, then their optical thickness (dome + granules + nucleus + nucleoli).

    Returns:
        ``(thickness, labels, daughters)``: float32 ``(Y, X)``, the labels after division,
        and ``(N + 1,)`` bool marking daughters of a division (rounded up, thick).
    """
    cells, daughters = geo.divide_cells(rng, cells, opt.uniform(rng, (0.0, 0.05)), gap=0.0,
                                        waist=0.6)
    labels = cells.labels
    depth, poles = geo.cell_depth(labels)
    nuclei = geo.nuclei_in_cells(rng, cells, poles, size=(0.4, 0.65))
    n = int(labels.max())
    shape = labels.shape
    granules = np.clip(opt.noise(rng, shape, 0.8, 2.5), 0.0, None)
    dome = depth ** opt.uniform(rng, (0.25, 0.6))
    per_cell = opt.per_cell(rng, n, 0.3, 0.3)
    per_cell[daughters] *= 2.5  # rounded cells are thick
    thickness = per_cell[labels] * (dome * (1 + 0.1 * opt.noise(rng, shape, 1.0, 4.0))
                                    + opt.uniform(rng, (0.0, 0.2)) * granules)
    nucleoli = opt.specks(rng, shape, int(3 * n), max(0.04 * diameter, 0.8))
    thickness += nucleus * (nuclei > 0) * (1 + 1.5 * nucleoli)
    return thickness.astype(np.float32), labels, daughters


def render_phase(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> Scene:
    """Phase contrast (LIVECell): a monolayer, or sparse neuron-like cells with neurites."""
    diameter = opt.log_uniform(rng, spec.diameter_range)
    if rng.random() < 0.6:
        cells = _adherent(rng, shape, spec, diameter, confluent=rng.random() < 0.7)
    else:
        cells = _adherent(rng, shape, spec, 0.8 * diameter, confluent=False)
        _, poles = geo.cell_depth(cells.labels)
        cells = geo.grow_processes(rng, cells, poles, count=(1, 3), length=(0.8, 2.5),
                                   bipolar=True)
    thickness, labels, daughters = _cell_thickness(rng, cells, diameter,
                                                   nucleus=opt.uniform(rng, (0.1, 0.35)))
    junk = geo.debris(rng, shape, labels > 0, count=int(rng.integers(0, 30)),
                      size=(1.5, max(2.5, 0.4 * diameter)))
    thickness += opt.uniform(rng, (0.4, 1.2)) * (junk > 0)
    optics = opt.draw_optics(rng, diameter, spec.blur_range, defocus_chance=0.2,
                              randomise=spec.randomise)
    image = phase_contrast(rng, thickness, optics, diameter)
    rounded = daughters[labels]  # rounded cells go phase-bright
    image = image + opt.uniform(rng, (0.2, 0.6)) * opt.blur(rounded * geo.cell_depth(labels)[0], 1.0)
    image *= 1 + 0.02 * opt.noise(rng, shape, 24.0)
    signal, modality = _finish(rng, image, optics)
    unannotated, start = merge_unannotated(np.zeros_like(labels), junk)
    return Scene(signal, labels, unannotated, (0, None), modality, start,
                 {"optics": optics, "diameter_drawn": diameter})


def render_brightfield(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> Scene:
    """Brightfield (EVICAN): faint cells near focus, or defocused cells with bright halos."""
    diameter = opt.log_uniform(rng, spec.diameter_range)
    cells = _adherent(rng, shape, spec, diameter, confluent=rng.random() < 0.2)
    thickness, labels, _ = _cell_thickness(rng, cells, diameter,
                                           nucleus=opt.uniform(rng, (0.2, 0.5)))
    junk = geo.debris(rng, shape, labels > 0, count=int(rng.integers(0, 25)),
                      size=(1.5, max(2.5, 0.3 * diameter)))
    thickness += opt.uniform(rng, (0.5, 1.5)) * (junk > 0)
    optics = opt.draw_optics(rng, diameter, spec.blur_range, defocus_chance=0.0,
                              randomise=spec.randomise)
    halo = rng.random() < 0.4
    image = brightfield(rng, thickness, optics, halo=halo)
    dust = ndimage.gaussian_laplace(opt.specks(rng, shape, int(rng.integers(0, 4)), 3.0), 5.0)
    image += 4.0 * dust
    image *= 1 + 0.015 * opt.noise(rng, shape, 30.0)
    signal, modality = _finish(rng, image, optics, rgb_chance=_RGB_CHANCE * spec.randomise)
    unannotated, start = merge_unannotated(np.zeros_like(labels), junk)
    return Scene(signal, labels, unannotated, (0, None), modality, start,
                 {"optics": optics, "diameter_drawn": diameter, "halo": halo})


def render_dic(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> Scene:
    """DIC: adherent cells in relief, lit from one side along a random shear direction."""
    diameter = opt.log_uniform(rng, spec.diameter_range)
    cells = _adherent(rng, shape, spec, diameter, confluent=rng.random() < 0.4)
    if rng.random() < 0.4:
        _, poles = geo.cell_depth(cells.labels)
        cells = geo.grow_processes(rng, cells, poles, count=(0, 3), length=(0.3, 1.2),
                                   bipolar=False)
    thickness, labels, _ = _cell_thickness(rng, cells, diameter,
                                           nucleus=opt.uniform(rng, (0.15, 0.4)))
    junk = geo.debris(rng, shape, labels > 0, count=int(rng.integers(0, 20)),
                      size=(1.5, max(2.5, 0.3 * diameter)))
    thickness += opt.uniform(rng, (0.4, 1.0)) * (junk > 0)
    optics = opt.draw_optics(rng, diameter, spec.blur_range, defocus_chance=0.15,
                              randomise=spec.randomise)
    relief = opt.focus(thickness, optics)
    gy, gx = np.gradient(relief)
    angle = rng.uniform(0.0, 2 * np.pi)
    shear = np.cos(angle) * gy + np.sin(angle) * gx
    image = 1.0 + opt.uniform(rng, (0.8, 2.0)) * shear + opt.uniform(rng, (-0.1, 0.05)) * relief
    image *= 1 + 0.02 * opt.noise(rng, shape, 20.0)
    signal, modality = _finish(rng, image, optics, rgb_chance=_RGB_CHANCE * spec.randomise)
    unannotated, start = merge_unannotated(np.zeros_like(labels), junk)
    return Scene(signal, labels, unannotated, (0, None), modality, start,
                 {"optics": optics, "diameter_drawn": diameter, "shear_angle": angle})


def _colony_centres(rng: np.random.Generator, shape: tuple[int, int], count: int,
                    scale: float, cover: float) -> np.ndarray:
    """``(count, 2)`` random centres, kept only where a smooth field marks a colony."""
    field = opt.noise(rng, shape, scale)
    threshold = np.quantile(field, 1 - cover)
    ys = rng.uniform(0, shape[0], 4 * count)
    xs = rng.uniform(0, shape[1], 4 * count)
    keep = field[ys.astype(int), xs.astype(int)] >= threshold
    return np.stack([ys[keep], xs[keep]], axis=-1)[:count]


def render_bacteria(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> Scene:
    """Rod-shaped bacteria in phase contrast: dense aligned colonies, some dividing."""
    diameter = opt.log_uniform(rng, spec.diameter_range)
    aspect = opt.uniform(rng, (2.2, 5.0))
    width = max(3.0, diameter / (1.13 * np.sqrt(aspect)))
    cover = opt.uniform(rng, spec.density_range)
    count = int(cover * shape[0] * shape[1] / (width * width * aspect) * 2.5) + 8
    centres = _colony_centres(rng, shape, count, opt.uniform(rng, (1.0, 3.0)) * diameter, cover)
    order = opt.noise(rng, shape, opt.uniform(rng, (1.5, 4.0)) * diameter)
    angle = order[centres[:, 0].astype(int), centres[:, 1].astype(int)] * opt.uniform(rng, (0.8, 2.5))
    angle = angle + rng.normal(0.0, opt.uniform(rng, (0.05, 0.4)), len(centres))
    length = width * np.clip(rng.normal(aspect, 0.3 * aspect, len(centres)), 1.3, 12.0)
    length[rng.random(len(centres)) < 0.02] *= 3.0  # filaments
    rows = []
    dividing = rng.random(len(centres)) < opt.uniform(rng, (0.05, 0.25))
    for (cy, cx), a, long, split in zip(centres, angle, length, dividing):
        half = max(long - width, 0.0) / 2
        if split and half > width:
            step = (long / 4 + 0.3) * np.array([np.cos(a), np.sin(a)])
            for sign in (-1.0, 1.0):
                rows.append((cy + sign * step[0], cx + sign * step[1], half / 2 - 0.2, width / 2, a))
        else:
            rows.append((cy, cx, half, width / 2, a))
    table = np.array(rows, dtype=np.float64).reshape(-1, 5)
    labels, profile, _ = geo.place_capsules(shape, table, max_overlap=0.1,
                                            min_area=0.3 * width * width)
    thickness = profile * (1 + 0.08 * opt.noise(rng, shape, 1.0))
    junk = geo.debris(rng, shape, labels > 0, count=int(rng.integers(0, 15)), size=(1.0, width))
    thickness += opt.uniform(rng, (0.3, 1.0)) * (junk > 0)
    optics = opt.draw_optics(rng, width * aspect, spec.blur_range, defocus_chance=0.2,
                              randomise=spec.randomise)
    image = phase_contrast(rng, thickness, optics, 2 * width)
    signal, modality = _finish(rng, image, optics)
    unannotated, start = merge_unannotated(np.zeros_like(labels), junk)
    return Scene(signal, labels, unannotated, (0, None), modality, start,
                 {"optics": optics, "diameter_drawn": diameter, "width": width})


def render_yeast(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> Scene:
    """Round or budding yeast in phase contrast or brightfield, often clustered."""
    diameter = opt.log_uniform(rng, spec.diameter_range)
    cover = opt.uniform(rng, spec.density_range)
    count = int(cover * shape[0] * shape[1] / (0.8 * diameter**2) * 1.5) + 8
    centres = _colony_centres(rng, shape, count, opt.uniform(rng, (1.0, 3.0)) * diameter, cover)
    rows = []
    for cy, cx in centres:
        radius = diameter / 2 * np.clip(rng.normal(1.0, 0.15), 0.6, 1.5)
        angle = rng.uniform(0.0, np.pi)
        half = radius * rng.uniform(0.0, 0.25)  # slightly oval
        rows.append((cy, cx, half, radius, angle))
        if rng.random() < 0.45:
            bud = radius * rng.uniform(0.3, 0.75)
            towards = angle + rng.choice([0.0, np.pi]) + rng.normal(0.0, 0.3)
            reach = radius + half + 0.85 * bud
            rows.append((cy + reach * np.cos(towards), cx + reach * np.sin(towards), 0.0, bud,
                         towards))
    table = np.array(rows, dtype=np.float64).reshape(-1, 5)
    labels, profile, _ = geo.place_capsules(shape, table, max_overlap=0.12,
                                            min_area=0.02 * diameter**2)
    n = int(labels.max())
    vacuole = _vacuoles(rng, labels, diameter)
    thickness = profile * opt.per_cell(rng, n, 0.15, 0.5)[labels] - 0.5 * vacuole
    thickness *= 1 + 0.08 * opt.noise(rng, shape, 1.0, 3.0)
    junk = geo.debris(rng, shape, labels > 0, count=int(rng.integers(0, 15)),
                      size=(1.5, max(2.0, 0.25 * diameter)))
    thickness += opt.uniform(rng, (0.3, 1.0)) * (junk > 0)
    optics = opt.draw_optics(rng, diameter, spec.blur_range, defocus_chance=0.0,
                              randomise=spec.randomise)
    phase = rng.random() < 0.5
    image = (phase_contrast(rng, thickness, optics, diameter) if phase
             else brightfield(rng, thickness, optics, halo=rng.random() < 0.5))
    signal, modality = _finish(rng, image, optics, rgb_chance=0.0 if phase else _RGB_CHANCE * spec.randomise)
    unannotated, start = merge_unannotated(np.zeros_like(labels), junk)
    return Scene(signal, labels, unannotated, (0, None), modality, start,
                 {"optics": optics, "diameter_drawn": diameter, "phase": phase})


def _vacuoles(rng: np.random.Generator, labels: np.ndarray, diameter: float) -> np.ndarray:
    """Soft round vacuoles in about half the cells, float32 ``(Y, X)`` in [0, 1]."""
    depth, poles = geo.cell_depth(labels)
    has = (rng.random(len(poles)) < 0.5) & (poles[:, 0] > 3)
    has[0] = False
    spots = np.zeros(labels.shape, dtype=np.float32)
    ys, xs = poles[has, 1].astype(int), poles[has, 2].astype(int)
    spots[ys, xs] = 1.0
    sigma = max(0.12 * diameter, 1.0)
    spots = opt.blur(spots, sigma) * (2 * np.pi * sigma**2)
    return np.clip(spots * 1.5, 0.0, 1.0) * (labels > 0)
