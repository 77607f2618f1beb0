"""bioimage.io packages: export, validation by bioimage.io's own tools, the round trip back
into the zoo, and refusal of bad packages. The model is the shipped generalist (real trained
weights, so the masks compared are real masks)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from zoo.bioimageio import export_package, import_package, read_package
from zoo.bioimageio.rdf import FORMAT_VERSION
from zoo.cli.main import app
from zoo.data.synthetic import generate
from zoo.errors import PackageError
from zoo.params import PredictParams
from zoo.pipeline import Zoo
from zoo.registry import Registry, user_manifest_path
from zoo.settings import Settings

TESTS = Path(__file__).resolve().parent
MODEL = "cpnet.generalist"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "env-home"))
    for name in ("ZOO_MANIFEST", "ZOO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generalist exported once for the whole module."""
    root = tmp_path_factory.mktemp("export")
    registry = Registry.default(Settings(home=root / "home"))
    return export_package(registry, MODEL, root / "generalist.zip")


def fresh_registry(home: Path) -> Registry:
    return Registry.default(Settings(home=home))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_package_holds_the_spec_files_with_their_pins(exported: Path) -> None:
    with zipfile.ZipFile(exported) as archive:
        names = set(archive.namelist())
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        data = {name: archive.read(name) for name in names}
    assert rdf["format_version"] == FORMAT_VERSION and rdf["type"] == "model"
    assert set(rdf["weights"]) == {"onnx", "torchscript"}
    pinned = [*rdf["weights"].values(), *rdf["attachments"], rdf["documentation"],
              *rdf["covers"]]
    pinned += [t[key] for t in rdf["inputs"] + rdf["outputs"]
               for key in ("test_tensor", "sample_tensor")]
    assert {p["source"] for p in pinned} | {"rdf.yaml"} == names
    for ref in pinned:
        assert sha256(data[ref["source"]]) == ref["sha256"], ref["source"]
    cellzoo = rdf["config"]["cellzoo"]
    registry = fresh_registry(exported.parent / "home")
    entry = registry.entry(MODEL)
    assert cellzoo["source"] == entry.ref and cellzoo["diameter"] == entry.diameter
    assert cellzoo["channels"] == ["cyto", "nucleus"] and cellzoo["flow_scale"] == 5.0
    assert cellzoo["flow_params"]["flow_threshold"] == 0.4
    assert cellzoo["weights"]["sha256"] == entry.file(entry.weights_path).sha256
    assert cellzoo["style_bank"]["sha256"] == entry.file(entry.style_bank).sha256
    assert [t["id"] for t in rdf["outputs"]] == ["flows", "style"]
    with zipfile.ZipFile(exported) as archive, archive.open("cover.png") as handle:
        width, height = Image.open(handle).size
    assert width == 2 * height
    readme = data["README.md"].decode()
    assert "## Validation" in readme and f"{entry.diameter:g} pixels" in readme


