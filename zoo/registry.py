"""The model registry: names → entries of a ``models.yaml`` → verified files in the cache.

A ``Registry`` is an object built from one manifest; nothing is registered at import time.
``resolve(name)`` returns an ``InstalledModel`` whose files all live in the cache
(``Settings.home``), pulling the model first if it is not there yet.

Where files come from (``pull``, in this order, ``source="auto"``):

1. the registry's local directory (``source_dir``, the manifest's folder: the embedded zoo
   shipped in the repository, or any local zoo), when it holds every file of the entry;
   this needs no network, so it works offline on a fresh machine;
2. the Hub repo and commit pinned by the entry's ``source`` (``zoo.hub.download``).

Cache layout (``home/models/<name>/<version>/``): the entry's files plus ``.complete``, a
JSON copy of the verified files list written last. Installs are atomic and safe to run
concurrently: under a per-model file lock, files are copied or downloaded into a temporary
directory next to the final one, every sha256 and size is checked, then the directory is
renamed into place. A mismatch raises ``IntegrityError`` and installs nothing. An entry whose
marker or files do not match the manifest is treated as absent and repaired by the next pull.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from zoo.errors import IntegrityError, OfflineError, UnknownModelError, ZooError
from zoo.manifest import (
    FileSpec,
    Manifest,
    ModelEntry,
    check_relative_path,
    dump_manifest,
    load_manifest,
    parse_ref,
    version_key,
)
from zoo.settings import Settings

if TYPE_CHECKING:
    from zoo.hub import HubSettings
    from zoo.model import SegmentationModel

logger = logging.getLogger(__name__)

MARKER = ".complete"
LOCK_TIMEOUT_S = 600.0
Source = Literal["auto", "local", "hub"]


def embedded_manifest_path() -> Path:
    """``models.yaml`` of the zoo shipped with cellzoo.

    An installed wheel holds it as package data (``zoo/shipped/models.yaml``, weights beside
    it); a source checkout (or an editable install) has it at the repository root.
    """
    package = Path(__file__).resolve().parent
    installed = package / "shipped" / "models.yaml"
    checkout = package.parent / "models.yaml"
    return checkout if not installed.is_file() and checkout.is_file() else installed


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


@dataclass(frozen=True)
class InstalledModel:
    """A model whose files are all in the cache and matched the manifest when installed.

    Attributes:
        entry: the manifest entry.
        dir: the install directory ``home/models/<name>/<version>``.
        files: ``{path in the entry: absolute local path}``.
    """

    entry: ModelEntry
    dir: Path
    files: dict[str, Path]

    @property
    def weights(self) -> Path:
        """The network weights file (``.safetensors`` or ``.onnx``)."""
        return self.files[self.entry.weights_path]

    @property
    def style_bank(self) -> Path | None:
        """The router's style bank file, if the entry has one."""
        return self.files[self.entry.style_bank] if self.entry.style_bank else None


