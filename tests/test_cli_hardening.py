"""Issue #12's CLI reproducers: every failure is one ``error:`` line and exit 1, never a
traceback; the smaller items (CSV formula injection, offline --remote, credentials in
HF_ENDPOINT, symlinks, killed pulls, crafted weights metadata, list patterns).

Most cases need no network model: ``zoo segment --server`` talks to a small stand-in
service here, and the registry commands use a zoo of random files (``hubserver``).
"""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hubserver import make_entry, write_zoo
from PIL import Image
from typer.testing import CliRunner

from zoo.cli.main import app
from zoo.io import labels_to_coco_rle

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path):
    result = CliRunner().invoke(app, [str(a) for a in args])
    output = result.output + result.stderr
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def one_error_line(result, *needles: str) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors and lines[-1] == errors[-1], result.stderr
    for needle in needles:
        assert needle in errors[-1], errors[-1]
    return errors[-1]


def png(path: Path, side: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side), 100, np.uint8)).save(path)
    return path


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("ZOO_OFFLINE", "HF_HUB_OFFLINE", "ZOO_MANIFEST", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- a stand-in service


class StandIn(ThreadingHTTPServer):
    """Answers ``/segment`` like the service (a 2-cell label image for every upload), and
    refuses the nucleus channel of a one-channel PNG like the service does."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StandIn

    def do_GET(self) -> None:
        self._send(200, {"ready": True})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(body)
        if b'name="channels"\r\n\r\n0,1\r\n' in body and b"\x89PNG" in body:
            self._send(400, {"error": {"status": 400, "type": "invalid_parameter", "field":
                                       "channels", "message": "nucleus channel 1 does not exist:"
                                       " the image has 1 channel(s) (indices 0..0)"}})
            return
        labels = np.zeros((16, 16), np.uint16)
        labels[2:6, 2:6], labels[9:14, 9:14] = 1, 2
        self._send(200, {"n_cells": 2, "model": "cpnet.nuclei", "route": None, "diameter": 5.0,
                         "shape": [16, 16], "timings_ms": {}, "masks": labels_to_coco_rle(labels)})

    def _send(self, status: int, answer: dict) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stand_in():
    server = StandIn()
    yield server
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- zoo segment


@pytest.mark.parametrize("case", ["existing file", "not writable", "not creatable",
                                  "under a file"])
def test_out_problems_are_one_line(tmp_path: Path, case: str) -> None:
    image = png(tmp_path / "a.png")
    out = {"existing file": tmp_path / "taken.txt", "not writable": Path("/sys/kernel"),
           "not creatable": Path("/sys/kernel/cellzoo-out"),
           "under a file": tmp_path / "taken.txt" / "out"}[case]
    (tmp_path / "taken.txt").write_text("a file")
    result = run("segment", image, "--out", out)
    needle = {"existing file": "exists and is not a folder", "not writable": "cannot write into",
              "not creatable": "cannot create the folder",
              "under a file": "cannot create the folder"}[case]
    one_error_line(result, f"--out {out}", needle)


def test_disk_full_at_summary_csv_is_one_line_and_leaves_no_temporary(tmp_path: Path,
                                                                      stand_in: StandIn) -> None:
    """The output files fit, summary.csv does not: RLIMIT_FSIZE makes every write past
    1,500 bytes fail (EFBIG), as a full disk would (ENOSPC)."""
    names = [png(tmp_path / "data" / f"{'long-name-' * 12}{i:02d}.png") for i in range(12)]
    out = tmp_path / "out"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))

    done = subprocess.run([sys.executable, "-m", "zoo.cli", "segment", str(tmp_path / "data"),
                           "--out", str(out), "--server", stand_in.url, "--workers", "1"],
                          capture_output=True, text=True, timeout=300, preexec_fn=limit,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write ") and "summary.csv" in last, done.stderr
    assert not (out / ".summary.csv.tmp").exists()
    assert len(list(out.glob("*_masks.tif"))) == len(names)
    assert not list(out.glob(".tmp-*"))


def test_formula_file_names_are_escaped_in_summary_csv(tmp_path: Path, stand_in: StandIn,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = png(tmp_path / '=HYPERLINK("evil.example","x").png')
    plain = png(tmp_path / "plain.png")
    for _ in range(2):  # the second run resumes: the escaped row is read back, not doubled
        result = run("segment", evil.name, plain.name, "--out", "out", "--server", stand_in.url,
                     "--overwrite")
        assert result.exit_code == 0, result.stderr
        with open(tmp_path / "out" / "summary.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [row["image"] for row in rows] == [
            "'" + evil.name, "plain.png"] or [row["image"] for row in rows] == [
            "plain.png", "'" + evil.name]
        assert not any(row["image"].startswith(("=", "+", "-", "@")) for row in rows)


def test_a_nucleus_channel_on_a_greyscale_image_is_a_note(tmp_path: Path,
                                                          stand_in: StandIn) -> None:
    grey = png(tmp_path / "data" / "grey.png")
    two = tmp_path / "data" / "two.tif"
    tifffile.imwrite(two, np.zeros((2, 16, 16), np.uint16), metadata={"axes": "CYX"})
    result = run("segment", tmp_path / "data", "--out", tmp_path / "out", "--server",
                 stand_in.url, "--channels", "0,1")
    assert result.exit_code == 0, result.stderr
    assert f"note: {grey}: one channel only: segmented without the nucleus channel 1" in result.stderr
    assert (tmp_path / "out" / "grey_masks.tif").is_file()
    assert (tmp_path / "out" / "two_masks.tif").is_file()


def test_crafted_weights_metadata_is_one_line(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from zoo.model import SegmentationModel
    from zoo.nets.cpnet import NetConfig

    good = SegmentationModel.create(NetConfig(channels=(2, 8, 16, 32)), diam_mean=20).save(
        tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as handle:
        meta = json.loads(handle.metadata()["cellzoo"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    image = png(tmp_path / "a.png", side=32)
    cases = {
        "unknown config key": ({"config": {**meta["config"], "style": True}},
                               "config.style: Extra inputs are not permitted"),
        "absurd widths": ({"config": {**meta["config"], "channels": [2, 10**6, 16, 32]}},
                          "config.channels[1]"),
        "mismatched shapes": ({"config": {**meta["config"], "channels": [2, 16, 16, 32]}},
                              "weights do not match the cellzoo metadata"),
        "diam_mean 0": ({"diam_mean": 0}, "diam_mean: Input should be greater than 0"),
        "diam_mean -5": ({"diam_mean": -5}, "diam_mean: Input should be greater than 0"),
    }
    for name, (change, needle) in cases.items():
        crafted = tmp_path / f"{name.replace(' ', '_')}.safetensors"
        save_file(tensors, str(crafted), metadata={"cellzoo": json.dumps({**meta, **change})})
        result = run("segment", image, "--model", crafted, "--out", tmp_path / "out")
        one_error_line(result, str(crafted), needle)


# --------------------------------------------------------------------------- registry commands


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    root = tmp_path / "zoo"
    return write_zoo(root, [
        make_entry(root, "cpnet.generalist", {"cpnet.generalist.safetensors": os.urandom(1000)},
                   aliases=["generalist"]),
        make_entry(root, "cpnet.phase", {"cpnet.phase.safetensors": os.urandom(1000)},
                   kind="specialist", cluster={"id": 1, "name": "phase"}),
        make_entry(root, "cpnet.tn1", {"cpnet.tn1.safetensors": os.urandom(1000)},
                   kind="specialist", cluster={"id": 4, "name": "tissuenet"}),
    ])


def listed(result) -> list[str]:
    return [line.split()[0] for line in result.stdout.splitlines()[1:]]


def test_list_matches_substrings_and_globs(manifest: Path) -> None:
    assert listed(run("list", "phase", "--manifest", manifest)) == ["cpnet.phase"]
    assert listed(run("list", "PHASE", "--manifest", manifest)) == ["cpnet.phase"]
    assert listed(run("list", "cpnet.*", "--manifest", manifest)) == [
        "cpnet.generalist", "cpnet.phase", "cpnet.tn1"]
    assert listed(run("list", "*.tn?", "--manifest", manifest)) == ["cpnet.tn1"]
    assert listed(run("list", "general", "--manifest", manifest)) == ["cpnet.generalist"]
    nothing = run("list", "nuclei", "--manifest", manifest)
    assert nothing.exit_code == 0 and nothing.stdout.strip() == "no models matching 'nuclei'"


class _Listener:
    """A TCP port that counts the connections made to it (and answers nothing)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    def _accept(self) -> None:
        while not self._stop:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.socket.close()


def test_offline_list_remote_makes_no_network_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = _Listener()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.port}")
        for variable in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"):
            monkeypatch.setenv(variable, "1")
            for command in (["list"], ["info", "cpnet.x"], ["pull", "cpnet.x"]):
                result = run(*command, "--remote", "org/registry")
                one_error_line(result, "offline mode is on", "org/registry")
            monkeypatch.delenv(variable)
    finally:
        listener.close()
    assert listener.connections == 0


