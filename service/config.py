"""Service settings, read from the environment when a service starts (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from zoo.errors import InvalidParamsError


@dataclass(frozen=True)
class ServiceConfig:
    """How the HTTP service guards and paces requests.

    Attributes:
        max_pixels: largest image accepted (Y × X), checked before decoding (``413``).
        network_timeout_s: how long one call to the network service may take before
            the request fails with ``503`` (a crashed or stuck network worker).
        retry_after_s: the ``Retry-After`` hint sent with a ``503``.
        max_tiles: most tiles one forward pass holds (the network service splits
            larger groups); bounds memory. None: 64 on CUDA, 16 on CPU.
        max_loaded: most models the network service keeps loaded (an LRU); the
            default zoo's 8 models need about 30 MB on the GPU in fp32.
    """

    max_pixels: int = 64_000_000
    network_timeout_s: float = 120.0
    retry_after_s: int = 5
    max_tiles: int | None = None
    max_loaded: int = 16

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_tiles", "max_loaded", "retry_after_s"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidParamsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.network_timeout_s > 0:
            raise InvalidParamsError(f"network_timeout_s must be > 0, got {self.network_timeout_s}")

    def tiles_per_pass(self, device: str) -> int:
        """``max_tiles``, or its default for ``device`` (a torch device string)."""
        if self.max_tiles is not None:
            return self.max_tiles
        return 64 if device.startswith("cuda") else 16

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServiceConfig:
        """``ZOO_MAX_PIXELS``, ``ZOO_NETWORK_TIMEOUT``, ``ZOO_RETRY_AFTER``, ``ZOO_MAX_TILES``,
        ``ZOO_MAX_LOADED``; unset ones keep their defaults."""
        env = os.environ if env is None else env
        fields = {"max_pixels": ("ZOO_MAX_PIXELS", int),
                  "network_timeout_s": ("ZOO_NETWORK_TIMEOUT", float),
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
