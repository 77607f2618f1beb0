"""The block path end to end with the shipped nuclei model: identical masks at any block size
and worker count (threads and a Dask LocalCluster), equal to whole-image segmentation, a valid
OME-Zarr, a true per-cell table, and resume after a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from cli_images import local_zoo_env

from zoo.data.synthetic import STYLE_SPECS, generate
from zoo.large import LargeParams, ThreadExecutor, segment_large
from zoo.large.engine import output_paths
from zoo.params import PredictParams
from zoo.pipeline import Zoo
from zoo.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "models.yaml").is_file(), reason="no shipped zoo")
zarr = pytest.importorskip("zarr")

MODEL = "cpnet.nuclei"
PARAMS = PredictParams(diameter=17.0, tile_size=128)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("zoo-home")
    with local_zoo_env(home):
        yield home


@pytest.fixture(scope="module")
def zoo(home) -> Zoo:
    return Zoo(settings=Settings.from_env())


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 224 × 288 16-bit tiled TIFF of synthetic nuclei (about 40 cells)."""
    spec = replace(STYLE_SPECS["nuclei"], diameter_range=(15.0, 19.0), density_range=(0.4, 0.4))
    image = generate("nuclei", seed=5, shape=(224, 288), spec=spec).image[..., 0]
    image = image.astype(np.uint16)
    path = tmp_path_factory.mktemp("data") / "nuclei.tif"
    tifffile.imwrite(path, image, tile=(64, 64))
    return path, image


def _run(zoo, path, out, *, block, threads=1, fmt="tiff", executor=None, **extra):
    large = LargeParams(block_size=block, halo=48, fmt=fmt, **extra)
    return segment_large(path, out, executor=executor or ThreadExecutor(zoo, threads),
                         model=MODEL, params=PARAMS, large=large)


@pytest.fixture(scope="module")
def reference(zoo, nuclei, tmp_path_factory):
    """The block path at one block size on one thread: the masks every other run must give."""
    result = _run(zoo, nuclei[0], tmp_path_factory.mktemp("reference"), block=96)
    return result, result.masks.read_bytes()


def test_masks_are_byte_identical_at_any_block_size_and_thread_count(zoo, nuclei, reference,
                                                                     tmp_path):
    first, expected = reference
    assert first.blocks == 9 and first.n_cells >= 30 and first.cut == 0 and first.orphans == 0
    for block, threads in ((160, 2), (288, 1), (64, 2)):
        result = _run(zoo, nuclei[0], tmp_path / f"b{block}", block=block, threads=threads)
        assert result.masks.read_bytes() == expected, (block, threads)
        assert result.n_cells == first.n_cells
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*"))  # parts removed


def test_block_path_equals_whole_image_segmentation(zoo, nuclei, reference):
    """On an image that fits whole, blocks (9 of them, cells across every border) give the
    whole-image labels: no seams."""
    result, _ = reference
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = zoo.predictor(MODEL).predict(nuclei[1], PARAMS).labels
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(tifffile.imread(result.masks), whole)


def test_dask_workers_write_the_same_masks(zoo, nuclei, reference, tmp_path, home):
    distributed = pytest.importorskip("distributed")
    from zoo.large.distributed import DaskExecutor, ZooPlugin

    settings = Settings.from_env()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        client.register_plugin(ZooPlugin(settings), name=ZooPlugin.name)
        executor = DaskExecutor(client, settings)
        assert executor.concurrency == 1
        for fmt in ("tiff", "ome-zarr"):
            result = _run(zoo, nuclei[0], tmp_path / fmt, block=128, fmt=fmt, executor=executor)
            assert result.n_cells == reference[0].n_cells
    assert (tmp_path / "tiff" / "nuclei_masks.tif").read_bytes() == reference[1]
    written = zarr.open_group(str(tmp_path / "ome-zarr" / "nuclei_masks.ome.zarr"), mode="r")
    np.testing.assert_array_equal(written["0"][...], tifffile.imread(reference[0].masks))


def test_ome_zarr_is_valid_ngff_with_a_nearest_neighbour_pyramid(zoo, nuclei, reference,
                                                                 tmp_path):
    models = pytest.importorskip("ome_zarr_models.v04")
    result = _run(zoo, nuclei[0], tmp_path, block=160, fmt="ome-zarr")
    assert result.masks.name == "nuclei_masks.ome.zarr" and result.masks.is_dir()
    group = zarr.open_group(str(result.masks), mode="r")
    label = models.ImageLabel.from_zarr(group)  # raises on invalid NGFF 0.4 metadata
    multiscale = label.attributes.multiscales[0]
    assert [a.name for a in multiscale.axes] == ["y", "x"]
    levels = [group[d.path][...] for d in multiscale.datasets]
    np.testing.assert_array_equal(levels[0], tifffile.imread(reference[0].masks))
    for upper, lower in zip(levels, levels[1:]):
        np.testing.assert_array_equal(lower, upper[::2, ::2])
    assert max(levels[-1].shape) <= 256 and len(levels) >= 2
    assert (result.masks / "0" / ".zarray").read_text().count('"dimension_separator": "/"') == 1


