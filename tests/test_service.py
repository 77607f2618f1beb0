"""The BentoML service, served for real: `bentoml serve` on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from zoo.io import read_image
from zoo.pipeline import Zoo
from zoo.predict import PredictParams
from zoo.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "samples" / "demo.tif"
pytestmark = pytest.mark.skipif(not (ROOT / "models.yaml").is_file(), reason="no shipped zoo")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("zoo-home")
    port = _free_port()
    env = {**os.environ, "ZOO_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
           "ZOO_DEVICE": "cpu"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "service.app:CellZoo", "--host", "127.0.0.1",
         "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            pytest.fail(f"bentoml serve exited: {process.stdout.read().decode()[-2000:]}")
        time.sleep(0.5)
    yield url, home
    process.terminate()
    process.wait(timeout=30)


def _post(url: str, endpoint: str, path: Path, **fields) -> httpx.Response:
    with open(path, "rb") as handle:
        return httpx.post(f"{url}/{endpoint}", files={"image": (path.name, handle)},
                          data={k: str(v) for k, v in fields.items()}, timeout=120)


def test_segment_returns_the_library_masks(server):
    url, home = server
    response = _post(url, "segment", DEMO, channels="0,1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"n_cells", "model", "route", "diameter", "shape", "timings_ms", "masks"} <= set(body)
    zoo = Zoo(settings=Settings(home=home, device="cpu"))
    local = zoo.segment(read_image(DEMO), params=PredictParams(cyto_channel=0, nucleus_channel=1))
    assert body["model"] == local.model and body["n_cells"] == local.prediction.n_cells
    from pycocotools import mask as coco_mask

    decoded = np.zeros(local.prediction.labels.shape, np.int64)
    for annotation in body["masks"]:
        rle = dict(annotation["segmentation"])
        rle["counts"] = rle["counts"].encode()
        decoded[coco_mask.decode(rle).astype(bool)] = annotation["id"]
    np.testing.assert_array_equal(decoded, local.prediction.labels)


def test_route_and_named_model(server):
    url, _ = server
    route = _post(url, "route", DEMO, channels="0,1").json()
    assert {"model", "cluster", "confidence", "distance", "ood"} <= set(route)
    named = _post(url, "segment", DEMO, model="cpnet.cyto", channels="0,1").json()
    assert named["model"] == "cpnet.cyto" and named["route"] is None


def test_bad_input_gives_4xx_and_the_server_keeps_serving(server, tmp_path):
    url, _ = server
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not an image")
    assert _post(url, "segment", junk).status_code == 400
    assert _post(url, "segment", DEMO, model="no-such-model").status_code == 404
    assert _post(url, "segment", DEMO, channels="a,b").status_code == 400
    assert _post(url, "route", DEMO).status_code == 200


def test_bentoml_build_packages_the_service_and_zoo(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")}
    done = subprocess.run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    bentos = list((tmp_path / "bentoml" / "bentos" / "cellzoo").glob("*/src"))
    assert bentos, "no bento written"
    src = bentos[0]
    assert (src / "models.yaml").is_file() and (src / "service" / "app.py").is_file()
    assert (src / "weights" / "cpnet.generalist.safetensors").is_file()
