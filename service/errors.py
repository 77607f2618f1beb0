"""The one error shape of the HTTP API, and how failures map to it.

Every error answer is ``{"error": {"status", "type", "message", "field"}}``. A request the
service refuses (4xx, a 503 it sheds) is logged as one WARNING line without a traceback;
only a failure nobody anticipated (5xx) is logged with its traceback.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from zoo.errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidNameError,
    InvalidParamsError,
    UnknownModelError,
    UnsupportedFormatError,
    ZooError,
)

log = logging.getLogger("zoo.service")


@dataclass
class ApiError(Exception):
    """An HTTP error in the one shape every endpoint uses (see ``body``)."""

    status: int
    type: str
    message: str
    field: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "type": self.type, "message": self.message,
                          "field": self.field}}


class NetworkUnavailable(ZooError):
    """The network service failed, shed the job, or did not answer in time."""


def as_api_error(error: Exception, *, field: str | None = None,
                 retry_after_s: int = 5) -> ApiError:
    """Map a cellzoo error to its HTTP status (anything else is a 500, logged with its
    traceback)."""
    if isinstance(error, ApiError):
        return error
    kinds: list[tuple[type[Exception], int, str]] = [
        (ImageTooLargeError, 413, "image_too_large"),
        (UnsupportedFormatError, 415, "unsupported_format"),
        (InvalidImageError, 400, "invalid_image"),
        (UnknownModelError, 404, "unknown_model"),
        (InvalidNameError, 404, "unknown_model"),
        (InvalidParamsError, 400, "invalid_parameter"),
        (NetworkUnavailable, 503, "network_unavailable"),
    ]
    for kind, status, name in kinds:
        if isinstance(error, kind):
            headers = {"Retry-After": str(retry_after_s)} if status == 503 else {}
            where = None if status in (413, 415, 503) else getattr(error, "field", None) or field
            if kind in (UnknownModelError, InvalidNameError):
                where = "model"
            return ApiError(status, name, str(error), where, headers)
    log.error("internal error: %s: %s", type(error).__name__, error, exc_info=error)
    return ApiError(500, "internal_error", f"{type(error).__name__}: {error}"[:500])


def log_rejection(method: str, path: str, error: ApiError) -> None:
    """One WARNING line for a refused request (no traceback): what, where and why."""
    where = f" [{error.field}]" if error.field else ""
    message = " ".join(error.message.split())[:300]
    if error.status < 500 or error.status == 503:
        log.warning("%s %s refused: %d %s%s: %s", method, path, error.status, error.type,
                    where, message)
