"""Reading a model package (a zip) without trusting it.

Opening a package checks every member before any is read: no absolute paths, no ``..``, no
backslashes or drive letters, no symbolic links, no encrypted or duplicate members, and a
bounded total size. Members are read with a size cap, so a zip bomb stops at the cap.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from zoo.errors import PackageError

MAX_MEMBERS = 1000
MAX_TOTAL_BYTES = 8 << 30
_BLOCK = 1 << 20


def _unsafe(name: str) -> str | None:
    """Why a member name could escape the folder it is extracted into, or None."""
    if not name or "\\" in name or "\0" in name:
        return "backslash or empty name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if any(part in ("..", ".") for part in PurePosixPath(name).parts):
        return "'..' or '.' segment"
    return None


class PackageArchive:
    """The checked members of one zip package.

    Args:
        path: the ``.zip`` file.

    Raises:
        PackageError: not a zip file, or a member that is unsafe (see the module docstring).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise PackageError(f"{self.path}: no such file")
        if not zipfile.is_zipfile(self.path):
            raise PackageError(f"{self.path}: not a zip file")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as error:
            raise PackageError(f"{self.path}: unreadable zip ({error})") from None
        self._infos = self._check(self._zip.infolist())

    def _check(self, infos: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
        if len(infos) > MAX_MEMBERS:
            raise PackageError(f"{self.path}: {len(infos)} members, more than {MAX_MEMBERS}")
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            reason = _unsafe(info.filename)
            if reason is not None:
                raise PackageError(f"{self.path}: unsafe member {info.filename!r} ({reason})")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise PackageError(f"{self.path}: member {info.filename!r} is a symbolic link")
            if info.flag_bits & 0x1:
                raise PackageError(f"{self.path}: member {info.filename!r} is encrypted")
            if info.is_dir():
                continue
            if info.filename in members:
                raise PackageError(f"{self.path}: member {info.filename!r} appears twice")
            members[info.filename] = info
        total = sum(info.file_size for info in members.values())
        if total > MAX_TOTAL_BYTES:
            raise PackageError(f"{self.path}: {total} bytes unpacked, more than {MAX_TOTAL_BYTES}")
        return members

    @property
    def names(self) -> list[str]:
        """Member file names, sorted (folders left out)."""
        return sorted(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> PackageArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = self._infos.get(name)
        if info is None:
            raise PackageError(f"{self.path}: no member {name!r}")
        return info

    def read(self, name: str, *, limit: int = 64 << 20) -> bytes:
        """The bytes of member ``name``, refusing more than ``limit`` bytes."""
        info = self._info(name)
        with self._zip.open(info) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise PackageError(f"{self.path}: member {name!r} is larger than {limit} bytes")
        return data

    def sha256(self, name: str) -> str:
        """Hex sha256 of member ``name`` (read in blocks, up to its declared size)."""
        digest = hashlib.sha256()
        info = self._info(name)
        with self._zip.open(info) as handle:
            for block in iter(lambda: handle.read(_BLOCK), b""):
                digest.update(block)
        return digest.hexdigest()

    def extract(self, name: str, dest: Path) -> Path:
        """Copy member ``name`` to the file ``dest`` (its parent must exist)."""
        info = self._info(name)
        with self._zip.open(info) as source, open(dest, "wb") as target:
            shutil.copyfileobj(source, target, _BLOCK)
        return dest
