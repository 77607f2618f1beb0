"""Readers for real segmentation datasets: Cellpose folders, COCO JSON and TissueNet ``.npz``.

Every reader yields :class:`LabeledImage` records: a channels-last image, ``(Y, X)``
labels with ``0`` = background and ``1..N`` = cells (consecutive, uint16, or uint32 past
65535 cells), a name, and the ``(cyto, nucleus)`` channel indices to train on.
``iter_*`` functions check the dataset's layout when called (raising
:class:`~zoo.errors.DatasetError` at once) and read images lazily while iterating;
:func:`read_dataset` collects everything into a list.

Conventions (see each reader for details):

- **Cellpose folders**: ``NAME_img.tif`` or ``NAME.tif`` (also .tiff/.png/.jpg) pairs
  with ``NAME_masks.tif`` (or .tiff/.png) in the same folder, in sorted order. An image
  with no mask raises, listing every such image, unless ``skip_unlabeled=True``.
- **COCO** (LIVECell, EVICAN): polygons and RLE (uncompressed or compressed) are
  decoded here, without pycocotools, pixel-for-pixel as pycocotools decodes them.
  Crowd annotations (``iscrowd=1``) are skipped, so their pixels are background.
  Overlaps are removed as Cellpose 2.0 did for LIVECell (Pachitariu & Stringer 2022, Methods;
  ``remove_overlaps`` in cellpose ``paper/2.0/datasets.py``), see :func:`resolve_overlaps`.
- **TissueNet**: ``X[..., 0]`` is the nuclear stain and ``X[..., 1]`` the
  membrane/cytoplasm stain; ``y[..., 0]`` is whole-cell and ``y[..., 1]`` nuclear labels.
  Neither seed paper gives the array layout; this follows DeepCell's documentation
  (Mesmer input: channel 0 nuclear, 1 membrane) and the Cellpose 2.0 analysis code,
  which takes ``y[..., [0]]`` as "the cellular segmentations".
"""

from __future__ import annotations

import json
import logging
import math
import struct
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from zoo.errors import (
    DatasetError,
    InvalidImageError,
    InvalidLabelsError,
    InvalidParamsError,
    UnsupportedFormatError,
)
from zoo.io.decode import IMAGE_SUFFIXES, read_image
from zoo.io.labels import check_labels, relabel_sequential
from zoo.io.rle import rle_to_mask

logger = logging.getLogger(__name__)

DatasetFormat = Literal["cellpose", "coco", "tissuenet"]
Channels = tuple[int, int | None]

_MASK_SUFFIXES = (".tif", ".tiff", ".png")
_MASK_TAG = "_masks"
_IMAGE_TAG = "_img"
_SKIPPED_TAGS = ("_flows", "_outlines", "_seg")  # Cellpose side files, not images
_POLYGON_UPSAMPLE = 5  # pycocotools draws polygon outlines on a 5x finer grid
_TISSUENET_X_CHANNELS = {"nuclear": 0, "membrane": 1}
_TISSUENET_Y_CHANNELS = {"whole_cell": 0, "nuclear": 1}


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, eq=False)
class LabeledImage:
    """One training or evaluation sample.

    Attributes:
        image: ``(Y, X)`` or ``(Y, X, C)`` array, channels-last, dtype as stored.
        labels: ``(Y, X)`` uint16/uint32/int32 labels, 0 = background, 1..N = cells.
        name: sample name (file stem, or ``<npz stem>_<index>`` for TissueNet).
        channels: ``(cyto, nucleus)`` indices into the image's channels; ``nucleus`` is
            None when there is no nuclear channel.
    """

    image: np.ndarray
    labels: np.ndarray
    name: str
    channels: Channels = (0, None)

    def __post_init__(self) -> None:
        if self.image.ndim not in (2, 3):
            raise InvalidImageError(
                f"{self.name}: image must be 2-D or 3-D, got {self.image.shape}"
            )
        check_labels(self.labels, name=f"{self.name}: labels", ndim=2)
        if self.image.shape[:2] != self.labels.shape:
            raise DatasetError(
                f"{self.name}: image {self.image.shape} and labels {self.labels.shape} "
                "differ in (Y, X)"
            )
        n_channels = 1 if self.image.ndim == 2 else self.image.shape[2]
        _check_channels(self.channels, n_channels=n_channels, what=self.name)


