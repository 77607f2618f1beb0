"""Register a model trained by a user in a registry's manifest (kind ``user``)."""

from __future__ import annotations

from zoo.errors import ZooError
from zoo.files import sha256_file
from zoo.manifest import FileSpec, ModelEntry, TrainingData, check_name
from zoo.model import SegmentationModel
from zoo.registry import Registry

USER_VERSION = "1.0.0"


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
    check_name(name)
    if registry.source_dir is None:
        raise ZooError("this registry has no local directory to save a model into")
    if name in registry and registry.entry(name).kind != "user":
        raise ZooError(f"{name!r} is a shipped {registry.entry(name).kind} model; choose another name")
    path = model.save(registry.source_dir / "weights" / f"{name}.safetensors")
    parent_ref = registry.entry(parent).ref if parent else None
    entry = ModelEntry(
        name=name, version=USER_VERSION, kind="user",
        description=f"Trained by `zoo train` on {source}" + (f", fine-tuned from {parent_ref}." if parent_ref else "."),
        config=model.config.to_dict(), channels=model.config.in_channels, axes="cyx",
        diameter=model.diam_mean, flow_params=model.flow_params,
        files=[FileSpec(path=path.relative_to(registry.source_dir).as_posix(),
                        sha256=sha256_file(path), size=path.stat().st_size)],
        training_data=TrainingData(summary=f"user images from {source}", images=n_images),
        parent=parent_ref,
    )
    registry.update(entry)
    return entry
