"""Inference backends: run the network on a batch, nothing else.

A runner maps a float32 batch ``(B, C_in, H, W)`` (H, W multiples of the net's
divisor) to ``(outputs (B, 3, H, W), styles (B, style_dim))`` float32 numpy arrays.
``torch`` runs on CUDA when present, else CPU; ``onnx`` runs onnxruntime with the
CUDA execution provider when present, else CPU. onnxruntime is imported only when
that backend is chosen.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from zoo.errors import BackendError
from zoo.model import SegmentationModel
from zoo.nets.cpnet import CPNet
from zoo.settings import Settings

log = logging.getLogger(__name__)
ONNX_OPSET = 17
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Runner(Protocol):
    """Anything that runs the network on a batch."""

    device: str

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def resolve_torch_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an explicit CUDA request must be satisfiable."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"device {device!r} requested but torch sees no CUDA device")
    return torch.device(device)


class TorchRunner:
    """Runs a ``CPNet`` with torch; on CUDA optionally in bf16/fp16 and channels-last."""

    def __init__(self, net: CPNet, *, device: str = "auto", precision: str = "fp32") -> None:
        self.torch_device = resolve_torch_device(device)
        self.device = str(self.torch_device)
        on_cuda = self.torch_device.type == "cuda"
        self.dtype = _DTYPES[precision] if on_cuda else torch.float32
        self.net = net.to(self.torch_device).eval()
        self.memory_format = torch.channels_last if on_cuda else torch.contiguous_format
        if on_cuda:
            self.net = self.net.to(memory_format=self.memory_format)

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        x = x.to(self.torch_device, non_blocking=True).contiguous(memory_format=self.memory_format)
        with torch.autocast(
            self.torch_device.type, dtype=self.dtype, enabled=self.dtype != torch.float32
        ):
            outputs, style = self.net(x)
        return outputs.float().cpu().numpy(), style.float().cpu().numpy()


def export_onnx(net: CPNet, path: str | Path, *, opset: int = ONNX_OPSET) -> Path:
    """Export ``net`` to ONNX with dynamic batch and spatial axes.

    Inputs ``image (B, C_in, H, W)``; outputs ``outputs (B, 3, H, W)`` and ``style (B, S)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(net).cpu().eval()
    side = 2 * net.config.divisor
    example = torch.zeros(1, net.config.in_channels, side, side)
    axes = {0: "batch", 2: "height", 3: "width"}
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # The TorchScript exporter exports this static graph in about a second; the
    # torch.export-based one gives the same graph but is ~15x slower and needs onnxscript.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["outputs", "style"],
            dynamic_axes={"image": axes, "outputs": axes, "style": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    tmp.replace(path)
    return path


def weights_digest(net: CPNet) -> str:
    """sha256 over the network's tensors, stable across processes."""
    digest = hashlib.sha256()
    for name, value in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class OnnxRunner:
    """Runs an exported network with onnxruntime (CUDA EP when available, else CPU)."""

    def __init__(self, path: str | Path, *, device: str = "auto") -> None:
        try:
            import onnxruntime as ort
        except ImportError as error:  # pragma: no cover - onnxruntime is a dependency
            raise BackendError("the onnx backend needs onnxruntime: pip install 'cellzoo[onnx]' (or onnxruntime-gpu on CUDA)") from error
        available = ort.get_available_providers()
        wants_cuda = device.startswith("cuda") or device == "auto"
        providers = ["CPUExecutionProvider"]
        if wants_cuda and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        elif device.startswith("cuda"):
            raise BackendError(f"device {device!r} requested but onnxruntime has no CUDA provider")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.device = "cuda" if self.session.get_providers()[0].startswith("CUDA") else "cpu"

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feed = {"image": np.ascontiguousarray(batch, dtype=np.float32)}
        outputs, style = self.session.run(["outputs", "style"], feed)
        return outputs, style


def make_runner(model: SegmentationModel, settings: Settings) -> Runner:
    """The runner ``settings`` asks for; ONNX files are exported once into the cache."""
    if settings.backend == "torch":
        return TorchRunner(model.net, device=settings.device, precision=settings.precision)
    path = settings.home / "onnx" / f"{weights_digest(model.net)}.onnx"
    if not path.exists():
        log.info("exporting network to %s", path)
        export_onnx(model.net, path)
    return OnnxRunner(path, device=settings.device)
