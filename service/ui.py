"""The web page and the endpoints only it needs, as one small Starlette app.

``zoo.service.app`` mounts ``web_app`` on both services (split and single-process), beside
the JSON API. The page (``ui.html``: one self-contained file, no external scripts, fonts or
CDNs) segments through the public ``POST /segment`` and ``POST /models``; these routes
give it what a browser cannot do itself:

- ``GET /ui``: the page, with the output-format table (``zoo.io.OUTPUT_FORMATS``) inlined.
- ``POST /preview`` (multipart ``image``): a PNG of the image's false-colour composite
  (``zoo.viz.composite``; browsers cannot show TIFF), at most ``PREVIEW_SIDE`` pixels on
  its longest side; headers ``X-Cellzoo-Shape`` (``Y,X[,C]``) and ``X-Cellzoo-Legend``
  (the colour of each channel, comma-separated).
- ``POST /export`` (multipart ``masks``: the ``/segment`` JSON answer, or its ``shape`` and
  ``masks``; ``output``: a format of ``OUTPUT_FORMATS`` or ``overlay``; ``image``: needed for
  ``overlay``; ``name``: the file stem): the segmentation as a file, without segmenting again.
- ``GET /stylemap``: the style bank on the map, ``{"clusters": [{"id", "name", "model",
  "size"}], "points": [{"x", "y", "cluster", "ref"}], "layout": "bank"|"pca",
  "thumbnails": bool, "ood_threshold": float}`` (``zoo.stylemap.layout``).
- ``GET /reference/{ref}.png``: a reference image's thumbnail; 404 when the bank has none.

Errors have the API's one shape, ``{"error": {"status", "type", "message", "field"}}``.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from zoo.service.core import ApiCore, ApiError, as_api_error

if TYPE_CHECKING:
    from zoo.cluster import StyleBank
    from zoo.router import Router

log = logging.getLogger(__name__)

#: Longest side of a preview PNG, in pixels (larger images are shown scaled down).
PREVIEW_SIDE = 2048
#: The ``output`` of ``/export`` that draws outlines over the image (the CLI's ``--overlay``).
OVERLAY = "overlay"
#: Largest ``masks`` part ``/export`` reads (the COCO RLE of a 64-megapixel image fits).
MAX_MASKS_BYTES = 256 * 2**20
_CONFIG_SLOT = '<script id="config" type="application/json">{}</script>'
_STEM = re.compile(r"[^A-Za-z0-9._-]+")


def web_app(core: Callable[[], ApiCore]) -> Starlette:
    """The page and its helper endpoints.

    Args:
        core: returns the running service's ``ApiCore`` (called per request: the service
            builds it after the app is mounted).
    """
    page = WebPage(core)
    return Starlette(routes=[
        Route("/ui", page.index, methods=["GET"]),
        Route("/preview", page.preview, methods=["POST"]),
        Route("/export", page.export, methods=["POST"]),
        Route("/stylemap", page.stylemap, methods=["GET"]),
        Route("/reference/{ref:path}", page.reference, methods=["GET"]),
    ])


def _guarded(handler: Callable[..., Awaitable[Response]]):
    """Every failure becomes a response in the API's error shape."""

    @functools.wraps(handler)
    async def call(self: WebPage, request: Request) -> Response:
        try:
            return await handler(self, request)
        except Exception as error:  # noqa: BLE001 (one error shape for every failure)
            api_error = as_api_error(error, field="image")
            return JSONResponse(api_error.body(), status_code=api_error.status,
                                headers=api_error.headers)

    return call


class WebPage:
    """The handlers of ``web_app`` (``core`` is looked up per request)."""

    def __init__(self, core: Callable[[], ApiCore]) -> None:
        self.core = core
        self._stylemap: tuple[int, dict[str, Any]] | None = None

    async def index(self, request: Request) -> Response:
        return HTMLResponse(page_html(), headers={"Cache-Control": "no-cache"})

    @_guarded
    async def preview(self, request: Request) -> Response:
        data = await _file(request, "image")
        core = self.core()
        png, shape, legend = await anyio.to_thread.run_sync(preview_png, core, data)
        return Response(png, media_type="image/png", headers={
            "X-Cellzoo-Shape": ",".join(map(str, shape)), "X-Cellzoo-Legend": ",".join(legend),
            "Cache-Control": "no-store"})

    @_guarded
    async def export(self, request: Request) -> Response:
        async with request.form(max_part_size=MAX_MASKS_BYTES) as form:
            output = str(form.get("output") or "tiff")
            stem = _STEM.sub("_", str(form.get("name") or "image")).strip("._") or "image"
            masks = await _part(form, "masks")
            image = await _part(form, "image") if output == OVERLAY else None
        data, media_type, suffix = await anyio.to_thread.run_sync(
            export_file, self.core(), masks, output, image)
        return Response(data, media_type=media_type, headers={
            "Content-Disposition": f'attachment; filename="{stem}{suffix}"'})

    @_guarded
    async def stylemap(self, request: Request) -> Response:
        bank = self.core().router.bank
        if self._stylemap is None or self._stylemap[0] != id(bank):
            body = await anyio.to_thread.run_sync(stylemap_json, self.core().router)
            self._stylemap = (id(bank), body)
        return JSONResponse(self._stylemap[1])

    @_guarded
    async def reference(self, request: Request) -> Response:
        ref = request.path_params["ref"]
        ref = ref[: -len(".png")] if ref.endswith(".png") else ref
        png = await anyio.to_thread.run_sync(reference_png, self.core().router.bank, ref)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "public, max-age=3600"})


# --------------------------------------------------------------------------- the work


