"""Tests for zoo.registry: names, local (embedded) source, the cache, integrity, offline mode.

Hub-sourced pulls are in test_hub.py. Every test builds its own zoo in tmp_path; the last test
is parametrized over the zoo shipped in the repository, so each model added there is checked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hubserver import make_entry, write_zoo

from zoo.errors import IntegrityError, InvalidNameError, OfflineError, UnknownModelError, ZooError
from zoo.manifest import Manifest, ModelEntry, load_manifest
from zoo.registry import MARKER, Registry, embedded_manifest_path
from zoo.settings import Settings

COMMIT = "1" * 40


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "env-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture
def zoo_dir(tmp_path: Path) -> Path:
    """A local zoo: a generalist (two versions), a routed specialist and a nuclei model."""
    root = tmp_path / "zoo"
    entries = [
        make_entry(
            root,
            "cpnet.generalist",
            {"cpnet.generalist.safetensors": os.urandom(3000)},
            aliases=["generalist"],
            version="1.0.0",
        ),
        make_entry(
            root / "v2",
            "cpnet.generalist",
            {"w.safetensors": os.urandom(2000)},
            aliases=["generalist"],
            version="2.0.0",
        ),
        make_entry(
            root,
            "cpnet.tn1",
            {"cpnet.tn1.safetensors": os.urandom(1000), "style_bank.safetensors": os.urandom(500)},
            kind="specialist",
            cluster={"id": 1, "name": "tissuenet", "centroid": [0.1, 0.2]},
            style_bank="style_bank.safetensors",
            diameter=17.0,
        ),
        make_entry(
            root, "cpnet.nuclei", {"nets/nuclei.safetensors": os.urandom(800)}, kind="nuclei"
        ),
    ]
    # the v2 files were written under v2/; point the entry there
    entries[1] = entries[1].model_copy(
        update={"files": [f.model_copy(update={"path": f"v2/{f.path}"}) for f in entries[1].files]}
    )
    write_zoo(root, entries)
    return root


def registry_of(zoo_dir: Path, home: Path, *, offline: bool = False) -> Registry:
    return Registry.from_path(
        zoo_dir / "models.yaml", settings=Settings(home=home, offline=offline)
    )


def test_names_list_and_contains(zoo_dir: Path, tmp_path: Path) -> None:
    registry = registry_of(zoo_dir, tmp_path / "home")
    assert registry.names() == ["cpnet.generalist", "cpnet.nuclei", "cpnet.tn1"]
    assert [m.ref for m in registry.list(kind="specialist")] == ["cpnet.tn1@1.0.0"]
    assert [m.ref for m in registry.list(pattern="cpnet.gen*")] == [
        "cpnet.generalist@1.0.0",
        "cpnet.generalist@2.0.0",
    ]
    assert "cpnet.tn1" in registry and "generalist@1.0.0" in registry
    assert "cpnet.tn2" not in registry and "../etc" not in registry
    assert len(registry) == 4


def test_entry_resolves_alias_and_version(zoo_dir: Path, tmp_path: Path) -> None:
    registry = registry_of(zoo_dir, tmp_path / "home")
    assert registry.entry("cpnet.generalist").version == "2.0.0"  # latest
    assert registry.entry("generalist@1.0.0").ref == "cpnet.generalist@1.0.0"


def test_unknown_model_suggests_close_matches(zoo_dir: Path, tmp_path: Path) -> None:
    registry = registry_of(zoo_dir, tmp_path / "home")
    with pytest.raises(UnknownModelError) as info:
        registry.entry("cpnet.tn")
    assert info.value.name == "cpnet.tn"
    assert "cpnet.tn1" in info.value.suggestions and "did you mean" in str(info.value)
    with pytest.raises(UnknownModelError, match="cpnet.generalist@1.0.0"):
        registry.entry("cpnet.generalist@3.0.0")


@pytest.mark.parametrize(
    "ref", ["../cpnet.tn1", "/etc/passwd", "cpnet.tn1@../../x", "a\\b", "CPNET"]
)
def test_traversal_names_are_refused(zoo_dir: Path, tmp_path: Path, ref: str) -> None:
    registry = registry_of(zoo_dir, tmp_path / "home")
    with pytest.raises(InvalidNameError):
        registry.pull(ref)
    assert not (tmp_path / "home" / "models").exists()


def test_embedded_pull_works_offline(zoo_dir: Path, tmp_path: Path) -> None:
    registry = Registry.embedded(
        Settings(home=tmp_path / "home", offline=True), path=zoo_dir / "models.yaml"
    )
    installed = registry.pull("cpnet.tn1")
    assert installed.dir == tmp_path / "home" / "models" / "cpnet.tn1" / "1.0.0"
    assert installed.weights.read_bytes() == (zoo_dir / "cpnet.tn1.safetensors").read_bytes()
    assert installed.style_bank == installed.dir / "style_bank.safetensors"
    assert registry.is_installed("cpnet.tn1") and registry.is_installed("cpnet.tn1", verify=True)
    marker = json.loads((installed.dir / MARKER).read_text())
    assert marker["origin"] == "local" and len(marker["files"]) == 2
    nested = registry.pull("cpnet.nuclei")
    assert nested.weights == nested.dir / "nets" / "nuclei.safetensors"


def test_first_use_pulls_automatically(zoo_dir: Path, tmp_path: Path) -> None:
    registry = registry_of(zoo_dir, tmp_path / "home")
    assert not registry.is_installed("generalist")
    installed = registry.resolve("generalist")
    assert installed.entry.version == "2.0.0" and installed.weights.is_file()
    assert registry.resolve("generalist") == installed  # warm: same files, no copy


def test_checksum_mismatch_installs_nothing(zoo_dir: Path, tmp_path: Path) -> None:
    (zoo_dir / "cpnet.tn1.safetensors").write_bytes(os.urandom(1000))  # same size, other bytes
    registry = registry_of(zoo_dir, tmp_path / "home")
    with pytest.raises(IntegrityError, match="cpnet.tn1.safetensors: sha256"):
        registry.pull("cpnet.tn1")
    model_dir = tmp_path / "home" / "models" / "cpnet.tn1"
    assert list(model_dir.iterdir()) == []  # no install, no temp dir left
    assert not registry.is_installed("cpnet.tn1")


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "marker"])
def test_damaged_cache_is_detected_and_repaired(zoo_dir: Path, tmp_path: Path, damage: str) -> None:
    registry = registry_of(zoo_dir, tmp_path / "home")
    weights = registry.pull("cpnet.tn1").weights
    original = weights.read_bytes()
    if damage == "flip":
        weights.write_bytes(bytes([original[0] ^ 1]) + original[1:])
    elif damage == "truncate":
        weights.write_bytes(original[:10])
    elif damage == "delete":
        weights.unlink()
    else:
        (weights.parent / MARKER).write_text("{")
    assert not registry.is_installed("cpnet.tn1", verify=True)
    if damage != "flip":  # size, presence and marker are checked without re-hashing
        assert not registry.is_installed("cpnet.tn1")
    assert registry.resolve("cpnet.tn1", verify=True).weights.read_bytes() == original
    assert registry.is_installed("cpnet.tn1", verify=True)


def test_pull_rehashes_and_repairs(zoo_dir: Path, tmp_path: Path) -> None:
    registry = registry_of(zoo_dir, tmp_path / "home")
    weights = registry.pull("cpnet.nuclei").weights
    original = weights.read_bytes()
    weights.write_bytes(b"x" * len(original))
    assert registry.pull("cpnet.nuclei").weights.read_bytes() == original
    assert sorted(p.name for p in weights.parent.parent.parent.iterdir()) == ["1.0.0"]


def test_force_reinstalls(zoo_dir: Path, tmp_path: Path) -> None:
    registry = registry_of(zoo_dir, tmp_path / "home")
    first = registry.pull("cpnet.nuclei").weights.stat().st_ino
    assert registry.pull("cpnet.nuclei", force=True).weights.stat().st_ino != first


def test_changed_manifest_entry_invalidates_cache(zoo_dir: Path, tmp_path: Path) -> None:
    registry = registry_of(zoo_dir, tmp_path / "home")
    registry.pull("cpnet.nuclei")
    new = make_entry(
        zoo_dir, "cpnet.nuclei", {"nets/nuclei.safetensors": os.urandom(900)}, kind="nuclei"
    )
    registry.update(new)
    assert not registry.is_installed("cpnet.nuclei")
    assert registry.resolve("cpnet.nuclei").weights.stat().st_size == 900
    assert load_manifest(zoo_dir / "models.yaml").models[-1] == new  # saved back


def test_offline_cold_hub_model_names_the_model(tmp_path: Path) -> None:
    entry = make_entry(
        tmp_path / "elsewhere",
        "cpnet.remote",
        {"w.safetensors": b"123"},
        source={"repo_id": "org/remote", "revision": COMMIT},
    )
    registry = Registry(
        Manifest(version=1, models=[entry]), settings=Settings(home=tmp_path / "home", offline=True)
    )
    with pytest.raises(OfflineError, match="cpnet.remote@1.0.0.*offline"):
        registry.resolve("cpnet.remote")


def test_no_source_at_all_is_a_clear_error(tmp_path: Path) -> None:
    entry = make_entry(tmp_path / "elsewhere", "cpnet.lost", {"w.safetensors": b"123"})
    registry = Registry(
        Manifest(version=1, models=[entry]),
        settings=Settings(home=tmp_path / "h"),
        source_dir=tmp_path / "empty",
    )
    with pytest.raises(ZooError, match="cpnet.lost@1.0.0 has no Hub source"):
        registry.pull("cpnet.lost")
    with pytest.raises(ZooError, match="not all present in local source"):
        registry.pull("cpnet.lost", source="local")


def test_unvalidated_paths_cannot_escape_the_cache(tmp_path: Path) -> None:
    """Even an entry that skipped validation cannot write outside its staging directory."""
    good = make_entry(tmp_path / "src", "cpnet.evil", {"w.safetensors": b"123"})
    evil_file = good.files[0].model_construct(
        path="../../../evil.safetensors", sha256=good.files[0].sha256, size=3
    )
    evil = ModelEntry.model_construct(**{**dict(good), "files": [evil_file]})
    (tmp_path / "evil.safetensors").write_bytes(b"123")
    (tmp_path / "src" / "a" / "b").mkdir(parents=True)
    registry = Registry(
        Manifest.model_construct(version=1, models=[evil]),
        settings=Settings(home=tmp_path / "home"),
        source_dir=tmp_path / "src" / "a" / "b",
    )
    with pytest.raises(InvalidNameError):
        registry.pull("cpnet.evil")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.safetensors", "home", "src"]


def test_load_model_reads_safetensors(tmp_path: Path, small_model) -> None:
    root = tmp_path / "zoo"
    path = small_model.save(root / "cpnet.small.safetensors")
    onnx = make_entry(root, "cpnet.onnx", {"net.onnx": b"not really onnx"})
    write_zoo(
        root, [make_entry(root, "cpnet.small", {path.name: path.read_bytes()}, diameter=20.0), onnx]
    )
    registry = registry_of(root, tmp_path / "home")
    model = registry.load_model("cpnet.small")
    assert model.diam_mean == 20.0
    assert model.config == small_model.config
    with pytest.raises(ZooError, match="not safetensors"):
        registry.load_model("cpnet.onnx")


def test_embedded_registry_defaults(tmp_path: Path) -> None:
    assert embedded_manifest_path() == Path(__file__).resolve().parent.parent / "models.yaml"
    empty = Registry.embedded(Settings(home=tmp_path / "home"), path=tmp_path / "none.yaml")
    assert len(empty) == 0 and empty.names() == []


def _embedded_refs() -> list[str]:
    path = embedded_manifest_path()
    return [m.ref for m in load_manifest(path).models] if path.is_file() else []


@pytest.mark.parametrize("ref", _embedded_refs())
def test_embedded_zoo_model_installs_and_loads(ref: str, tmp_path: Path) -> None:
    """Every model shipped in the repository's models.yaml installs offline and loads."""
    registry = Registry.embedded(Settings(home=tmp_path / "home", offline=True))
    installed = registry.pull(ref)
    assert registry.is_installed(ref, verify=True)
    if installed.weights.suffix == ".safetensors":
        registry.load_model(ref)
