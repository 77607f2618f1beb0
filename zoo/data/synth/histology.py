"""``he``: H&E-stained histology, RGB, nuclei labelled.

Haematoxylin stains chromatin blue-purple, eosin stains cytoplasm and stroma pink. The
renderer lays out tissue zones from a smooth field (epithelium with dense, large, vesicular
nuclei; stroma with sparse spindle nuclei in fibrous pink; optional lymphocyte clusters of
small, dark, round nuclei; white lumen or fat), paints a concentration map of each stain and
forms the RGB image by Beer-Lambert: ``I = 10 ** -(c_H * v_H + c_E * v_E + slide)``, with
the stains' optical-density vectors ``v`` (Ruifrok and Johnston's, jittered per image to
mimic lab-to-lab staining) and strengths drawn per image. Red blood cells (eosin-bright,
no nucleus) are visible but not labelled.

Model input: the red channel (index 0). Haematoxylin absorbs red strongly (OD 0.65 per
unit) and eosin hardly (0.07), so in red the nuclei are dark on a pale background; green
shows both stains and blue little of either. ``Sample.channels`` is ``(0, None)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from zoo.data.shapes import ShapeParams
from zoo.data.synth import geometry as geo
from zoo.data.synth import optics as opt
from zoo.data.synth.scene import Scene, StyleSpec

_HAEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.07, 0.99, 0.11])
_BLOOD = np.array([0.05, 0.85, 0.55])  # haemoglobin + eosin: red-orange, not pink


def render_he(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> Scene:
    """H&E histology nuclei (see the module docstring)."""
    diameter = opt.log_uniform(rng, spec.diameter_range)
    zones = opt.noise(rng, shape, opt.uniform(rng, (2.0, 5.0)) * diameter)
    lumen = zones > np.quantile(zones, 1 - opt.uniform(rng, (0.0, 0.25)))
    epithelium = (zones > np.quantile(zones, opt.uniform(rng, (0.1, 0.7)))) & ~lumen
    lymph = np.zeros(shape, dtype=bool)
    if rng.random() < 0.4:
        field = opt.noise(rng, shape, 2.0 * diameter)
        lymph = (field > np.quantile(field, 0.8)) & ~lumen & ~epithelium
    labels = _nuclei_layout(rng, shape, spec, diameter, (epithelium, lymph, lumen))
    depth, _ = geo.cell_depth(labels)
    n = int(labels.max())
    haem = _haematoxylin(rng, labels, depth, diameter)
    cytoplasm = opt.uniform(rng, (0.12, 0.35)) * epithelium * (1 + 0.3 * opt.noise(rng, shape, 1.0, 4.0))
    stroma = opt.uniform(rng, (0.1, 0.3)) * (~epithelium & ~lumen) * _fibres(rng, shape, diameter)
    eosin = np.clip(cytoplasm + stroma, 0.0, None) * np.where(labels > 0, 0.3, 1.0)
    blood = _red_cells(rng, shape, labels > 0, diameter, ~lumen)
    red = opt.uniform(rng, (0.5, 0.9)) * (blood > 0)
    haem = haem + opt.uniform(rng, (0.02, 0.12)) * (epithelium | (eosin > 0))
    stains = _stain_vectors(rng)
    density = (haem[..., None] * stains[0] + eosin[..., None] * stains[1]
               + red[..., None] * _BLOOD + opt.uniform(rng, (0.01, 0.06)))
    rgb = np.power(10.0, -density).astype(np.float32)
    optics = opt.draw_optics(rng, diameter, spec.blur_range, defocus_chance=0.15, haze_chance=0.0,
                              randomise=spec.randomise)
    light = opt.illumination(rng, shape, optics)[..., None] * 0.1 + 0.9
    signal = np.stack([opt.focus(rgb[..., c], optics) for c in range(3)], axis=-1) * light
    return Scene(signal.astype(np.float32), labels, blood, (0, None), "rgb", int(blood.max()) + 1,
                 {"optics": optics, "diameter_drawn": diameter, "n_nuclei": n})


def _nuclei_layout(
    rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec, diameter: float,
    zones: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Epithelial, stromal and lymphocyte nuclei, each kind kept inside its zone.

    Args:
        zones: ``(epithelium, lymph, lumen)`` bool ``(Y, X)`` masks.

    Returns:
        ``(Y, X)`` int32 labels of all nuclei.
    """
    epithelium, lymph, lumen = zones
    kinds = [
        (ShapeParams(diameter=diameter, diameter_jitter=0.25, elongation=opt.uniform(rng, (1.2, 2.0)),
                     irregularity=opt.uniform(rng, (0.04, 0.14)),
                     density=opt.uniform(rng, spec.density_range),
                     packing=opt.uniform(rng, (0.85, 1.15))), epithelium),
        (ShapeParams(diameter=0.8 * diameter, diameter_jitter=0.2, elongation=opt.uniform(rng, (2.5, 5.0)),
                     irregularity=0.06, density=opt.uniform(rng, (0.1, 0.4)), packing=1.6),
         ~epithelium & ~lymph & ~lumen),
        (ShapeParams(diameter=max(4.5, 0.55 * diameter), diameter_jitter=0.1, elongation=1.2,
                     irregularity=0.04, density=opt.uniform(rng, (0.5, 0.9)), packing=1.1), lymph),
    ]
    labels = np.zeros(shape, dtype=np.int32)
    for params, zone in kinds:
        if not zone.any():
            continue
        cells = geo.ellipse_cells(rng, shape, params, clump=0.3)
        keep_ids = np.flatnonzero(ndimage.mean(zone, cells.labels, np.arange(1, len(cells.angle))) > 0.6) + 1
        mask = np.isin(cells.labels, keep_ids) & (labels == 0)
        labels[mask] = cells.labels[mask] + labels.max()
    labels, _ = geo.clean_labels(labels, min_area=0.03 * np.pi * (diameter / 2) ** 2)
    return labels


