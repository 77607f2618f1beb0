"""The reproducers of issue #12 (a hostile or careless client), as probes of a live service.

Each probe sends one request the way the issue did and returns what came back and how long
it took; ``tests/test_hardening.py`` asserts on them and ``bench/bench_hardening.py``
tabulates them. Images are small and made here.
"""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import tifffile
from PIL import Image

NUMBER_FIELDS = ("diameter", "flow_threshold", "cellprob_threshold", "min_size")
TEXT_FIELDS = ("model", "channels", "output")


@dataclass
class Answer:
    """What one probe got: status, error body (or None), seconds."""

    name: str
    status: int
    error: dict | None
    seconds: float


def png64() -> bytes:
    """The issue's small PNG: 64 × 64, 8-bit grey, about 4 KB."""
    pixels = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def page_bomb(path: Path, pages: int = 40, side: int = 8000) -> Path:
    """A small TIFF of ``pages`` zlib-compressed pages of ``side``² zeros (40 × 8000² is
    2.8 MB on disk, 2.56 gigapixels decoded). Every 512² tile is the same compressed
    block, encoded once."""
    import zlib

    tile = 512
    block = zlib.compress(bytes(tile * tile))
    per_page = (-(-side // tile)) ** 2
    with tifffile.TiffWriter(path) as tif:
        for _ in range(pages):
            tif.write(iter([block] * per_page), shape=(side, side), dtype=np.uint8,
                      tile=(tile, tile), compression="zlib")
    return path


def _answer(name: str, response: httpx.Response, seconds: float) -> Answer:
    error = None
    if response.status_code >= 400:
        try:
            error = response.json().get("error")
        except ValueError:
            error = {"raw": response.text[:300]}
    return Answer(name, response.status_code, error, seconds)


def post(url: str, name: str, *, files=None, data=None, **options) -> Answer:
    start = time.perf_counter()
    response = httpx.post(f"{url}/segment", files=files, data=data, timeout=120, **options)
    return _answer(name, response, time.perf_counter() - start)


def form_probes(image: bytes) -> dict[str, Callable[[str], Answer]]:
    """Every reproducer that is one ordinary multipart request, by name."""
    file = {"image": ("cells.png", image)}
    big = "7" * 5000
    probes: dict[str, Callable[[str], Answer]] = {
        "image as text ('not a file')": lambda url: post(
            url, "text", data={"image": "not a file"}),
        "image bytes as a text field (-F image=<file)": lambda url: post(
            url, "text-bytes", files={"image": (None, image)}),
        "image under the field name 'file'": lambda url: post(
            url, "file", files={"file": ("cells.png", image)}),
        "diameter=1e-320": lambda url: post(url, "d", files=file, data={"diameter": "1e-320"}),
        "diameter=1e-300": lambda url: post(url, "d", files=file, data={"diameter": "1e-300"}),
        "diameter=1e-3": lambda url: post(url, "d", files=file, data={"diameter": "1e-3"}),
        "diameter=0.25 (64x64 PNG)": lambda url: post(url, "d", files=file,
                                                      data={"diameter": "0.25"}),
        "channels=²": lambda url: post(url, "c", files=file, data={"channels": "²"}),
        "JSON body holding a URL": lambda url: post(
            url, "json", content=json.dumps("http://127.0.0.1:9/cells.png"),
            headers={"content-type": "application/json"}),
    }
    for field in NUMBER_FIELDS:
        probes[f"{field} of 5000 digits"] = (
            lambda url, field=field: post(url, field, files=file, data={field: big}))
    for field in (*NUMBER_FIELDS, *TEXT_FIELDS):
        probes[f"{field} over 1 MB"] = (
            lambda url, field=field: post(url, field, files=file, data={field: "1" * 2**20 + "1"}))
    return probes


def _socket(url: str) -> socket.socket:
    where = urlparse(url)
    return socket.create_connection((where.hostname, where.port), timeout=60)


def _read_status(sock: socket.socket) -> tuple[int, dict | None]:
    """The status and JSON error of the answer on ``sock`` (reads until the server closes or
    the body is complete)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    while length is not None and len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    try:
        error = json.loads(body).get("error")
    except ValueError:
        error = None
    return status, error


def _multipart_head(boundary: str, filename: str = "junk.bin") -> bytes:
    return (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()


def declared_too_large(url: str, size: int = 200 * 10**6) -> Answer:
    """Headers announcing a ``size``-byte upload, then nothing: the answer must come
    without the body being sent (the limit is checked before reading)."""
    start = time.perf_counter()
    with _socket(url) as sock:
        sock.sendall((f"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                      f"boundary=b0\r\nContent-Length: {size}\r\n\r\n").encode())
        status, error = _read_status(sock)
    return Answer("declared", status, error, time.perf_counter() - start)


def streamed_junk(url: str, sent_bytes: int = 2**20) -> Answer:
    """A chunked upload of random bytes of unknown length: after ``sent_bytes`` the client
    stops sending and waits; the answer must already be there (the image's first bytes
    are checked as they arrive)."""
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    with _socket(url) as sock:
        sock.sendall(b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                     b"boundary=b0\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = _multipart_head("b0") + rng.bytes(sent_bytes)
        sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        status, error = _read_status(sock)
    return Answer("junk", status, error, time.perf_counter() - start)


def streamed_over_limit(url: str, limit_bytes: int) -> Answer:
    """A chunked upload that starts like a TIFF and goes on past ``limit_bytes``: refused
    when the count passes the limit, while the client is still sending."""
    start = time.perf_counter()
    with _socket(url) as sock:
        sock.sendall(b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                     b"boundary=b0\r\nTransfer-Encoding: chunked\r\n\r\n")
        first = _multipart_head("b0", "big.tif") + b"II*\x00" + bytes(2**20)
        sock.sendall(f"{len(first):x}\r\n".encode() + first + b"\r\n")
        block = bytes(2**20)
        try:
            for _ in range(limit_bytes // len(block) + 2):
                sock.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
        except OSError:  # the server answered and closed while we were still sending
            pass
        status, error = _read_status(sock)
    return Answer("over-limit", status, error, time.perf_counter() - start)


def disconnect_mid_body(url: str, image: bytes, clients: int = 50) -> float:
    """``clients`` uploads that announce 1 MB, send the image's first bytes and hang up."""
    start = time.perf_counter()
    head = _multipart_head("b0", "cells.png") + image
    for _ in range(clients):
        with _socket(url) as sock:
            sock.sendall(b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data;"
                         b" boundary=b0\r\nContent-Length: 1000000\r\n\r\n" + head)
    return time.perf_counter() - start


def status_counts(url: str) -> dict[tuple[str, str], float]:
    """``bentoml_service_request_total`` of the API service: (endpoint, status) → count."""
    counts: dict[tuple[str, str], float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if not line.startswith("bentoml_service_request_total{") or 'runner_name="cellzoo"' not in line:
            continue
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")]
                      .replace('"', "").split(","))
        counts[(labels["endpoint"], labels["http_response_code"])] = float(line.split()[-1])
    return counts


def server_errors(url: str) -> float:
    """How many answers of the API service were 5xx (``/readyz`` answers 503 until the
    network service is ready: that is its job, not an error)."""
    return sum(count for (endpoint, status), count in status_counts(url).items()
               if status.startswith("5") and endpoint not in ("/readyz", "/livez"))