def test_the_cell_table_describes_the_written_masks(zoo, nuclei, reference, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    result = _run(zoo, nuclei[0], tmp_path, block=64)
    table = pq.read_table(result.table).to_pydict()
    labels, image = tifffile.imread(result.masks), nuclei[1].astype(np.float64)
    ids = np.arange(1, labels.max() + 1)
    assert table["label"] == ids.tolist()
    area = np.bincount(labels.ravel())[1:]
    yy, xx = np.indices(labels.shape)
    np.testing.assert_array_equal(table["area"], area)
    for name, values in (("centroid_y", yy), ("centroid_x", xx), ("mean_intensity", image)):
        sums = np.bincount(labels.ravel(), weights=values.ravel())[1:]
        np.testing.assert_allclose(table[name], sums / area, rtol=1e-12)
    from scipy import ndimage

    for row, box in enumerate(ndimage.find_objects(labels)):
        assert (table["bbox_y0"][row], table["bbox_x0"][row], table["bbox_y1"][row],
                table["bbox_x1"][row]) == (box[0].start, box[1].start, box[0].stop, box[1].stop)
    csv = _run(zoo, nuclei[0], tmp_path / "csv", block=288, table="csv")
    assert csv.table.suffix == ".csv"
    assert csv.table.read_text().splitlines()[0].startswith("label,centroid_y,centroid_x,area")


_KILLED_RUN = textwrap.dedent("""
    import sys
    from zoo.large import LargeParams, ThreadExecutor, segment_large
    from zoo.params import PredictParams
    from zoo.pipeline import Zoo
    from zoo.settings import Settings
    import torch
    torch.set_num_threads(1)
    zoo = Zoo(settings=Settings.from_env())
    segment_large(sys.argv[1], sys.argv[2], executor=ThreadExecutor(zoo, 1), model="{model}",
                  params=PredictParams(diameter=17.0, tile_size=128),
                  large=LargeParams(block_size=64, halo=48))
""")


def test_a_killed_run_resumes_with_the_missing_blocks_only(zoo, nuclei, reference, tmp_path,
                                                           home):
    path = nuclei[0]
    parts = output_paths(tmp_path, "nuclei", LargeParams())["parts"]
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN.format(model=MODEL), str(path), str(tmp_path)],
        env={**os.environ, "ZOO_HOME": str(home), "ZOO_DEVICE": "cpu"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while len(list(parts.glob("block-*.npz"))) < 3:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    finished = {p.name for p in parts.glob("block-*.npz")}
    assert 3 <= len(finished) < 20 and not (tmp_path / "nuclei_masks.tif").exists()
    result = _run(zoo, path, tmp_path, block=64)
    assert result.resumed == len(finished)
    assert sorted(r["index"] for r in result.block_reports) == sorted(
        i for i in range(result.blocks) if f"block-{i:06d}.npz" not in finished)
    np.testing.assert_array_equal(tifffile.imread(result.masks),
                                  tifffile.imread(reference[0].masks))
    assert not parts.exists()


def test_a_changed_request_starts_over(zoo, nuclei, tmp_path):
    first = _run(zoo, nuclei[0], tmp_path, block=160)
    other = segment_large(nuclei[0], tmp_path, executor=ThreadExecutor(zoo, 1), model=MODEL,
                          params=replace(PARAMS, diameter=23.0),
                          large=LargeParams(block_size=160, halo=48))
    assert other.resumed == 0 and other.diameter == 23.0 and first.diameter == 17.0


def test_auto_decides_model_and_diameter_as_the_whole_image_path(zoo, nuclei, tmp_path):
    params = PredictParams(tile_size=128)
    result = segment_large(nuclei[0], tmp_path, executor=ThreadExecutor(zoo, 1), model="auto",
                           params=params, large=LargeParams(block_size=288, halo=48))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = zoo.segment(nuclei[1], model="auto", params=params)
    finally:
        torch.set_num_threads(before)
    assert result.diameter == whole.prediction.diameter  # same bounds, same central view
    assert result.model == whole.model and result.route["model"] == whole.route.model
