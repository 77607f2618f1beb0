"""``zoo.segment`` and ``zoo.route``: the one-liners give the ``Zoo`` results."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_images import write_tiff

import zoo
from zoo import oneliners as api
from zoo.errors import InvalidParamsError, UnknownModelError
from zoo.io import read_image
from zoo.params import PredictParams
from zoo.pipeline import Segmentation, Zoo
from zoo.router import RouteResult
from zoo.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "models.yaml").is_file(), reason="no shipped zoo")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """See tests/test_cli_segment.py: tiny images on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test builds the shared zoo anew, from settings pointing into tmp_path."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_DEVICE", "cpu")
    monkeypatch.delenv("ZOO_MANIFEST", raising=False)
    monkeypatch.setattr(api, "_default", None)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiff(tmp_path_factory.mktemp("img") / "cells.tif")


def test_segment_matches_the_zoo(image_file: Path, fresh_default: Path) -> None:
    result = zoo.segment(image_file, channels="0,1", diameter=18)
    assert isinstance(result, Segmentation) and isinstance(result.route, RouteResult)
    reference = Zoo(settings=Settings(home=fresh_default, device="cpu")).segment(
        read_image(image_file), model="auto",
        params=PredictParams(cyto_channel=0, nucleus_channel=1, diameter=18))
    assert result.model == reference.model and result.prediction.diameter == 18
    np.testing.assert_array_equal(result.prediction.labels, reference.prediction.labels)
    assert result.prediction.n_cells > 0
    pixels = read_image(image_file)
    named = zoo.segment(pixels, "cpnet.generalist", cyto_channel=0, nucleus_channel=1)
    assert named.model == "cpnet.generalist" and named.route is None
    assert named.prediction.labels.shape == pixels.shape[:2]


def test_route_matches_the_zoo(image_file: Path, fresh_default: Path) -> None:
    result = zoo.route(read_image(image_file), channels=(0, 1))
    reference = Zoo(settings=Settings(home=fresh_default, device="cpu")).route(
        read_image(image_file), PredictParams(cyto_channel=0, nucleus_channel=1))
    assert result.model == reference.model and result.cluster == reference.cluster
    assert result.distance == pytest.approx(reference.distance, abs=1e-5)
    assert zoo.route(image_file.read_bytes(), channels="0,1").model == result.model


def test_bad_keywords_and_models_raise() -> None:
    with pytest.raises(InvalidParamsError, match=r"'diamter' \(did you mean 'diameter'\?\)"):
        api.predict_params(diamter=17)
    with pytest.raises(InvalidParamsError, match="diameter must be positive"):
        api.predict_params(diameter=-1)
    with pytest.raises(InvalidParamsError, match="not both"):
        api.predict_params(channels="0,1", cyto_channel=0)
    assert api.predict_params(channels="2") == PredictParams(cyto_channel=2)
    with pytest.raises(UnknownModelError, match="cpnet.cyt"):
        zoo.segment(np.zeros((32, 32), np.float32), "cpnet.cyt")


def test_the_default_zoo_is_created_once_under_concurrency() -> None:
    seen: list[Zoo] = []
    barrier = threading.Barrier(8)

    def first_use() -> None:
        barrier.wait()
        seen.append(api.default_zoo())

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8 and all(z is seen[0] for z in seen)


def test_the_names_are_exported_lazily() -> None:
    assert zoo.segment is api.segment and zoo.route is api.route
    assert {"segment", "route"} <= set(zoo.__all__)
