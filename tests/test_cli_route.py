"""``zoo route``: PATH expansion, --json lines and the --plot style map, with the shipped zoo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_images import local_zoo_env, mixed_folder, write_corrupt
from PIL import Image
from typer.testing import CliRunner

from zoo.cli.main import app
from zoo.io import read_image
from zoo.params import PredictParams
from zoo.pipeline import Zoo
from zoo.settings import Settings
from zoo.viz import embed_2d

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "models.yaml").is_file(), reason="no shipped zoo")


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory: pytest.TempPathFactory):
    """One model cache; torch on one thread (see tests/test_cli_segment.py)."""
    home = tmp_path_factory.mktemp("zoo-home")
    with local_zoo_env(home):
        yield home


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return mixed_folder(tmp_path_factory.mktemp("data"))


def run(*args: str | Path):
    result = CliRunner().invoke(app, ["route", *map(str, args)])
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    return result


def test_json_lines_match_the_library(data: dict[str, Path], home: Path) -> None:
    result = run(data["a"].parent, "--json", "--channels", "0")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["image"] for line in lines] == sorted(str(data[k]) for k in "abc")
    zoo = Zoo(settings=Settings(home=home, device="cpu"))
    expected = zoo.route(read_image(data["a"]), PredictParams()).to_dict()
    got = next(line for line in lines if line["image"] == str(data["a"]))
    assert got.pop("image") and got.keys() == expected.keys()
    assert got["model"] == expected["model"] and got["ood"] == expected["ood"]
    assert got["distance"] == pytest.approx(expected["distance"], abs=1e-5)
    for line in lines:
        assert 0 < line["confidence"] <= 1 and 0 <= line["distance"] <= 2


def test_text_lines_globs_and_failures(data: dict[str, Path], tmp_path: Path) -> None:
    broken = write_corrupt(tmp_path / "broken.tif")
    root = data["a"].parent
    result = run(f"{root}/**/*.jpg", broken, f"{root}/missing*.png")
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{data['c']}: cpnet.")
    assert "confidence" in result.stdout and "distance" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert any(str(broken) in line for line in errors[:-1])
    assert any(f"{root}/missing*.png: no such file" in line for line in errors[:-1])
    assert errors[-1].startswith("error: 2 of 3 input(s) failed")


def test_plot_writes_the_style_map(data: dict[str, Path], tmp_path: Path) -> None:
    plot = tmp_path / "figs" / "map.png"
    result = run(data["a"], data["b"], "--plot", plot, "--json")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 2  # --json keeps stdout to JSON lines
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 500
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # coloured points, not a blank


def test_the_embedding_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(40, 16))
    queries = bank[:3] + 0.01
    first, again = embed_2d(bank, queries), embed_2d(bank, queries)
    assert first.shape == (43, 2)
    np.testing.assert_allclose(first, again)
    # a query next to a bank vector lands next to it on the map
    spread = np.ptp(first, axis=0).max()
    assert np.linalg.norm(first[40] - first[0]) < 0.1 * spread
