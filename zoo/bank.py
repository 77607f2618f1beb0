"""Style banks for routing among a user's own models.

Two sources:

- ``build_bank``: a few reference images per model, all embedded by one embedding model
  (``zoo.embedding.embed_many``, the style pass that routing uses), one cluster per model:
  cluster ``i`` is named after model ``i`` and routes to it. ``zoo bank build`` is its CLI.
- ``import_style_choice``: Cellpose 2.x's ``style_choice.npy`` (``train_styles``,
  ``leiden_labels``, ``label_models``), read without executing pickled code.

Both return a ``StyleBank`` (``zoo.cluster``) and ``load_bank`` reads one back. The
out-of-distribution threshold is the 99th percentile of the references' leave-one-out
nearest-neighbour distances, as for the shipped bank (``build_style_bank``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.cluster import StyleBank, centroids_of, nearest_other_distances, normalize_styles
from zoo.errors import InvalidParamsError, ZooError
from zoo.importers.npy import load_npy_dict
from zoo.manifest import check_name
from zoo.params import EmbedParams, PredictParams
from zoo.stylemap import pca_layout

log = logging.getLogger(__name__)

THUMBNAIL = 64
OOD_PERCENTILE = 99.0
MAX_K = 5  # Cellpose 2.0's 5-nearest-neighbour vote
STYLE_CHOICE_KEYS = ("train_styles", "leiden_labels", "label_models")


def load_bank(path: str | Path) -> StyleBank:
    """The style bank saved at ``path`` (``StyleBank.load``)."""
    return StyleBank.load(path)


def reference_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (``zoo.io.IMAGE_SUFFIXES``, not hidden), sorted."""
    from zoo.io import IMAGE_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise ZooError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ZooError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


@dataclass(frozen=True)
class Reference:
    """One reference image of one model."""

    model: str
    path: Path


def thumbnail(image: np.ndarray, size: int = THUMBNAIL) -> np.ndarray:
    """``(size, size, 3)`` uint8: the central square of ``zoo.viz.composite(image)``, resized."""
    from zoo.preprocess import resize
    from zoo.viz import composite

    rgb = composite(image)
    side = min(rgb.shape[:2])
    top, left = (rgb.shape[0] - side) // 2, (rgb.shape[1] - side) // 2
    square = np.ascontiguousarray(rgb[top:top + side, left:left + side].transpose(2, 0, 1))
    small = resize(square, (size, size)).transpose(1, 2, 0)
    return np.clip(np.round(small * 255), 0, 255).astype(np.uint8)


def ood_threshold(vectors: np.ndarray) -> float:
    """The 99th percentile of the leave-one-out nearest-neighbour distances."""
    return float(np.percentile(nearest_other_distances(vectors), OOD_PERCENTILE))


def build_bank(
    embed_images: Callable[[list[np.ndarray]], np.ndarray],
    refs: Mapping[str, Sequence[str | Path]],
    *,
    embedding: Mapping[str, Any],
    read: Callable[[Path], np.ndarray] | None = None,
) -> StyleBank:
    """A bank with one cluster per model, from that model's reference images.

    Args:
        embed_images: images → ``(N, style_dim)`` styles, one call for all references
            (``embedder(predictor, params)`` wraps ``zoo.embedding.embed_many``).
        refs: model name → its reference image files (at least one each, two models or
            more, at least two images in all).
        embedding: what ``embed_images`` is (saved as the bank's ``embedding``; at least
            ``model``).
        read: image reader; default ``zoo.io.read_image``.

    Returns:
        A bank whose cluster ``i`` is named after model ``i`` (in ``refs`` order) and routes to
        it; ``refs`` are ``<model>/<file name>``; thumbnails, a 2-D layout
        (``zoo.stylemap.pca_layout``) and the OOD
        threshold are filled in; ``k`` is 5, or fewer when a model has fewer references.
    """
    from zoo.io import read_image

    read = read or read_image
    references = _references(refs)
    images = [read(ref.path) for ref in references]
    styles = normalize_styles(embed_images(images))
    if len(styles) != len(references):
        raise ZooError(f"the embedding gave {len(styles)} styles for {len(references)} images")
    models = list(refs)
    labels = np.array([models.index(ref.model) for ref in references], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(models))
    log.info("bank of %d references for %d models", len(references), len(models))
    return StyleBank(
        vectors=styles, labels=labels, names=models,
        centroids=centroids_of(styles, labels, len(models)),
        sources=[ref.model for ref in references],
        specialists=dict(enumerate(models)),
        ood_threshold=ood_threshold(styles),
        k=int(min(MAX_K, counts.min())),
        refs=[f"{ref.model}/{ref.path.name}" for ref in references],
        thumbnails=np.stack([thumbnail(image) for image in images]),
        map_xy=pca_layout(styles),
        embedding=dict(embedding),
    )


