"""Import a Cellpose 2.x/3.x CPnet checkpoint (and its size model) as a cellzoo model.

How it works: Cellpose's ``CPnet`` (cellpose 3.1.1.2 ``resnet_torch.py``) and our ``CPNet``
compute the same function: residual down blocks, max-pooling, the style as the global
average of the deepest map divided by its L2 norm, style-conditioned residual up blocks with
nearest ×2 upsampling, and a BN → ReLU → 1×1 head giving flow Y, flow X and the
cell-probability logit (the flows at 5× unit scale, as ours). Only the parameter names
differ, so importing is a renaming:

=============================================  ===================================
cellpose                                        cellzoo
=============================================  ===================================
``downsample.down.res_down_{i}.proj.*``         ``down.{i}.proj.*``
``downsample.down.res_down_{i}.conv.conv_{j}.*``  ``down.{i}.convs.{j}.*``
``upsample.up.res_up_{i}.proj.*``               ``up.{L-1-i}.proj.*``
``upsample.up.res_up_{i}.conv.conv_0.*``        ``up.{L-1-i}.conv0.*``
``upsample.up.res_up_{i}.conv.conv_{j}.full.*`` ``up.{L-1-i}.styled.{j-1}.style.*``
``upsample.up.res_up_{i}.conv.conv_{j}.conv.*`` ``up.{L-1-i}.styled.{j-1}.conv.*``
``output.*``                                    ``head.*``
``diam_mean``, ``diam_labels``                  ``SegmentationModel.diam_mean`` / ``.diam_labels``
=============================================  ===================================

(``L`` levels; cellpose numbers up blocks shallow to deep, we deep to shallow). The widths come
from the tensor shapes, every name and shape must match exactly, and anything else (a 3-D or
transformer checkpoint, a restoration network with one output, a truncated file, a pickle that
asks to run code) is refused before anything is written. ``torch.load(weights_only=True)`` is
the only unpickling of a checkpoint in cellzoo, and it happens here.

The imported model predicts with Cellpose's image geometry by default (``layout="cellpose"``:
how cellpose 3.1.1.2 resizes, pads, tiles and blends; ``zoo.tiling.plan_tiles_cellpose``),
so ``zoo segment --diameter D`` gives cellpose's masks; ``PredictParams(layout="cellzoo")``
runs it like the shipped models.

A Cellpose size model (``*_size.npy``: ``A``, ``smean``, ``diam_mean``, ``ymean``) predicts
``exp(A · (style - smean) + log(diam_mean) + ymean)``, at least 5; that is our
``SizeRegressor`` with ``weight = A``, ``bias = ymean - A · smean``, ``floor = 5``.
"""

from __future__ import annotations

import logging
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.errors import ZooError
from zoo.files import sha256_file
from zoo.importers.npy import load_npy_dict
from zoo.manifest import Lineage, ModelEntry, SourceFile
from zoo.model import SegmentationModel, SizeRegressor
from zoo.nets.cpnet import CPNet, NetConfig

log = logging.getLogger(__name__)

FORMAT = "cellpose"
#: What each network input channel holds (Cellpose's ``channels=[cyto, nucleus]``; a
#: grayscale image is the first channel with zeros in the second).
CHANNELS = ("cytoplasm (or grayscale)", "nucleus (zeros when absent)")
SIZE_FLOOR = 5.0  # cellpose's SizeModel never predicts less than 5 pixels
SIZE_KEYS = ("A", "smean", "diam_mean", "ymean")
_EXTRA_KEYS = ("diam_mean", "diam_labels")
_DOWN_RE = re.compile(r"^downsample\.down\.res_down_(\d+)\.")


class NotACheckpointError(ZooError):
    """A file is not a Cellpose CPnet checkpoint we can import."""


