"""Helpers shared by the ``zoo`` commands: opening the zoo, one-line errors, finding images."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from zoo.cli.app import fail
from zoo.errors import ZooError
from zoo.io.decode import IMAGE_SUFFIXES
from zoo.io.outputs import OUTPUT_SUFFIXES

#: Name endings of what ``zoo segment`` writes; folders and globs skip such files.
OWN_OUTPUTS = (*OUTPUT_SUFFIXES.values(), "_overlay.png")
_GLOB_CHARS = frozenset("*?[")


@contextmanager
def errors_as_one_line() -> Iterator[None]:
    """Turn cellzoo's own errors (and bad values) into one line on stderr and exit 1."""
    try:
        yield
    except (ZooError, ValueError, FileNotFoundError) as error:
        fail(str(error))


def open_zoo(**options: object):
    """The ``Zoo`` of the default registry (``Registry.default``): settings from the
    environment, overridden by the command's options that were given (not None)."""
    from zoo.pipeline import Zoo
    from zoo.registry import Registry
    from zoo.settings import Settings

    settings = Settings.from_env(**options)
    return Zoo(Registry.default(settings), settings=settings)


@dataclass
class Inputs:
    """What the PATH arguments of a command expand to.

    Attributes:
        images: files in argument order; a folder's files sorted by path; no duplicates.
        unmatched: arguments that named no file, no folder and matched no glob.
    """

    images: list[Path] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


def expand_inputs(arguments: list[str]) -> Inputs:
    """Expand files, folders (recursively) and glob patterns (``**`` included) into images.

    A file named directly is kept whatever its name (the format comes from its bytes).
    Folders and globs yield only files ending in ``IMAGE_SUFFIXES`` that are neither hidden
    (a name starting with ``.``) nor one of ``zoo segment``'s own outputs (``OWN_OUTPUTS``),
    so segmenting a folder that holds earlier results does not segment the results.
    """
    inputs, seen = Inputs(), set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            inputs.images.append(path)

    for argument in arguments:
        path = Path(argument)
        if path.is_file():
            add(path)
        elif path.is_dir():
            for found in _folder_images(path):
                add(found)
        elif _GLOB_CHARS & set(argument) and (matches := _glob_images(argument)):
            for found in matches:
                add(found)
        else:
            inputs.unmatched.append(argument)
    return inputs


def _is_image_name(name: str) -> bool:
    lower = name.lower()
    return (lower.endswith(IMAGE_SUFFIXES) and not name.startswith(".")
            and not lower.endswith(tuple(s.lower() for s in OWN_OUTPUTS)))


def _folder_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, sorted; hidden files and folders are left out."""
    return sorted(
        path for path in folder.rglob("*")
        if _is_image_name(path.name) and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _glob_images(pattern: str) -> list[Path]:
    found: list[Path] = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        if path.is_dir():
            found.extend(_folder_images(path))
        elif path.is_file() and _is_image_name(path.name):
            found.append(path)
    return found
