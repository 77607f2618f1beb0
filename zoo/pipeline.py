"""The zoo as one object: route an image to its specialist and segment it.

``Zoo`` joins the registry (where models come from), the style router (which model suits
an image) and predictors (how a model runs). Models load from the registry's verified
cache on first use and stay in a small LRU.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.cluster import StyleBank
from zoo.errors import ZooError
from zoo.model import SegmentationModel
from zoo.params import PredictParams
from zoo.predict import Prediction, Predictor
from zoo.registry import Registry
from zoo.router import Router, RouteResult, embed
from zoo.settings import Settings

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass
class Segmentation:
    """A prediction plus how its model was chosen (``route`` is None for a named model)."""

    prediction: Prediction
    model: str
    route: RouteResult | None


class Zoo:
    """Routing and segmentation over one registry.

    Args:
        registry: the models; default ``Registry.default(settings)`` (the shipped zoo or
            ``settings.manifest``, plus the user's zoo).
        settings: backend, device and cache.
        max_loaded: how many predictors stay loaded (least recently used go first).
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        settings: Settings | None = None,
        max_loaded: int = 8,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.registry = registry or Registry.default(self.settings)
        self.max_loaded = max(1, max_loaded)
        self._predictors: OrderedDict[str, Predictor] = OrderedDict()
        self._router: Router | None = None
        self._router_model = ""

    # ---- models ---------------------------------------------------------------------------

    def predictor(self, ref: str) -> Predictor:
        """The predictor of model ``ref`` (a registry name/alias or a ``.safetensors`` path)."""
        if ref in self._predictors:
            self._predictors.move_to_end(ref)
            return self._predictors[ref]
        predictor = Predictor(self._load(ref), self.settings)
        self._predictors[ref] = predictor
        while len(self._predictors) > self.max_loaded:
            evicted, _ = self._predictors.popitem(last=False)
            log.info("unloaded %s (LRU)", evicted)
        return predictor

    def _load(self, ref: str) -> SegmentationModel:
        path = Path(ref)
        if path.suffix == ".safetensors" and path.is_file():
            return SegmentationModel.load(path)
        return self.registry.load_model(ref)

    # ---- routing --------------------------------------------------------------------------

    def _routing(self) -> tuple[Router, str]:
        """The router and the name of the model whose styles its bank holds."""
        if self._router is None:
            entries = [e for e in self.registry.list() if e.style_bank]
            if not entries:
                raise ZooError("no model in the registry has a style bank: routing needs one")
            entry = entries[0]
            bank = StyleBank.load(self.registry.resolve(entry.ref).style_bank)
            self._router, self._router_model = Router(bank, generalist=entry.name), entry.name
        return self._router, self._router_model

    @property
    def router(self) -> Router:
        """The style router of the registry's generalist (the entry with a style bank)."""
        return self._routing()[0]

    @property
    def router_model(self) -> str:
        """The name of the model whose style vectors the router's bank holds."""
        return self._routing()[1]

    def style(self, image: np.ndarray, params: PredictParams | None = None) -> np.ndarray:
        """The routing style vector of ``image`` (the generalist's, on a downsampled view)."""
        _, style_model = self._routing()
        return embed(self.predictor(style_model), image, params=params)

    def route(self, image: np.ndarray, params: PredictParams | None = None) -> RouteResult:
        """Which model suits ``image``: k-NN vote over the style bank, with an OOD check."""
        return self.router.route_style(self.style(image, params))

    def segment(
        self, image: np.ndarray, *, model: str = AUTO, params: PredictParams | None = None
    ) -> Segmentation:
        """Segment ``image`` with ``model`` (``auto`` routes it first)."""
        route = None
        if model == AUTO:
            route = self.route(image, params)
            model = route.model
        return Segmentation(self.predictor(model).predict(image, params), model, route)
