"""The zoo as one pipeline: route → infer → finish, written once for every entry point.

``Zoo`` joins the registry (where models come from), the style router (which model suits
an image) and predictors (how a model runs). The library, the ``zoo segment`` batch, the
HTTP service and any new entry point call the same three steps:

- ``route(image)``: the style pass (``zoo.embedding``) with the bank's embedding model,
  then the k-NN vote (``zoo.router``);
- ``infer(image, model=...)``: for ``auto``, the style pass, then the routed model's
  network at the diameter the style pass estimated (one size estimate serves routing and
  segmentation, and the normalised image is prepared once); for a named model, its own
  size estimate and network;
- ``finish(pending)``: flows → masks on the CPU (thread-safe: callers run it in workers).

Where the network runs is pluggable: a ``RunnerFactory`` builds the runner of each model
(default: torch or onnxruntime in this process, ``zoo.backends.make_runner``; the service
plugs in a runner that sends tile jobs to its batched network service).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from zoo.backends import Runner
from zoo.cluster import StyleBank
from zoo.embedding import StylePass, style_pass
from zoo.errors import ZooError
from zoo.jit import use_cache_dir
from zoo.model import SegmentationModel
from zoo.params import EmbedParams, PredictParams
from zoo.predict import NetworkOutput, Prediction, Predictor
from zoo.registry import Registry
from zoo.router import Router, RouteResult
from zoo.settings import Settings

log = logging.getLogger(__name__)

AUTO = "auto"
#: Builds the runner of one model: ``factory(ref, model)``.
RunnerFactory = Callable[[str, SegmentationModel], Runner]


@dataclass
class Segmentation:
    """A prediction plus how its model was chosen (``route`` is None for a named model)."""

    prediction: Prediction
    model: str
    route: RouteResult | None


@dataclass
class Pending:
    """An image between the network stage and post-processing (``infer`` → ``finish``).

    Attributes:
        output: the network maps at image resolution and the post-processing parameters.
        model: the model's name (canonical registry name, or the weights file).
        route: how it was chosen, or None for a named model.
        predictor: the model's predictor.
    """

    output: NetworkOutput
    model: str
    route: RouteResult | None
    predictor: Predictor


class Zoo:
    """Routing and segmentation over one registry.

    Args:
        registry: the models; default ``Registry.default(settings)`` (the shipped zoo or
            ``settings.manifest``, plus the user's zoo).
        settings: backend, device and cache; default ``Settings.from_env()``.
        runners: builds each model's runner; default: in this process per ``settings``.
        max_loaded: how many predictors stay loaded (least recently used go first).
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        settings: Settings | None = None,
        runners: RunnerFactory | None = None,
        max_loaded: int = 8,
    ) -> None:
        self.settings = settings or Settings.from_env()
        use_cache_dir(self.settings.home)
        self.registry = registry or Registry.default(self.settings)
        self.max_loaded = max(1, max_loaded)
        self._runners = runners
        self._predictors: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.RLock()
        self._routing: tuple[Router, str, EmbedParams] | None = None

    # ---- models ---------------------------------------------------------------------------

    def name(self, ref: str) -> str:
        """The canonical name of ``ref``: the registry name, or a weights file's path."""
        path = Path(ref)
        if path.suffix == ".safetensors" and path.is_file():
            return str(path)
        return self.registry.entry(ref).name

    def predictor(self, ref: str) -> Predictor:
        """The predictor of model ``ref`` (a registry name/alias or a ``.safetensors`` path)."""
        key = self.name(ref)
        with self._lock:
            if key in self._predictors:
                self._predictors.move_to_end(key)
                return self._predictors[key]
            model = self._load(key)
            runner = self._runners(key, model) if self._runners is not None else None
            predictor = Predictor(model, self.settings, runner=runner)
            log.info("loaded %s (%s backend on %s)", key,
                     "remote" if runner is not None else self.settings.backend,
                     predictor.runner.device)
            self._predictors[key] = predictor
            while len(self._predictors) > self.max_loaded:
                evicted, _ = self._predictors.popitem(last=False)
                log.info("unloaded %s (LRU)", evicted)
            return predictor

    def _load(self, key: str) -> SegmentationModel:
        if key.endswith(".safetensors"):
            return SegmentationModel.load(key)
        return self.registry.load_model(key)

    # ---- routing --------------------------------------------------------------------------

    def _router(self) -> tuple[Router, str, EmbedParams]:
        """The router, the name of the model its bank's styles come from, and how.

        The bank is ``settings.bank`` when set (its embedding model is the fallback for
        out-of-distribution images), else the style bank of the registry's generalist.
        """
        with self._lock:
            if self._routing is None:
                bank, fallback = self._bank()
                embed = EmbedParams(**{k: v for k, v in bank.embedding.items()
                                       if k in ("tile", "n_tiles")})
                embedder = self.name(bank.embedding.get("model", fallback))
                self._routing = (Router(bank, generalist=fallback), embedder, embed)
            return self._routing

    def _bank(self) -> tuple[StyleBank, str]:
        if self.settings.bank is not None:
            bank = StyleBank.load(self.settings.bank)
            if not bank.embedding.get("model"):
                raise ZooError(f"{self.settings.bank}: the bank does not name its embedding "
                               "model (embedding.model)")
            return bank, self.name(bank.embedding["model"])
        entries = [e for e in self.registry.list() if e.style_bank]
        if not entries:
            raise ZooError("no model in the registry has a style bank: routing needs one")
        return StyleBank.load(self.registry.resolve(entries[0].ref).style_bank), entries[0].name

    @property
    def router(self) -> Router:
        """The style router (of the registry's model that carries a style bank)."""
        return self._router()[0]

    @property
    def router_model(self) -> str:
        """The name of the model whose styles the router's bank holds (the embedder)."""
        return self._router()[1]

    def style_pass(self, image: np.ndarray, params: PredictParams | None = None) -> StylePass:
        """The routing style and diameter of ``image`` (``zoo.embedding.style_pass``)."""
        _, embedder, embed = self._router()
        predictor = self.predictor(embedder)
        params = params or PredictParams()
        return style_pass(predictor, predictor.prepare(image, params), params, embed)

    def route(self, image: np.ndarray, params: PredictParams | None = None) -> RouteResult:
        """Which model suits ``image``: k-NN vote over the style bank, with an OOD check."""
        return self.router.route_style(self.style_pass(image, params).style)

    # ---- segmentation ---------------------------------------------------------------------

    def infer(
        self, image: np.ndarray, *, model: str = AUTO, params: PredictParams | None = None
    ) -> Pending:
        """The network stage of ``segment``: route (for ``auto``), then the model's network."""
        params = params or PredictParams()
        if model != AUTO:
            predictor = self.predictor(model)
            return Pending(predictor.infer(image, params), self.name(model), None, predictor)
        router, embedder_name, embed = self._router()
        embedder = self.predictor(embedder_name)
        start = time.perf_counter()
        stack = embedder.prepare(image, params)
        timings = {"preprocess": time.perf_counter() - start}
        probe = style_pass(embedder, stack, params, embed)
        start = time.perf_counter()
        route = router.route_style(probe.style)
        timings.update(probe.timings, route=time.perf_counter() - start)
        predictor = self.predictor(route.model)
        params = replace(params, diameter=probe.diameter)  # the style pass's size estimate
        if predictor.model.config.in_channels != embedder.model.config.in_channels:
            start = time.perf_counter()
            stack = predictor.prepare(image, params)
            timings["preprocess"] += time.perf_counter() - start
        output = predictor.infer_stack(stack, params, timings)
        return Pending(output, self.name(route.model), route, predictor)

    def finish(self, pending: Pending) -> Segmentation:
        """The CPU stage of ``segment``: flows → masks."""
        return Segmentation(pending.predictor.finish(pending.output), pending.model, pending.route)

    def segment(
        self, image: np.ndarray, *, model: str = AUTO, params: PredictParams | None = None
    ) -> Segmentation:
        """Segment ``image`` with ``model`` (``auto`` routes it first)."""
        return self.finish(self.infer(image, model=model, params=params))
