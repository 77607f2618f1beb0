"""``zoo segment`` beyond one image in memory: the block path and Dask.

``segment_images`` is what ``zoo segment`` calls for local work. It sorts the images:

- an image whose whole-image segmentation would not fit ``--max-memory`` (or any image
  with ``--format ome-zarr``) goes through the block path (``zoo.large.segment_large``);
- the others go through the whole-image pipeline, in this process (``segment_local``) or,
  with ``--dask``, one task per image on the cluster's workers, each of which loads the zoo
  once (``ZooPlugin``).

Either way each image yields one ``Record`` or ``Failure``, so ``summary.csv``, resume and
the exit code work as in the serial run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zoo.cli.batch import IMAGE_ERRORS, Failure, Outcome, Outputs, Record
from zoo.cli.common import Inputs, expand_inputs
from zoo.errors import InvalidParamsError, ZooError
from zoo.io import OUTPUT_SUFFIXES

#: Formats only the block path writes (name → suffix).
LARGE_FORMATS = {"ome-zarr": "_masks.ome.zarr"}
#: Formats the block path writes.
BLOCK_FORMATS = ("tiff", "ome-zarr")
TABLES = ("parquet", "csv", "none")


@dataclass(frozen=True)
class LargeOptions:
    """The command's options for large images and Dask.

    Attributes:
        dask: None (this process), ``local`` or a scheduler address.
        max_memory: bytes per process (this one, or each Dask worker).
        block_size: block side, or None to follow ``max_memory``.
        table: ``parquet``, ``csv`` or ``none``.
        settings: the zoo's settings (sent to Dask workers).
    """

    dask: str | None
    max_memory: int
    block_size: int | None
    table: str
    settings: object


@dataclass(frozen=True)
class LargeOutputs(Outputs):
    """``Outputs`` that also knows the block path's OME-Zarr folder."""

    def paths(self, stem: str) -> list[Path]:
        if self.fmt not in LARGE_FORMATS:
            return super().paths(stem)
        names = [f"{stem}{LARGE_FORMATS[self.fmt]}"]
        if self.overlay:
            names.append(f"{stem}_overlay.png")
        return [self.folder / name for name in names]

    def done(self, stem: str) -> bool:
        return all(path.exists() for path in self.paths(stem))


def outputs_for(out: Path, fmt: str, overlay: bool) -> Outputs:
    return LargeOutputs(out, fmt, overlay) if fmt in LARGE_FORMATS else Outputs(out, fmt, overlay)


def expand(arguments: list[str]) -> Inputs:
    """``expand_inputs``, plus zarr folders named directly (they are images, not folders)."""
    from zoo.large.reader import is_zarr

    inputs, seen = Inputs(), set()
    for argument in arguments:
        found = Inputs([Path(argument)]) if is_zarr(argument) else expand_inputs([argument])
        inputs.unmatched.extend(found.unmatched)
        for path in found.images:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                inputs.images.append(path)
    return inputs


def segment_images(
    todo: list[Path],
    *,
    outputs: Outputs,
    model: str,
    params,
    workers: int,
    options: LargeOptions,
    zoo: Callable[[], object],
) -> Iterator[Outcome]:
    """Segment ``todo`` here or on Dask, each image by the path its size calls for.

    Args:
        todo: images to segment.
        outputs: what to write where.
        model: a model name or ``auto``.
        params: ``PredictParams``.
        workers: threads here; with ``--dask local``, worker processes.
        options: large-image and Dask options.
        zoo: builds this process's ``Zoo`` (called only when work runs here).
    """
    small, large, failures = _sort(todo, outputs, options)
    yield from failures
    if options.dask:
        yield from _on_dask(small, large, outputs=outputs, model=model, params=params,
                            workers=workers, options=options)
        return
    if not small and not large:
        return
    local_zoo = zoo()
    if small:
        from zoo.cli.batch import segment_local

        yield from segment_local(local_zoo, small, outputs=outputs, model=model, params=params,
                                 workers=workers)
    if large:
        from zoo.large.executors import ThreadExecutor, torch_threads_pinned

        with torch_threads_pinned():
            executor = ThreadExecutor(local_zoo, workers)
            for path in large:
                yield _block_path(path, executor, outputs, model, params, options)


