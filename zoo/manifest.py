"""The schema of ``models.yaml``: the index of a model zoo.

A manifest lists model entries. Each entry names one trained network (``name@version``), says
what it is for (kind, cluster, diameter, default post-processing) and pins every file it needs
by sha256 and size. Paths are relative to the manifest's directory (for a local zoo) or to the
root of the Hub repo pinned by ``source`` (for a published model)::

    version: 1
    models:
    - name: cpnet.generalist
      version: 1.0.0
      kind: generalist
      diameter: 30.0
      files:
      - {path: cpnet.generalist.safetensors, sha256: 9f…, size: 26542080}
      source: {repo_id: cellzoo/cpnet.generalist, revision: 3c1e…}

Every name, version and path is validated here, so a manifest from a remote can never
address anything outside the directory it is installed into. ``docs/models.schema.json`` is
generated from these models (``write_json_schema``) for editors.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from zoo.errors import InvalidNameError, ManifestError, ZooError
from zoo.files import check_relative_path, file_problems, inside
from zoo.params import FlowParams

SCHEMA_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_RE = re.compile(r"^\d+(?:\.\d+){0,2}(?:[-+][0-9A-Za-z.-]+)?$")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
WEIGHT_SUFFIXES = (".safetensors", ".onnx")

Kind = Literal["generalist", "specialist", "nuclei", "user"]
KINDS: tuple[str, ...] = ("generalist", "specialist", "nuclei", "user")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name (``^[a-z0-9][a-z0-9._-]{0,63}$``)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidNameError(
            f"invalid model name {name!r}: use lowercase a-z, 0-9, '.', '_', '-'"
        )
    return name


def check_version(version: str) -> str:
    """Return ``version`` if it is semver-ish (``1``, ``1.2``, ``1.2.3``, ``1.2.3-rc1``)."""
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise InvalidNameError(f"invalid version {version!r}: expected e.g. 1.0.0 or 1.0.0-rc1")
    return version


def check_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it looks like ``org/name`` on the Hub."""
    if not isinstance(repo_id, str) or not REPO_ID_RE.match(repo_id) or ".." in repo_id:
        raise InvalidNameError(f"invalid Hub repo id {repo_id!r}: expected org/name")
    return repo_id


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``name[@version]`` and validate both parts."""
    name, _, version = ref.partition("@") if isinstance(ref, str) else (ref, "", "")
    return check_name(name), (check_version(version) if version else None)


def version_key(version: str) -> tuple:
    """Sort key for semver-ish versions: numeric parts, then releases after pre-releases."""
    match = re.match(r"^([\d.]+)(?:([-+])(.*))?$", version)
    core, sep, rest = match.groups("") if match else (version, "", "")
    numbers = tuple(int(part) for part in core.split("."))
    numbers += (0,) * (3 - len(numbers))
    return numbers, sep != "-", rest


def _wrap(check):
    def validate(value):
        try:
            return check(value)
        except InvalidNameError as error:
            raise ValueError(str(error)) from None

    return AfterValidator(validate)


def _pattern(regex: str) -> Any:
    return Field(json_schema_extra={"pattern": regex})


_PATH_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$"
ModelName = Annotated[str, _wrap(check_name), _pattern(NAME_RE.pattern)]
Version = Annotated[str, _wrap(check_version), _pattern(VERSION_RE.pattern)]
RelPath = Annotated[str, _wrap(check_relative_path), _pattern(_PATH_PATTERN)]
RepoId = Annotated[str, _wrap(check_repo_id), _pattern(REPO_ID_RE.pattern)]
#: A model's mean cell diameter in pixels: finite, positive, at most 10,000.
Diameter = Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False)]
Architecture = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSpec(_Record):
    """One file of a model: where it lives (relative), its sha256 and its size in bytes."""

    path: RelPath
    sha256: Annotated[str, Field(pattern=SHA256_RE.pattern)]
    size: Annotated[int, Field(ge=0)]


class Cluster(_Record):
    """The image-style cluster a specialist was trained on (see ``zoo.cluster``)."""

    id: Annotated[int, Field(ge=0)]
    name: Annotated[str, Field(min_length=1)]
    centroid: list[float] | None = None


def _parse_hf_uri(value: Any) -> Any:
    if isinstance(value, str):
        match = re.match(r"^hf://(?P<repo_id>[^@]+)@(?P<revision>.+)$", value)
        if match is None:
            raise ValueError(f"expected hf://org/repo@<commit>, got {value!r}")
        return match.groupdict()
    return value


class Source(_Record):
    """A Hub repo pinned to one commit: ``hf://repo_id@revision``."""

    repo_id: RepoId
    revision: Annotated[str, Field(pattern=COMMIT_RE.pattern, description="a 40-hex commit id")]

    def __str__(self) -> str:
        return f"hf://{self.repo_id}@{self.revision}"


