from __future__ import annotations

import numpy as np
import pytest

from zoo.backends import OnnxRunner, TorchRunner, export_onnx
from zoo.errors import InvalidImageError, InvalidParamsError
from zoo.model import SegmentationModel, SizeRegressor
from zoo.params import FlowParams, PredictParams
from zoo.predict import Predictor
from zoo.settings import Settings

NO_QC = FlowParams(flow_threshold=0.0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    base = rng.gamma(2.0, 50.0, size=(120, 168)).astype(np.float32)
    return np.stack([base, base[::-1]], axis=-1)


def test_prediction_shapes_dtypes_and_timings(small_model, image):
    result = Predictor(small_model).predict(image[..., 0], PredictParams(flow=NO_QC))
    assert result.labels.shape == image.shape[:2] and result.labels.dtype == np.uint16
    assert result.flows.shape == (2, *image.shape[:2]) and result.flows.dtype == np.float32
    assert result.cellprob.shape == image.shape[:2]
    assert result.style.shape == (small_model.config.style_dim,)
    assert abs(np.linalg.norm(result.style) - 1) < 1e-5
    assert result.n_cells > 0
    assert {"preprocess", "network", "postprocess", "total"} <= set(result.timings)
    assert result.timings["total"] >= result.timings["network"]


def test_torch_and_onnx_backends_give_the_same_masks(small_model, image, tmp_path):
    params = PredictParams(flow=NO_QC, nucleus_channel=1, tile_size=64)
    by_torch = Predictor(small_model, runner=TorchRunner(small_model.net, device="cpu"))
    onnx_path = export_onnx(small_model.net, tmp_path / "net.onnx")
    by_onnx = Predictor(small_model, runner=OnnxRunner(onnx_path, device="cpu"))
    a, b = by_torch.predict(image, params), by_onnx.predict(image, params)
    assert a.n_cells > 0
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.flows, b.flows, atol=1e-4)


def test_onnx_backend_is_chosen_by_settings(small_model, image, tmp_path):
    settings = Settings(backend="onnx", device="cpu", home=tmp_path)
    predictor = Predictor(small_model, settings)
    assert isinstance(predictor.runner, OnnxRunner)
    assert list((tmp_path / "onnx").glob("*.onnx"))
    reference = Predictor(small_model, Settings(device="cpu", home=tmp_path))
    params = PredictParams(flow=NO_QC)
    np.testing.assert_array_equal(
        predictor.predict(image, params).labels, reference.predict(image, params).labels
    )


def test_diameter_given_default_and_estimated(small_model, image):
    predictor = Predictor(small_model)
    assert predictor.predict(image, PredictParams(diameter=40.0, flow=NO_QC)).diameter == 40.0
    assert predictor.predict(image, PredictParams(flow=NO_QC)).diameter == small_model.diam_mean
    weight = np.full(small_model.config.style_dim, 0.1, dtype=np.float32)
    sized = SegmentationModel(net=small_model.net, diam_mean=20.0, size=SizeRegressor(weight, 0.3))
    result = Predictor(sized).predict(image, PredictParams(flow=NO_QC))
    stack = Predictor(sized).prepare(image, PredictParams())
    _, style = Predictor(sized).network_maps(stack, PredictParams())
    assert result.diameter == pytest.approx(20.0 * np.exp(style @ weight + 0.3), rel=1e-5)
    assert result.labels.shape == image.shape[:2]


def test_flip_augmentation_is_flip_equivariant(small_model):
    rng = np.random.default_rng(3)
    image = rng.gamma(2.0, 50.0, size=(64, 96)).astype(np.float32)
    predictor = Predictor(small_model)
    params = PredictParams(augment=True, diameter=small_model.diam_mean, flow=NO_QC)
    result = predictor.predict(image, params)
    flipped = predictor.predict(image[::-1], params)
    np.testing.assert_allclose(flipped.cellprob, result.cellprob[::-1], atol=1e-4)
    np.testing.assert_allclose(flipped.flows[0], -result.flows[0][::-1], atol=1e-4)
    np.testing.assert_allclose(flipped.flows[1], result.flows[1][::-1], atol=1e-4)


def test_large_image_is_tiled(small_model):
    rng = np.random.default_rng(4)
    image = rng.gamma(2.0, 50.0, size=(300, 520)).astype(np.float32)
    result = Predictor(small_model).predict(image, PredictParams(tile_size=128, flow=NO_QC))
    assert result.labels.shape == (300, 520)
    assert np.isfinite(result.cellprob).all()


def test_tiny_and_flat_images_give_empty_masks(small_model):
    predictor = Predictor(small_model)
    for image in (np.zeros((1, 1), np.uint8), np.full((40, 30), 7, np.uint16)):
        result = predictor.predict(image, PredictParams(flow=NO_QC))
        assert result.labels.shape == image.shape
        assert np.isfinite(result.cellprob).all()


def test_bad_images_and_params_raise(small_model):
    predictor = Predictor(small_model)
    with pytest.raises(InvalidImageError, match="NaN"):
        predictor.predict(np.full((32, 32), np.nan, np.float32))
    with pytest.raises(InvalidImageError, match="channel 3"):
        predictor.predict(np.zeros((32, 32, 2)), PredictParams(nucleus_channel=3))
    with pytest.raises(InvalidImageError, match="shaped"):
        predictor.predict(np.zeros((2, 3, 32, 32)))
    with pytest.raises(InvalidImageError, match="dtype"):
        predictor.predict(np.zeros((8, 8), dtype=bool))
    with pytest.raises(InvalidParamsError, match="diameter"):
        PredictParams(diameter=-1)
    with pytest.raises(InvalidParamsError, match="percentiles"):
        PredictParams(percentiles=(99, 1))
