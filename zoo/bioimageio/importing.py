"""``read_package`` and ``import_package``: a bioimage.io package back into the user's zoo.

Nothing is trusted before it is checked, and nothing is installed before every check
passes:

1. the zip's member names are safe (``PackageArchive``);
2. it holds an ``rdf.yaml`` (or ``bioimageio.yaml``) describing a ``model`` in spec 0.5;
3. every file the rdf pins (weights, attachments, test tensors) is there with its sha256;
4. ``config.cellzoo`` names the model's safetensors weights, themselves a pinned attachment;
5. those weights load (safetensors: no code runs) into the declared architecture and, on
   the package's own test input, reproduce its test outputs.

Then the files are copied into the user's zoo and the entry registered
(``zoo.userzoo.register_files``).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from zoo.bioimageio import rdf as spec
from zoo.bioimageio.archive import PackageArchive
from zoo.errors import PackageError, ZooError
from zoo.manifest import ModelEntry, check_name

log = logging.getLogger(__name__)

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: bioimage.io's default reproducibility tolerances (absolute and relative).
TOLERANCE = 1e-3
_RDF_LIMIT = 1 << 20


@dataclass(frozen=True)
class Package:
    """A checked package: its rdf, the cellzoo metadata, and the verified member files.

    Attributes:
        path: the zip file.
        rdf: the parsed ``rdf.yaml``.
        cellzoo: its validated ``config.cellzoo``.
        files: member name → sha256, for every file the rdf pins (all verified).
    """

    path: Path
    rdf: dict[str, Any]
    cellzoo: spec.CellzooConfig
    files: dict[str, str]


def read_package(path: str | Path) -> Package:
    """Open and check the package at ``path`` (steps 1-4 of the module docstring).

    Raises:
        PackageError: in one line, naming what is wrong.
    """
    path = Path(path)
    with PackageArchive(path) as archive:
        rdf_name = next((n for n in RDF_NAMES if n in archive), None)
        rdf_name = rdf_name or next((n for n in archive.names if "/" not in n
                                     and n.endswith(".bioimageio.yaml")), None)
        if rdf_name is None:
            raise PackageError(f"{path}: no rdf.yaml or bioimageio.yaml at the top of the package")
        rdf = _load_rdf(archive.read(rdf_name, limit=_RDF_LIMIT), where=f"{path}:{rdf_name}")
        pins = _pinned_files(rdf, where=str(path))
        for name, digest in pins.items():
            if name not in archive:
                raise PackageError(f"{path}: {name!r} is named in {rdf_name} but missing")
            actual = archive.sha256(name)
            if actual != digest:
                raise PackageError(f"{path}: {name}: sha256 {actual} != pinned {digest}")
        cellzoo = spec.parse_cellzoo(rdf, where=str(path))
        for label, ref in (("weights", cellzoo.weights), ("style_bank", cellzoo.style_bank)):
            if ref is not None and pins.get(ref.source) != ref.sha256:
                raise PackageError(f"{path}: config.cellzoo.{label} {ref.source!r} is not a "
                                   "pinned attachment with the same sha256")
        if not cellzoo.weights.source.endswith(".safetensors"):
            raise PackageError(f"{path}: config.cellzoo.weights {cellzoo.weights.source!r} "
                               "is not a .safetensors file")
    return Package(path=path, rdf=rdf, cellzoo=cellzoo, files=pins)


def _load_rdf(text: bytes, *, where: str) -> dict[str, Any]:
    try:
        rdf = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PackageError(f"{where}: invalid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(rdf, dict):
        raise PackageError(f"{where}: expected a mapping, got {type(rdf).__name__}")
    if rdf.get("type") != "model":
        raise PackageError(f"{where}: type {rdf.get('type')!r} is not a model")
    version = str(rdf.get("format_version", ""))
    if not version.startswith("0.5."):
        raise PackageError(f"{where}: format_version {version!r} is not supported (0.5.x)")
    return rdf


def _pinned_files(rdf: dict[str, Any], *, where: str) -> dict[str, str]:
    """member name → sha256 of every weights file, attachment and test tensor of ``rdf``."""
    refs: list[Any] = [w for w in (rdf.get("weights") or {}).values() if w]
    refs += list(rdf.get("attachments") or [])
    refs += [t.get("test_tensor") for key in ("inputs", "outputs") for t in rdf.get(key) or []
             if isinstance(t, dict)]
    pins: dict[str, str] = {}
    for ref in refs:
        if not isinstance(ref, dict) or not isinstance(ref.get("source"), str):
            raise PackageError(f"{where}: a file entry without a source: {str(ref)[:80]}")
        source, digest = ref["source"], ref.get("sha256")
        if "://" in source:
            raise PackageError(f"{where}: {source!r} is remote; a package must carry its files")
        if not isinstance(digest, str):
            raise PackageError(f"{where}: {source!r} has no sha256")
        pins[source.removeprefix("./")] = digest.lower()
    return pins


def import_package(registry, path: str | Path, *, name: str, force: bool = False) -> ModelEntry:
    """Bring the cellzoo package at ``path`` into ``registry``'s user zoo as model ``name``.

    Args:
        registry: the registry whose top layer (the user's zoo) receives the model.
        path: the package zip.
        name: the model's name in the zoo.
        force: replace a user model of the same name.

    Raises:
        PackageError: the package fails a check (nothing is installed).
        ZooError: ``name`` is taken (by a shipped model, or a user model without ``force``).
    """
    from zoo.userzoo import check_target, register_files

    check_name(name)
    check_target(registry, name, replace=force)
    package = read_package(path)
    config = package.cellzoo
    with tempfile.TemporaryDirectory(prefix="cellzoo-import-") as tmp, \
            PackageArchive(package.path) as archive:
        staging = Path(tmp)
        weights = archive.extract(config.weights.source, staging / "weights.safetensors")
        bank = (archive.extract(config.style_bank.source, staging / "style_bank.safetensors")
                if config.style_bank else None)
        model = _load_checked(weights, package, archive)
        if bank is not None:
            _check_bank(bank, package)
        files = {f"weights/{name}.safetensors": weights}
        if bank is not None:
            files[f"weights/{name}.style_bank.safetensors"] = bank
        entry = register_files(registry, name=name, files=files, fields={
            "kind": "user",
            "description": _description(package),
            "config": model.config.to_dict(),
            "channels": model.config.in_channels,
            "diameter": model.diam_mean,
            "flow_params": model.flow_params,
            "weights": f"weights/{name}.safetensors",
            "style_bank": f"weights/{name}.style_bank.safetensors" if bank else None,
            "training_data": config.training_data,
            "metrics": config.metrics,
            "license": package.rdf.get("license") if isinstance(package.rdf.get("license"), str)
            else config.license,
        })
    log.info("imported %s from %s", entry.ref, package.path)
    return entry


def _description(package: Package) -> str:
    config = package.cellzoo
    what = config.description.rstrip(".") + ". " if config.description else ""
    return (f"{what}Imported from bioimage.io package {package.path.name} "
            f"(exported from {config.source}, {config.kind}).")


def _load_checked(weights: Path, package: Package, archive: PackageArchive):
    """The model in ``weights``, checked against the declared net and the test tensors."""
    from zoo.model import SegmentationModel

    config = package.cellzoo
    try:
        model = SegmentationModel.load(weights)
    except ZooError as error:
        raise PackageError(f"{package.path}: {config.weights.source}: {error}") from None
    declared = config.net.model_dump()
    actual = {"architecture": model.arch, **model.config.to_dict()}
    actual["channels"] = list(actual["channels"])
    if declared != actual:
        raise PackageError(f"{package.path}: the weights hold {actual}, config.cellzoo.net "
                           f"declares {declared}")
    _reproduce(model, package, archive)
    return model


def _test_array(archive: PackageArchive, name: str, where: Path) -> np.ndarray:
    import io

    try:
        return np.load(io.BytesIO(archive.read(name, limit=256 << 20)), allow_pickle=False)
    except (ValueError, OSError) as error:
        raise PackageError(f"{where}: {name}: not a readable .npy file ({error})") from None


def _reproduce(model, package: Package, archive: PackageArchive) -> None:
    """The weights' outputs on the test input must match the test outputs (bioimage.io's
    rule: ``|actual - expected| <= atol + rtol * |expected|`` everywhere)."""
    import torch

    from zoo.preprocess import normalize

    tensors = {t.get("id"): t for key in ("inputs", "outputs") for t in package.rdf[key]}
    if set(tensors) != {spec.INPUT_ID, *spec.OUTPUT_IDS}:
        raise PackageError(f"{package.path}: tensors {sorted(map(str, tensors))} are not "
                           f"{[spec.INPUT_ID, *spec.OUTPUT_IDS]}")
    arrays = {key: _test_array(archive, t["test_tensor"]["source"], package.path)
              for key, t in tensors.items()}
    image = arrays[spec.INPUT_ID]
    if image.ndim != 4 or image.shape[1] != model.config.in_channels:
        raise PackageError(f"{package.path}: test input shape {image.shape} does not fit "
                           f"{model.config.in_channels} input channels")
    batch = np.stack([normalize(np.asarray(x, np.float32), *package.cellzoo.percentiles)
                      for x in image])
    with torch.inference_mode():
        flows, style = model.net.eval()(torch.from_numpy(batch))
    for key, got in (("flows", flows.numpy()), ("style", style.numpy())):
        expected = arrays[key]
        if got.shape != expected.shape:
            raise PackageError(f"{package.path}: test output {key} has shape {expected.shape}, "
                               f"the weights give {got.shape}")
        excess = np.abs(got - expected) - (TOLERANCE + TOLERANCE * np.abs(expected))
        if np.any(excess > 0):
            raise PackageError(
                f"{package.path}: the cellzoo weights do not reproduce the test output {key} "
                f"({int(np.sum(excess > 0))} values off, max |diff| "
                f"{float(np.abs(got - expected).max()):.3g})")


def _check_bank(path: Path, package: Package) -> None:
    from zoo.cluster import StyleBank

    try:
        StyleBank.load(path)
    except (ZooError, ValueError, OSError) as error:
        raise PackageError(f"{package.path}: style bank "
                           f"{package.cellzoo.style_bank.source}: {error}") from None
