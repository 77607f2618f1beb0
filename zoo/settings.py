"""Runtime settings, parsed once from the environment and passed explicitly.

One rule everywhere (library, CLI, service): an explicit argument beats a CLI option, which
beats the environment, which beats the default. ``Settings.from_env(**overrides)`` applies
it: an override that is None ("not given") leaves the environment's value. Nothing here runs
at import time: call ``Settings.from_env()`` where a program starts.

The variables: ``ZOO_HOME``, ``ZOO_BACKEND``, ``ZOO_DEVICE``, ``ZOO_PRECISION``,
``ZOO_MANIFEST``, ``ZOO_BANK``, and ``ZOO_OFFLINE`` or ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
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
        manifest: a ``models.yaml`` that replaces the shipped zoo (``ZOO_MANIFEST``);
            None: the shipped zoo. The user's zoo under ``home`` is stacked on either.
        bank: a style bank that routes ``auto`` instead of the registry's (``ZOO_BANK``;
            e.g. one built by ``zoo bank build`` over imported models); None: the bank of
            the registry's generalist.
    """

    backend: Backend = "torch"
    device: str = "auto"
    precision: Precision = "fp32"
    home: Path = field(default_factory=lambda: _default_home(os.environ))
    offline: bool = False
    manifest: Path | None = None
    bank: Path | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "onnx"):
            raise InvalidParamsError(f"backend must be 'torch' or 'onnx', got {self.backend!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise InvalidParamsError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise InvalidParamsError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        object.__setattr__(self, "home", Path(self.home).expanduser())
        for name in ("manifest", "bank"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)).expanduser())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``env`` (default ``os.environ``), then ``overrides``.

        Args:
            env: the environment to read.
            **overrides: field values that beat the environment; a None value means "not
                given" and leaves the environment's (or the default) value.

        Raises:
            InvalidParamsError: an unknown field, or a bad value (naming its variable).
        """
        env = os.environ if env is None else env
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise InvalidParamsError(f"unknown setting(s) {', '.join(unknown)}")
        values: dict[str, object] = {}
        for name, key in (("backend", "ZOO_BACKEND"), ("device", "ZOO_DEVICE"),
                          ("precision", "ZOO_PRECISION"), ("home", "ZOO_HOME"),
                          ("manifest", "ZOO_MANIFEST"), ("bank", "ZOO_BANK")):
            if env.get(key):
                values[name] = env[key]
        if "home" not in values:
            values["home"] = _default_home(env)
        values["offline"] = any(env.get(k, "").lower() in _TRUE
                                for k in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