def test_credentials_in_hf_endpoint_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = _Listener()  # accepts, then closes: the client sees a broken connection
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://alice:s3cr3t-pw@127.0.0.1:{listener.port}")
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
        result = run("list", "--remote", "org/registry")
    finally:
        listener.close()
    line = one_error_line(result, "org/registry", "http://***@127.0.0.1")
    assert "s3cr3t-pw" not in result.output + result.stderr and "alice" not in line
    closed = _Listener()
    port = closed.port
    closed.close()  # nothing listens there now: connection refused, retried and logged
    env = {**os.environ, "HF_ENDPOINT": f"http://alice:s3cr3t-pw@127.0.0.1:{port}"}
    refused = subprocess.run([sys.executable, "-m", "zoo.cli", "list", "--remote",
                              "org/registry"], capture_output=True, text=True, env=env,
                             timeout=300)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "s3cr3t-pw" not in refused.stdout + refused.stderr and "alice" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "the Hub did not answer" in line, refused.stderr
    assert f"http://***@127.0.0.1:{port}" in line and "no models.yaml" not in line


def test_validate_refuses_the_symlink_pull_refuses(manifest: Path, tmp_path: Path) -> None:
    weights = manifest.parent / "cpnet.tn1.safetensors"
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(weights.read_bytes())
    weights.unlink()
    weights.symlink_to(outside)
    validated = run("validate", manifest)
    one_error_line(validated, "1 problem(s)")
    assert "cpnet.tn1.safetensors' leaves" in validated.stderr
    pulled = run("pull", "cpnet.tn1", "--manifest", manifest)
    one_error_line(pulled, "1 of 1 model(s) failed")
    assert "leaves" in pulled.stderr


