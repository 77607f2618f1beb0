"""Register a user's own models in a registry's top layer (kind ``user``): models trained by
``zoo train`` and models imported from other formats.

``register_files`` is the one way in: it copies the files beside the top layer's
manifest, builds and validates the entry with their sha256 pins, and only then moves the
files into place and writes the manifest. A failure at any step leaves the zoo as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.files import inside, sha256_file
from zoo.manifest import FileSpec, ModelEntry, TrainingData, check_name
from zoo.model import SegmentationModel
from zoo.registry import Registry

USER_VERSION = "1.0.0"


def check_target(registry: Registry, name: str, *, replace: bool = True) -> Path:
    """The folder a user model ``name`` goes into; refuses a name held by another kind of
    model, or (unless ``replace``) by another user model."""
    check_name(name)
    if registry.source_dir is None:
        raise ZooError("this registry has no local directory to save a model into")
    if name in registry:
        kind = registry.entry(name).kind
        if kind != "user":
            raise ZooError(f"{name!r} is a shipped {kind} model; choose another name")
        if not replace:
            raise ZooError(
                f"{name!r} is already in your zoo; choose another name or use --force to replace it"
            )
    return registry.source_dir


def register_files(
    registry: Registry,
    *,
    name: str,
    files: Mapping[str, Path],
    fields: Mapping[str, Any],
    version: str = USER_VERSION,
) -> ModelEntry:
    """Copy ``files`` into the registry's top layer and register the ``user`` entry of them.

    Args:
        registry: its top layer receives the files and the entry.
        name: the model name.
        files: path in the entry (relative to the top layer's folder) → local file to copy.
        fields: the other ``ModelEntry`` fields (``kind`` defaults to ``user``; ``files``,
            ``name`` and ``version`` are set here); None values are left out.
        version: the entry's version.

    Returns:
        The registered entry, its files pinned by sha256 and size.
    """
    root = check_target(registry, name)
    targets = {rel: inside(root, rel) for rel in files}
    staged: dict[Path, Path] = {}
    try:
        for rel, source in files.items():
            targets[rel].parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{targets[rel].name}.", dir=targets[rel].parent)
            os.close(fd)
            shutil.copyfile(source, tmp)
            staged[Path(tmp)] = targets[rel]
        specs = [FileSpec(path=rel, sha256=sha256_file(tmp), size=tmp.stat().st_size)
                 for (rel, _), tmp in zip(files.items(), staged)]
        values = {"kind": "user", **{k: v for k, v in fields.items() if v is not None}}
        entry = ModelEntry.model_validate(
            {**values, "name": name, "version": version, "files": specs}
        )
        for tmp, target in staged.items():
            os.replace(tmp, target)
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
    registry.update(entry)
    return entry


def register_model(
    registry: Registry,
    model: SegmentationModel,
    *,
    name: str,
    parent: str | None,
    n_images: int,
    source: str,
) -> ModelEntry:
    """Save ``model`` beside the registry's manifest (``weights/<name>.safetensors``) and add
    its entry; refuses to overwrite a model of another kind."""
    check_target(registry, name)
    parent_ref = registry.entry(parent).ref if parent else None
    description = f"Trained by `zoo train` on {source}" + (
        f", fine-tuned from {parent_ref}." if parent_ref else "."
    )
    with tempfile.TemporaryDirectory(prefix="cellzoo-train-") as tmp:
        weights = model.save(Path(tmp) / f"{name}.safetensors")
        return register_files(registry, name=name, files={f"weights/{name}.safetensors": weights},
                              fields={
            "description": description, "config": model.config.to_dict(),
            "channels": model.config.in_channels, "axes": "cyx", "diameter": model.diam_mean,
            "flow_params": model.flow_params,
            "training_data": TrainingData(summary=f"user images from {source}", images=n_images),
            "parent": parent_ref,
        })
