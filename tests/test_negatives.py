"""Non-microscopy negatives: disjoint, deterministic splits of photos and drawn images."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from zoo.data.negatives import KINDS, PHOTOS, SPLITS, load_photo, negatives, photo_split
from zoo.errors import InvalidParamsError

pytest.importorskip("skimage")

RESERVED = {"cell", "cells3d", "human_mitosis", "kidney", "lily", "immunohistochemistry",
            "skin", "protein_transport", "nickel_solidification", "palisades_of_vogt",
            "brain", "microaneurysms"}


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_reserved_microscopy_images_are_never_used() -> None:
    assert not RESERVED & set(PHOTOS)


def test_photo_splits_partition_the_photos() -> None:
    parts = [set(photo_split(split)) for split in SPLITS]
    assert set().union(*parts) == set(PHOTOS)
    assert sum(len(part) for part in parts) == len(PHOTOS)
    assert all(len(part) >= 4 for part in parts)


def test_splits_never_share_a_source_or_an_image() -> None:
    sets = {split: negatives(split, per_kind=6, shape=(64, 64)) for split in SPLITS}
    for split, items in sets.items():
        assert {item.kind for item in items} == set(KINDS)
        assert all(item.split == split for item in items)
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not {i.source for i in sets[a]} & {i.source for i in sets[b]}
                assert not {_digest(i.image) for i in sets[a]} & {_digest(i.image) for i in sets[b]}
    photos = {split: {i.source.split(":")[1] for i in sets[split] if i.kind == "photo"}
              for split in SPLITS}
    for split in SPLITS:
        assert photos[split] <= set(photo_split(split))


def test_negatives_are_deterministic_and_shaped() -> None:
    first = negatives("validation", per_kind=3, shape=(48, 80), seed=2)
    again = negatives("validation", per_kind=3, shape=(48, 80), seed=2)
    other = negatives("validation", per_kind=3, shape=(48, 80), seed=3)
    assert len(first) == 3 * len(KINDS)
    for a, b in zip(first, again):
        assert a.source == b.source
        np.testing.assert_array_equal(a.image, b.image)
    for item in first:
        assert item.image.dtype == np.uint8 and item.image.shape[:2] == (48, 80)
        assert item.image.ndim == 2 or item.image.shape[2] == 3
        assert item.image.std() > 0  # not blank
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(first, other))


def test_drawn_images_within_a_split_differ() -> None:
    items = negatives("train", per_kind=5, shape=(64, 64), kinds=("text", "chart", "ui", "noise"))
    assert len({_digest(item.image) for item in items}) == len(items)


@pytest.mark.parametrize("name", PHOTOS)
def test_every_photo_loads_as_uint8(name: str) -> None:
    image = load_photo(name)
    assert image.dtype == np.uint8 and image.ndim in (2, 3) and min(image.shape[:2]) >= 100
    assert image.ndim == 2 or image.shape[2] == 3


def test_bad_arguments_raise() -> None:
    with pytest.raises(InvalidParamsError, match="'dev'"):
        negatives("dev")
    with pytest.raises(InvalidParamsError, match="'video'"):
        negatives("train", kinds=("video",))
    with pytest.raises(InvalidParamsError):
        negatives("train", shape=(16, 64))
    with pytest.raises(InvalidParamsError, match="'cell'"):
        load_photo("cell")