def _sort(todo: list[Path], outputs: Outputs, options: LargeOptions
          ) -> tuple[list[Path], list[Path], list[Failure]]:
    """Split images into whole-image work, block work and failures (unreadable headers,
    large images in a format the block path does not write)."""
    from zoo.large.blocks import format_bytes, whole_image_limit
    from zoo.large.reader import image_pixels, is_zarr

    limit = whole_image_limit(options.max_memory)
    small, large, failures = [], [], []
    for path in todo:
        if outputs.fmt in LARGE_FORMATS:
            large.append(path)
            continue
        try:
            pixels = image_pixels(path)
        except IMAGE_ERRORS as error:
            failures.append(Failure(path, str(error)))
            continue
        if pixels <= limit and not is_zarr(path):
            small.append(path)
        elif outputs.fmt in BLOCK_FORMATS:
            large.append(path)
        else:
            failures.append(Failure(path, (
                f"{pixels} pixels do not fit --max-memory {format_bytes(options.max_memory)} "
                f"whole (limit {limit}); large images are written as --format "
                f"{' or '.join(BLOCK_FORMATS)}")))
    return small, large, failures


def _large_params(outputs: Outputs, options: LargeOptions):
    from zoo.large.engine import LargeParams

    return LargeParams(max_memory=options.max_memory, block_size=options.block_size,
                       fmt=outputs.fmt, overlay=outputs.overlay,
                       table=None if options.table == "none" else options.table)


def _block_path(path: Path, executor, outputs: Outputs, model: str, params,
                options: LargeOptions) -> Outcome:
    """One image through the block path, with a progress bar of its blocks."""
    from tqdm import tqdm

    from zoo.large.engine import segment_large

    start = time.perf_counter()
    bar = tqdm(desc=f"{path.name} blocks", unit="block", file=sys.stderr, leave=False,
               dynamic_ncols=True, position=1)

    def progress(stage: str, done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        result = segment_large(path, outputs.folder, executor=executor, model=model,
                               params=params, large=_large_params(outputs, options),
                               progress=progress)
    except IMAGE_ERRORS as error:
        return Failure(path, str(error))
    finally:
        bar.close()
    return Record.of(path, n_cells=result.n_cells, model=result.model, route=result.route,
                     diameter=result.diameter, seconds=time.perf_counter() - start)


def _on_dask(small: list[Path], large: list[Path], *, outputs: Outputs, model: str, params,
             workers: int, options: LargeOptions) -> Iterator[Outcome]:
    """Small images as one task each, then large ones block by block, on one cluster."""
    import logging

    if not small and not large:
        return
    try:
        from zoo.large.distributed import DaskExecutor, as_completed, connect
    except ImportError as error:
        raise ZooError(f"--dask needs dask.distributed ({error}): "
                       "pip install 'cellzoo[dask]'") from error
    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # quiet unless --verbose
        logging.getLogger("distributed").setLevel(logging.WARNING)
    with connect(options.dask, settings=options.settings, workers=workers) as client:
        futures = client.map(_image_task, small, outputs=outputs, model=model, params=params,
                             settings=options.settings, pure=False)
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            client.cancel(futures)
        executor = DaskExecutor(client, options.settings)
        for path in large:
            yield _block_path(path, executor, outputs, model, params, options)


def _image_task(path: Path, *, outputs: Outputs, model: str, params, settings) -> Outcome:
    """One whole image on a Dask worker: read, route, segment, write (as the serial run)."""
    from zoo import io
    from zoo.large.distributed import worker_zoo

    start = time.perf_counter()
    try:
        image = io.read_image(path)
        result = worker_zoo(settings).segment(image, model=model, params=params)
        outputs.write(path.stem, result.prediction.labels, image)
    except IMAGE_ERRORS as error:
        return Failure(path, str(error))
    return Record.of(path, n_cells=result.prediction.n_cells, model=result.model,
                     route=result.route.to_dict() if result.route else None,
                     diameter=result.prediction.diameter, seconds=time.perf_counter() - start)


def parse_options(*, dask: str | None, max_memory: str, block_size: int | None, table: str,
                  settings) -> LargeOptions:
    """Validate the command's large-image options (raises ``InvalidParamsError``)."""
    from zoo.large.blocks import parse_memory

    if table not in TABLES:
        raise InvalidParamsError(f"--table must be one of {', '.join(TABLES)}, got {table!r}")
    if block_size is not None and block_size < 16:
        raise InvalidParamsError(f"--block-size must be >= 16, got {block_size}")
    if dask is not None and dask != "local" and "://" not in dask:
        raise InvalidParamsError(
            f"--dask must be 'local' or a scheduler address like tcp://host:8786, got {dask!r}")
    return LargeOptions(dask, parse_memory(max_memory), block_size, table, settings)


def suffixes() -> dict[str, str]:
    """Every ``--format`` and the suffix of its masks."""
    return {**OUTPUT_SUFFIXES, **LARGE_FORMATS}
