"""The user's zoo: models registered by ``zoo train`` and by importers, atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.model import SegmentationModel
from zoo.registry import Registry, user_manifest_path
from zoo.settings import Settings
from zoo.userzoo import register_files, register_model


def test_register_model_saves_weights_and_entry(small_model: SegmentationModel,
                                                tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    entry = register_model(Registry.default(settings), small_model, name="mine",
                           parent="cpnet.generalist", n_images=3, source="imgs/")
    assert entry.kind == "user" and entry.parent == "cpnet.generalist@1.0.0"
    assert entry.weights_path == "weights/mine.safetensors"
    fresh = Registry.default(settings)
    assert fresh.entry("mine").model_dump(mode="json") == entry.model_dump(mode="json")
    loaded = fresh.load_model("mine")
    assert loaded.config == small_model.config and loaded.diam_mean == small_model.diam_mean
    assert list((tmp_path / "home" / "user" / "weights").iterdir()) == [
        tmp_path / "home" / "user" / "weights" / "mine.safetensors"]


def test_register_files_installs_nothing_when_the_entry_is_invalid(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    source = tmp_path / "w.safetensors"
    source.write_bytes(b"weights")
    with pytest.raises(ValueError, match="diameter"):
        register_files(Registry.default(settings), name="bad", files={
            "weights/bad.safetensors": source}, fields={"diameter": -1.0})
    assert not user_manifest_path(settings).exists()
    assert not any((tmp_path / "home").rglob("*.safetensors"))


def test_a_shipped_name_is_refused(small_model: SegmentationModel, tmp_path: Path) -> None:
    registry = Registry.default(Settings(home=tmp_path / "home"))
    with pytest.raises(ZooError, match="'cpnet.phase' is a shipped specialist model"):
        register_model(registry, small_model, name="cpnet.phase", parent=None, n_images=1,
                       source="x")
