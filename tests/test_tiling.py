from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import InvalidParamsError
from zoo.tiling import extract_tiles, plan_tiles, stitch_tiles, taper


@pytest.mark.parametrize("shape", [(1, 1), (37, 50), (256, 256), (300, 700), (513, 257)])
def test_stitching_tiles_of_an_image_gives_the_image_back(shape, rng):
    stack = rng.normal(size=(3, *shape)).astype(np.float32)
    grid = plan_tiles(shape, tile=128, overlap=0.2, divisor=8)
    tiles = extract_tiles(stack, grid)
    assert tiles.shape[2:] == grid.tile and all(t % 8 == 0 for t in grid.tile)
    np.testing.assert_allclose(stitch_tiles(tiles, grid, overlap=0.2), stack, atol=1e-5)


def test_tiles_cover_the_image_with_overlap():
    grid = plan_tiles((1000, 300), tile=256, overlap=0.1, divisor=8)
    assert grid.starts_y[0] == 0 and grid.starts_y[-1] + 256 == grid.padded[0]
    gaps = np.diff(grid.starts_y)
    assert np.all(gaps <= 256 * 0.9 + 1)


def test_taper_is_positive_and_flat_inside():
    weights = taper((64, 64), 8)
    assert weights.min() > 0 and weights[32, 32] == 1.0 and weights[0, 0] < weights[4, 4]


def test_bad_tile_parameters_raise():
    with pytest.raises(InvalidParamsError, match="multiple of 8"):
        plan_tiles((64, 64), tile=100, divisor=8)
    with pytest.raises(InvalidParamsError, match="overlap"):
        plan_tiles((64, 64), tile=64, overlap=0.95)
