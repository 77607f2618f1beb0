"""Every picture cellzoo draws: overlays, false-colour composites, AP curves, the style map,
sample sheets of annotated images.

Pixels (``composite``, ``overlay``) are numpy only. The plots import matplotlib when called
and draw on a ``Figure`` of their own (pyplot's global state is never touched), so they are
safe in threads and servers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zoo.errors import InvalidImageError
from zoo.io.decode import as_yxc
from zoo.io.labels import check_labels
from zoo.io.vector import outlines

if TYPE_CHECKING:
    from zoo.cluster import StyleBank

#: Most query stars that get a name on the style map.
MAX_NAMED = 40
#: Channel colours of a composite: 1 channel grey; 2 green + magenta (cytoplasm, nucleus,
#: Cellpose's convention); 3 red, green, blue; more: the first three as RGB.
_TWO_CHANNELS = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], dtype=np.float32)


def percentile_scale(channel: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> np.ndarray:
    """One channel scaled so its ``lower`` percentile is 0 and ``upper`` is 1, clipped.

    Raises:
        InvalidImageError: the channel holds NaN or infinite values.
    """
    channel = np.asarray(channel, dtype=np.float32)
    if not np.all(np.isfinite(channel)):
        raise InvalidImageError("image contains NaN or infinite values")
    low, high = np.percentile(channel, [lower, upper])
    return np.clip((channel - low) / max(float(high - low), 1e-6), 0.0, 1.0)


def composite(image: np.ndarray, *, lower: float = 1.0, upper: float = 99.0) -> np.ndarray:
    """A false-colour view of any image: ``(Y, X, 3)`` float32 RGB in [0, 1].

    Each channel is percentile-scaled on its own. One channel is grey; two are green
    (first, the cytoplasm) and magenta (second, the nucleus); three are red, green, blue;
    more than three show the first three.

    Args:
        image: ``(Y, X)`` or ``(Y, X, C)`` of any real dtype.
        lower: percentile mapped to black.
        upper: percentile mapped to full brightness.
    """
    stack = as_yxc(np.asarray(image))
    channels = [percentile_scale(stack[..., c], lower, upper) for c in range(min(3, stack.shape[-1]))]
    if len(channels) == 1:
        return np.repeat(channels[0][..., None], 3, axis=-1)
    if len(channels) == 2:
        return np.clip(np.stack(channels, -1) @ _TWO_CHANNELS, 0.0, 1.0).astype(np.float32)
    return np.stack(channels, -1).astype(np.float32)


def composite_legend(n_channels: int) -> list[str]:
    """The colour each channel of ``composite`` is drawn in, by channel index.

    Args:
        n_channels: how many channels the image has (>= 1).

    Returns:
        One colour name per shown channel (at most three): ``["grey"]``,
        ``["green", "magenta"]`` or ``["red", "green", "blue"]``.
    """
    if n_channels < 1:
        raise InvalidImageError(f"an image has at least one channel, got {n_channels}")
    return [["grey"], ["green", "magenta"], ["red", "green", "blue"]][min(n_channels, 3) - 1]


def label_colours(ids: np.ndarray) -> np.ndarray:
    """``(N,)`` ids → ``(N, 3)`` uint8 RGB: hue = frac(id · golden ratio), s = 0.85, v = 1.

    The same id has the same colour on every run and in every picture.
    """
    hue = (ids.astype(np.float64) * 0.6180339887498949) % 1.0 * 6.0
    sector, frac = np.floor(hue).astype(np.int64) % 6, hue - np.floor(hue)
    low, falling, rising = 0.15, 1.0 - 0.85 * frac, 1.0 - 0.85 * (1.0 - frac)
    one = np.ones_like(hue)
    table = np.stack(
        [  # (r, g, b) per HSV sector
            np.stack([one, rising, low * one], -1),
            np.stack([falling, one, low * one], -1),
            np.stack([low * one, one, rising], -1),
            np.stack([low * one, falling, one], -1),
            np.stack([rising, low * one, one], -1),
            np.stack([one, low * one, falling], -1),
        ]
    )
    rgb = table[sector, np.arange(ids.size)]
    return np.round(rgb * 255).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cell outlines in colour over the image's false-colour composite (``composite``).

    Args:
        image: ``(Y, X)`` or ``(Y, X, C)`` image of any real dtype.
        labels: ``(Y, X)`` integer labels, 0 = background.

    Returns:
        ``(Y, X, 3)`` uint8 RGB, ready for :func:`zoo.io.write_png`.

    Raises:
        InvalidImageError: shapes differ, or the image holds NaN or infinite values.
    """
    labels = check_labels(labels, ndim=2)
    if np.asarray(image).shape[:2] != labels.shape:
        raise InvalidImageError(f"image {np.shape(image)} and labels {labels.shape} differ in (Y, X)")
    rgb = np.round(composite(image) * 255).astype(np.uint8)
    edge = outlines(labels)
    rgb[edge] = label_colours(labels[edge])
    return rgb


