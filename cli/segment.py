"""``zoo segment``: images in, label images (and overlays) out, locally or through a service."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from zoo.cli.app import app, fail
from zoo.cli.batch import Failure, Outcome, Outputs, Record, Summary, SummaryError, plan
from zoo.cli.common import errors_as_one_line, open_zoo
from zoo.cli.large import TABLES, expand, outputs_for, suffixes

FORMATS = tuple(suffixes())


@app.command()
def segment(
    paths: Annotated[list[str], typer.Argument(
        help="Image files, folders (searched recursively) or glob patterns ('data/**/*.tif').",
        show_default=False)],
    model: Annotated[str, typer.Option(
        help="'auto' (route each image), a registry name, or a .safetensors file.")] = "auto",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out"),
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}.")] = "tiff",
    overlay: Annotated[bool, typer.Option(help="Also write <stem>_overlay.png.")] = False,
    diameter: Annotated[float | None, typer.Option(
        help="Cell diameter in pixels (default: estimate).")] = None,
    channels: Annotated[str, typer.Option(
        help="Cytoplasm channel, optionally ',nucleus channel' (e.g. 0,1).")] = "0",
    workers: Annotated[int | None, typer.Option(
        help="Post-processing threads (with --server: concurrent requests); default: CPUs.",
        show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        help="Redo images whose outputs exist (default: skip them).")] = False,
    server: Annotated[str | None, typer.Option(
        help="Send images to the cellzoo service at this URL instead of computing here.",
        show_default=False)] = None,
    backend: Annotated[str | None, typer.Option(
        help="torch or onnx (local only; default: $ZOO_BACKEND, else torch).",
        show_default=False)] = None,
    manifest: Annotated[Path | None, typer.Option(
        help="Use this models.yaml (local only).")] = None,
    bank: Annotated[Path | None, typer.Option(
        help="Route with this style bank (zoo bank build) instead of the zoo's "
             "(local only; default: $ZOO_BANK).", show_default=False)] = None,
    # --- large images and Dask (zoo.cli.large) ---
    dask: Annotated[str | None, typer.Option(
        help="Run on Dask: 'local' starts a LocalCluster of --workers processes; "
             "tcp://host:8786 uses a running cluster.", show_default=False)] = None,
    max_memory: Annotated[str, typer.Option(
        help="Memory per process (here, or each Dask worker). Larger images are segmented "
             "in blocks that fit it.")] = "2GB",
    block_size: Annotated[int | None, typer.Option(
        help="Block side for the block path (default: from --max-memory).",
        show_default=False)] = None,
    table: Annotated[str, typer.Option(
        help=f"Per-cell table of block-path images: {', '.join(TABLES)}.")] = "parquet",
) -> None:
    """Segment images; write <stem>_masks.tif (or --format), overlays and summary.csv into OUT.

    Images whose outputs already exist in OUT are skipped (resume) unless --overwrite.
    Outputs are named by file stem: a second input with a stem already taken fails.
    An unreadable image is reported and skipped; the exit code is 1 if any image failed.

    Images too large for --max-memory whole (and every image with --format ome-zarr) are
    segmented in blocks: a tiled BigTIFF or OME-Zarr, plus <stem>_cells.parquet; a killed
    run resumes with the blocks that are missing. --dask spreads the work over a cluster.
    """
    from zoo.params import PredictParams
    from zoo.preprocess import parse_channels

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    workers = workers if workers is not None else os.cpu_count() or 2
    if workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    if server and dask:
        fail("--server and --dask exclude each other")
    with errors_as_one_line():
        cyto, nucleus = parse_channels(channels)
        params = PredictParams(diameter=diameter, cyto_channel=cyto, nucleus_channel=nucleus)
        large = _large_options(dask, max_memory, block_size, table, backend=backend,
                               manifest=manifest, bank=bank)
    inputs = expand(paths)
    outputs = outputs_for(out, fmt, overlay)
    _check_out(out)
    work = plan(inputs.images, outputs, overwrite=overwrite)
    failures = [Failure(Path(p), "no such file or folder, and no file matches it")
                for p in inputs.unmatched] + work.clashes
    for failure in failures:
        typer.echo(f"error: {failure.line()}", err=True)
    start = time.perf_counter()
    if server:
        from zoo.cli.remote import RemoteParams

        form = RemoteParams(model=model, channels=channels, diameter=diameter)
        outcomes = _remote(server, work.todo, outputs, form, workers=workers)
    else:
        from zoo.cli.large import segment_images

        zoo = _zoo(model, check=bool(work.todo), manifest=manifest, backend=backend, bank=bank)
        outcomes = _one_line(segment_images(work.todo, outputs=outputs, model=model,
                                            params=params, workers=workers, options=large,
                                            zoo=lambda: zoo))
    try:
        records = _collect(outcomes, len(work.todo), out, failures)
    except SummaryError as error:
        fail(f"{error} (the masks that were done are in {out})")
    _report(records, work.skipped, time.perf_counter() - start, out)
    if failures:
        total = len(inputs.images) + len(inputs.unmatched)
        fail(f"{len(failures)} of {total} input(s) failed: "
             f"{', '.join(str(f.image) for f in failures)}")


def _check_out(out: Path) -> None:
    """Fail in one line unless OUT is (or can be made) a folder this run can write into."""
    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f"--out {out}: cannot create the folder ({error.strerror or error})")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        fail(f"--out {out}: cannot write into the folder ({error.strerror or error})")


def _one_line(outcomes: Iterator[Outcome]) -> Iterator[Outcome]:
    """Errors that stop the whole run (a cluster that does not answer) as one line."""
    with errors_as_one_line():
        yield from outcomes


def _large_options(dask, max_memory, block_size, table, **options):
    from zoo.cli.large import parse_options
    from zoo.settings import Settings

    settings = Settings.from_env(**options)
    return parse_options(dask=dask, max_memory=max_memory, block_size=block_size, table=table,
                         settings=settings)


def _zoo(model: str, *, check: bool, **options: object):
    """The local zoo; with ``check``, fail now, in one line, on an unknown model or a zoo
    without a router, rather than once per image."""
    from zoo import jit

    with errors_as_one_line():
        zoo = open_zoo(**options)
        if check and not jit.is_compiled(zoo.settings.home):
            typer.echo("preparing cellzoo's post-processing for this machine "
                       "(first run only: numba compiles it once)…", err=True)
        if check:
            jit.warm_up()  # compiles while the models load and the network runs
        if check and model == "auto":
            zoo.router  # noqa: B018
        elif check:
            zoo.predictor(model)
    return zoo


def _remote(url: str, todo: list[Path], outputs: Outputs, form, *,
            workers: int) -> Iterator[Outcome]:
    """Outcomes from the service at ``url``; fails now when nothing answers there."""
    from zoo.cli.remote import ServiceClient, segment_remote

    client = ServiceClient(url)
    if todo:
        with errors_as_one_line():
            client.check()
    outcomes = segment_remote(client, todo, outputs=outputs, params=form, workers=workers)
    return _closing(outcomes, client)


def _closing(outcomes: Iterator[Outcome], client) -> Iterator[Outcome]:
    try:
        yield from outcomes
    finally:
        client.close()


def _collect(outcomes: Iterator[Outcome], total: int, out: Path,
             failures: list[Failure]) -> list[Record]:
    """Drain ``outcomes`` behind a progress bar; rows go to summary.csv as they arrive."""
    from tqdm import tqdm

    records: list[Record] = []
    if total == 0:
        return records
    summary = Summary(out)
    try:
        with tqdm(total=total, desc="segment", unit="image", file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for outcome in outcomes:
                if isinstance(outcome, Failure):
                    failures.append(outcome)
                    tqdm.write(f"error: {outcome.line()}", file=sys.stderr)
                else:
                    records.append(outcome)
                    summary.add(outcome)
                    if outcome.note:
                        tqdm.write(f"note: {outcome.image}: {outcome.note}", file=sys.stderr)
                bar.update(1)
    finally:
        summary.close()
    return records


def _report(records: list[Record], skipped: list[Path], seconds: float, out: Path) -> None:
    rate = f" ({len(records) / seconds:.2f} images/s)" if records and seconds > 0 else ""
    typer.echo(f"segmented {len(records)} image(s) in {seconds:.1f} s{rate} → {out}")
    if skipped:
        typer.echo(f"{len(skipped)} skipped (already done)")
    for name, count in sorted(Counter(r.model for r in records).items()):
        typer.echo(f"{name}: {count} image{'s' if count != 1 else ''}")