def test_bioimageio_spec_validates_and_core_test_passes(exported: Path, tmp_path: Path) -> None:
    """bioimage.io's own tools, in a subprocess whose cache and HOME are in tmp_path and
    whose network access is refused (any attempt is recorded)."""
    cache, home = tmp_path / "bioimageio-cache", tmp_path / "home"
    cache.mkdir()
    home.mkdir()
    env = {**os.environ, "BIOIMAGEIO_CACHE_PATH": str(cache), "HOME": str(home)}
    result = subprocess.run(
        [sys.executable, str(TESTS / "bioimageio_check.py"), str(exported)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print("\nbioimage.io check:", {k: v for k, v in report.items() if "details" not in k})
    for detail in report["details"]:
        print(f"  {detail['status']}: {detail['name']}")
    assert report["load_description"] == "valid-format"
    assert report["validate_format"] == "valid-format"
    assert report["test_model"] == "passed"
    assert all(d["status"] == "passed" for d in report["details"]), report["details"]
    names = {d["name"] for d in report["details"]}
    for weights in ("onnx", "torchscript"):
        assert f"Reproduce test outputs from test inputs ({weights})" in names
        assert any(n.startswith(f"Run {weights} inference") for n in names)
    assert report["refused_connections"] == []
    assert list(cache.iterdir()) == []  # bioimage.io fetched and cached nothing
    written = [p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file()]
    assert not [p for p in written if "bioimageio" in p.lower()], written


def test_round_trip_gives_identical_outputs(exported: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    entry = import_package(fresh_registry(settings.home), exported, name="gen-copy")
    assert entry.kind == "user" and entry.diameter == 17.0
    zoo = Zoo(fresh_registry(settings.home), settings=settings)
    original = zoo.registry.entry(MODEL)
    assert entry.file(entry.weights_path).sha256 == original.file(original.weights_path).sha256
    sample = generate("nuclei", seed=3)
    params = PredictParams(cyto_channel=0)
    before = zoo.segment(sample.image, model=MODEL, params=params).prediction
    after = zoo.segment(sample.image, model="gen-copy", params=params).prediction
    assert before.n_cells > 10
    np.testing.assert_array_equal(after.labels, before.labels)
    for name in ("flows", "cellprob", "style"):
        np.testing.assert_array_equal(getattr(after, name), getattr(before, name))
    assert zoo.registry.resolve("gen-copy", verify=True).style_bank is not None


def _rewrite(src: Path, dst: Path, *, drop=(), replace=None, extra=None, rdf_edit=None) -> Path:
    """A copy of the package ``src`` with members dropped, replaced or added, or its rdf
    edited (``rdf_edit(rdf, members)``)."""
    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist() if name not in drop}
    members.update(replace or {})
    if rdf_edit is not None:
        rdf = yaml.safe_load(members["rdf.yaml"])
        rdf_edit(rdf, members)
        members["rdf.yaml"] = yaml.safe_dump(rdf, sort_keys=False).encode()
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for info, data in extra or []:
            archive.writestr(info, data)
    return dst


def _flip_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


def _unsupported(rdf: dict, members: dict) -> None:
    del rdf["config"]["cellzoo"]
    rdf["weights"] = {"pytorch_state_dict": {"source": "weights.pt", "sha256": "0" * 64}}
    members["weights.pt"] = b"\x80\x04pickled"
    rdf["weights"]["pytorch_state_dict"]["sha256"] = sha256(members["weights.pt"])


def _other_weights(rdf: dict, members: dict) -> None:
    """Swap in another model's safetensors, with every pin updated to match it."""
    source = rdf["config"]["cellzoo"]["weights"]["source"]
    members[source] = Path(__file__).resolve().parent.parent.joinpath(
        "weights", "cpnet.nuclei.safetensors").read_bytes()
    digest = sha256(members[source])
    rdf["config"]["cellzoo"]["weights"]["sha256"] = digest
    for ref in rdf["attachments"]:
        if ref["source"] == source:
            ref["sha256"] = digest


def _symlink() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("link.safetensors")
    info.external_attr = (0o120777 << 16)
    return info


BAD = {
    "not-a-zip": (None, "not a zip file"),
    "no-rdf": ({"drop": ["rdf.yaml"]}, "no rdf.yaml or bioimageio.yaml"),
    "wrong-sha256": ({"replace": "attachment"}, "cpnet.generalist.safetensors: sha256"),
    "missing-file": ({"drop": ["weights.onnx"]}, "'weights.onnx' is named in rdf.yaml but missing"),
    "unsupported-weights": ({"rdf_edit": _unsupported}, "unsupported weights ['pytorch_state_dict']"),
    "traversal": ({"extra": [("../evil.txt", b"x")]}, "unsafe member '../evil.txt'"),
    "absolute": ({"extra": [("/tmp/evil.txt", b"x")]}, "unsafe member '/tmp/evil.txt'"),
    "symlink": ({"extra": [(_symlink(), b"/etc/passwd")]}, "is a symbolic link"),
    "weights-disagree": ({"rdf_edit": _other_weights},
                         "do not reproduce the test output flows"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_packages_are_refused_and_install_nothing(
    case: str, exported: Path, tmp_path: Path
) -> None:
    edit, message = BAD[case]
    bad = tmp_path / f"{case}.zip"
    if edit is None:
        bad.write_text("not a zip\n")
    else:
        if edit.get("replace") == "attachment":
            with zipfile.ZipFile(exported) as archive:
                data = archive.read("cpnet.generalist.safetensors")
            edit = {"replace": {"cpnet.generalist.safetensors": _flip_byte(data)}}
        _rewrite(exported, bad, **edit)
    home = tmp_path / "home"
    registry = fresh_registry(home)
    with pytest.raises(PackageError) as info:
        import_package(registry, bad, name="imported")
    text = str(info.value)
    assert message in text and "\n" not in text
    assert not user_manifest_path(Settings(home=home)).exists()
    assert not (home / "user").exists() or not any((home / "user").rglob("*.safetensors"))
    assert "imported" not in fresh_registry(home)


def test_read_package_lists_every_pinned_file(exported: Path) -> None:
    package = read_package(exported)
    assert package.cellzoo.source == "cpnet.generalist@1.0.0"
    assert {"weights.onnx", "weights.torchscript.pt", "test_input.npy",
            "cpnet.generalist.safetensors", "style_bank.safetensors"} <= set(package.files)


def test_cli_export_then_import(exported: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    out = tmp_path / "nuclei.zip"
    runner = CliRunner()
    result = runner.invoke(app, ["export", "bioimageio", "cpnet.nuclei", "--out", str(out),
                                 "--author", "A. Tester"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}")
    with zipfile.ZipFile(out) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    assert rdf["authors"] == [{"name": "A. Tester"}]
    result = runner.invoke(app, ["import", "bioimageio", str(out), "--name", "my-nuclei"])
    assert result.exit_code == 0, result.stderr
    assert "imported my-nuclei@1.0.0" in result.stdout
    listed = runner.invoke(app, ["list", "--kind", "user"])
    assert "my-nuclei" in listed.stdout
    again = runner.invoke(app, ["import", "bioimageio", str(out), "--name", "my-nuclei"])
    assert again.exit_code == 1
    assert again.stderr.strip() == ("error: 'my-nuclei' is already in your zoo; choose another "
                                    "name or use --force to replace it")
    forced = runner.invoke(app, ["import", "bioimageio", str(out), "--name", "my-nuclei",
                                 "--force"])
    assert forced.exit_code == 0, forced.stderr


def test_cli_refuses_a_bad_package_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    result = CliRunner().invoke(app, ["import", "bioimageio", str(bad), "--name", "x"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    shipped = CliRunner().invoke(app, ["import", "bioimageio", str(bad), "--name", "cpnet.phase"])
    assert shipped.stderr.strip() == (
        "error: 'cpnet.phase' is a shipped specialist model; choose another name")


def test_the_readme_bioimageio_commands_run(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's bioimage.io walk-through, command by command, in a fresh ZOO_HOME."""
    import re
    import shlex
    import shutil

    root = TESTS.parent
    text = (root / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- bioimageio-commands:start -->\n```bash\n(.*?)```", text, re.DOTALL)
    assert block is not None, "README lost its bioimage.io commands"
    commands = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    assert [c[:2] for c in commands if c][:2] == [["zoo", "export"], ["zoo", "import"]]
    (tmp_path / "samples").mkdir()
    shutil.copy(root / "samples" / "demo.tif", tmp_path / "samples" / "demo.tif")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    for command in filter(None, commands):
        result = CliRunner().invoke(app, command[1:])
        assert result.exit_code == 0, (command, result.stderr)
    assert (tmp_path / "tissue.zip").is_file() and any((tmp_path / "results").iterdir())
    assert "lab.tissue" in fresh_registry(tmp_path / "home")
