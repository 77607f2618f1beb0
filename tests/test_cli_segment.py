"""``zoo segment``: folders, globs, resume, failures, summary.csv and tally (shipped zoo)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_images import local_zoo_env, mixed_folder, write_corrupt, write_png, write_tiff
from typer.testing import CliRunner

from zoo.cli.main import app
from zoo.io import coco_rle_to_labels, read_image
from zoo.params import PredictParams
from zoo.pipeline import Zoo
from zoo.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "models.yaml").is_file(), reason="no shipped zoo")


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory: pytest.TempPathFactory):
    """One model cache for the module; torch on one thread: on a 2-core machine shared with
    other jobs, torch's spinning OpenMP threads make a 96² image 40× slower."""
    home = tmp_path_factory.mktemp("zoo-home")
    with local_zoo_env(home):
        yield home


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return mixed_folder(tmp_path_factory.mktemp("data"))


def run(*args: str | Path):
    result = CliRunner().invoke(app, ["segment", *map(str, args)])
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    return result


def last_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    return lines[-1]


def errors(text: str) -> str:
    """The error lines of stderr (the progress bar redraws with carriage returns)."""
    return "\n".join(line for line in text.splitlines() if line.startswith("error: "))


def summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def tally(stdout: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\S+): (\d+) images?$", stdout, re.MULTILINE)}


def test_a_folder_is_searched_recursively_and_summarised(data: dict[str, Path], home: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(data["a"].parent, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "a_masks.tif", "b_masks.tif", "c_masks.tif", "summary.csv"]  # not old_masks, .hidden
    rows = summary(out)
    assert [row["image"] for row in rows] == sorted(str(data[k]) for k in "abc")
    assert list(rows[0]) == ["image", "n_cells", "model", "cluster", "ood", "diameter", "seconds"]
    for row in rows:
        labels = read_image(out / f"{Path(row['image']).stem}_masks.tif")
        assert int(row["n_cells"]) == labels.max() > 0
        assert re.fullmatch(r"\d+:[\w-]+", row["cluster"]) and row["ood"] in ("true", "false")
        assert float(row["diameter"]) > 0 and float(row["seconds"]) > 0
    models = [row["model"] for row in rows]
    assert tally(result.stdout) == {m: models.count(m) for m in set(models)}
    assert "segmented 3 image(s)" in result.stdout
    # the pipelined masks are the library's masks
    zoo = Zoo(settings=Settings(home=home, device="cpu"))
    direct = zoo.segment(read_image(data["a"]), model="auto", params=PredictParams())
    np.testing.assert_array_equal(read_image(out / "a_masks.tif"), direct.prediction.labels)
    assert rows[0]["model"] == direct.model


def test_globs_expand_and_a_pattern_matching_nothing_fails(data: dict[str, Path],
                                                           tmp_path: Path) -> None:
    out = tmp_path / "out"
    root = data["a"].parent
    result = run(f"{root}/**/*.png", f"{root}/nothing*.tif", "--out", out,
                 "--model", "cpnet.nuclei", "--workers", "1")
    assert result.exit_code == 1
    assert f"error: {root}/nothing*.tif: no such file or folder" in errors(result.stderr)
    assert "1 of 2 input(s) failed" in last_error(result)
    assert sorted(p.name for p in out.iterdir()) == ["b_masks.tif", "summary.csv"]
    assert tally(result.stdout) == {"cpnet.nuclei": 1}
    assert summary(out)[0]["cluster"] == "" and summary(out)[0]["ood"] == ""


def test_resume_skips_done_images_without_reading_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tiff(data / "a.tif")
    write_png(data / "b.png")
    write_png(data / "c.png", style="cyto", seed=4)
    out = tmp_path / "out"
    first = run(data, "--out", out, "--model", "cpnet.generalist", "--overlay")
    assert first.exit_code == 0, first.stderr
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("*_*.*")}
    assert len(written) == 6
    before = summary(out)

    write_corrupt(data / "b.png")  # a resumed run must not even read a done image
    second = run(data, "--out", out, "--model", "cpnet.generalist", "--overlay")
    assert second.exit_code == 0, second.stderr
    assert "3 skipped (already done)" in second.stdout
    assert "segmented 0 image(s)" in second.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_*.*")} == written
    assert summary(out) == before

    (out / "c_overlay.png").unlink()  # an output missing: that image is redone
    third = run(data, "--out", out, "--model", "cpnet.generalist", "--overlay")
    assert third.exit_code == 0 and "2 skipped (already done)" in third.stdout
    assert (out / "c_overlay.png").is_file()
    assert (out / "c_masks.tif").stat().st_mtime_ns > written["c_masks.tif"]
    assert [row["image"] for row in summary(out)] == [row["image"] for row in before]

    forced = run(data, "--out", out, "--model", "cpnet.generalist", "--overwrite")
    assert forced.exit_code == 1 and str(data / "b.png") in last_error(forced)
    assert (out / "a_masks.tif").stat().st_mtime_ns > written["a_masks.tif"]
    assert (out / "b_masks.tif").stat().st_mtime_ns == written["b_masks.tif"]
    assert [row["image"] for row in summary(out)] == [str(data / n) for n in ("a.tif", "b.png",
                                                                             "c.png")]


