"""Large images and Dask: peak memory, time against pixels, seams, and scaling over workers.

One command (``.venv/bin/python bench/bench_large.py``) measures, in one run:

1. **memory and time against pixels**: synthetic 16-bit nuclei images of 2048² … 8192²
   (16384² with ``--sizes``), each segmented by the block path in a fresh child process with
   the default ``--max-memory`` (2 GB) on 2 threads; the child's peak RSS comes from
   ``os.wait4``. Target: ≤ 3 GB at 8192² (~30k nuclei), time linear in pixels.
2. **no seams**: on 2048², the block path with 512² blocks (16 blocks, 24 borders) against
   whole-image segmentation (``Predictor.predict``): AP@0.9 over all cells and over the
   cells that straddle a block border. Target ≥ 0.99.
3. **efficiency**: a folder of 512² images on a Dask LocalCluster, 2 workers × 1 thread
   against 1 worker × 1 thread (workers warmed up, zoo loaded). Target ≥ 1.6×.
4. **an N-node cluster**: the expected throughput from the measured per-block costs.

Writes ``bench/results/large.json`` (merged with the parts an earlier run measured; each part
keeps its date and load average); ``docs/render.py`` renders the README's table from it, and
``--readme`` rewrites the file from its parts without measuring.
Inputs are made from tiles of our synthetic generator (cells cut by a tile's edge are
removed, so tiles meet on background) and cached in ``--cache``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _results import Column, Run, Table

from zoo import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "large.json"
MODEL, DIAMETER = "cpnet.nuclei", 17.0
TILE = 1024
POOL = 16
GiB = 2**30


# ----------------------------------------------------------------------------- inputs


def _pool(cache: Path) -> np.ndarray:
    """``POOL`` 1024² nuclei tiles (uint16) with no cell cut by the tile's edge."""
    path = cache / "pool.npy"
    if path.is_file():
        return np.load(path)
    from zoo.data.synthetic import STYLE_SPECS, generate

    spec = replace(STYLE_SPECS["nuclei"], diameter_range=(15.0, 19.0), density_range=(0.21, 0.21))
    tiles = []
    for seed in range(POOL):
        sample = generate("nuclei", seed=seed, shape=(TILE, TILE), spec=spec)
        image, labels = sample.image[..., 0], sample.labels
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        background = float(np.median(image[labels == 0]))
        image[np.isin(labels, edge[edge > 0])] = background
        tiles.append(np.clip(image, 0, 65535).astype(np.uint16))
    pool = np.stack(tiles)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, pool)
    return pool


def make_image(side: int, cache: Path) -> Path:
    """A ``side``² tiled BigTIFF of pool tiles (rotated and flipped), written band by band."""
    import tifffile

    path = cache / f"nuclei_{side}.tif"
    if path.is_file():
        return path
    pool = _pool(cache)
    n = side // TILE

    def tile(i: int, j: int) -> np.ndarray:
        picked = pool[(i * 7 + j * 3) % POOL]
        k = (i + 2 * j) % 8
        return np.rot90(picked[:, ::-1] if k >= 4 else picked, k % 4)

    def tiles():
        for i in range(n):
            band = np.concatenate([tile(i, j) for j in range(n)], axis=1)
            for top in range(0, TILE, 256):
                for left in range(0, side, 256):
                    yield np.ascontiguousarray(band[top : top + 256, left : left + 256])

    staging = path.with_suffix(".tmp.tif")
    tifffile.imwrite(staging, data=tiles(), shape=(side, side), dtype=np.uint16,
                     tile=(256, 256), bigtiff=True, compression="zlib")
    os.replace(staging, path)
    return path


# ----------------------------------------------------------------------------- children


