"""Tests for zoo.hub and Hub-sourced pulls: the real huggingface_hub client against a local
Hub-compatible server (tests/hubserver.py) on 127.0.0.1. No test reaches the network."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hubserver import HubServer, make_entry, write_zoo

from zoo.errors import HubError, IntegrityError, OfflineError, PushRefusedError
from zoo.hub import HubSettings, fetch_remote_index
from zoo.manifest import Manifest, ModelEntry, Source, load_manifest
from zoo.registry import Registry
from zoo.settings import Settings

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "env-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def server(tmp_path: Path):
    with HubServer(tmp_path / "hubstore") as running:
        yield running


@pytest.fixture
def hub_settings(server: HubServer) -> HubSettings:
    return HubSettings(endpoint=server.url, token=None, progress=False)


def publish(server: HubServer, repo_id: str, files: dict[str, bytes]) -> str:
    """Commit ``files`` straight into the server's store; returns the commit id."""
    server.store.create_repo(repo_id)
    return server.store.commit(repo_id, "main", put=files, delete=[], summary="test")


def hub_entry(
    name: str, repo_id: str, commit: str, files: dict[str, bytes], **fields
) -> ModelEntry:
    specs = [
        {"path": p, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
        for p, d in files.items()
    ]
    return ModelEntry.model_validate(
        {
            "name": name,
            "version": "1.0.0",
            "kind": "generalist",
            "diameter": 30.0,
            "files": specs,
            "source": {"repo_id": repo_id, "revision": commit},
            **fields,
        }
    )


def hub_registry(
    entries: list[ModelEntry], home: Path, hub_settings: HubSettings, *, offline: bool = False
) -> Registry:
    return Registry(
        Manifest(version=1, models=entries),
        settings=Settings(home=home, offline=offline),
        hub=hub_settings,
    )


def test_pull_at_pinned_revision(
    server: HubServer, hub_settings: HubSettings, tmp_path: Path
) -> None:
    old, new = os.urandom(5000), os.urandom(6000)
    first = publish(server, "org/net", {"net.safetensors": old, "other.bin": b"not pulled"})
    second = server.store.commit(
        "org/net", "main", put={"net.safetensors": new}, delete=[], summary="v2"
    )
    entries = [
        hub_entry("cpnet.net", "org/net", first, {"net.safetensors": old}),
        hub_entry("cpnet.net", "org/net", second, {"net.safetensors": new}, version="2.0.0"),
    ]
    registry = hub_registry(entries, tmp_path / "home", hub_settings)
    assert registry.pull("cpnet.net@1.0.0").weights.read_bytes() == old
    installed = registry.pull("cpnet.net@2.0.0")
    assert installed.weights.read_bytes() == new
    assert sorted(p.name for p in installed.dir.iterdir()) == [".complete", "net.safetensors"]
    assert all(
        first in path or second in path
        for _, path, *_ in server.stats.requests
        if "/resolve/" in path or "/tree/" in path
    )


def test_warm_pull_does_no_network_transfer(server, hub_settings, tmp_path: Path) -> None:
    data = os.urandom(4000)
    commit = publish(server, "org/net", {"net.safetensors": data})
    registry = hub_registry(
        [hub_entry("cpnet.net", "org/net", commit, {"net.safetensors": data})],
        tmp_path / "home",
        hub_settings,
    )
    registry.pull("cpnet.net")
    assert server.stats.bytes_sent >= len(data)
    server.stats.reset()
    registry.pull("cpnet.net")
    registry.resolve("cpnet.net", verify=True)
    assert server.stats.count == 0


def test_checksum_mismatch_from_hub_installs_nothing(server, hub_settings, tmp_path: Path) -> None:
    commit = publish(server, "org/net", {"net.safetensors": os.urandom(100)})
    lying = hub_entry("cpnet.net", "org/net", commit, {"net.safetensors": os.urandom(100)})
    registry = hub_registry([lying], tmp_path / "home", hub_settings)
    with pytest.raises(IntegrityError, match="nothing installed.*net.safetensors: sha256"):
        registry.pull("cpnet.net")
    assert list((tmp_path / "home" / "models" / "cpnet.net").iterdir()) == []
    assert not registry.is_installed("cpnet.net")


def test_interrupted_download_is_resumed(server, hub_settings, tmp_path: Path) -> None:
    data = os.urandom(12 * 1024 * 1024)  # > huggingface_hub's 10 MiB stream chunk
    commit = publish(server, "org/big", {"big.safetensors": data})
    server.drop_once("big.safetensors", after=11 * 1024 * 1024)
    registry = hub_registry(
        [hub_entry("cpnet.big", "org/big", commit, {"big.safetensors": data})],
        tmp_path / "home",
        hub_settings,
    )
    assert registry.pull("cpnet.big").weights.read_bytes() == data
    gets = [r for r in server.stats.requests if r[0] == "GET" and r[1].endswith("big.safetensors")]
    assert len(gets) == 2 and gets[0][4] == 11 * 1024 * 1024
    assert (
        gets[1][2] == 206 and gets[1][3] == f"bytes={10 * 1024 * 1024}-"
    )  # resumed, not restarted


def test_concurrent_pulls_both_succeed(server, hub_settings, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    commit = publish(server, "org/net", {"net.safetensors": data})
    zoo = tmp_path / "remote-zoo"
    zoo.mkdir()
    write_zoo(zoo, [hub_entry("cpnet.net", "org/net", commit, {"net.safetensors": data})])
    script = textwrap.dedent("""
        import sys
        from zoo.hub import HubSettings
        from zoo.registry import Registry
        from zoo.settings import Settings
        manifest, home, endpoint = sys.argv[1:]
        hub = HubSettings(endpoint=endpoint, progress=False)
        registry = Registry.from_path(manifest, settings=Settings(home=home), hub=hub)
        print(registry.pull("cpnet.net").weights)
    """)
    args = [str(zoo / "models.yaml"), str(tmp_path / "home"), server.url]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0, 0], [r[1][-2000:] for r in results]
    paths = {r[0].strip() for r in results}
    assert len(paths) == 1 and Path(paths.pop()).read_bytes() == data
    gets = [r for r in server.stats.requests if r[0] == "GET" and r[1].endswith("net.safetensors")]
    assert len(gets) == 1  # the second process waited for the lock, then found it installed


def test_offline_warm_and_cold_cache(server, hub_settings, tmp_path: Path) -> None:
    data = os.urandom(1000)
    commit = publish(server, "org/net", {"net.safetensors": data})
    entries = [
        hub_entry("cpnet.net", "org/net", commit, {"net.safetensors": data}),
        hub_entry("cpnet.cold", "org/net", commit, {"net.safetensors": data}),
    ]
    hub_registry(entries, tmp_path / "home", hub_settings).pull("cpnet.net")
    server.stats.reset()
    offline = hub_registry(entries, tmp_path / "home", hub_settings, offline=True)
    assert offline.resolve("cpnet.net", verify=True).weights.read_bytes() == data
    assert offline.load_model is not None and offline.is_installed("cpnet.net")
    with pytest.raises(OfflineError, match="cpnet.cold@1.0.0 is not in the cache"):
        offline.resolve("cpnet.cold")
    assert server.stats.count == 0


def test_missing_repo_is_a_readable_hub_error(server, hub_settings, tmp_path: Path) -> None:
    entry = hub_entry("cpnet.gone", "org/gone", "2" * 40, {"w.safetensors": b"x"})
    registry = hub_registry([entry], tmp_path / "home", hub_settings)
    with pytest.raises(HubError) as info:
        registry.pull("cpnet.gone")
    message = str(info.value)
    assert "cpnet.gone@1.0.0" in message and "hf://org/gone@" in message and "\n" not in message


@pytest.fixture
def local_zoo(tmp_path: Path) -> Path:
    root = tmp_path / "zoo"
    write_zoo(
        root,
        [
            make_entry(
                root,
                "cpnet.generalist",
                {"cpnet.generalist.safetensors": os.urandom(30000)},
                license="BSD-3-Clause",
                metrics={"ap50": 0.8},
                description="All-round model",
                training_data={"summary": "synthetic", "datasets": ["cellpose-cyto"], "images": 10},
            ),
            make_entry(
                root,
                "cpnet.tn1",
                {
                    "cpnet.tn1.safetensors": os.urandom(20000),
                    "style_bank.safetensors": os.urandom(3000),
                },
                kind="specialist",
                style_bank="style_bank.safetensors",
                parent="cpnet.generalist",
                license="CC-BY-4.0",
                cluster={"id": 2, "name": "tissuenet", "centroid": [0.5, 0.5]},
            ),
        ],
    )
    return root / "models.yaml"


def test_push_then_pull_back_byte_identical(
    server, hub_settings, local_zoo: Path, tmp_path: Path
) -> None:
    registry = Registry.from_path(
        local_zoo, settings=Settings(home=tmp_path / "home"), hub=hub_settings
    )
    commit = registry.push("cpnet.tn1", "org/cpnet.tn1")
    assert len(commit) == 40 and server.store.resolve("org/cpnet.tn1", commit) == commit
    saved = load_manifest(local_zoo).models[1]  # the local models.yaml now pins the commit
    assert saved.source == Source(repo_id="org/cpnet.tn1", revision=commit)
    remote = fetch_remote_index("org/cpnet.tn1", hub_settings)
    assert [m.ref for m in remote.models] == ["cpnet.tn1@1.0.0"] and remote.models[0] == saved
    fresh = Registry(remote, settings=Settings(home=tmp_path / "other-home"), hub=hub_settings)
    installed = fresh.pull("cpnet.tn1")
    for spec in saved.files:
        assert (
            installed.files[spec.path].read_bytes() == (local_zoo.parent / spec.path).read_bytes()
        )
    card = server.store.blob(
        server.store.files("org/cpnet.tn1", commit)["README.md"]["sha256"]
    ).read_text()
    for text in (
        "library_name: cellzoo",
        "license: cc-by-4.0",
        "tissuenet",
        "cpnet.generalist",
        "# cpnet.tn1 1.0.0",
    ):
        assert text in card


def test_push_refuses_to_overwrite_a_version(
    server, hub_settings, local_zoo: Path, tmp_path: Path
) -> None:
    registry = Registry.from_path(
        local_zoo, settings=Settings(home=tmp_path / "home"), hub=hub_settings
    )
    first = registry.push("cpnet.generalist", "org/gen")
    with pytest.raises(
        PushRefusedError, match="cpnet.generalist@1.0.0 is already published in org/gen"
    ):
        registry.push("cpnet.generalist", "org/gen")
    forced = registry.push("cpnet.generalist", "org/gen", force=True)
    assert forced != first
    newer = registry.entry("cpnet.generalist").model_copy(
        update={"version": "1.1.0", "source": None}
    )
    registry.update(newer)
    registry.push("cpnet.generalist@1.1.0", "org/gen")
    assert [m.ref for m in fetch_remote_index("org/gen", hub_settings).models] == [
        "cpnet.generalist@1.0.0",
        "cpnet.generalist@1.1.0",
    ]
    first_files = server.store.files("org/gen", first)  # the old pin still serves its files
    assert "cpnet.generalist.safetensors" in first_files


def test_push_refuses_another_models_repo(
    server, hub_settings, local_zoo: Path, tmp_path: Path
) -> None:
    publish(server, "org/taken", {"cpnet.tn1.safetensors": b"someone else's"})
    registry = Registry.from_path(
        local_zoo, settings=Settings(home=tmp_path / "home"), hub=hub_settings
    )
    with pytest.raises(PushRefusedError, match="another model"):
        registry.push("cpnet.tn1", "org/taken")


def test_registry_repo_lists_models_published_later(
    server, hub_settings, local_zoo, tmp_path
) -> None:
    registry = Registry.from_path(
        local_zoo, settings=Settings(home=tmp_path / "home"), hub=hub_settings
    )
    registry.push("cpnet.generalist", "org/gen", index_repo="org/registry")
    registry.push("cpnet.tn1", "org/tn1", index_repo="org/registry")
    tn1_files = server.store.files("org/tn1", registry.entry("cpnet.tn1").source.revision)
    card = server.store.blob(tn1_files["README.md"]["sha256"]).read_text()
    assert "base_model: org/gen" in card  # the parent was published first
    index = fetch_remote_index("org/registry", hub_settings)
    assert [(m.ref, m.source.repo_id) for m in index.models] == [
        ("cpnet.generalist@1.0.0", "org/gen"),
        ("cpnet.tn1@1.0.0", "org/tn1"),
    ]
    fresh = Registry(index, settings=Settings(home=tmp_path / "h2"), hub=hub_settings)
    assert (
        fresh.pull("cpnet.tn1").style_bank.read_bytes()
        == (local_zoo.parent / "style_bank.safetensors").read_bytes()
    )
    with pytest.raises(HubError, match="no models.yaml"):
        publish(server, "org/plain", {"x.bin": b"1"})
        fetch_remote_index("org/plain", hub_settings)


def test_push_pins_fresh_checksums_of_local_files(
    server, hub_settings, local_zoo, tmp_path
) -> None:
    """A retrained file in the local zoo is published and its new sha256 written back."""
    retrained = os.urandom(25000)
    (local_zoo.parent / "cpnet.generalist.safetensors").write_bytes(retrained)
    registry = Registry.from_path(
        local_zoo, settings=Settings(home=tmp_path / "home"), hub=hub_settings
    )
    registry.push("cpnet.generalist", "org/gen")
    spec = load_manifest(local_zoo).models[0].files[0]
    assert (spec.sha256, spec.size) == (hashlib.sha256(retrained).hexdigest(), len(retrained))


def test_offline_push_is_refused(hub_settings, local_zoo: Path, tmp_path: Path) -> None:
    registry = Registry.from_path(
        local_zoo, settings=Settings(home=tmp_path / "home", offline=True)
    )
    with pytest.raises(OfflineError, match="offline"):
        registry.push("cpnet.tn1", "org/x")


def test_token_never_appears_in_errors_or_logs(tmp_path: Path, local_zoo: Path, caplog) -> None:
    secret = "hf_" + "S3cretTokenValue" * 2
    with HubServer(tmp_path / "locked", token="hf_theRightTokenNotOurs") as server:
        settings = HubSettings(endpoint=server.url, token=secret, progress=False)
        assert secret not in repr(settings)
        registry = Registry.from_path(
            local_zoo, settings=Settings(home=tmp_path / "home"), hub=settings
        )
        caplog.set_level(logging.DEBUG)
        with pytest.raises(HubError) as info:
            registry.push("cpnet.tn1", "org/tn1")
        assert server.stats.requests[0][2] == 401
    assert "401" in str(info.value) or "Unauthorized" in str(info.value)
    assert secret not in str(info.value) and secret not in caplog.text
    assert settings.redact(f"token={secret} other=hf_abcdefghijkl") == "token=*** other=hf_***"


def test_hub_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = HubSettings.from_env(
        {"HF_ENDPOINT": "http://127.0.0.1:9/", "HF_TOKEN": "hf_x123456789"}
    )
    assert settings.endpoint == "http://127.0.0.1:9" and settings.token == "hf_x123456789"
    assert HubSettings.from_env({}, saved_login=False) == HubSettings()


def test_importing_zoo_does_not_import_huggingface_hub() -> None:
    code = "import sys, zoo, zoo.registry, zoo.hub; print('huggingface_hub' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"
