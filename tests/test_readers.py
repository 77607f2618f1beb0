"""Dataset readers: Cellpose folders, COCO JSON (polygons, RLE, overlaps), TissueNet npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from zoo.data.readers import (
    CellposeFolderOptions,
    CocoOptions,
    LabeledImage,
    TissueNetOptions,
    detect_dataset_format,
    iter_cellpose_folder,
    iter_dataset,
    polygon_to_mask,
    read_dataset,
    resolve_overlaps,
    segmentation_to_mask,
)
from zoo.errors import (
    DatasetError,
    InvalidLabelsError,
    InvalidParamsError,
    UnsupportedFormatError,
)
from zoo.io.rle import rle_to_mask

mask_utils = pytest.importorskip("pycocotools.mask")


# --------------------------------------------------------------------------- helpers


def _write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def _square_labels(shape: tuple[int, int], ids: list[int]) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint16)
    for k, cell_id in enumerate(ids):
        labels[2 + 6 * k : 6 + 6 * k, 2:8] = cell_id
    return labels


def _coco_decode(segmentation: list | dict, h: int, w: int) -> np.ndarray:
    """pycocotools' mask of one segmentation, as (h, w) bool."""
    rles = mask_utils.frPyObjects(segmentation, h, w)
    rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
    return mask_utils.decode(rle).astype(bool)


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.T.ravel().astype(np.int8)  # column-major
    edges = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def _circle(cx: float, cy: float, r: float, n: int = 24) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1).ravel().tolist()


def _write_coco(
    tmp_path: Path,
    images: list[dict],
    annotations: list[dict],
    *,
    categories: list[dict] | None = None,
    image_subdir: str = "",
) -> Path:
    folder = tmp_path / image_subdir
    folder.mkdir(parents=True, exist_ok=True)
    for entry in images:
        tifffile.imwrite(
            folder / entry["file_name"], np.zeros((entry["height"], entry["width"]), np.uint8)
        )
    for k, ann in enumerate(annotations, start=1):
        ann.setdefault("id", k)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("category_id", 1)
    document = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "cell"}],
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(document))
    return path


# --------------------------------------------------------------------------- Cellpose folders


def test_cellpose_folder_pairs_tif_and_png_and_relabels(tmp_path: Path) -> None:
    tifffile.imwrite(
        tmp_path / "b_img.tif",
        np.ones((20, 10, 2), np.uint16),
        photometric="minisblack",
        planarconfig="contig",
    )
    tifffile.imwrite(tmp_path / "b_masks.tif", _square_labels((20, 10), [7, 300]))
    _write_png(tmp_path / "a.png", np.full((20, 10), 9, np.uint8))
    _write_png(tmp_path / "a_masks.png", _square_labels((20, 10), [4, 2, 900]))
    (tmp_path / "a_flows.tif").write_bytes(b"not an image")  # Cellpose side file: ignored

    samples = read_dataset(tmp_path, options=CellposeFolderOptions(channels=(1, 0)))

    assert [s.name for s in samples] == ["a", "b"]
    a, b = samples
    assert a.image.shape == (20, 10) and b.image.shape == (20, 10, 2)
    assert a.labels.dtype == np.uint16
    assert np.array_equal(np.unique(a.labels), [0, 1, 2, 3])
    assert a.labels[3, 3] == 2 and a.labels[9, 3] == 1 and a.labels[15, 3] == 3  # id order kept
    assert np.array_equal(np.unique(b.labels), [0, 1, 2])
    assert a.channels == (0, None) and b.channels == (1, 0)  # grey images: one channel


