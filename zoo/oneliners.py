"""One-line entry points: ``zoo.segment(image)`` and ``zoo.route(image)``.

Both use one module-level ``Zoo`` (the shipped zoo, settings from the environment), created
on first use under a lock so concurrent first calls share it; pass ``using=`` to run on a
``Zoo`` of your own. Keyword arguments are the fields of :class:`~zoo.predict.PredictParams`,
plus ``channels`` as the command line writes it (``"0,1"`` or ``(0, 1)``: cytoplasm, then
nucleus).

Example:
    >>> import zoo
    >>> result = zoo.segment("cells.tif", channels="0,1")        # doctest: +SKIP
    >>> result.model, result.prediction.n_cells                  # doctest: +SKIP
    ('cpnet.cyto', 214)
    >>> zoo.route("cells.tif", channels="0,1").ood               # doctest: +SKIP
    False
"""

from __future__ import annotations

import difflib
import threading
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.errors import InvalidParamsError

if TYPE_CHECKING:
    from zoo.io import ImageSource
    from zoo.params import PredictParams
    from zoo.pipeline import Segmentation, Zoo
    from zoo.router import RouteResult

_default: Zoo | None = None
_lock = threading.Lock()


def default_zoo() -> Zoo:
    """The shared ``Zoo`` (embedded registry, ``Settings.from_env()``), created once."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                from zoo.pipeline import Zoo

                _default = Zoo()
    return _default


def segment(
    image: np.ndarray | ImageSource, model: str = "auto", *, using: Zoo | None = None,
    **params: Any,
) -> Segmentation:
    """Segment one image with ``model`` (``"auto"``: route it to its specialist first).

    Args:
        image: ``(Y, X)`` or ``(Y, X, C)`` channels-last array, or a TIFF/PNG/JPEG path
            (or its bytes), read with ``zoo.io.read_image``.
        model: ``"auto"``, a registry name or alias, or a ``.safetensors`` file.
        using: the ``Zoo`` to run on; default: the shared one (``default_zoo()``).
        **params: ``PredictParams`` fields (``diameter=17``, ``augment=True``, ...) and
            ``channels="0,1"``.

    Returns:
        ``Segmentation``: ``.prediction.labels`` ``(Y, X)`` uint16/uint32 (0 =
        background), ``.model`` used, ``.route`` (None for a named model).

    Raises:
        InvalidParamsError: an unknown keyword or a bad value.
        UnknownModelError: ``model`` is not in the registry.
        InvalidImageError: the image cannot be read or segmented.

    Example:
        >>> import zoo
        >>> labels = zoo.segment(image, diameter=20).prediction.labels   # doctest: +SKIP
    """
    zoo = using or default_zoo()
    return zoo.segment(_pixels(image), model=model, params=predict_params(**params))


def route(image: np.ndarray | ImageSource, *, using: Zoo | None = None,
          **params: Any) -> RouteResult:
    """Which model suits ``image``: k-NN vote over the style bank, with an OOD flag.

    Args:
        image: an array or a path, as for :func:`segment`.
        using: the ``Zoo`` to run on; default: the shared one.
        **params: channel selection and normalisation (``channels="0,1"``, ``percentiles``).

    Returns:
        ``RouteResult`` with ``model``, ``cluster``, ``cluster_name``, ``confidence``,
        ``distance``, ``ood`` and ``reason``.

    Example:
        >>> import zoo
        >>> zoo.route("cells.tif").model                                  # doctest: +SKIP
        'cpnet.cyto'
    """
    zoo = using or default_zoo()
    return zoo.route(_pixels(image), predict_params(**params))


def predict_params(**params: Any) -> PredictParams:
    """``PredictParams`` from keywords; ``channels`` ("0,1", "0" or a pair) sets both channels.

    Raises:
        InvalidParamsError: an unknown keyword (close names are suggested) or a bad value.
    """
    from zoo.params import PredictParams
    from zoo.preprocess import parse_channels

    known = {f.name for f in fields(PredictParams)}
    unknown = sorted(set(params) - known - {"channels"})
    if unknown:
        hints = {n: difflib.get_close_matches(n, [*known, "channels"], n=1) for n in unknown}
        named = ", ".join(f"{n!r}" + (f" (did you mean {h[0]!r}?)" if h else "")
                          for n, h in hints.items())
        raise InvalidParamsError(f"unknown parameter(s) {named}; known: channels, "
                                 f"{', '.join(sorted(known))}")
    channels = params.pop("channels", None)
    if channels is not None:
        if {"cyto_channel", "nucleus_channel"} & set(params):
            raise InvalidParamsError("give channels= or cyto_channel=/nucleus_channel=, not both")
        text = (channels if isinstance(channels, str)
                else ",".join(str(c) for c in channels if c is not None))
        params["cyto_channel"], params["nucleus_channel"] = parse_channels(text)
    return PredictParams(**params)


def _pixels(image: np.ndarray | ImageSource) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    from zoo.io import read_image

    return read_image(image)
