"""The predictor: image → normalise → resize by diameter → tiles → network → stitch → masks.

One frozen ``PredictParams`` object carries every knob. The network runs through a
backend runner (``zoo.backends``); flows → masks runs on CPU (``zoo.flows``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from zoo.backends import Runner, make_runner
from zoo.errors import InvalidImageError
from zoo.model import NET_FLOW_SCALE, SegmentationModel
from zoo.params import CELLPOSE_TILE, FlowParams, PredictParams, bounded_diameter
from zoo.preprocess import central_crop, normalize, resize, scaled_shape, select_channels
from zoo.settings import Settings
from zoo.tiling import extract_tiles, plan_tiles, plan_tiles_cellpose, stitch_tiles

# flips for test-time augmentation: (flip axes of a (B, C, Y, X) batch, flow channels to negate)
_FLIPS = (((), ()), ((2,), (0,)), ((3,), (1,)), ((2, 3), (0, 1)))


@dataclass
class Prediction:
    """What one prediction returns.

    Attributes:
        labels: ``(Y, X)`` uint16/uint32, 0 = background, 1..N = cells.
        flows: ``(2, Y, X)`` float32 unit-scale flows (Y, X).
        cellprob: ``(Y, X)`` float32 cell-probability logits.
        style: ``(style_dim,)`` float32, L2-normalised style of the image.
        diameter: the diameter used, in pixels.
        timings: seconds per stage.
    """

    labels: np.ndarray
    flows: np.ndarray
    cellprob: np.ndarray
    style: np.ndarray
    diameter: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        return int(self.labels.max()) if self.labels.size else 0


@dataclass
class NetworkOutput:
    """What the network stage hands to post-processing (``Predictor.infer`` → ``finish``).

    Attributes:
        flows: ``(2, Y, X)`` float32 unit-scale flows at image resolution.
        cellprob: ``(Y, X)`` float32 cell-probability logits.
        style: ``(style_dim,)`` float32, L2-normalised.
        diameter: the diameter used, in pixels.
        flow_params: post-processing parameters, already adapted to the rescale.
        timings: seconds per stage so far (``infer`` is the stage's total).
    """

    flows: np.ndarray
    cellprob: np.ndarray
    style: np.ndarray
    diameter: float
    flow_params: FlowParams
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


class Predictor:
    """Segments images with one model.

    Args:
        model: the network and its metadata.
        settings: backend and device; defaults to ``Settings()`` (torch, auto device).
        runner: an already built runner (overrides ``settings``' backend choice).
    """

    def __init__(
        self,
        model: SegmentationModel,
        settings: Settings | None = None,
        *,
        runner: Runner | None = None,
    ) -> None:
        self.model = model
        self.settings = settings or Settings()
        self.runner = runner or make_runner(model, self.settings)

    def predict(self, image: np.ndarray, params: PredictParams | None = None) -> Prediction:
        """Segment one image ``(Y, X)`` or ``(Y, X, C)`` (channels last).

        The same as ``finish(infer(image, params))``: callers that pipeline many images
        run ``infer`` (the network) and ``finish`` (CPU post-processing) in different
        threads or processes.
        """
        return self.finish(self.infer(image, params))

    def infer(self, image: np.ndarray, params: PredictParams | None = None) -> NetworkOutput:
        """The network stage: normalise, estimate the diameter, resize, run the tiles."""
        params = params or PredictParams()
        start = time.perf_counter()
        stack = self.prepare(image, params)
        return self.infer_stack(stack, params, {"preprocess": time.perf_counter() - start})

    def infer_stack(
        self, stack: np.ndarray, params: PredictParams, timings: dict[str, float] | None = None
    ) -> NetworkOutput:
        """``infer`` from an already prepared ``(C_in, Y, X)`` stack (``prepare``).

        Args:
            stack: the normalised network input at the image's resolution.
            params: as for ``infer``; ``params.diameter`` None estimates it here.
            timings: seconds of the stages before this one, added to the output's.
        """
        timings = dict(timings or {})
        start = time.perf_counter() - sum(timings.values())
        with _timed(timings, "diameter"):
            diameter = self.diameter_for(stack, params)
        scale = self.model.diam_mean / diameter
        layout = params.layout or self.model.layout
        with _timed(timings, "resize"):
            shape = (scaled_shape(stack.shape[1:], scale) if layout == "cellzoo"
                     else tuple(max(1, int(side * scale)) for side in stack.shape[1:]))
            scaled = resize(stack, shape)
        with _timed(timings, "network"):
            maps, style = self.network_maps(scaled, params, layout=layout)
        with _timed(timings, "resize"):
            maps = resize(maps, stack.shape[1:])
        timings["infer"] = time.perf_counter() - start
        return NetworkOutput(maps[:2] / NET_FLOW_SCALE, maps[2], style, diameter,
                             self.flow_params(params, scale, layout=layout), timings)

    def finish(self, output: NetworkOutput) -> Prediction:
        """The CPU stage: flows → masks (thread-safe; numba releases the GIL)."""
        from zoo.flows import flows_to_masks  # numba: imported once Zoo chose its cache folder

        timings = dict(output.timings)
        start = time.perf_counter()
        labels = flows_to_masks(output.flows, output.cellprob, output.flow_params)
        timings["postprocess"] = time.perf_counter() - start
        timings["total"] = timings.pop("infer") + timings["postprocess"]
        return Prediction(labels, output.flows, output.cellprob, output.style, output.diameter,
                          timings)

    def prepare(self, image: np.ndarray, params: PredictParams) -> np.ndarray:
        """Channels-last image → normalised ``(C_in, Y, X)`` float32 stack."""
        image = np.asarray(image)
        if image.dtype == bool or not (
            np.issubdtype(image.dtype, np.number) and not np.iscomplexobj(image)
        ):
            raise InvalidImageError(f"image must hold real numbers, got dtype {image.dtype}")
        stack = select_channels(
            image, params.cyto_channel, params.nucleus_channel, n_in=self.model.config.in_channels
        )
        return normalize(stack, *params.percentiles)

    def diameter_for(self, stack: np.ndarray, params: PredictParams) -> float:
        """The diameter given, else the size regressor's estimate, else the model default
        (the training labels' mean diameter when known, as in Cellpose, else ``diam_mean``);
        within the work bounds of ``params`` (``zoo.params.bounded_diameter``: a given
        diameter outside them raises, an estimate is clamped)."""
        given = params.diameter is not None
        if given:
            diameter = float(params.diameter)
        elif self.model.size is None:
            diameter = float(self.model.diam_labels or self.model.diam_mean)
        else:
            view = central_crop(stack, params.style_size)
            _, style = self.network_maps(view, replace(params, augment=False))
            diameter = self.model.size.predict(style, self.model.diam_mean)
        return bounded_diameter(stack.shape[-2:], diameter, self.model.diam_mean, params,
                                estimated=not given)

    def flow_params(
        self, params: PredictParams, scale: float, *, layout: str = "cellzoo"
    ) -> FlowParams:
        """Post-processing params; flow following gets more steps when cells were shrunk
        (with the ``cellpose`` layout, ``niter / scale`` rounded down at every scale, as
        cellpose's ``eval`` with ``resample``)."""
        flow = params.flow_for(self.model.flow_params)
        if layout == "cellpose":
            flow = replace(flow, niter=max(1, int(flow.niter / scale)))
        elif scale < 1:
            flow = replace(flow, niter=int(np.ceil(flow.niter / scale)))
        return flow

    def network_maps(
        self, stack: np.ndarray, params: PredictParams, *, layout: str = "cellzoo"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the network over tiles of ``(C_in, Y, X)`` (``layout``: see ``PredictParams``).

        Returns:
            ``(3, Y, X)`` float32 network maps (flows ×5, cellprob logit) and the
            ``(style_dim,)`` style, averaged over tiles and L2-normalised.
        """
        if layout == "cellpose":
            grid = plan_tiles_cellpose(stack.shape[1:], tile=CELLPOSE_TILE,
                                       overlap=params.tile_overlap)
        else:
            grid = plan_tiles(stack.shape[1:], tile=params.tile_size,
                              overlap=params.tile_overlap, divisor=self.model.config.divisor)
        tiles = extract_tiles(stack, grid)
        outputs, styles = [], []
        for first in range(0, len(tiles), params.batch_size):
            batch = tiles[first : first + params.batch_size]
            out, style = self.run_tiles(batch, params.augment)
            outputs.append(out)
            styles.append(style)
        maps = stitch_tiles(np.concatenate(outputs), grid, overlap=params.tile_overlap)
        style = np.concatenate(styles).mean(axis=0)
        return maps, (style / max(float(np.linalg.norm(style)), 1e-12)).astype(np.float32)

    def run_tiles(self, batch: np.ndarray, augment: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The runner on a batch ``(B, C_in, T, T)``: maps ``(B, 3, T, T)`` and styles
        ``(B, style_dim)``; with ``augment``, the mean over the four flips (flows un-flipped)."""
        if not augment:
            return self.runner.run(batch)
        outs, styles = [], []
        for axes, negate in _FLIPS:
            flipped = np.flip(batch, axis=axes) if axes else batch
            out, style = self.runner.run(np.ascontiguousarray(flipped))
            out = np.flip(out, axis=axes).copy() if axes else out
            out[:, list(negate)] *= -1
            outs.append(out)
            styles.append(style)
        return np.mean(outs, axis=0), np.mean(styles, axis=0)
