"""``zoo segment --server URL``: the same outputs, computed by a running cellzoo service.

Each image goes to ``POST {URL}/segment`` as a multipart upload (file field ``image``, form
fields ``model``, ``channels``, ``diameter`` when given, ``output=json``). The JSON answer
carries the masks as COCO RLE annotations, decoded here with ``zoo.io.coco_rle_to_labels``.
A 503 or 429 answer (server busy or starting) is retried with backoff, waiting what its
``Retry-After`` header asks (capped); any other error answer fails that image with the
service's own one-line message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from zoo.cli.batch import IMAGE_ERRORS, Failure, Outcome, Outputs, Record, run_bounded
from zoo.errors import ZooError

RETRY_STATUS = (429, 503)


class ServiceError(ZooError):
    """The service refused an image or answered something we cannot read."""


@dataclass(frozen=True)
class RemoteParams:
    """Form fields of one ``/segment`` request (as the command line gave them)."""

    model: str = "auto"
    channels: str = "0"
    diameter: float | None = None

    def form(self) -> dict[str, str]:
        fields = {"model": self.model, "channels": self.channels, "output": "json"}
        if self.diameter is not None:
            fields["diameter"] = f"{self.diameter:g}"
        return fields


class ServiceClient:
    """A thread-safe client of one cellzoo service.

    Args:
        url: the service's base URL, e.g. ``http://127.0.0.1:3000``.
        timeout: seconds to wait for one answer.
        retries: how many times a 503/429 answer or a refused connection is retried.
        max_wait: the longest pause between two tries, in seconds.
    """

    def __init__(self, url: str, *, timeout: float = 300.0, retries: int = 4,
                 max_wait: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.retries, self.max_wait = retries, max_wait
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def check(self) -> None:
        """Fail early, in one line, when nothing answers at the URL."""
        try:
            self._http.get(f"{self.url}/readyz", timeout=10)
        except httpx.HTTPError as error:
            raise ServiceError(f"no cellzoo service answers at {self.url} ({error})") from None

    def segment(self, path: Path, params: RemoteParams) -> dict[str, Any]:
        """The service's JSON answer for the image file at ``path``, with ``labels`` added."""
        content = path.read_bytes()
        for attempt in range(self.retries + 1):
            response = self._post(path.name, content, params)
            last = attempt == self.retries
            if response is None and last:
                raise ServiceError(f"cannot reach {self.url} after {attempt + 1} tries")
            if response is not None and (last or response.status_code not in RETRY_STATUS):
                break
            time.sleep(self._backoff(attempt, response))
        if response.status_code != 200:
            fallback = _without_nucleus(response, params)
            if fallback is not None:
                body = self.segment(path, fallback)
                body["note"] = (f"one channel only: segmented without the nucleus channel "
                                f"{params.channels.split(',')[1].strip()}")
                return body
            raise ServiceError(error_message(response))
        return _answer(response)

    def _post(self, name: str, content: bytes, params: RemoteParams) -> httpx.Response | None:
        """One try; None when the connection was refused (the service may be restarting)."""
        try:
            return self._http.post(f"{self.url}/segment", data=params.form(),
                                   files={"image": (name, content)})
        except httpx.ConnectError:
            return None
        except httpx.HTTPError as error:
            raise ServiceError(f"request to {self.url} failed: {error}") from None

    def _backoff(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait: the answer's ``Retry-After`` (in seconds), else 0.5 · 2^attempt."""
        wait = 0.5 * 2**attempt
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None:
            try:
                wait = float(retry_after)
            except ValueError:  # an HTTP date: keep our own backoff
                pass
        return min(max(wait, 0.0), self.max_wait)


def _without_nucleus(response: httpx.Response, params: RemoteParams) -> RemoteParams | None:
    """The same request without its nucleus channel, when the service refused the nucleus
    channel of a one-channel image (as ``zoo segment`` does locally: ``channels_for``)."""
    cyto, _, nucleus = params.channels.partition(",")
    if response.status_code != 400 or not nucleus or cyto.strip() != "0":
        return None
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return None
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    if error.get("field") == "channels" and "the image has 1 channel" in message:
        return RemoteParams(model=params.model, channels=cyto.strip(), diameter=params.diameter)
    return None


def error_message(response: httpx.Response) -> str:
    """One line from an error answer: ``{"error": {"message", "type", ...}}`` or its text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = f"{error.get('type') or 'error'}: {error.get('message')}"
    elif isinstance(error, str):
        message = error
    else:
        message = response.text[:300] or response.reason_phrase
    return f"service answered {response.status_code}: {' '.join(str(message).split())}"


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
        body["labels"] = _labels(body)
    except (ValueError, KeyError, TypeError) as error:
        raise ServiceError(f"unexpected answer from the service ({error})") from None
    return body


def _labels(body: dict[str, Any]):
    """The label image of an answer; ``shape`` starts with ``[Y, X]`` (a service may append
    the image's channel count)."""
    from zoo.io import coco_rle_to_labels

    height, width = (int(v) for v in body["shape"][:2])
    return coco_rle_to_labels(body["masks"], (height, width))


def segment_remote(client: ServiceClient, images: Iterable[Path], *, outputs: Outputs,
                   params: RemoteParams, workers: int) -> Iterator[Outcome]:
    """Send ``images`` to the service, ``workers`` requests at a time; yields in input order."""
    from zoo import io

    def prepare(path: Path) -> Callable[[], Outcome]:
        def request() -> Outcome:
            start = time.perf_counter()
            try:
                body = client.segment(path, params)
                image = io.read_image(path) if outputs.overlay else None
                outputs.write(path.stem, body["labels"], image)
            except IMAGE_ERRORS as error:
                return Failure(path, str(error))
            return Record.of(path, n_cells=body["n_cells"], model=body["model"],
                             route=body.get("route"), diameter=body["diameter"],
                             seconds=time.perf_counter() - start, note=body.get("note", ""))

        return request

    return run_bounded(images, prepare, workers=workers)
