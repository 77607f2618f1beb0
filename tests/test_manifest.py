"""Tests for zoo.manifest: the models.yaml schema, YAML round trips, errors, JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from zoo.errors import InvalidNameError, ManifestError
from zoo.manifest import (
    Manifest,
    ModelEntry,
    Source,
    dump_manifest,
    dumps_manifest,
    json_schema,
    load_manifest,
    loads_manifest,
    model_card,
    parse_manifest,
    parse_ref,
    validate_manifest,
    version_key,
)
from zoo.params import FlowParams

SHA = "ab" * 32
COMMIT = "c0ffee" + "0" * 34
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "models.schema.json"


def entry_data(name: str = "cpnet.generalist", **fields) -> dict:
    data = {
        "name": name,
        "version": "1.0.0",
        "kind": "generalist",
        "diameter": 30.0,
        "files": [{"path": f"{name}.safetensors", "sha256": SHA, "size": 10}],
    }
    return {**data, **fields}


def full_entry() -> ModelEntry:
    return ModelEntry.model_validate(
        entry_data(
            "cpnet.tn1",
            version="1.2.0-rc1",
            aliases=["tn1"],
            kind="specialist",
            description="TissueNet nuclei+cytoplasm specialist",
            config={"channels": [2, 32, 64], "style": True},
            channels=2,
            axes="cyx",
            diameter=17.5,
            flow_params={"niter": 150, "flow_threshold": 0.6},
            cluster={"id": 3, "name": "tissuenet", "centroid": [0.25, -0.5, 1.0]},
            style_bank="style_bank.safetensors",
            files=[
                {"path": "cpnet.tn1.safetensors", "sha256": SHA, "size": 10},
                {"path": "style_bank.safetensors", "sha256": "cd" * 32, "size": 4},
            ],
            source={"repo_id": "cellzoo/cpnet.tn1", "revision": COMMIT},
            training_data={
                "summary": "TissueNet train split",
                "datasets": ["tissuenet"],
                "images": 2580,
            },
            metrics={"ap50": 0.81, "ap75": 0.55},
            license="BSD-3-Clause",
            citation="Greenwald et al. 2022",
            parent="cpnet.generalist@1.0.0",
        )
    )


def test_full_entry_round_trips_through_yaml(tmp_path: Path) -> None:
    manifest = Manifest(version=1, models=[ModelEntry.model_validate(entry_data()), full_entry()])
    path = dump_manifest(manifest, tmp_path / "models.yaml")
    loaded = load_manifest(path)
    assert loaded == manifest
    assert dumps_manifest(loaded) == path.read_text()  # stable text, stable key order
    assert loaded.models[1].flow_params == FlowParams(niter=150, flow_threshold=0.6)
    second = path.read_text().split("- name: cpnet.tn1")[1].splitlines()
    keys = [line.split(":")[0].strip() for line in second if line[2:3].isalpha()]
    assert keys[:3] == ["version", "aliases", "kind"] and keys[-1] == "parent"


def test_entry_properties() -> None:
    entry = full_entry()
    assert entry.ref == "cpnet.tn1@1.2.0-rc1"
    assert entry.size == 14
    assert entry.weights_path == "cpnet.tn1.safetensors"  # the style bank is not the weights
    assert str(entry.source) == f"hf://cellzoo/cpnet.tn1@{COMMIT}"
    assert entry.file("style_bank.safetensors").size == 4


def test_source_accepts_hf_uri() -> None:
    entry = ModelEntry.model_validate(entry_data(source=f"hf://org/repo@{COMMIT}"))
    assert entry.source == Source(repo_id="org/repo", revision=COMMIT)


@pytest.mark.parametrize("revision", ["main", "c0ffee", "C0FFEE" + "0" * 34])
def test_source_must_pin_a_commit(revision: str) -> None:
    with pytest.raises(ValidationError, match="revision"):
        ModelEntry.model_validate(entry_data(source={"repo_id": "org/repo", "revision": revision}))


@pytest.mark.parametrize(
    "path",
    [
        "../evil.safetensors",
        "/etc/passwd",
        "a/../b.safetensors",
        "a\\b.safetensors",
        ".complete",
        "a//b.safetensors",
        "C:/w.safetensors",
        "",
        "./w.safetensors",
        "a/..",
    ],
)
def test_traversal_paths_are_refused(path: str) -> None:
    data = entry_data(files=[{"path": path, "sha256": SHA, "size": 1}])
    with pytest.raises(ManifestError) as info:
        parse_manifest({"version": 1, "models": [data]})
    assert any(e.startswith("models[0].files[0].path:") for e in info.value.errors)


@pytest.mark.parametrize("name", ["../etc", "Cpnet", "a/b", "", "-x", ".x", "x" * 65, "a b"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidNameError):
        parse_ref(name)
    with pytest.raises(ManifestError, match="models\\[0\\].name"):
        parse_manifest({"version": 1, "models": [entry_data(name)]})


def test_parse_ref() -> None:
    assert parse_ref("cpnet.tn1") == ("cpnet.tn1", None)
    assert parse_ref("cpnet.tn1@2.0") == ("cpnet.tn1", "2.0")
    with pytest.raises(InvalidNameError, match="version"):
        parse_ref("cpnet.tn1@../../x")


def test_errors_are_precise() -> None:
    bad = entry_data(
        "cpnet.bad",
        files=[{"path": "w.safetensors", "sha256": "nothex", "size": -1}],
        diameter=0,
        kind="bogus",
    )
    with pytest.raises(ManifestError) as info:
        parse_manifest({"version": 1, "models": [entry_data(), bad]})
    errors = info.value.errors
    assert any(e.startswith("models[1].files[0].sha256:") and "cpnet.bad" in e for e in errors)
    assert any(e.startswith("models[1].files[0].size:") for e in errors)
    assert any(e.startswith("models[1].diameter:") for e in errors)
    assert any(e.startswith("models[1].kind:") for e in errors)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "specialist"}, "needs a cluster"),
        (
            {"style_bank": "bank.safetensors"},
            "style_bank 'bank.safetensors' is not one of the files",
        ),
        (
            {
                "files": [
                    {"path": "a.safetensors", "sha256": SHA, "size": 1},
                    {"path": "b.safetensors", "sha256": SHA, "size": 1},
                ]
            },
            "set 'weights'",
        ),
        ({"files": [{"path": "notes.txt", "sha256": SHA, "size": 1}]}, "no .safetensors or .onnx"),
        (
            {"weights": "w.pt", "files": [{"path": "w.pt", "sha256": SHA, "size": 1}]},
            "must be a .safetensors",
        ),
        (
            {"files": [{"path": "a.safetensors", "sha256": SHA, "size": 1}] * 2},
            "duplicate file paths",
        ),
        ({"aliases": ["cpnet.generalist"]}, "repeats the model's own name"),
        ({"axes": "cc"}, "repeat a letter"),
        ({"parent": "../x"}, "parent"),
        ({"flow_params": {"niter": 0}}, "niter must be >= 1"),
        ({"extra_key": 1}, "Extra inputs are not permitted"),
    ],
)
def test_entry_consistency_checks(fields: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest({"version": 1, "models": [entry_data(**fields)]})


def test_onnx_only_weights_are_found() -> None:
    entry = ModelEntry.model_validate(
        entry_data(files=[{"path": "net.onnx", "sha256": SHA, "size": 1}])
    )
    assert entry.weights_path == "net.onnx"


def test_manifest_uniqueness() -> None:
    with pytest.raises(ManifestError, match="duplicate models"):
        parse_manifest({"version": 1, "models": [entry_data(), entry_data()]})
    two_versions = [entry_data(), entry_data(version="2.0.0")]
    assert len(parse_manifest({"version": 1, "models": two_versions}).models) == 2
    clash = [entry_data(aliases=["gen"]), entry_data("cpnet.other", aliases=["gen"])]
    with pytest.raises(ManifestError, match="alias 'gen' names both"):
        parse_manifest({"version": 1, "models": clash})
    shadow = [entry_data(), entry_data("cpnet.other", aliases=["cpnet.generalist"])]
    with pytest.raises(ManifestError, match="is also a model name"):
        parse_manifest({"version": 1, "models": shadow})


def test_newer_schema_version_is_refused() -> None:
    with pytest.raises(ManifestError, match="version"):
        parse_manifest({"version": 2, "models": []})


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("version: 1\nmodels:\n  - name: [unclosed\n")
    problems = validate_manifest(path)
    assert len(problems) == 1 and problems[0].startswith("line ")
    assert validate_manifest(tmp_path / "missing.yaml") == [
        "cannot read: No such file or directory"
    ]
    with pytest.raises(ManifestError, match="expected a mapping"):
        loads_manifest("- just\n- a list\n")


def test_empty_manifest_file_is_reported() -> None:
    with pytest.raises(ManifestError, match="version"):
        loads_manifest("")


def test_validate_checks_local_files(tmp_path: Path) -> None:
    (tmp_path / "w.safetensors").write_bytes(b"0123456789")
    data = entry_data(files=[{"path": "w.safetensors", "sha256": SHA, "size": 10}])
    dump_manifest(parse_manifest({"version": 1, "models": [data]}), tmp_path / "models.yaml")
    assert validate_manifest(tmp_path / "models.yaml") == []
    problems = validate_manifest(tmp_path / "models.yaml", check_files=True)
    assert len(problems) == 1 and "models[0].files[0]" in problems[0] and "sha256" in problems[0]


def test_replace_keeps_order() -> None:
    manifest = parse_manifest({"version": 1, "models": [entry_data("a.one"), entry_data("b.two")]})
    updated = manifest.replace(manifest.models[0].model_copy(update={"diameter": 12.0}))
    assert [m.name for m in updated.models] == ["a.one", "b.two"]
    assert updated.models[0].diameter == 12.0
    added = manifest.replace(ModelEntry.model_validate(entry_data("c.three")))
    assert [m.name for m in added.models] == ["a.one", "b.two", "c.three"]


def test_version_ordering() -> None:
    versions = ["1.10.0", "1.0.0", "1.0.0-rc1", "0.9", "1.2", "2"]
    assert sorted(versions, key=version_key) == ["0.9", "1.0.0-rc1", "1.0.0", "1.2", "1.10.0", "2"]


def test_model_card_mentions_the_essentials() -> None:
    card = model_card(full_entry())
    for text in (
        "# cpnet.tn1 1.2.0-rc1",
        "specialist",
        "3 (tissuenet)",
        "17.5 px",
        "ap50",
        "TissueNet train split",
        "cpnet.generalist@1.0.0",
        "style_bank.safetensors",
    ):
        assert text in card


def test_json_schema_file_is_up_to_date() -> None:
    """docs/models.schema.json is generated: regenerate with zoo.manifest.write_json_schema."""
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()
    assert json_schema()["$defs"]["FileSpec"]["properties"]["sha256"]["pattern"] == "^[0-9a-f]{64}$"
