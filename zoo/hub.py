"""The Hugging Face Hub: the only module of cellzoo that talks to a remote.

- ``download`` fetches an entry's files at its pinned commit (``snapshot_download`` with
  allow-patterns for exactly those files), with progress bars and resume of interrupted
  transfers (``huggingface_hub`` retries a dropped stream with an HTTP Range request).
- ``push`` publishes a model: its files plus a generated model card (``README.md``) in one
  commit, then the repo's ``models.yaml`` index (and optionally a separate registry repo's)
  updated with the entry pinned to that commit.
- ``fetch_remote_index`` reads a registry repo's ``models.yaml``, so models published after a
  release can be listed and pulled.

A Hub repo laid out by ``push``::

    README.md        model card (YAML metadata: library_name cellzoo, tags, license, …)
    models.yaml      index: every version pushed here, each pinned to its commit
    <entry files>    e.g. cpnet.generalist.safetensors, style_bank.safetensors

``huggingface_hub`` is imported inside the functions that use it, so importing this module is
cheap. The endpoint and token are passed explicitly from ``HubSettings``; a token never
appears in a log line or an error message.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from zoo.errors import HubError, PushRefusedError, ZooError
from zoo.files import sha256_file
from zoo.manifest import (
    FileSpec,
    Manifest,
    ModelEntry,
    Source,
    check_repo_id,
    dumps_manifest,
    loads_manifest,
    model_card,
)

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
INDEX_FILE = "models.yaml"
CARD_FILE = "README.md"
RESERVED = frozenset({INDEX_FILE, CARD_FILE, ".gitattributes"})
_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")
_USERINFO_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


@dataclass(frozen=True)
class HubSettings:
    """Where the Hub is and who we are there. Parsed once, passed explicitly.

    Attributes:
        endpoint: base URL of the Hub or a compatible server (``HF_ENDPOINT``).
        token: access token (``HF_TOKEN``, else ``huggingface_hub``'s saved login); hidden
            from ``repr``.
        progress: show download progress bars.
    """

    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = field(default=None, repr=False)
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, saved_login: bool = True
    ) -> HubSettings:
        """Read ``HF_ENDPOINT`` and ``HF_TOKEN``, else the saved ``hf auth login`` token."""
        env = os.environ if env is None else env
        token = env.get("HF_TOKEN") or None
        if token is None and saved_login:
            from huggingface_hub import get_token

            token = get_token()
        return cls(endpoint=env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT, token=token)

    @property
    def shown_endpoint(self) -> str:
        """``endpoint`` for messages: credentials in it (``user:pass@``) masked."""
        return self.redact(self.endpoint)

    def redact(self, text: str) -> str:
        """``text`` with the token, anything shaped like an HF token, and the credentials
        of any URL (``https://user:pass@host`` → ``https://***@host``) masked."""
        if self.token:
            text = text.replace(self.token, "***")
        text = _USERINFO_RE.sub(r"\1***@", text)
        return _TOKEN_RE.sub("hf_***", text)


class _Redacting(logging.Filter):
    """Masks the token and URL credentials in the log records a handler emits (the Hub
    client logs each retried request with its full URL)."""

    def __init__(self, hub: HubSettings) -> None:
        super().__init__()
        self.hub = hub

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.hub.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


@contextmanager
def _redacted_logs(hub: HubSettings) -> Iterator[None]:
    """While a Hub call runs, the handlers of ``huggingface_hub``'s logger and of the root
    logger print no credentials."""
    import huggingface_hub  # noqa: F401  (configures its logger and handler)

    redacting = _Redacting(hub)
    handlers = [*logging.getLogger("huggingface_hub").handlers, *logging.getLogger().handlers]
    for handler in handlers:
        handler.addFilter(redacting)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(redacting)


@contextmanager
def _hub_errors(action: str, hub: HubSettings) -> Iterator[None]:
    """Turn any failure of a Hub call into one-line ``HubError`` without the token; the
    call's own log lines show no credentials either."""
    try:
        with _redacted_logs(hub):
            yield
    except ZooError:
        raise
    except Exception as error:  # noqa: BLE001  (the boundary to huggingface_hub: wrap, not swallow)
        detail = hub.redact(" ".join(str(error).split()))[:400]
        logger.debug("%s failed: %s", action, type(error).__name__)
        raise HubError(
            f"{action} failed at {hub.shown_endpoint}: {type(error).__name__}: {detail}"
        ) from None


def _api(hub: HubSettings):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.endpoint, token=hub.token or False, library_name="cellzoo")


def _tqdm_class(hub: HubSettings):
    if hub.progress:
        return None
    from tqdm.auto import tqdm

    class _Silent(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return _Silent


def download(entry: ModelEntry, dest: str | Path, hub: HubSettings) -> dict[str, Path]:
    """Download ``entry``'s files at its pinned commit into the existing directory ``dest``.

    Only the entry's files are fetched (allow-patterns); nothing else is left in ``dest``.
    The caller verifies sha256 and size. Returns ``{path: local file}``.
    """
    if entry.source is None:
        raise ZooError(f"model {entry.ref} has no Hub source to download from")
    from huggingface_hub import snapshot_download

    dest = Path(dest)
    paths = [spec.path for spec in entry.files]
    with _hub_errors(f"download of {entry.ref} from {entry.source}", hub):
        snapshot_download(
            entry.source.repo_id,
            revision=entry.source.revision,
            local_dir=dest,
            cache_dir=dest / ".cache" / "hub",
            allow_patterns=paths,
            endpoint=hub.endpoint,
            token=hub.token or False,
            tqdm_class=_tqdm_class(hub),
            library_name="cellzoo",
        )
    shutil.rmtree(dest / ".cache", ignore_errors=True)
    missing = [p for p in paths if not (dest / p).is_file()]
    if missing:
        raise HubError(f"{entry.source} does not hold {missing} needed by {entry.ref}")
    return {p: dest / p for p in paths}


def fetch_remote_index(repo_id: str, hub: HubSettings, *, revision: str = "main") -> Manifest:
    """The ``models.yaml`` index at ``revision`` of Hub repo ``repo_id`` (a registry repo)."""
    check_repo_id(repo_id)
    with _hub_errors(f"reading {INDEX_FILE} of {repo_id}@{revision}", hub):
        return _read_index(_api(hub), repo_id, revision, missing_ok=False)


def _read_index(api, repo_id: str, revision: str, *, missing_ok: bool = True) -> Manifest:
    """The index at ``revision``; an empty one when the repo has none and ``missing_ok``."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    with tempfile.TemporaryDirectory(prefix="cellzoo-index-") as tmp:
        try:
            path = api.hf_hub_download(
                repo_id, INDEX_FILE, revision=revision, local_dir=tmp, cache_dir=Path(tmp) / ".hub"
            )
        except LocalEntryNotFoundError as error:  # unreachable, not "no index": say so
            raise ConnectionError(f"the Hub did not answer ({' '.join(str(error).split())[:200]})"
                                  ) from None
        except EntryNotFoundError:
            if not missing_ok:
                raise HubError(
                    f"{repo_id}@{revision} has no {INDEX_FILE}: not a cellzoo registry repo"
                ) from None
            return Manifest(version=1, models=[])
        text = Path(path).read_text(encoding="utf-8")
    return loads_manifest(text, source=f"hf://{repo_id}@{revision}/{INDEX_FILE}")


#: License ids the Hub lists (https://huggingface.co/docs/hub/repositories-licenses), lowercase.
HUB_LICENSES = frozenset({
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m",
    "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0",
    "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0",
    "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0",
    "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0",
    "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl",
    "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "h-research",
    "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0", "odc-by",
    "odbl", "openmdw-1.0", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa",
    "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "fair-noncommercial-research-license",
    "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4", "gemma", "unknown", "other",
})
#: A Hub repo id (``name`` or ``org/name``): the form ``datasets`` and ``base_model`` take.
HUB_ID_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$")
_AP_RE = re.compile(r"^ap@(0?\.\d+|1(?:\.0*)?)$")
CARD_TAGS = ("cellzoo", "cellpose", "cell-segmentation", "instance-segmentation",
             "image-segmentation", "microscopy", "biology")


def card_metadata(entry: ModelEntry, *, base_model: str | None = None) -> dict:
    """The model card's YAML metadata, following the Hub's conventions for a pushed model.

    - ``library_name: cellzoo`` and ``pipeline_tag: image-segmentation``;
    - ``tags``: cellzoo's, the model's kind, architecture and cluster;
    - ``license``: the Hub's lowercase id, or ``other`` with ``license_name``;
    - ``base_model`` (the published parent's repo) and ``base_model_relation: finetune``;
    - ``datasets``: the training datasets that are Hub dataset ids (others, such as
      cellzoo's ``synthetic:STYLE``, stay in the card's text and ``cellzoo.training_data``);
    - ``metrics`` and ``model-index``: each metric as an evaluation result
      (task ``image-segmentation``; ``ap@T`` is average precision at IoU threshold T);
    - ``cellzoo``: the zoo's own fields (name, version, kind, diameter, cluster, parent, ...).

    Returns:
        A dict ready for ``huggingface_hub.ModelCardData(**dict)``.
    """
    from huggingface_hub import EvalResult

    license_id = entry.license.lower() if entry.license else None
    licensing = ({"license": license_id} if license_id in HUB_LICENSES or license_id is None
                 else {"license": "other", "license_name": license_id})
    data = entry.training_data
    datasets = [d for d in (data.datasets if data else []) if HUB_ID_RE.match(d)]
    dataset_type = datasets[0] if datasets else "cellzoo-synthetic"
    dataset_name = "held-out test images like the training data"
    results = []
    for key, value in entry.metrics.items():
        match = _AP_RE.match(key)
        results.append(EvalResult(
            task_type="image-segmentation", task_name="Instance segmentation",
            dataset_type=dataset_type, dataset_name=dataset_name, dataset_split="test",
            metric_type="average_precision" if match else key,
            metric_name=f"AP@{float(match.group(1)):g}" if match else key,
            metric_args={"iou_threshold": float(match.group(1))} if match else None,
            metric_value=float(value),
        ))
    tags = [*CARD_TAGS, entry.kind, entry.architecture]
    if entry.cluster:
        tags.append(f"style-{entry.cluster.name}")
    cellzoo = {
        "name": entry.name,
        "version": entry.version,
        "kind": entry.kind,
        "architecture": entry.architecture,
        "diameter": entry.diameter,
        "channels": entry.channels,
        "cluster": entry.cluster.model_dump(exclude={"centroid"}) if entry.cluster else None,
        "parent": entry.parent,
        "metrics": dict(entry.metrics) or None,
        "training_data": data.model_dump() if data else None,
    }
    metadata = {
        "library_name": "cellzoo",
        "pipeline_tag": "image-segmentation",
        "tags": list(dict.fromkeys(tags)),
        **licensing,
        "base_model": base_model,
        "base_model_relation": "finetune" if base_model else None,
        "datasets": datasets or None,
        "metrics": sorted({r.metric_type for r in results}) or None,
        "model_name": entry.name if results else None,
        "eval_results": results or None,
        "cellzoo": {k: v for k, v in cellzoo.items() if v is not None},
    }
    return {k: v for k, v in metadata.items() if v is not None}


def card_text(entry: ModelEntry, *, base_model: str | None = None) -> str:
    """The Hub model card of ``entry``: YAML metadata (``card_metadata``) plus the Markdown
    of ``model_card``.

    ``base_model`` is the Hub repo of the parent model, when it is published.
    """
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(**card_metadata(entry, base_model=base_model))
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{model_card(entry)}"))


def _check_push(
    entry: ModelEntry, index: Manifest, remote_files: set[str], *, repo_id: str, force: bool
) -> None:
    """Refuse to overwrite a published version, or another model's files, without ``force``."""
    if force:
        return
    if any(m.ref == entry.ref for m in index.models):
        raise PushRefusedError(
            f"{entry.ref} is already published in {repo_id}; bump the version or use --force"
        )
    clashes = sorted(remote_files & {f.path for f in entry.files})
    if clashes and not any(m.name == entry.name for m in index.models):
        raise PushRefusedError(
            f"{repo_id} already holds {clashes} of another model; use another repo or --force"
        )


def publish(
    entry: ModelEntry,
    files: Mapping[str, Path],
    repo_id: str,
    *,
    hub: HubSettings,
    index_repo: str | None = None,
    force: bool = False,
    base_model: str | None = None,
) -> tuple[ModelEntry, str]:
    """Publish ``entry``'s ``files`` (path in the entry → local file) to Hub repo ``repo_id``.

    Creates the repo if needed, commits the files and a model card, then records the entry,
    pinned to that commit with fresh checksums, in the repo's ``models.yaml`` (and in
    ``index_repo``'s, a registry repo, when given). Refused (``PushRefusedError``) without
    ``force`` when the version is already in a target index, or the repo holds another
    model's files. ``Registry.push`` is the caller that also records the result locally.

    Returns:
        The published entry (its ``source`` pinned to the new commit) and the commit id.
    """
    check_repo_id(repo_id)
    if index_repo is not None:
        check_repo_id(index_repo)
    reserved = sorted(RESERVED & {f.path for f in entry.files})
    if reserved:
        raise PushRefusedError(f"{entry.ref}: file names {reserved} are reserved on the Hub repo")
    specs = [FileSpec(path=p, sha256=sha256_file(f), size=f.stat().st_size) for p, f in files.items()]
    api = _api(hub)
    targets = [repo_id] + ([index_repo] if index_repo not in (None, repo_id) else [])
    with _hub_errors(f"push of {entry.ref} to {repo_id}", hub):
        heads, indexes = _remote_state(api, targets)
        remote_files = set(api.list_repo_files(repo_id, revision=heads[repo_id]))
        for target in targets:
            present = remote_files if target == repo_id else set()
            _check_push(entry, indexes[target], present, repo_id=target, force=force)
        card = card_text(entry, base_model=base_model)
        commit = _commit_files(api, repo_id, entry, dict(files), parent=heads[repo_id], card=card)
        source = Source(repo_id=repo_id, revision=commit)
        published = entry.model_copy(update={"source": source, "files": specs})
        for target in targets:
            parent = commit if target == repo_id else heads[target]
            _commit_index(api, target, indexes[target].replace(published), parent=parent)
    logger.info("pushed %s to %s at %s", entry.ref, repo_id, commit)
    return published, commit


def _remote_state(api, repos: list[str]) -> tuple[dict[str, str], dict[str, Manifest]]:
    """Create each repo if needed; its head commit and its ``models.yaml`` index there."""
    heads, indexes = {}, {}
    for repo_id in repos:
        api.create_repo(repo_id, exist_ok=True)
        heads[repo_id] = api.repo_info(repo_id).sha
        indexes[repo_id] = _read_index(api, repo_id, heads[repo_id])
    return heads, indexes


def _commit_files(
    api, repo_id: str, entry: ModelEntry, files: dict[str, Path], *, parent: str, card: str
) -> str:
    from huggingface_hub import CommitOperationAdd

    operations = [
        CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in files.items()
    ]
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode()))
    info = api.create_commit(
        repo_id, operations, commit_message=f"cellzoo: add {entry.ref}", parent_commit=parent
    )
    return info.oid


def _commit_index(api, repo_id: str, index: Manifest, *, parent: str) -> str:
    from huggingface_hub import CommitOperationAdd

    text = dumps_manifest(index).encode("utf-8")
    operation = CommitOperationAdd(path_in_repo=INDEX_FILE, path_or_fileobj=text)
    info = api.create_commit(
        repo_id, [operation], commit_message="cellzoo: update models.yaml", parent_commit=parent
    )
    return info.oid
