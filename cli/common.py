"""Helpers shared by the ``zoo`` commands: settings, the zoo, channel parsing, errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cli.main import fail
from zoo.errors import ZooError


@contextmanager
def errors_as_one_line() -> Iterator[None]:
    """Turn cellzoo's own errors (and bad values) into one line on stderr and exit 1."""
    try:
        yield
    except (ZooError, ValueError, FileNotFoundError) as error:
        fail(str(error))


def parse_channels(text: str) -> tuple[int, int | None]:
    """``"0"`` → ``(0, None)``; ``"0,1"`` → ``(0, 1)``."""
    parts = [p.strip() for p in text.split(",")]
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--channels must be 'CYTO' or 'CYTO,NUCLEUS' (indices), got {text!r}")
    return int(parts[0]), int(parts[1]) if len(parts) == 2 else None


def open_zoo(manifest: Path | None = None, *, backend: str | None = None):
    """The ``Zoo`` over the embedded registry (or ``manifest``), settings from the env."""
    from dataclasses import replace

    from zoo.pipeline import Zoo
    from zoo.registry import Registry
    from zoo.settings import Settings

    settings = Settings.from_env()
    if backend is not None:
        settings = replace(settings, backend=backend)
    registry = (Registry.from_path(manifest, settings=settings) if manifest
                else Registry.embedded(settings))
    return Zoo(registry, settings=settings)