def test_a_killed_pull_force_leaves_nothing_after_the_next_pull(tmp_path: Path) -> None:
    root = tmp_path / "zoo"
    manifest = write_zoo(root, [make_entry(root, "cpnet.big",
                                           {"cpnet.big.safetensors": os.urandom(96 * 2**20)})])
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "zoo.cli", "pull", "cpnet.big", "--manifest", str(manifest)]
    assert subprocess.run(command, env=env, capture_output=True, timeout=300).returncode == 0
    folder = tmp_path / "home" / "models" / "cpnet.big"
    for _ in range(5):  # the copy + hash takes ~1 s: catch a pull in its staging folder
        process = subprocess.Popen([*command, "--force"], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not list(folder.glob(".tmp-*")) and process.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.002)
        process.kill()
        process.wait()
        if list(folder.glob(".tmp-*")):
            break
    assert list(folder.glob(".tmp-*")), "never caught the pull in its staging folder"
    again = run("pull", "cpnet.big", "--manifest", manifest)  # no --force: already installed
    assert again.exit_code == 0, again.stderr
    assert not list(folder.glob(".tmp-*")) and not list(folder.glob(".trash-*"))


# --------------------------------------------------------------------------- image reading


def test_a_channels_last_tiff_from_plain_imwrite_is_read_as_channels(tmp_path: Path) -> None:
    from zoo.io import read_image

    data = np.random.default_rng(0).integers(0, 4000, (384, 512, 2), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "two.tif", data)  # stored as 384 pages of 512 × 2
    np.testing.assert_array_equal(read_image(tmp_path / "two.tif"), data)


def test_corrupt_files_say_not_readable(tmp_path: Path) -> None:
    from zoo.errors import InvalidImageError
    from zoo.io import read_image

    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + b"\x13garbage" * 20)
    with pytest.raises(InvalidImageError, match=r"broken.tif: not a readable TIFF"):
        read_image(tmp_path / "broken.tif")


def test_pixels_are_summed_over_every_page(tmp_path: Path) -> None:
    """Issue #12's page bomb: each 8000² page is within 64 megapixels, the 40 of them are
    2.56 gigapixels; refused from the page headers, before any decoding."""
    from probes import page_bomb

    from zoo.errors import ImageTooLargeError
    from zoo.io import read_image

    bomb = page_bomb(tmp_path / "bomb.tif")
    assert bomb.stat().st_size < 3_000_000
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="pixels across its pages and planes"):
        read_image(bomb, max_pixels=64_000_000)
    assert time.perf_counter() - start < 2
    with pytest.raises(ImageTooLargeError, match="across its pages"):
        read_image(bomb.read_bytes(), max_pixels=64_000_000)
