"""Fluorescence styles: ``tissue``, ``nuclei``, ``cyto``, ``twophoton``.

Each renderer builds emitters (cells with per-cell brightness from very dim to saturating,
chromatin texture, debris), then the shared fluorescence optics (``acquire``): PSF and
defocus, out-of-focus haze, a textured autofluorescent background, uneven excitation.
"""

from __future__ import annotations

import numpy as np

from zoo.data.shapes import ShapeParams
from zoo.data.synth import geometry as geo
from zoo.data.synth import optics as opt
from zoo.data.synth.scene import Scene, StyleSpec, merge_unannotated


def acquire(
    rng: np.random.Generator, emitters: np.ndarray, optics: opt.Optics, *, background: float
) -> np.ndarray:
    """Fluorescence optics of one channel: focus, haze, autofluorescence, excitation field.

    Args:
        emitters: ``(Y, X)`` float32 in-focus emitter density (typical cell ~1).
        background: mean autofluorescent background relative to a typical cell.
    """
    shape = emitters.shape
    texture = np.clip(1 + rng.uniform(0.2, 0.8) * opt.noise(rng, shape, rng.uniform(4.0, 30.0)),
                      0.05, None)
    image = opt.add_haze(opt.focus(emitters, optics), optics) + background * texture
    return (image * opt.illumination(rng, shape, optics)).astype(np.float32)


def _debris(rng: np.random.Generator, occupied: np.ndarray, diameter: float,
            high: int) -> np.ndarray:
    count = int(rng.integers(0, high + 1))
    return geo.debris(rng, occupied.shape, occupied, count=count,
                      size=(2.0, max(2.5, 0.5 * diameter)))


