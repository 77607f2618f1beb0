"""Non-microscopy images for calibrating and testing an out-of-distribution check.

Five kinds (``KINDS``), each split three ways (``SPLITS``) so that calibration, selection and
the final test never share an image:

* ``photo``: crops of scikit-image's bundled, unannotated photographs and test pictures
  (``PHOTOS``: camera, astronaut, coffee, textures such as brick and gravel, text, a
  clock, coins, the Hubble deep field, ...). Its cell and microscopy images (``cell``,
  ``cells3d``, ``human_mitosis``, ``kidney``, ``lily``, ``immunohistochemistry``, ``skin``
  ...) are reserved for an independent evaluation and never used. Each photograph belongs
  to exactly one split (a fixed assignment by sha256 of its name), and all its crops go
  there.
* ``text``: rendered lines of words in random fonts sizes, colours and backgrounds.
* ``chart``: matplotlib line, bar, scatter, histogram and heat-map plots.
* ``ui``: screenshot-like layouts: title bars, panels, buttons, text lines.
* ``noise``: white and 1/f noise, linear and radial gradients, checkerboards, stripes.

The drawn kinds take their seeds from ``(seed, split, kind, index)`` through
``numpy.random.SeedSequence``, so splits are disjoint by construction and every call with the
same arguments returns the same pixels. scikit-image (a development dependency) is imported
only when photos are asked for.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zoo.errors import InvalidParamsError

SPLITS: tuple[str, ...] = ("train", "validation", "test")
KINDS: tuple[str, ...] = ("photo", "text", "chart", "ui", "noise")
PHOTOS: tuple[str, ...] = (
    "astronaut", "brick", "camera", "checkerboard", "chelsea", "clock", "code_page", "coffee",
    "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "lfw_faces",
    "logo", "moon", "page", "retina", "rocket", "shepp_logan_phantom", "stereo_motorcycle",
    "text",
)
"""scikit-image pictures used as negatives (``code_page`` is ours: rendered source code)."""
_SHARES = (0.6, 0.2, 0.2)
_WORDS = ("cell", "model", "zoo", "data", "image", "the", "and", "of", "report", "figure",
          "table", "result", "value", "mean", "error", "config", "server", "alpha", "beta",
          "2024", "42", "0.75", "total", "invoice", "page", "chapter", "section", "menu")


@dataclass(frozen=True, eq=False)
class Negative:
    """One non-microscopy image.

    Attributes:
        image: ``(Y, X)`` grey or ``(Y, X, 3)`` RGB uint8.
        kind: one of ``KINDS``.
        source: what it was made from: a photo name (``"photo:camera"``) or the drawn item
            (``"chart:validation:3"``); images of different splits never share a source.
        split: one of ``SPLITS``.
    """

    image: np.ndarray
    kind: str
    source: str
    split: str


def photo_split(split: str) -> tuple[str, ...]:
    """The photographs that belong to ``split`` (sorted by sha256 of the name, then cut
    60/20/20 into train, validation and test)."""
    _check_split(split)
    ordered = sorted(PHOTOS, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    cuts = np.cumsum([0, *(round(share * len(ordered)) for share in _SHARES)])
    cuts[-1] = len(ordered)
    index = SPLITS.index(split)
    return tuple(sorted(ordered[cuts[index] : cuts[index + 1]]))


def negatives(
    split: str,
    *,
    per_kind: int = 8,
    shape: tuple[int, int] = (256, 256),
    seed: int = 0,
    kinds: Sequence[str] = KINDS,
) -> list[Negative]:
    """``per_kind`` negatives of each of ``kinds`` for one split.

    Photos are cropped at random positions and scales from the split's photographs in turn.

    Args:
        split: one of ``SPLITS``.
        per_kind: images per kind, >= 0.
        shape: ``(Y, X)`` of every image, each at least 32.
        seed: base seed, a non-negative integer.
        kinds: which kinds, each one of ``KINDS``.

    Returns:
        Negatives ordered by kind, then index.

    Raises:
        InvalidParamsError: unknown split or kind, bad count, shape or seed.
    """
    _check_split(split)
    for kind in kinds:
        if kind not in KINDS:
            raise InvalidParamsError(f"unknown kind {kind!r}; valid kinds are {', '.join(KINDS)}")
    if per_kind < 0 or int(seed) != seed or seed < 0:
        raise InvalidParamsError(f"per_kind and seed must be >= 0, got {per_kind}, {seed!r}")
    if len(shape) != 2 or min(shape) < 32:
        raise InvalidParamsError(f"shape must be (Y, X) with both >= 32, got {shape!r}")
    out = []
    for kind in kinds:
        for index in range(per_kind):
            rng = np.random.default_rng(
                np.random.SeedSequence([int(seed), SPLITS.index(split), KINDS.index(kind), index])
            )
            if kind == "photo":
                names = photo_split(split)
                name = names[index % len(names)]
                image, source = _photo_crop(rng, name, shape), f"photo:{name}"
            else:
                image, source = _DRAWERS[kind](rng, shape), f"{kind}:{split}:{index}"
            out.append(Negative(image=image, kind=kind, source=source, split=split))
    return out


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InvalidParamsError(f"unknown split {split!r}; valid splits are {', '.join(SPLITS)}")


# ----------------------------------------------------------------------------- photos


def load_photo(name: str) -> np.ndarray:
    """One of ``PHOTOS`` as ``(Y, X)`` or ``(Y, X, 3)`` uint8 (scikit-image needed).

    Raises:
        InvalidParamsError: ``name`` is not in ``PHOTOS``.
        ImportError: scikit-image is not installed (``pip install scikit-image``).
    """
    if name not in PHOTOS:
        raise InvalidParamsError(f"unknown photo {name!r}; valid photos are {', '.join(PHOTOS)}")
    if name == "code_page":
        return _code_page()
    try:
        from skimage import data
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("photo negatives need scikit-image: pip install scikit-image") from error
    if name == "lfw_faces":
        faces = data.lfw_subset()[:64]
        grid = faces.reshape(8, 8, 25, 25).transpose(0, 2, 1, 3).reshape(200, 200)
        return np.round(grid * 255).astype(np.uint8)
    image = getattr(data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    return image


def _photo_crop(rng: np.random.Generator, name: str, shape: tuple[int, int]) -> np.ndarray:
    photo = load_photo(name)
    side = min(photo.shape[:2])
    size = int(side * rng.uniform(0.35, 1.0))
    aspect = shape[1] / shape[0]
    height, width = min(size, photo.shape[0]), min(int(size * aspect), photo.shape[1])
    y = int(rng.integers(0, photo.shape[0] - height + 1))
    x = int(rng.integers(0, photo.shape[1] - width + 1))
    crop = Image.fromarray(np.ascontiguousarray(photo[y : y + height, x : x + width]))
    return np.asarray(crop.resize((shape[1], shape[0]), Image.BILINEAR))


# ----------------------------------------------------------------------------- drawn kinds


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, int(size)))


def _colour(rng: np.random.Generator, dark: bool | None = None) -> tuple[int, int, int]:
    if dark is None:
        return tuple(int(v) for v in rng.integers(0, 256, 3))
    low, high = (0, 90) if dark else (170, 256)
    return tuple(int(v) for v in rng.integers(low, high, 3))


def _text(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    dark_on_light = rng.random() < 0.7
    canvas = Image.new("RGB", (shape[1], shape[0]), _colour(rng, dark=not dark_on_light))
    draw = ImageDraw.Draw(canvas)
    size = int(rng.integers(9, 40))
    y = int(rng.integers(0, size))
    while y < shape[0]:
        words = " ".join(rng.choice(_WORDS, int(rng.integers(2, 12))))
        draw.text((int(rng.integers(0, 20)), y), words, fill=_colour(rng, dark=dark_on_light),
                  font=_font(size))
        y += int(size * rng.uniform(1.2, 2.0))
    return _maybe_grey(rng, np.asarray(canvas))


def _chart(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(shape[1] / 64, shape[0] / 64), dpi=64)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    x = np.linspace(0, 10, 60)
    kind = int(rng.integers(0, 5))
    if kind == 0:
        for _ in range(int(rng.integers(1, 4))):
            marker = "o" if rng.random() < 0.3 else None
            axes.plot(x, np.cumsum(rng.normal(0, 1, x.size)), marker=marker)
    elif kind == 1:
        bars = int(rng.integers(3, 12))
        axes.bar(np.arange(bars), rng.uniform(1, 10, bars))
    elif kind == 2:
        axes.scatter(rng.normal(0, 1, 200), rng.normal(0, 1, 200), s=rng.uniform(2, 30), alpha=0.6)
    elif kind == 3:
        axes.hist(rng.gamma(2.0, 1.0, 500), bins=int(rng.integers(8, 40)))
    else:
        axes.imshow(rng.random((8, 12)), cmap=str(rng.choice(["viridis", "magma", "coolwarm"])))
    axes.set_title(" ".join(rng.choice(_WORDS, 3)), fontsize=8)
    if rng.random() < 0.5:
        axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=64)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(image)


def _ui(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    dark = rng.random() < 0.35
    canvas = Image.new("RGB", (shape[1], shape[0]), _colour(rng, dark=dark))
    draw = ImageDraw.Draw(canvas)
    bar = int(rng.integers(12, 30))
    draw.rectangle((0, 0, shape[1], bar), fill=_colour(rng))
    for cx in range(3):
        draw.ellipse((6 + 14 * cx, bar // 2 - 4, 14 + 14 * cx, bar // 2 + 4), fill=_colour(rng))
    for _ in range(int(rng.integers(3, 10))):
        x0, y0 = int(rng.integers(0, shape[1] - 20)), int(rng.integers(bar, shape[0] - 10))
        x1 = min(shape[1] - 1, x0 + int(rng.integers(20, shape[1] // 2)))
        y1 = min(shape[0] - 1, y0 + int(rng.integers(10, shape[0] // 3)))
        draw.rounded_rectangle((x0, y0, x1, y1), radius=int(rng.integers(0, 8)),
                               fill=_colour(rng, dark=not dark), outline=_colour(rng))
        draw.text((x0 + 4, y0 + 2), " ".join(rng.choice(_WORDS, 2)), fill=_colour(rng, dark=dark),
                  font=_font(int(rng.integers(9, 16))))
    return np.asarray(canvas)


def _noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    kind = int(rng.integers(0, 5))
    if kind == 0:
        field = rng.random(shape)
    elif kind == 1:  # 1/f noise
        spectrum = np.fft.fft2(rng.standard_normal(shape))
        freq = np.hypot(*np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), indexing="ij"))
        field = np.real(np.fft.ifft2(spectrum / np.maximum(freq, 1.0 / max(shape)) ** rng.uniform(0.8, 1.6)))
    elif kind == 2:
        angle = rng.uniform(0, 2 * np.pi)
        field = np.cos(angle) * yy + np.sin(angle) * xx
    elif kind == 3:
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        field = np.hypot(yy - cy, xx - cx)
    else:
        period = rng.uniform(4, 40)
        field = (np.floor(yy / period) + np.floor(xx / period)) % 2 if rng.random() < 0.5 else \
            np.sin(2 * np.pi * (yy * rng.uniform(-1, 1) + xx) / period)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-9)
    if rng.random() < 0.5:
        tint = rng.uniform(0.2, 1.0, 3)
        return np.round(field[..., None] * tint * 255).astype(np.uint8)
    return np.round(field * 255).astype(np.uint8)


def _maybe_grey(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    return np.round(rgb.mean(-1)).astype(np.uint8) if rng.random() < 0.3 else rgb


def _code_page() -> np.ndarray:
    """A fixed page of rendered source code (this module's first lines), grey."""
    lines = (__doc__ or "").splitlines()[:24]
    canvas = Image.new("L", (512, 400), 250)
    draw = ImageDraw.Draw(canvas)
    for row, line in enumerate(lines):
        draw.text((8, 6 + 16 * row), line, fill=20, font=_font(12))
    return np.asarray(canvas)


_DRAWERS: dict[str, Callable[[np.random.Generator, tuple[int, int]], np.ndarray]] = {
    "text": _text,
    "chart": _chart,
    "ui": _ui,
    "noise": _noise,
}