class TrainingData(_Record):
    """What a model was trained on, in brief."""

    summary: str = ""
    datasets: list[str] = []
    images: Annotated[int, Field(ge=0)] | None = None


class SourceFile(_Record):
    """One foreign file a model was imported from: its name (never a path), sha256 and size."""

    name: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^/\\]+$")]
    sha256: Annotated[str, Field(pattern=SHA256_RE.pattern)]
    size: Annotated[int, Field(ge=0)]
    role: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "weights"


class Lineage(_Record):
    """Where an imported model came from (``zoo import``).

    Attributes:
        format: the importer that read the files, e.g. ``cellpose``.
        files: the files read, with their sha256 (the checkpoint first; then, e.g., a size
            model with role ``size_model``).
        channels: what each network input channel holds, in order, in the source tool's
            convention (Cellpose: ``cytoplasm`` (or grayscale), then ``nucleus``, zeros when
            absent).
        notes: anything else the importer recorded (e.g. Cellpose's ``diam_labels``).
    """

    format: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]*$")]
    files: Annotated[list[SourceFile], Field(min_length=1)]
    channels: list[str] = []
    notes: dict[str, str | float | int] = {}

    @property
    def sha256(self) -> str:
        """The sha256 of the main source file (the checkpoint)."""
        return self.files[0].sha256


def _unique_axes(axes: str) -> str:
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes!r} repeat a letter")
    return axes


