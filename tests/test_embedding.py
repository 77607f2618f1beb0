"""zoo.embedding: the style pass (routing style + diameter) and its scale awareness."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.synthetic import generate
from zoo.embedding import embed_many, mean_style, style_crops, style_pass
from zoo.errors import InvalidParamsError
from zoo.params import EmbedParams, PredictParams
from zoo.predict import Predictor

PARAMS = PredictParams(cyto_channel=0, nucleus_channel=1)


def test_crops_cover_the_model_scale_and_a_small_image_gives_fewer():
    stack = np.random.default_rng(0).random((2, 400, 300)).astype(np.float32)
    crops = style_crops(stack, 0.5, EmbedParams(tile=64, n_tiles=4))
    assert crops.shape == (4, 2, 64, 64) and crops.dtype == np.float32
    one = style_crops(stack, 0.5, EmbedParams(tile=64, n_tiles=1))
    assert one.shape == (1, 2, 64, 64)
    # a crop holds 128 native pixels at scale 0.5: the central one is the centre resized
    centre = stack[:, 136:264, 86:214]
    np.testing.assert_allclose(one[0], centre.reshape(2, 64, 2, 64, 2).mean(axis=(2, 4)),
                               atol=0.05)
    tiny = style_crops(stack[:, :40, :30], 1.0, EmbedParams(tile=64, n_tiles=9))
    assert tiny.shape == (1, 2, 64, 64)  # every crop is the whole image: kept once
    assert np.all(np.isfinite(tiny)) and tiny[0, :, :40, :30].std() > 0
    with pytest.raises(InvalidParamsError, match="scale"):
        style_crops(stack, 0.0, EmbedParams())
    with pytest.raises(InvalidParamsError, match="n_tiles"):
        EmbedParams(n_tiles=3)


def test_mean_style_is_a_unit_vector_of_the_unit_rows():
    rows = np.array([[3.0, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(mean_style(rows), [2**-0.5, 2**-0.5], rtol=1e-6)


def test_style_pass_is_deterministic_and_unit_length(small_model):
    predictor = Predictor(small_model)
    image = generate("cyto", seed=3, shape=(160, 200)).image
    first = style_pass(predictor, predictor.prepare(image, PARAMS), PARAMS)
    again = style_pass(predictor, predictor.prepare(image.copy(), PARAMS), PARAMS)
    np.testing.assert_array_equal(first.style, again.style)
    assert first.style.shape == (small_model.config.style_dim,)
    assert abs(np.linalg.norm(first.style) - 1) < 1e-5
    assert first.diameter > 0 and set(first.timings) == {"diameter", "style"}


def test_the_style_follows_the_cells_not_the_pixels(small_model):
    """An image at twice the magnification (its diameter doubled) gives the same style."""
    predictor = Predictor(small_model)
    sample = generate("nuclei", seed=5, shape=(192, 192))
    double = np.kron(sample.image, np.ones((2, 2, 1), sample.image.dtype))
    params = PredictParams(cyto_channel=0, nucleus_channel=1, diameter=sample.diameter)
    base = style_pass(predictor, predictor.prepare(sample.image, params), params)
    params2 = PredictParams(cyto_channel=0, nucleus_channel=1, diameter=2 * sample.diameter)
    upsampled = style_pass(predictor, predictor.prepare(double, params2), params2)
    other = generate("phase", seed=5, shape=(192, 192)).image
    different = style_pass(predictor, predictor.prepare(other, params), params)
    assert float(base.style @ upsampled.style) > 0.99
    assert float(base.style @ upsampled.style) > float(base.style @ different.style)


def test_embed_many_equals_style_pass(small_model):
    predictor = Predictor(small_model)
    images = [generate(style, seed=1, shape=(96, 128)).image for style in ("cyto", "phase")]
    styles, diameters = embed_many(predictor, images, PARAMS, EmbedParams(n_tiles=1))
    for image, style, diameter in zip(images, styles, diameters):
        single = style_pass(predictor, predictor.prepare(image, PARAMS), PARAMS,
                            EmbedParams(n_tiles=1))
        np.testing.assert_allclose(style, single.style, atol=1e-6)
        assert diameter == pytest.approx(single.diameter)
    empty_styles, empty_diameters = embed_many(predictor, [], PARAMS)
    assert empty_styles.shape == (0, small_model.config.style_dim) and empty_diameters.size == 0