def _haematoxylin(
    rng: np.random.Generator, labels: np.ndarray, depth: np.ndarray, diameter: float
) -> np.ndarray:
    """Haematoxylin concentration of the nuclei: vesicular (rim + nucleoli) or dense."""
    n = int(labels.max())
    level = opt.brightness(rng, n, spread=(0.15, 0.4), dim=0.1, bright=0.08)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    small = areas < 0.35 * np.pi * (diameter / 2) ** 2  # lymphocytes, condensed: dense and dark
    level[small] *= 1.6
    texture = opt.chromatin(rng, labels.shape, diameter)
    rim = opt.uniform(rng, (0.0, 0.6)) * np.clip(1 - 3 * depth, 0.0, 1.0)
    vesicular = np.where(small[labels], 1.0, 0.7 + rim)
    return (opt.uniform(rng, (0.9, 1.8)) * level[labels] * texture * vesicular).astype(np.float32)


def _fibres(rng: np.random.Generator, shape: tuple[int, int], diameter: float) -> np.ndarray:
    """Collagen-like fibre texture around 1, float32 ``(Y, X)``: grain stretched along one
    random direction."""
    streaks = opt.noise(rng, shape, 0.04 * diameter + 0.6, stretch=opt.uniform(rng, (5.0, 12.0)),
                        angle=rng.uniform(0, np.pi))
    return np.clip(1 + opt.uniform(rng, (0.2, 0.45)) * streaks, 0.1, None).astype(np.float32)


def _red_cells(
    rng: np.random.Generator, shape: tuple[int, int], occupied: np.ndarray, diameter: float,
    allowed: np.ndarray,
) -> np.ndarray:
    """Red blood cells: small eosin-bright discs, clustered, not labelled."""
    if rng.random() < 0.5:
        return np.zeros(shape, dtype=np.int32)
    params = ShapeParams(diameter=max(4.0, 0.45 * diameter), diameter_jitter=0.08, elongation=1.2,
                         irregularity=0.02, density=opt.uniform(rng, (0.05, 0.3)), packing=1.0)
    cells = geo.ellipse_cells(rng, shape, params, clump=1.0)
    return geo.keep_away(cells, occupied | ~allowed, 1).labels


def _stain_vectors(rng: np.random.Generator) -> np.ndarray:
    """``(2, 3)`` OD vectors of haematoxylin and eosin, jittered and scaled per image."""
    out = []
    for base in (_HAEMATOXYLIN, _EOSIN):
        vector = np.clip(base + rng.normal(0.0, 0.05, 3), 0.01, None)
        out.append(vector / np.linalg.norm(vector) * np.linalg.norm(base) * rng.uniform(0.7, 1.3))
    return np.array(out)
