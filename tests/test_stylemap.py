"""zoo.stylemap (the 2-D layout of a style bank, and where a new image goes) and the
service's /stylemap and /reference bodies built from it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from zoo.cluster import StyleBank, centroids_of, normalize_styles
from zoo.errors import InvalidParamsError
from zoo.router import Router
from zoo.stylemap import layout, pca_layout, place


def _bank(rng: np.random.Generator, **extra) -> StyleBank:
    """Three well separated groups of 10 unit vectors in 16 dimensions."""
    centres = np.eye(16)[:3] * 4
    vectors = normalize_styles(np.concatenate([c + rng.normal(0, 0.3, (10, 16)) for c in centres]))
    labels = np.repeat(np.arange(3), 10)
    return StyleBank(vectors=vectors, labels=labels, names=["a", "b", "c"],
                     centroids=centroids_of(vectors, labels, 3), sources=["a"] * 10 + ["b"] * 10 + ["c"] * 10,
                     specialists={0: "m.a", 2: "m.c"}, ood_threshold=0.5, **extra)


def test_pca_layout_is_the_top_two_components_with_fixed_signs(rng):
    vectors = rng.normal(size=(40, 8)) * np.array([5.0, 2.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    xy = pca_layout(vectors)
    assert xy.shape == (40, 2) and xy.dtype == np.float32
    centred = vectors - vectors.mean(axis=0)
    # the same spread as the top two principal components, and the axes are uncorrelated
    _, singular, _ = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.linalg.norm(xy, axis=0), singular[:2], rtol=1e-5)
    assert abs(np.corrcoef(xy.T)[0, 1]) < 1e-5
    # a sign flip of the input axes gives the same map: signs are fixed by the data
    np.testing.assert_allclose(pca_layout(-vectors), xy, atol=1e-5)
    for axis in range(2):
        assert xy[np.argmax(np.abs(xy[:, axis])), axis] > 0


def test_pca_layout_of_a_line_and_bad_input():
    line = np.outer([0.0, 1.0, 2.0, 3.0, 10.0], np.ones(3))  # the last point is farthest out
    xy = pca_layout(line)
    np.testing.assert_array_equal(xy[:, 1], 0)
    assert np.all(np.diff(xy[:, 0]) > 0)
    with pytest.raises(InvalidParamsError, match="N >= 2"):
        pca_layout(np.ones((1, 3)))
    with pytest.raises(InvalidParamsError):
        pca_layout(np.full((3, 3), np.nan))


def test_layout_prefers_the_banks_own_map(rng):
    bank = _bank(rng)
    np.testing.assert_array_equal(layout(bank), pca_layout(bank.vectors))
    own = rng.normal(size=(30, 2)).astype(np.float32)
    np.testing.assert_array_equal(layout(_bank(rng, map_xy=own)), own)


def test_the_layout_keeps_the_clusters_apart(rng):
    xy = layout(_bank(rng))
    centres = np.stack([xy[i * 10:(i + 1) * 10].mean(axis=0) for i in range(3)])
    spread = max(np.linalg.norm(xy[i * 10:(i + 1) * 10] - centres[i], axis=1).max() for i in range(3))
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread


def test_place_is_the_inverse_distance_weighted_mean():
    xy = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 8.0]])
    np.testing.assert_allclose(place(xy, [0, 1], [1.0, 1.0]), [2.0, 0.0])
    # weights 1/1 and 1/3: three quarters of the way to the nearer reference
    np.testing.assert_allclose(place(xy, [0, 1], [1.0, 3.0]), [1.0, 0.0])
    np.testing.assert_allclose(place(xy, [1, 2, 0], [0.0, 0.5, 0.2]), [4.0, 0.0])  # exact match
    np.testing.assert_allclose(place(xy, [2], [0.7]), [0.0, 8.0])


def test_a_route_carries_its_neighbours_and_its_place_on_the_map(rng):
    bank = _bank(rng)
    style = bank.vectors[12] + rng.normal(0, 0.05, 16)
    unit = style / np.linalg.norm(style)
    distances = np.linalg.norm(bank.vectors - unit, axis=1)
    nearest = np.argsort(distances)[: bank.k]
    route = Router(bank, generalist="m.gen").route_style(style).to_dict()
    assert [n["ref"] for n in route["neighbours"]] == [bank.refs[i] for i in nearest]
    assert {n["cluster"] for n in route["neighbours"]} == {1}
    np.testing.assert_allclose([n["distance"] for n in route["neighbours"]], distances[nearest],
                               atol=1e-5)
    expected = place(layout(bank), nearest, distances[nearest])
    assert route["map"] == pytest.approx({"x": expected[0], "y": expected[1]}, abs=1e-4)
    # the image lands among its cluster's references, away from the other clusters
    xy = layout(bank)
    own = np.linalg.norm(xy[10:20] - expected, axis=1).min()
    others = np.linalg.norm(np.delete(xy, np.s_[10:20], axis=0) - expected, axis=1).min()
    assert own < others


@pytest.mark.parametrize(("indices", "distances", "match"), [
    ([], [], "non-empty"), ([0, 1], [1.0], "equal"), ([5], [1.0], "0..2"), ([0], [-1.0], ">= 0"),
    ([0], [np.inf], "finite"),
])
def test_place_refuses_bad_neighbours(indices, distances, match):
    with pytest.raises(InvalidParamsError, match=match):
        place(np.zeros((3, 2)), indices, distances)


def test_stylemap_body_and_reference_thumbnails(rng):
    from zoo.service.core import ApiError
    from zoo.service.ui import reference_png, stylemap_json

    thumbnails = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    bank = _bank(rng, thumbnails=thumbnails, refs=[f"img{i}.tif" for i in range(30)])
    body = stylemap_json(Router(bank, generalist="m.general"))
    assert body["layout"] == "pca" and body["thumbnails"] is True and body["ood_threshold"] == 0.5
    assert body["clusters"] == [{"id": 0, "name": "a", "size": 10, "model": "m.a"},
                                {"id": 1, "name": "b", "size": 10, "model": "m.general"},
                                {"id": 2, "name": "c", "size": 10, "model": "m.c"}]
    xy = layout(bank)
    assert [p["ref"] for p in body["points"]] == bank.refs
    assert [p["cluster"] for p in body["points"]] == bank.labels.tolist()
    np.testing.assert_allclose([[p["x"], p["y"]] for p in body["points"]], xy, atol=1e-5)
    png = Image.open(io.BytesIO(reference_png(bank, "img7.tif")))
    np.testing.assert_array_equal(np.asarray(png), thumbnails[7])
    with pytest.raises(ApiError) as missing:
        reference_png(bank, "img99.tif")
    assert missing.value.status == 404 and missing.value.field == "ref"
    with pytest.raises(ApiError, match="no thumbnails") as none:
        reference_png(_bank(rng), "a-0000")
    assert none.value.status == 404
