"""CliRunner tests for ``zoo list | info | pull | push | validate`` against a local Hub server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hubserver import HubServer, make_entry, write_zoo
from typer.testing import CliRunner

from zoo.cli.main import app
from zoo.manifest import load_manifest

TOKEN = "hf_" + "CliTestToken" * 3


@pytest.fixture
def server(tmp_path: Path):
    with HubServer(tmp_path / "hubstore", token=TOKEN) as running:
        yield running


@pytest.fixture(autouse=True)
def env(tmp_path: Path, server: HubServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    for name in ("ZOO_OFFLINE", "HF_HUB_OFFLINE", "ZOO_MANIFEST"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    root = tmp_path / "zoo"
    return write_zoo(
        root,
        [
            make_entry(
                root,
                "cpnet.generalist",
                {"cpnet.generalist.safetensors": os.urandom(2_500_000)},
                aliases=["generalist"],
                license="BSD-3-Clause",
                description="All-round model",
            ),
            make_entry(
                root,
                "cpnet.tn1",
                {"cpnet.tn1.safetensors": os.urandom(1000)},
                kind="specialist",
                cluster={"id": 4, "name": "tissuenet"},
                diameter=17.0,
                metrics={"ap50": 0.75},
            ),
        ],
    )


def run(*args: str | Path):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output + result.stderr
    return result


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ")
    for needle in needles:
        assert needle in lines[-1], lines


def test_list_shows_a_table(manifest: Path) -> None:
    result = run("list", "--manifest", manifest)
    assert result.exit_code == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.split() == ["NAME", "VERSION", "KIND", "CLUSTER", "DIAMETER", "SIZE", "INSTALLED"]
    assert rows[0].split() == [
        "cpnet.generalist",
        "1.0.0",
        "generalist",
        "-",
        "30",
        "2.5",
        "MB",
        "no",
    ]
    assert rows[1].split() == [
        "cpnet.tn1",
        "1.0.0",
        "specialist",
        "4:tissuenet",
        "17",
        "1.0",
        "kB",
        "no",
    ]
    only = run("list", "--manifest", manifest, "--kind", "specialist").stdout
    assert "cpnet.tn1" in only and "cpnet.generalist" not in only
    assert "cpnet.tn1" not in run("list", "cpnet.gen*", "--manifest", manifest).stdout
    assert_one_line_error(run("list", "--manifest", manifest, "--kind", "bogus"), "--kind", "bogus")


def test_info_shows_the_model_card(manifest: Path) -> None:
    result = run("info", "generalist", "--manifest", manifest)
    assert result.exit_code == 0, result.stderr
    for text in ("# cpnet.generalist 1.0.0", "All-round model", "BSD-3-Clause", "installed: no"):
        assert text in result.stdout
    assert_one_line_error(
        run("info", "cpnet.tn", "--manifest", manifest), "unknown model", "cpnet.tn1"
    )


def test_pull_names_and_all(manifest: Path, env: Path) -> None:
    result = run("pull", "cpnet.tn1", "--manifest", manifest)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"cpnet.tn1@1.0.0: {env / 'models' / 'cpnet.tn1' / '1.0.0'}"
    assert run("pull", "--all", "--manifest", manifest).exit_code == 0
    assert run("list", "--manifest", manifest).stdout.count(" yes") == 2
    assert (
        "installed: " + str(env / "models")
        in run("info", "cpnet.tn1", "--manifest", manifest).stdout
    )
    assert_one_line_error(run("pull", "--manifest", manifest), "names or --all")
    assert_one_line_error(run("pull", "x", "--source", "ftp", "--manifest", manifest), "--source")


def test_pull_reports_failures_in_one_line(manifest: Path) -> None:
    result = run("pull", "cpnet.tn1", "../etc", "nope", "--manifest", manifest)
    assert_one_line_error(result, "2 of 3 model(s) failed", "../etc", "nope")
    assert "invalid model name '../etc'" in result.stderr


def test_offline_cold_cache_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zoo = tmp_path / "remote"
    entry = make_entry(
        tmp_path / "elsewhere",
        "cpnet.remote",
        {"w.safetensors": b"1"},
        source={"repo_id": "org/remote", "revision": "a" * 40},
    )
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    result = run("pull", "cpnet.remote", "--manifest", write_zoo(zoo, [entry]))
    assert "cpnet.remote@1.0.0 is not in the cache" in result.stderr and result.exit_code == 1


def test_push_then_list_remote_and_pull(
    manifest: Path, server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(
        "push", "cpnet.tn1", "--repo", "org/tn1", "--index", "org/registry", "--manifest", manifest
    )
    assert result.exit_code == 0, result.stderr
    commit = load_manifest(manifest).models[1].source.revision
    assert f"pushed cpnet.tn1@1.0.0 to hf://org/tn1@{commit}" in result.stdout
    listed = run("list", "--remote", "org/registry")
    assert (
        listed.exit_code == 0 and "cpnet.tn1" in listed.stdout and "generalist" not in listed.stdout
    )
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "fresh-home"))
    pulled = run("pull", "cpnet.tn1", "--remote", "org/registry")
    assert pulled.exit_code == 0, pulled.stderr
    assert "hf://org/tn1@" + commit in run("info", "cpnet.tn1", "--remote", "org/registry").stdout
    assert_one_line_error(
        run("push", "cpnet.tn1", "--repo", "org/tn1", "--manifest", manifest),
        "already published",
        "--force",
    )
    assert (
        run("push", "cpnet.tn1", "--repo", "org/tn1", "--force", "--manifest", manifest).exit_code
        == 0
    )


def test_push_with_a_bad_token_hides_it(manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_WrongButSecretToken123")
    result = run("push", "cpnet.tn1", "--repo", "org/tn1", "--manifest", manifest)
    assert_one_line_error(result, "push of cpnet.tn1@1.0.0 to org/tn1 failed")
    assert "hf_WrongButSecretToken123" not in result.output + result.stderr
    assert_one_line_error(
        run("push", "cpnet.tn1", "--repo", "not a repo", "--manifest", manifest),
        "invalid Hub repo id",
    )


def test_validate(manifest: Path) -> None:
    result = run("validate", manifest)
    assert result.exit_code == 0 and result.stdout.strip() == f"{manifest}: ok (2 models)"
    (manifest.parent / "cpnet.tn1.safetensors").write_bytes(b"tampered")
    tampered = run("validate", manifest)
    assert (
        "models[1].files[0] (cpnet.tn1@1.0.0): cpnet.tn1.safetensors: size 8 != pinned 1000"
        in tampered.stderr
    )
    assert_one_line_error(tampered, "1 problem(s)")
    assert run("validate", manifest, "--no-files").exit_code == 0
    manifest.write_text(manifest.read_text().replace("kind: specialist", "kind: specialst"))
    broken = run("validate", manifest)
    assert (
        "models[1].kind: Input should be 'generalist', 'specialist', 'nuclei' or 'user'"
        in broken.stderr
    )
    assert_one_line_error(broken, "1 problem(s)")
