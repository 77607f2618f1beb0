"""``zoo doctor``: the environment report and registry health (sha256 of every model file)."""

from __future__ import annotations

import json
from pathlib import Path

import numba
import pytest
import torch
from hubserver import make_entry, write_zoo
from typer.testing import CliRunner

from zoo.cli.main import app
from zoo.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_MANIFEST", raising=False)
    return tmp_path / "home"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    root = tmp_path / "zoo"
    return write_zoo(root, [
        make_entry(root, "cpnet.one", {"one.safetensors": b"weights of one"}),
        make_entry(root, "cpnet.two", {"two.safetensors": b"weights of two"}, kind="nuclei"),
        make_entry(root, "cpnet.far", {"far.safetensors": b"on the Hub only"},
                   source={"repo_id": "org/far", "revision": "a" * 40}),
    ])


def run(*args: str | Path):
    result = CliRunner().invoke(app, ["doctor", *map(str, args)])
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    return result


def test_text_report(manifest: Path, env: Path) -> None:
    (manifest.parent / "far.safetensors").unlink()  # a Hub model need not be local
    result = run("--manifest", manifest)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    settings = Settings.from_env()
    assert lines[1] == (f"settings     backend {settings.backend}, device {settings.device}, "
                        f"precision {settings.precision}, offline {settings.offline}")
    assert lines[2].startswith(f"torch        {torch.__version__}; ")
    assert ("CUDA not available" in lines[2]) != torch.cuda.is_available()
    assert lines[4] == f"numba        {numba.__version__}; {numba.get_num_threads()} threads"
    assert lines[5] == f"cache        {env}: not created yet"
    assert f"registry     {manifest}: 3 model(s)" in lines
    assert any(line.split()[:2] == ["ok", "cpnet.one@1.0.0"] for line in lines)
    assert "hf://org/far@" + "a" * 40 + ", not downloaded yet; not installed" in result.stdout
    assert lines[-1] == "registry: ok"


def test_json_report_and_the_shipped_zoo(env: Path) -> None:
    result = run("--json")
    if not (ROOT / "models.yaml").is_file():
        pytest.skip("no shipped zoo")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["torch"]["version"] == torch.__version__
    assert report["torch"]["cuda_available"] == torch.cuda.is_available()
    assert report["numba"] == {"version": numba.__version__, "threads": numba.get_num_threads()}
    ort = report["onnxruntime"]
    assert ort is None or "CPUExecutionProvider" in ort["providers"]
    assert report["cache"] == {"path": str(env), "exists": False, "files": 0, "bytes": 0}
    registry = report["registry"]
    assert registry["ok"] and registry["manifest"] == str(ROOT / "models.yaml")
    assert len(registry["models"]) >= 2 and all(m["ok"] for m in registry["models"])


def test_a_tampered_file_fails_the_registry(manifest: Path) -> None:
    (manifest.parent / "two.safetensors").write_bytes(b"weights of tw0")  # same size
    result = run("--manifest", manifest)
    assert result.exit_code == 1
    assert "FAIL cpnet.two@1.0.0" in " ".join(result.stdout.split())
    assert "two.safetensors: sha256" in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"error: registry {manifest}: 1 of 3 model(s) failed: cpnet.two@1.0.0"
    (manifest.parent / "one.safetensors").unlink()
    report = json.loads(run("--manifest", manifest, "--json").stdout)
    failed = {m["ref"]: m["problems"] for m in report["registry"]["models"] if not m["ok"]}
    assert list(failed) == ["cpnet.one@1.0.0", "cpnet.two@1.0.0"]
    assert "one.safetensors: missing" in failed["cpnet.one@1.0.0"][0]


def test_an_empty_registry_is_unhealthy(tmp_path: Path) -> None:
    result = run("--manifest", write_zoo(tmp_path / "empty", []))
    assert result.exit_code == 1 and result.stderr.strip().endswith("no models")