@dataclass(frozen=True)
class CellposeFolderOptions:
    """How to read a Cellpose training folder.

    Attributes:
        channels: ``(cyto, nucleus)`` channel indices given to every multi-channel
            sample; single-channel ``(Y, X)`` images always get ``(0, None)``.
        skip_unlabeled: skip images without a ``_masks`` file (logging a warning) instead
            of raising :class:`~zoo.errors.DatasetError`.
    """

    channels: Channels = (0, None)
    skip_unlabeled: bool = False

    def __post_init__(self) -> None:
        _check_channels(self.channels, n_channels=None, what="CellposeFolderOptions")


@dataclass(frozen=True)
class CocoOptions:
    """How to read a COCO instance-segmentation JSON (LIVECell, EVICAN).

    Attributes:
        image_dir: folder (str or Path) that ``file_name`` is relative to; None looks
            beside the JSON, then in ``images/`` beside it.
        search_subfolders: also look for ``file_name``'s base name anywhere below the
            image folder(s), as LIVECell keeps images in per-cell-type subfolders
            (``livecell_train_val_images/A172/...``) while ``file_name`` has no folder.
        categories: category names to keep (case-insensitive, e.g. ``("cell",)`` for
            EVICAN); None keeps every category.
        overlap_threshold: drop an ROI when at least this fraction of its pixels is
            covered by other (kept) ROIs; in ``(0, 1]``, 0.75 as in Cellpose 2.0.
        channels: ``(cyto, nucleus)`` channel indices given to every sample.
    """

    image_dir: Path | None = None
    search_subfolders: bool = False
    categories: tuple[str, ...] | None = None
    overlap_threshold: float = 0.75
    channels: Channels = (0, None)

    def __post_init__(self) -> None:
        if self.image_dir is not None:
            object.__setattr__(self, "image_dir", Path(self.image_dir))
        if self.categories is not None and not isinstance(self.categories, str):
            object.__setattr__(self, "categories", tuple(self.categories))
        if not 0 < self.overlap_threshold <= 1:
            raise InvalidParamsError(
                f"overlap_threshold must be in (0, 1], got {self.overlap_threshold}"
            )
        if isinstance(self.categories, str):
            raise InvalidParamsError(
                f"categories must be a tuple of names, got {self.categories!r}"
            )
        _check_channels(self.channels, n_channels=None, what="CocoOptions")


@dataclass(frozen=True)
class TissueNetOptions:
    """How to read a TissueNet ``.npz`` split.

    Attributes:
        target: ``"whole_cell"`` (labels ``y[..., 0]``, channels ``(1, 0)``: membrane as
            cyto, nuclear as nucleus) or ``"nuclear"`` (labels ``y[..., 1]``, channels
            ``(0, None)``: the nuclear stain alone).
    """

    target: Literal["whole_cell", "nuclear"] = "whole_cell"

    def __post_init__(self) -> None:
        if self.target not in _TISSUENET_Y_CHANNELS:
            raise InvalidParamsError(
                f"target must be one of {sorted(_TISSUENET_Y_CHANNELS)}, got {self.target!r}"
            )

    @property
    def channels(self) -> Channels:
        """``(cyto, nucleus)`` indices into TissueNet's ``X`` channels for this target."""
        if self.target == "nuclear":
            return (_TISSUENET_X_CHANNELS["nuclear"], None)
        return (_TISSUENET_X_CHANNELS["membrane"], _TISSUENET_X_CHANNELS["nuclear"])


ReaderOptions = CellposeFolderOptions | CocoOptions | TissueNetOptions


def _check_channels(channels: Channels, *, n_channels: int | None, what: str) -> None:
    cyto, nucleus = channels
    indices = [cyto] if nucleus is None else [cyto, nucleus]
    limit = n_channels if n_channels is not None else math.inf
    if any(not isinstance(i, int) or not 0 <= i < limit for i in indices) or cyto == nucleus:
        raise InvalidParamsError(
            f"{what}: channels must be (cyto, nucleus|None), distinct indices in "
            f"[0, {limit}), got {channels}"
        )


# --------------------------------------------------------------------------- dispatch


