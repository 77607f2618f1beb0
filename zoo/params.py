"""The parameters of one prediction, as plain frozen dataclasses.

This module imports nothing heavy (no numpy, torch or numba), so a YAML schema, a CLI or a
service can build and validate parameters without loading the engine.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

from zoo.errors import InvalidParamsError


@dataclass(frozen=True)
class FlowParams:
    """How flows and cell probability become labels (``flows_to_masks``).

    Attributes:
        niter: Euler steps each foreground pixel takes along the flows.
        cellprob_threshold: pixels with ``cellprob`` above this are foreground.
        flow_threshold: masks whose mean squared flow error exceeds this are
            dropped; 0 turns this quality control off.
        min_size: masks with fewer pixels than this (after hole filling) are dropped.
        max_size_fraction: masks larger than this fraction of the image are dropped.
    """

    # pydantic (manifest schema): unknown keys are errors, as for the dataclass itself; said
    # explicitly so the JSON schema is the same on every pydantic version
    __pydantic_config__ = {"extra": "forbid"}

    niter: int = 200
    cellprob_threshold: float = 0.0
    flow_threshold: float = 0.4
    min_size: int = 15
    max_size_fraction: float = 0.4

    def __post_init__(self) -> None:
        for name in ("niter", "min_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise InvalidParamsError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("cellprob_threshold", "flow_threshold", "max_size_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InvalidParamsError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise InvalidParamsError(f"{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.niter < 1:
            raise InvalidParamsError(f"niter must be >= 1, got {self.niter}")
        if self.min_size < 0:
            raise InvalidParamsError(f"min_size must be >= 0, got {self.min_size}")
        if self.flow_threshold < 0:
            raise InvalidParamsError(f"flow_threshold must be >= 0, got {self.flow_threshold}")
        if not 0 < self.max_size_fraction <= 1:
            raise InvalidParamsError(
                f"max_size_fraction must be in (0, 1], got {self.max_size_fraction}"
            )


LAYOUTS = ("cellzoo", "cellpose")
CELLPOSE_TILE = 224  # cellpose's bsize


@dataclass(frozen=True)
class PredictParams:
    """Everything that shapes one prediction.

    Attributes:
        cyto_channel: channel index of the cytoplasm (or only) signal.
        nucleus_channel: channel index of the nuclear signal, or None.
        percentiles: lower and upper percentile mapped to 0 and 1.
        diameter: mean cell diameter in pixels; None estimates it with the model's
            size regressor when it has one, else uses the model's mean diameter.
        tile_size: network tile side in pixels (a multiple of the net divisor).
        tile_overlap: fraction of a tile that neighbouring tiles share.
        batch_size: tiles per network call.
        augment: average the four flips (test-time augmentation).
        flow: post-processing parameters; None uses the model's defaults.
        style_size: side of the central crop the size-estimation pass sees.
        flow_threshold: overrides ``flow.flow_threshold`` (None: keep it).
        cellprob_threshold: overrides ``flow.cellprob_threshold`` (None: keep it).
        min_size: overrides ``flow.min_size`` (None: keep it).
        max_rescale: the network sees the image rescaled by ``diam_mean / diameter``, at most
            this factor up or down: a given diameter outside ``[diam_mean / max_rescale,
            diam_mean × max_rescale]`` is refused, an estimated one is clamped into it.
        max_network_pixels: most pixels the network may see for one image (Y × X after
            the rescale); None: no budget. A given diameter over it is refused, an
            estimated one is raised until the image fits (see ``bounded_diameter``).
        layout: how the image is resized, padded, tiled and blended: ``cellzoo`` (rounded
            resize, padding at the end, ``tile_size`` tiles, raised-cosine blending) or
            ``cellpose`` (cellpose 3.1.1.2's geometry: resize rounded down, 8 + centring
            pixels of padding on every side, 224-pixel tiles, its sigmoid blending, and
            ``niter / scale`` steps rounded down at every scale); None: the model's own
            (imported Cellpose models: ``cellpose``).
    """

    cyto_channel: int = 0
    nucleus_channel: int | None = None
    percentiles: tuple[float, float] = (1.0, 99.0)
    diameter: float | None = None
    tile_size: int = 256
    tile_overlap: float = 0.1
    batch_size: int = 8
    augment: bool = False
    flow: FlowParams | None = None
    style_size: int = 256
    flow_threshold: float | None = None
    cellprob_threshold: float | None = None
    min_size: int | None = None
    max_rescale: float = 8.0
    max_network_pixels: int | None = None
    layout: str | None = None

    def __post_init__(self) -> None:
        lower, upper = self.percentiles
        if not 0 <= lower < upper <= 100:
            raise InvalidParamsError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {self.percentiles}")
        if self.diameter is not None and not self.diameter > 0:
            raise InvalidParamsError(f"diameter must be positive or None, got {self.diameter}")
        if self.batch_size < 1:
            raise InvalidParamsError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.style_size < 16:
            raise InvalidParamsError(f"style_size must be >= 16, got {self.style_size}")
        if not (math.isfinite(self.max_rescale) and self.max_rescale >= 1):
            raise InvalidParamsError(f"max_rescale must be a number >= 1, got {self.max_rescale}")
        if self.max_network_pixels is not None and self.max_network_pixels < 1:
            raise InvalidParamsError(
                f"max_network_pixels must be >= 1 or None, got {self.max_network_pixels}")
        if self.layout not in (None, *LAYOUTS):
            raise InvalidParamsError(f"layout must be one of {LAYOUTS} or None, got {self.layout!r}")

    def flow_for(self, defaults: FlowParams) -> FlowParams:
        """The post-processing parameters: ``flow`` (else ``defaults``, the model's), with
        the overrides that were given."""
        flow = self.flow or defaults
        overrides = {name: value for name in ("flow_threshold", "cellprob_threshold", "min_size")
                     if (value := getattr(self, name)) is not None}
        return replace(flow, **overrides) if overrides else flow


def bounded_diameter(shape: tuple[int, int], diameter: float, diam_mean: float,
                     params: PredictParams, *, estimated: bool) -> float:
    """The diameter to run a model at, within the work bounds of ``params``.

    The network sees the image rescaled by ``diam_mean / diameter``: a tiny diameter makes
    it enormous (a 64 × 64 image at diameter 0.001 would be 10⁹ × 10⁹ pixels). The
    diameter must lie in ``[diam_mean / max_rescale, diam_mean × max_rescale]`` and, with
    ``max_network_pixels``, keep ``Y × X × (diam_mean / diameter)²`` within the budget.

    Args:
        shape: ``(Y, X)`` of the image at its own resolution.
        diameter: the cell diameter in pixels, given or estimated.
        diam_mean: the model's mean training diameter, in pixels.
        params: ``max_rescale`` and ``max_network_pixels``.
        estimated: a size estimate is clamped into the bounds; a given diameter outside
            them raises.

    Returns:
        The diameter, unchanged when it is within bounds.

    Raises:
        InvalidParamsError: a given diameter outside the bounds (``field="diameter"``).
        ImageTooLargeError: the image exceeds the pixel budget even at the smallest scale.
    """
    from zoo.errors import ImageTooLargeError

    low, high = diam_mean / params.max_rescale, diam_mean * params.max_rescale
    if not (isinstance(diameter, numbers.Real) and math.isfinite(diameter) and diameter > 0):
        if estimated:  # a size regressor gone wild: the model's own diameter
            return bounded_diameter(shape, diam_mean, diam_mean, params, estimated=True)
        raise InvalidParamsError(f"diameter must be a positive number of pixels, got {diameter}",
                                 field="diameter")
    if not low <= diameter <= high:
        if not estimated:
            raise InvalidParamsError(
                f"diameter {diameter:g} px is outside {low:g}..{high:g} px: the model (mean "
                f"diameter {diam_mean:g} px) would see the image rescaled by more than "
                f"{params.max_rescale:g}x", field="diameter")
        diameter = min(max(diameter, low), high)
    budget = params.max_network_pixels
    pixels = shape[0] * shape[1]
    if budget is None or pixels * (diam_mean / diameter) ** 2 <= budget:
        return float(diameter)
    smallest = diam_mean * math.sqrt(pixels / budget)  # the diameter that just fits
    if estimated and smallest <= high:
        return float(smallest)
    if smallest > high:
        raise ImageTooLargeError(
            f"a {shape[0]} x {shape[1]} image is over the network's budget of {budget:,} "
            f"pixels even shrunk {params.max_rescale:g}x", pixels=pixels, limit=budget)
    seen = int(pixels * (diam_mean / diameter) ** 2)
    raise InvalidParamsError(
        f"diameter {diameter:g} px would make the network see {seen:,} pixels (a "
        f"{shape[0]} x {shape[1]} image rescaled {diam_mean / diameter:.3g}x), over the "
        f"budget of {budget:,}: give a diameter of at least {math.ceil(smallest * 100) / 100:g} px",
        field="diameter")


@dataclass(frozen=True)
class EmbedParams:
    """How the style pass embeds an image for routing (recorded in a style bank, so that
    queries are embedded exactly as its references were).

    The image is seen at its own scale: crops of ``tile`` pixels *at the embedding model's
    diameter* (native crops of ``tile × diameter / diam_mean`` pixels, resized), so an
    image, an upsampled copy and a crop of it give the same style.

    Attributes:
        tile: side of each crop fed to the network, in pixels at the model's scale.
        n_tiles: crops averaged (spread over the image: its centre alone for 1, a 2 × 2
            grid for 4); an image smaller than the spread gives fewer, distinct crops.
    """

    tile: int = 128
    n_tiles: int = 4

    def __post_init__(self) -> None:
        if self.tile < 16:
            raise InvalidParamsError(f"tile must be >= 16 pixels, got {self.tile}")
        if self.n_tiles not in (1, 4, 9):
            raise InvalidParamsError(f"n_tiles must be 1, 4 or 9, got {self.n_tiles}")

    def to_dict(self) -> dict[str, int]:
        return {"tile": self.tile, "n_tiles": self.n_tiles}