class Registry:
    """Models of one manifest, installed into the cache of ``settings.home``.

    Args:
        manifest: the index.
        settings: cache directory and offline flag.
        source_dir: directory the manifest's relative file paths start from (local source),
            or None when the manifest is remote-only.
        manifest_path: file ``update`` writes the manifest back to, or None.
        hub: Hub endpoint and token for Hub sources; default ``HubSettings.from_env()`` on
            first use.
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        settings: Settings,
        source_dir: str | Path | None = None,
        manifest_path: str | Path | None = None,
        hub: HubSettings | None = None,
    ) -> None:
        self._manifest = manifest
        self.settings = settings
        self.source_dir = Path(source_dir).resolve() if source_dir is not None else None
        self.manifest_path = Path(manifest_path) if manifest_path is not None else None
        self._hub = hub

    @classmethod
    def from_path(
        cls, path: str | Path, *, settings: Settings, hub: HubSettings | None = None
    ) -> Registry:
        """The registry of the ``models.yaml`` at ``path``; its folder is the local source."""
        path = Path(path)
        return cls(
            load_manifest(path),
            settings=settings,
            source_dir=path.parent,
            manifest_path=path,
            hub=hub,
        )

    @classmethod
    def embedded(
        cls, settings: Settings, *, path: str | Path | None = None, hub: HubSettings | None = None
    ) -> Registry:
        """The zoo shipped with cellzoo (``embedded_manifest_path()``, or ``path``).

        A missing file gives an empty registry (a source checkout before the zoo is trained).
        """
        path = Path(path) if path is not None else embedded_manifest_path()
        if not path.is_file():
            logger.debug("no embedded manifest at %s: empty registry", path)
            return cls(
                Manifest(version=1, models=[]),
                settings=settings,
                source_dir=path.parent,
                manifest_path=path,
                hub=hub,
            )
        return cls.from_path(path, settings=settings, hub=hub)

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def hub(self) -> HubSettings:
        if self._hub is None:
            from zoo.hub import HubSettings

            self._hub = HubSettings.from_env()
        return self._hub

    # ---- names ------------------------------------------------------------------------------

    def list(self, kind: str | None = None, pattern: str | None = None) -> list[ModelEntry]:
        """Entries sorted by name then version, filtered by ``kind`` and a glob on the name."""
        entries = [
            m
            for m in self._manifest.models
            if (kind is None or m.kind == kind)
            and (pattern is None or fnmatch.fnmatchcase(m.name, pattern))
        ]
        return sorted(entries, key=lambda m: (m.name, version_key(m.version)))

    def names(self) -> list[str]:
        """Canonical model names, sorted."""
        return sorted({m.name for m in self._manifest.models})

    def __contains__(self, ref: object) -> bool:
        try:
            self.entry(ref)  # type: ignore[arg-type]
        except ZooError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._manifest.models)

    def entry(self, ref: str) -> ModelEntry:
        """The entry of ``name[@version]`` or ``alias[@version]``; the latest version by default.

        Raises:
            InvalidNameError: ``ref`` is not a valid name (e.g. holds a path).
            UnknownModelError: no such model or version; suggests close matches.
        """
        name, version = parse_ref(ref)
        aliases = {a: m.name for m in self._manifest.models for a in m.aliases}
        canonical = aliases.get(name, name)
        versions = [m for m in self._manifest.models if m.name == canonical]
        if not versions:
            known = self.names() + sorted(aliases)
            raise UnknownModelError(ref, difflib.get_close_matches(name, known, n=3, cutoff=0.6))
        if version is None:
            return max(versions, key=lambda m: version_key(m.version))
        for model in versions:
            if model.version == version:
                return model
        raise UnknownModelError(
            ref, [m.ref for m in sorted(versions, key=lambda m: version_key(m.version))]
        )

    def update(self, entry: ModelEntry) -> None:
        """Replace (or add) ``entry`` by ``name@version`` and save to ``manifest_path`` if set."""
        self._manifest = self._manifest.replace(entry)
        if self.manifest_path is not None:
            dump_manifest(self._manifest, self.manifest_path)

    # ---- cache ------------------------------------------------------------------------------

    def install_dir(self, entry: ModelEntry) -> Path:
        """``home/models/<name>/<version>`` (both validated, so it stays inside the cache)."""
        return self.settings.home / "models" / entry.name / entry.version

    def is_installed(self, ref: str, *, verify: bool = False) -> bool:
        """Whether ``ref`` is complete in the cache; ``verify`` re-hashes every file."""
        return self._installed(self.entry(ref), verify=verify) is not None

    def resolve(self, ref: str, *, verify: bool = False) -> InstalledModel:
        """Local files of ``ref``, pulling it first when it is absent (or, with ``verify``,
        corrupted).

        Raises:
            OfflineError: offline mode, the model is not cached and its only source is the Hub.
            IntegrityError: a downloaded or copied file does not match its pinned sha256/size.
        """
        entry = self.entry(ref)
        installed = self._installed(entry, verify=verify)
        return installed if installed is not None else self.pull(entry.ref)

    def pull(self, ref: str, *, force: bool = False, source: Source = "auto") -> InstalledModel:
        """Install ``ref`` into the cache (re-hashing what is there) and return it.

        A complete, matching install is kept unless ``force``; anything else is replaced
        atomically. ``source`` picks ``local``, ``hub`` or (``auto``) local first.
        """
        entry = self.entry(ref)
        with self._lock(entry):
            if not force:
                installed = self._installed(entry, verify=True)
                if installed is not None:
                    return installed
            origin = self._choose_source(entry, source)
            return self._install(entry, origin)

    def load_model(self, ref: str) -> SegmentationModel:
        """The network of ``ref``, from its verified safetensors file in the cache."""
        from zoo.model import SegmentationModel

        installed = self.resolve(ref)
        if installed.weights.suffix != ".safetensors":
            raise ZooError(
                f"{installed.entry.ref}: {installed.weights.name} is not safetensors; "
                "load ONNX weights through the onnx backend"
            )
        return SegmentationModel.load(installed.weights)

    def _installed(self, entry: ModelEntry, *, verify: bool) -> InstalledModel | None:
        directory = self.install_dir(entry)
        try:
            marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if marker.get("files") != [f.model_dump() for f in entry.files]:
            return None
        files = {f.path: directory / f.path for f in entry.files}
        for spec in entry.files:
            problem = file_problems(files[spec.path], spec, check_hash=verify)
            if problem is not None:
                logger.warning(
                    "cached %s is damaged (%s); it will be pulled again", entry.ref, problem
                )
                return None
        return InstalledModel(entry=entry, dir=directory, files=files)

    def _choose_source(self, entry: ModelEntry, source: Source) -> Literal["local", "hub"]:
        local = self.source_dir is not None and all(
            _inside(self.source_dir, f.path).is_file() for f in entry.files
        )
        if source == "local" or (source == "auto" and local):
            if not local:
                raise ZooError(
                    f"{entry.ref}: files not all present in local source {self.source_dir}"
                )
            return "local"
        if source not in ("auto", "hub"):
            raise ZooError(f"source must be auto, local or hub, got {source!r}")
        if entry.source is None:
            raise ZooError(
                f"{entry.ref} has no Hub source and its files are not all in {self.source_dir}"
            )
        if self.settings.offline:
            raise OfflineError(
                f"model {entry.ref} is not in the cache ({self.settings.home}) and offline mode is "
                f"on (ZOO_OFFLINE/HF_HUB_OFFLINE); pull it from {entry.source} while online"
            )
        return "hub"

    def _install(self, entry: ModelEntry, origin: Literal["local", "hub"]) -> InstalledModel:
        final = self.install_dir(entry)
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".tmp-{entry.version}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a crashed pull; we hold the lock
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.version}-", dir=final.parent))
        try:
            self._fetch(entry, origin, staging)
            self._verify(entry, staging)
            marker = {
                "ref": entry.ref,
                "origin": origin,
                "files": [f.model_dump() for f in entry.files],
                "source": str(entry.source) if entry.source else None,
            }
            (staging / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
            _swap_into_place(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("installed %s from %s into %s", entry.ref, origin, final)
        return InstalledModel(
            entry=entry, dir=final, files={f.path: final / f.path for f in entry.files}
        )

    def _fetch(self, entry: ModelEntry, origin: str, staging: Path) -> None:
        if origin == "hub":
            from zoo import hub

            hub.download(entry, staging, self.hub)
            return
        if self.source_dir is None:
            raise ZooError(f"{entry.ref}: this registry has no local source directory")
        for spec in entry.files:
            target = _inside(staging, spec.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_inside(self.source_dir, spec.path), target)

    @staticmethod
    def _verify(entry: ModelEntry, staging: Path) -> None:
        problems = [
            p for spec in entry.files if (p := file_problems(_inside(staging, spec.path), spec))
        ]
        if problems:
            raise IntegrityError(f"{entry.ref}: nothing installed: {'; '.join(problems)}")

    def _lock(self, entry: ModelEntry):
        from filelock import FileLock

        locks = self.settings.home / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        return _Lock(FileLock(str(locks / f"{entry.name}.lock"), timeout=LOCK_TIMEOUT_S), entry.ref)


class _Lock:
    """A file lock whose timeout becomes a ``ZooError`` naming the model."""

    def __init__(self, lock, ref: str) -> None:
        self._lock, self._ref = lock, ref

    def __enter__(self) -> None:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise ZooError(
                f"timed out after {LOCK_TIMEOUT_S:.0f}s waiting for another pull of "
                f"{self._ref} ({self._lock.lock_file})"
            ) from None

    def __exit__(self, *exc) -> None:
        self._lock.release()


def _inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing any path that would leave ``root``."""
    check_relative_path(relative)
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ZooError(f"file path {relative!r} leaves {root}")
    return path


def _swap_into_place(staging: Path, final: Path) -> None:
    """Rename ``staging`` to ``final``, moving any old ``final`` aside first."""
    trash = None
    if final.exists():
        trash = final.with_name(f".trash-{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, trash)
    os.rename(staging, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
