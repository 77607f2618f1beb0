"""Register a model trained or imported by a user in a registry's manifest (kind ``user``)."""

from __future__ import annotations

from zoo.errors import ZooError
from zoo.files import sha256_file
from zoo.manifest import FileSpec, Lineage, ModelEntry, TrainingData, check_name
from zoo.model import SegmentationModel
from zoo.registry import Registry

USER_VERSION = "1.0.0"


def register_model(
    registry: Registry,
    model: SegmentationModel,
    *,
    name: str,
    parent: str | None = None,
    n_images: int | None = None,
    source: str | None = None,
    description: str | None = None,
    lineage: Lineage | None = None,
) -> ModelEntry:
    """Save ``model`` beside the registry's manifest (``weights/<name>.safetensors``) and add
    its entry; refuses to overwrite a model of another kind.

    Args:
        registry: where the entry goes (its top layer: the user's zoo).
        model: the network and its metadata.
        name: the new model's name.
        parent: the registry model it was fine-tuned from, if any.
        n_images: how many images it was trained on (``zoo train``).
        source: what it was trained on (``zoo train``: the dataset path).
        description: the entry's description; default: says it was trained by ``zoo train``.
        lineage: for an imported model, the foreign files it came from.
    """
    check_name(name)
    if registry.source_dir is None:
        raise ZooError("this registry has no local directory to save a model into")
    if name in registry and registry.entry(name).kind != "user":
        raise ZooError(f"{name!r} is a shipped {registry.entry(name).kind} model; choose another name")
    parent_ref = registry.entry(parent).ref if parent else None
    if description is None:
        description = (f"Trained by `zoo train` on {source}"
                       + (f", fine-tuned from {parent_ref}." if parent_ref else "."))
    path = model.save(registry.source_dir / "weights" / f"{name}.safetensors")
    entry = ModelEntry(
        name=name, version=USER_VERSION, kind="user", description=description,
        config=model.config.to_dict(), channels=model.config.in_channels, axes="cyx",
        diameter=model.diam_mean, flow_params=model.flow_params,
        files=[FileSpec(path=path.relative_to(registry.source_dir).as_posix(),
                        sha256=sha256_file(path), size=path.stat().st_size)],
        training_data=(TrainingData(summary=f"user images from {source}", images=n_images)
                       if source is not None else None),
        parent=parent_ref, lineage=lineage,
    )
    registry.update(entry)
    return entry
