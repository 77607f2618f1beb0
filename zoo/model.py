"""A segmentation model on disk: network weights plus what the predictor needs to use them.

One safetensors file holds everything:

- tensors: the network's ``state_dict`` under ``net.*`` and, when fitted, the size
  regressor under ``size.weight`` ``(style_dim,)``, ``size.bias`` ``()`` and, when set,
  ``size.floor`` ``()``;
- metadata ``cellzoo``: JSON with the architecture name, ``NetConfig``, the mean cell
  diameter the network was trained at, the default ``FlowParams`` and, when known, the
  mean diameter of the training labels (``diam_labels``); validated by
  ``zoo.manifest.WeightsMetadata`` (the manifest's own field types) on load.

Weights are never read from pickles.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from zoo.errors import InvalidParamsError, ZooError
from zoo.manifest import WeightsMetadata, format_errors
from zoo.nets.cpnet import CPNet, NetConfig
from zoo.params import FlowParams

FORMAT_VERSION = 1
# The network predicts flows multiplied by this (training targets are 5 × unit flows, as in
# Cellpose); the predictor divides by it before post-processing.
NET_FLOW_SCALE = 5.0
ARCHITECTURES = {"cpnet": CPNet}


@dataclass(frozen=True)
class SizeRegressor:
    """Style vector → cell diameter, as Cellpose's SizeModel.

    ``log(diameter / diam_mean) = style · weight + bias``, then at least ``floor`` pixels.
    Cellpose's own form, ``exp(A · (style - smean) + log(diam_mean) + ymean)`` clipped
    below at 5 (its ``SizeModel._size_estimation``), is this with ``weight = A``,
    ``bias = ymean - A · smean`` and ``floor = 5`` (``zoo.importers.cellpose``).

    Attributes:
        weight: ``(style_dim,)`` float32 regression weights.
        bias: the intercept.
        floor: the smallest diameter returned (0: no floor).
    """

    weight: np.ndarray
    bias: float
    floor: float = 0.0

    def predict(self, style: np.ndarray, diam_mean: float) -> float:
        """Diameter in pixels for one L2-normalised style vector ``(style_dim,)``."""
        diameter = float(diam_mean * np.exp(float(style @ self.weight) + self.bias))
        return max(diameter, self.floor)

    @classmethod
    def fit(
        cls, styles: np.ndarray, diameters: np.ndarray, diam_mean: float, *, ridge: float = 1.0
    ) -> SizeRegressor:
        """Ridge regression of ``log(diameters / diam_mean)`` on ``styles`` ``(N, style_dim)``."""
        if len(styles) != len(diameters) or len(styles) == 0:
            raise InvalidParamsError(
                f"need as many styles as diameters (>0), got {len(styles)} and {len(diameters)}"
            )
        if np.any(np.asarray(diameters) <= 0):
            raise InvalidParamsError("diameters must be positive")
        target = np.log(np.asarray(diameters, np.float64) / diam_mean)
        x = np.asarray(styles, np.float64)
        x_mean, t_mean = x.mean(axis=0), target.mean()
        xc = x - x_mean
        gram = xc.T @ xc + ridge * np.eye(x.shape[1])
        weight = np.linalg.solve(gram, xc.T @ (target - t_mean))
        bias = t_mean - x_mean @ weight
        return cls(weight=weight.astype(np.float32), bias=float(bias))


@dataclass
class SegmentationModel:
    """A network plus the metadata needed to run it.

    Attributes:
        net: the torch module (eval mode after loading).
        diam_mean: mean cell diameter, in pixels, of the training images.
        flow_params: default post-processing parameters.
        size: the fitted size regressor, or None.
        arch: architecture name (a key of ``ARCHITECTURES``).
        diam_labels: mean cell diameter of the training labels before rescaling (Cellpose's
            ``diam_labels``), or None when unknown. Without a given diameter or a size
            regressor the predictor assumes cells of this size, as Cellpose does.
        layout: the default image geometry of its predictions (``PredictParams.layout``):
            ``cellzoo``, or ``cellpose`` for networks imported from Cellpose.
    """

    net: CPNet
    diam_mean: float = 30.0
    flow_params: FlowParams = field(default_factory=FlowParams)
    size: SizeRegressor | None = None
    arch: str = "cpnet"
    diam_labels: float | None = None
    layout: str = "cellzoo"

    @property
    def config(self) -> NetConfig:
        return self.net.config

    @classmethod
    def create(cls, config: NetConfig | None = None, *, diam_mean: float = 30.0, seed: int = 0):
        """A freshly initialised model (deterministic for ``seed``)."""
        torch.manual_seed(seed)
        return cls(net=CPNet(config).eval(), diam_mean=diam_mean)

    def save(self, path: str | Path, *, half: bool = False) -> Path:
        """Write the model to one safetensors file; ``half`` stores float16 weights."""
        path = Path(path)
        tensors = {}
        for name, value in self.net.state_dict().items():
            value = value.detach().cpu().contiguous()
            if half and value.is_floating_point():
                value = value.half()
            tensors[f"net.{name}"] = value
        if self.size is not None:
            tensors["size.weight"] = torch.from_numpy(np.ascontiguousarray(self.size.weight))
            tensors["size.bias"] = torch.tensor(self.size.bias, dtype=torch.float32)
            if self.size.floor:
                tensors["size.floor"] = torch.tensor(self.size.floor, dtype=torch.float32)
        meta = {
            "format_version": FORMAT_VERSION,
            "arch": self.arch,
            "config": self.config.to_dict(),
            "diam_mean": self.diam_mean,
            "flow_params": asdict(self.flow_params),
        }
        if self.diam_labels is not None:
            meta["diam_labels"] = self.diam_labels
        if self.layout != "cellzoo":
            meta["layout"] = self.layout
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={"cellzoo": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> SegmentationModel:
        """Read a model written by ``save``.

        The metadata is validated (``zoo.manifest.WeightsMetadata``) and every tensor's shape
        checked against the architecture it describes before any tensor is read, so a
        foreign or crafted file gives one ``ZooError`` line and allocates nothing.
        """
        path = Path(path)
        if path.suffix != ".safetensors":
            raise ZooError(f"weights load only from .safetensors files, got {path}")
        meta, shapes = _read_header(path)
        config = NetConfig(**meta.config.model_dump())
        _check_shapes(path, ARCHITECTURES[meta.arch], config, shapes)
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError) as error:
            raise ZooError(f"{path}: not a readable safetensors file ({error})") from error
        net = ARCHITECTURES[meta.arch](config)
        state = {k[4:]: v.float() if v.is_floating_point() else v
                 for k, v in tensors.items() if k.startswith("net.")}
        net.load_state_dict(state)
        size = None
        if "size.weight" in tensors:
            size = SizeRegressor(
                weight=tensors["size.weight"].float().numpy(), bias=float(tensors["size.bias"]),
                floor=float(tensors["size.floor"]) if "size.floor" in tensors else 0.0,
            )
        return cls(
            net=net.eval(),
            diam_mean=float(meta.diam_mean),
            flow_params=meta.flow_params,
            size=size,
            arch=meta.arch,
            diam_labels=None if meta.diam_labels is None else float(meta.diam_labels),
            layout=meta.layout,
        )


def _read_header(path: Path) -> tuple[WeightsMetadata, dict[str, tuple[int, ...]]]:
    """The validated ``cellzoo`` metadata and every tensor's shape (no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("cellzoo")
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (OSError, SafetensorError) as error:
        raise ZooError(f"{path}: not a readable safetensors file ({error})") from error
    if raw is None:
        raise ZooError(f"{path}: safetensors file has no cellzoo metadata")
    try:
        meta = json.loads(raw)
    except ValueError as error:
        raise ZooError(f"{path}: cellzoo metadata is not JSON ({error})") from None
    version = meta.get("format_version", 1) if isinstance(meta, dict) else 1
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ZooError(f"{path}: format version {version} is newer than supported")
    try:
        return WeightsMetadata.model_validate(meta), shapes
    except ValidationError as error:
        problems = format_errors(error)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ZooError(f"{path}: invalid cellzoo metadata: {problems[0]}{more}") from None


def _check_shapes(path: Path, architecture: type[CPNet], config: NetConfig,
                  shapes: dict[str, tuple[int, ...]]) -> None:
    """Every tensor the architecture needs, with its shape, and nothing else (checked on
    torch's ``meta`` device: nothing is allocated)."""
    with torch.device("meta"):
        expected = {f"net.{k}": tuple(v.shape) for k, v in architecture(config).state_dict().items()}
    if "size.weight" in shapes or "size.bias" in shapes:
        expected.update({"size.weight": (config.style_dim,), "size.bias": ()})
    if "size.floor" in shapes:
        expected["size.floor"] = ()
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{k} {shapes[k]} != {expected[k]}" for k in expected
             if k in shapes and shapes[k] != expected[k]]
    problems = ([f"missing tensors {missing[:3]}"] if missing else []) + (
        [f"unexpected tensors {unexpected[:3]}"] if unexpected else []) + (
        [f"tensor shapes differ from its config: {'; '.join(wrong[:3])}"] if wrong else [])
    if problems:
        more = f" ({len(missing) + len(unexpected) + len(wrong)} tensors differ)"
        raise ZooError(f"{path}: weights do not match the cellzoo metadata: "
                       f"{'; '.join(problems)}{more}")