def page_html() -> str:
    """``ui.html`` with the output formats inlined into its ``config`` script."""
    from zoo.io import OUTPUT_FORMATS

    html = resources.files("zoo.service").joinpath("ui.html").read_text(encoding="utf-8")
    if _CONFIG_SLOT not in html:
        raise RuntimeError("ui.html lacks its config slot")
    config = {"formats": {name: {"suffix": suffix, "media_type": media}
                          for name, (suffix, media) in OUTPUT_FORMATS.items()},
              "overlay": {"suffix": "_overlay.png", "media_type": "image/png"}}
    text = json.dumps(config).replace("</", "<\\/")
    return html.replace(_CONFIG_SLOT, _CONFIG_SLOT.replace("{}", text))


def preview_png(core: ApiCore, data: bytes) -> tuple[bytes, tuple[int, ...], list[str]]:
    """The false-colour PNG of an upload, its array shape and the colour of each channel."""
    from zoo.viz import composite, composite_legend

    image = core.read(data)
    channels = 1 if image.ndim == 2 else image.shape[2]
    step = max(1, -(-max(image.shape[:2]) // PREVIEW_SIDE))  # ceil: longest side ≤ PREVIEW_SIDE
    rgb = np.round(composite(image[::step, ::step]) * 255).astype(np.uint8)
    return _png(rgb), image.shape, composite_legend(channels)


def export_file(core: ApiCore, masks: bytes, output: str,
                image: bytes | None) -> tuple[bytes, str, str]:
    """A ``/segment`` JSON answer's masks as a file of format ``output``.

    Returns:
        The bytes, their media type and the file suffix.
    """
    from zoo.io import OUTPUT_FORMATS, encode_segmentation

    if output != OVERLAY and output not in OUTPUT_FORMATS:
        raise ApiError(400, "invalid_parameter", f"output must be one of "
                       f"{', '.join([*OUTPUT_FORMATS, OVERLAY])}, got {output!r}", "output")
    labels = _labels(masks, core.config.max_pixels)
    if output != OVERLAY:
        data, media_type = encode_segmentation(labels, output)
        return data, media_type, OUTPUT_FORMATS[output][0]
    if image is None:
        raise ApiError(400, "invalid_parameter", "the overlay needs the image", "image")
    from zoo.viz import overlay

    pixels = core.read(image)
    if pixels.shape[:2] != labels.shape:
        raise ApiError(400, "invalid_parameter", f"the masks are {labels.shape[0]}×"
                       f"{labels.shape[1]}, the image {pixels.shape[0]}×{pixels.shape[1]}", "image")
    return _png(overlay(pixels, labels)), "image/png", "_overlay.png"


def _labels(masks: bytes, max_pixels: int) -> np.ndarray:
    """The label image of a ``/segment`` JSON answer (``shape`` and COCO RLE ``masks``)."""
    from zoo.errors import ZooError
    from zoo.io import coco_rle_to_labels

    try:
        body = json.loads(masks)
        shape = [int(v) for v in body["shape"][:2]]
        annotations = body["masks"]
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise ApiError(400, "invalid_parameter", "masks must be the JSON answer of /segment "
                       f"(with 'shape' and 'masks'): {error}", "masks") from error
    if len(shape) != 2 or min(shape) < 1 or shape[0] * shape[1] > max_pixels:
        raise ApiError(400, "invalid_parameter", f"masks shape {shape} is not an image of "
                       f"1..{max_pixels} pixels", "masks")
    if not isinstance(annotations, list):
        raise ApiError(400, "invalid_parameter", "masks must hold a list of COCO RLE masks", "masks")
    try:
        return coco_rle_to_labels(annotations, (shape[0], shape[1]))
    except (ZooError, TypeError, KeyError, ValueError) as error:
        raise ApiError(400, "invalid_parameter", f"masks: {error}", "masks") from error


def stylemap_json(router: Router) -> dict[str, Any]:
    """The router's style bank as the ``/stylemap`` JSON body."""
    from zoo.stylemap import layout

    bank = router.bank
    xy = layout(bank)
    sizes = np.bincount(bank.labels, minlength=bank.n_clusters)
    clusters = [{"id": cluster, "name": name, "size": int(sizes[cluster]),
                 "model": bank.specialists.get(cluster, router.generalist)}
                for cluster, name in enumerate(bank.names)]
    points = [{"x": round(float(x), 5), "y": round(float(y), 5), "cluster": int(cluster),
               "ref": ref} for (x, y), cluster, ref in zip(xy, bank.labels, bank.refs)]
    return {"clusters": clusters, "points": points,
            "layout": "bank" if bank.map_xy is not None else "pca",
            "thumbnails": bank.thumbnails is not None,
            "ood_threshold": bank.ood.threshold if bank.ood is not None else bank.ood_threshold}


def reference_png(bank: StyleBank, ref: str) -> bytes:
    """The thumbnail of reference ``ref`` as PNG; ``ApiError`` 404 when there is none."""
    try:
        index = bank.refs.index(ref)
    except ValueError:
        raise ApiError(404, "not_found", f"no reference image {ref!r} in the style bank",
                       "ref") from None
    if bank.thumbnails is None:
        raise ApiError(404, "not_found", "the style bank has no thumbnails of its references",
                       "ref")
    return _png(bank.thumbnails[index])


async def _file(request: Request, name: str) -> bytes:
    async with request.form() as form:
        return await _part(form, name)


async def _part(form, name: str) -> bytes:
    """A multipart field's bytes (a file part or a text field); 400 when missing."""
    value = form.get(name)
    if value is None:
        raise ApiError(400, "invalid_parameter", f"the multipart field {name!r} is missing", name)
    if isinstance(value, str):
        return value.encode()
    return await value.read()


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG")
    return buffer.getvalue()
