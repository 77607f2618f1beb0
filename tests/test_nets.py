from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import SMALL

from zoo.backends import export_onnx
from zoo.errors import InvalidParamsError, ZooError
from zoo.model import SegmentationModel, SizeRegressor
from zoo.nets.cpnet import CPNet, NetConfig, count_parameters


def test_cellpose_width_has_about_6_6m_parameters():
    assert 6.4e6 < count_parameters(CPNet(NetConfig())) < 6.8e6


@pytest.mark.parametrize("shape", [(1, 2, 64, 64), (3, 2, 48, 80)])
def test_forward_shapes_and_unit_style(shape):
    net = CPNet(SMALL).eval()
    with torch.no_grad():
        outputs, style = net(torch.randn(*shape))
    assert outputs.shape == (shape[0], 3, *shape[2:])
    assert style.shape == (shape[0], SMALL.style_dim)
    np.testing.assert_allclose(style.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_style_conditions_the_decoder():
    net = CPNet(SMALL).eval()
    x = torch.randn(1, 2, 32, 32)
    features = net.encode(x)
    outputs = []
    for style in (net.style_of(features[-1]), torch.nn.functional.normalize(torch.ones(1, 64))):
        y = features[-1]
        for i, block in enumerate(net.up):
            if i:
                y = torch.nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")
            y = block(y, features[-1 - i], style)
        outputs.append(net.head(y))
    with torch.no_grad():
        reference, _ = net(x)
    torch.testing.assert_close(outputs[0], reference)
    assert not torch.allclose(outputs[0], outputs[1])


def test_invalid_config_raises():
    with pytest.raises(InvalidParamsError, match="kernel_size"):
        NetConfig(kernel_size=4)
    with pytest.raises(InvalidParamsError, match="channels"):
        NetConfig(channels=(2, 8))


def test_safetensors_round_trip(tmp_path):
    model = SegmentationModel.create(SMALL, diam_mean=17.0, seed=3)
    model.size = SizeRegressor(weight=np.linspace(-1, 1, 64).astype(np.float32), bias=0.25)
    path = model.save(tmp_path / "m.safetensors")
    loaded = SegmentationModel.load(path)
    assert loaded.config == SMALL and loaded.diam_mean == 17.0
    assert loaded.size is not None and loaded.size.bias == 0.25
    np.testing.assert_array_equal(loaded.size.weight, model.size.weight)
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x)[0], model.net(x)[0], rtol=0, atol=0)


def test_half_precision_file_is_close(tmp_path):
    model = SegmentationModel.create(SMALL, seed=1)
    full = model.save(tmp_path / "full.safetensors")
    half = model.save(tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            SegmentationModel.load(half).net(x)[0], model.net(x)[0], atol=5e-2, rtol=1e-2
        )


def test_load_refuses_other_files(tmp_path):
    pickle_path = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(1)}, pickle_path)
    with pytest.raises(ZooError, match="safetensors"):
        SegmentationModel.load(pickle_path)
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(foreign))
    with pytest.raises(ZooError, match="no cellzoo metadata"):
        SegmentationModel.load(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ZooError, match="not a readable"):
        SegmentationModel.load(garbage)


def test_size_regressor_fits_a_linear_law(rng):
    styles = rng.normal(size=(200, 8))
    weight = rng.normal(size=8) * 0.1
    diameters = 30.0 * np.exp(styles @ weight + 0.2)
    regressor = SizeRegressor.fit(styles, diameters, diam_mean=30.0, ridge=1e-6)
    predicted = [regressor.predict(s, 30.0) for s in styles[:10]]
    np.testing.assert_allclose(predicted, diameters[:10], rtol=1e-4)


def test_onnx_matches_torch_with_dynamic_axes(tmp_path):
    net = CPNet(SMALL).eval()
    path = export_onnx(net, tmp_path / "net.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 2, 64, 64), (3, 2, 40, 96)]:
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        outputs, style = session.run(["outputs", "style"], {"image": x})
        with torch.no_grad():
            ref_outputs, ref_style = net(torch.from_numpy(x))
        assert np.abs(outputs - ref_outputs.numpy()).max() < 1e-4
        assert np.abs(style - ref_style.numpy()).max() < 1e-4


def test_onnx_matches_torch_at_cellpose_width(tmp_path):
    net = CPNet(NetConfig()).eval()
    path = export_onnx(net, tmp_path / "net.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(2, 2, 64, 64)).astype(np.float32)
    outputs, style = session.run(["outputs", "style"], {"image": x})
    with torch.no_grad():
        ref_outputs, ref_style = net(torch.from_numpy(x))
    assert np.abs(outputs - ref_outputs.numpy()).max() < 1e-4
    assert np.abs(style - ref_style.numpy()).max() < 1e-4