def _child(argv: list[str]) -> None:
    """Run one measurement in this (fresh) process; write its JSON to argv[-1]."""
    import torch

    from zoo.params import PredictParams
    from zoo.pipeline import Zoo
    from zoo.settings import Settings

    kind, image, out, report = argv[0], Path(argv[1]), Path(argv[2]), Path(argv[-1])
    zoo = Zoo(settings=Settings.from_env(device="cpu"))
    params = PredictParams(diameter=DIAMETER)
    start = time.perf_counter()
    if kind == "whole":
        import tifffile

        torch.set_num_threads(2)
        labels = zoo.predictor(MODEL).predict(tifffile.imread(image), params).labels
        tifffile.imwrite(out, labels, compression="zlib")
        data = {"seconds": time.perf_counter() - start, "n_cells": int(labels.max())}
    else:
        from zoo.large import LargeParams, ThreadExecutor, segment_large
        from zoo.large.blocks import parse_memory
        from zoo.large.executors import torch_threads_pinned

        block = int(argv[3]) if argv[3] != "auto" else None
        large = LargeParams(max_memory=parse_memory("2GB"), block_size=block)
        with torch_threads_pinned():
            result = segment_large(image, out, executor=ThreadExecutor(zoo, 2), model=MODEL,
                                   params=params, large=large)
        data = {"seconds": time.perf_counter() - start, "n_cells": result.n_cells,
                "blocks": result.blocks, "block_size": result.block_size, "halo": result.halo,
                "cut": result.cut, "orphans": result.orphans, "timings": result.timings,
                "block_reports": result.block_reports, "masks": str(result.masks)}
    report.write_text(json.dumps(data))


def run_child(*args: str, timeout: float | None = None) -> dict:
    """Run ``_child`` in a new process; add its peak RSS (``os.wait4``) to its report.

    A child still running after ``timeout`` seconds is killed; its report then says
    ``completed: false`` with the blocks it finished and its peak RSS so far.
    """
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        report = Path(handle.name)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "_child", *args, str(report)])
    deadline = None if timeout is None else start + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.perf_counter() > deadline:
            parts = list(Path(args[2]).glob(".*.parts/block-*.npz"))
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            return {"completed": False, "seconds": time.perf_counter() - start,
                    "blocks_done": len(parts), "peak_rss_gb": usage.ru_maxrss * 1024 / GiB}
        time.sleep(0.5)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"child {args} failed with {process.returncode}")
    data = json.loads(report.read_text())
    report.unlink()
    data["peak_rss_gb"] = usage.ru_maxrss * 1024 / GiB  # Linux: KiB
    data["completed"] = True
    return data


# ----------------------------------------------------------------------------- measurements


def scaling(sizes: list[int], cache: Path, work: Path, results: dict, run: Run,
            timeout: float | None = None) -> None:
    rows = results.setdefault("scaling", {})
    for side in sizes:
        image = make_image(side, cache)
        print(f"[scaling] {side}² …", flush=True)
        data = run_child("blocks", str(image), str(work / f"s{side}"), "auto", timeout=timeout)
        if not data["completed"]:
            data["megapixels"] = side * side / 1e6
            data["measured"] = machine.now()
            results.setdefault("unfinished", {})[str(side)] = data
            print(f"[scaling] {side}²: stopped after {data['seconds']:.0f} s with "
                  f"{data['blocks_done']} blocks done, peak {data['peak_rss_gb']:.2f} GB", flush=True)
            save(results, run)
            continue
        results.get("unfinished", {}).pop(str(side), None)
        reports = data.pop("block_reports")
        data["megapixels"] = side * side / 1e6
        data["seconds_per_megapixel"] = data["seconds"] / data["megapixels"]
        data["block_seconds"] = sum(r["seconds"] for r in reports)
        data["block_core_pixels"] = sum(r["core_pixels"] for r in reports)
        data["block_network_seconds"] = sum(r["network"] for r in reports)
        data["block_masks_seconds"] = sum(r["masks"] for r in reports)
        data["load_average"] = os.getloadavg()[0]
        data["measured"] = machine.now()
        rows[str(side)] = data
        print(f"[scaling] {side}²: {data['seconds']:.0f} s, {data['n_cells']} cells, "
              f"peak {data['peak_rss_gb']:.2f} GB, {data['blocks']} blocks of "
              f"{data['block_size']}", flush=True)
        save(results, run)