class ModelEntry(_Record):
    """One model of the zoo. ``name@version`` is its key; aliases map to the name.

    Attributes:
        weights: the network weights file (a path in ``files``, ``.safetensors`` or ``.onnx``);
            default: the only ``.safetensors`` (else ``.onnx``) file that is not the style bank.
        style_bank: for routers, the reference style bank file (a path in ``files``).
        source: the Hub repo and commit the files were published at; None for local-only models.
        parent: ``name[@version]`` of the model this one was fine-tuned from.
        lineage: for an imported model, the foreign files it came from (with their sha256)
            and the source tool's channel convention.
    """

    name: ModelName
    version: Version
    aliases: list[ModelName] = []
    kind: Kind
    description: str = ""
    architecture: Architecture = "cpnet"
    config: dict[str, Any] = {}
    channels: Annotated[int, Field(ge=1, le=16)] = 2
    axes: Annotated[str, Field(pattern=r"^[czyx]{2,4}$"), AfterValidator(_unique_axes)] = "cyx"
    diameter: Diameter
    flow_params: FlowParams = FlowParams()
    cluster: Cluster | None = None
    weights: RelPath | None = None
    style_bank: RelPath | None = None
    files: Annotated[list[FileSpec], Field(min_length=1)]
    source: Annotated[Source | None, BeforeValidator(_parse_hf_uri)] = None
    training_data: TrainingData | None = None
    metrics: dict[str, float] = {}
    license: str | None = None
    citation: str | None = None
    parent: str | None = None
    lineage: Lineage | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelEntry:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError(f"duplicate file paths in {paths}")
        for label, path in (("style_bank", self.style_bank), ("weights", self.weights)):
            if path is not None and path not in paths:
                raise ValueError(f"{label} {path!r} is not one of the files {paths}")
        if self.weights is not None and not self.weights.endswith(WEIGHT_SUFFIXES):
            raise ValueError(f"weights {self.weights!r} must be a .safetensors or .onnx file")
        self.weights_path  # noqa: B018  (raises when ambiguous)
        if self.kind == "specialist" and self.cluster is None:
            raise ValueError(f"specialist {self.name!r} needs a cluster {{id, name, centroid}}")
        if self.name in self.aliases:
            raise ValueError(f"alias {self.name!r} repeats the model's own name")
        if self.parent is not None:
            try:
                parse_ref(self.parent)
            except InvalidNameError as error:
                raise ValueError(f"parent: {error}") from None
        return self

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    @property
    def size(self) -> int:
        """Total bytes of all files."""
        return sum(f.size for f in self.files)

    @property
    def weights_path(self) -> str:
        """The weights file's path in ``files`` (explicit ``weights`` or the unique candidate)."""
        if self.weights is not None:
            return self.weights
        candidates = [f.path for f in self.files if f.path != self.style_bank]
        for suffix in WEIGHT_SUFFIXES:
            found = [p for p in candidates if p.endswith(suffix)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise ValueError(f"several {suffix} files {found}: set 'weights' to pick one")
        raise ValueError(f"no .safetensors or .onnx weights file among {candidates}")

    def file(self, path: str) -> FileSpec:
        """The ``FileSpec`` of ``path``; KeyError if the entry has no such file."""
        for spec in self.files:
            if spec.path == path:
                return spec
        raise KeyError(path)


class CPNetConfig(_Record):
    """The ``cpnet`` architecture's hyper-parameters (``zoo.nets.cpnet.NetConfig``), bounded
    so that no crafted file can ask for an absurd network."""

    channels: Annotated[list[Annotated[int, Field(ge=1, le=1024)]],
                        Field(min_length=3, max_length=8)] = [2, 32, 64, 128, 256]
    n_out: Annotated[int, Field(ge=1, le=16)] = 3
    kernel_size: Annotated[int, Field(ge=1, le=15)] = 3

    @model_validator(mode="after")
    def _shape(self) -> CPNetConfig:
        if self.channels[0] > 16:
            raise ValueError(f"channels[0] (input channels) must be <= 16, got {self.channels[0]}")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        return self


class WeightsMetadata(_Record):
    """The ``cellzoo`` metadata of a weights file (``zoo.model``): the same field types as
    a manifest entry (architecture, diameter, post-processing defaults), checked before any
    tensor is read."""

    format_version: Annotated[int, Field(ge=1)] = 1
    arch: Literal["cpnet"]
    config: CPNetConfig
    diam_mean: Diameter
    flow_params: FlowParams = FlowParams()
    diam_labels: Diameter | None = None
    layout: Literal["cellzoo", "cellpose"] = "cellzoo"


class Manifest(_Record):
    """A whole ``models.yaml``: a schema version and the model entries."""

    version: Annotated[int, Field(ge=1, le=SCHEMA_VERSION, description="schema version")]
    models: list[ModelEntry] = []

    @model_validator(mode="after")
    def _unique(self) -> Manifest:
        refs = [m.ref for m in self.models]
        duplicates = sorted({r for r in refs if refs.count(r) > 1})
        if duplicates:
            raise ValueError(f"duplicate models {duplicates}")
        names = {m.name for m in self.models}
        owner: dict[str, str] = {}
        for model in self.models:
            for alias in model.aliases:
                if alias in names:
                    raise ValueError(f"alias {alias!r} of {model.name!r} is also a model name")
                if owner.setdefault(alias, model.name) != model.name:
                    raise ValueError(
                        f"alias {alias!r} names both {owner[alias]!r} and {model.name!r}"
                    )
        return self

    def replace(self, entry: ModelEntry) -> Manifest:
        """A new manifest with ``entry`` replacing the one with its ``name@version`` (or added)."""
        models = [m for m in self.models if m.ref != entry.ref]
        index = next((i for i, m in enumerate(self.models) if m.ref == entry.ref), len(models))
        models.insert(index, entry)
        return Manifest(version=self.version, models=models)


def format_errors(error: ValidationError, data: Any = None) -> list[str]:
    """pydantic errors as ``models[2].files[0].sha256: message`` lines."""
    lines = []
    for item in error.errors():
        loc = ""
        for part in item["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{loc or '<root>'}: {message}{_entry_hint(item['loc'], data)}")
    return lines


def _entry_hint(loc: tuple, data: Any) -> str:
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int) and isinstance(data, dict):
        models = data.get("models")
        if isinstance(models, list) and loc[1] < len(models) and isinstance(models[loc[1]], dict):
            name = models[loc[1]].get("name")
            return f" (model {name!r})" if isinstance(name, str) else ""
    return ""


