"""HTTP service benchmark: images/s and p50/p99 latency at several concurrencies.

Usage:
    .venv/bin/python bench/bench_service.py [--size 512] [--concurrency 1 4 16]
        [--requests 32] [--target zoo.service.app:CellZoo] [--model auto]

Starts ``bentoml serve TARGET`` on a free port (split API + network services by
default), sends 512² synthetic images of every style through ``POST /segment`` from
N client threads, and reads the batch sizes the adaptive batcher formed from
``/metrics``. The reference column is the library called in-process, one image at a
time (``Zoo.segment`` in a loop, same images, same device), measured in the same run;
the overhead ratio is service latency at concurrency 1 over the library's time per
image. On a GPU host pass ``--concurrency 1 16 64``.
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
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
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

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        zoo = Zoo(settings=Settings.from_env())
        zoo.segment(samples[0], model=args.model, params=params)  # warm-up
        start = time.perf_counter()
        for image in samples * 2:
            zoo.segment(image, model=args.model, params=params)
        library = (time.perf_counter() - start) / (2 * len(samples))
        del zoo

        with served(args.target, home, timeout=600) as url:
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

    print(f"\n{args.size}² images, {args.requests} requests per level, target {args.target}, "
          f"model {args.model}")
    print(f"library in-process, one image at a time: {library:.3f} s/image = "
          f"{1 / library:.2f} images/s")
    print("| concurrency | images/s | p50 s | p99 s | errors | images/s vs library loop |")
    print("|---:|---:|---:|---:|---:|---:|")
    for clients, row in rows:
        print(f"| {clients} | {row['images/s']:.2f} | {row['p50']:.3f} | {row['p99']:.3f} | "
              f"{row['errors']} | {row['images/s'] * library:.2f}x |")
    single = dict(rows).get(1)
    if single:
        print(f"overhead at concurrency 1: service p50 / library = {single['p50'] / library:.2f}x")
    print("\nbatches the adaptive batcher formed (per level):")
    print("| concurrency | network calls | mean jobs per call | forward passes | mean tiles per pass |"
          " calls with 1 / <=2 / <=4 / <=8 / <=16 jobs |")
    print("|---:|---:|---:|---:|---:|---|")
    for clients, (jobs_sum, calls), (tiles_sum, passes), hist in batch_stats:
        cumulative = [hist.get(b, 0) for b in ("1.0", "2.0", "4.0", "8.0", "16.0")]
        print(f"| {clients} | {calls:.0f} | {jobs_sum / max(calls, 1):.2f} | {passes:.0f} | "
              f"{tiles_sum / max(passes, 1):.2f} | {' / '.join(f'{c:.0f}' for c in cumulative)} |")


if __name__ == "__main__":
    main()
