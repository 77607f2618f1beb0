"""Numba kernels of the synthetic generator: tiny loops over pixels, no allocation policy.

Each kernel takes contiguous arrays prepared by a Python wrapper (``geometry``) and writes
into them in place or returns a new array. Label convention: 0 = background, 1..N = cells.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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


@njit(nogil=True, cache=True)
def _capsule_distance(y: float, x: float, cy: float, cx: float, half: float, cos: float,
                      sin: float) -> float:
    """Distance from ``(y, x)`` to the segment of half-length ``half`` centred on ``(cy, cx)``."""
    along = (y - cy) * cos + (x - cx) * sin
    across = -(y - cy) * sin + (x - cx) * cos
    if along > half:
        along -= half
    elif along < -half:
        along += half
    else:
        along = 0.0
    return np.sqrt(along * along + across * across)


@njit(nogil=True, cache=True)
def _place_capsules(labels: np.ndarray, profile: np.ndarray, table: np.ndarray,
                    max_overlap: float) -> np.ndarray:
    """Paint capsules (rods with round caps; circles when the half-length is 0) in order.

    ``table`` rows: ``cy, cx, half_length, radius, angle``. A capsule whose pixels are already
    taken by more than ``max_overlap`` of its area is rejected; an accepted one paints only
    background pixels, so neighbours touch but never overlap. ``profile`` receives the
    cross-section height ``sqrt(1 - (d / r)^2)`` of each painted pixel (a cylinder seen from
    above), which phase-contrast and DIC renderers use as optical thickness.

    Returns:
        ``(K,)`` int64: the label given to each row, 0 for rejected rows. Labels count up
        from ``labels.max() + 1`` in row order.
    """
    ny, nx = labels.shape
    out = np.zeros(table.shape[0], dtype=np.int64)
    next_label = labels.max() + 1
    for i in range(table.shape[0]):
        cy, cx, half, radius, angle = table[i, 0], table[i, 1], table[i, 2], table[i, 3], table[i, 4]
        cos, sin = np.cos(angle), np.sin(angle)
        reach = int(np.ceil(half + radius)) + 1
        y0, y1 = max(0, int(cy) - reach), min(ny, int(cy) + reach + 1)
        x0, x1 = max(0, int(cx) - reach), min(nx, int(cx) + reach + 1)
        area, taken = 0, 0
        for y in range(y0, y1):
            for x in range(x0, x1):
                if _capsule_distance(y, x, cy, cx, half, cos, sin) <= radius:
                    area += 1
                    if labels[y, x] != 0:
                        taken += 1
        if area == 0 or taken > max_overlap * area:
            continue
        for y in range(y0, y1):
            for x in range(x0, x1):
                if labels[y, x] != 0:
                    continue
                dist = _capsule_distance(y, x, cy, cx, half, cos, sin)
                if dist <= radius:
                    labels[y, x] = next_label
                    profile[y, x] = np.sqrt(max(0.0, 1.0 - (dist / radius) ** 2))
        out[i] = next_label
        next_label += 1
    return out


@njit(nogil=True, cache=True)
def _split_cells(labels: np.ndarray, table: np.ndarray, first_new: int) -> None:
    """Split cells in two across their long axis (dividing cells), in place.

    ``table`` rows: ``label, cy, cx, angle, gap, waist``. Pixels of ``label`` on the positive
    side of the line through ``(cy, cx)`` perpendicular to ``angle`` get label
    ``first_new + row``. A furrow is cut: pixels within ``gap`` px of the line become
    background, and so do those farther than ``waist`` (times the cell's half-width
    measured at the line) from the axis within 2 px of it.
    """
    ny, nx = labels.shape
    for i in range(table.shape[0]):
        lab = int(table[i, 0])
        cy, cx, angle, gap, waist = table[i, 1], table[i, 2], table[i, 3], table[i, 4], table[i, 5]
        cos, sin = np.cos(angle), np.sin(angle)
        half_width = 0.0
        for y in range(ny):
            for x in range(nx):
                if labels[y, x] == lab:
                    along = (y - cy) * cos + (x - cx) * sin
                    if abs(along) < 1.0:
                        across = abs(-(y - cy) * sin + (x - cx) * cos)
                        half_width = max(half_width, across)
        for y in range(ny):
            for x in range(nx):
                if labels[y, x] != lab:
                    continue
                along = (y - cy) * cos + (x - cx) * sin
                across = abs(-(y - cy) * sin + (x - cx) * cos)
                if abs(along) < gap or (abs(along) < gap + 2.0 and across > waist * half_width):
                    labels[y, x] = 0
                elif along > 0:
                    labels[y, x] = first_new + i


@njit(nogil=True, cache=True)
def _shot_and_read_noise(photons: np.ndarray, read_noise: float, seed: int,
                         normal_above: float) -> np.ndarray:
    """Photo-electrons plus read noise for expected ``photons`` (``(Y, X)`` float32 >= 0).

    Shot noise is Poisson below ``normal_above`` expected electrons and its (then
    indistinguishable) normal approximation above; read noise is Gaussian. Numba's own
    generator is seeded with ``seed`` (drawn from the caller's numpy generator), so the
    result is deterministic per seed.
    """
    np.random.seed(seed)
    ny, nx = photons.shape
    out = np.empty((ny, nx), dtype=np.float32)
    for y in range(ny):
        for x in range(nx):
            lam = photons[y, x]
            if lam < normal_above:
                electrons = float(np.random.poisson(lam))
            else:
                electrons = lam + np.sqrt(lam) * np.random.standard_normal()
            out[y, x] = electrons + read_noise * np.random.standard_normal()
    return out
