"""The ``rdf.yaml`` of a cellzoo model package, in bioimage.io's model spec 0.5.

What the package declares (``build_rdf``):

- one input ``image``: ``(batch, channel, y, x)`` float32 raw intensities, channels
  ``cyto`` and ``nucleus`` (a zero channel when there is no nuclear stain), y and x any
  multiple of the network's divisor from ``2 * divisor`` up. Preprocessing
  ``scale_range`` maps each channel's 1st and 99th percentile of each sample to 0 and 1,
  cellzoo's own normalisation. Cells should be about ``config.cellzoo.diameter`` pixels
  across (cellzoo resizes by diameter before the network; a bioimage.io consumer does not);
- output ``flows``: ``(batch, channel, y, x)`` float32, channels ``flow_y``, ``flow_x``
  (Cellpose flows times 5) and ``cellprob`` (cell-probability logit), the network's own
  maps. Masks come from them by Cellpose's flow dynamics (flows divided by 5,
  ``config.cellzoo.flow_params``), which cellzoo runs after the network;
- output ``style``: ``(batch, index)`` float32, the L2-normalised style vector that
  cellzoo routes images with.

Weights: ONNX and TorchScript, each with its sha256. The model's own safetensors file (and
its style bank, if any) travel as ``attachments`` and are named in ``config.cellzoo``, the
cellzoo metadata that ``zoo import bioimageio`` reads back (``CellzooConfig``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zoo.errors import PackageError
from zoo.params import FlowParams

FORMAT_VERSION = "0.5.12"
"""The bioimage.io model spec version written (the newest that bioimageio.core validates)."""
CELLZOO_FORMAT = 1
INPUT_ID = "image"
OUTPUT_IDS = ("flows", "style")
TEST_FILES = {"image": "test_input.npy", "flows": "test_output_flows.npy",
              "style": "test_output_style.npy"}
SAMPLE_FILES = {"image": "sample_input.tif", "flows": "sample_output_flows.tif",
                "style": "sample_output_style.tif"}
ONNX_FILE = "weights.onnx"
TORCHSCRIPT_FILE = "weights.torchscript.pt"
DOC_FILE = "README.md"
COVER_FILE = "cover.png"
RDF_FILE = "rdf.yaml"
FLOW_CHANNELS = ("flow_y", "flow_x", "cellprob")
CITATIONS = (
    ("Stringer, C. & Pachitariu, M. Cellpose 2.0: how to train your own model. "
     "Nature Methods 19, 1634-1641 (2022).", "10.1038/s41592-022-01663-4"),
    ("Stringer, C., Wang, T., Michaelos, M. & Pachitariu, M. Cellpose: a generalist "
     "algorithm for cellular segmentation. Nature Methods 18, 100-106 (2021).",
     "10.1038/s41592-020-01018-x"),
)
TAGS = ("cellzoo", "cellpose", "2d", "cells", "nuclei", "fluorescence-light-microscopy",
        "transmission-light-microscopy", "pytorch", "onnx", "unet", "resnet",
        "instance-segmentation")


def channel_names(n_channels: int) -> list[str]:
    """Input channel names: ``cyto`` then ``nucleus`` (Cellpose's order), then ``cN``."""
    names = ["cyto", "nucleus"][:n_channels]
    return names + [f"c{i}" for i in range(len(names), n_channels)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileRef(_Record):
    """A file of the package and its sha256."""

    source: Annotated[str, Field(min_length=1)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class NetSpec(_Record):
    """The architecture: ``zoo.nets`` name and ``NetConfig`` fields."""

    architecture: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    channels: list[Annotated[int, Field(ge=1)]]
    n_out: Annotated[int, Field(ge=1)]
    kernel_size: Annotated[int, Field(ge=1)]


class CellzooConfig(_Record):
    """``config.cellzoo`` of a package: what cellzoo needs to bring the model back.

    Attributes:
        weights: the model's own safetensors file (an attachment).
        style_bank: its routing style bank (an attachment), if it has one.
        flow_scale: the network's flows are this many times Cellpose's unit flows.
        percentiles: the normalisation's lower and upper percentile.
        source: ``name@version`` of the model in the zoo it was exported from.
    """

    format: Annotated[int, Field(ge=1, le=CELLZOO_FORMAT)]
    source: str
    kind: str
    description: str = ""
    net: NetSpec
    diameter: Annotated[float, Field(gt=0)]
    channels: list[str]
    flow_params: dict[str, Any]
    flow_scale: Annotated[float, Field(gt=0)]
    percentiles: tuple[float, float]
    weights: FileRef
    style_bank: FileRef | None = None
    size_regressor: bool = False
    cluster: dict[str, Any] | None = None
    parent: str | None = None
    training_data: dict[str, Any] | None = None
    metrics: dict[str, float] = {}
    license: str | None = None

    @property
    def flow(self) -> FlowParams:
        return FlowParams(**self.flow_params)


def parse_cellzoo(rdf: dict[str, Any], *, where: str) -> CellzooConfig:
    """``config.cellzoo`` of an rdf, validated; ``PackageError`` in one line otherwise."""
    config = rdf.get("config")
    data = config.get("cellzoo") if isinstance(config, dict) else None
    if data is None:
        formats = sorted(k for k, v in (rdf.get("weights") or {}).items() if v)
        raise PackageError(
            f"{where}: unsupported weights {formats or 'none'}: cellzoo imports packages that "
            "carry its safetensors weights (config.cellzoo, written by zoo export bioimageio); "
            "it never loads pickled or TorchScript weights"
        )
    try:
        return CellzooConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '<root>'}: {item['msg']}"
            for item in error.errors()[:5]
        )
        raise PackageError(f"{where}: invalid config.cellzoo: {problems}") from None


def _space_axis(name: str, divisor: int) -> dict[str, Any]:
    return {"type": "space", "id": name, "size": {"min": 2 * divisor, "step": divisor}}


def _output_space_axis(name: str) -> dict[str, Any]:
    return {"type": "space", "id": name, "size": {"tensor_id": INPUT_ID, "axis_id": name}}


def tensors(*, n_channels: int, divisor: int, style_dim: int, percentiles: tuple[float, float],
            digests: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """The ``inputs`` and ``outputs`` of the rdf; ``digests`` maps test files to sha256."""
    lower, upper = percentiles

    def test_tensor(tensor_id: str) -> dict[str, str]:
        name = TEST_FILES[tensor_id]
        return {"source": name, "sha256": digests[name]}

    def sample_tensor(tensor_id: str) -> dict[str, str]:
        name = SAMPLE_FILES[tensor_id]
        return {"source": name, "sha256": digests[name]}

    image = {
        "id": INPUT_ID,
        "description": "raw intensities, channels cyto and nucleus (zeros when absent)",
        "axes": [{"type": "batch"},
                 {"type": "channel", "channel_names": channel_names(n_channels)},
                 _space_axis("y", divisor), _space_axis("x", divisor)],
        "test_tensor": test_tensor(INPUT_ID),
        "sample_tensor": sample_tensor(INPUT_ID),
        "data": {"type": "float32"},
        "preprocessing": [
            {"id": "scale_range",
             "kwargs": {"axes": ["y", "x"], "min_percentile": lower, "max_percentile": upper}},
            {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
        ],
    }
    flows = {
        "id": "flows",
        "description": "Cellpose flows (Y, X) times 5 and the cell-probability logit",
        "axes": [{"type": "batch"},
                 {"type": "channel", "channel_names": list(FLOW_CHANNELS)},
                 _output_space_axis("y"), _output_space_axis("x")],
        "test_tensor": test_tensor("flows"),
        "sample_tensor": sample_tensor("flows"),
        "data": {"type": "float32"},
    }
    style = {
        "id": "style",
        "description": "L2-normalised style vector (what cellzoo routes images by)",
        "axes": [{"type": "batch"}, {"type": "index", "size": style_dim}],
        "test_tensor": test_tensor("style"),
        "sample_tensor": sample_tensor("style"),
        "data": {"type": "float32"},
    }
    return [image], [flows, style]