@dataclass(frozen=True)
class CellposeCheckpoint:
    """A Cellpose checkpoint, renamed onto ``CPNet``.

    Attributes:
        state: our ``CPNet`` state dict (float32 tensors).
        config: the architecture read from the tensor shapes.
        diam_mean: the diameter the network was trained at, or None when the file lacks it.
        diam_labels: the mean diameter of its training labels, or None.
    """

    state: dict[str, torch.Tensor]
    config: NetConfig
    diam_mean: float | None
    diam_labels: float | None


def key_map(levels: int) -> dict[str, str]:
    """Cellpose parameter-name prefixes → ours, for a CPnet of ``levels`` encoder levels."""
    names = {"output.": "head."}
    for level in range(levels):
        down, up, ours = (f"downsample.down.res_down_{level}.", f"upsample.up.res_up_{level}.",
                          f"up.{levels - 1 - level}.")
        names[f"{down}proj."] = f"down.{level}.proj."
        for j in range(4):
            names[f"{down}conv.conv_{j}."] = f"down.{level}.convs.{j}."
        names[f"{up}proj."] = f"{ours}proj."
        names[f"{up}conv.conv_0."] = f"{ours}conv0."
        for j in (1, 2, 3):
            names[f"{up}conv.conv_{j}.full."] = f"{ours}styled.{j - 1}.style."
            names[f"{up}conv.conv_{j}.conv."] = f"{ours}styled.{j - 1}.conv."
    return names


def _rename(name: str, names: dict[str, str]) -> str | None:
    prefix = next((p for p in names if name.startswith(p)), None)
    return None if prefix is None else names[prefix] + name[len(prefix):]


def config_of(state: dict[str, torch.Tensor]) -> NetConfig:
    """The ``NetConfig`` of a cellpose CPnet state dict, read from its tensor shapes."""
    levels = sorted({int(m.group(1)) for k in state if (m := _DOWN_RE.match(k))})
    if not levels or levels != list(range(len(levels))):
        raise NotACheckpointError("no CPnet encoder blocks (downsample.down.res_down_*)")
    widths = []
    for level in levels:
        weight = state.get(f"downsample.down.res_down_{level}.proj.1.weight")
        if weight is None or weight.ndim != 4:
            shape = None if weight is None else tuple(weight.shape)
            raise NotACheckpointError(
                f"res_down_{level}.proj.1.weight is {shape}: not a 2-D CPnet (3-D networks are "
                "not supported)")
        widths.append(int(weight.shape[0]))
        if level == 0:
            widths.insert(0, int(weight.shape[1]))
    head = state.get("output.2.weight")
    kernel = state.get("downsample.down.res_down_0.conv.conv_0.2.weight")
    if head is None or kernel is None or kernel.ndim != 4:
        raise NotACheckpointError("no CPnet output head (output.2.weight)")
    return NetConfig(channels=tuple(widths), n_out=int(head.shape[0]),
                     kernel_size=int(kernel.shape[-1]))


