"""Files on disk: sha256 pins, paths that must stay inside a folder, atomic swaps.

The lowest layer of the registry: the manifest's checks, the registry's installs and the
Hub's uploads all hash and place files through these few functions.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import InvalidNameError, ZooError

if TYPE_CHECKING:
    from zoo.manifest import FileSpec

_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def check_relative_path(path: str) -> str:
    """Return ``path`` if it is a normalised relative POSIX path that stays inside its root.

    Refused: absolute paths, backslashes, drive letters, empty, ``.`` or ``..`` segments,
    hidden segments (``.x``, reserved for cache markers) and characters outside
    ``[A-Za-z0-9._-]``.
    """
    if not isinstance(path, str) or not path or len(path) > 255:
        raise InvalidNameError(f"invalid file path {path!r}: must be a non-empty relative path")
    if any(not _SEGMENT_RE.match(segment) for segment in path.split("/")):
        raise InvalidNameError(
            f"invalid file path {path!r}: must be relative, use '/' and stay inside the model "
            "directory (no '..', no absolute paths, no hidden files)"
        )
    return path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_problems(
    path: Path, spec: FileSpec, *, missing_ok: bool = False, check_hash: bool = True
) -> str | None:
    """Why ``path`` does not match ``spec`` (missing, size, sha256), or None when it does."""
    if not path.is_file():
        return None if missing_ok else f"{spec.path}: missing ({path})"
    size = path.stat().st_size
    if size != spec.size:
        return f"{spec.path}: size {size} != pinned {spec.size}"
    if check_hash:
        digest = sha256_file(path)
        if digest != spec.sha256:
            return f"{spec.path}: sha256 {digest} != pinned {spec.sha256}"
    return None


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing any path that would leave ``root``."""
    check_relative_path(relative)
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ZooError(f"file path {relative!r} leaves {root}")
    return path


def swap_into_place(staging: Path, final: Path) -> None:
    """Rename ``staging`` to ``final``, moving any old ``final`` aside first."""
    trash = None
    if final.exists():
        trash = final.with_name(f".trash-{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, trash)
    os.rename(staging, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