def sample_panel(
    image: np.ndarray,
    channels: tuple[int, int | None],
    labels: np.ndarray,
    unannotated: np.ndarray | None = None,
    *,
    outlines: bool = True,
) -> np.ndarray:
    """How a person would look at an annotated image: ``(Y, X, 3)`` float32 RGB in [0, 1].

    RGB images (3 channels) keep their colours (uint8 as stored; other dtypes on one scale
    for all three, 0.5th-99.8th percentile); otherwise the ``channels = (cyto, nucleus)`` pair is shown grey (no
    nucleus) or green + magenta (``composite``). Labelled cells are outlined in yellow,
    ``unannotated`` objects in red.

    Args:
        image: ``(Y, X)`` or ``(Y, X, C)`` of any real dtype.
        channels: ``(cyto, nucleus)`` indices; nucleus None for none.
        labels: ``(Y, X)`` integer labels, 0 = background.
        unannotated: ``(Y, X)`` integer labels of visible, unlabelled objects, or None.
        outlines: draw the outlines.
    """
    stack = as_yxc(np.asarray(image))
    if stack.shape[-1] == 3:
        low, high = (0.0, 255.0) if stack.dtype == np.uint8 else np.percentile(stack, [0.5, 99.8])
        rgb = np.clip((stack.astype(np.float32) - low) / max(float(high - low), 1e-6), 0.0, 1.0)
    else:
        picked = [stack[..., channels[0]]]
        if channels[1] is not None:
            picked.append(stack[..., channels[1]])
        rgb = composite(np.stack(picked, axis=-1), lower=0.5, upper=99.8)
    rgb = np.array(rgb, dtype=np.float32)
    if outlines:
        rgb[_outline(labels)] = (1.0, 0.9, 0.0)
        if unannotated is not None:
            rgb[_outline(unannotated)] = (1.0, 0.15, 0.15)
    return rgb


