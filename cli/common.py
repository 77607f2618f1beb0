"""Helpers shared by the ``zoo`` commands: opening the zoo, one-line errors."""

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
