"""README "Bring your own models", its Cellpose part: every command and the Python example run
as written, and the side-by-side table is there (rendered from
bench/results/cellpose_import.json by docs/render.py; tests/test_docs.py checks it)."""

from __future__ import annotations

import re
import shlex
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_images import local_zoo_env
from typer.testing import CliRunner

from zoo.cli.main import app
from zoo.data.synthetic import generate, sample_seed

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FIXTURES = ROOT / "tests" / "fixtures" / "cellpose"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("### Cellpose checkpoints and routing banks")
    return text[start:text.index("\n##", start + 4)]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def _grey(style: str, index: int, shape=(160, 160)) -> np.ndarray:
    sample = generate(style, seed=sample_seed(style, index, seed=7), shape=shape)
    return sample.image[..., 0].astype(np.uint16)


def _workspace(root: Path) -> None:
    (root / "tests" / "fixtures").mkdir(parents=True)
    (root / "tests" / "fixtures" / "cellpose").symlink_to(FIXTURES, target_is_directory=True)
    for folder, style, count in (("images", "nuclei", 2), ("refs/cp-small", "nuclei", 3),
                                 ("refs/bacteria", "bacteria", 3)):
        (root / folder).mkdir(parents=True)
        for index in range(count):
            name = "img" if folder == "images" else style
            tifffile.imwrite(root / folder / f"{name}_{index}.tif", _grey(style, index))
    rng = np.random.default_rng(0)
    styles = rng.normal(size=(12, 256)).astype(np.float32)
    np.save(root / "style_choice.npy", {
        "train_styles": styles / np.linalg.norm(styles, axis=1, keepdims=True),
        "leiden_labels": np.repeat([0, 1, 2], 4), "label_models": ["CP", "TN1", "LC1"]})


def test_bring_your_own_models_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    section = _section()
    commands = [line.strip() for block in _blocks(section, "bash")
                for line in block.splitlines() if line.strip().startswith("zoo ")]
    assert len(commands) >= 6, commands
    work = tmp_path / "work"
    _workspace(work)
    monkeypatch.chdir(work)
    runner = CliRunner()
    with local_zoo_env(tmp_path / "home"):
        for command in commands:
            result = runner.invoke(app, shlex.split(command, comments=True)[1:])
            assert result.exit_code == 0, f"{command}\n{result.output}"
        assert sorted(p.name for p in (work / "masks").glob("*_masks.tif")) == [
            "img_0_masks.tif", "img_1_masks.tif"]
        for block in _blocks(section, "python"):
            namespace: dict = {}
            code = textwrap.dedent(block)
            exec(compile(code, "README.md (Bring your own models)", "exec"), namespace)
            assert namespace["result"].prediction.labels.shape == (160, 160)
            assert namespace["result"].route.model in {"cp-small", "cpnet.bacteria", "cpnet.generalist"}


def test_readme_shows_the_side_by_side_table():
    """Its figures are rendered from bench/results/cellpose_import.json by docs/render.py
    (tests/test_docs.py checks the text against the data)."""
    assert "<!-- bench:cellpose-import:start -->" in README.read_text(encoding="utf-8")
