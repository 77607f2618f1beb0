"""``zoo.io.coco_rle_to_labels``: the inverse of ``labels_to_coco_rle``, and pycocotools'."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.synthetic import generate
from zoo.errors import InvalidLabelsError
from zoo.io import coco_rle_to_labels, labels_to_coco_rle


def random_labels(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    labels = rng.integers(0, n + 1, size=shape)
    return (labels * (rng.random(shape) < 0.6)).astype(np.uint16)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (5, 7), (64, 48), (200, 300)])
def test_round_trip(shape: tuple[int, int], rng: np.random.Generator) -> None:
    for _ in range(3):
        labels = random_labels(rng, shape, n=9)
        decoded = coco_rle_to_labels(labels_to_coco_rle(labels), shape)
        assert decoded.dtype == np.uint16
        np.testing.assert_array_equal(decoded, labels)


def test_round_trip_of_real_cells_and_large_ids() -> None:
    labels = generate("tissue", seed=3, shape=(256, 256)).labels
    np.testing.assert_array_equal(coco_rle_to_labels(labels_to_coco_rle(labels), labels.shape),
                                  labels)
    big = np.zeros((300, 200), np.uint32)
    big[10:290, 5:7], big[0, 0], big[-1, -1] = 70_000, 3, 2**32 - 1
    decoded = coco_rle_to_labels(labels_to_coco_rle(big), big.shape)
    assert decoded.dtype == np.uint32
    np.testing.assert_array_equal(decoded, big)
    assert coco_rle_to_labels([], (4, 5)).tolist() == np.zeros((4, 5), int).tolist()


def test_decodes_what_pycocotools_encodes(rng: np.random.Generator) -> None:
    coco_mask = pytest.importorskip("pycocotools.mask")
    for shape in [(3, 4), (97, 131), (256, 256)]:
        labels = random_labels(rng, shape, n=4)
        for label in range(1, 5):
            rle = coco_mask.encode(np.asfortranarray((labels == label).astype(np.uint8)))
            for counts in (rle["counts"], rle["counts"].decode()):  # bytes and str
                annotation = {"id": label, "segmentation": {"size": rle["size"],
                                                            "counts": counts}}
                decoded = coco_rle_to_labels([annotation], shape)
                np.testing.assert_array_equal(decoded == label, labels == label)
        for annotation in labels_to_coco_rle(labels):  # and pycocotools decodes ours
            rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"]
                       .encode())
            np.testing.assert_array_equal(coco_mask.decode(rle).astype(bool),
                                          labels == annotation["id"])


def test_uncompressed_counts_and_overlaps() -> None:
    first = {"id": 1, "segmentation": {"size": [2, 3], "counts": [1, 3, 2]}}
    second = {"id": 2, "segmentation": {"size": [2, 3], "counts": [2, 1, 3]}}  # pixel (0, 1)
    assert coco_rle_to_labels([first], (2, 3)).tolist() == [[0, 1, 0], [1, 1, 0]]
    assert coco_rle_to_labels([first, second], (2, 3)).tolist() == [[0, 2, 0], [1, 1, 0]]


@pytest.mark.parametrize(("annotation", "message"), [
    ({"id": 0, "segmentation": {"size": [2, 2], "counts": "04"}}, "id must be an integer"),
    ({"id": True, "segmentation": {"size": [2, 2], "counts": "04"}}, "id must be an integer"),
    ({"id": 1, "segmentation": {"size": [2, 3], "counts": "04"}}, "size [2, 3] differs"),
    ({"id": 1, "segmentation": {"size": [2, 2], "counts": "03"}}, "runs cover 3 pixels"),
    ({"id": 1, "segmentation": {"size": [2, 2], "counts": "0\x7f"}}, "characters outside"),
    ({"id": 1, "segmentation": {"size": [2, 2], "counts": "P"}}, "truncated"),
    ({"id": 1, "segmentation": {"size": [2, 2], "counts": 4}}, "counts must be"),
    ({"id": 1, "segmentation": {"size": [2, 2], "counts": [5, -1]}}, "must be >= 0"),
])
def test_malformed_annotations_raise(annotation: dict, message: str) -> None:
    with pytest.raises(InvalidLabelsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        coco_rle_to_labels([annotation], (2, 2))
