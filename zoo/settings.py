"""Runtime settings, parsed once from the environment and passed explicitly.

Nothing here runs at import time: call ``Settings.from_env()`` where a program starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from zoo.errors import InvalidParamsError

Backend = Literal["torch", "onnx"]
Precision = Literal["fp32", "bf16", "fp16"]
_TRUE = {"1", "true", "yes", "on"}


def _default_home(env: Mapping[str, str]) -> Path:
    cache = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".cache")
    return Path(cache) / "cellzoo"


@dataclass(frozen=True)
class Settings:
    """Where models live and how the network runs.

    Attributes:
        backend: ``torch`` or ``onnx`` (onnxruntime).
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: network precision on CUDA; CPU always runs fp32.
        home: the model cache directory (``ZOO_HOME``; default ``$XDG_CACHE_HOME/cellzoo``).
        offline: never contact a remote (``ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``).
    """

    backend: Backend = "torch"
    device: str = "auto"
    precision: Precision = "fp32"
    home: Path = field(default_factory=lambda: _default_home(os.environ))
    offline: bool = False

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "onnx"):
            raise InvalidParamsError(f"backend must be 'torch' or 'onnx', got {self.backend!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise InvalidParamsError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise InvalidParamsError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        object.__setattr__(self, "home", Path(self.home).expanduser())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``ZOO_BACKEND``, ``ZOO_DEVICE``, ``ZOO_PRECISION``, ``ZOO_HOME``, offline flags."""
        env = os.environ if env is None else env
        offline = any(env.get(k, "").lower() in _TRUE for k in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"))
        return cls(
            backend=env.get("ZOO_BACKEND", "torch"),  # type: ignore[arg-type]
            device=env.get("ZOO_DEVICE", "auto"),
            precision=env.get("ZOO_PRECISION", "fp32"),  # type: ignore[arg-type]
            home=Path(env["ZOO_HOME"]) if env.get("ZOO_HOME") else _default_home(env),
            offline=offline,
        )
