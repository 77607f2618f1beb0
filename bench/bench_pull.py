"""Pull benchmark: ``zoo pull --all`` from a Hub-compatible server, cold then warm.

Usage:

    .venv/bin/python bench/bench_pull.py [--models 8] [--size-mb 25]

It builds a synthetic zoo (``--models`` models of ``--size-mb`` MB of random weights each, the
specialists with a 1 MB style bank), starts the local Hub server of the tests
(``tests/hubserver.py``, 127.0.0.1 only) and publishes every model with ``zoo.hub.push`` into
its own repo plus one registry repo. Then, through the Registry API (what ``zoo pull --all``
runs), it pulls every model of the registry repo's index into an empty cache (cold), and again
(warm: every file re-hashed, nothing downloaded), and for comparison installs the same zoo
from its local directory (the embedded-zoo path, offline). The server counts the requests it
answers and the body bytes it sends: a warm pull must show 0 and 0.

Xet storage is turned off (``HF_HUB_DISABLE_XET=1``): large files take the LFS path, which
the test server implements. Prints a table and writes bench/results/pull.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
# The test Hub server speaks the LFS protocol, not Xet storage (which huggingface_hub uses for
# large files when hf_xet is installed); read by huggingface_hub when it is first imported.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

from _results import Column, Run, Table
from hubserver import HubServer, make_entry, write_zoo

from zoo import hub
from zoo.registry import Registry
from zoo.settings import Settings


def build_zoo(root: Path, n_models: int, size_mb: float) -> Path:
    """A synthetic zoo: one generalist and ``n_models - 1`` specialists with style banks."""
    size = int(size_mb * 1e6)
    entries = [
        make_entry(root, "cpnet.generalist", {"cpnet.generalist.safetensors": os.urandom(size)})
    ]
    for i in range(1, n_models):
        name = f"cpnet.sp{i}"
        files = {
            f"{name}/{name}.safetensors": os.urandom(size),
            f"{name}/style_bank.safetensors": os.urandom(1_000_000),
        }
        entries.append(
            make_entry(
                root,
                name,
                files,
                kind="specialist",
                style_bank=f"{name}/style_bank.safetensors",
                cluster={"id": i, "name": f"cluster{i}"},
            )
        )
    return write_zoo(root, entries)


def pull_all(registry: Registry, server: HubServer | None) -> dict:
    """``zoo pull --all``: every model of ``registry``; seconds, MB/s and what the server sent."""
    if server is not None:
        server.stats.reset()
    total = sum(entry.size for entry in registry.list())
    start = time.perf_counter()
    for entry in registry.list():
        registry.pull(entry.ref)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "mb": round(total / 1e6, 1),
        "mb_per_s": round(total / 1e6 / seconds, 1),
        "requests": server.stats.count if server else 0,
        "bytes_served": server.stats.bytes_sent if server else 0,
    }


def run(n_models: int, size_mb: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp:
        tmp = Path(tmp)
        manifest = build_zoo(tmp / "zoo", n_models, size_mb)
        with HubServer(tmp / "hubstore") as server:
            settings = hub.HubSettings(endpoint=server.url, progress=False)
            local = Registry.from_path(
                manifest, settings=Settings(home=tmp / "publisher"), hub=settings
            )
            start = time.perf_counter()
            for entry in local.list():
                local.push(entry.ref, f"bench/{entry.name}", index_repo="bench/registry")
            push_s = time.perf_counter() - start
            index = hub.fetch_remote_index("bench/registry", settings)
            remote = Registry(index, settings=Settings(home=tmp / "cache"), hub=settings)
            rows = {"hub cold": pull_all(remote, server), "hub warm": pull_all(remote, server)}
        embedded = Registry.embedded(
            Settings(home=tmp / "cache-local", offline=True), path=manifest
        )
        rows["local cold (offline)"] = pull_all(embedded, None)
        rows["local warm (offline)"] = pull_all(embedded, None)
    return {"models": n_models, "size_mb": size_mb, "push_all_s": round(push_s, 2), "rows": rows}


def pull_table(result: dict) -> Table:
    first = next(iter(result["rows"].values()))
    table = Table([
        Column("pull", "pull"), Column("seconds", "seconds", ".2f", " s"),
        Column("mb_per_s", "MB/s", ".0f"), Column("requests", "server requests", "d"),
        Column("bytes_served", "bytes served", ","),
    ], title=f"zoo pull --all: {result['models']} models, {first['mb']} MB, Hub server on "
             f"127.0.0.1 (publishing them took {result['push_all_s']} s)")  # fmt: skip
    for name, row in result["rows"].items():
        local = name.startswith("local")
        table.add(pull=name, seconds=row["seconds"], mb_per_s=row["mb_per_s"],
                  requests=None if local else row["requests"],
                  bytes_served=None if local else row["bytes_served"])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--size-mb", type=float, default=25.0)
    args = parser.parse_args()
    run_record = Run("pull", "zoo pull --all from a local Hub server, cold and warm", vars(args))
    result = run(args.models, args.size_mb)
    table = pull_table(result)
    warm = result["rows"]["hub warm"]
    passed = warm["requests"] == 0 and warm["bytes_served"] == 0
    print(table.title + "\n\n" + table.markdown())
    print(f"\nwarm pull network transfer: {warm['requests']} requests, "
          f"{warm['bytes_served']} bytes -> {'PASS' if passed else 'FAIL'}")
    run_record.write({"main": table}, {
        "models": result["models"], "mb": next(iter(result["rows"].values()))["mb"],
        "push_all_s": result["push_all_s"], "warm_transfer_free": passed})


if __name__ == "__main__":
    main()