def seams(cache: Path, work: Path, results: dict, run: Run, side: int = 2048,
          block: int = 512) -> None:
    import tifffile

    from zoo.metrics import average_precision

    image = make_image(side, cache)
    print(f"[seams] {side}², blocks of {block} against whole-image …", flush=True)
    blocks = run_child("blocks", str(image), str(work / "seams"), str(block))
    whole = run_child("whole", str(image), str(work / "whole.tif"), "-")
    a, b = tifffile.imread(work / "whole.tif"), tifffile.imread(blocks["masks"])
    borders = np.arange(block, side, block)

    def straddling(labels: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        keep = np.zeros(labels.max() + 1, dtype=bool)
        for label, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is not None and any(
                    ((box[axis].start < borders) & (box[axis].stop > borders)).any()
                    for axis in (0, 1)):
                keep[label] = True
        return np.where(keep[labels], labels, 0)

    seam_whole, seam_blocks = straddling(a), straddling(b)
    results["seams"] = {
        "side": side, "block": block, "whole_cells": int(a.max()), "block_cells": int(b.max()),
        "ap90_all": float(average_precision(a, b, [0.9])[0]),
        "straddling_cells": int(len(np.unique(seam_whole)) - 1),
        "ap90_straddling": float(average_precision(seam_whole, seam_blocks, [0.9])[0]),
        "identical_pixels": float(np.mean(a == b)),
        "whole_seconds": whole["seconds"], "whole_peak_rss_gb": whole["peak_rss_gb"],
        "block_seconds": blocks["seconds"], "block_peak_rss_gb": blocks["peak_rss_gb"],
        "cut": blocks["cut"], "orphans": blocks["orphans"], "measured": machine.now(),
        "load_average": os.getloadavg()[0],
    }
    print(f"[seams] {results['seams']}", flush=True)
    save(results, run)


def efficiency(cache: Path, work: Path, results: dict, run: Run, n_images: int) -> None:
    """Folder of 512² images on 1 and 2 Dask workers (1 thread each), warmed up."""
    import tifffile

    from zoo.cli.batch import Outputs
    from zoo.cli.large import _image_task
    from zoo.large.distributed import as_completed, connect
    from zoo.params import PredictParams
    from zoo.settings import Settings

    pool = _pool(cache)
    folder = work / "folder"
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(n_images):
        path = folder / f"img{i:03d}.tif"
        tile = pool[i % POOL]
        tifffile.imwrite(path, tile[(i // POOL) * 256 % 512 :][:512, :512])
        images.append(path)
    settings = Settings.from_env(device="cpu")
    params = PredictParams(diameter=DIAMETER)
    row = {"images": n_images, "side": 512}
    masks = {}
    for workers in (1, 2):
        out = work / f"folder-out-{workers}"
        out.mkdir(exist_ok=True)
        outputs = Outputs(out, "tiff", False)
        with connect("local", settings=settings, workers=workers, preload=(MODEL,)) as client:
            for address in client.scheduler_info()["workers"]:  # one warm-up image each
                client.submit(_image_task, images[0], outputs=Outputs(work, "tiff", False),
                              model=MODEL, params=params, settings=settings, pure=False,
                              workers=[address]).result()
            cpu_before = sum(client.run(_cpu_seconds).values())
            start = time.perf_counter()
            futures = client.map(_image_task, images, outputs=outputs, model=MODEL,
                                 params=params, settings=settings, pure=False)
            seconds_per_image = [f.result().seconds for f in as_completed(futures)]
            elapsed = time.perf_counter() - start
            cpu = sum(client.run(_cpu_seconds).values()) - cpu_before
        row[f"workers_{workers}_cpu_seconds"] = cpu
        row[f"workers_{workers}_seconds"] = elapsed
        row[f"workers_{workers}_task_seconds"] = float(np.sum(seconds_per_image))
        masks[workers] = [tifffile.imread(out / f"{p.stem}_masks.tif") for p in images]
        print(f"[efficiency] {workers} worker(s): {elapsed:.1f} s", flush=True)
    row["speedup"] = row["workers_1_seconds"] / row["workers_2_seconds"]
    # the work itself: CPU seconds the workers spent; equal means nothing serialises, and the
    # wall-clock speed-up is then bounded by the cores the machine actually gave the workers
    row["cpu_ratio"] = row["workers_2_cpu_seconds"] / row["workers_1_cpu_seconds"]
    row["cores_used_2_workers"] = row["workers_2_cpu_seconds"] / row["workers_2_seconds"]
    row["identical_masks"] = all(np.array_equal(x, y) for x, y in zip(masks[1], masks[2]))
    row["load_average"] = os.getloadavg()[0]
    row["measured"] = machine.now()
    results["efficiency"] = row
    save(results, run)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (run on each Dask worker)."""
    times = os.times()
    return times.user + times.system


def cluster_model(results: dict, run: Run) -> None:
    """Expected throughput of N nodes from the measured per-block costs (see assumptions)."""
    scaling_rows = results.get("scaling", {})
    if not scaling_rows:
        return
    largest = scaling_rows[max(scaling_rows, key=int)]
    per_thread = largest["block_core_pixels"] / largest["block_seconds"]  # px/s per thread
    eff = results.get("efficiency", {})
    # work efficiency: CPU seconds of 1 worker over those of 2 for the same images (wall-clock
    # speed-up on this shared machine measures the cores other jobs left, not our scaling)
    efficiency = min(1.0, eff["workers_1_cpu_seconds"] / eff["workers_2_cpu_seconds"]) \
        if "workers_2_cpu_seconds" in eff else min(1.0, eff.get("speedup", 2.0) / 2)
    cores = 16
    model = {
        "measured_on": f"{max(scaling_rows, key=int)}² blocks",
        "pixels_per_second_per_worker_thread": per_thread,
        "parallel_efficiency": efficiency,
        "cores_per_node": cores,
        "assumptions": [
            "one worker thread per core, one intra-op torch thread each (the block path's rule)",
            "the per-thread block cost measured here, wall-clock on a 2-core machine shared with "
            f"other jobs (load average {largest['load_average']:.1f}): pessimistic for "
            "dedicated cores",
            "work efficiency (1-worker CPU seconds / 2-worker CPU seconds on the same images) "
            "the same at any N",
            "blocks outnumber worker threads; the last wave of blocks is ignored",
            "reads and writes on a shared file system do not limit (input ~2 B/px, labels "
            "compressed), and the scheduler's ~1 ms per task is small against seconds per block",
        ],
        "nodes": {},
    }
    for nodes in (1, 4, 16, 64):
        rate = nodes * cores * per_thread * efficiency
        model["nodes"][str(nodes)] = {
            "megapixels_per_second": rate / 1e6,
            "hours_per_100k_squared_slide": 1e10 / rate / 3600,
        }
    results["cluster_model"] = model
    save(results, run)


def load_parts() -> dict:
    """The parts measured so far: from the shared-format file, or an older raw one."""
    if not RESULTS.is_file():
        return {}
    data = json.loads(RESULTS.read_text())
    return data["summary"]["parts"] if "schema" in data else data


def save(results: dict, run: Run) -> None:
    """Merge ``results`` into the parts already in the JSON file (another run may have
    measured other parts; each part keeps its own date and load average) and write it."""
    merged = load_parts()
    for key, value in results.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    undated = sorted(part for part in ("scaling", "seams", "efficiency", "unfinished")
                     if part in merged and not _dated(merged[part]))
    run.write({"main": table(merged)}, {"parts": merged, "undated_parts": undated})


def _dated(part: dict) -> bool:
    rows = part.values() if all(isinstance(v, dict) for v in part.values()) else [part]
    return all("measured" in row for row in rows)


# ----------------------------------------------------------------------------- report


def table(results: dict) -> Table:
    """The table printed and rendered into the README, from the measured parts."""
    lines: list[str] = []
    scaling_rows = results.get("scaling", {})
    for side in sorted(scaling_rows, key=int):
        row = scaling_rows[side]
        lines.append(
            f"| {side}², {row['n_cells']:,} cells: peak RSS / time / s per Mpx "
            f"| {row['peak_rss_gb']:.2f} GB / {row['seconds']:.0f} s / "
            f"{row['seconds_per_megapixel']:.2f} s "
            f"| {'≤ 3 GB' if side == '8192' else 'report'}, linear |")
    if len(scaling_rows) >= 2:
        small, big = min(scaling_rows, key=int), max(scaling_rows, key=int)
        ratio = scaling_rows[big]["seconds_per_megapixel"] / scaling_rows[small]["seconds_per_megapixel"]
        lines.append(f"| s per Mpx, {big}² ÷ {small}² | {ratio:.2f} | 1.0 (linear) |")
    seam = results.get("seams")
    if seam:
        lines.append(f"| AP@0.9 block path vs whole image, {seam['side']}², blocks of "
                     f"{seam['block']}: all {seam['whole_cells']:,} cells / "
                     f"{seam['straddling_cells']} straddling a border "
                     f"| {seam['ap90_all']:.4f} / {seam['ap90_straddling']:.4f} | ≥ 0.99 |")
    eff = results.get("efficiency")
    if eff:
        lines.append(f"| folder of {eff['images']} × {eff['side']}²: 2 workers × 1 thread vs "
                     f"1 × 1 ({eff['workers_2_seconds']:.0f} s vs {eff['workers_1_seconds']:.0f} s)"
                     f" | {eff['speedup']:.2f}× | ≥ 1.6× |")
        if "cpu_ratio" in eff:
            lines.append(f"| same: CPU seconds 2 workers ÷ 1 worker; cores the 2 workers got "
                         f"(load average {eff['load_average']:.1f}) | {eff['cpu_ratio']:.2f}; "
                         f"{eff['cores_used_2_workers']:.2f} | 1.0; 2 |")
    for side, row in sorted(results.get("unfinished", {}).items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {side}²: stopped after {row['seconds']:.0f} s ({row['blocks_done']} "
                     f"blocks done), peak RSS so far | {row['peak_rss_gb']:.2f} GB | report |")
    model = results.get("cluster_model")
    if model:
        for nodes, row in sorted(model["nodes"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| expected, {nodes} node(s) × {model['cores_per_node']} cores "
                         f"| {row['megapixels_per_second']:.1f} Mpx/s, "
                         f"{row['hours_per_100k_squared_slide']:.1f} h per 100k² slide | model |")
    rows = Table([Column("what", "what"), Column("ours", "ours"), Column("target", "target")],
                 title="block path: memory, time, seams, workers and an N-node model")
    for line in lines:
        what, ours, target = (cell.strip() for cell in line.strip("|").split(" | "))
        rows.add(what=what, ours=ours, target=target)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[2048, 4096, 8192])
    parser.add_argument("--parts", nargs="*", default=["scaling", "seams", "efficiency"],
                        choices=["scaling", "seams", "efficiency"])
    parser.add_argument("--images", type=int, default=16, help="images in the folder benchmark")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop a scaling run after this many seconds (reported as unfinished)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cellzoo-large")
    parser.add_argument("--readme", action="store_true",
                        help="measure nothing: rewrite the results file from its parts")
    args = parser.parse_args()
    run = Run("large", "Large images and Dask: memory, time, seams and workers", vars(args))
    results = load_parts()
    if args.readme:
        cluster_model(results, run)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
            work = Path(tmp)
            if "scaling" in args.parts:
                scaling(args.sizes, args.cache, work, results, run, args.timeout)
            if "seams" in args.parts:
                seams(args.cache, work, results, run)
            if "efficiency" in args.parts:
                efficiency(args.cache, work, results, run, args.images)
        cluster_model(results, run)
    print(table(results).markdown())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child(sys.argv[2:])
    else:
        main()
