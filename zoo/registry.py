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

import copy
import difflib
import fnmatch
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from zoo.errors import IntegrityError, OfflineError, UnknownModelError, ZooError
from zoo.files import file_problems, inside, swap_into_place
from zoo.manifest import (
    Manifest,
    ModelEntry,
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


USER_ZOO = "user"


def user_manifest_path(settings: Settings) -> Path:
    """``models.yaml`` of the user's own zoo: ``<home>/user/models.yaml``. ``zoo train`` and
    the importers save models there (weights in ``<home>/user/weights/``), never into the
    install."""
    return settings.home / USER_ZOO / "models.yaml"


@dataclass(frozen=True)
class _Layer:
    """One ``models.yaml`` of a registry.

    Attributes:
        manifest: its entries.
        dir: where its relative file paths start (the local source), or None.
        path: the file ``update`` writes back to, or None (read-only).
    """

    manifest: Manifest
    dir: Path | None
    path: Path | None


class Registry:
    """Models of one or more manifests, installed into the cache of ``settings.home``.

    A registry stacks layers: usually the shipped zoo (or ``ZOO_MANIFEST``) and then the
    user's zoo (``Registry.default``). A later layer's entry shadows an earlier one of the
    same ``name@version``; new entries are written to the top layer.

    Args:
        manifest: the index of the first layer.
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
        self.settings = settings
        self._hub = hub
        self._layers = [_Layer(manifest, Path(source_dir).resolve() if source_dir else None,
                               Path(manifest_path) if manifest_path is not None else None)]
        self._merge()

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
        The zoo inside an installed wheel is read-only: ``update`` never writes into it.
        """
        path = Path(path) if path is not None else embedded_manifest_path()
        installed = path.parent.name == "shipped" and path.parent.parent == Path(__file__).parent
        manifest = load_manifest(path) if path.is_file() else Manifest(version=1, models=[])
        if not path.is_file():
            logger.debug("no embedded manifest at %s: empty registry", path)
        return cls(manifest, settings=settings, source_dir=path.parent,
                   manifest_path=None if installed else path, hub=hub)

    @classmethod
    def default(cls, settings: Settings, *, hub: HubSettings | None = None) -> Registry:
        """The registry cellzoo uses unless told otherwise: the shipped zoo (or the
        ``models.yaml`` of ``settings.manifest``), with the user's zoo on top
        (``user_manifest_path``), where new models are registered."""
        base = (cls.from_path(settings.manifest, settings=settings, hub=hub)
                if settings.manifest is not None else cls.embedded(settings, hub=hub))
        return base.with_layer(user_manifest_path(settings))

    def with_layer(self, path: str | Path) -> Registry:
        """This registry with the ``models.yaml`` at ``path`` on top (empty until the first
        ``update`` creates it); new entries go there."""
        path = Path(path)
        manifest = load_manifest(path) if path.is_file() else Manifest(version=1, models=[])
        stacked = copy.copy(self)
        stacked._layers = [*self._layers, _Layer(manifest, path.parent.resolve(), path)]
        stacked._merge()
        return stacked

    def _merge(self) -> None:
        """The merged index (a later layer's ``name@version`` wins) and each entry's layer."""
        self._owner: dict[str, _Layer] = {}
        merged: dict[str, ModelEntry] = {}
        for layer in self._layers:
            for entry in layer.manifest.models:
                merged[entry.ref] = entry
                self._owner[entry.ref] = layer
        self._manifest = Manifest(version=self._layers[0].manifest.version,
                                  models=list(merged.values()))

    @property
    def manifest(self) -> Manifest:
        """Every entry of every layer (shadowed ones left out)."""
        return self._manifest

    @property
    def source_dir(self) -> Path | None:
        """The top layer's folder: where a new model's files are saved."""
        return self._layers[-1].dir

    @property
    def manifest_path(self) -> Path | None:
        """The top layer's ``models.yaml``: where a new entry is written."""
        return self._layers[-1].path

    def layer_dir(self, ref: str) -> Path | None:
        """The folder the entry of ``ref`` came from (its relative paths start there)."""
        return self._owner[self.entry(ref).ref].dir

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
        """Replace (or add) ``entry`` by ``name@version`` and save its layer's manifest file.

        An entry is written back to the layer that holds it when that layer is writable,
        else (a new entry, or one from the read-only shipped zoo) to the top layer.
        """
        owner = self._owner.get(entry.ref)
        layer = owner if owner is not None and owner.path is not None else self._layers[-1]
        index = self._layers.index(layer)
        updated = _Layer(layer.manifest.replace(entry), layer.dir, layer.path)
        self._layers[index] = updated
        self._merge()
        if updated.path is not None:
            updated.path.parent.mkdir(parents=True, exist_ok=True)
            dump_manifest(updated.manifest, updated.path)

    def push(
        self, ref: str, repo_id: str, *, index_repo: str | None = None, force: bool = False
    ) -> str:
        """Publish ``ref`` to Hub repo ``repo_id`` (``zoo.hub.publish``), then record its new
        pinned source in this registry (and its manifest file). Returns the commit id.

        The files come from the local source copy when it is complete, else the cache.

        Raises:
            OfflineError: offline mode is on.
            PushRefusedError: see ``zoo.hub.publish``.
        """
        from zoo import hub

        entry = self.entry(ref)
        if self.settings.offline:
            raise OfflineError(f"cannot push {entry.ref} to {repo_id}: offline mode is on")
        local = self._local_dir(entry)
        files = ({f.path: inside(local, f.path) for f in entry.files} if local is not None
                 else self.resolve(entry.ref, verify=True).files)
        parent = self.entry(entry.parent) if entry.parent and entry.parent in self else None
        base_model = parent.source.repo_id if parent and parent.source else None
        published, commit = hub.publish(entry, files, repo_id, hub=self.hub,
                                        index_repo=index_repo, force=force,
                                        base_model=base_model)
        self.update(published)
        return commit

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
            self._clean_stale(entry)
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
        local = self._local_dir(entry) is not None
        if source == "local" or (source == "auto" and local):
            if not local:
                raise ZooError(
                    f"{entry.ref}: files not all present in local source "
                    f"{self._owner[entry.ref].dir}"
                )
            return "local"
        if source not in ("auto", "hub"):
            raise ZooError(f"source must be auto, local or hub, got {source!r}")
        if entry.source is None:
            raise ZooError(
                f"{entry.ref} has no Hub source and its files are not all in "
                f"{self._owner[entry.ref].dir}"
            )
        if self.settings.offline:
            raise OfflineError(
                f"model {entry.ref} is not in the cache ({self.settings.home}) and offline mode is "
                f"on (ZOO_OFFLINE/HF_HUB_OFFLINE); pull it from {entry.source} while online"
            )
        return "hub"

    def _local_dir(self, entry: ModelEntry) -> Path | None:
        """The folder of ``entry``'s layer when it holds every file of the entry, else None."""
        folder = self._owner[entry.ref].dir
        if folder is not None and all(inside(folder, f.path).is_file() for f in entry.files):
            return folder
        return None

    def _clean_stale(self, entry: ModelEntry) -> None:
        """Remove what a killed pull of ``entry`` left: its staging folders (``.tmp-*``) and
        a replaced install not yet deleted (``.trash-*``). Called under the model's lock,
        on every pull, so a crash never leaves them for longer than the next pull."""
        folder = self.install_dir(entry).parent
        if not folder.is_dir():
            return
        for pattern in (f".tmp-{entry.version}-*", f".trash-{entry.version}-*"):
            for stale in folder.glob(pattern):
                logger.info("removing %s, left by an interrupted pull", stale)
                shutil.rmtree(stale, ignore_errors=True)

    def _install(self, entry: ModelEntry, origin: Literal["local", "hub"]) -> InstalledModel:
        final = self.install_dir(entry)
        final.parent.mkdir(parents=True, exist_ok=True)
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
            swap_into_place(staging, final)
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
        folder = self._local_dir(entry)
        if folder is None:
            raise ZooError(f"{entry.ref}: this registry has no local copy of its files")
        for spec in entry.files:
            target = inside(staging, spec.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(inside(folder, spec.path), target)

    @staticmethod
    def _verify(entry: ModelEntry, staging: Path) -> None:
        problems = [
            p for spec in entry.files if (p := file_problems(inside(staging, spec.path), spec))
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


