"""The service's hardening pieces in-process: the value checks, the multipart guard (with a
stand-in ASGI app behind it) and the greedy batcher."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from zoo.service.batcher import Batcher, Overloaded
from zoo.service.config import ServiceConfig
from zoo.service.errors import ApiError
from zoo.service.guard import RequestGuard
from zoo.service.validation import SEGMENT_FIELDS, channels, check_fields, number


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity", "1e309", "0x10", "١٢", "²",
                                  "1_000", "", " ", "7" * 33, "1e-3.5", "--1"])
def test_numbers_must_be_plain_finite_decimals(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        number("diameter", text, minimum=0, exclusive=True)
    assert caught.value.status == 400 and caught.value.field == "diameter"


def test_numbers_in_range_and_channels() -> None:
    assert number("diameter", " 12.5 ", minimum=0, exclusive=True) == 12.5
    assert number("min_size", "15", integer=True, minimum=0) == 15
    assert number("diameter", 1e-320, minimum=0, exclusive=True) == 1e-320
    with pytest.raises(ApiError, match="min_size must be >= 0"):
        number("min_size", "-1", integer=True, minimum=0)
    assert channels("channels", "0") == (0, None) and channels("channels", " 0 , 1 ") == (0, 1)
    assert channels("channels", 1) == (1, None)  # BentoML parses "1" as a number
    for bad in ("²", "0,1,2", "a", "0;1", "64", "", "٠"):
        with pytest.raises(ApiError):
            channels("channels", bad)
    checked = check_fields(SEGMENT_FIELDS, {"model": " auto ", "output": "tiff", "diameter": None})
    assert checked == {"model": "auto", "output": "tiff"}


async def _echo(scope, receive, send) -> None:
    """A stand-in app: answers the body it was handed and its content type."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"x-content-type", headers.get(b"content-type", b""))]})
    await send({"type": "http.response.body", "body": body})


def _client(max_body_mb: int = 1) -> httpx.AsyncClient:
    guard = RequestGuard(_echo, ServiceConfig(max_body_mb=max_body_mb))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://test")


def test_the_guard_hands_on_a_canonical_form() -> None:
    async def main() -> httpx.Response:
        async with _client() as client:
            return await client.post("/segment", files={"image": ("../../x y.png",
                                                                  b"\x89PNG\r\n\x1a\n" + bytes(8))},
                                     data={"diameter": " 12.50 ", "channels": "0, 1"})

    response = asyncio.run(main())
    assert response.status_code == 200
    body = response.content
    assert b'name="diameter"\r\n\r\n12.5\r\n' in body and b'name="channels"\r\n\r\n0,1\r\n' in body
    assert b'filename="x_y.png"' in body and b"\x89PNG" in body
    assert response.headers["x-content-type"].startswith("multipart/form-data; boundary=")


@pytest.mark.parametrize(("files", "data", "status", "field"), [
    (None, {"image": "http://127.0.0.1:9/x.png"}, 400, "image"),
    ({"file": ("x.png", b"\x89PNG\r\n\x1a\n")}, None, 400, "file"),
    ({"image": ("x.bin", b"MZ\x90\x00" + bytes(20))}, None, 415, None),
    ({"image": ("x.png", b"\x89PNG\r\n\x1a\n")}, {"diameter": "1" * 300}, 400, "diameter"),
    ({"image": ("x.png", b"\x89PNG\r\n\x1a\n")}, {"channels": "²"}, 400, "channels"),
    ({"image": ("x.png", bytes(2 * 2**20))}, None, 413, None),
])
def test_the_guard_refuses_with_the_field(files, data, status, field) -> None:
    async def main() -> httpx.Response:
        async with _client() as client:
            return await client.post("/segment", files=files, data=data)

    response = asyncio.run(main())
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field


def test_the_batcher_runs_a_lone_job_at_once_and_groups_a_burst() -> None:
    sizes: list[int] = []

    def run(jobs: list[int]) -> list[int]:
        time.sleep(0.05)
        sizes.append(len(jobs))
        return [2 * job for job in jobs]

    batcher = Batcher(run, max_jobs=8, max_wait_s=30)

    async def main() -> tuple[list, float]:
        results = await asyncio.gather(*(batcher.submit([i]) for i in range(20)))
        start = time.perf_counter()
        assert await batcher.submit([7]) == [14]
        return results, time.perf_counter() - start

    try:
        results, lone = asyncio.run(main())
    finally:
        batcher.close()
    assert results == [[2 * i] for i in range(20)]
    assert max(sizes) == 8 and sizes[-1] == 1  # grouped under load, alone when idle
    assert lone < 0.05 + 0.5  # no wait learned from the burst


def test_the_batcher_sheds_jobs_that_waited_too_long() -> None:
    batcher = Batcher(lambda jobs: (time.sleep(0.2), jobs)[1], max_jobs=1, max_wait_s=0.05)

    async def main() -> list:
        return await asyncio.gather(*(batcher.submit([i]) for i in range(3)),
                                    return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    assert results[0] == [0]
    assert all(isinstance(r, Overloaded) for r in results[1:])