def convert_state_dict(state: dict[str, torch.Tensor]) -> CellposeCheckpoint:
    """Rename a cellpose CPnet state dict onto ``CPNet``; names and shapes must match exactly.

    Raises:
        NotACheckpointError: the state dict is not a 2-D, 3-output CPnet.
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NotACheckpointError("expected a state dict of tensors (torch.save(net.state_dict()))")
    config = config_of(state)
    if config.n_out != 3:
        raise NotACheckpointError(
            f"the network has {config.n_out} output(s); a segmentation CPnet has 3 "
            "(flow Y, flow X, cell probability)")
    names = key_map(len(config.channels) - 1)
    expected = CPNet(config).state_dict()
    renamed, unknown = {}, []
    for name, value in state.items():
        if name in _EXTRA_KEYS:
            continue
        ours = _rename(name, names)
        if ours is None or ours not in expected:
            unknown.append(name)
            continue
        if tuple(value.shape) != tuple(expected[ours].shape):
            raise NotACheckpointError(
                f"{name} has shape {tuple(value.shape)}, expected {tuple(expected[ours].shape)}")
        renamed[ours] = value.float() if value.is_floating_point() else value
    missing = sorted(set(expected) - set(renamed))
    if unknown or missing:
        raise NotACheckpointError(
            f"unexpected keys {unknown[:3]}" if unknown else f"missing keys {missing[:3]}")
    return CellposeCheckpoint(renamed, config, _scalar(state, "diam_mean"),
                              _scalar(state, "diam_labels"))


def _scalar(state: dict[str, torch.Tensor], key: str) -> float | None:
    value = state.get(key)
    if value is None or value.numel() != 1:
        return None
    number = float(value.reshape(-1)[0])
    return number if np.isfinite(number) and number > 0 else None


def to_cellpose_state_dict(model: SegmentationModel) -> dict[str, torch.Tensor]:
    """Our model's weights under cellpose's CPnet names (the inverse of ``convert_state_dict``),
    with ``diam_mean`` and ``diam_labels``, ready for ``torch.save`` and cellpose's
    ``CPnet.load_model``."""
    names = key_map(len(model.config.channels) - 1)
    inverse = {ours: theirs for theirs, ours in names.items()}
    state = {}
    for name, value in model.net.state_dict().items():
        prefix = next(p for p in inverse if name.startswith(p))
        state[inverse[prefix] + name[len(prefix):]] = value.detach().clone()
    state["diam_mean"] = torch.tensor([float(model.diam_mean)])
    state["diam_labels"] = torch.tensor([float(model.diam_labels or model.diam_mean)])
    return state


def read_checkpoint(path: str | Path) -> CellposeCheckpoint:
    """Read and convert the cellpose checkpoint at ``path`` (weights-only unpickling).

    Raises:
        NotACheckpointError: unreadable, truncated, code-carrying or not a CPnet.
    """
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unpickling failed"
        raise NotACheckpointError(
            f"{path}: refused: not a plain tensor checkpoint ({first[:200]})") from None
    except Exception as error:  # noqa: BLE001 - torch's readers raise many types on garbage
        raise NotACheckpointError(
            f"{path}: not a readable torch checkpoint (truncated or another format: "
            f"{str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__})"
        ) from None
    try:
        return convert_state_dict(state)
    except NotACheckpointError as error:
        raise NotACheckpointError(f"{path}: not a Cellpose CPnet checkpoint: {error}") from None


def read_size_model(path: str | Path, *, style_dim: int) -> SizeRegressor:
    """Cellpose's size model (``np.save``'d dict ``A``, ``smean``, ``diam_mean``, ``ymean``) as a
    ``SizeRegressor`` (see the module doc); read without executing pickled code."""
    params = load_npy_dict(path, SIZE_KEYS)
    try:
        weights = np.asarray(params["A"], dtype=np.float64).reshape(-1)
        mean = np.asarray(params["smean"], dtype=np.float64).reshape(-1)
        ymean = float(np.asarray(params["ymean"]))
    except (TypeError, ValueError) as error:
        raise ZooError(f"{path}: size model values are not numeric ({error})") from None
    if weights.shape != (style_dim,) or mean.shape != (style_dim,):
        raise ZooError(f"{path}: size model for styles of {weights.shape[0]} values; "
                       f"this network's style has {style_dim}")
    if not (np.all(np.isfinite(weights)) and np.all(np.isfinite(mean)) and np.isfinite(ymean)):
        raise ZooError(f"{path}: size model holds NaN or infinite values")
    return SizeRegressor(weight=weights.astype(np.float32), bias=float(ymean - weights @ mean),
                         floor=SIZE_FLOOR)


def size_model_diameter(path: str | Path) -> float:
    """The ``diam_mean`` a Cellpose size model was fitted at."""
    return float(np.asarray(load_npy_dict(path, SIZE_KEYS)["diam_mean"]))


def load_model(
    checkpoint: str | Path, *, diameter: float | None = None, size_model: str | Path | None = None
) -> SegmentationModel:
    """A ``SegmentationModel`` from a cellpose checkpoint (and optional size model).

    Args:
        checkpoint: the CPnet state dict file.
        diameter: the diameter the network was trained at (Cellpose's ``diam_mean``; built-in
            nuclei models: 17); default: the checkpoint's ``diam_mean``.
        size_model: a Cellpose ``*_size.npy`` to estimate diameters from the style.

    Raises:
        ZooError: a bad checkpoint or size model, or no diameter known.
    """
    read = read_checkpoint(checkpoint)
    diam_mean = float(diameter) if diameter is not None else read.diam_mean
    if diam_mean is None or not diam_mean > 0:
        raise ZooError(f"{checkpoint}: the checkpoint has no diam_mean; give the diameter the "
                       "network was trained at (Cellpose: 30 for cyto models, 17 for nuclei)")
    net = CPNet(read.config)
    net.load_state_dict(read.state)
    size = read_size_model(size_model, style_dim=read.config.style_dim) if size_model else None
    if size_model is not None:
        fitted_at = size_model_diameter(size_model)
        if abs(fitted_at - diam_mean) > 1e-3 * diam_mean:
            # cellpose's SizeModel predicts around its own diam_mean; ours around the net's
            size = SizeRegressor(size.weight, size.bias + float(np.log(fitted_at / diam_mean)),
                                 size.floor)
    return SegmentationModel(net=net.eval(), diam_mean=diam_mean, size=size,
                             diam_labels=read.diam_labels, layout="cellpose")


def lineage_of(checkpoint: str | Path, size_model: str | Path | None,
               model: SegmentationModel) -> Lineage:
    """The ``Lineage`` record of an import: source files with sha256, channel convention."""
    files = [SourceFile(name=Path(checkpoint).name, sha256=sha256_file(checkpoint),
                        size=Path(checkpoint).stat().st_size, role="weights")]
    if size_model is not None:
        files.append(SourceFile(name=Path(size_model).name, sha256=sha256_file(size_model),
                                size=Path(size_model).stat().st_size, role="size_model"))
    notes: dict[str, str | float | int] = {
        "nbase": " ".join(str(c) for c in model.config.channels)}
    if model.diam_labels is not None:
        notes["diam_labels"] = round(model.diam_labels, 4)
    return Lineage(format=FORMAT, files=files, channels=list(CHANNELS), notes=notes)


def import_checkpoint(
    registry,
    checkpoint: str | Path,
    *,
    name: str,
    diameter: float | None = None,
    size_model: str | Path | None = None,
) -> ModelEntry:
    """Import a cellpose checkpoint into ``registry``'s top layer (the user's zoo) as ``name``.

    Everything is read and checked first; the safetensors file and the entry are then
    written together (``zoo.userzoo.register_files``), so a refused file installs nothing.

    Returns:
        The new entry (kind ``user``, ``lineage`` with the source sha256s and Cellpose's
        channel convention).
    """
    from zoo.userzoo import check_target, register_files

    check_target(registry, name)
    model = load_model(checkpoint, diameter=diameter, size_model=size_model)
    lineage = lineage_of(checkpoint, size_model, model)
    widths = "-".join(str(c) for c in model.config.channels[1:])
    description = (f"Imported from the Cellpose checkpoint {Path(checkpoint).name} "
                   f"(CPnet {widths}, diam_mean {model.diam_mean:g})"
                   + (" with its size model." if size_model else "."))
    with tempfile.TemporaryDirectory(prefix="cellzoo-import-") as tmp:
        weights = model.save(Path(tmp) / f"{name}.safetensors")
        entry = register_files(registry, name=name,
                               files={f"weights/{name}.safetensors": weights}, fields={
            "description": description, "config": model.config.to_dict(),
            "channels": model.config.in_channels, "axes": "cyx", "diameter": model.diam_mean,
            "flow_params": model.flow_params, "lineage": lineage,
        })
    log.info("imported %s as %s", checkpoint, entry.ref)
    return entry
