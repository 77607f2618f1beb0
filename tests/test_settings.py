"""One settings rule: explicit argument > CLI option > environment > default, everywhere.

Every ``ZOO_*`` variable is read by ``Settings.from_env`` alone, so the library, the CLI and
the service see the same values; a CLI option left unset does not beat the environment.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.cli_images import local_zoo_env, write_png
from zoo.cli.main import app
from zoo.errors import InvalidParamsError
from zoo.manifest import dump_manifest, load_manifest
from zoo.pipeline import Zoo
from zoo.registry import Registry, embedded_manifest_path, user_manifest_path
from zoo.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_environment_beats_defaults_and_overrides_beat_the_environment(tmp_path: Path):
    env = {"ZOO_BACKEND": "onnx", "ZOO_DEVICE": "cpu", "ZOO_PRECISION": "bf16",
           "ZOO_HOME": str(tmp_path / "h"), "ZOO_MANIFEST": str(tmp_path / "m.yaml"),
           "HF_HUB_OFFLINE": "1"}
    settings = Settings.from_env(env)
    assert (settings.backend, settings.device, settings.precision, settings.offline) == (
        "onnx", "cpu", "bf16", True)
    assert settings.home == tmp_path / "h" and settings.manifest == tmp_path / "m.yaml"
    assert Settings.from_env({}).backend == "torch" and Settings.from_env({}).manifest is None
    overridden = Settings.from_env(env, backend="torch", home=tmp_path / "x", manifest=None)
    assert overridden.backend == "torch" and overridden.home == tmp_path / "x"
    assert overridden.manifest == tmp_path / "m.yaml"  # None means "not given"
    with pytest.raises(InvalidParamsError, match="ZOO_BACKEND|backend"):
        Settings.from_env({"ZOO_BACKEND": "tensorflow"})
    with pytest.raises(InvalidParamsError, match="unknown setting"):
        Settings.from_env({}, colour="blue")


def _one_model_zoo(folder: Path) -> Path:
    """A models.yaml holding only the shipped generalist, under another alias."""
    shipped = load_manifest(embedded_manifest_path())
    entry = next(m for m in shipped.models if m.name == "cpnet.generalist")
    entry = entry.model_copy(update={"aliases": ["mine"], "style_bank": None,
                                     "files": [f for f in entry.files
                                               if f.path.endswith("generalist.safetensors")]})
    for spec in entry.files:
        (folder / spec.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(embedded_manifest_path().parent / spec.path, folder / spec.path)
    dump_manifest(shipped.model_copy(update={"models": [entry]}), folder / "models.yaml")
    return folder / "models.yaml"


def test_zoo_manifest_replaces_the_shipped_zoo_in_the_library(tmp_path, monkeypatch):
    manifest = _one_model_zoo(tmp_path / "zoo")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_MANIFEST", str(manifest))
    zoo = Zoo()
    assert [e.name for e in zoo.registry.list()] == ["cpnet.generalist"]
    assert zoo.name("mine") == "cpnet.generalist"
    monkeypatch.delenv("ZOO_MANIFEST")
    assert len(Zoo().registry.list()) > 1  # the shipped zoo again


def test_the_users_zoo_is_stacked_on_top_and_takes_new_models(tmp_path):
    settings = Settings(home=tmp_path / "home")
    registry = Registry.default(settings)
    shipped = {e.ref for e in registry.list()}
    entry = registry.entry("cpnet.generalist").model_copy(
        update={"name": "cpnet.mine", "kind": "user", "aliases": [], "style_bank": None,
                "files": [f for f in registry.entry("cpnet.generalist").files
                          if f.path.endswith(".safetensors") and "generalist" in f.path]})
    registry.update(entry)
    assert user_manifest_path(settings).is_file()
    assert {m.name for m in load_manifest(user_manifest_path(settings)).models} == {"cpnet.mine"}
    again = Registry.default(settings)
    assert {e.ref for e in again.list()} == shipped | {"cpnet.mine@" + entry.version}
    assert load_manifest(embedded_manifest_path()) == load_manifest(embedded_manifest_path())


def test_cli_options_left_unset_do_not_beat_the_environment(tmp_path: Path):
    runner = CliRunner()
    with local_zoo_env(tmp_path / "home"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ZOO_BACKEND", "onnx")
            patch.setenv("ZOO_PRECISION", "fp16")
            report = json.loads(runner.invoke(app, ["doctor", "--json"]).stdout)
            assert report["settings"]["backend"] == "onnx"
            assert report["settings"]["precision"] == "fp16"
            image = write_png(tmp_path / "a.png")
            out = tmp_path / "out"
            unset = runner.invoke(app, ["-v", "segment", str(image), "--model",
                                        "cpnet.generalist", "--out", str(out)])
            assert unset.exit_code == 0, unset.stderr
            assert "onnx backend" in unset.stderr
            given = runner.invoke(app, ["-v", "segment", str(image), "--model", "cpnet.generalist",
                                        "--out", str(out), "--overwrite", "--backend", "torch"])
            assert given.exit_code == 0, given.stderr
            assert "torch backend" in given.stderr and "onnx backend" not in given.stderr


def test_cli_manifest_option_beats_zoo_manifest(tmp_path: Path):
    runner = CliRunner()
    mine = _one_model_zoo(tmp_path / "zoo")
    with local_zoo_env(tmp_path / "home"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ZOO_MANIFEST", str(mine))
            from_env = runner.invoke(app, ["list"])
            assert from_env.exit_code == 0 and "cpnet.bacteria" not in from_env.stdout
            option = runner.invoke(app, ["list", "--manifest", str(embedded_manifest_path())])
            assert option.exit_code == 0 and "cpnet.bacteria" in option.stdout
