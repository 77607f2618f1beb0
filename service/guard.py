"""ASGI middleware that bounds and checks every request body before the service reads it.

How it works, for each ``POST``:

1. A ``Content-Length`` over ``ServiceConfig.max_body_bytes`` is refused (413) before a byte
   of the body is read; a body sent without one is counted while it streams and refused
   the moment it passes the limit.
2. The multipart forms of ``/segment``, ``/route`` and ``/preview`` are parsed as they stream
   in (``python-multipart``): an unknown field (``file``), a field given twice, a text value
   where the image file belongs (BentoML would fetch it as a URL), an over-long text field,
   or an image whose first bytes are no TIFF, PNG or JPEG is refused at once, naming the
   field; every text value is checked by ``zoo.service.validation``. The image streams into
   a spooled temporary file (memory up to 8 MiB, then disk).
3. The app then gets a canonical body: a fresh multipart form holding only the checked
   fields and the image under a safe file name. BentoML therefore never sees a URL, an
   unknown field or an unparsable number. ``/models`` takes no input: its body is dropped.
4. A client that disconnects before its body is complete is not an error: nothing is
   answered, nothing is counted as a 5xx, and one INFO line is logged.

Every refusal is an answer in the API's error shape and one WARNING line, no traceback.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import tempfile
from collections.abc import AsyncIterator, Mapping
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from zoo.errors import ZooError
from zoo.io.decode import detect_image_format
from zoo.service.config import ServiceConfig
from zoo.service.errors import ApiError, as_api_error, log_rejection
from zoo.service.validation import FORMS, MAX_TEXT_BYTES, FieldSpec, check_fields

log = logging.getLogger("zoo.service")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Endpoints that take no input: whatever body they get is dropped.
NO_INPUT = frozenset({"/models"})
MAX_PARTS = 16
SPOOL_BYTES = 8 * 2**20
_CHUNK = 2**20
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class RequestGuard:
    """The middleware (see the module docstring).

    Args:
        app: the ASGI app behind it.
        config: the limits; default ``ServiceConfig.from_env()`` at the first request.
    """

    def __init__(self, app, config: ServiceConfig | None = None) -> None:
        self.app, self._config = app, config

    @property
    def config(self) -> ServiceConfig:
        if self._config is None:
            self._config = ServiceConfig.from_env()
        return self._config

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        try:
            scope, body = await self._checked(scope, receive)
        except ClientGone:
            log.info("%s %s: the client disconnected before its request was complete",
                     method, path)
            return
        except ApiError as error:
            log_rejection(method, path, error)
            await send_error(send, error)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _checked(self, scope, receive) -> tuple[dict, AsyncIterator[bytes]]:
        """The scope and body the app gets, once the body passed every check."""
        headers = _headers(scope)
        limit = self.config.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit() or len(declared) > 19:
                raise ApiError(400, "bad_request", f"Content-Length {declared[:40]!r} is not a "
                                                   "byte count")
            if int(declared) > limit:
                raise _too_large(int(declared), limit)
        path = scope["path"]
        form = FORMS.get(path)
        if form is not None:
            reader = FormReader(form, headers.get("content-type", ""))
            async for chunk in _stream(receive, limit):
                reader.feed(chunk)
            return reader.finish(scope)
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        async for chunk in _stream(receive, limit):
            spool.write(chunk)
        if path in NO_INPUT:
            spool.close()
            return _with_headers(scope, "application/json", 2), _chunks([b"{}"])
        size = spool.tell()
        spool.seek(0)
        return _with_headers(scope, headers.get("content-type"), size), _file_chunks(spool)


class FormReader:
    """Parses and checks one multipart form as its bytes arrive (``feed``), then builds the
    canonical body (``finish``).

    Args:
        form: the endpoint's fields (``zoo.service.validation.FORMS``).
        content_type: the request's ``Content-Type`` header.
    """

    def __init__(self, form: Mapping[str, FieldSpec], content_type: str) -> None:
        self.form = form
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise ApiError(400, "invalid_parameter", "send a multipart/form-data form with the "
                           "image file in the field 'image' (e.g. curl -F image=@cells.tif), "
                           f"not {kind.decode('latin-1')[:60] or 'an empty Content-Type'}",
                           "image")
        self.texts: dict[str, bytearray] = {}
        self.image = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        self.image_name = "image"
        self._head = b""
        self._part: FieldSpec | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header = [b"", b""]
        self._parts = 0
        self._names: set[str] = set()
        self._ended = False
        callbacks = {
            "on_part_begin": self._part_begin, "on_part_data": self._part_data,
            "on_header_field": lambda data, start, end: self._grow(0, data[start:end]),
            "on_header_value": lambda data, start, end: self._grow(1, data[start:end]),
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
            "on_end": self._end,
        }
        self.parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except ApiError:
            raise
        except Exception as error:  # noqa: BLE001 (python-multipart's parse errors)
            raise ApiError(400, "bad_request", f"malformed multipart body: {error}") from None

    def finish(self, scope) -> tuple[dict, AsyncIterator[bytes]]:
        """The scope and the canonical body; raises when the form is incomplete."""
        if not self._ended:
            raise ApiError(400, "bad_request", "the multipart body ends before its closing "
                                               "boundary (truncated upload?)")
        if "image" not in self._names:
            raise ApiError(400, "invalid_parameter", "the multipart field 'image' (the image "
                           "file) is missing", "image")
        self._check_image_head(final=True)
        values = {}
        for name, raw in self.texts.items():
            try:
                values[name] = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, "invalid_parameter", f"{name} is not UTF-8 text",
                               name) from None
        checked = check_fields(self.form, values)
        boundary = secrets.token_hex(16)
        head = b"".join(_text_part(boundary, name, _canonical(value))
                        for name, value in checked.items())
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                 f'filename="{self.image_name}"\r\nContent-Type: application/octet-stream'
                 "\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = self.image.tell()
        self.image.seek(0)
        content_type = f"multipart/form-data; boundary={boundary}"
        return (_with_headers(scope, content_type, len(head) + size + len(tail)),
                _chunks([head], self.image, [tail]))

    # ---- python-multipart callbacks ---------------------------------------------------

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise ApiError(400, "invalid_parameter", f"more than {MAX_PARTS} form fields")
        self._headers, self._header, self._part = {}, [b"", b""], None

    def _grow(self, which: int, data: bytes) -> None:
        self._header[which] += data

    def _header_end(self) -> None:
        self._headers[self._header[0].strip().lower()] = self._header[1].strip()
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if disposition != b"form-data" or not name:
            raise ApiError(400, "bad_request", "a multipart part has no form-data name")
        spec = self.form.get(name)
        if spec is None:
            hint = (" (the image goes in the field 'image')" if "image" in self.form
                    and name.lower() in ("file", "files", "img", "upload", "data") else "")
            raise ApiError(400, "invalid_parameter", f"unknown field {name[:40]!r}{hint}; the "
                           f"fields are {', '.join(self.form)}", name[:40])
        if name in self._names:
            raise ApiError(400, "invalid_parameter", f"field {name!r} is given twice", name)
        self._names.add(name)
        filename = options.get(b"filename")
        if spec.is_file and filename is None:
            raise ApiError(400, "invalid_parameter", "image must be a file upload (e.g. curl -F "
                           "image=@cells.tif), not a text value: the service never fetches "
                           "URLs or reads server paths", "image")
        if spec.is_file:
            stem = _SAFE_NAME.sub("_", filename.decode("utf-8", "replace")).strip("._")
            self.image_name = stem[-64:] or "image"
        else:
            self.texts[name] = bytearray()
        self._part = spec

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        spec = self._part
        if spec is None:
            return
        if spec.is_file:
            self.image.write(data[start:end])
            if len(self._head) < 16:
                self._head += data[start:min(end, start + 16 - len(self._head))]
                self._check_image_head(final=False)
            return
        value = self.texts[spec.name]
        value += data[start:end]
        if len(value) > MAX_TEXT_BYTES:
            raise ApiError(400, "invalid_parameter", f"{spec.name} is longer than "
                           f"{MAX_TEXT_BYTES} bytes", spec.name)

    def _check_image_head(self, *, final: bool) -> None:
        """Refuse an upload that is no TIFF, PNG or JPEG by its first bytes (415)."""
        if not self._head or (len(self._head) < 16 and not final):
            return
        try:
            detect_image_format(self._head, name="<bytes>")  # as zoo.io.read_image names an upload
        except ZooError as error:
            raise as_api_error(error, field="image") from None

    def _end(self) -> None:
        self._ended = True


# --------------------------------------------------------------------------- helpers


async def send_error(send, error: ApiError) -> None:
    """Answer ``error`` in the API's shape, closing the connection (the rest of the body
    is not read)."""
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, "request_too_large", f"request body of {size:,} bytes is over the "
                    f"limit of {limit:,} bytes ({limit / 2**20:g} MiB, ZOO_MAX_BODY_MB)")


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _with_headers(scope, content_type: str | None, length: int) -> dict:
    """``scope`` with its body headers replaced (``Content-Length``; ``Content-Type``)."""
    drop = {b"content-length", b"content-type", b"transfer-encoding", b"expect"}
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in drop]
    headers.append((b"content-length", str(length).encode()))
    if content_type:
        headers.append((b"content-type", content_type.encode("latin-1")))
    return {**scope, "headers": headers}


async def _stream(receive, limit: int) -> AsyncIterator[bytes]:
    """The request body's chunks; ``ClientGone`` on a disconnect, 413 past ``limit``."""
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise _too_large(total, limit)
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _chunks(before: list[bytes], spool=None, after: list[bytes] = ()) -> AsyncIterator[bytes]:
    for chunk in before:
        yield chunk
    if spool is not None:
        async for chunk in _file_chunks(spool):
            yield chunk
    for chunk in after:
        yield chunk


async def _file_chunks(spool) -> AsyncIterator[bytes]:
    try:
        while chunk := spool.read(_CHUNK):
            yield chunk
    finally:
        spool.close()


def _replay(body: AsyncIterator[bytes], receive):
    """A ``receive`` that hands the app ``body``, then waits on the real one (disconnect)."""
    pending: list[bytes] = []
    done = False

    async def replayed() -> dict[str, Any]:
        nonlocal done
        if done:
            return await receive()
        if not pending:
            try:
                pending.append(await anext(body))
            except StopAsyncIteration:
                done = True
                return {"type": "http.request", "body": b"", "more_body": False}
        chunk = pending.pop()
        try:
            pending.append(await anext(body))
        except StopAsyncIteration:
            done = True
            return {"type": "http.request", "body": chunk, "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    return replayed


def _text_part(boundary: str, name: str, value: str) -> bytes:
    return (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n").encode()


def _canonical(value: Any) -> str:
    """The text BentoML parses back into exactly ``value``."""
    if isinstance(value, tuple):  # channels
        return ",".join(str(v) for v in value if v is not None)
    if isinstance(value, float):
        return repr(value)
    return str(value)