def detect_dataset_format(path: str | Path) -> DatasetFormat:
    """Name a dataset's format from its path.

    Args:
        path: a folder holding ``*_masks`` files (Cellpose), a ``.json`` file (COCO) or
            a ``.npz`` file (TissueNet).

    Returns:
        ``"cellpose"``, ``"coco"`` or ``"tissuenet"``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsupportedFormatError: ``path`` is none of the above.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset file or folder")
    if path.is_dir():
        if any(_mask_base(child) is not None for child in path.iterdir()):
            return "cellpose"
        raise UnsupportedFormatError(
            f"{path}: folder has no NAME_masks{{{','.join(_MASK_SUFFIXES)}}} files, so it is "
            "not a Cellpose dataset; pass a COCO .json or TissueNet .npz file instead"
        )
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "coco"
    if suffix == ".npz":
        return "tissuenet"
    raise UnsupportedFormatError(
        f"{path}: unknown dataset format (suffix {suffix!r}); expected a Cellpose folder, "
        "a COCO .json or a TissueNet .npz"
    )


def iter_dataset(
    path: str | Path,
    fmt: DatasetFormat | Literal["auto"] = "auto",
    *,
    options: ReaderOptions | None = None,
) -> Iterator[LabeledImage]:
    """Iterate over a dataset's samples, reading one image at a time.

    Args:
        path: dataset folder or file (see :func:`detect_dataset_format`).
        fmt: ``"cellpose"``, ``"coco"``, ``"tissuenet"``, or ``"auto"`` to detect it.
        options: the options object of that format, or None for its defaults.

    Returns:
        Iterator of :class:`LabeledImage`; the layout is checked before it is returned.

    Raises:
        InvalidParamsError: unknown ``fmt``, or ``options`` of another format's type.
        DatasetError: the dataset is malformed (see the format's reader).
    """
    fmt = detect_dataset_format(path) if fmt == "auto" else fmt
    if fmt not in _READERS:
        raise InvalidParamsError(
            f"unknown dataset format {fmt!r}; expected one of {sorted(_READERS)}"
        )
    options_type, reader = _READERS[fmt]
    if options is not None and not isinstance(options, options_type):
        raise InvalidParamsError(
            f"format {fmt!r} takes {options_type.__name__}, got {type(options).__name__}"
        )
    return reader(Path(path), options)


def read_dataset(
    path: str | Path,
    fmt: DatasetFormat | Literal["auto"] = "auto",
    *,
    options: ReaderOptions | None = None,
) -> list[LabeledImage]:
    """Read a whole dataset into memory; the arguments are those of :func:`iter_dataset`.

    Returns:
        List of :class:`LabeledImage` in the reader's deterministic order.
    """
    return list(iter_dataset(path, fmt, options=options))


# --------------------------------------------------------------------------- Cellpose folders


def iter_cellpose_folder(
    folder: str | Path, options: CellposeFolderOptions | None = None
) -> Iterator[LabeledImage]:
    """Iterate over a Cellpose training folder (not recursive), sorted by image name.

    ``NAME_img.EXT`` and ``NAME.EXT`` (EXT in .tif/.tiff/.png/.jpg/.jpeg) are images of
    ``NAME``; ``NAME_masks.EXT`` (.tif/.tiff/.png) is its label image. Cellpose side
    files (``_flows``, ``_outlines``, ``_seg``) are ignored; masks without an image are
    ignored with a warning. Labels are renumbered ``1..N`` (in order of their old ids).
    Grey ``(Y, X)`` images get channels ``(0, None)``, others ``options.channels``.

    Args:
        folder: the folder.
        options: channels and what to do with unlabelled images.

    Returns:
        Iterator of :class:`LabeledImage` named ``NAME``.

    Raises:
        DatasetError: no images; images without masks (unless ``skip_unlabeled``); two
            images or two masks for one name; an image and mask of different (Y, X) size
            (while iterating).
    """
    options = options or CellposeFolderOptions()
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    pairs = _pair_cellpose_files(folder, skip_unlabeled=options.skip_unlabeled)
    return (_read_cellpose_pair(name, image, mask, options.channels) for name, image, mask in pairs)


def _pair_cellpose_files(folder: Path, *, skip_unlabeled: bool) -> list[tuple[str, Path, Path]]:
    images: dict[str, list[Path]] = {}
    masks: dict[str, list[Path]] = {}
    for child in sorted(folder.iterdir()):
        if (base := _mask_base(child)) is not None:
            masks.setdefault(base, []).append(child)
        elif (base := _image_base(child)) is not None:
            images.setdefault(base, []).append(child)
    clashes = {b: p for b, p in [*images.items(), *masks.items()] if len(p) > 1}
    if clashes:
        listed = "; ".join(f"{b}: {[p.name for p in ps]}" for b, ps in sorted(clashes.items()))
        raise DatasetError(f"{folder}: several files for one name ({listed})")
    if not images:
        raise DatasetError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    unlabeled = sorted(images[b][0].name for b in images if b not in masks)
    if unlabeled and not skip_unlabeled:
        raise DatasetError(
            f"{folder}: {len(unlabeled)} image(s) without a NAME_masks file: {unlabeled}; "
            "pass CellposeFolderOptions(skip_unlabeled=True) to skip them"
        )
    if unlabeled:
        logger.warning("%s: skipping %d unlabelled image(s): %s", folder, len(unlabeled), unlabeled)
    orphans = sorted(masks[b][0].name for b in masks if b not in images)
    if orphans:
        logger.warning(
            "%s: ignoring %d mask(s) without an image: %s", folder, len(orphans), orphans
        )
    return [(b, images[b][0], masks[b][0]) for b in sorted(images) if b in masks]


def _mask_base(path: Path) -> str | None:
    """``NAME`` for a ``NAME_masks.{tif,tiff,png}`` file, else None."""
    stem, suffix = path.stem, path.suffix.lower()
    if path.is_file() and suffix in _MASK_SUFFIXES and stem.endswith(_MASK_TAG):
        return stem[: -len(_MASK_TAG)]
    return None


def _image_base(path: Path) -> str | None:
    """``NAME`` for ``NAME_img.EXT`` or ``NAME.EXT`` image files, else None."""
    stem, suffix = path.stem, path.suffix.lower()
    if not path.is_file() or suffix not in IMAGE_SUFFIXES or stem.endswith(_SKIPPED_TAGS):
        return None
    return stem[: -len(_IMAGE_TAG)] if stem.endswith(_IMAGE_TAG) else stem


def _read_cellpose_pair(
    name: str, image_path: Path, mask_path: Path, channels: Channels
) -> LabeledImage:
    image = read_image(image_path)
    labels = _integer_labels(read_image(mask_path), str(mask_path))
    if image.shape[:2] != labels.shape:
        raise DatasetError(
            f"{image_path.name} has (Y, X) {image.shape[:2]} "
            f"but {mask_path.name} has {labels.shape}"
        )
    if image.ndim == 2:
        channels = (0, None)  # a grey image has only the one channel to segment
    return LabeledImage(image=image, labels=_relabel(labels), name=name, channels=channels)


def _integer_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Check a ``(Y, X)`` label image read from disk; whole-number floats become int64."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "f":
        if not np.array_equal(labels, np.round(labels)):
            raise DatasetError(f"{where}: float labels must hold whole numbers")
        labels = labels.astype(np.int64)
    try:
        return check_labels(labels, name=where, ndim=2)
    except InvalidLabelsError as err:
        raise DatasetError(str(err)) from err


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber ids to ``1..N``, as uint16 (uint32 beyond 65535 cells)."""
    relabelled, ids = relabel_sequential(labels)
    return relabelled.astype(np.uint16 if ids.size <= np.iinfo(np.uint16).max else np.uint32)


# --------------------------------------------------------------------------- COCO


def iter_coco(json_path: str | Path, options: CocoOptions | None = None) -> Iterator[LabeledImage]:
    """Iterate over the images of a COCO instance-segmentation file, in ascending image id.

    Each image's annotations (in file order) are rasterised, crowd annotations
    (``iscrowd`` true) are skipped, and overlaps are removed with
    :func:`resolve_overlaps`; cells are numbered ``1..N`` in annotation order. Images
    without annotations yield all-background labels.

    Args:
        json_path: the annotation file.
        options: image folder, categories, overlap threshold and channels.

    Returns:
        Iterator of :class:`LabeledImage` named after ``file_name`` without its suffix.

    Raises:
        DatasetError: unreadable JSON, missing ``images``/``annotations``, an annotation
            whose image id is unknown, a requested category the file lacks, one file
            name found in two subfolders (``search_subfolders``); while iterating: a
            malformed segmentation, a missing image file, or an image whose size differs
            from its ``height``/``width``.
    """
    options = options or CocoOptions()
    json_path = Path(json_path)
    document = _load_coco_json(json_path)
    keep = _category_ids(document, options.categories, json_path)
    grouped = _group_annotations(document, keep, json_path)
    image_dirs = (
        [options.image_dir]
        if options.image_dir
        else [json_path.parent, json_path.parent / "images"]
    )
    found = _index_image_files(image_dirs) if options.search_subfolders else None
    entries = sorted(document["images"], key=lambda entry: entry["id"])
    return (
        _read_coco_image(entry, grouped.get(entry["id"], []), image_dirs, found, options)
        for entry in entries
    )


def _index_image_files(image_dirs: list[Path]) -> dict[str, Path]:
    """Every image file under ``image_dirs`` (recursively), by file name."""
    found: dict[str, Path] = {}
    for directory in image_dirs:
        paths = directory.rglob("*") if directory.is_dir() else []
        for path in sorted(p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES):
            if path.name in found and found[path.name] != path:
                raise DatasetError(
                    f"image name {path.name!r} is in two places: {found[path.name]} and {path}"
                )
            found[path.name] = path
    return found


def _load_coco_json(json_path: Path) -> dict[str, Any]:
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{json_path}: cannot read COCO JSON ({err})") from err
    missing = [
        key
        for key in ("images", "annotations")
        if not isinstance(document, dict) or key not in document
    ]
    if missing:
        raise DatasetError(f"{json_path}: not a COCO instance file, missing {missing}")
    bad = [entry for entry in document["images"] if "id" not in entry or "file_name" not in entry]
    if bad:
        raise DatasetError(f"{json_path}: image entries need 'id' and 'file_name', got {bad[0]!r}")
    return document


def _category_ids(
    document: dict[str, Any], names: tuple[str, ...] | None, json_path: Path
) -> set[int] | None:
    """Ids of the wanted categories, or None for all of them."""
    if names is None:
        return None
    by_name = {str(c["name"]).lower(): int(c["id"]) for c in document.get("categories", [])}
    unknown = [name for name in names if name.lower() not in by_name]
    if unknown:
        raise DatasetError(
            f"{json_path}: unknown categories {unknown}; the file has {sorted(by_name)}"
        )
    return {by_name[name.lower()] for name in names}


def _group_annotations(
    document: dict[str, Any], keep: set[int] | None, json_path: Path
) -> dict[Any, list[dict[str, Any]]]:
    """Non-crowd annotations of the kept categories, by image id, in file order."""
    image_ids = {entry["id"] for entry in document["images"]}
    grouped: dict[Any, list[dict[str, Any]]] = {}
    n_crowd = 0
    for ann in document["annotations"]:
        if ann.get("image_id") not in image_ids:
            raise DatasetError(
                f"{json_path}: annotation {ann.get('id')!r} refers to unknown image id "
                f"{ann.get('image_id')!r}"
            )
        if ann.get("iscrowd", 0):
            n_crowd += 1
        elif keep is None or ann.get("category_id") in keep:
            grouped.setdefault(ann["image_id"], []).append(ann)
    if n_crowd:
        logger.info("%s: skipped %d crowd annotation(s) (iscrowd=1)", json_path, n_crowd)
    return grouped


def _read_coco_image(
    entry: dict[str, Any],
    anns: list[dict[str, Any]],
    image_dirs: list[Path],
    found: dict[str, Path] | None,
    options: CocoOptions,
) -> LabeledImage:
    file_name = str(entry["file_name"])
    candidates = [directory / file_name for directory in image_dirs]
    path = next((candidate for candidate in candidates if candidate.is_file()), None)
    if path is None and found is not None:
        path = found.get(Path(file_name).name)
    if path is None:
        where = " or their subfolders" if found is not None else ""
        raise DatasetError(
            f"image {file_name!r} (id {entry['id']}) not found; looked for "
            f"{[str(c) for c in candidates]}{where}; set CocoOptions(image_dir=...)"
        )
    image = read_image(path)
    shape = (int(entry.get("height", image.shape[0])), int(entry.get("width", image.shape[1])))
    if image.shape[:2] != shape:
        raise DatasetError(
            f"{path}: image is {image.shape[:2]} but its COCO entry says (height, width) {shape}"
        )
    rois = [_annotation_pixels(ann, shape, file_name) for ann in anns]
    labels = resolve_overlaps(rois, shape, overlap_threshold=options.overlap_threshold)
    return LabeledImage(
        image=image, labels=labels, name=Path(file_name).stem, channels=options.channels
    )


def _annotation_pixels(ann: dict[str, Any], shape: tuple[int, int], file_name: str) -> np.ndarray:
    try:
        mask = segmentation_to_mask(ann["segmentation"], shape)
    except (DatasetError, KeyError, TypeError, ValueError) as err:
        raise DatasetError(
            f"{file_name}: annotation {ann.get('id')!r}: bad segmentation ({err})"
        ) from err
    return np.flatnonzero(mask)


def segmentation_to_mask(
    segmentation: list[list[float]] | dict[str, Any], shape: tuple[int, int]
) -> np.ndarray:
    """Rasterise one COCO ``segmentation``: polygons, uncompressed RLE or compressed RLE.

    Args:
        segmentation: a list of flat ``[x0, y0, x1, y1, ...]`` polygons (their union is
            the object), or ``{"counts": [int, ...] | str, "size": [h, w]}``.
        shape: ``(Y, X)`` of the image; an RLE's ``size`` must equal it.

    Returns:
        ``(Y, X)`` bool mask.

    Raises:
        DatasetError: an odd-length polygon, or an RLE of another size or a broken count string.
    """
    if isinstance(segmentation, dict):
        size = tuple(int(v) for v in segmentation["size"])
        if size != tuple(shape):
            raise DatasetError(
                f"RLE size {list(size)} differs from image (height, width) {list(shape)}"
            )
        try:
            return rle_to_mask(segmentation)
        except InvalidLabelsError as err:
            raise DatasetError(str(err)) from err
    mask = np.zeros(shape, dtype=bool)
    for polygon in segmentation:
        mask |= polygon_to_mask(polygon, shape)
    return mask


def polygon_to_mask(polygon: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """Fill a COCO polygon pixel-for-pixel as pycocotools (``frPyObjects``) does.

    How it works (pycocotools' ``rleFrPoly``, vectorised): vertices are scaled by 5 and
    rounded; each edge is drawn as a digital line on that 5x grid. Wherever the line
    crosses the middle of a pixel column (x = j + 0.5), the column toggles inside/outside
    from the first pixel centre at or below the crossing (the upper of the two line
    points there). A cumulative sum of toggles down each column (even-odd rule) fills
    the polygon: roughly, pixels whose centre lies inside. Fewer than 3 vertices give an
    empty mask.

    Args:
        polygon: flat ``[x0, y0, x1, y1, ...]`` vertex coordinates in pixels.
        shape: ``(Y, X)`` of the mask; parts outside are clipped.

    Returns:
        ``(Y, X)`` bool mask.

    Raises:
        DatasetError: ``polygon`` has an odd number of coordinates or non-finite ones.
    """
    xy = np.asarray(polygon, dtype=np.float64).ravel()
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    if xy.size % 2 or not np.isfinite(xy).all():
        raise DatasetError(
            f"polygon needs an even number of finite coordinates, got {xy.size}: {xy[:8]}"
        )
    if xy.size < 6:
        return mask
    u, v = _polygon_outline(np.trunc(xy * _POLYGON_UPSAMPLE + 0.5).astype(np.int64))
    moved = u[1:] != u[:-1]
    x_up = np.minimum(u[1:], u[:-1])[moved]
    y_up = np.minimum(v[1:], v[:-1])[moved]
    centred = (x_up - 2) % _POLYGON_UPSAMPLE == 0  # crossing between 5j+2 and 5j+3
    columns = (x_up[centred] - 2) // _POLYGON_UPSAMPLE
    y = np.clip((y_up[centred] + 0.5) / _POLYGON_UPSAMPLE - 0.5, 0, height)
    inside = (columns >= 0) & (columns < width)
    columns, rows = columns[inside], np.ceil(y[inside]).astype(np.int64)
    if columns.size == 0:
        return mask
    first = int(columns.min())
    toggles = np.zeros((height + 1, int(columns.max()) - first + 1), dtype=np.int32)
    np.add.at(toggles, (rows, columns - first), 1)
    mask[:, first : first + toggles.shape[1]] = np.cumsum(toggles, axis=0)[:height] & 1
    return mask


def _polygon_outline(xy_up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Digital lines along the closed polygon ``xy_up`` (flat int ``[x0, y0, ...]`` on the
    5x grid), as pycocotools draws them: each edge steps along its longer axis, from its
    lower end, rounding the other coordinate half up; points run in polygon order.

    Returns:
        ``(u, v)``: int64 x and y of every outline point, in order.
    """
    xs, ys = xy_up[0::2], xy_up[1::2]
    xe, ye = np.roll(xs, -1), np.roll(ys, -1)
    dx, dy = np.abs(xe - xs), np.abs(ye - ys)
    x_major = dx >= dy
    flip = np.where(x_major, xs > xe, ys > ye)
    x0, y0 = np.where(flip, xe, xs), np.where(flip, ye, ys)
    x1, y1 = np.where(flip, xs, xe), np.where(flip, ys, ye)
    steps = np.where(x_major, dx, dy)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(x_major, (y1 - y0) / dx, (x1 - x0) / dy)
    slope[steps == 0] = 0.0  # a repeated vertex is one point
    edge = np.repeat(np.arange(xs.size), steps + 1)
    d = np.arange(edge.size) - np.repeat(np.cumsum(steps + 1) - (steps + 1), steps + 1)
    t = np.where(flip[edge], steps[edge] - d, d)
    along = np.trunc(np.where(x_major[edge], y0[edge], x0[edge]) + slope[edge] * t + 0.5).astype(
        np.int64
    )
    u = np.where(x_major[edge], x0[edge] + t, along)
    v = np.where(x_major[edge], along, y0[edge] + t)
    return u, v


def resolve_overlaps(
    rois: Sequence[np.ndarray], shape: tuple[int, int], *, overlap_threshold: float = 0.75
) -> np.ndarray:
    """Turn possibly overlapping ROIs into one label image, as Cellpose 2.0 did for LIVECell.

    How it works (Cellpose 2.0, Methods, "LiveCell"): ROIs are visited from smallest to
    largest area (ties in input order). An ROI is dropped when at least
    ``overlap_threshold`` of its pixels are also covered by at least one other ROI not
    yet dropped; a dropped ROI stops counting as cover for the ones after it. (The paper says "more
    than 75%"; its code, followed here, uses ``>=``.) Each pixel still covered by several
    kept ROIs goes to the one whose centroid (mean pixel position of the whole ROI) is
    nearest, ties to the earlier ROI. Unlike the reference code, which picks the nearest
    centroid among *all* ROIs, only ROIs covering the pixel compete, so no cell gains
    pixels outside its outline. Empty ROIs are dropped. Every kept ROI keeps its own
    uncovered pixels, so the output has no gaps in its ids.

    Args:
        rois: one 1-D integer array per ROI: its pixels' flat (C-order) indices into
            ``shape``, without repeats (e.g. ``np.flatnonzero(mask)``).
        shape: ``(Y, X)`` of the label image.
        overlap_threshold: covered fraction at which an ROI is dropped, in ``(0, 1]``.

    Returns:
        ``(Y, X)`` uint16 (uint32 past 65535 cells) labels; kept ROIs are numbered
        ``1..N`` in input order.

    Raises:
        InvalidParamsError: ``overlap_threshold`` outside ``(0, 1]``.
        DatasetError: a pixel index outside ``[0, Y * X)``.
    """
    if not 0 < overlap_threshold <= 1:
        raise InvalidParamsError(f"overlap_threshold must be in (0, 1], got {overlap_threshold}")
    n_pixels = shape[0] * shape[1]
    rois = [np.asarray(roi, dtype=np.int64) for roi in rois]
    kept = _drop_covered_rois(rois, n_pixels, overlap_threshold)
    dtype = np.uint16 if len(kept) <= np.iinfo(np.uint16).max else np.uint32
    labels = np.zeros(n_pixels, dtype=dtype)
    if not kept:
        return labels.reshape(shape)
    pixels = np.concatenate([rois[k] for k in kept])
    owner = np.repeat(np.arange(len(kept)), [rois[k].size for k in kept])
    shared = np.bincount(pixels, minlength=n_pixels)[pixels] > 1
    labels[pixels[~shared]] = owner[~shared] + 1
    if shared.any():
        centroids = np.array([_centroid(rois[k], shape[1]) for k in kept])
        pix, own = _nearest_centroid_owner(pixels[shared], owner[shared], centroids, shape[1])
        labels[pix] = own + 1
    return labels.reshape(shape)


def _centroid(roi: np.ndarray, width: int) -> tuple[float, float]:
    rows, cols = np.divmod(roi, width)
    return float(rows.mean()), float(cols.mean())


def _nearest_centroid_owner(
    pixels: np.ndarray, owners: np.ndarray, centroids: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """For ``(pixel, owner)`` pairs, pick per pixel the owner with the nearest ``(y, x)``
    centroid (ties to the lower owner index); returns unique pixels and their owners."""
    rows, cols = np.divmod(pixels, width)
    dist = (rows - centroids[owners, 0]) ** 2 + (cols - centroids[owners, 1]) ** 2
    order = np.lexsort((owners, dist, pixels))
    pixels, owners = pixels[order], owners[order]
    first = np.ones(pixels.size, dtype=bool)
    first[1:] = pixels[1:] != pixels[:-1]
    return pixels[first], owners[first]


def _drop_covered_rois(rois: list[np.ndarray], n_pixels: int, threshold: float) -> list[int]:
    """Indices (ascending) of the ROIs that survive the smallest-first overlap drop."""
    if not rois:
        return []
    if any(roi.size and (roi.min() < 0 or roi.max() >= n_pixels) for roi in rois):
        raise DatasetError(f"ROI pixel indices must lie in [0, {n_pixels})")
    cover = np.bincount(np.concatenate(rois), minlength=n_pixels)
    sizes = np.array([roi.size for roi in rois])
    kept = np.ones(len(rois), dtype=bool)
    for index in np.argsort(sizes, kind="stable"):
        roi = rois[index]
        if roi.size == 0 or np.count_nonzero(cover[roi] > 1) >= threshold * roi.size:
            kept[index] = False
            cover[roi] -= 1
    if (~kept).any():
        logger.debug("dropped %d of %d ROIs as empty or overlapped", int((~kept).sum()), len(rois))
    return np.flatnonzero(kept).tolist()


# --------------------------------------------------------------------------- TissueNet


def iter_tissuenet(
    npz_path: str | Path, options: TissueNetOptions | None = None
) -> Iterator[LabeledImage]:
    """Iterate over the samples of a TissueNet ``.npz`` split (``X``, ``y`` arrays).

    ``X`` is ``(N, H, W, 2)`` with channel 0 the nuclear and channel 1 the
    membrane/cytoplasm stain; ``y`` is ``(N, H, W, 2)`` integer labels, channel 0
    whole-cell and channel 1 nuclear (see the module docstring for the source of this
    layout). Arrays stored uncompressed (``np.savez``) are memory-mapped, so only one
    sample at a time is read; compressed ones are loaded whole. Pickled (object) arrays
    are refused.

    Args:
        npz_path: the ``.npz`` file.
        options: the label target; it also sets each sample's ``channels``.

    Returns:
        Iterator of :class:`LabeledImage` with image ``X[i]`` ``(H, W, 2)`` and labels
        from ``y[i]`` renumbered ``1..N``, named ``<file stem>_<i:05d>``.

    Raises:
        DatasetError: unreadable file, missing ``X``/``y``, or wrong shapes or dtypes.
    """
    options = options or TissueNetOptions()
    npz_path = Path(npz_path)
    images = _load_npz_member(npz_path, "X")
    labels = _load_npz_member(npz_path, "y")
    _check_tissuenet_arrays(images, labels, npz_path)
    label_channel = _TISSUENET_Y_CHANNELS[options.target]
    return (
        LabeledImage(
            image=np.array(images[i]),
            labels=_relabel(_integer_labels(labels[i, ..., label_channel], f"{npz_path}: y[{i}]")),
            name=f"{npz_path.stem}_{i:05d}",
            channels=options.channels,
        )
        for i in range(images.shape[0])
    )


def _check_tissuenet_arrays(images: np.ndarray, labels: np.ndarray, npz_path: Path) -> None:
    if images.ndim != 4 or images.shape[-1] != 2 or images.dtype.kind not in "uif":
        raise DatasetError(
            f"{npz_path}: X must be numeric (N, H, W, 2) [nuclear, membrane], "
            f"got {images.dtype} {images.shape}"
        )
    if labels.ndim != 4 or labels.shape[-1] != 2 or labels.shape[:3] != images.shape[:3]:
        raise DatasetError(
            f"{npz_path}: y must be (N, H, W, 2) [whole-cell, nuclear] matching X {images.shape}, "
            f"got {labels.shape}"
        )
    if labels.dtype.kind not in "iuf":
        raise DatasetError(f"{npz_path}: y must hold integer labels, got dtype {labels.dtype}")


def _load_npz_member(npz_path: Path, key: str) -> np.ndarray:
    """``key`` from an ``.npz``: memory-mapped when stored uncompressed, else loaded."""
    try:
        with zipfile.ZipFile(npz_path) as archive:
            info = archive.getinfo(f"{key}.npy")
            if info.compress_type != zipfile.ZIP_STORED:
                logger.info("%s: %s is compressed; loading it whole", npz_path, key)
                with archive.open(info) as member:
                    return np.lib.format.read_array(member, allow_pickle=False)
        return _memmap_stored_npy(npz_path, info)
    except KeyError as err:
        raise DatasetError(
            f"{npz_path}: no array {key!r} in the .npz (TissueNet needs X and y)"
        ) from err
    except (OSError, zipfile.BadZipFile, ValueError, struct.error) as err:
        raise DatasetError(f"{npz_path}: cannot read array {key!r} ({err})") from err


def _memmap_stored_npy(npz_path: Path, info: zipfile.ZipInfo) -> np.ndarray:
    """Memory-map an uncompressed ``.npy`` member: skip the zip local header (30 bytes +
    name + extra field), then the ``.npy`` header."""
    with npz_path.open("rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        if local[:4] != b"PK\x03\x04":
            raise DatasetError(f"{npz_path}: bad zip local header for {info.filename}")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise DatasetError(
                f"{npz_path}: unsupported .npy version {version} for {info.filename}"
            )
        if dtype.hasobject:
            raise DatasetError(
                f"{npz_path}: {info.filename} holds Python objects; refusing to unpickle"
            )
        offset = handle.tell()
    return np.memmap(
        npz_path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset
    )


_READERS: dict[str, tuple[type, Any]] = {
    "cellpose": (CellposeFolderOptions, iter_cellpose_folder),
    "coco": (CocoOptions, iter_coco),
    "tissuenet": (TissueNetOptions, iter_tissuenet),
}
