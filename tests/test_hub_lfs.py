"""Large files through the Hub's LFS path, and model cards that follow the Hub's conventions.

The real ``huggingface_hub`` client talks to tests/hubserver.py on 127.0.0.1. With ``hf_xet``
installed the client would upload LFS files through Xet storage, which the test server does
not speak, so these tests turn Xet off (as ``HF_HUB_DISABLE_XET=1`` does) to take the LFS
batch path the Hub also serves."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hubserver import HubServer, make_entry, write_zoo
from huggingface_hub import HfApi, ModelCard, ModelCardData
from typer.testing import CliRunner

from zoo.cli.main import app
from zoo.errors import IntegrityError
from zoo.hub import HubSettings, card_metadata, card_text, fetch_remote_index
from zoo.manifest import load_manifest
from zoo.registry import Registry
from zoo.settings import Settings

SMALL_THRESHOLD = 64 * 1024


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "env-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def server(tmp_path: Path):
    with HubServer(tmp_path / "hubstore", lfs_threshold=SMALL_THRESHOLD) as running:
        yield running


@pytest.fixture
def hub(server: HubServer) -> HubSettings:
    return HubSettings(endpoint=server.url, token=None, progress=False)


@pytest.fixture
def local_zoo(tmp_path: Path) -> Path:
    root = tmp_path / "zoo"
    return write_zoo(root, [
        make_entry(root, "cpnet.generalist", {"cpnet.generalist.safetensors": os.urandom(300_000)},
                   license="BSD-3-Clause", metrics={"ap@0.5": 0.9, "ap@0.9": 0.41},
                   training_data={"summary": "synthetic", "images": 10,
                                  "datasets": ["synthetic:tissue", "org/real-cells"]}),
        make_entry(root, "cpnet.tn1", {"cpnet.tn1.safetensors": os.urandom(2000),
                                       "style_bank.safetensors": os.urandom(100_000)},
                   kind="specialist", style_bank="style_bank.safetensors",
                   parent="cpnet.generalist", license="CC-BY-4.0",
                   cluster={"id": 2, "name": "tissuenet", "centroid": [0.5, 0.5]}),
    ])


def _commit_requests(server: HubServer) -> list[str]:
    return [path for method, path, *_ in server.stats.requests if method in ("POST", "PUT")]


def test_large_files_take_the_lfs_path_and_pull_back_verified(
    server: HubServer, hub: HubSettings, local_zoo: Path, tmp_path: Path
) -> None:
    registry = Registry.from_path(local_zoo, settings=Settings(home=tmp_path / "home"), hub=hub)
    commit = registry.push("cpnet.generalist", "org/gen")
    weights = (local_zoo.parent / "cpnet.generalist.safetensors").read_bytes()
    oid = hashlib.sha256(weights).hexdigest()
    assert server.uploads == [("org/gen", oid, len(weights))]
    calls = _commit_requests(server)
    batch = calls.index("/org/gen.git/info/lfs/objects/batch")
    assert calls[batch + 1] == f"/lfs/upload/org/gen/{oid}"
    assert calls[batch + 2] == "/org/gen.git/info/lfs/objects/verify"
    stored = server.store.files("org/gen", commit)
    assert stored["cpnet.generalist.safetensors"] == {
        "sha256": oid, "size": len(weights), "lfs": True,
        "oid": stored["cpnet.generalist.safetensors"]["oid"]}
    assert "lfs" not in stored["README.md"]  # small text stays a regular file

    tree = HfApi(endpoint=server.url, token=False).list_repo_tree("org/gen", revision=commit)
    lfs = {f.path: f.lfs for f in tree}
    assert lfs["cpnet.generalist.safetensors"].sha256 == oid and lfs["README.md"] is None

    server.stats.reset()
    fresh = Registry(fetch_remote_index("org/gen", hub), settings=Settings(home=tmp_path / "h2"),
                     hub=hub)
    assert fresh.pull("cpnet.generalist").weights.read_bytes() == weights
    methods = {(m, p.split("/")[1] if p.startswith("/lfs") else "resolve", s)
               for m, p, s, *_ in server.stats.requests if "generalist.safetensors" in p
               or p.startswith("/lfs/objects")}
    assert ("HEAD", "resolve", 302) in methods and ("GET", "lfs", 200) in methods


def test_pull_refuses_an_lfs_object_that_changed(
    server: HubServer, hub: HubSettings, local_zoo: Path, tmp_path: Path
) -> None:
    registry = Registry.from_path(local_zoo, settings=Settings(home=tmp_path / "home"), hub=hub)
    registry.push("cpnet.generalist", "org/gen")
    oid = server.uploads[0][1]
    blob = server.store.blob(oid)
    blob.write_bytes(os.urandom(blob.stat().st_size))  # bit rot on the server
    fresh = Registry(fetch_remote_index("org/gen", hub), settings=Settings(home=tmp_path / "h2"),
                     hub=hub)
    with pytest.raises(IntegrityError, match="cpnet.generalist.safetensors: sha256"):
        fresh.pull("cpnet.generalist")
    assert not fresh.is_installed("cpnet.generalist")


def test_the_hubs_10_mb_rule_by_default(tmp_path: Path) -> None:
    with HubServer(tmp_path / "store") as server:  # the default threshold
        api = HfApi(endpoint=server.url, token=False)
        api.create_repo("org/big")
        big, small = os.urandom(10 * 1024 * 1024 + 1), os.urandom(10 * 1024 * 1024)
        (tmp_path / "big.bin").write_bytes(big)
        (tmp_path / "small.bin").write_bytes(small)
        api.upload_folder(repo_id="org/big", folder_path=tmp_path, allow_patterns=["*.bin"])
        files = server.store.files("org/big", server.store.resolve("org/big", "main"))
        assert files["big.bin"].get("lfs") is True and "lfs" not in files["small.bin"]
        assert [u[1] for u in server.uploads] == [hashlib.sha256(big).hexdigest()]


def test_gitattributes_patterns_send_small_files_to_lfs(server: HubServer) -> None:
    from huggingface_hub import CommitOperationAdd

    api = HfApi(endpoint=server.url, token=False)
    api.create_repo("org/attr")
    api.create_commit("org/attr", [CommitOperationAdd(
        ".gitattributes", b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n")],
        commit_message="attributes")
    info = api.create_commit("org/attr", [
        CommitOperationAdd("w.safetensors", b"tiny weights"),
        CommitOperationAdd("notes.txt", b"tiny text"),
    ], commit_message="files")
    files = server.store.files("org/attr", info.oid)
    assert files["w.safetensors"].get("lfs") is True and "lfs" not in files["notes.txt"]


def _request(url: str, *, method: str, data: bytes) -> int:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_lfs_endpoints_refuse_unsigned_or_wrong_bytes(server: HubServer) -> None:
    server.store.create_repo("org/x")
    data = os.urandom(1000)
    oid = hashlib.sha256(data).hexdigest()
    base = f"{server.url}/lfs/upload/org/x/{oid}?size={len(data)}"
    assert _request(f"{base}&sig=forged", method="PUT", data=data) == 403
    signed = f"{base}&sig={server.sign('org/x', oid, len(data))}"
    assert _request(signed, method="PUT", data=os.urandom(1000)) == 400
    assert not server.store.blob(oid).exists()
    commit = json.dumps({"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256",
                                                    "oid": oid, "size": len(data)}})
    url = f"{server.url}/api/models/org/x/commit/main"
    assert _request(url, method="POST", data=commit.encode()) == 422  # never uploaded
    assert _request(signed, method="PUT", data=data) == 200
    assert _request(url, method="POST", data=commit.encode()) == 200
    assert server.store.files("org/x", server.store.resolve("org/x", "main"))["w.bin"]["lfs"]


def test_model_card_follows_hub_conventions(
    server: HubServer, hub: HubSettings, local_zoo: Path, tmp_path: Path
) -> None:
    registry = Registry.from_path(local_zoo, settings=Settings(home=tmp_path / "home"), hub=hub)
    registry.push("cpnet.generalist", "org/gen")
    commit = registry.push("cpnet.tn1", "org/tn1")
    readme = server.store.files("org/tn1", commit)["README.md"]
    card = ModelCard(server.store.blob(readme["sha256"]).read_text())
    data = card.data
    assert data.library_name == "cellzoo" and data.pipeline_tag == "image-segmentation"
    assert data.base_model == "org/gen" and data.base_model_relation == "finetune"
    assert data.license == "cc-by-4.0"
    assert {"cellzoo", "specialist", "cpnet", "style-tissuenet"} <= set(data.tags)
    assert data.cellzoo["parent"] == "cpnet.generalist"
    assert "# cpnet.tn1 1.0.0" in card.text

    gen_readme = server.store.files("org/gen", registry.entry("cpnet.generalist").source.revision)
    gen = ModelCard(server.store.blob(gen_readme["README.md"]["sha256"]).read_text()).data
    assert gen.datasets == ["org/real-cells"]  # 'synthetic:tissue' is no Hub dataset id
    assert gen.base_model is None and gen.metrics == ["average_precision"]
    assert gen.model_name == "cpnet.generalist"
    results = {(r.metric_name, r.metric_value, r.task_type, r.dataset_type, r.dataset_split)
               for r in gen.eval_results}
    assert results == {("AP@0.5", 0.9, "image-segmentation", "org/real-cells", "test"),
                       ("AP@0.9", 0.41, "image-segmentation", "org/real-cells", "test")}
    assert [r.metric_args for r in gen.eval_results] == [{"iou_threshold": 0.5},
                                                         {"iou_threshold": 0.9}]
    round_trip = ModelCardData(**card_metadata(registry.entry("cpnet.generalist")))
    assert round_trip.to_dict() == gen.to_dict()


def test_card_license_outside_the_hub_list_becomes_other(local_zoo: Path) -> None:
    entry = load_manifest(local_zoo).models[0].model_copy(update={"license": "LicenseRef-lab"})
    data = ModelCard(card_text(entry)).data
    assert data.license == "other" and data.license_name == "licenseref-lab"


def test_hub_server_refuses_metadata_the_hub_refuses(server: HubServer, hub: HubSettings) -> None:
    api = HfApi(endpoint=server.url, token=False)
    api.create_repo("org/bad")
    bad = b"---\nlicense: BSD-3-Clause\ndatasets:\n- synthetic:tissue\n---\n\n# card\n"
    with pytest.raises(ValueError, match="Invalid metadata in README.md") as info:
        api.upload_file(path_or_fileobj=bad, path_in_repo="README.md", repo_id="org/bad")
    assert "license" in str(info.value) and "datasets" in str(info.value)


def test_cli_push_and_pull_of_a_large_model(
    server: HubServer, local_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    runner = CliRunner()
    pushed = runner.invoke(app, ["push", "cpnet.generalist", "--repo", "org/gen",
                                 "--index", "org/registry", "--manifest", str(local_zoo)])
    assert pushed.exit_code == 0, pushed.stderr
    assert len(server.uploads) == 1
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "other-home"))
    pulled = runner.invoke(app, ["pull", "cpnet.generalist", "--remote", "org/registry"])
    assert pulled.exit_code == 0, pulled.stderr
    installed = Path(pulled.stdout.split(": ", 1)[1].strip())
    assert (installed / "cpnet.generalist.safetensors").read_bytes() == (
        local_zoo.parent / "cpnet.generalist.safetensors").read_bytes()

