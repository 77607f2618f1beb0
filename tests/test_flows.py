"""Tests of zoo.flows: labels → flows → labels round trips, QC, and edge cases."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from zoo.data.shapes import ShapeParams, random_labels
from zoo.errors import InvalidImageError, InvalidParamsError
from zoo.flows import (
    FlowParams,
    fill_holes_and_remove_small,
    flow_error,
    flows_to_masks,
    follow_flows,
    masks_to_flows,
)
from zoo.metrics import average_precision


def _cellprob(labels: np.ndarray) -> np.ndarray:
    return np.where(labels > 0, 5.0, -5.0).astype(np.float32)


def _round_trip(labels: np.ndarray, params: FlowParams | None = None) -> np.ndarray:
    return flows_to_masks(masks_to_flows(labels), _cellprob(labels), params)


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images describe the same masks, whatever their numbering."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


# ----------------------------------------------------------------------------- masks_to_flows


def test_flows_are_unit_inside_cells_and_zero_outside() -> None:
    labels = random_labels((96, 128), ShapeParams(diameter=18), seed=1)
    flows = masks_to_flows(labels)
    assert flows.shape == (2, 96, 128) and flows.dtype == np.float32
    norm = np.hypot(flows[0], flows[1])
    assert np.all(norm[labels == 0] == 0)
    inside = norm[labels > 0]
    assert np.all(inside <= 1 + 1e-6)
    assert np.mean(np.abs(inside - 1) < 1e-5) > 0.999  # only exact saddles may vanish


def test_flows_point_towards_the_centre_in_y_x_order() -> None:
    labels = np.zeros((40, 60), dtype=np.int32)
    labels[10:30, 5:55] = 1  # a wide rectangle centred at (19.5, 29.5)
    flows = masks_to_flows(labels)
    assert flows[1, 20, 6] > 0.9 and flows[1, 20, 53] < -0.9  # x points inwards
    assert flows[0, 11, 30] > 0.9 and flows[0, 28, 30] < -0.9  # y points inwards


def _reference_flows(labels: np.ndarray) -> np.ndarray:
    """Cellpose 3's CPU recipe written plainly: diffuse in each padded box, take the gradient."""
    flows = np.zeros((2, *labels.shape))
    for label in np.unique(labels)[1:]:
        ys, xs = np.nonzero(labels == label)
        y0, x0 = ys.min() - 1, xs.min() - 1
        height, width = ys.max() - y0 + 2, xs.max() - x0 + 2
        iy, ix = ys - y0, xs - x0
        nearest = np.argmin((ix - ix.mean()) ** 2 + (iy - iy.mean()) ** 2)
        heat = np.zeros((height, width))
        for _ in range(2 * (height + width)):
            heat[iy[nearest], ix[nearest]] += 1
            heat[iy, ix] = sum(heat[iy + dy, ix + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
        grad = np.stack([heat[iy + 1, ix] - heat[iy - 1, ix], heat[iy, ix + 1] - heat[iy, ix - 1]])
        flows[:, ys, xs] = grad / (1e-60 + np.hypot(*grad))
    return flows


def test_flows_match_a_plain_reference() -> None:
    labels = random_labels((48, 64), ShapeParams(diameter=14), seed=9)
    np.testing.assert_allclose(masks_to_flows(labels), _reference_flows(labels), atol=1e-6)


def test_flows_ignore_label_values_and_dtype() -> None:
    labels = random_labels((64, 64), ShapeParams(diameter=16), seed=2)
    sparse = np.where(labels > 0, labels.astype(np.int64) * 1_000_003 + 7, 0)
    reference = masks_to_flows(labels)
    np.testing.assert_array_equal(masks_to_flows(sparse), reference)
    np.testing.assert_array_equal(masks_to_flows(labels.astype(np.uint16)), reference)


def test_one_pixel_cell_and_empty_labels() -> None:
    labels = np.zeros((5, 7), dtype=np.uint8)
    assert not masks_to_flows(labels).any()
    labels[2, 3] = 1
    assert not masks_to_flows(labels).any()  # no gradient: zero, not NaN


@pytest.mark.parametrize("bad", [np.zeros((3, 4, 5), int), np.zeros((4, 4)), -np.ones((4, 4), int)])
def test_bad_labels_raise(bad: np.ndarray) -> None:
    with pytest.raises(InvalidImageError):
        masks_to_flows(bad)


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip_recovers_touching_cells(seed: int) -> None:
    labels = random_labels((256, 256), ShapeParams(diameter=24, density=0.9), seed=seed)
    assert labels.max() > 50
    masks = _round_trip(labels)
    assert masks.dtype == np.uint16
    assert average_precision(labels, masks, thresholds=(0.9,))[0] >= 0.95


def test_round_trip_non_square_with_cells_cut_by_the_border() -> None:
    labels = random_labels((97, 211), ShapeParams(diameter=20), seed=3)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    assert border.size > 5  # cells are cut by every edge
    masks = _round_trip(labels, FlowParams(min_size=0))
    assert masks.shape == (97, 211)
    assert average_precision(labels, masks, thresholds=(0.9,))[0] >= 0.95


def test_single_cell_is_recovered_exactly() -> None:
    labels = _disc((64, 80), (30, 45), 14).astype(np.int32) * 7
    masks = _round_trip(labels)
    assert masks.max() == 1
    np.testing.assert_array_equal(masks == 1, labels > 0)


def test_empty_image_gives_zeros() -> None:
    flows = np.zeros((2, 33, 47), dtype=np.float32)
    masks = flows_to_masks(flows, np.full((33, 47), -3.0))
    assert masks.shape == (33, 47) and masks.dtype == np.uint16 and not masks.any()


def test_output_is_deterministic_across_runs_and_thread_counts() -> None:
    labels = random_labels((160, 192), ShapeParams(diameter=20), seed=4)
    flows, cellprob = masks_to_flows(labels), _cellprob(labels)
    rng = np.random.default_rng(0)
    flows = flows + rng.normal(0, 0.3, flows.shape).astype(np.float32)  # a harder case
    first = flows_to_masks(flows, cellprob)
    np.testing.assert_array_equal(flows_to_masks(flows, cellprob), first)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(flows_to_masks(flows, cellprob), first)
        np.testing.assert_array_equal(masks_to_flows(labels), masks_to_flows(labels))
    finally:
        numba.set_num_threads(threads)
    firsts = [np.flatnonzero(first.ravel() == k)[0] for k in range(1, first.max() + 1)]
    assert np.all(np.diff(firsts) > 0)  # numbered in raster order of first pixels


def test_label_dtype_switches_to_uint32_above_65535_masks() -> None:
    blocks = (np.arange(256 * 256).reshape(256, 256) + 1).repeat(4, 0).repeat(4, 1)
    params = FlowParams(min_size=0, flow_threshold=0)
    many = _round_trip(blocks, params)
    assert many.dtype == np.uint32 and many.max() == 65536
    blocks[:4, :4] = 0
    fewer = _round_trip(blocks, params)
    assert fewer.dtype == np.uint16 and fewer.max() == 65535


# ----------------------------------------------------------------------------- follow_flows


def _plain_euler(flows: np.ndarray, foreground: np.ndarray, niter: int) -> np.ndarray:
    """Every step for every pixel, in numpy, with follow_flows' float32 arithmetic."""
    height, width = foreground.shape
    masked = (flows * foreground).astype(np.float32)
    ys, xs = np.nonzero(foreground)
    py, px = ys.astype(np.float32), xs.astype(np.float32)
    one = np.float32(1)
    for _ in range(niter):
        y0, x0 = py.astype(np.int64), px.astype(np.int64)
        fy, fx = py - y0.astype(np.float32), px - x0.astype(np.float32)
        y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
        weights = ((one - fy) * (one - fx), (one - fy) * fx, fy * (one - fx), fy * fx)
        corners = ((y0, x0), (y0, x1), (y1, x0), (y1, x1))
        steps = []
        for channel in masked:
            total = channel[corners[0]] * weights[0]
            for corner, weight in zip(corners[1:], weights[1:], strict=True):
                total = total + channel[corner] * weight
            steps.append(total)
        py = np.clip(py + steps[0], 0, np.float32(height - 1))
        px = np.clip(px + steps[1], 0, np.float32(width - 1))
    return py.astype(np.int64) * width + px.astype(np.int64)


@pytest.mark.parametrize("niter", [1, 2, 7, 120])
def test_follow_flows_equals_plain_euler_integration(niter: int) -> None:
    labels = random_labels((48, 56), ShapeParams(diameter=14), seed=5)
    flows = masks_to_flows(labels)
    foreground = labels > 0
    np.testing.assert_array_equal(
        follow_flows(flows, foreground, niter=niter), _plain_euler(flows, foreground, niter)
    )


# ----------------------------------------------------------------------------- clean-up and QC


def test_min_size_drops_small_masks() -> None:
    labels = np.zeros((60, 60), dtype=np.int32)
    labels[_disc((60, 60), (20, 20), 10)] = 1  # about 314 pixels
    labels[40:45, 40:45] = 2  # 25 pixels
    assert _round_trip(labels, FlowParams(min_size=15)).max() == 2
    kept = _round_trip(labels, FlowParams(min_size=26))
    np.testing.assert_array_equal(kept > 0, labels == 1)


def test_flow_threshold_drops_a_mask_with_wrong_flows() -> None:
    labels = random_labels((128, 128), ShapeParams(diameter=20, packing=1.5), seed=6)
    flows = masks_to_flows(labels)
    ys, xs = np.nonzero(labels == 5)
    target = np.array([ys.min(), xs[ys == ys.min()].min()], dtype=float)  # an edge pixel
    toward = target[:, None] - np.stack([ys, xs]).astype(float)
    norm = np.maximum(np.hypot(*toward), 1e-9)
    flows[:, ys, xs] = toward / norm  # converges, but not like diffusion flows
    errors = flow_error(labels, flows)
    assert errors[4] > 0.4 and np.all(np.delete(errors, 4) < 1e-9)
    unchecked = flows_to_masks(flows, _cellprob(labels), FlowParams(flow_threshold=0))
    checked = flows_to_masks(flows, _cellprob(labels))
    assert unchecked.max() == labels.max() and checked.max() == labels.max() - 1
    assert not checked[labels == 5].any()
    assert _same_partition(checked, np.where(labels == 5, 0, labels))


def test_flow_error_of_reversed_flows_is_four() -> None:
    labels = random_labels((64, 64), ShapeParams(diameter=16), seed=7)
    flows = masks_to_flows(labels)
    present = np.unique(labels)[1:] - 1
    errors = flow_error(labels, -flows)
    assert errors.shape == (labels.max(),)
    np.testing.assert_allclose(errors[present], 4.0, atol=1e-3)
    labels[labels == 3] = 0
    assert np.isnan(flow_error(labels, flows)[2])


def test_fill_holes_fills_enclosed_background_only() -> None:
    labels = np.zeros((40, 40), dtype=np.int32)
    labels[5:20, 5:20] = 1
    labels[10:14, 10:14] = 0  # a hole of cell 1 alone
    labels[22:38, 22:38] = 2
    labels[25:35, 25:35] = 0
    labels[28:32, 28:32] = 3  # cell 3 sits in cell 2's hole
    labels[0:3, 30:32] = 4  # 6 pixels: too small
    out = fill_holes_and_remove_small(labels, min_size=10)
    assert out.dtype == np.uint16 and out.max() == 3
    assert np.all(out[5:20, 5:20] == 1)
    assert np.all(out[28:32, 28:32] == 3)
    assert out[26, 26] == 0  # shared by cells 2 and 3: not a hole of either
    assert not out[0:3, 30:32].any()


def test_renumbering_picks_uint32_above_65535_masks() -> None:
    grid = np.zeros((512, 512), dtype=np.int64)
    grid[::2, ::2] = np.arange(1, 256 * 256 + 1).reshape(256, 256)
    assert fill_holes_and_remove_small(grid, min_size=0).dtype == np.uint32
    grid[0, 0] = 0
    assert fill_holes_and_remove_small(grid, min_size=0).dtype == np.uint16


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("niter", 0),
        ("niter", 2.5),
        ("niter", True),
        ("min_size", -1),
        ("flow_threshold", -0.1),
        ("cellprob_threshold", float("nan")),
        ("cellprob_threshold", "high"),
        ("max_size_fraction", 0.0),
        ("max_size_fraction", 1.5),
    ],
)
def test_invalid_params_raise_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidParamsError, match=field):
        FlowParams(**{field: value})


