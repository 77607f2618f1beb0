"""What the services do, without BentoML: the network stage and the API stage.

- ``NetworkCore`` holds the loaded networks and runs batches of tile jobs. Jobs from
  many requests arrive together (``zoo.service.batcher`` forms the list); jobs are
  grouped by model and tile shape, so one forward pass serves many requests.
- ``ApiCore`` decodes a request (its parameters already checked by
  ``zoo.service.validation``), then runs the zoo's one pipeline (``Zoo.infer`` →
  ``Zoo.finish``) with a ``RemoteRunner`` per model, so every forward pass becomes a tile
  job for the network stage and post-processing runs on the CPU. Its failures are
  ``ApiError`` values (``zoo.service.errors``) with an HTTP status, a type, a message and
  the offending field: one error shape for all.

``zoo.service.app`` wraps both in BentoML services; tests and the single-process mode use
the same classes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from bentoml.validators import TensorSchema
from pydantic import BaseModel, ConfigDict

from zoo.errors import ZooError
from zoo.io.outputs import encode_segmentation
from zoo.jit import warm_up
from zoo.params import PredictParams
from zoo.pipeline import AUTO, Segmentation, Zoo
from zoo.registry import Registry
from zoo.router import RouteResult
from zoo.service import validation
from zoo.service.config import ServiceConfig
from zoo.service.errors import ApiError, NetworkUnavailable, as_api_error
from zoo.settings import Settings

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------- tile jobs


Float32Array = Annotated[np.ndarray, TensorSchema("numpy-array", "float32", None)]


class TileJob(BaseModel):
    """One forward pass asked for by one request: ``tiles (n, C_in, T, T)`` float32."""

    model_config = ConfigDict(protected_namespaces=())
    model: str
    tiles: Float32Array


class TileResult(BaseModel):
    """Network maps ``(n, 3, T, T)`` and styles ``(n, style_dim)`` of one ``TileJob``."""

    outputs: Float32Array
    styles: Float32Array


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS. Batches of ever-changing shapes leave glibc's
    heap fragmented: without this a network worker's resident memory grew 540 → 1,280 MB
    over 600 mixed batches in-process (and by ~400 MB per 400 requests served), with it
    it stayed at ~495 MB."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class NetworkCore:
    """Loaded networks that run lists of tile jobs, grouped by model and tile shape.

    Args:
        zoo: the registry and backend settings; every model is loaded and warmed up here.
        config: ``max_tiles`` per forward pass and ``max_loaded`` models.
        on_batch: called with the tile count of every forward pass (metrics).
    """

    def __init__(self, zoo: Zoo, config: ServiceConfig,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.zoo, self.config, self.on_batch = zoo, config, on_batch
        self.models = [entry.ref for entry in zoo.registry.list()]
        self.max_tiles = 1
        for index, ref in enumerate(self.models[: config.max_loaded]):
            runner = zoo.predictor(ref).runner
            self.max_tiles = config.tiles_per_pass(runner.device)
            channels = zoo.predictor(ref).model.config.in_channels
            # Warm-up: every model once; the first with a full pass of full-size tiles,
            # so the allocator holds what the largest batch needs before requests come.
            count, side = (self.max_tiles, 256) if index == 0 else (1, 64)
            runner.run(np.zeros((count, channels, side, side), np.float32))
        self._lock = threading.Lock()

    def run(self, jobs: list[TileJob]) -> list[TileResult]:
        """Results in job order; unknown models raise ``UnknownModelError``."""
        groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault((job.model, job.tiles.shape[1:]), []).append(index)
        results: list[TileResult | None] = [None] * len(jobs)
        with self._lock:  # one forward pass at a time per process: the device is shared
            for (model, _), members in groups.items():
                runner = self.zoo.predictor(model).runner
                batch = np.concatenate([jobs[i].tiles for i in members]).astype(np.float32)
                outputs, styles = [], []
                for start in range(0, len(batch), self.max_tiles):
                    chunk = batch[start : start + self.max_tiles]
                    out, style = runner.run(np.ascontiguousarray(chunk))
                    outputs.append(out)
                    styles.append(style)
                    if self.on_batch is not None:
                        self.on_batch(len(chunk))
                out, style = np.concatenate(outputs), np.concatenate(styles)
                bounds = np.cumsum([0] + [len(jobs[i].tiles) for i in members])
                for i, first, last in zip(members, bounds[:-1], bounds[1:]):
                    results[i] = TileResult(outputs=out[first:last], styles=style[first:last])
            release_free_memory()
        return results  # type: ignore[return-value]


# --------------------------------------------------------------------------- API stage


class RemoteRunner:
    """A ``Runner`` whose forward passes are tile jobs for the network stage.

    Args:
        network: runs a list of jobs and blocks until done (the network service's
            batchable API, or a ``NetworkCore``); raises ``TimeoutError`` when it
            gives up waiting.
        model: the registry ref every job names.
    """

    device = "remote"

    def __init__(self, network: Callable[[list[TileJob]], list[Any]], model: str) -> None:
        self.network, self.model = network, model

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        job = TileJob(model=self.model, tiles=np.ascontiguousarray(batch, dtype=np.float32))
        try:
            (result,) = self.network([job])
        except TimeoutError as error:
            raise NetworkUnavailable(f"the network service did not answer in time ({error})") from error
        except ZooError:
            raise
        except Exception as error:  # connection refused, worker crashed, 5xx from it
            log.warning("network call failed: %s: %s", type(error).__name__, error)
            raise NetworkUnavailable(f"the network service failed ({type(error).__name__})") from error
        if isinstance(result, dict):
            result = TileResult(**result)
        return np.asarray(result.outputs), np.asarray(result.styles)


@dataclass(frozen=True)
class SegmentRequest:
    """A validated ``/segment`` request (everything but the image)."""

    model: str = AUTO
    params: PredictParams = field(default_factory=PredictParams)
    output: str = "json"


def parse_request(*, model: Any = AUTO, diameter: Any = None, channels: Any = "0",
                  flow_threshold: Any = None, cellprob_threshold: Any = None,
                  min_size: Any = None, output: Any = "json",
                  config: ServiceConfig | None = None) -> SegmentRequest:
    """Check every parameter with ``zoo.service.validation`` (the checks the request guard
    already ran on the raw form); an ``ApiError`` names the first bad field.

    ``config`` sets the work bounds the diameter is checked against once the image is known
    (``max_rescale``, ``max_network_pixels``).
    """
    values = {"model": model, "diameter": diameter, "channels": channels,
              "flow_threshold": flow_threshold, "cellprob_threshold": cellprob_threshold,
              "min_size": min_size, "output": output}
    checked = validation.check_fields(validation.SEGMENT_FIELDS, values)
    cyto, nucleus = checked.pop("channels")
    config = config or ServiceConfig()
    params = PredictParams(cyto_channel=cyto, nucleus_channel=nucleus,
                           diameter=checked.get("diameter"),
                           flow_threshold=checked.get("flow_threshold"),
                           cellprob_threshold=checked.get("cellprob_threshold"),
                           min_size=checked.get("min_size"),
                           max_rescale=config.max_rescale,
                           max_network_pixels=config.max_network_pixels,
                           batch_size=1024)  # one job per forward pass; the network splits it
    return SegmentRequest(model=checked["model"], params=params, output=checked["output"])


class ApiCore:
    """The API stage: decode and check a request, then run the zoo's pipeline, whose
    forward passes become tile jobs for the network stage; post-processing runs here.

    Args:
        registry: the models (loaded here for their metadata and size regressors).
        settings: backend settings (the networks themselves run in the network stage).
        network: runs tile jobs (the network service's batchable API, or a ``NetworkCore``).
        config: limits and timeouts.
    """

    def __init__(self, registry: Registry, settings: Settings,
                 network: Callable[[list[TileJob]], list[Any]], config: ServiceConfig) -> None:
        self.config = config
        self.registry = registry
        entries = registry.list()
        self.zoo = Zoo(registry, settings=settings, max_loaded=max(1, len(entries)),
                       runners=lambda ref, _: RemoteRunner(network, ref))
        for entry in entries:  # every model ready before the first request
            self.zoo.predictor(entry.ref)
        warm_up(wait=True)  # and the post-processing compiled (or loaded from the cache)

    @property
    def router(self):
        """The zoo's style router (its bank and generalist)."""
        return self.zoo.router

    # ---- pieces ----------------------------------------------------------------------------

    def read(self, data: bytes) -> np.ndarray:
        """Decode an upload; refuses non-finite pixels and images over ``max_pixels``."""
        from zoo.io import read_image

        try:
            image = read_image(data, max_pixels=self.config.max_pixels)
        except ZooError as error:
            raise as_api_error(error, field="image") from error
        if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
            raise ApiError(400, "invalid_image", "image holds NaN or infinite pixels", "image")
        return image

    def _check_model(self, model: str) -> None:
        if model != AUTO:
            try:
                self.registry.entry(model)
            except ZooError as error:
                raise as_api_error(error) from error

    def _check_channels(self, image: np.ndarray, params: PredictParams) -> None:
        channels = 1 if image.ndim == 2 else image.shape[2]
        for name, index in (("cytoplasm", params.cyto_channel), ("nucleus", params.nucleus_channel)):
            if index is not None and index >= channels:
                raise ApiError(400, "invalid_parameter",
                               f"{name} channel {index} does not exist: the image has "
                               f"{channels} channel(s) (indices 0..{channels - 1})", "channels")

    def _guard(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ApiError:
            raise
        except Exception as error:  # noqa: BLE001 (every failure becomes an ApiError)
            raise as_api_error(error, field="image",
                               retry_after_s=self.config.retry_after_s) from error

    # ---- endpoints --------------------------------------------------------------------------

    def route(self, image: np.ndarray, params: PredictParams) -> RouteResult:
        self._check_channels(image, params)
        return self._guard(lambda: self.zoo.route(image, params))

    def segment(self, image: np.ndarray, request: SegmentRequest) -> Segmentation:
        self._check_model(request.model)
        self._check_channels(image, request.params)
        pending = self._guard(lambda: self.zoo.infer(image, model=request.model,
                                                     params=request.params))
        result = self._guard(lambda: self.zoo.finish(pending))
        release_free_memory()
        return result

    def models(self) -> list[dict[str, Any]]:
        """The registry listing: name, version, kind, cluster, diameter, metrics, aliases."""
        listing = []
        for entry in self.registry.list():
            listing.append({
                "name": entry.name, "version": entry.version, "kind": entry.kind,
                "aliases": list(entry.aliases),
                "cluster": None if entry.cluster is None else
                {"id": entry.cluster.id, "name": entry.cluster.name},
                "diameter": entry.diameter, "metrics": dict(entry.metrics),
                "router": entry.name == self.router.generalist,
            })
        return listing


def encode(result: Segmentation, output: str) -> tuple[bytes, str]:
    """The file bytes and media type of a non-JSON ``output``."""
    return encode_segmentation(result.prediction.labels, output)


def as_json(result: Segmentation, shape: tuple[int, ...]) -> dict[str, Any]:
    """The ``/segment`` JSON body."""
    from zoo.io import labels_to_coco_rle

    prediction = result.prediction
    return {
        "n_cells": prediction.n_cells,
        "model": result.model,
        "route": result.route.to_dict() if result.route else None,
        "diameter": prediction.diameter,
        "shape": list(shape),
        "timings_ms": {k: round(v * 1e3, 2) for k, v in prediction.timings.items()},
        "masks": labels_to_coco_rle(prediction.labels),
    }
