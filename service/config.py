"""Service settings, read from the environment when a service starts (never at import)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from zoo.errors import InvalidParamsError


@dataclass(frozen=True)
class ServiceConfig:
    """How the HTTP service guards and paces requests.

    Every request's work is bounded: its body by ``max_body_mb``, the decoded image by
    ``max_pixels`` (per plane, and 8× over all pages and planes, before decoding),
    and what the network sees by ``max_rescale`` and ``max_network_pixels``.

    Attributes:
        max_pixels: most pixels (Y × X) of an upload; every page and plane of a TIFF
            counts, and together they may hold at most 8 × this many (the largest image
            with 8 channels), checked from the headers before decoding (``413``).
        max_body_mb: largest request body, in MiB, checked from ``Content-Length`` before
            reading and counted while streaming (``413``).
        max_network_pixels: most pixels the network may see for one image (Y × X after
            the diameter's rescale); a given diameter over it is a ``400`` naming
            ``diameter``, an estimated one is raised until the image fits.
        max_rescale: most the image is scaled up or down for the network
            (``diam_mean / diameter``): a diameter outside ``[diam_mean / max_rescale,
            diam_mean × max_rescale]`` is a ``400``.
        network_timeout_s: how long one call to the network service may take before
            the request fails with ``503`` (a crashed or stuck network worker).
        max_queue_wait_s: a tile job that waited this long in the network service's queue
            is refused (``503`` with ``Retry-After``) rather than run late.
        retry_after_s: the ``Retry-After`` hint sent with a ``503``.
        max_tiles: most tiles one forward pass holds (the network service splits
            larger groups); bounds memory. None: 64 on CUDA, 16 on CPU.
        max_loaded: most models the network service keeps loaded (an LRU); the
            default zoo's 8 models need about 30 MB on the GPU in fp32.
    """

    max_pixels: int = 64_000_000
    max_body_mb: int = 256
    max_network_pixels: int = 64_000_000
    max_rescale: float = 8.0
    network_timeout_s: float = 120.0
    max_queue_wait_s: float = 60.0
    retry_after_s: int = 5
    max_tiles: int | None = None
    max_loaded: int = 16

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_body_mb", "max_network_pixels", "max_tiles",
                     "max_loaded", "retry_after_s"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidParamsError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("network_timeout_s", "max_queue_wait_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidParamsError(f"{name} must be > 0, got {value}")
        if not (math.isfinite(self.max_rescale) and self.max_rescale >= 1):
            raise InvalidParamsError(f"max_rescale must be >= 1, got {self.max_rescale}")

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_mb * 2**20

    def tiles_per_pass(self, device: str) -> int:
        """``max_tiles``, or its default for ``device`` (a torch device string)."""
        if self.max_tiles is not None:
            return self.max_tiles
        return 64 if device.startswith("cuda") else 16

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServiceConfig:
        """``ZOO_MAX_PIXELS``, ``ZOO_MAX_BODY_MB``, ``ZOO_MAX_NETWORK_PIXELS``,
        ``ZOO_MAX_RESCALE``, ``ZOO_NETWORK_TIMEOUT``, ``ZOO_MAX_QUEUE_WAIT``,
        ``ZOO_RETRY_AFTER``, ``ZOO_MAX_TILES``, ``ZOO_MAX_LOADED``; unset ones keep their
        defaults."""
        env = os.environ if env is None else env
        fields = {"max_pixels": ("ZOO_MAX_PIXELS", int),
                  "max_body_mb": ("ZOO_MAX_BODY_MB", int),
                  "max_network_pixels": ("ZOO_MAX_NETWORK_PIXELS", int),
                  "max_rescale": ("ZOO_MAX_RESCALE", float),
                  "network_timeout_s": ("ZOO_NETWORK_TIMEOUT", float),
                  "max_queue_wait_s": ("ZOO_MAX_QUEUE_WAIT", float),
                  "retry_after_s": ("ZOO_RETRY_AFTER", int),
                  "max_tiles": ("ZOO_MAX_TILES", int),
                  "max_loaded": ("ZOO_MAX_LOADED", int)}
        values = {}
        for field, (key, kind) in fields.items():
            if env.get(key):
                try:
                    values[field] = kind(env[key])
                except ValueError as error:
                    raise InvalidParamsError(f"{key}={env[key]!r} is not a number") from error
        return cls(**values)
