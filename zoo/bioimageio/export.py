"""``export_package``: a zoo model as a bioimage.io model package (spec 0.5, a zip).

Steps: resolve the model's verified files; draw a synthetic sample at the model's diameter
(``zoo.data.synthetic``), run the network on it for the test tensors; export ONNX
(``zoo.backends.export_onnx``) and TorchScript (``torch.jit.script``), checking that each
reproduces the network on the sample; draw the cover (``zoo.viz``); write the README and
``rdf.yaml`` (``zoo.bioimageio.rdf``); zip it all atomically.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
import yaml

from zoo.bioimageio import rdf as spec
from zoo.errors import BackendError, ZooError
from zoo.files import sha256_file
from zoo.manifest import ModelEntry
from zoo.model import NET_FLOW_SCALE, SegmentationModel
from zoo.params import PredictParams
from zoo.registry import InstalledModel, Registry

log = logging.getLogger(__name__)

#: The largest difference allowed between an exported format and the torch network.
EXPORT_TOLERANCE = 1e-4
_DEFAULT_STYLE = "tissue"


@dataclass(frozen=True)
class ExportOptions:
    """How a package is written.

    Attributes:
        authors: names listed as the package's authors.
        license: SPDX id; default the model's own license, else ``BSD-3-Clause``.
        style: synthetic style of the test sample (``zoo.data.synthetic.STYLES``); default
            the model's cluster name when it is a style, else ``tissue``.
        seed: seed of the test sample.
        tile: largest side of the test tensors, in pixels.
    """

    authors: tuple[str, ...] = ("cellzoo",)
    license: str | None = None
    style: str | None = None
    seed: int = 0
    tile: int = 128


@dataclass(frozen=True)
class Sample:
    """The test tensors: raw input ``(1, C, Y, X)``, ``flows`` ``(1, 3, Y, X)`` and
    ``style`` ``(1, S)``, all float32, plus the masks drawn on the cover."""

    image: np.ndarray
    flows: np.ndarray
    style: np.ndarray
    labels: np.ndarray


def export_package(
    registry: Registry, ref: str, out: str | Path, *, options: ExportOptions | None = None
) -> Path:
    """Write model ``ref`` of ``registry`` to the bioimage.io package ``out`` (a ``.zip``).

    Raises:
        UnknownModelError: no such model.
        ZooError: the model's weights are not safetensors, or an export does not reproduce
            the network.
    """
    options = options or ExportOptions()
    installed = registry.resolve(ref, verify=True)
    entry = installed.entry
    if installed.weights.suffix != ".safetensors":
        raise ZooError(f"{entry.ref}: only safetensors models can be exported")
    model = SegmentationModel.load(installed.weights)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cellzoo-export-") as tmp:
        staging = Path(tmp)
        sample = make_sample(model, entry, options)
        _write_weights(model, sample, staging)
        members = _write_files(installed, model, sample, staging, options)
        _zip(staging, members, out)
    log.info("exported %s to %s", entry.ref, out)
    return out


def make_sample(model: SegmentationModel, entry: ModelEntry, options: ExportOptions) -> Sample:
    """A synthetic image rescaled to the model's diameter, and the network's outputs on it."""
    from zoo.data.synthetic import STYLES, generate
    from zoo.flows import flows_to_masks
    from zoo.preprocess import normalize, resize, scaled_shape, select_channels

    cluster = entry.cluster.name if entry.cluster else None
    style = options.style or (cluster if cluster in STYLES else _DEFAULT_STYLE)
    drawn = generate(style, seed=options.seed)
    cyto, nucleus = drawn.channels
    stack = select_channels(drawn.image, cyto, nucleus, n_in=model.config.in_channels)
    if drawn.diameter > 0:
        stack = resize(stack, scaled_shape(stack.shape[1:], model.diam_mean / drawn.diameter))
    divisor = model.config.divisor
    side = [max(2 * divisor, min(options.tile, n) // divisor * divisor) for n in stack.shape[1:]]
    top, left = ((n - s) // 2 for n, s in zip(stack.shape[1:], side))
    raw = np.ascontiguousarray(stack[:, top : top + side[0], left : left + side[1]])
    if raw.shape[1:] != tuple(side):
        raise ZooError(f"test sample {raw.shape} is smaller than {side}: lower the diameter")
    normalised = normalize(raw, *PredictParams().percentiles)
    flows, style_vector = _run(model.net, normalised[None])
    labels = flows_to_masks(flows[0, :2] / NET_FLOW_SCALE, flows[0, 2], model.flow_params)
    return Sample(raw[None].astype(np.float32), flows, style_vector, labels)


@torch.inference_mode()
def _run(net: torch.nn.Module, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    net = copy.deepcopy(net).cpu().eval()
    outputs, style = net(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    return outputs.numpy(), style.numpy()


def _normalised(sample: Sample) -> np.ndarray:
    from zoo.preprocess import normalize

    return normalize(sample.image[0], *PredictParams().percentiles)[None]


def _write_weights(model: SegmentationModel, sample: Sample, staging: Path) -> None:
    """ONNX and TorchScript weights, each checked against the torch network."""
    from zoo.backends import export_onnx

    batch = _normalised(sample)
    export_onnx(model.net, staging / spec.ONNX_FILE)
    with warnings.catch_warnings():  # TorchScript is deprecated in torch, not in bioimage.io
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(copy.deepcopy(model.net).cpu().eval())
        torch.jit.save(scripted, str(staging / spec.TORCHSCRIPT_FILE))
        loaded = torch.jit.load(str(staging / spec.TORCHSCRIPT_FILE), map_location="cpu")
    with torch.inference_mode():
        outputs, style = loaded(torch.from_numpy(batch))
    _check("TorchScript", (outputs.numpy(), style.numpy()), sample)
    try:
        import onnxruntime
    except ImportError:
        log.info("onnxruntime is not installed: the ONNX export is not checked")
        return
    session = onnxruntime.InferenceSession(str(staging / spec.ONNX_FILE),
                                           providers=["CPUExecutionProvider"])
    _check("ONNX", tuple(session.run(["outputs", "style"], {"image": batch})), sample)


def _check(name: str, got: tuple[np.ndarray, np.ndarray], sample: Sample) -> None:
    diff = max(float(np.abs(got[0] - sample.flows).max()),
               float(np.abs(got[1] - sample.style).max()))
    if diff > EXPORT_TOLERANCE:
        raise BackendError(f"the {name} export differs from the network by {diff:.3g}")


def _write_files(installed: InstalledModel, model: SegmentationModel, sample: Sample,
                 staging: Path, options: ExportOptions) -> list[str]:
    """Test tensors, attachments, cover, README and rdf.yaml; returns the member names."""
    from zoo.bioimageio.document import cover, readme
    from zoo.io import write_png

    entry = installed.entry
    arrays = {spec.TEST_FILES["image"]: sample.image, spec.TEST_FILES["flows"]: sample.flows,
              spec.TEST_FILES["style"]: sample.style}
    for name, array in arrays.items():
        np.save(staging / name, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    samples = {spec.SAMPLE_FILES[key]: array[0] for key, array in
               (("image", sample.image), ("flows", sample.flows), ("style", sample.style))}
    for name, array in samples.items():
        array = np.ascontiguousarray(array[None] if array.ndim == 1 else array, np.float32)
        tifffile.imwrite(staging / name, array, photometric="minisblack")
    attachments = {installed.weights.name: installed.weights}
    if installed.style_bank is not None:
        attachments[installed.style_bank.name] = installed.style_bank
    if len(attachments) != 1 + (installed.style_bank is not None):
        raise ZooError(f"{entry.ref}: weights and style bank share the name {installed.weights.name}")
    for name, path in attachments.items():
        (staging / name).write_bytes(path.read_bytes())
    write_png(staging / spec.COVER_FILE, cover(sample.image[0], sample.labels))
    (staging / spec.DOC_FILE).write_text(readme(entry, model), encoding="utf-8")
    members = [*arrays, *samples, *attachments, spec.ONNX_FILE, spec.TORCHSCRIPT_FILE, spec.COVER_FILE,
               spec.DOC_FILE]
    digests = {name: sha256_file(staging / name) for name in members}
    rdf = build_rdf(entry, model, digests=digests, attachments=list(attachments),
                    options=options)
    text = yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True, width=100)
    (staging / spec.RDF_FILE).write_text(text, encoding="utf-8")
    return [spec.RDF_FILE, *members]


def build_rdf(entry: ModelEntry, model: SegmentationModel, *, digests: dict[str, str],
              attachments: list[str], options: ExportOptions) -> dict[str, Any]:
    """The ``rdf.yaml`` content; ``digests`` maps every member file to its sha256."""
    config = model.config
    percentiles = PredictParams().percentiles
    inputs, outputs = spec.tensors(n_channels=config.in_channels, divisor=config.divisor,
                                   style_dim=config.style_dim, percentiles=percentiles,
                                   digests=digests)
    weights_name = attachments[0]
    bank = attachments[1] if len(attachments) > 1 else None
    cellzoo = {
        "format": spec.CELLZOO_FORMAT,
        "source": entry.ref,
        "kind": entry.kind,
        "description": entry.description,
        "net": {"architecture": model.arch, **config.to_dict()},
        "diameter": model.diam_mean,
        "channels": spec.channel_names(config.in_channels),
        "flow_params": asdict(model.flow_params),
        "flow_scale": NET_FLOW_SCALE,
        "percentiles": list(percentiles),
        "weights": {"source": weights_name, "sha256": digests[weights_name]},
        "style_bank": {"source": bank, "sha256": digests[bank]} if bank else None,
        "size_regressor": model.size is not None,
        "cluster": entry.cluster.model_dump(exclude={"centroid"}) if entry.cluster else None,
        "parent": entry.parent,
        "training_data": entry.training_data.model_dump() if entry.training_data else None,
        "metrics": dict(entry.metrics),
        "license": entry.license,
    }
    return {
        "format_version": spec.FORMAT_VERSION,
        "type": "model",
        "name": f"cellzoo {entry.name.replace('.', '-')}",
        "description": _description(entry),
        "version": entry.version,
        "authors": [{"name": name} for name in options.authors],
        "cite": [{"text": text, "doi": doi} for text, doi in spec.CITATIONS],
        "license": options.license or entry.license or "BSD-3-Clause",
        "tags": list(spec.TAGS) + ([entry.cluster.name] if entry.cluster else []),
        "documentation": {"source": spec.DOC_FILE, "sha256": digests[spec.DOC_FILE]},
        "covers": [{"source": spec.COVER_FILE, "sha256": digests[spec.COVER_FILE]}],
        "inputs": inputs,
        "outputs": outputs,
        "weights": {
            # exported through TorchScript (torch.onnx's TorchScript-based exporter)
            "onnx": {"source": spec.ONNX_FILE, "sha256": digests[spec.ONNX_FILE],
                     "opset_version": _onnx_opset(), "parent": "torchscript"},
            "torchscript": {"source": spec.TORCHSCRIPT_FILE,
                            "sha256": digests[spec.TORCHSCRIPT_FILE],
                            "pytorch_version": torch.__version__.split("+")[0]},
        },
        "attachments": [{"source": name, "sha256": digests[name]} for name in attachments],
        "config": {"cellzoo": {k: v for k, v in cellzoo.items() if v is not None}},
    }


def _description(entry: ModelEntry) -> str:
    text = entry.description or f"cellzoo {entry.kind} model {entry.name}"
    text = f"{text.rstrip('.')}. Cellpose-style flows and cell probability (cellzoo {entry.ref})."
    return text[:500]


def _onnx_opset() -> int:
    from zoo.backends import ONNX_OPSET

    return ONNX_OPSET


def _zip(staging: Path, members: list[str], out: Path) -> None:
    """Zip ``members`` of ``staging`` into ``out`` atomically (temp file + rename)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in members:
                archive.write(staging / name, arcname=name)
        os.replace(tmp_name, out)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)

