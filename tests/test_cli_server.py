"""``zoo segment --server URL``: the same outputs as local mode, from a live ``bentoml serve``;
retries and error lines against a small stand-in HTTP server."""

from __future__ import annotations

import csv
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from cli_images import local_zoo_env, write_corrupt, write_jpeg, write_png, write_tiff
from typer.testing import CliRunner

from zoo.cli.main import app
from zoo.data.synthetic import generate
from zoo.io import labels_to_coco_rle, read_image

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path):
    result = CliRunner().invoke(app, ["segment", *map(str, args)])
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    return result


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ---- against the real service ----------------------------------------------------------------


@pytest.fixture(scope="module")
def service(service_url: str) -> str:
    """The shared split service (``tests/conftest.py``)."""
    return service_url


@pytest.fixture(scope="module")
def local_home(tmp_path_factory: pytest.TempPathFactory):
    """The local run's cache; torch on one thread (see tests/test_cli_segment.py)."""
    home = tmp_path_factory.mktemp("local-home")
    with local_zoo_env(home):
        yield home


def test_the_server_gives_the_local_masks(service: str, local_home: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tiff(data / "a.tif")
    write_png(data / "b.png")
    write_jpeg(data / "c.jpg")
    local = run(data, "--out", tmp_path / "local", "--overlay")
    assert local.exit_code == 0, local.stderr
    remote = run(data, "--out", tmp_path / "remote", "--overlay", "--server", service,
                 "--workers", "2")
    assert remote.exit_code == 0, remote.stderr
    for stem in "abc":
        masks = read_image(tmp_path / "remote" / f"{stem}_masks.tif")
        assert masks.max() > 0
        np.testing.assert_array_equal(masks, read_image(tmp_path / "local" / f"{stem}_masks.tif"))
        np.testing.assert_array_equal(read_image(tmp_path / "remote" / f"{stem}_overlay.png"),
                                      read_image(tmp_path / "local" / f"{stem}_overlay.png"))
    same = ("image", "n_cells", "model", "cluster", "ood", "diameter")
    assert ([{k: r[k] for k in same} for r in summary(tmp_path / "remote")]
            == [{k: r[k] for k in same} for r in summary(tmp_path / "local")])
    tally = [line for line in remote.stdout.splitlines() if line.startswith("cpnet.")]
    assert tally and tally == [line for line in local.stdout.splitlines()
                               if line.startswith("cpnet.")]


def test_the_server_with_options_and_a_corrupt_file(service: str, local_home: Path,
                                                    tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tiff(data / "a.tif")
    broken = write_corrupt(data / "broken.tif")
    options = ["--model", "cpnet.tissue", "--channels", "0,1", "--diameter", "15"]
    remote = run(data, "--out", tmp_path / "remote", "--server", service, *options)
    assert remote.exit_code == 1
    lines = error_lines(remote)
    assert any(line.startswith(f"error: {broken}: service answered 400") for line in lines)
    assert lines[-1] == f"error: 1 of 2 input(s) failed: {broken}"
    local = run(data / "a.tif", "--out", tmp_path / "local", *options)
    np.testing.assert_array_equal(read_image(tmp_path / "remote" / "a_masks.tif"),
                                  read_image(tmp_path / "local" / "a_masks.tif"))
    row = summary(tmp_path / "remote")[0]
    assert (row["model"], row["diameter"], row["cluster"]) == ("cpnet.tissue", "15.0", "")
    assert local.exit_code == 0


def test_a_nucleus_channel_on_a_greyscale_image_through_the_service(
        service: str, tmp_path: Path) -> None:
    """The service refuses channel 1 of a greyscale image (400, field channels); the CLI
    then segments its one channel, with a note, as it does locally."""
    data = tmp_path / "data"
    grey = write_png(data / "grey.png")
    write_tiff(data / "two.tif")
    remote = run(data, "--out", tmp_path / "out", "--server", service, "--channels", "0,1")
    assert remote.exit_code == 0, remote.stderr
    assert f"note: {grey}: one channel only: segmented without the nucleus channel 1" in remote.stderr
    assert {row["image"] for row in summary(tmp_path / "out")} == {str(grey), str(data / "two.tif")}


# ---- against a stand-in: retries, request fields, error lines ---------------------------------


class StandIn(ThreadingHTTPServer):
    """Answers ``/segment`` from a script of (status, headers, body) and records requests."""

    def __init__(self, script: list[tuple[int, dict[str, str], dict]]) -> None:
        self.script, self.requests = list(script), []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StandIn

    def do_GET(self) -> None:  # /readyz
        self._send(200, {}, {"ready": True})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, body))
        status, headers, answer = self.server.script.pop(0)
        self._send(status, headers, answer)

    def _send(self, status: int, headers: dict[str, str], answer: dict) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def form_field(body: bytes, name: str) -> str | None:
    marker = f'name="{name}"'.encode()
    if marker not in body:
        return None
    return body.split(marker, 1)[1].split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[0].decode()


