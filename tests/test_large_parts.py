"""The block path's pieces: block plans, memory model, lazy readers, normalisation,
window-by-window resizing, and a cell straddling a block border (no network involved)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from zoo.errors import InvalidImageError, InvalidParamsError
from zoo.flows import flows_to_masks, masks_to_flows
from zoo.large import norm, stitch
from zoo.large.blocks import (
    BlockPlan,
    Window,
    block_bytes,
    block_side,
    halo_for,
    parse_memory,
    whole_image_limit,
)
from zoo.large.network import Geometry, Resampler
from zoo.large.reader import image_pixels, is_zarr, open_image
from zoo.preprocess import normalize, resize, select_channels

zarr = pytest.importorskip("zarr")


# ----------------------------------------------------------------------------- plans


@pytest.mark.parametrize("shape,block", [((100, 130), 32), ((64, 64), 64), ((65, 200), 48)])
def test_block_cores_tile_the_image_and_outer_windows_add_the_halo(shape, block):
    plan = BlockPlan(shape, block, 10)
    cover = np.zeros(shape, dtype=int)
    for b in plan.blocks:
        cover[b.core.slices] += 1
        assert b.outer == b.core.grow(10, shape)
        assert plan.covering(b.core) == [b]
    assert np.all(cover == 1) and len(plan) == len(plan.blocks)
    window = Window(5, 70, 3, 60)
    assert {b.index for b in plan.covering(window)} == {
        b.index for b in plan.blocks if b.core.intersect(window)}


def test_block_side_follows_the_memory_budget():
    two, four = parse_memory("2GB"), parse_memory("4GB")
    assert block_side(four) > block_side(two) > block_side(two, concurrency=2)
    assert block_side(two, scale=1.5) < block_side(two)
    for memory, concurrency in ((two, 1), (two, 2), (four, 2)):
        side = block_side(memory, concurrency=concurrency, halo=72)
        assert side % 256 == 0
        assert block_bytes(side, halo=72) * concurrency <= memory
    assert whole_image_limit(four) > whole_image_limit(two) > 0
    with pytest.raises(InvalidParamsError, match="too small"):
        block_side(parse_memory("620MB"))


@pytest.mark.parametrize("text,value", [("2GB", 2 * 2**30), ("512mb", 512 * 2**20),
                                        ("1.5g", int(1.5 * 2**30)), ("1000", 1000)])
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["", "GB", "-1GB", "3 parsecs", "0"])
def test_parse_memory_rejects_nonsense(text):
    with pytest.raises(InvalidParamsError):
        parse_memory(text)


def test_halo_grows_with_the_diameter():
    assert halo_for(5) == 48 and halo_for(17) == 72 and halo_for(40) == 160
    with pytest.raises(InvalidParamsError):
        halo_for(0)


# ----------------------------------------------------------------------------- readers


@pytest.fixture
def picture(rng) -> np.ndarray:
    return rng.integers(0, 4000, size=(300, 420, 2)).astype(np.uint16)


def _windows():
    return [Window(0, 300, 0, 420), Window(17, 140, 33, 400), Window(299, 300, 0, 1)]


@pytest.mark.parametrize("layout", ["tiled-bigtiff", "striped-cyx", "yxs-rgb"])
def test_tiff_windows_equal_the_whole_image(tmp_path, picture, layout):
    path = tmp_path / "image.tif"
    if layout == "tiled-bigtiff":
        tifffile.imwrite(path, picture[..., 0], tile=(64, 64), bigtiff=True, compression="zlib")
        expected = picture[..., :1]
    elif layout == "striped-cyx":
        tifffile.imwrite(path, np.moveaxis(picture, -1, 0), metadata={"axes": "CYX"},
                         rowsperstrip=16)
        expected = picture
    else:
        expected = (picture[..., :1] % 256).astype(np.uint8).repeat(3, axis=-1)
        tifffile.imwrite(path, expected, photometric="rgb")
    with open_image(path) as image:
        assert image.shape == (300, 420) and image.channels == expected.shape[-1]
        for window in _windows():
            np.testing.assert_array_equal(image.read(window), expected[window.slices])
        np.testing.assert_array_equal(image.read(Window(0, 300, 0, 420), step=7),
                                      expected[::7, ::7])
    assert image_pixels(path) == 300 * 420


@pytest.mark.parametrize("version", ["0.4", "0.5", "plain"])
def test_zarr_and_ome_zarr_windows_equal_the_whole_image(tmp_path, picture, version):
    path = tmp_path / "image.zarr"
    cyx = np.moveaxis(picture, -1, 0)[None, :, None]  # (t, c, z, y, x)
    if version == "plain":
        zarr.create_array(str(path), data=picture, chunks=(64, 64, 2))
    else:
        group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
        group.create_array("s0", data=cyx, chunks=(1, 1, 1, 64, 64))
        multiscales = [{"version": version, "datasets": [{"path": "s0"}],
                        "axes": [{"name": n} for n in "tczyx"]}]
        group.attrs.update({"multiscales": multiscales} if version == "0.4"
                           else {"ome": {"version": "0.5", "multiscales": multiscales}})
    assert is_zarr(path)
    with open_image(path) as image:
        assert image.shape == (300, 420) and image.channels == 2
        for window in _windows():
            np.testing.assert_array_equal(image.read(window), picture[window.slices])


def test_stacks_are_refused_with_their_shape(tmp_path, picture):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([picture[..., 0]] * 3), metadata={"axes": "ZYX"},
                     photometric="minisblack")
    with pytest.raises(InvalidImageError, match="'Z' holds 3"):
        open_image(path)
    with pytest.raises(FileNotFoundError):
        open_image(tmp_path / "missing.tif")


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
@pytest.mark.parametrize("bounds", [(1.0, 99.0), (0.0, 100.0), (3.7, 61.2)])
def test_percentiles_gathered_by_block_equal_the_whole_image(rng, dtype, bounds):
    info = np.iinfo(dtype)
    pixels = rng.integers(info.min, info.max, size=(97, 131, 1), endpoint=True).astype(dtype)
    sampling = norm.Sampling.of(pixels.dtype, pixels.shape[:2])
    plan = BlockPlan(pixels.shape[:2], 32, 0)
    parts = [norm.gather(pixels[b.core.slices], b.core, [0], sampling) for b in plan.blocks]
    low, high = norm.percentiles(norm.combine(parts, sampling)[0], sampling, *bounds)
    stack = select_channels(pixels, 0, None, n_in=2)
    expected = np.percentile(stack[0], bounds)
    assert (low, high) == (expected[0], expected[1])
    np.testing.assert_array_equal(norm.apply(stack, ((low, high), (0.0, 0.0))),
                                  normalize(stack, *bounds))


def test_float_images_are_sampled_on_a_grid_that_ignores_the_blocks(rng):
    pixels = rng.normal(size=(90, 70, 1)).astype(np.float32)
    sampling = norm.Sampling(False, 3, 0, 0)
    whole = norm.gather(pixels, Window(0, 90, 0, 70), [0], sampling)[0]
    for block in (16, 25):
        plan = BlockPlan((90, 70), block, 0)
        parts = [norm.gather(pixels[b.core.slices], b.core, [0], sampling) for b in plan.blocks]
        np.testing.assert_array_equal(np.sort(norm.combine(parts, sampling)[0]), np.sort(whole))


# ----------------------------------------------------------------------------- resizing


@pytest.mark.parametrize("source,target", [((61, 83), (90, 47)), ((64, 64), (40, 40))])
def test_resampling_window_by_window_equals_resizing_the_whole(rng, source, target):
    data = rng.normal(size=(2, *source)).astype(np.float32)
    sampler = Resampler(source, target)
    whole = sampler.apply(data, Window(0, source[0], 0, source[1]),
                          Window(0, target[0], 0, target[1]))
    # torch's geometry (torch rounds its coordinates in float32: differences of ~1e-5)
    np.testing.assert_allclose(whole, resize(data, target), atol=1e-4)
    for window in (Window(3, 30, 5, 40), Window(0, target[0], 7, 8)):
        held = sampler.needs(window).grow(2, source)  # any larger source window works too
        part = sampler.apply(data[(slice(None), *held.slices)], held, window)
        np.testing.assert_array_equal(part, whole[(slice(None), *window.slices)])


def test_tiles_over_a_window_are_those_that_overlap_it():
    geometry = Geometry((1000, 700), 1.0, 256, 0.1, 16)
    window = Window(300, 420, 0, 10)
    origins = geometry.tiles_over(window)
    assert origins and all(y < 420 and y + 256 > 300 and x == 0 for y, x in origins)
    assert origins == sorted(origins)


# ----------------------------------------------------------------------------- stitching


def _segment_by_blocks(flows, cellprob, plan, parts):
    """What the block task does after the network, for given flows."""
    shape = cellprob.shape
    for block in plan.blocks:
        labels = flows_to_masks(flows[(slice(None), *block.outer.slices)],
                                cellprob[block.outer.slices])
        pixels = np.ones((*block.outer.shape, 1), dtype=np.float32)
        stitch.save(parts, block.index, stitch.resolve(labels, block, shape, pixels))
    anchors = stitch.number_cells(parts, plan)
    reader = stitch.LabelReader(parts, plan, anchors, np.uint16)
    return reader.read(plan.full), reader


def _disc(labels, centre, radius, value):
    yy, xx = np.ogrid[: labels.shape[0], : labels.shape[1]]
    labels[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2] = value


@pytest.fixture
def straddling():
    """Cells on a 2 × 2 block grid of 64-pixel blocks: one across the vertical border, one on
    the corner where four blocks meet, one across the horizontal border, one inside."""
    truth = np.zeros((128, 128), dtype=np.int32)
    _disc(truth, (30, 64), 9, 1)
    _disc(truth, (64, 64), 10, 2)
    _disc(truth, (100, 30), 8, 3)
    _disc(truth, (96, 100), 7, 4)
    flows = masks_to_flows(truth)
    cellprob = np.where(truth > 0, 5.0, -5.0).astype(np.float32)
    return truth, flows, cellprob


def test_a_cell_straddling_block_borders_is_neither_split_nor_duplicated(tmp_path, straddling):
    truth, flows, cellprob = straddling
    plan = BlockPlan(truth.shape, 64, 32)
    labels, reader = _segment_by_blocks(flows, cellprob, plan, tmp_path)
    whole = flows_to_masks(flows, cellprob)
    np.testing.assert_array_equal(labels, whole)  # same cells, same canonical numbers
    assert labels.max() == 4 and not reader.orphans
    for cell in (1, 2, 3):  # each straddling cell is one label, and that label is nowhere else
        values = np.unique(labels[truth == cell])
        assert values.size == 1 and values[0] > 0
        assert np.array_equal(labels == values[0], truth == cell)
    owners = [stitch.load_meta(tmp_path, b.index)["owned"].size for b in plan.blocks]
    assert sum(owners) == 4  # each cell owned once


def test_a_halo_smaller_than_the_cells_cuts_them_and_says_so(tmp_path, straddling):
    """The test above fails when the halo does not hold the cells: this is what it catches."""
    truth, flows, cellprob = straddling
    plan = BlockPlan(truth.shape, 64, 8)  # the corner cell is 21 pixels wide
    labels, reader = _segment_by_blocks(flows, cellprob, plan, tmp_path)
    cut = sum(int(stitch.load_meta(tmp_path, b.index)["cut"]) for b in plan.blocks)
    assert cut > 0 and reader.orphans
    corner = np.unique(labels[truth == 2])
    assert corner.size > 1 or corner[0] == 0  # split, or lost


def test_torch_gives_a_tile_the_same_output_in_any_batch_at_one_thread(small_model):
    """Why blocks run tiles in fixed batches on one thread: the per-tile result then does not
    depend on the other tiles of the batch."""
    from zoo.backends import TorchRunner

    runner = TorchRunner(small_model.net, device="cpu")
    tiles = np.random.default_rng(1).random((4, 2, 64, 64), dtype=np.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = runner.run(tiles[:1])[0]
        padded = runner.run(np.concatenate([tiles[:1], np.zeros_like(tiles[:1])]))[0]
        mixed = runner.run(np.concatenate([tiles[1:2], tiles[:1]]))[0]
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(padded[0], mixed[1])
    assert alone.shape == (1, 3, 64, 64)


def test_the_benchmark_table_is_built_from_the_measured_parts(monkeypatch):
    """bench_large's table (rendered into the README by docs/render.py, which
    tests/test_docs.py checks) holds every measured part."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    monkeypatch.syspath_prepend(str(root / "bench"))  # its _results helper
    spec = importlib.util.spec_from_file_location("bench_large", root / "bench" / "bench_large.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    parts = {"scaling": {"2048": {"n_cells": 10, "peak_rss_gb": 0.5, "seconds": 4.0,
                                  "seconds_per_megapixel": 1.0}},
             "seams": {"side": 2048, "block": 512, "whole_cells": 10, "straddling_cells": 2,
                       "ap90_all": 1.0, "ap90_straddling": 1.0}}
    rows = bench.table(parts).rows
    assert rows[0] == {"what": "2048², 10 cells: peak RSS / time / s per Mpx",
                       "ours": "0.50 GB / 4 s / 1.00 s", "target": "report, linear"}
    assert rows[1]["ours"] == "1.0000 / 1.0000" and len(rows) == 2