def test_params_defaults_and_coercion() -> None:
    params = FlowParams(niter=np.int64(50), cellprob_threshold=1)
    assert params == FlowParams(niter=50, cellprob_threshold=1.0)
    assert FlowParams() == FlowParams(200, 0.0, 0.4, 15)


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(InvalidImageError, match="flows"):
        flows_to_masks(np.zeros((2, 10, 11), np.float32), np.zeros((10, 12)))
    with pytest.raises(InvalidImageError, match="cellprob"):
        flows_to_masks(np.zeros((2, 10, 12), np.float32), np.zeros((10, 12), bool))
    with pytest.raises(InvalidImageError, match="flows"):
        flow_error(np.zeros((4, 4), int), np.zeros((2, 4, 5)))


def test_non_finite_flows_do_not_break_other_cells() -> None:
    labels = random_labels((96, 96), ShapeParams(diameter=20, packing=1.5), seed=8)
    flows = masks_to_flows(labels)
    flows[:, labels == 2] = np.nan
    flows[0, labels == 3] = np.inf
    masks = flows_to_masks(flows, _cellprob(labels), FlowParams(min_size=0))
    good = np.isin(labels, [2, 3], invert=True)
    assert _same_partition(np.where(good, masks, 0), np.where(good, labels, 0))