def _references(refs: Mapping[str, Sequence[str | Path]]) -> list[Reference]:
    if len(refs) < 2:
        raise InvalidParamsError(f"a bank routes among 2 or more models, got {list(refs)}")
    references = []
    for model, paths in refs.items():
        check_name(model)
        if not paths:
            raise InvalidParamsError(f"model {model!r} has no reference images")
        references += [Reference(model, Path(p)) for p in paths]
    return references


def embedder(predictor, params: PredictParams | None = None,
             embed: EmbedParams | None = None):
    """``(embed_images, settings)`` for ``build_bank``: the router's style pass
    (``zoo.embedding.embed_many``) by ``predictor``, and the ``EmbedParams`` it used.

    This is the one place a bank's styles are computed; routing embeds a query with the
    same function and the settings the bank records (``embedding``: model + ``EmbedParams``).
    """
    from zoo.embedding import embed_many

    params, embed = params or PredictParams(), embed or EmbedParams()

    def embed_images(images: list[np.ndarray]) -> np.ndarray:
        styles, _ = embed_many(predictor, images, params, embed)
        return styles

    return embed_images, embed.to_dict()


# ---- Cellpose 2.x style_choice.npy ----------------------------------------------------------


def import_style_choice(
    path: str | Path,
    *,
    embed_model: str,
    rename: Mapping[str, str] | None = None,
) -> StyleBank:
    """Cellpose 2.x's ``style_choice.npy`` as a ``StyleBank``.

    Its ``train_styles`` ``(N, 256)`` are Cellpose styles of reference images (the 'general'
    model's), ``leiden_labels`` ``(N,)`` their Leiden clusters and ``label_models[c]`` the
    model cluster ``c`` routes to. Cluster ids are renumbered to the ones in use; model names
    are lowercased (cellzoo names are lowercase) unless ``rename`` maps them.

    Args:
        path: the ``.npy`` file (a dict saved with ``np.save``; no code is executed).
        embed_model: the zoo name of the imported network whose styles these are (the
            bank's ``embedding.model``; routing must embed queries with it).
        rename: Cellpose model name → zoo model name.

    Raises:
        ZooError: unreadable or inconsistent file, or a model name that is not valid here.
    """
    data = load_npy_dict(path, STYLE_CHOICE_KEYS)
    try:
        styles = np.asarray(data["train_styles"], dtype=np.float32)
        labels = np.asarray(data["leiden_labels"]).astype(np.int64).reshape(-1)
        models = [str(m) for m in np.asarray(data["label_models"], dtype=object).reshape(-1)]
    except (TypeError, ValueError) as error:
        raise ZooError(f"{path}: style_choice values have the wrong types ({error})") from None
    if styles.ndim != 2 or len(styles) != len(labels) or len(styles) < 2:
        raise ZooError(f"{path}: train_styles {styles.shape} and leiden_labels "
                       f"{labels.shape} do not match")
    if labels.min() < 0 or labels.max() >= len(models):
        raise ZooError(f"{path}: leiden_labels use clusters 0..{labels.max()} but there are "
                       f"{len(models)} label_models")
    used = np.unique(labels)
    renumber = np.full(len(models), -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    labels = renumber[labels]
    rename = dict(rename or {})
    targets = [check_name(rename.get(models[c], models[c].lower())) for c in used]
    names = _unique(targets)
    vectors = normalize_styles(styles)
    return StyleBank(
        vectors=vectors, labels=labels, names=names,
        centroids=centroids_of(vectors, labels, len(used)),
        sources=[names[label] for label in labels],
        specialists=dict(enumerate(targets)),
        ood_threshold=ood_threshold(vectors),
        k=int(min(MAX_K, len(vectors))),
        map_xy=pca_layout(vectors),
        embedding={"model": embed_model, "source": "cellpose style_choice.npy",
                   "cellpose_models": [models[c] for c in used]},
    )


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        candidate, suffix = name, 2
        while candidate in out:
            candidate, suffix = f"{name}-{suffix}", suffix + 1
        out.append(candidate)
    return out
