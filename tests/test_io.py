"""Tests for zoo.io: image reading, label writers, COCO RLE, ImageJ ROIs, GeoJSON, overlays."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import roifile
import tifffile
from PIL import Image
from scipy import ndimage

from zoo.data.shapes import ShapeParams, random_labels
from zoo.errors import InvalidImageError, InvalidLabelsError, UnsupportedFormatError
from zoo.io import (
    as_yxc,
    detect_image_format,
    labels_to_coco_rle,
    labels_to_geojson,
    labels_to_imagej_rois,
    outline_polygons,
    outlines,
    read_image,
    write_coco,
    write_geojson,
    write_imagej_roi_zip,
    write_labels,
    write_png,
)

mask_utils = pytest.importorskip("pycocotools.mask")
# pycocotools 2.0.x calls np.array(copy=False) paths that numpy 2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RNG = np.random.default_rng(0)


def _random(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return RNG.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def _png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format="PNG")
    return buffer.getvalue()


def _shoelace(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(float), ring[:, 1].astype(float)
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    labels = random_labels((97, 131), ShapeParams(diameter=18), seed=2)
    labels[0:5, 0:3] = labels.max() + 1  # touches pixel (0, 0)
    labels[:, 129:131] = labels.max() + 1  # full-height bar: its RLE runs wrap columns
    return labels


# --------------------------------------------------------------------------- TIFF


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64]
)
def test_tiff_round_trip_keeps_dtype(tmp_path: Path, dtype: type) -> None:
    data = _random((33, 47), dtype)
    tifffile.imwrite(tmp_path / "a.tif", data)
    image = read_image(tmp_path / "a.tif")
    assert image.dtype == dtype and image.flags.c_contiguous
    np.testing.assert_array_equal(image, data)


@pytest.mark.parametrize(
    ("shape", "kwargs", "to_yxc"),
    [
        ((32, 40, 3), {"photometric": "rgb"}, lambda a: a),
        ((2, 32, 40), {"metadata": {"axes": "CYX"}}, lambda a: a.transpose(1, 2, 0)),
        ((3, 32, 40), {"photometric": "minisblack"}, lambda a: a.transpose(1, 2, 0)),
        ((2, 32, 40), {"ome": True, "metadata": {"axes": "CYX"}}, lambda a: a.transpose(1, 2, 0)),
        (
            (1, 3, 1, 32, 40),
            {"ome": True, "metadata": {"axes": "TCZYX"}},
            lambda a: a[0, :, 0].transpose(1, 2, 0),
        ),
        ((1, 1, 1, 32, 40), {"ome": True, "metadata": {"axes": "TCZYX"}}, lambda a: a[0, 0, 0]),
        (
            (1, 1, 2, 32, 40),
            {"imagej": True, "metadata": {"axes": "TZCYX"}},
            lambda a: a[0, 0].transpose(1, 2, 0),
        ),
    ],
)
def test_tiff_axes_become_channels_last(
    tmp_path: Path,
    shape: tuple[int, ...],
    kwargs: dict,
    to_yxc: Callable[[np.ndarray], np.ndarray],
) -> None:
    data = _random(shape, np.uint16 if "imagej" in kwargs else np.uint8)
    path = tmp_path / ("a.ome.tif" if kwargs.get("ome") else "a.tif")
    tifffile.imwrite(path, data, **kwargs)
    image = read_image(path)
    expected = to_yxc(data)
    assert image.shape == expected.shape
    np.testing.assert_array_equal(image, expected)


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((1, 1, 4, 32, 40), {"ome": True, "metadata": {"axes": "TCZYX"}}, r"\(4, 32, 40\)"),
        ((5, 32, 40), {"imagej": True, "metadata": {"axes": "ZYX"}}, r"axes 'ZYX'.*\(5, 32, 40\)"),
        ((3, 2, 32, 40), {"metadata": {"axes": "TCYX"}}, "non-singleton axes TC"),
        ((20, 32, 40), {"photometric": "minisblack"}, "stack of 20 planes"),
    ],
)
def test_tiff_with_several_planes_raises(
    tmp_path: Path, shape: tuple[int, ...], kwargs: dict, message: str
) -> None:
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros(shape, np.uint8), **kwargs)
    with pytest.raises(InvalidImageError, match=message):
        read_image(tmp_path / "stack.tif")


# --------------------------------------------------------------------------- PNG, JPEG


@pytest.mark.parametrize(
    ("array", "mode", "expected_shape", "dtype"),
    [
        (_random((30, 20), np.uint8), None, (30, 20), np.uint8),
        (_random((30, 20), np.uint16), None, (30, 20), np.uint16),
        (_random((30, 20, 3), np.uint8), None, (30, 20, 3), np.uint8),
        (_random((30, 20, 4), np.uint8), None, (30, 20, 4), np.uint8),
        (_random((30, 20, 3), np.uint8), "LA", (30, 20, 2), np.uint8),
    ],
)
def test_png_layouts(
    tmp_path: Path, array: np.ndarray, mode: str | None, expected_shape: tuple, dtype: type
) -> None:
    (tmp_path / "a.png").write_bytes(_png_bytes(array, mode))
    image = read_image(tmp_path / "a.png")
    assert image.shape == expected_shape and image.dtype == dtype
    if mode is None:
        np.testing.assert_array_equal(image, array)


def test_png_palette_and_bilevel_become_rgb_and_uint8() -> None:
    palette = read_image(_png_bytes(_random((16, 16, 3), np.uint8), "P"))
    assert palette.shape == (16, 16, 3) and palette.dtype == np.uint8
    bits = RNG.random((16, 16)) > 0.5
    bilevel = read_image(_png_bytes(bits))
    assert bilevel.dtype == np.uint8
    np.testing.assert_array_equal(bilevel, bits * 255)


@pytest.mark.parametrize("shape", [(40, 48), (40, 48, 3)])
def test_jpeg(shape: tuple[int, ...]) -> None:
    array = np.clip(
        ndimage.gaussian_filter(_random(shape, np.uint8).astype(float), 3) * 2 - 128, 0, 255
    ).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    image = read_image(buffer.getvalue())
    assert image.shape == shape and image.dtype == np.uint8
    assert np.abs(image.astype(int) - array).mean() < 3


# --------------------------------------------------------------------------- sources, errors


def test_bytes_and_path_agree_and_format_comes_from_magic(tmp_path: Path) -> None:
    data = _random((12, 14, 3), np.uint8)
    payload = _png_bytes(data)
    (tmp_path / "misnamed.tif").write_bytes(payload)
    for source in (
        payload,
        bytearray(payload),
        memoryview(payload),
        tmp_path / "misnamed.tif",
        str(tmp_path / "misnamed.tif"),
    ):
        np.testing.assert_array_equal(read_image(source), data)
    assert detect_image_format(payload) == "png"


def test_as_yxc() -> None:
    grey, stack = np.zeros((4, 5)), np.zeros((2, 4, 5))
    assert as_yxc(grey).shape == (4, 5, 1)
    assert as_yxc(stack, channel_axis=0).shape == (4, 5, 2)
    assert as_yxc(np.zeros((4, 5, 3))).shape == (4, 5, 3)
    with pytest.raises(InvalidImageError, match=r"\(1, 2, 4, 5\)"):
        as_yxc(np.zeros((1, 2, 4, 5)))


def _tiff_bytes() -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, _random((128, 128), np.uint16), compression="zlib")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "payload",
    [
        _tiff_bytes()[: len(_tiff_bytes()) // 2],  # truncated
        _tiff_bytes()[:40],  # truncated inside the header
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,  # PNG magic, garbage after it
        _png_bytes(_random((64, 64), np.uint8))[:-200],  # truncated PNG
        b"\xff\xd8\xff\xe0" + b"\x00" * 64,  # JPEG magic, garbage
    ],
)
def test_corrupt_or_truncated_files_raise_invalid_image(tmp_path: Path, payload: bytes) -> None:
    (tmp_path / "broken.img").write_bytes(payload)
    with pytest.raises(InvalidImageError, match="broken.img") as error:
        read_image(tmp_path / "broken.img")
    assert not isinstance(error.value, UnsupportedFormatError)
    with pytest.raises(InvalidImageError, match="<bytes>"):
        read_image(payload)


def test_empty_missing_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"empty.png.*empty \(0 bytes\)"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(InvalidImageError, match="empty"):
        read_image(b"")
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "noise.bin").write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(UnsupportedFormatError, match="noise.bin.*TIFF, PNG and JPEG"):
        read_image(tmp_path / "noise.bin")
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, format="GIF")
    with pytest.raises(UnsupportedFormatError, match="GIF"):
        read_image(buffer.getvalue())


# --------------------------------------------------------------------------- label files


@pytest.mark.parametrize(
    ("dtype", "top", "suffix", "stored"),
    [
        (np.uint8, 200, ".tif", np.uint8),
        (np.uint16, 60_000, ".tif", np.uint16),
        (np.uint32, 70_000, ".tiff", np.uint32),
        (np.int32, 1_000, ".tif", np.uint16),
        (np.int64, 100_000, ".tif", np.uint32),
        (np.uint16, 60_000, ".png", np.uint16),
        (np.int32, 300, ".png", np.uint16),
    ],
)
def test_write_labels_round_trip(
    tmp_path: Path, dtype: type, top: int, suffix: str, stored: type
) -> None:
    labels = RNG.integers(0, top, size=(40, 30), endpoint=True).astype(dtype)
    path = write_labels(tmp_path / f"labels{suffix}", labels)
    back = read_image(path)
    assert back.dtype == stored
    np.testing.assert_array_equal(back, labels)
    if suffix != ".png":
        with tifffile.TiffFile(path) as tif:
            assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE


def test_write_labels_rejects_bad_input(tmp_path: Path) -> None:
    big = np.array([[0, 70_000]], dtype=np.uint32)
    with pytest.raises(UnsupportedFormatError, match="70000"):
        write_labels(tmp_path / "big.png", big)
    with pytest.raises(UnsupportedFormatError, match=".jpg"):
        write_labels(tmp_path / "labels.jpg", big)
    with pytest.raises(InvalidLabelsError, match="-1"):
        write_labels(tmp_path / "neg.tif", np.array([[0, -1]]))
    with pytest.raises(InvalidLabelsError, match="float"):
        write_labels(tmp_path / "float.tif", np.zeros((4, 4)))
    with pytest.raises(InvalidLabelsError, match="2-D"):
        write_labels(tmp_path / "cube.tif", np.zeros((2, 4, 4), np.uint16))


# --------------------------------------------------------------------------- COCO


def test_coco_rle_matches_pycocotools(labels: np.ndarray) -> None:
    annotations = labels_to_coco_rle(labels)
    ids = np.unique(labels)[1:]
    assert [a["id"] for a in annotations] == ids.tolist()
    for annotation in annotations:
        mask = (labels == annotation["id"]).astype(np.uint8)
        reference = mask_utils.encode(np.asfortranarray(mask))
        rle = annotation["segmentation"]
        assert isinstance(rle["counts"], str) and rle["size"] == list(labels.shape)
        assert rle["counts"] == reference["counts"].decode("ascii")
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded, mask)
        assert annotation["area"] == mask.sum()
        assert annotation["bbox"] == mask_utils.toBbox(reference).tolist()


def test_coco_rle_large_counts_and_empty() -> None:
    labels = np.zeros((300, 500), dtype=np.uint32)
    labels[10:290, 20:480] = 4_000_000_000  # long runs, a huge id
    labels[0, 0] = labels[299, 499] = 7
    annotations = labels_to_coco_rle(labels)
    for annotation in annotations:
        mask = np.asfortranarray((labels == annotation["id"]).astype(np.uint8))
        assert annotation["segmentation"]["counts"] == mask_utils.encode(mask)["counts"].decode()
    assert labels_to_coco_rle(np.zeros((5, 5), np.uint16)) == []


def test_write_coco_loads_in_pycocotools(tmp_path: Path, labels: np.ndarray) -> None:
    coco_module = pytest.importorskip("pycocotools.coco")
    path = write_coco(tmp_path / "cells.json", labels, image_name="cells.tif", image_id=3)
    document = json.loads(path.read_text())
    assert document["images"] == [{"id": 3, "file_name": "cells.tif", "height": 97, "width": 131}]
    coco = coco_module.COCO()
    coco.dataset = document
    coco.createIndex()
    for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[3])):
        np.testing.assert_array_equal(coco.annToMask(annotation), labels == annotation["id"])


# --------------------------------------------------------------------------- outlines


def _cell_boxes(labels: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """``id -> (left, top, right, bottom)``, right/bottom exclusive."""
    boxes = ndimage.find_objects(labels)
    return {
        k: (b[1].start, b[0].start, b[1].stop, b[0].stop)
        for k, b in enumerate(boxes, start=1)
        if b is not None
    }


def test_outline_polygons_enclose_exactly_the_cell(labels: np.ndarray) -> None:
    polygons = outline_polygons(labels)
    boxes = _cell_boxes(labels)
    assert list(polygons) == sorted(boxes)
    for label, ring in polygons.items():
        filled = ndimage.binary_fill_holes(labels == label)
        assert _shoelace(ring) == filled.sum()  # positive: counter-clockwise for RFC 7946
        left, top = ring.min(axis=0)
        right, bottom = ring.max(axis=0)
        assert (left, top, right, bottom) == boxes[label]
        assert np.all(np.any(np.diff(np.vstack([ring, ring[:1]]), axis=0) != 0, axis=1))


def test_outline_fills_holes_and_keeps_largest_part(caplog: pytest.LogCaptureFixture) -> None:
    labels = np.zeros((8, 12), dtype=np.int32)
    labels[1:4, 1:4] = 1
    labels[2, 2] = 0  # a hole touching the outside only diagonally
    labels[3, 3] = 0
    labels[1:6, 6:10] = 2
    labels[7, 0] = 2  # a stray second part
    with caplog.at_level(logging.WARNING, logger="zoo.io"):
        polygons = outline_polygons(labels)
    assert _shoelace(polygons[1]) == 8  # 3x3 minus the outside corner; the hole is filled
    assert _shoelace(polygons[2]) == 20
    assert "ids [2]" in caplog.text


def test_outlines_mask() -> None:
    labels = np.zeros((6, 10), dtype=np.int32)
    labels[1:5, 1:5] = 1
    labels[1:5, 5:9] = 2
    edge = outlines(labels)
    assert edge.dtype == bool and edge.shape == labels.shape
    assert edge[1:5, 1:5].sum() == 12 and not edge[2:4, 2:4].any()
    assert edge[:, 4].sum() == 4 and edge[:, 5].sum() == 4  # both sides of a shared border
    assert not edge[labels == 0].any()
    assert outlines(np.ones((3, 3), np.uint8)).sum() == 8  # the image border bounds a cell


def test_imagej_roi_zip_reads_back(tmp_path: Path, labels: np.ndarray) -> None:
    path = tmp_path / "RoiSet.zip"
    write_imagej_roi_zip(path, labels)
    write_imagej_roi_zip(path, labels)  # overwrites, does not append
    rois = roifile.roiread(path)
    boxes = _cell_boxes(labels)
    assert len(rois) == len(boxes)
    for roi, (label, box) in zip(rois, sorted(boxes.items()), strict=True):
        assert roi.name == f"{label:05d}" and roi.roitype == roifile.ROI_TYPE.TRACED
        assert (roi.left, roi.top, roi.right, roi.bottom) == box
        coordinates = roi.coordinates()
        assert tuple(coordinates.min(axis=0)) == box[:2]
        assert tuple(coordinates.max(axis=0)) == box[2:]
    assert len(labels_to_imagej_rois(np.zeros((4, 4), np.uint8))) == 0
    with pytest.raises(UnsupportedFormatError, match="zip"):
        write_imagej_roi_zip(tmp_path / "rois.roi", labels)


def test_geojson_structure(tmp_path: Path, labels: np.ndarray) -> None:
    collection = labels_to_geojson(labels)
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    areas = np.bincount(labels.ravel())
    assert [f["properties"]["label"] for f in features] == np.unique(labels)[1:].tolist()
    for feature in features:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        (ring,) = feature["geometry"]["coordinates"]
        assert ring[0] == ring[-1] and len(ring) >= 5
        label = feature["properties"]["label"]
        assert feature["properties"]["area"] == areas[label]
        assert _shoelace(np.array(ring[:-1])) > 0
    path = write_geojson(tmp_path / "cells.geojson", labels)
    assert json.loads(path.read_text()) == collection


# --------------------------------------------------------------------------- overlay, PNG


def test_write_png_validates(tmp_path: Path) -> None:
    grey16 = _random((6, 7), np.uint16)
    np.testing.assert_array_equal(read_image(write_png(tmp_path / "g.png", grey16)), grey16)
    with pytest.raises(InvalidImageError, match="float64"):
        write_png(tmp_path / "f.png", np.zeros((4, 4, 3)))
    with pytest.raises(UnsupportedFormatError, match=".jpg"):
        write_png(tmp_path / "f.jpg", np.zeros((4, 4), np.uint8))


def test_pixel_limit_refuses_large_images_before_decoding(tmp_path):
    from zoo.errors import ImageTooLargeError

    big = tmp_path / "big.tif"
    tifffile.imwrite(big, np.zeros((300, 400), np.uint16))
    png = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(png)
    for path in (big, png):
        assert read_image(path, max_pixels=120_000).shape == (300, 400)
        too_large = r"120,000 pixels, over the limit of 119,999 \(0.12 megapixels\)"
        with pytest.raises(ImageTooLargeError, match=too_large) as caught:
            read_image(path.read_bytes(), max_pixels=119_999)
        assert caught.value.pixels == 120_000 and caught.value.limit == 119_999