def test_a_corrupt_file_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_corrupt(data / "0_broken.tif")
    write_png(data / "good.png")
    (data / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    result = run(data, "--out", out, "--model", "cpnet.generalist")
    assert result.exit_code == 1
    assert re.search(r"^error: .*0_broken\.tif: .*TIFF", errors(result.stderr), re.MULTILINE)
    assert re.search(r"^error: .*empty\.jpg: file is empty", errors(result.stderr), re.MULTILINE)
    final = last_error(result)
    assert "2 of 3 input(s) failed" in final and "0_broken.tif" in final and "empty.jpg" in final
    assert (out / "good_masks.tif").is_file() and not (out / "0_broken_masks.tif").exists()
    assert [Path(row["image"]).name for row in summary(out)] == ["good.png"]


def test_the_same_name_in_two_folders_is_an_error_not_an_overwrite(tmp_path: Path) -> None:
    first, second = write_png(tmp_path / "a" / "x.png"), write_png(tmp_path / "b" / "x.png",
                                                                  style="cyto", seed=9)
    out = tmp_path / "out"
    result = run(tmp_path / "a", tmp_path / "b", "--out", out, "--model", "cpnet.generalist")
    assert result.exit_code == 1
    assert f"error: {second}: its outputs would overwrite those of {first}" in errors(
        result.stderr)
    assert [row["image"] for row in summary(out)] == [str(first)]


def test_coco_output_and_overlay(data: dict[str, Path], tmp_path: Path) -> None:
    tiff, coco = tmp_path / "tiff", tmp_path / "coco"
    options = ["--model", "cpnet.tissue", "--channels", "0,1"]
    assert run(data["a"], "--out", tiff, *options).exit_code == 0
    result = run(data["a"], "--out", coco, *options, "--format", "coco", "--overlay")
    assert result.exit_code == 0, result.stderr
    document = json.loads((coco / "a_masks.json").read_text())
    labels = read_image(tiff / "a_masks.tif")
    assert labels.max() > 0
    np.testing.assert_array_equal(coco_rle_to_labels(document["annotations"], labels.shape),
                                  labels)
    overlay = read_image(coco / "a_overlay.png")
    assert overlay.shape == (*labels.shape, 3) and overlay.dtype == np.uint8
    coloured = (overlay.max(axis=-1) - overlay.min(axis=-1)) > 0
    assert coloured.any() and not coloured.all()  # outlines in colour over a grey image


@pytest.mark.parametrize(("args", "needle"), [
    (["--format", "jpeg"], "--format must be one of"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--channels", "x"], "channels must be"),
    (["--model", "cpnet.phas"], "unknown model 'cpnet.phas'; did you mean cpnet.phase"),
])
def test_bad_options_fail_in_one_line(data: dict[str, Path], tmp_path: Path, args, needle) -> None:
    result = run(data["b"], "--out", tmp_path / "out", *args)
    assert result.exit_code == 1 and needle in last_error(result)


def test_the_console_script_on_a_mixed_folder(data: dict[str, Path], home: Path,
                                             tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(data["a"].parent, folder)
    write_corrupt(folder / "sub" / "broken.tif")
    zoo = Path(sys.executable).parent / "zoo"
    env = {**os.environ, "ZOO_HOME": str(home), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(zoo), "segment", str(folder), "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert re.search(r"^error: .*broken\.tif: ", errors(done.stderr), re.MULTILINE)
    assert done.stderr.strip().splitlines()[-1].endswith(str(folder / "sub" / "broken.tif"))
    for stem in "abc":
        assert read_image(tmp_path / "out" / f"{stem}_masks.tif").max() > 0
