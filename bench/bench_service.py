"""HTTP service benchmark: images/s and p50/p99 latency at several concurrencies.

Usage:
    .venv/bin/python bench/bench_service.py [--size 512] [--concurrency 1 4 16]
        [--requests 32] [--target zoo.service.app:CellZoo] [--model auto]

Starts ``bentoml serve TARGET`` on a free port (split API + network services by
default), sends 512² synthetic images of every style through ``POST /segment`` from
N client threads, and reads the batch sizes the network service formed from
``/metrics``. The reference column is the library called in-process, one image at a
time (``Zoo.segment`` in a loop, same images, same device), measured in the same run;
the overhead ratio is service latency at concurrency 1 over the library's time per
image. On a GPU host pass ``--concurrency 1 16 64``. Writes bench/results/service.json.
No server process outlives the script.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _results import Column, Run, Table  # noqa: E402

from tests.serving import served  # noqa: E402
from zoo.data.synthetic import STYLES, generate  # noqa: E402
from zoo.params import PredictParams  # noqa: E402
from zoo.pipeline import Zoo  # noqa: E402
from zoo.settings import Settings  # noqa: E402


def _tiff(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.moveaxis(image, -1, 0), photometric="minisblack",
                     metadata={"axes": "CYX"})
    return buffer.getvalue()


def _histogram(metrics: str, name: str) -> dict[str, float]:
    """Bucket upper bound → cumulative count of one Prometheus histogram."""
    pattern = re.compile(rf'^{name}_bucket{{.*?le="([^"]+)".*?}} ([0-9.e+]+)$')
    buckets: dict[str, float] = {}
    for line in metrics.splitlines():
        match = pattern.match(line)
        if match:
            buckets[match.group(1)] = buckets.get(match.group(1), 0.0) + float(match.group(2))
    return buckets


def _mean_from(metrics: str, name: str) -> tuple[float, float]:
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith(f"{name}_sum"):
            total += float(line.split()[-1])
        elif line.startswith(f"{name}_count"):
            count += float(line.split()[-1])
    return total, count


def _run(url: str, images: list[bytes], clients: int, requests: int, model: str) -> dict:
    latencies: list[float] = []
    errors = 0

    def client(worker: int) -> None:
        nonlocal errors
        with httpx.Client(timeout=600) as session:
            for i in range(worker, requests, clients):
                data = images[i % len(images)]
                start = time.perf_counter()
                response = session.post(f"{url}/segment", files={"image": ("x.tif", data)},
                                        data={"channels": "0,1", "model": model})
                latencies.append(time.perf_counter() - start)
                errors += response.status_code != 200

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    return {"images/s": requests / wall, "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99)), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--target", default="zoo.service.app:CellZoo")
    parser.add_argument("--model", default="auto")
    args = parser.parse_args()

    samples = [generate(style, seed=500 + i, shape=(args.size, args.size)).image
               for i, style in enumerate(STYLES)]
    payloads = [_tiff(image) for image in samples]
    params = PredictParams(cyto_channel=0, nucleus_channel=1)

    run = Run("service", "HTTP service: images/s and latency at several concurrencies, "
              "against the library in-process", vars(args))
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        zoo = Zoo(settings=Settings.from_env(home=home / "library"))
        for image in samples:  # warm-up, as the service's: every specialist loaded once
            zoo.segment(image, model=args.model, params=params)
        start = time.perf_counter()
        for image in samples * 2:
            zoo.segment(image, model=args.model, params=params)
        library = (time.perf_counter() - start) / (2 * len(samples))
        del zoo
        spawned: list = []
        try:
            with served(args.target, home, timeout=600) as url:
                spawned = psutil.Process().children(recursive=True)  # server and its workers
                rows, batch_stats = _measure(url, payloads, args)
        finally:
            _stop(spawned)

    table, batches = _tables(rows, batch_stats, library, args)
    print(f"\n{table.title}")
    print(f"library in-process, one image at a time: {library:.3f} s/image = "
          f"{1 / library:.2f} images/s")
    print(table.markdown())
    single = dict(rows).get(1)
    overhead = single["p50"] / library if single else None
    if overhead is not None:
        print(f"overhead at concurrency 1: service p50 / library = {overhead:.2f}x")
    print(f"\n{batches.title}:")
    print(batches.markdown())
    run.write({"main": table, "batches": batches},
              {"library_s_per_image": library, "library_images_per_s": 1 / library,
               "overhead_p50_at_1": overhead})


def _measure(url: str, payloads: list[bytes], args: argparse.Namespace) -> tuple[list, list]:
    for data in payloads:  # warm-up: every specialist once
        httpx.post(f"{url}/segment", files={"image": ("x.tif", data)},
                   data={"channels": "0,1", "model": args.model}, timeout=600)
    rows, batch_stats = [], []
    for clients in args.concurrency:
        before = httpx.get(f"{url}/metrics").text
        rows.append((clients, _run(url, payloads, clients, args.requests, args.model)))
        after = httpx.get(f"{url}/metrics").text
        jobs = [a - b for a, b in zip(_mean_from(after, "cellzoo_network_jobs_per_batch"),
                                      _mean_from(before, "cellzoo_network_jobs_per_batch"))]
        tiles = [a - b for a, b in zip(_mean_from(after, "cellzoo_network_tiles_per_pass"),
                                       _mean_from(before, "cellzoo_network_tiles_per_pass"))]
        jobs_hist = {k: v - _histogram(before, "cellzoo_network_jobs_per_batch").get(k, 0)
                     for k, v in _histogram(after, "cellzoo_network_jobs_per_batch").items()}
        batch_stats.append((clients, jobs, tiles, jobs_hist))
    return rows, batch_stats


def _tables(rows: list, batch_stats: list, library: float, args: argparse.Namespace
            ) -> tuple[Table, Table]:
    table = Table([
        Column("concurrency", "concurrency", "d"), Column("images_per_s", "images/s", ".2f"),
        Column("p50_s", "p50", ".2f", " s"), Column("p99_s", "p99", ".2f", " s"),
        Column("errors", "errors", "d"),
        Column("vs_library", "images/s vs library loop", ".2f", "×"),
    ], title=f"{args.size}² synthetic images of every style, {args.requests} requests per "
             f"level, {args.target}, model {args.model}")  # fmt: skip
    for clients, row in rows:
        table.add(concurrency=clients, images_per_s=row["images/s"], p50_s=row["p50"],
                  p99_s=row["p99"], errors=row["errors"], vs_library=row["images/s"] * library)
    batches = Table([
        Column("concurrency", "concurrency", "d"), Column("calls", "network calls", ".0f"),
        Column("jobs_per_call", "mean jobs per call", ".2f"),
        Column("passes", "forward passes", ".0f"),
        Column("tiles_per_pass", "mean tiles per pass", ".2f"),
        Column("histogram", "calls with 1 / ≤2 / ≤4 / ≤8 / ≤16 jobs"),
    ], title="batches the network service formed")  # fmt: skip
    for clients, (jobs_sum, calls), (tiles_sum, passes), hist in batch_stats:
        cumulative = [hist.get(b, 0) for b in ("1.0", "2.0", "4.0", "8.0", "16.0")]
        batches.add(concurrency=clients, calls=calls, jobs_per_call=jobs_sum / max(calls, 1),
                    passes=passes, tiles_per_pass=tiles_sum / max(passes, 1),
                    histogram=" / ".join(f"{c:.0f}" for c in cumulative))
    return table, batches


def _stop(processes: list[psutil.Process]) -> None:
    """Stop, by process id, any of ``processes`` still running (workers that outlived
    ``bentoml serve``)."""
    alive = [p for p in processes if p.is_running()]
    for process in alive:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, stubborn = psutil.wait_procs(alive, timeout=15)
    for process in stubborn:
        process.kill()


if __name__ == "__main__":
    main()
