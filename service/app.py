"""The cellzoo HTTP services (BentoML ≥ 1.4, new-style services).

Two deployments of the same endpoints:

- ``CellZoo`` (split, the default): the public API service. It validates, decodes,
  routes and post-processes (numba, CPU) in its own workers, and sends every forward
  pass to the ``Network`` service through ``bentoml.depends``. ``Network`` loads every
  model at start-up, warms it up, and runs tile jobs through a greedy batcher
  (``zoo.service.batcher``): the jobs of concurrent requests share forward passes. The two
  scale independently: ``services.cellzoo.workers`` (CPU post-processing) and
  ``services.cellzoo_network.resources.gpu`` / ``workers`` in BentoML's config.
- ``CellZooLocal`` (single process, for development): the same endpoints with the
  networks loaded in-process; no batching across requests.

Endpoints: ``/segment``, ``/route``, ``/models`` (all POST, multipart for images;
``GET /models`` too), plus
BentoML's ``/livez``, ``/readyz`` (ready once every model is loaded) and ``/metrics``, and
the web page ``GET /ui`` with the helpers it needs (``zoo.service.ui``).
Every error has one JSON shape, ``{"error": {"status", "type", "message", "field"}}``,
also for BentoML's own validation errors (``ErrorShape`` middleware rewrites them).
``RequestGuard`` (``zoo.service.guard``) bounds and checks every request body before
BentoML reads it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import anyio
import bentoml
from bentoml.exceptions import ServiceUnavailable
from pydantic import BeforeValidator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zoo.io.outputs import OUTPUT_FORMATS
from zoo.service.batcher import Batcher
from zoo.service.config import ServiceConfig
from zoo.service.core import (
    ApiCore,
    ApiError,
    NetworkCore,
    TileJob,
    TileResult,
    as_api_error,
    as_json,
    encode,
    parse_request,
)
from zoo.service.errors import log_rejection
from zoo.service.guard import RequestGuard
from zoo.service.ui import web_app

log = logging.getLogger(__name__)

# Batching of the network service (zoo.service.batcher): one forward pass at a time, of
# every tile job queued meanwhile, up to MAX_BATCH_JOBS jobs (one job is one forward pass a
# request needs: its routing view, size view, or its tiles). A job queued longer than
# ServiceConfig.max_queue_wait_s is shed with 503 (the API passes it on with Retry-After).
MAX_BATCH_JOBS = 64
CONNECTION_RETRIES = 3

REQUESTS_BY_MODEL = bentoml.metrics.Counter(
    name="cellzoo_requests_by_model",
    documentation="Segmentations and routings per model and endpoint",
    labelnames=["endpoint", "model"],
)
TILES_PER_PASS = bentoml.metrics.Histogram(
    name="cellzoo_network_tiles_per_pass",
    documentation="Tiles in each forward pass of the network service",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
JOBS_PER_BATCH = bentoml.metrics.Histogram(
    name="cellzoo_network_jobs_per_batch",
    documentation="Tile jobs (from concurrent requests) the batcher grouped per call",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


# Multipart form values that look like numbers ("0", "1,2" does not) arrive as numbers;
# these fields are text whatever the client sent.
Text = Annotated[str, BeforeValidator(lambda value: value if isinstance(value, str) else str(value))]


def _settings_and_registry():
    from zoo.registry import Registry
    from zoo.settings import Settings

    settings = Settings.from_env()
    return settings, Registry.default(settings)


def _network_core(registry, settings, config: ServiceConfig) -> NetworkCore:
    from zoo.pipeline import Zoo

    zoo = Zoo(registry, settings=settings, max_loaded=config.max_loaded)
    return NetworkCore(zoo, config, on_batch=TILES_PER_PASS.observe)


# BentoML's client to a dependency replaces its connection session every max_requests
# calls (default 100) and closes the old one with calls still in flight, which fails them
# under concurrency; keep one session for the life of the worker.
@bentoml.service(name="cellzoo_network", traffic={"timeout": 300}, threads=1,
                 runner_connection={"max_requests": 2**31 - 1, "max_age": 1e9})
class Network:
    """Every model of the registry, loaded and warmed up; runs batches of tile jobs."""

    def __init__(self) -> None:
        config = ServiceConfig.from_env()
        settings, registry = _settings_and_registry()
        self.core = _network_core(registry, settings, config)
        self.batcher = Batcher(self.core.run, max_jobs=MAX_BATCH_JOBS,
                               max_wait_s=config.max_queue_wait_s,
                               overloaded=ServiceUnavailable, on_batch=JOBS_PER_BATCH.observe)

    @bentoml.api
    async def infer(self, jobs: list[TileJob]) -> list[TileResult]:
        """Forward passes for tile jobs; jobs of concurrent calls share passes (grouped by
        model and tile shape)."""
        return await self.batcher.submit(jobs)


def _error(error: Exception, endpoint: str, retry_after_s: int = 5) -> JSONResponse:
    api_error = as_api_error(error, retry_after_s=retry_after_s)
    log_rejection("POST", endpoint, api_error)
    return JSONResponse(api_error.body(), status_code=api_error.status, headers=api_error.headers)


class _Endpoints:
    """The public endpoints; subclasses say where the network runs (``_network``)."""

    core: ApiCore
    config: ServiceConfig

    def _start(self) -> None:
        self.config = ServiceConfig.from_env()
        settings, registry = _settings_and_registry()
        self.core = ApiCore(registry, settings, self._network(registry, settings), self.config)

    def _network(self, registry, settings):
        raise NotImplementedError

    @bentoml.api
    def segment(
        self,
        image: Path,
        model: Text = "auto",
        diameter: float | None = None,
        channels: Text = "0",
        flow_threshold: float | None = None,
        cellprob_threshold: float | None = None,
        min_size: int | None = None,
        output: Text = "json",
    ) -> dict[str, Any]:
        """Segment one image (multipart field ``image``: TIFF, PNG or JPEG).

        ``model``: ``auto`` routes the image to its cluster's specialist, or name a
        registry model. ``channels``: cytoplasm channel, optionally ``,nucleus``.
        ``output``: ``json`` (default; masks as COCO RLE), or the label file itself:
        ``tiff`` (image/tiff), ``png`` (image/png), ``coco`` (application/json),
        ``geojson`` (application/geo+json), ``roi`` (ImageJ ROI zip); file responses
        carry ``X-Cellzoo-Model``, ``X-Cellzoo-Cells`` and ``X-Cellzoo-Diameter``.
        """
        try:
            request = parse_request(model=model, diameter=diameter, channels=channels,
                                    flow_threshold=flow_threshold,
                                    cellprob_threshold=cellprob_threshold, min_size=min_size,
                                    output=output, config=self.config)
            pixels = self.core.read(Path(image).read_bytes())
            result = self.core.segment(pixels, request)
        except Exception as error:  # noqa: BLE001 (one error shape for every failure)
            return _error(error, "/segment", self.config.retry_after_s)  # type: ignore[return-value]
        REQUESTS_BY_MODEL.labels(endpoint="segment", model=result.model).inc()
        if request.output == "json":
            return as_json(result, pixels.shape)
        data, content_type = encode(result, request.output)
        suffix = OUTPUT_FORMATS[request.output][0]
        headers = {
            "X-Cellzoo-Model": result.model,
            "X-Cellzoo-Cells": str(result.prediction.n_cells),
            "X-Cellzoo-Diameter": f"{result.prediction.diameter:.3f}",
            "Content-Disposition": f'attachment; filename="image{suffix}"',
        }
        if result.route is not None:
            headers["X-Cellzoo-Route"] = json.dumps(result.route.to_dict())
        return Response(data, media_type=content_type, headers=headers)  # type: ignore[return-value]

    @bentoml.api
    def route(self, image: Path, channels: Text = "0") -> dict[str, Any]:
        """The routing result only: model, cluster, confidence, distance, OOD flag."""
        try:
            request = parse_request(channels=channels, config=self.config)
            result = self.core.route(self.core.read(Path(image).read_bytes()), request.params)
        except Exception as error:  # noqa: BLE001
            return _error(error, "/route", self.config.retry_after_s)  # type: ignore[return-value]
        REQUESTS_BY_MODEL.labels(endpoint="route", model=result.model).inc()
        return result.to_dict()

    @bentoml.api
    def models(self) -> list[dict[str, Any]]:
        """The registry listing (name, version, kind, cluster, diameter, metrics); also
        ``GET /models``."""
        return self.core.models()


@bentoml.service(name="cellzoo", traffic={"timeout": 300}, threads=32)
class CellZoo(_Endpoints):
    """The public API; forward passes go to the ``Network`` service (split deployment)."""

    network = bentoml.depends(Network)

    def __init__(self) -> None:
        self._start()

    def _network(self, registry, settings):
        timeout = self.config.network_timeout_s

        def call(jobs: list[TileJob]) -> list[TileResult]:
            # Runs in the request's worker thread; the call itself runs on the server's
            # event loop, where it can time out. (The proxy gets its endpoint methods
            # when BentoML opens it, after __init__, so look them up per call.)
            async def remote() -> list[TileResult]:
                with anyio.fail_after(timeout):
                    for attempt in range(CONNECTION_RETRIES + 1):
                        try:
                            return await self.network.to_async.infer(jobs)
                        except aiohttp.ClientConnectionError:
                            # A pooled keep-alive connection the network server had just
                            # closed; a forward pass is idempotent, so send it again.
                            if attempt == CONNECTION_RETRIES:
                                raise
                            await anyio.sleep(0.05 * 2**attempt)
                raise AssertionError("unreachable")

            return anyio.from_thread.run(remote)

        return call

    async def __is_ready__(self) -> bool:
        is_ready = getattr(self.network, "is_ready", None)
        if is_ready is None:  # the dependency runs in this process
            return True
        try:
            return bool(await is_ready(timeout=2))
        except Exception:  # noqa: BLE001 (not ready yet)
            return False


@bentoml.service(name="cellzoo_local", traffic={"timeout": 300}, threads=4)
class CellZooLocal(_Endpoints):
    """The same endpoints with the networks in this process (development mode)."""

    def __init__(self) -> None:
        self._start()

    def _network(self, registry, settings):
        return _network_core(registry, settings, self.config).run


class ErrorShape:
    """ASGI middleware: error responses that are not in cellzoo's shape (BentoML's own
    validation errors, unexpected failures) are rewritten into it; 503s get Retry-After."""

    def __init__(self, app, retry_after_s: int = 5) -> None:
        self.app, self.retry_after_s = app, retry_after_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: dict | None = None
        chunks: list[bytes] = []

        async def capture(message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_shaped(start, b"".join(chunks), send)

        await self.app(scope, receive, capture)

    async def _send_shaped(self, start: dict, body: bytes, send) -> None:
        status = start["status"]
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if not (isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)
                and "status" in parsed["error"]):
            body = json.dumps(_reshape(status, parsed, body)).encode()
            headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
            headers.append((b"content-type", b"application/json"))
        if status == 503 and not any(k.lower() == b"retry-after" for k, _ in headers):
            headers.append((b"retry-after", str(self.retry_after_s).encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _reshape(status: int, parsed: Any, raw: bytes) -> dict[str, Any]:
    """BentoML's error bodies → cellzoo's shape. Its validation errors list pydantic
    ``detail`` entries, whose ``loc`` names the field."""
    message = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(message, str):
        message = raw.decode("utf-8", "replace").strip() or f"HTTP {status}"
    field = None
    details = parsed.get("detail") if isinstance(parsed, dict) else None
    if isinstance(details, list) and details and isinstance(details[0], dict):
        first = details[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or None
        message = f"{field}: {first.get('msg', message)}" if field else str(first.get("msg", message))
    kind = {400: "invalid_parameter", 404: "not_found", 413: "request_too_large",
            415: "unsupported_format", 422: "invalid_parameter", 503: "unavailable"}.get(
                status, "internal_error" if status >= 500 else "bad_request")
    return ApiError(status, kind, message[:2000], field).body()


def _models_listing(request: Request) -> JSONResponse:
    """``GET /models``: the same listing as ``POST /models``."""
    return JSONResponse(bentoml.get_current_service().core.models())


for _service in (CellZoo, CellZooLocal):
    _service.add_asgi_middleware(RequestGuard)  # outermost of ours: bound and check bodies
    _service.add_asgi_middleware(ErrorShape)
    _service.mount_asgi_app(Starlette(routes=[Route("/models", _models_listing,
                                                    methods=["GET"])]), name="models_get")
    # the web page (GET /ui) and its helpers: /preview, /export, /stylemap, /reference/*
    _service.mount_asgi_app(web_app(lambda: bentoml.get_current_service().core), name="ui")
