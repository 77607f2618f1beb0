"""The block path: a whole image of any size segmented in bounded memory.

One image goes through five stages; each stage's tasks run on an ``Executor`` (threads
here, or a Dask cluster), and only small results come back to the caller:

1. **percentiles**: windows of the image are histogrammed; the normalisation bounds are
   those of the whole image (``zoo.large.norm``);
2. **decide** (one task): the diameter (the size estimate on the central view, as the
   whole-image path), the route (the style of the central ``style_region``), the model and
   the flow parameters, fixed for every block. The block plan follows: halo from the diameter,
   block size from the memory budget;
3. **blocks**: each block runs the network on the whole image's tile grid over its outer
   window, turns flows into masks, and keeps its core's cells (``zoo.large.stitch``); its
   parts are saved in a hidden folder beside the output, so a killed run resumes with the
   blocks that are missing;
4. **number**: the owned anchors of all blocks, sorted, number the cells;
5. **write**: the labels (tiled BigTIFF streamed here, or OME-Zarr regions written by the
   tasks), the per-cell table and an optional overview overlay are staged in the parts
   folder and renamed into place, the masks last; then the parts folder is removed.

The decision and the plan are saved (``job.json``) with a description of the input and the
request; a rerun with the same input and request reuses them and the finished blocks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import InvalidParamsError
from zoo.large import norm, stitch, writer
from zoo.large.blocks import (
    DEFAULT_MAX_MEMORY,
    BlockPlan,
    Window,
    block_side,
    halo_for,
)
from zoo.large.executors import Executor, one_torch_thread
from zoo.large.network import Geometry, RegionInput, region_maps
from zoo.large.reader import describe, open_image
from zoo.params import FlowParams, PredictParams

log = logging.getLogger(__name__)

FORMATS = {"tiff": "_masks.tif", "ome-zarr": "_masks.ome.zarr"}
TABLE_SUFFIX = "_cells"
OVERLAY_SUFFIX = "_overlay.png"
_JOB = "job.json"
_HISTOGRAM_WINDOW = 2048
_OVERLAY_SIDE = 2048
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class LargeParams:
    """How the block path runs and what it writes.

    Attributes:
        max_memory: bytes one process may use (``--max-memory``); sets the block size.
        block_size: side of a block's core; None: the largest that fits ``max_memory``.
        halo: pixels around each core; None: ``halo_for(diameter)`` (4 diameters).
        fmt: ``tiff`` (tiled BigTIFF) or ``ome-zarr``.
        table: ``parquet``, ``csv`` or None (no per-cell table).
        overlay: also write an overview overlay PNG (longest side at most 2048).
        tile_batch: network tiles per call (fixed, so results do not depend on blocks).
        style_region: side of the central region that decides route and diameter.
    """

    max_memory: int = DEFAULT_MAX_MEMORY
    block_size: int | None = None
    halo: int | None = None
    fmt: str = "tiff"
    table: str | None = "parquet"
    overlay: bool = False
    tile_batch: int = 1
    style_region: int = 512

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise InvalidParamsError(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.table is not None and self.table not in writer.TABLE_FORMATS:
            raise InvalidParamsError(
                f"table must be one of {', '.join(writer.TABLE_FORMATS)} or None, got {self.table!r}")
        if self.block_size is not None and self.block_size < 16:
            raise InvalidParamsError(f"block size must be >= 16, got {self.block_size}")
        if self.halo is not None and self.halo < 0:
            raise InvalidParamsError(f"halo must be >= 0, got {self.halo}")
        if self.tile_batch < 1 or self.style_region < 16:
            raise InvalidParamsError(
                f"tile_batch must be >= 1 and style_region >= 16, got {self.tile_batch}, "
                f"{self.style_region}")


@dataclass(frozen=True)
class Decision:
    """What is decided once per image and then fixed for every block.

    Attributes:
        model: the model that segments the image.
        diameter: cell diameter in pixels.
        bounds: per network input channel ``(low, high)`` normalisation bounds.
        scale: the network's resize factor ``diam_mean / diameter``.
        divisor: the network's size divisor.
        flow: flows → masks parameters (adapted to ``scale``).
        route: ``RouteResult.to_dict()`` when the model was routed, else None.
    """

    model: str
    diameter: float
    bounds: tuple[tuple[float, float], ...]
    scale: float
    divisor: int
    flow: FlowParams
    route: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        return cls(data["model"], data["diameter"], tuple(tuple(b) for b in data["bounds"]),
                   data["scale"], data["divisor"], FlowParams(**data["flow"]), data["route"])


@dataclass(frozen=True)
class Job:
    """Everything a block task needs (sent once to each worker)."""

    image: str
    parts: str
    plan: BlockPlan
    geometry: Geometry
    given: RegionInput
    decision: Decision

    def flow_for(self, window: Window) -> FlowParams:
        """The flow parameters of a block: giant masks are judged against the whole image."""
        whole = self.plan.shape[0] * self.plan.shape[1]
        fraction = min(1.0, self.decision.flow.max_size_fraction * whole / window.size)
        return replace(self.decision.flow, max_size_fraction=fraction)


@dataclass
class LargeResult:
    """What ``segment_large`` did.

    Attributes:
        masks: the labels written (``<stem>_masks.tif`` or ``<stem>_masks.ome.zarr``).
        table: the per-cell table, or None.
        overlay: the overview overlay, or None.
        n_cells: cells in the image.
        model, diameter, route: the decision.
        shape: ``(Y, X)`` of the image.
        block_size, halo: the plan.
        blocks: blocks in the plan; resumed: blocks found done from an earlier run.
        cut: cells that reached a halo's inner edge (increase the halo if not 0).
        orphans: cell pieces dropped because no block owned their anchor (expected 0).
        timings: seconds per stage.
        block_reports: per block segmented in this run: index, outer pixels, tiles, seconds.
    """

    masks: Path
    table: Path | None
    overlay: Path | None
    n_cells: int
    model: str
    diameter: float
    route: dict[str, Any] | None
    shape: tuple[int, int]
    block_size: int
    halo: int
    blocks: int
    resumed: int
    cut: int
    orphans: int
    timings: dict[str, float] = field(default_factory=dict)
    block_reports: list[dict[str, float]] = field(default_factory=list)


def output_paths(out_dir: Path, stem: str, large: LargeParams) -> dict[str, Path | None]:
    """The files the block path writes for ``stem``: masks, table, overlay, parts folder."""
    masks = out_dir / f"{stem}{FORMATS[large.fmt]}"
    table = out_dir / f"{stem}{TABLE_SUFFIX}.{large.table}" if large.table else None
    overlay = out_dir / f"{stem}{OVERLAY_SUFFIX}" if large.overlay else None
    return {"masks": masks, "table": table, "overlay": overlay,
            "parts": out_dir / f".{masks.name}.parts"}


def segment_large(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    executor: Executor,
    model: str = "auto",
    params: PredictParams | None = None,
    large: LargeParams | None = None,
    stem: str | None = None,
    progress: Progress | None = None,
) -> LargeResult:
    """Segment the image at ``path`` block by block; write its outputs into ``out_dir``.

    Args:
        path: a TIFF, OME-Zarr/zarr, PNG or JPEG image.
        out_dir: the output folder (made if missing).
        executor: where the tasks run (``ThreadExecutor`` or ``DaskExecutor``).
        model: a model name, or ``auto`` to route the image.
        params: prediction parameters (channels, diameter, tiles, flow parameters).
        large: block-path parameters.
        stem: output name stem; default the file name without its suffix.
        progress: called as ``progress(stage, done, total)``; stage ``blocks`` counts blocks.

    Returns:
        What was written and decided; see ``LargeResult``.
    """
    params, large = params or PredictParams(), large or LargeParams()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = output_paths(out_dir, stem or Path(path).stem, large)
    parts: Path = paths["parts"]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with open_image(path) as image:
        request = {"input": describe(image), "model": model, "params": _jsonable(params),
                   "halo": large.halo, "tile_batch": large.tile_batch,
                   "style_region": large.style_region}
        shape, channels = image.shape, image.channels
    decision = _resume_decision(parts, request)
    if decision is None:
        decision = _decide(Path(path), shape, executor, model, params, large, channels)
    timings["decide"] = time.perf_counter() - started
    job = _job(Path(path), parts, shape, decision, params, large, executor.concurrency)
    _save_job(parts, request, decision, job.plan)
    todo = sorted(set(range(len(job.plan))) - stitch.done_blocks(parts, job.plan))
    resumed = len(job.plan) - len(todo)
    if resumed:
        log.info("%s: resuming, %d of %d blocks already done", path, resumed, len(job.plan))
    start = time.perf_counter()
    reports = _run_blocks(executor, job, todo, progress)
    timings["blocks"] = time.perf_counter() - start
    start = time.perf_counter()
    anchors = stitch.number_cells(parts, job.plan)
    result = _write(executor, job, anchors, paths, large, channels)
    timings["write"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - started
    cut = sum(int(stitch.load_meta(parts, b.index)["cut"]) for b in job.plan.blocks)
    shutil.rmtree(parts, ignore_errors=True)
    if cut:
        log.warning("%s: %d cell(s) reached the halo's edge and were cut; use a halo above %d",
                    path, cut, job.plan.halo)
    return LargeResult(
        masks=result["masks"], table=result["table"], overlay=result["overlay"],
        n_cells=int(anchors.size), model=decision.model, diameter=decision.diameter,
        route=decision.route, shape=shape, block_size=job.plan.block, halo=job.plan.halo,
        blocks=len(job.plan), resumed=resumed, cut=cut, orphans=result["orphans"],
        timings=timings, block_reports=reports)


# ----------------------------------------------------------------------------- decide


def _decide(path: Path, shape: tuple[int, int], executor: Executor, model: str,
            params: PredictParams, large: LargeParams, channels: int) -> Decision:
    sources = [params.cyto_channel] + ([params.nucleus_channel]
                                       if params.nucleus_channel is not None else [])
    for channel in sources:
        if not 0 <= channel < channels:
            raise InvalidParamsError(
                f"channel {channel} does not exist in {path}, which has {channels} channel(s)")
    with open_image(path) as image:
        sampling = norm.Sampling.of(image.dtype, shape)
    windows = BlockPlan(shape, _HISTOGRAM_WINDOW, 0).blocks
    gathered = list(executor.map(_histogram_task, (str(path), sources, sampling),
                                 [b.core for b in windows]))
    merged = norm.combine(gathered, sampling)
    bounds = tuple(norm.percentiles(m, sampling, *params.percentiles) for m in merged)
    request = (str(path), model, params, bounds, large.style_region)
    (decision,) = executor.map(_decide_task, request, [0])
    return decision


def _histogram_task(get_zoo, shared, window: Window) -> list[np.ndarray]:
    path, sources, sampling = shared
    with open_image(path) as image:
        return norm.gather(image.read(window), window, sources, sampling)


def _decide_task(get_zoo, shared, item: int) -> Decision:
    """Route (``auto``), model and diameter, as the whole-image path decides them: the
    diameter is the size estimate on the central view, normalised with the whole image's
    bounds; the route is the style of the central ``style_region`` at that diameter."""
    one_torch_thread()
    path, model, params, bounds, side = shared
    zoo = get_zoo()
    with open_image(path) as image:
        y, x = image.shape
        top, left = max(0, (y - side) // 2), max(0, (x - side) // 2)
        pixels = image.read(Window(top, min(y, top + side), left, min(x, left + side)))
    route = None
    if model == "auto":
        embedder = zoo.predictor(zoo.router_model)
        diameter = embedder.diameter_for(_stack(pixels, embedder, bounds, params), params)
        crop = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
        style = zoo.style_pass(crop, replace(params, diameter=diameter)).style
        route = zoo.router.route_style(style)
        predictor = zoo.predictor(route.model)
        name = zoo.name(route.model)
    else:
        predictor = zoo.predictor(model)
        diameter = predictor.diameter_for(_stack(pixels, predictor, bounds, params), params)
        name = zoo.name(model)
    config = predictor.model.config
    scale = predictor.model.diam_mean / diameter
    return Decision(name, float(diameter), _input_bounds(bounds, params, config.in_channels),
                    float(scale), int(config.divisor), predictor.flow_params(params, scale),
                    route.to_dict() if route else None)


def _stack(pixels: np.ndarray, predictor, bounds: tuple[tuple[float, float], ...],
           params: PredictParams) -> np.ndarray:
    """``pixels`` as ``predictor``'s normalised input, with the whole image's bounds."""
    from zoo.preprocess import select_channels

    n_in = predictor.model.config.in_channels
    stack = select_channels(pixels, params.cyto_channel, params.nucleus_channel, n_in=n_in)
    return norm.apply(stack, _input_bounds(bounds, params, n_in))


def _input_bounds(bounds: tuple[tuple[float, float], ...], params: PredictParams, n_in: int
                  ) -> tuple[tuple[float, float], ...]:
    """Bounds per network input channel: cytoplasm, then nucleus (a zero channel: 0, 0)."""
    full = [bounds[0]]
    if n_in > 1:
        full.append(bounds[1] if params.nucleus_channel is not None else (0.0, 0.0))
    full.extend((0.0, 0.0) for _ in range(n_in - len(full)))
    return tuple(full)


def _job(path: Path, parts: Path, shape: tuple[int, int], decision: Decision,
         params: PredictParams, large: LargeParams, concurrency: int) -> Job:
    halo = large.halo if large.halo is not None else halo_for(decision.diameter)
    block = large.block_size or block_side(large.max_memory, concurrency=concurrency, halo=halo,
                                           scale=decision.scale, chunk=writer.CHUNK)
    block = min(block, max(shape))
    geometry = Geometry(shape, decision.scale, params.tile_size, params.tile_overlap,
                        decision.divisor)
    given = RegionInput(params.cyto_channel, params.nucleus_channel, len(decision.bounds),
                        decision.bounds, large.tile_batch, params.augment)
    return Job(str(path), str(parts), BlockPlan(shape, block, halo), geometry, given, decision)


# ----------------------------------------------------------------------------- resume


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(asdict(value)))


def _resume_decision(parts: Path, request: dict[str, Any]) -> Decision | None:
    """The decision of an interrupted run of the same request, else None (parts wiped)."""
    saved = parts / _JOB
    if saved.is_file():
        try:
            data = json.loads(saved.read_text())
            if data.get("request") == request:
                return Decision.from_json(data["decision"])
        except (ValueError, KeyError, TypeError):
            pass
        log.info("%s: the input or the request changed; starting over", parts)
    shutil.rmtree(parts, ignore_errors=True)
    return None


def _save_job(parts: Path, request: dict[str, Any], decision: Decision, plan: BlockPlan) -> None:
    saved = parts / _JOB
    plan_json = {"shape": list(plan.shape), "block": plan.block, "halo": plan.halo}
    if saved.is_file() and json.loads(saved.read_text()).get("plan") != plan_json:
        log.info("%s: the block plan changed (memory budget?); segmenting every block again",
                 parts)
        shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True, exist_ok=True)
    staging = parts / f".{_JOB}.tmp"
    staging.write_text(json.dumps({"request": request, "decision": decision.to_json(),
                                   "plan": plan_json}, indent=1))
    os.replace(staging, saved)


# ----------------------------------------------------------------------------- blocks


def _run_blocks(executor: Executor, job: Job, todo: list[int], progress: Progress | None
                ) -> list[dict[str, float]]:
    total = len(job.plan)
    done = total - len(todo)
    if progress:
        progress("blocks", done, total)
    reports = []
    for report in executor.map(_block_task, job, todo):
        reports.append(report)
        done += 1
        if progress:
            progress("blocks", done, total)
    return sorted(reports, key=lambda r: r["index"])


def _block_task(get_zoo, job: Job, index: int) -> dict[str, float]:
    """Segment block ``index`` of ``job`` and save its parts."""
    from zoo.flows import flows_to_masks

    one_torch_thread()
    start = time.perf_counter()
    predictor = get_zoo().predictor(job.decision.model)
    block = job.plan.blocks[index]
    with open_image(job.image) as image:
        flows, cellprob = region_maps(predictor, image, block.outer, job.geometry, job.given)
        network = time.perf_counter() - start
        labels = flows_to_masks(flows, cellprob, job.flow_for(block.outer))
        del flows, cellprob
        masks = time.perf_counter() - start - network
        cells = stitch.resolve(labels, block, job.plan.shape, image.read(block.outer))
    stitch.save(Path(job.parts), index, cells)
    tiles = len(job.geometry.tiles_over(_scaled(job.geometry, block.outer)))
    return {"index": index, "outer_pixels": block.outer.size, "core_pixels": block.core.size,
            "tiles": tiles, "network": network, "masks": masks,
            "seconds": time.perf_counter() - start}


def _scaled(geometry: Geometry, window: Window) -> Window:
    from zoo.large.network import Resampler

    return Resampler(geometry.scaled, geometry.shape).needs(window)


# ----------------------------------------------------------------------------- write


def _write(executor: Executor, job: Job, anchors: np.ndarray, paths: dict[str, Path | None],
           large: LargeParams, channels: int) -> dict[str, Any]:
    parts = Path(job.parts)
    staging = parts / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    dtype = np.uint16 if anchors.size < 2**16 else np.uint32
    np.save(parts / "anchors.npy", anchors)
    masks: Path = paths["masks"]
    staged = staging / masks.name
    orphans: set[tuple[int, int]] = set()
    reader = stitch.LabelReader(parts, job.plan, anchors, dtype)
    if large.fmt == "tiff":
        writer.write_tiff(staged, job.plan.shape, dtype, reader.read)
        orphans |= reader.orphans
    else:
        orphans |= _write_ome_zarr(executor, job, staged, dtype, masks.name)
    written: dict[str, Any] = {"masks": masks, "table": paths["table"], "overlay": paths["overlay"],
                               "orphans": len(orphans)}
    if paths["table"] is not None:
        table = _table(parts, job.plan, anchors, channels)
        writer.write_table(staging / paths["table"].name, table, large.table)
    if paths["overlay"] is not None:
        _overlay(job, reader, staging / paths["overlay"].name)
    for key in ("table", "overlay", "masks"):  # the masks last: they mark the image done
        target = written[key]
        if target is None:
            continue
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / target.name, target)
    return written


def _write_ome_zarr(executor: Executor, job: Job, staged: Path, dtype: np.dtype, name: str
                    ) -> set[tuple[int, int]]:
    levels = writer.create_ome_zarr(staged, job.plan.shape, dtype, name=name.split(".")[0])
    side = max(writer.CHUNK, job.plan.block)
    orphans: set[tuple[int, int]] = set()
    shared = (job, str(staged), np.dtype(dtype).str)
    for found in executor.map(_region_task, shared, writer.regions(job.plan.shape, side)):
        orphans |= found
    for level, shape in enumerate(writer.pyramid(job.plan.shape)[1:levels], start=1):
        list(executor.map(_downsample_task, (str(staged), level), writer.regions(shape, side)))
    return orphans


def _region_task(get_zoo, shared, window: Window) -> set[tuple[int, int]]:
    job, staged, dtype = shared
    parts = Path(job.parts)
    reader = stitch.LabelReader(parts, job.plan, np.load(parts / "anchors.npy"), np.dtype(dtype))
    writer.write_level_region(Path(staged), window, reader.read(window))
    return reader.orphans


def _downsample_task(get_zoo, shared, window: Window) -> None:
    staged, level = shared
    writer.downsample_region(Path(staged), level, window)


def _table(parts: Path, plan: BlockPlan, anchors: np.ndarray, channels: int
           ) -> dict[str, np.ndarray]:
    """One row per cell, sorted by label, from the owners' statistics."""
    owned, stats = [], []
    for block in plan.blocks:
        meta = stitch.load_meta(parts, block.index)
        owned.append(meta["owned"])
        stats.append(meta["stats"].reshape(-1, 7 + channels))
    owned_all = np.concatenate(owned)
    rows = np.concatenate(stats)
    labels = np.searchsorted(anchors, owned_all) + 1
    order = np.argsort(labels, kind="stable")
    labels, rows = labels[order], rows[order]
    area = rows[:, 0]
    columns = {
        "label": labels.astype(np.int64),
        "centroid_y": rows[:, 1] / np.maximum(area, 1),
        "centroid_x": rows[:, 2] / np.maximum(area, 1),
        "area": area.astype(np.int64),
    }
    for i, name in enumerate(stitch.TABLE_COLUMNS[4:]):
        columns[name] = rows[:, 3 + i].astype(np.int64)
    for c in range(channels):
        key = "mean_intensity" if channels == 1 else f"mean_intensity_{c}"
        columns[key] = rows[:, 7 + c] / np.maximum(area, 1)
    return columns


def _overlay(job: Job, reader: stitch.LabelReader, target: Path) -> None:
    from zoo import io, viz

    step = max(1, math.ceil(max(job.plan.shape) / _OVERLAY_SIDE))
    labels = reader.read(job.plan.full, step=step)
    with open_image(job.image) as image:
        pixels = image.read(job.plan.full, step=step)
    io.write_png(target, viz.overlay(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, labels))