def plot_sample_sheet(
    rows: Sequence[Sequence[tuple[str, np.ndarray]]], path: str | Path, *, panel_inches: float = 3.0
) -> Path:
    """A grid of captioned pictures, one row per entry of ``rows``.

    Args:
        rows: each row a sequence of ``(caption, (Y, X, 3) RGB in [0, 1])``; rows may differ
            in length.
        path: the PNG to write; parent folders are created.
        panel_inches: size of one panel.
    """
    from matplotlib.figure import Figure

    n_cols = max((len(row) for row in rows), default=1)
    figure = Figure(figsize=(panel_inches * n_cols, (panel_inches + 0.2) * len(rows)), dpi=100)
    axes = figure.subplots(max(len(rows), 1), n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            axes[r, c].axis("off")
            if c < len(row):
                caption, picture = row[c]
                axes[r, c].imshow(picture, interpolation="nearest")
                axes[r, c].set_title(caption, fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _outline(labels: np.ndarray) -> np.ndarray:
    return outlines(labels) if np.asarray(labels).any() else np.zeros(np.shape(labels), bool)


def plot_ap_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Average precision against IoU threshold, one line per entry of ``curves``.

    Args:
        curves: label → (IoU thresholds, AP at each).
        path: the PNG to write; parent folders are created.
        title: the plot's title.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4), dpi=120)
    axes = figure.subplots()
    for label, (thresholds, ap) in curves.items():
        axes.plot(thresholds, ap, marker="o", label=label)
    axes.set(xlabel="IoU threshold", ylabel="average precision", ylim=(0, 1))
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def plot_roc(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], float]],
    path: str | Path,
    *,
    threshold_rates: Mapping[str, tuple[float, float]] | None = None,
    title: str | None = None,
) -> Path:
    """ROC curves of an out-of-distribution score, one line per entry of ``curves``.

    Args:
        curves: label → (false alarms ``(T,)``, detections ``(T,)``, AUROC); false alarms
            are in-distribution images flagged, detections out-of-distribution ones flagged.
        path: the PNG to write; parent folders are created.
        threshold_rates: label → (false alarm rate, detection rate) at the chosen threshold,
            drawn as a marker on that label's curve.
        title: the plot's title.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4.5), dpi=120)
    axes = figure.subplots()
    for label, (false_alarms, detections, auroc) in curves.items():
        line, = axes.plot(false_alarms, detections, label=f"{label} (AUROC {auroc:.3f})",
                          drawstyle="steps-post")
        if threshold_rates and label in threshold_rates:
            axes.plot(*threshold_rates[label], marker="o", color=line.get_color())
    axes.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    axes.set(xlabel="in-distribution images flagged", ylabel="non-microscopy images flagged",
             xlim=(-0.01, 1), ylim=(0, 1.01))
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)


def embed_2d(bank_vectors: np.ndarray, queries: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """t-SNE of the bank's and the queries' styles together: ``(N + M, 2)`` float.

    Both are fitted in one run (t-SNE cannot place new points on an old map), with a fixed
    ``random_state``, so the same inputs give the same map.
    """
    from sklearn.manifold import TSNE

    points = np.concatenate([bank_vectors, queries]).astype(np.float64)
    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                metric="cosine" if len(points) > 3 else "euclidean")
    return tsne.fit_transform(points)


def plot_style_map(
    bank: StyleBank, queries: Sequence[tuple[str, np.ndarray]], path: str | Path
) -> Path:
    """The style map: reference styles coloured by cluster, ``queries`` (name, style) as
    black stars, the first ``MAX_NAMED`` of them named."""
    import matplotlib
    from matplotlib.figure import Figure

    styles = np.stack([style for _, style in queries])
    xy = embed_2d(bank.vectors, styles)
    reference, placed = xy[: len(bank.vectors)], xy[len(bank.vectors):]
    figure = Figure(figsize=(8, 6.5), dpi=120)
    axes = figure.subplots()
    colours = matplotlib.colormaps["tab10"]
    for cluster, name in enumerate(bank.names):
        members = bank.labels == cluster
        model = bank.specialists.get(cluster, "generalist")
        axes.scatter(*reference[members].T, s=14, alpha=0.7, color=colours(cluster % 10),
                     label=f"{cluster}: {name} → {model} ({members.sum()})")
    axes.scatter(*placed.T, marker="*", s=220, color="black", edgecolor="white",
                 linewidth=0.8, label="your images", zorder=3)
    for (name, _), (x, y) in list(zip(queries, placed))[:MAX_NAMED]:
        axes.annotate(name, (x, y), xytext=(6, 4), textcoords="offset points",
                      fontsize=8, zorder=4)
    axes.set(xlabel="t-SNE 1", ylabel="t-SNE 2",
             title=f"Style map: {len(bank.vectors)} reference styles by cluster, "
                   f"{len(queries)} image(s) as stars")
    axes.legend(fontsize=8, loc="best", title="cluster → model (references)",
                title_fontsize=8, framealpha=0.85)
    axes.grid(alpha=0.2)
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    return path
