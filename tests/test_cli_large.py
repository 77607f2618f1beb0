"""``zoo segment`` with large images and Dask: the block path is picked by size, writes a
tiled BigTIFF or OME-Zarr plus a cell table, and ``--dask local`` writes the serial run's
masks, summary and resume."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_images import local_zoo_env, mixed_folder, write_png
from typer.testing import CliRunner

from zoo.cli.main import app
from zoo.data.synthetic import STYLE_SPECS, generate
from zoo.errors import ZooError
from zoo.io import read_image
from zoo.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "models.yaml").is_file(), reason="no shipped zoo")
zarr = pytest.importorskip("zarr")
# no image fits this budget whole (it holds a process and one small block): blocks
SMALL_BUDGET = ("--max-memory", "640MB", "--workers", "1")


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("zoo-home")
    with local_zoo_env(home):
        yield home


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = replace(STYLE_SPECS["nuclei"], diameter_range=(15.0, 19.0), density_range=(0.4, 0.4))
    image = generate("nuclei", seed=5, shape=(256, 352), spec=spec).image[..., 0]
    path = tmp_path_factory.mktemp("big") / "slide.tif"
    tifffile.imwrite(path, image.astype(np.uint16), tile=(64, 64))
    return path


def run(*args: str | Path):
    result = CliRunner().invoke(app, ["segment", *map(str, args)])
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    return result


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def test_dask_local_writes_the_serial_runs_masks_summary_and_resume(tmp_path: Path) -> None:
    data = mixed_folder(tmp_path / "data")
    write_png(tmp_path / "data" / "d.png", style="cyto", seed=7)
    serial, spread = tmp_path / "serial", tmp_path / "dask"
    first = run(tmp_path / "data", "--out", serial, "--workers", "2")
    assert first.exit_code == 0, first.stderr
    second = run(tmp_path / "data", "--out", spread, "--dask", "local", "--workers", "2")
    assert second.exit_code == 0, second.stderr
    names = sorted(p.name for p in serial.iterdir())
    assert names == sorted(p.name for p in spread.iterdir()) and len(names) == 5
    for name in names:
        if name.endswith("_masks.tif"):
            assert (serial / name).read_bytes() == (spread / name).read_bytes(), name
    assert rows(serial) == rows(spread) and len(rows(spread)) == 4
    assert second.stdout.splitlines()[1:] == first.stdout.splitlines()[1:]  # the model tally

    (spread / "c_masks.tif").unlink()
    again = run(tmp_path / "data", "--out", spread, "--dask", "local", "--workers", "1")
    assert again.exit_code == 0, again.stderr
    assert "3 skipped (already done)" in again.stdout and "segmented 1 image(s)" in again.stdout
    assert (spread / "c_masks.tif").read_bytes() == (serial / "c_masks.tif").read_bytes()
    assert rows(spread) == rows(serial)
    assert data["a"].is_file()


def test_an_image_too_large_for_the_budget_goes_through_blocks(big: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = run(big, "--out", out, "--model", "cpnet.nuclei", "--diameter", "17",
                 *SMALL_BUDGET, "--overlay")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "slide_cells.parquet", "slide_masks.tif", "slide_overlay.png", "summary.csv"]
    with tifffile.TiffFile(out / "slide_masks.tif") as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and page.tilewidth == 256
        labels = page.asarray()
    (row,) = rows(out)
    assert int(row["n_cells"]) == labels.max() > 50 and row["model"] == "cpnet.nuclei"
    # the same image whole, with a budget that holds it: the same masks
    whole = run(big, "--out", tmp_path / "whole", "--model", "cpnet.nuclei", "--diameter", "17",
                "--workers", "1")
    assert whole.exit_code == 0, whole.stderr
    np.testing.assert_array_equal(read_image(tmp_path / "whole" / "slide_masks.tif"), labels)
    assert not (tmp_path / "whole" / "slide_cells.parquet").exists()

    skipped = run(big, "--out", out, "--model", "cpnet.nuclei", *SMALL_BUDGET, "--overlay")
    assert "1 skipped (already done)" in skipped.stdout


def test_ome_zarr_output_and_zarr_input(big: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = run(big, "--out", out, "--model", "cpnet.nuclei", "--diameter", "17",
                 "--format", "ome-zarr", "--table", "csv", "--block-size", "128")
    assert result.exit_code == 0, result.stderr
    store = out / "slide_masks.ome.zarr"
    assert store.is_dir() and (out / "slide_cells.csv").is_file()
    labels = zarr.open_group(str(store), mode="r")["0"][...]
    again = run(big, "--out", out, "--model", "cpnet.nuclei", "--format", "ome-zarr")
    assert "1 skipped (already done)" in again.stdout  # an OME-Zarr folder counts as done

    # a zarr folder named directly is an image (not a folder to search): the same cells
    source = tmp_path / "input.zarr"
    zarr.create_array(str(source), data=tifffile.imread(big), chunks=(64, 64))
    from_zarr = run(source, "--out", tmp_path / "z", "--model", "cpnet.nuclei", "--diameter",
                    "17", "--format", "ome-zarr", "--table", "none")
    assert from_zarr.exit_code == 0, from_zarr.stderr
    np.testing.assert_array_equal(
        zarr.open_group(str(tmp_path / "z" / "input_masks.ome.zarr"), mode="r")["0"][...], labels)
    assert sorted(p.name for p in (tmp_path / "z").iterdir()) == [
        "input_masks.ome.zarr", "summary.csv"]


def test_a_large_image_in_a_whole_image_format_fails_in_one_line(big: Path, tmp_path: Path):
    result = run(big, "--out", tmp_path, "--model", "cpnet.nuclei", "--format", "png",
                 *SMALL_BUDGET)
    assert result.exit_code == 1
    assert "do not fit --max-memory" in result.stderr and "--format tiff or ome-zarr" in \
        result.stderr


@pytest.mark.parametrize("args,message", [
    (("--max-memory", "lots"), "memory must look like"),
    (("--table", "xlsx"), "--table must be one of"),
    (("--dask", "somewhere"), "--dask must be 'local' or a scheduler address"),
    (("--dask", "local", "--server", "http://127.0.0.1:1"), "exclude each other"),
])
def test_bad_options_fail_in_one_line(big: Path, tmp_path: Path, args, message):
    result = run(big, "--out", tmp_path, *args)
    assert result.exit_code == 1 and message in result.stderr


def test_a_scheduler_that_does_not_answer_is_one_error():
    pytest.importorskip("distributed")
    from zoo.large.distributed import connect

    with pytest.raises(ZooError, match="no Dask scheduler answers at tcp://127.0.0.1:9"):
        with connect("tcp://127.0.0.1:9", settings=Settings.from_env(), timeout="1s"):
            pass
