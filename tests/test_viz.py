"""zoo.viz: false-colour composites and overlays (the plots are exercised by the CLI tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from zoo.errors import InvalidImageError
from zoo.io import outlines, read_image, write_png
from zoo.viz import composite, composite_legend, label_colours, overlay

RNG = np.random.default_rng(0)


@pytest.fixture
def labels() -> np.ndarray:
    labels = np.zeros((40, 50), np.uint16)
    labels[5:15, 5:15] = 1
    labels[20:30, 8:20] = 5
    labels[10:25, 30:45] = 7
    return labels


def test_overlay_colours_outlines_on_grey(tmp_path: Path, labels: np.ndarray) -> None:
    image = ndimage.gaussian_filter((labels > 0).astype(float), 2) * 500 + RNG.normal(
        100, 10, labels.shape
    )
    rgb = overlay(image, labels)
    assert rgb.shape == (*labels.shape, 3) and rgb.dtype == np.uint8
    edge = outlines(labels)
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    assert grey[~edge].all() and not grey[edge].any()
    np.testing.assert_array_equal(rgb[edge], label_colours(labels[edge]))  # fixed per id
    np.testing.assert_array_equal(overlay(image, labels), rgb)
    path = write_png(tmp_path / "overlay.png", rgb)
    np.testing.assert_array_equal(read_image(path), rgb)
    with pytest.raises(InvalidImageError, match=r"\(5, 5\)"):
        overlay(np.zeros((5, 5)), labels)


def test_two_channels_are_green_and_magenta(labels: np.ndarray) -> None:
    cyto = (labels == 1).astype(np.float32) * 1000
    nucleus = (labels == 5).astype(np.float32) * 1000
    rgb = composite(np.stack([cyto, nucleus], axis=-1), lower=0, upper=100)
    np.testing.assert_allclose(rgb[labels == 1], [[0, 1, 0]] * int((labels == 1).sum()))
    np.testing.assert_allclose(rgb[labels == 5], [[1, 0, 1]] * int((labels == 5).sum()))
    np.testing.assert_allclose(rgb[labels == 0], 0)
    overlaid = overlay(np.stack([cyto, nucleus], axis=-1), labels)
    inside = (labels == 1) & ~outlines(labels)
    assert (overlaid[inside] == [0, 255, 0]).all()  # the cytoplasm stays green under the overlay


def test_three_or_more_channels_show_the_first_three_as_rgb(labels: np.ndarray) -> None:
    planes = [(labels == k).astype(np.float32) for k in (1, 5, 7)]
    image = np.stack([*planes, np.ones_like(planes[0])], axis=-1)
    rgb = composite(image, lower=0, upper=100)
    for channel, k in enumerate((1, 5, 7)):
        assert (rgb[labels == k][:, channel] == 1).all()
        assert (np.delete(rgb[labels == k], channel, axis=1) == 0).all()
    with pytest.raises(InvalidImageError, match="NaN"):
        composite(np.full((4, 4), np.nan))


def test_sample_panel_keeps_rgb_colours_and_outlines_cells() -> None:
    from zoo.viz import sample_panel

    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[..., 0], image[..., 2] = 200, 100
    labels = np.zeros((16, 16), dtype=np.int32)
    labels[4:10, 4:10] = 1
    panel = sample_panel(image, (0, None), labels, np.zeros_like(labels))
    assert panel.shape == (16, 16, 3) and panel.dtype == np.float32
    np.testing.assert_allclose(panel[0, 0], (200 / 255, 0.0, 100 / 255), atol=1e-6)
    np.testing.assert_allclose(panel[4, 4], (1.0, 0.9, 0.0))  # outline in yellow
    grey = sample_panel(image[..., :2], (0, None), labels, outlines=False)
    assert np.allclose(grey[..., 0], grey[..., 1])  # one channel shown grey


COLOUR_NAMES = {"grey": (1, 1, 1), "red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1),
                "magenta": (1, 0, 1)}


@pytest.mark.parametrize("n_channels", [1, 2, 3, 5])
def test_composite_legend_names_the_colour_each_channel_gets(n_channels: int) -> None:
    legend = composite_legend(n_channels)
    assert len(legend) == min(n_channels, 3)
    for channel, name in enumerate(legend):
        image = np.zeros((4, 4, n_channels), np.float32)
        image[:2, :, channel] = 1.0  # this channel alone is bright in the top half
        rgb = composite(image[..., 0] if n_channels == 1 else image, lower=0, upper=100)
        np.testing.assert_allclose(rgb[0, 0], COLOUR_NAMES[name])
    with pytest.raises(InvalidImageError, match="0"):
        composite_legend(0)