def parse_manifest(data: Any, *, source: str = "<manifest>") -> Manifest:
    """Validate already-parsed YAML/JSON data; ``ManifestError`` lists every problem."""
    if not isinstance(data, dict):
        raise ManifestError(
            source,
            [f"<root>: expected a mapping with 'version' and 'models', got {type(data).__name__}"],
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as error:
        raise ManifestError(source, format_errors(error, data)) from None


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a ``models.yaml`` (safe YAML only)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ManifestError(str(path), [f"cannot read: {error.strerror or error}"]) from None
    return loads_manifest(text, source=str(path))


def loads_manifest(text: str, *, source: str = "<manifest>") -> Manifest:
    """Parse and validate the YAML text of a manifest."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ManifestError(source, [f"{where}invalid YAML: {problem}"]) from None
    return parse_manifest(data if data is not None else {}, source=source)


def dumps_manifest(manifest: Manifest) -> str:
    """YAML text of ``manifest``: stable key order (schema order), defaults left out."""
    data = manifest.model_dump(mode="json", exclude_defaults=True)
    data = {"version": manifest.version, **data}
    header = "# cellzoo model index; schema: docs/models.schema.json\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def dump_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write ``manifest`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as handle:
        handle.write(dumps_manifest(manifest))
    os.replace(handle.name, path)
    return path


def validate_manifest(path: str | Path, *, check_files: bool = False) -> list[str]:
    """Every problem with the manifest at ``path``, as readable lines; empty when valid.

    With ``check_files``, also check local files next to the manifest: each must exist with its
    pinned size and sha256, except for models that have a Hub ``source`` (those may be
    remote-only, but a local copy that is present must still match).
    """
    try:
        manifest = load_manifest(path)
    except ManifestError as error:
        return error.errors
    if not check_files:
        return []
    root = Path(path).parent
    problems = []
    for i, entry in enumerate(manifest.models):
        for j, spec in enumerate(entry.files):
            try:  # the check ``zoo pull`` makes: no file (or symlink) may lead out of the zoo
                local = inside(root, spec.path)
            except ZooError as error:
                problems.append(f"models[{i}].files[{j}] ({entry.ref}): {error}")
                continue
            problem = file_problems(local, spec, missing_ok=entry.source is not None)
            if problem:
                problems.append(f"models[{i}].files[{j}] ({entry.ref}): {problem}")
    return problems


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``models.yaml`` (draft 2020-12)."""
    schema = Manifest.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "cellzoo models.yaml",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def write_json_schema(path: str | Path) -> Path:
    """Write the JSON Schema of ``models.yaml`` to ``path`` (``docs/models.schema.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_schema(), indent=2) + "\n", encoding="utf-8")
    return path


def model_card(entry: ModelEntry) -> str:
    """A Markdown description of ``entry``: the body of its Hub model card and of ``zoo info``."""
    lines = [f"# {entry.name} {entry.version}", ""]
    if entry.description:
        lines += [entry.description, ""]
    facts = [
        ("kind", entry.kind),
        ("aliases", ", ".join(entry.aliases) or None),
        ("architecture", entry.architecture),
        ("input", f"{entry.channels} channel(s), axes {entry.axes}"),
        ("mean diameter", f"{entry.diameter:g} px"),
        ("cluster", f"{entry.cluster.id} ({entry.cluster.name})" if entry.cluster else None),
        ("parent", entry.parent),
        ("license", entry.license),
        ("source", str(entry.source) if entry.source else None),
    ]
    lines += [f"- **{key}**: {value}" for key, value in facts if value]
    lines += ["", "## Files", "", "| path | size | sha256 |", "| --- | ---: | --- |"]
    lines += [f"| {f.path} | {f.size} | `{f.sha256}` |" for f in entry.files]
    fp = entry.flow_params
    lines += [
        "",
        "## Post-processing defaults",
        "",
        (
            f"niter {fp.niter}, cellprob_threshold {fp.cellprob_threshold:g}, "
            f"flow_threshold {fp.flow_threshold:g}, min_size {fp.min_size}, "
            f"max_size_fraction {fp.max_size_fraction:g}"
        ),
    ]
    if entry.lineage:
        lineage = entry.lineage
        lines += ["", "## Imported from", "", f"- format: {lineage.format}"]
        lines += [f"- {f.role}: {f.name} ({f.size} bytes, sha256 `{f.sha256}`)"
                  for f in lineage.files]
        if lineage.channels:
            lines += [f"- input channels: {', '.join(lineage.channels)}"]
        lines += [f"- {key}: {value}" for key, value in lineage.notes.items()]
    if entry.training_data:
        data = entry.training_data
        lines += ["", "## Training data", ""] + ([data.summary] if data.summary else [])
        lines += [f"- datasets: {', '.join(data.datasets)}"] if data.datasets else []
        lines += [f"- images: {data.images}"] if data.images is not None else []
    if entry.metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "| --- | ---: |"]
        lines += [f"| {key} | {value:.4g} |" for key, value in entry.metrics.items()]
    if entry.citation:
        lines += ["", "## Citation", "", "```", entry.citation.strip(), "```"]
    return "\n".join(lines) + "\n"