def test_cellpose_folder_unmatched_image_raises_or_skips(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "x_img.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "x_masks.tif", np.zeros((8, 8), np.uint16))
    tifffile.imwrite(tmp_path / "y_img.tif", np.zeros((8, 8), np.uint8))
    _write_png(tmp_path / "z.png", np.zeros((8, 8), np.uint8))

    with pytest.raises(DatasetError, match=r"2 image\(s\).*y_img\.tif.*z\.png"):
        iter_cellpose_folder(tmp_path)
    samples = list(iter_cellpose_folder(tmp_path, CellposeFolderOptions(skip_unlabeled=True)))
    assert [s.name for s in samples] == ["x"]


def test_cellpose_folder_ambiguous_names_and_shape_mismatch(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "c_img.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "c_masks.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(DatasetError, match="several files for one name"):
        iter_cellpose_folder(tmp_path)

    (tmp_path / "c.tif").unlink()
    tifffile.imwrite(tmp_path / "c_masks.tif", np.zeros((8, 9), np.uint16))
    with pytest.raises(DatasetError, match=r"c_masks\.tif has \(8, 9\)"):
        read_dataset(tmp_path)
    tifffile.imwrite(tmp_path / "c_masks.tif", np.full((8, 8), 1.5, np.float32))
    with pytest.raises(DatasetError, match="whole numbers"):
        read_dataset(tmp_path)
    _write_png(tmp_path / "c_masks.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "c_masks.tif").unlink()
    with pytest.raises(DatasetError, match="2-D"):
        read_dataset(tmp_path)


def test_detect_format(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a_masks.tif", np.zeros((4, 4), np.uint16))
    (tmp_path / "d.json").write_text("{}")
    (tmp_path / "d.npz").write_bytes(b"")
    (tmp_path / "d.csv").write_text("")
    (tmp_path / "empty").mkdir()
    assert detect_dataset_format(tmp_path) == "cellpose"
    assert detect_dataset_format(tmp_path / "d.json") == "coco"
    assert detect_dataset_format(tmp_path / "d.npz") == "tissuenet"
    for bad in ("d.csv", "empty"):
        with pytest.raises(UnsupportedFormatError, match=bad):
            detect_dataset_format(tmp_path / bad)
    with pytest.raises(FileNotFoundError):
        detect_dataset_format(tmp_path / "missing.json")


def test_dispatch_rejects_wrong_options_and_unknown_format(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a_masks.tif", np.zeros((4, 4), np.uint16))
    with pytest.raises(InvalidParamsError, match="CellposeFolderOptions, got CocoOptions"):
        iter_dataset(tmp_path, options=CocoOptions())
    with pytest.raises(InvalidParamsError, match="'voc'"):
        iter_dataset(tmp_path, "voc")  # type: ignore[arg-type]
    with pytest.raises(InvalidParamsError, match="target"):
        TissueNetOptions(target="membrane")  # type: ignore[arg-type]
    with pytest.raises(InvalidParamsError, match="overlap_threshold"):
        CocoOptions(overlap_threshold=0.0)
    with pytest.raises(InvalidParamsError, match="channels"):
        CellposeFolderOptions(channels=(0, 0))


def test_labeled_image_validates_shapes() -> None:
    with pytest.raises(DatasetError, match="differ"):
        LabeledImage(np.zeros((4, 5)), np.zeros((4, 4), np.uint16), "s")
    with pytest.raises(InvalidParamsError, match="channels"):
        LabeledImage(np.zeros((4, 4)), np.zeros((4, 4), np.uint16), "s", channels=(1, None))


# --------------------------------------------------------------------------- COCO: rasterising


@pytest.mark.parametrize("radius", [1.5, 4.0, 7.0, 25.0])
def test_polygons_match_pycocotools_exactly(radius: float) -> None:
    rng = np.random.default_rng(int(radius * 10))
    h, w = 70, 90
    for trial in range(40):
        n = int(rng.integers(3, 25))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.5, 1.0, n)
        cx, cy = (
            rng.uniform(-radius, w + radius),
            rng.uniform(-radius, h + radius),
        )  # may cross the border
        points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        if trial % 4 == 0:
            points = np.round(points)  # integer vertices: crossings exactly on pixel centres
        if trial % 4 == 1:
            points = rng.permutation(points)  # self-intersecting
        polygon = points.ravel().tolist()
        assert np.array_equal(polygon_to_mask(polygon, (h, w)), _coco_decode([polygon], h, w)), (
            polygon
        )


def test_multi_polygon_union_and_bad_polygon() -> None:
    segmentation = [[2, 2, 8, 2, 8, 8, 2, 8], [20, 20, 26, 20, 26, 26]]
    ours = segmentation_to_mask(segmentation, (30, 30))
    assert np.array_equal(ours, _coco_decode(segmentation, 30, 30))
    with pytest.raises(DatasetError, match="even number"):
        polygon_to_mask([1, 2, 3, 4, 5], (10, 10))
    assert not polygon_to_mask([1, 2, 3, 4], (10, 10)).any()


def test_rle_compressed_and_uncompressed_match_pycocotools() -> None:
    rng = np.random.default_rng(1)
    for trial in range(30):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        mask = rng.random((h, w)) < rng.uniform(0, 1)
        if trial % 3 == 0:  # long runs exercise multi-character counts
            mask = np.zeros((h, w), bool)
            mask[rng.integers(0, h) : h, rng.integers(0, w) : w] = True
        compressed = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert np.array_equal(rle_to_mask(compressed), mask)  # bytes counts
        as_json = {"size": compressed["size"], "counts": compressed["counts"].decode("ascii")}
        assert np.array_equal(rle_to_mask(as_json), mask)
        plain = _uncompressed_rle(mask)
        assert np.array_equal(rle_to_mask(plain), _coco_decode(plain, h, w))
        assert np.array_equal(rle_to_mask(plain), mask)


def test_rle_rejects_bad_counts() -> None:
    with pytest.raises(InvalidLabelsError, match="runs cover 3 pixels"):
        rle_to_mask({"size": [2, 3], "counts": [1, 2]})
    with pytest.raises(InvalidLabelsError, match="truncated"):
        rle_to_mask({"size": [2, 3], "counts": "P"})  # 'P' - 48 = 0x20: more groups promised
    with pytest.raises(InvalidLabelsError, match="outside"):
        rle_to_mask({"size": [2, 3], "counts": " "})
    with pytest.raises(DatasetError, match="runs cover 3 pixels"):  # as the COCO reader sees it
        segmentation_to_mask({"size": [2, 3], "counts": [1, 2]}, (2, 3))
    with pytest.raises(DatasetError, match="RLE size"):
        segmentation_to_mask({"size": [3, 3], "counts": [9]}, (2, 3))


# --------------------------------------------------------------------------- COCO: overlaps


def _box(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return np.flatnonzero(mask)


def test_overlap_pixels_go_to_closest_centroid() -> None:
    shape = (12, 30)
    left = _box(shape, 2, 8, 0, 12)  # centroid x = 5.5
    right = _box(shape, 2, 8, 8, 28)  # centroid x = 17.5; overlap x = 8..11
    labels = resolve_overlaps([left, right], shape)
    assert np.array_equal(np.unique(labels), [0, 1, 2])
    # overlap columns 8..11: closer to 5.5 up to x = 11 (|11-5.5| = 5.5 < 6.5)
    assert (labels[2:8, 0:12] == 1).all()
    assert (labels[2:8, 12:28] == 2).all()

    wide_right = _box(shape, 2, 8, 8, 14)  # centroid x = 10.5: wins x >= 9 (|9-5.5| > |9-10.5|)
    labels = resolve_overlaps([left, wide_right], shape)
    assert (labels[2:8, 0:8] == 1).all() and (labels[2:8, 8] == 1).all()
    assert (labels[2:8, 9:14] == 2).all()


def test_overlap_pixels_only_go_to_covering_rois() -> None:
    shape = (10, 40)
    a = _box(shape, 0, 4, 0, 10)
    b = _box(shape, 0, 4, 6, 20)
    c = _box(shape, 4, 10, 8, 9)  # thin, centroid close to the a/b overlap but not covering it
    labels = resolve_overlaps([a, b, c], shape)
    assert set(np.unique(labels[0:4, 6:10])) <= {1, 2}


def test_rois_mostly_overlapped_are_dropped_smallest_first() -> None:
    shape = (20, 20)
    big = _box(shape, 0, 10, 0, 10)  # 100 px
    inside = _box(shape, 2, 6, 2, 6)  # 16 px, 100% covered -> dropped
    edge = _box(shape, 6, 14, 6, 8)  # 16 px, 8 covered = 50% -> kept
    labels = resolve_overlaps([big, inside, edge], shape)
    assert np.array_equal(np.unique(labels), [0, 1, 2])  # renumbered in input order
    assert (labels[2:6, 2:6] == 1).all()  # dropped ROI's pixels stay with the big cell
    assert (labels[10:14, 6:8] == 2).all()


def test_overlap_threshold_boundary_and_mutual_overlap() -> None:
    shape = (10, 10)
    host = _box(shape, 0, 10, 0, 3)
    three_quarters = _box(shape, 0, 4, 0, 4)  # 12 of 16 px covered = exactly 75%
    labels = resolve_overlaps([host, three_quarters], shape)
    assert labels.max() == 1  # ">= 75%" as in Cellpose's reference code: dropped
    labels = resolve_overlaps([host, three_quarters], shape, overlap_threshold=0.8)
    assert labels.max() == 2

    twin_a = _box(shape, 0, 10, 0, 5)
    twin_b = _box(shape, 0, 10, 1, 6)  # same size, 80% shared: only the first visited goes
    labels = resolve_overlaps([twin_a, twin_b], shape)
    assert labels.max() == 1 and (labels[:, 1:6] == 1).all() and (labels[:, 0] == 0).all()


# --------------------------------------------------------------------------- COCO: files


def test_coco_reader_polygons_rle_crowd_and_empty_images(tmp_path: Path) -> None:
    h, w = 40, 50
    disc = _circle(12, 12, 8)
    rle_mask = np.zeros((h, w), bool)
    rle_mask[25:35, 30:45] = True
    compressed = mask_utils.encode(np.asfortranarray(rle_mask.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode("ascii")
    plain_mask = np.zeros((h, w), bool)
    plain_mask[2:10, 35:48] = True
    images = [
        {"id": 7, "file_name": "second.tif", "height": h, "width": w},
        {"id": 3, "file_name": "first.tif", "height": h, "width": w},
    ]
    annotations = [
        {"image_id": 3, "segmentation": [disc]},
        {"image_id": 3, "segmentation": compressed},
        {"image_id": 3, "segmentation": _uncompressed_rle(plain_mask)},
        {"image_id": 3, "segmentation": [_circle(30, 12, 6)], "iscrowd": 1},
    ]
    path = _write_coco(tmp_path, images, annotations)

    first, second = read_dataset(path)
    assert [first.name, second.name] == ["first", "second"]  # ascending image id
    assert first.labels.dtype == np.uint16 and first.channels == (0, None)
    assert np.array_equal(np.unique(first.labels), [0, 1, 2, 3])  # crowd skipped
    assert np.array_equal(first.labels == 1, _coco_decode([disc], h, w))
    assert np.array_equal(first.labels == 2, rle_mask)
    assert np.array_equal(first.labels == 3, plain_mask)
    assert not (second.labels > 0).any()  # image without annotations


def test_coco_resolves_overlaps_from_annotations(tmp_path: Path) -> None:
    h, w = 30, 40
    images = [{"id": 1, "file_name": "img.tif", "height": h, "width": w}]
    big = [2, 2, 22, 2, 22, 22, 2, 22]
    inner = [5, 5, 9, 5, 9, 9, 5, 9]  # fully inside big: dropped
    neighbour = [18, 4, 34, 4, 34, 20, 18, 20]  # overlaps big on columns 18..21
    path = _write_coco(
        tmp_path, images, [{"image_id": 1, "segmentation": [p]} for p in (big, inner, neighbour)]
    )
    (sample,) = read_dataset(path, options=CocoOptions())
    assert sample.labels.max() == 2
    # centroids x = 11.5 and 25.5, same y: shared columns up to 18 stay with big
    assert (sample.labels[10, 2:19] == 1).all() and (sample.labels[10, 19:34] == 2).all()


def test_coco_image_dirs_categories_and_errors(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "img.tif", "height": 10, "width": 10}]
    square = [[1, 1, 5, 1, 5, 5, 1, 5]]
    annotations = [
        {"image_id": 1, "segmentation": square, "category_id": 1},
        {"image_id": 1, "segmentation": [[6, 6, 9, 6, 9, 9]], "category_id": 2},
    ]
    categories = [{"id": 1, "name": "Cell"}, {"id": 2, "name": "Nucleus"}]
    path = _write_coco(tmp_path, images, annotations, categories=categories, image_subdir="images")

    assert read_dataset(path)[0].labels.max() == 2  # found in images/ beside the JSON
    (cells,) = read_dataset(path, options=CocoOptions(categories=("cell",)))
    assert cells.labels.max() == 1
    with pytest.raises(DatasetError, match="unknown categories"):
        iter_dataset(path, options=CocoOptions(categories=("mitochondria",)))

    nested = tmp_path / "nested"
    (nested / "A172").mkdir(parents=True)
    (tmp_path / "images" / "img.tif").rename(nested / "A172" / "img.tif")
    with pytest.raises(DatasetError, match="not found"):
        read_dataset(path, options=CocoOptions(image_dir=nested))
    found = CocoOptions(image_dir=str(nested), search_subfolders=True)
    assert read_dataset(path, options=found)[0].labels.max() == 2
    tifffile.imwrite(nested / "img.tif", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match="in two places"):
        iter_dataset(path, options=found)

    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(DatasetError, match=r"'img\.tif' \(id 1\) not found.*elsewhere"):
        read_dataset(path, options=CocoOptions(image_dir=other))
    tifffile.imwrite(other / "img.tif", np.zeros((10, 12), np.uint8))
    with pytest.raises(DatasetError, match=r"\(10, 12\).*\(10, 10\)"):
        read_dataset(path, options=CocoOptions(image_dir=other))


def test_coco_malformed_documents(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "img.tif", "height": 10, "width": 10}]
    path = _write_coco(tmp_path, images, [{"image_id": 99, "segmentation": [[1, 1, 5, 1, 5, 5]]}])
    with pytest.raises(DatasetError, match="unknown image id 99"):
        iter_dataset(path)
    path = _write_coco(tmp_path, images, [{"image_id": 1, "segmentation": [[1, 1, 5]]}])
    with pytest.raises(DatasetError, match="annotation 1: bad segmentation"):
        read_dataset(path)
    path.write_text('{"images": []}')
    with pytest.raises(DatasetError, match="missing \\['annotations'\\]"):
        iter_dataset(path)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read COCO JSON"):
        iter_dataset(path)


# --------------------------------------------------------------------------- TissueNet


def _tissuenet_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.random((3, 16, 12, 2)).astype(np.float32)
    labels = np.zeros((3, 16, 12, 2), np.int32)
    labels[:, 2:8, 2:8, 0] = 40  # whole cell
    labels[:, 9:14, 3:9, 0] = 41
    labels[:, 4:6, 4:6, 1] = 77  # nucleus
    return images, labels


@pytest.mark.parametrize("compressed", [False, True])
def test_tissuenet_targets_and_channels(tmp_path: Path, compressed: bool) -> None:
    images, labels = _tissuenet_arrays()
    path = tmp_path / "tissuenet_train.npz"
    (np.savez_compressed if compressed else np.savez)(path, X=images, y=labels)

    whole = read_dataset(path)
    assert [s.name for s in whole] == [f"tissuenet_train_0000{i}" for i in range(3)]
    assert whole[0].channels == (1, 0)  # cyto = membrane (X[..., 1]), nucleus = X[..., 0]
    assert np.array_equal(whole[2].image, images[2])
    assert whole[0].labels.dtype == np.uint16
    assert np.array_equal(
        whole[0].labels, (labels[0, ..., 0] == 40) * 1 + (labels[0, ..., 0] == 41) * 2
    )

    nuclear = read_dataset(path, "tissuenet", options=TissueNetOptions(target="nuclear"))
    assert nuclear[1].channels == (0, None)
    assert np.array_equal(nuclear[1].labels, (labels[1, ..., 1] == 77).astype(np.uint16))


@pytest.mark.parametrize(
    "arrays, message",
    [
        (
            {"X": np.zeros((2, 8, 8, 3)), "y": np.zeros((2, 8, 8, 2), np.int32)},
            r"X must be .*\(2, 8, 8, 3\)",
        ),
        (
            {"X": np.zeros((2, 8, 8, 2)), "y": np.zeros((2, 8, 9, 2), np.int32)},
            r"y must be .*\(2, 8, 9, 2\)",
        ),
        (
            {"X": np.zeros((8, 8, 2)), "y": np.zeros((8, 8, 2), np.int32)},
            r"X must be .*\(8, 8, 2\)",
        ),
        ({"X": np.zeros((2, 8, 8, 2))}, r"no array 'y'"),
        ({"X": np.zeros((2, 8, 8, 2)), "y": np.zeros((2, 8, 8, 2), object)}, "Python objects"),
        ({"X": np.zeros((2, 8, 8, 2)), "y": np.full((2, 8, 8, 2), -1, np.int32)}, ">= 0"),
    ],
)
def test_tissuenet_malformed(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=message):
        read_dataset(path)


def test_tissuenet_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read array 'X'"):
        read_dataset(path)