def test_busy_answers_are_retried_and_the_masks_decoded(tmp_path: Path) -> None:
    labels = generate("nuclei", seed=5, shape=(64, 80)).labels.astype(np.uint16)
    answer = {"n_cells": int(labels.max()), "model": "cpnet.nuclei-style", "diameter": 12.5,
              "shape": [64, 80], "timings_ms": {}, "masks": labels_to_coco_rle(labels),
              "route": {"cluster": 1, "cluster_name": "nuclei", "confidence": 1.0,
                        "distance": 0.1, "ood": False, "model": "cpnet.nuclei-style",
                        "reason": "..."}}
    busy = {"error": {"status": 503, "type": "Overloaded", "message": "busy", "field": None}}
    stand_in = StandIn([(503, {"Retry-After": "0"}, busy), (503, {"Retry-After": "0"}, busy),
                        (200, {}, answer)])
    try:
        image = write_png(tmp_path / "cells.png")
        result = run(image, "--out", tmp_path / "out", "--server", stand_in.url,
                     "--channels", "0", "--workers", "1")
    finally:
        stand_in.shutdown()
    assert result.exit_code == 0, result.stderr
    assert len(stand_in.requests) == 3
    path, body = stand_in.requests[-1]
    assert path == "/segment"
    assert (form_field(body, "model"), form_field(body, "channels"),
            form_field(body, "output"), form_field(body, "diameter")) == ("auto", "0", "json", None)
    assert b'name="image"; filename="cells.png"' in body
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "cells_masks.tif"), labels)
    row = summary(tmp_path / "out")[0]
    assert (row["n_cells"], row["model"], row["cluster"], row["ood"], row["diameter"]) == (
        str(labels.max()), "cpnet.nuclei-style", "1:nuclei", "false", "12.5")
    assert "cpnet.nuclei-style: 1 image" in result.stdout


def test_error_answers_become_one_line_each(tmp_path: Path) -> None:
    unknown = {"error": {"status": 404, "type": "UnknownModelError",
                         "message": "unknown model 'cpnet.x'", "field": "model"}}
    busy = {"error": {"status": 503, "type": "Overloaded", "message": "still busy",
                      "field": None}}
    stand_in = StandIn([(404, {}, unknown)] + [(503, {"Retry-After": "0"}, busy)] * 5)
    try:
        first, second = write_png(tmp_path / "one.png"), write_png(tmp_path / "two.png")
        result = run(first, second, "--out", tmp_path / "out", "--server", stand_in.url,
                     "--model", "cpnet.x", "--diameter", "20", "--workers", "1")
    finally:
        stand_in.shutdown()
    assert result.exit_code == 1
    lines = error_lines(result)
    assert lines[0] == (f"error: {first}: service answered 404: UnknownModelError: "
                        "unknown model 'cpnet.x'")
    assert lines[1] == f"error: {second}: service answered 503: Overloaded: still busy"
    assert lines[-1] == f"error: 2 of 2 input(s) failed: {first}, {second}"
    assert len(stand_in.requests) == 6  # 1 + (1 try + 4 retries)
    assert form_field(stand_in.requests[0][1], "diameter") == "20"


def test_no_service_at_the_url_fails_early(tmp_path: Path) -> None:
    stand_in = StandIn([])
    url = stand_in.url
    stand_in.shutdown()
    stand_in.server_close()
    result = run(write_png(tmp_path / "one.png"), "--out", tmp_path / "out", "--server", url)
    assert result.exit_code == 1
    assert error_lines(result)[-1].startswith(f"error: no cellzoo service answers at {url}")
