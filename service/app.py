"""The cellzoo HTTP service (single-process development mode).

One ``@bentoml.service`` loads the zoo once per worker and exposes ``/segment`` and
``/route``. The split GPU-network / CPU-post-processing deployment, adaptive batching and
the remaining endpoints come with the service issue; this service already answers real
requests with the same code path as the library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import InvalidArgument, NotFound

from zoo.errors import UnknownModelError, ZooError

# Any upload is accepted: the format is detected from the bytes (zoo.io), not the content type.
Image = Path


def _params(diameter: float | None, channels: str):
    from zoo.predict import PredictParams
    from zoo.preprocess import parse_channels

    try:
        cyto, nucleus = parse_channels(channels)
        return PredictParams(diameter=diameter, cyto_channel=cyto, nucleus_channel=nucleus)
    except ZooError as error:
        raise InvalidArgument(str(error)) from error


@bentoml.service(name="cellzoo", traffic={"timeout": 300})
class CellZoo:
    """Routes every image to its specialist and segments it."""

    def __init__(self) -> None:
        from zoo.pipeline import Zoo

        self.zoo = Zoo()
        for entry in self.zoo.registry.list():
            self.zoo.predictor(entry.name)  # load every model at start-up, not per request
        self.zoo.router  # noqa: B018

    def _read(self, image: Path):
        from zoo.io import read_image

        try:
            return read_image(image)
        except ZooError as error:
            raise InvalidArgument(str(error)) from error

    @bentoml.api
    def segment(
        self, image: Image, model: str = "auto", diameter: float | None = None, channels: str = "0"
    ) -> dict[str, Any]:
        """Segment one image; masks come back as COCO RLE."""
        from zoo.io import labels_to_coco_rle

        params, pixels = _params(diameter, channels), self._read(image)
        try:
            result = self.zoo.segment(pixels, model=model, params=params)
        except UnknownModelError as error:
            raise NotFound(str(error)) from error
        except ZooError as error:
            raise InvalidArgument(str(error)) from error
        prediction = result.prediction
        return {
            "n_cells": prediction.n_cells,
            "model": result.model,
            "route": result.route.to_dict() if result.route else None,
            "diameter": prediction.diameter,
            "shape": list(prediction.labels.shape),
            "timings_ms": {k: round(v * 1e3, 2) for k, v in prediction.timings.items()},
            "masks": labels_to_coco_rle(prediction.labels),
        }

    @bentoml.api
    def route(self, image: Image, channels: str = "0") -> dict[str, Any]:
        """The routing result only."""
        params, pixels = _params(None, channels), self._read(image)
        try:
            return self.zoo.route(pixels, params).to_dict()
        except ZooError as error:
            raise InvalidArgument(str(error)) from error
