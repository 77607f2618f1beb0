"""cellzoo: a model zoo and inference engine for cell segmentation.

Importing ``zoo`` is cheap and has no side effects: submodules (and torch) load on first
use of a name below.

One-liners (``zoo.oneliners``): ``zoo.segment("cells.tif", channels="0,1")`` returns a
``Segmentation`` and ``zoo.route("cells.tif")`` a ``RouteResult``, using a shared ``Zoo``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "FlowParams": "zoo.params",
    "masks_to_flows": "zoo.flows",
    "flows_to_masks": "zoo.flows",
    "average_precision": "zoo.metrics",
    "score": "zoo.metrics",
    "read_image": "zoo.io",
    "SegmentationModel": "zoo.model",
    "PredictParams": "zoo.params",
    "Prediction": "zoo.predict",
    "Predictor": "zoo.predict",
    "Settings": "zoo.settings",
    "style_pass": "zoo.embedding",
    "EmbedParams": "zoo.params",
    "Router": "zoo.router",
    "RouteResult": "zoo.router",
    "StyleBank": "zoo.cluster",
    "ClusterParams": "zoo.cluster",
    "build_style_bank": "zoo.cluster",
    "Registry": "zoo.registry",
    "Zoo": "zoo.pipeline",
    "segment": "zoo.oneliners",
    "route": "zoo.oneliners",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