def render_nuclei(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> Scene:
    """Fluorescent nuclei on a dark background (DSB 2018, DAPI/Hoechst), one channel."""
    diameter = opt.log_uniform(rng, spec.diameter_range)
    params = ShapeParams(
        diameter=diameter, diameter_jitter=opt.uniform(rng, (0.1, 0.3)),
        elongation=opt.uniform(rng, (1.2, 2.2)), irregularity=opt.uniform(rng, (0.02, 0.14)),
        density=opt.uniform(rng, spec.density_range), packing=opt.uniform(rng, (0.8, 1.4)),
    )
    cells = geo.ellipse_cells(rng, shape, params, clump=opt.uniform(rng, (0.2, 1.0)))
    cells, daughters = geo.divide_cells(rng, cells, opt.uniform(rng, (0.0, 0.06)),
                                        gap=opt.uniform(rng, (0.5, 2.5)), waist=0.5)
    labels = cells.labels
    depth, _ = geo.cell_depth(labels)
    n = int(labels.max())
    level = opt.brightness(rng, n, dim=0.2, bright=0.06)
    level[daughters] = np.maximum(level[daughters], rng.uniform(1.5, 4.0, int(daughters.sum())))
    dome = opt.uniform(rng, (0.2, 1.0))
    texture = opt.chromatin(rng, shape, diameter)
    nuclei = level[labels] * (1 - 0.45 * dome + 0.45 * dome * np.sqrt(depth)) * texture
    junk = _debris(rng, labels > 0, diameter, 15)
    emitters = nuclei + rng.uniform(0.6, 2.5) * (junk > 0) * (1 + 0.3 * opt.noise(rng, shape, 0.7))
    optics = opt.draw_optics(rng, diameter, spec.blur_range,
                              randomise=spec.randomise)
    main = acquire(rng, emitters.astype(np.float32), optics,
                   background=opt.log_uniform(rng, (0.005, 0.15)))
    signal = np.stack([main, np.zeros_like(main)], axis=-1)
    unannotated, start = merge_unannotated(np.zeros_like(labels), junk)
    return Scene(signal, labels, unannotated, (0, None), "fluorescence", start,
                 {"optics": optics, "diameter_drawn": diameter})


def render_tissue(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> Scene:
    """Dense tissue (TissueNet): membrane/cytoplasm channel 0, nuclear channel 1."""
    diameter = opt.log_uniform(rng, spec.diameter_range)
    params = ShapeParams(
        diameter=diameter, diameter_jitter=opt.uniform(rng, (0.15, 0.35)),
        elongation=opt.uniform(rng, (1.4, 3.0)), irregularity=opt.uniform(rng, (0.06, 0.18)),
        density=opt.uniform(rng, spec.density_range), packing=opt.uniform(rng, (0.72, 0.9)),
    )
    cells = geo.ellipse_cells(rng, shape, params, clump=opt.uniform(rng, (0.2, 0.8)))
    cells, _ = geo.divide_cells(rng, cells, opt.uniform(rng, (0.0, 0.04)), gap=0.0, waist=0.7)
    labels = cells.labels
    depth, poles = geo.cell_depth(labels)
    nuclei = geo.nuclei_in_cells(rng, cells, poles, size=(0.45, 0.8))
    n = int(labels.max())
    edge = geo.boundary(labels)
    if rng.random() < 0.5:  # thicker membranes
        edge = edge | (np.minimum(depth, 1.0) < 0.25) & (labels > 0)
    patchy = np.clip(1 + rng.uniform(0.3, 0.9) * opt.noise(rng, shape, 0.8, 3.0), 0.0, None)
    fill = opt.uniform(rng, (0.1, 0.8))  # 0.1: membrane stain; 0.8: cytoplasmic stain
    cyto_level = opt.brightness(rng, n, dim=0.25, bright=0.0)[labels]
    membrane = edge * patchy * cyto_level
    texture = 1 + 0.4 * opt.noise(rng, shape, 1.0, 4.0)
    cytoplasm = np.clip(fill * cyto_level * texture, 0, None) * np.where(nuclei > 0, 0.6, 1.0)
    chromatin = opt.chromatin(rng, shape, 0.6 * diameter)
    nucleus = opt.brightness(rng, n, dim=0.2, bright=0.04)[nuclei] * chromatin * (0.7 + 0.3 * depth)
    optics = opt.draw_optics(rng, diameter, spec.blur_range,
                              randomise=spec.randomise)
    autofluorescence = opt.log_uniform(rng, (0.02, 0.3))
    main = acquire(rng, (membrane + cytoplasm).astype(np.float32), optics,
                   background=autofluorescence)
    nuclear = acquire(rng, nucleus.astype(np.float32), optics, background=0.5 * autofluorescence)
    signal = np.stack([main, nuclear], axis=-1)
    return Scene(signal, labels, np.zeros_like(labels), (0, 1), "fluorescence", 1,
                 {"optics": optics, "diameter_drawn": diameter})


def render_cyto(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> Scene:
    """Sparse cultured cells with processes; nuclei without cytoplasm are not labelled."""
    diameter = opt.log_uniform(rng, spec.diameter_range)
    params = ShapeParams(
        diameter=diameter, diameter_jitter=0.25, elongation=opt.uniform(rng, (1.5, 3.5)),
        irregularity=opt.uniform(rng, (0.1, 0.3)), density=opt.uniform(rng, spec.density_range),
        packing=opt.uniform(rng, (1.0, 1.5)),
    )
    cells = geo.ellipse_cells(rng, shape, params, clump=opt.uniform(rng, (0.4, 1.0)))
    _, poles = geo.cell_depth(cells.labels)
    cells = geo.grow_processes(rng, cells, poles, count=(0, 4), length=(0.2, 1.0), bipolar=False)
    cells, daughters = geo.divide_cells(rng, cells, opt.uniform(rng, (0.0, 0.05)),
                                        gap=0.0, waist=0.6)
    labels = cells.labels
    depth, poles = geo.cell_depth(labels)
    nuclei = geo.nuclei_in_cells(rng, cells, poles, size=(0.4, 0.65))
    n = int(labels.max())
    level = opt.brightness(rng, n, dim=0.2, bright=0.04)
    level[daughters] *= 2.0  # rounded-up mitotic cells are thicker, hence brighter
    texture = np.clip(1 + rng.uniform(0.15, 0.45) * opt.noise(rng, shape, 1.0, 4.0), 0.2, None)
    cytoplasm = level[labels] * (0.3 + 0.7 * depth ** opt.uniform(rng, (0.3, 1.0))) * texture
    cytoplasm *= np.where(nuclei > 0, opt.uniform(rng, (0.5, 1.0)), 1.0)
    orphans = geo.extra_objects(rng, shape, _orphan_params(rng, params.diameter), labels > 0, gap=3)
    junk = _debris(rng, (labels > 0) | (orphans.labels > 0), diameter, 12)
    chromatin = opt.chromatin(rng, shape, 0.5 * diameter)
    inside = opt.brightness(rng, n, dim=0.1, bright=0.03)[nuclei]
    outside = 0.9 * opt.per_cell(rng, len(orphans.angle) - 1, 0.3)[orphans.labels]
    nucleus = 1.2 * (inside + outside) * chromatin
    optics = opt.draw_optics(rng, diameter, spec.blur_range,
                              randomise=spec.randomise)
    background = opt.log_uniform(rng, (0.005, 0.1))
    debris_light = rng.uniform(0.3, 1.5) * (junk > 0)
    main = acquire(rng, (cytoplasm + debris_light).astype(np.float32), optics, background=background)
    has_nucleus = rng.random() < 0.75
    nuclear = acquire(rng, nucleus.astype(np.float32), optics, background=background) * has_nucleus
    own = orphans.labels if has_nucleus else np.zeros_like(labels)
    unannotated, start = merge_unannotated(own, junk)
    signal = np.stack([main, nuclear], axis=-1)
    return Scene(signal, labels, unannotated, (0, 1) if has_nucleus else (0, None),
                 "fluorescence", start, {"optics": optics, "diameter_drawn": diameter})


def _orphan_params(rng: np.random.Generator, diameter: float) -> ShapeParams:
    return ShapeParams(
        diameter=0.4 * diameter, diameter_jitter=0.15, elongation=1.4, irregularity=0.05,
        density=opt.uniform(rng, (0.04, 0.1)), packing=1.2,
    )


def render_twophoton(rng: np.random.Generator, shape: tuple[int, int], spec: StyleSpec) -> Scene:
    """Two-photon somata on neuropil; out-of-focus somata are visible but not labelled."""
    diameter = opt.log_uniform(rng, spec.diameter_range)
    params = ShapeParams(
        diameter=diameter, diameter_jitter=0.15, elongation=opt.uniform(rng, (1.2, 1.8)),
        irregularity=opt.uniform(rng, (0.05, 0.15)), density=opt.uniform(rng, spec.density_range),
        packing=opt.uniform(rng, (1.2, 1.6)),
    )
    cells = geo.ellipse_cells(rng, shape, params, clump=0.3)
    labels = cells.labels
    depth, poles = geo.cell_depth(labels)
    nuclei = geo.nuclei_in_cells(rng, cells, poles, size=(0.55, 0.75))
    n = int(labels.max())
    hollow = (nuclei > 0) & (rng.random(n + 1) < rng.uniform(0.4, 0.95))[labels]
    soma = np.clip(opt.per_cell(rng, n, 0.25), 0.75, 2.0)[labels] * (0.75 + 0.25 * depth)
    active = rng.random(n + 1) < rng.uniform(0.0, 0.15)  # firing cells: bright, saturating
    soma = np.where(active[labels], soma * 3.0, soma)
    soma = np.where(hollow, 0.25 * soma, soma)
    ghosts = geo.extra_objects(rng, shape, params, labels > 0, gap=2)
    ghost_level = rng.uniform(0.2, 0.3, len(ghosts.angle)).astype(np.float32)
    ghost_level[0] = 0.0
    ghost = opt.blur(ghost_level[ghosts.labels], opt.uniform(rng, (2.0, 3.0)))
    vessels = opt.blur((np.abs(opt.noise(rng, shape, 14.0)) < 0.12).astype(np.float32), 1.5)
    neuropil = 0.3 * np.clip(1 + 0.5 * opt.noise(rng, shape, 1.0, 4.0), 0.0, None)
    neuropil *= 1 - 0.8 * vessels
    emitters = np.where(labels > 0, soma, neuropil + ghost).astype(np.float32)
    optics = opt.draw_optics(rng, diameter, spec.blur_range, defocus_chance=0.0, haze_chance=0.2,
                              randomise=spec.randomise)
    main = acquire(rng, emitters, optics, background=opt.log_uniform(rng, (0.005, 0.05)))
    signal = np.stack([main, np.zeros_like(main)], axis=-1)
    return Scene(signal, labels, ghosts.labels, (0, None), "fluorescence",
                 int(ghosts.labels.max()) + 1, {"optics": optics, "diameter_drawn": diameter})
