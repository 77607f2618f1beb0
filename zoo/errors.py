"""Exceptions raised by cellzoo. Each carries the offending value in its message."""

from __future__ import annotations


class ZooError(Exception):
    """Base class of every error cellzoo raises on purpose."""


class InvalidImageError(ZooError, ValueError):
    """An image could not be read or has a shape/dtype we cannot segment."""


class UnsupportedFormatError(InvalidImageError):
    """The bytes or file name belong to a format cellzoo does not read or write."""


class ImageTooLargeError(InvalidImageError):
    """An image has more pixels than the configured limit (checked before decoding)."""

    def __init__(self, message: str, *, pixels: int, limit: int) -> None:
        self.pixels, self.limit = pixels, limit
        super().__init__(message)


class InvalidParamsError(ZooError, ValueError):
    """A parameter object holds a value outside its allowed range.

    Attributes:
        field: the request field or option the value came from, when known (``diameter``).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class UnknownModelError(ZooError, KeyError):
    """A model name is not in the registry."""

    def __init__(self, name: str, suggestions: list[str] | None = None) -> None:
        self.name = name
        self.suggestions = list(suggestions or [])
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown model {name!r}{hint}")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


class IntegrityError(ZooError):
    """A file's sha256 or size does not match what the manifest pins."""


class BackendError(ZooError, RuntimeError):
    """An inference backend (torch, onnxruntime) is unavailable or failed."""


class InvalidLabelsError(InvalidImageError):
    """A label image is not integer, holds negative ids, or mismatches its partner's shape."""


class DatasetError(ZooError, ValueError):
    """A dataset on disk is malformed: unmatched files, bad shapes, broken annotations."""


class ManifestError(ZooError, ValueError):
    """A models.yaml index is unreadable or invalid; ``errors`` lists each problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = list(errors)
        more = f"; … {len(self.errors) - 5} more" if len(self.errors) > 5 else ""
        shown = "; ".join(self.errors[:5]) + more
        super().__init__(f"{source}: {shown}")


class InvalidNameError(ZooError, ValueError):
    """A model name, version, repo id or file path is malformed or escapes its directory."""


class OfflineError(ZooError):
    """Offline mode is on and what was asked for is not in the local cache."""


class HubError(ZooError):
    """A call to the Hugging Face Hub (or a compatible endpoint) failed. Never holds a token."""


class PushRefusedError(HubError):
    """A push would overwrite a published version or another model's files without ``force``."""


class PackageError(ZooError, ValueError):
    """A model package (a bioimage.io zip) is unreadable, unsafe, unsupported, or fails its
    sha256 pins or its own test tensors."""
