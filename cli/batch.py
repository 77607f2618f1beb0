"""The machinery of ``zoo segment``: which images to do, what to write, and the local pipeline.

How the local pipeline works: the main thread reads each image, routes it and runs the
network (``Zoo.infer``); a pool of worker threads turns flows into masks
(``Zoo.finish``, numba without the GIL) and writes the outputs, so the network of
image i+1 overlaps the post-processing of image i. At most ``2 × workers`` images wait in
the pool, so memory stays bounded however many images there are. Results come back in
input order.

Outputs are written into a hidden temporary folder inside OUT and renamed into place, so
an interrupted run never leaves a half-written file that a resumed run would skip.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from zoo.errors import ZooError

#: Errors that fail one image (reported, then the run goes on); anything else is a bug.
IMAGE_ERRORS = (ZooError, OSError, ValueError)
SUMMARY = "summary.csv"


@dataclass(frozen=True)
class Record:
    """One segmented image: a row of ``summary.csv``.

    Attributes:
        image: the input path as given (or as a folder/glob expanded it).
        n_cells: number of cells found.
        model: the model that segmented it.
        cluster: ``id:name`` of the routed style cluster, empty for a named model.
        ood: ``true``/``false`` for a routed image, empty for a named model.
        diameter: the cell diameter used, in pixels.
        seconds: time spent on this image (read, route, network, masks, write).
        note: something the user should know about this image (not a column), e.g. that
            a greyscale image was segmented without the nucleus channel asked for.
    """

    image: str
    n_cells: int
    model: str
    cluster: str
    ood: str
    diameter: float
    seconds: float
    note: str = ""

    @classmethod
    def of(cls, image: Path, *, n_cells: int, model: str, route: dict | None,
           diameter: float, seconds: float, note: str = "") -> Record:
        """The row of ``image``; ``route`` is a ``RouteResult.to_dict()`` or None."""
        cluster = f"{route['cluster']}:{route['cluster_name']}" if route else ""
        ood = ("true" if route["ood"] else "false") if route else ""
        return cls(str(image), int(n_cells), model, cluster, ood,
                   round(float(diameter), 2), round(seconds, 3), note)

    def row(self) -> dict[str, str]:
        """The ``summary.csv`` row: text cells escaped against formula injection."""
        return {name: csv_cell(str(getattr(self, name))) for name in COLUMNS}


COLUMNS = tuple(f.name for f in fields(Record) if f.name != "note")
#: A cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_cell(value: str) -> str:
    """``value`` safe for a spreadsheet: a leading ``= + - @`` (and tab, CR, or the quote
    itself) gets a ``'`` in front, so ``=HYPERLINK(...)`` stays text (``csv_value`` undoes it)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def csv_value(cell: str) -> str:
    """The value ``csv_cell`` escaped."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_FORMULA_START) else cell


@dataclass(frozen=True)
class Failure:
    """An image that could not be segmented, and why (one line)."""

    image: Path
    message: str

    def line(self) -> str:
        """``PATH: message``, without naming the path twice."""
        return self.message if str(self.image) in self.message else f"{self.image}: {self.message}"


Outcome = Record | Failure


@dataclass(frozen=True)
class Outputs:
    """What ``zoo segment`` writes for each image, and where.

    Attributes:
        folder: the output folder (OUT).
        fmt: a key of ``zoo.io.OUTPUT_SUFFIXES``.
        overlay: also write ``<stem>_overlay.png``.
    """

    folder: Path
    fmt: str
    overlay: bool

    def paths(self, stem: str) -> list[Path]:
        """Every file written for an image named ``stem``."""
        from zoo.io import OUTPUT_SUFFIXES

        names = [f"{stem}{OUTPUT_SUFFIXES[self.fmt]}"]
        if self.overlay:
            names.append(f"{stem}_overlay.png")
        return [self.folder / name for name in names]

    def done(self, stem: str) -> bool:
        """Whether every output of ``stem`` already exists (a resumed run skips it)."""
        return all(path.is_file() for path in self.paths(stem))

    def write(self, stem: str, labels: np.ndarray, image: np.ndarray | None) -> None:
        """Write the masks (and the overlay of ``image``), each renamed into place whole."""
        from zoo import io, viz

        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.folder))
        try:
            written = [io.write_segmentation(staging, stem, labels, self.fmt)]
            if self.overlay:
                if image is None:
                    raise ValueError("an overlay needs the image")
                written.append(io.write_png(staging / f"{stem}_overlay.png",
                                            viz.overlay(image, labels)))
            for path in written:
                os.replace(path, self.folder / path.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


@dataclass
class Plan:
    """The images of a run, split into work to do, work already done and clashes."""

    todo: list[Path]
    skipped: list[Path]
    clashes: list[Failure]


def plan(images: Iterable[Path], outputs: Outputs, *, overwrite: bool) -> Plan:
    """Split ``images``: outputs named by file stem; the second image with a stem already
    taken (same name, another folder) is a failure, not a silent overwrite."""
    owners: dict[str, Path] = {}
    result = Plan([], [], [])
    for path in images:
        stem = path.stem
        if stem in owners:
            result.clashes.append(Failure(path, (
                f"its outputs would overwrite those of {owners[stem]} (same file name "
                f"'{stem}'); segment it with another --out")))
            continue
        owners[stem] = path
        (result.todo if overwrite or not outputs.done(stem) else result.skipped).append(path)
    return result


class SummaryError(ZooError):
    """``summary.csv`` could not be written (disk full, folder not writable, ...)."""


class Summary:
    """``summary.csv`` in OUT: rows of earlier runs are kept, rows of this run replace theirs.

    Rows are keyed by file stem (one row per output). Each new row is appended as soon as
    its image is done, so an interrupted run keeps its rows; ``close`` rewrites the file
    sorted by image, atomically (a temporary file renamed over it). Text cells are escaped
    against spreadsheet formulas (``csv_cell``).

    Raises:
        SummaryError: from ``__init__`` or ``close``, when the file cannot be written; no
            temporary file is left behind. A failed append is remembered and the rows are
            kept for ``close``.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / SUMMARY
        self.rows: dict[str, dict[str, str]] = {}
        self._failure: OSError | None = None
        if self.path.is_file():
            try:
                with open(self.path, newline="", encoding="utf-8", errors="replace") as handle:
                    for row in csv.DictReader(handle):
                        if row.get("image"):
                            image = csv_value(row["image"])
                            self.rows[Path(image).stem] = {c: row.get(c) or "" for c in COLUMNS}
            except (OSError, csv.Error) as error:
                raise SummaryError(f"cannot read {self.path}: {error}") from None
        self._rewrite()
        try:
            self._handle = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as error:
            raise SummaryError(f"cannot write {self.path}: {_reason(error)}") from None
        self._writer = csv.DictWriter(self._handle, COLUMNS)

    def add(self, record: Record) -> None:
        row = record.row()
        self.rows[Path(record.image).stem] = row
        if self._failure is not None:
            return
        try:
            self._writer.writerow(row)
            self._handle.flush()
        except OSError as error:
            self._failure = error

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError as error:
            self._failure = self._failure or error
        self._rewrite()

    def _rewrite(self) -> None:
        staging = self.path.with_name(f".{SUMMARY}.tmp")
        try:
            with open(staging, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, COLUMNS)
                writer.writeheader()
                writer.writerows(sorted(self.rows.values(), key=lambda row: row["image"]))
            os.replace(staging, self.path)
        except OSError as error:
            staging.unlink(missing_ok=True)
            raise SummaryError(f"cannot write {self.path}: {_reason(error)}") from None


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def run_bounded(
    items: Iterable[Path],
    prepare: Callable[[Path], Callable[[], Outcome] | Failure],
    *,
    workers: int,
) -> Iterator[Outcome]:
    """``prepare(item)`` in this thread, then the task it returns in a pool of ``workers``.

    Yields outcomes in input order; at most ``2 × workers`` tasks are queued or running.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zoo-segment") as pool:
        pending: deque[Future[Outcome] | Failure] = deque()
        for item in items:
            while pending and (len(pending) >= 2 * workers or _ready(pending[0])):
                yield _result(pending.popleft())
            task = prepare(item)
            pending.append(task if isinstance(task, Failure) else pool.submit(task))
        while pending:
            yield _result(pending.popleft())


def _ready(entry: Future[Outcome] | Failure) -> bool:
    return isinstance(entry, Failure) or entry.done()


def _result(entry: Future[Outcome] | Failure) -> Outcome:
    return entry if isinstance(entry, Failure) else entry.result()


def channels_for(image: np.ndarray, params):
    """``params`` for ``image``, and a note: a nucleus channel asked for on a one-channel
    image is left out (the image is segmented on its one channel) rather than failing it,
    so a folder mixing greyscale and two-channel images goes through."""
    from dataclasses import replace

    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1 and params.cyto_channel == 0 and params.nucleus_channel is not None:
        return (replace(params, nucleus_channel=None),
                f"one channel only: segmented without the nucleus channel "
                f"{params.nucleus_channel}")
    return params, ""


def segment_local(zoo, images: Iterable[Path], *, outputs: Outputs, model: str, params,
                  workers: int) -> Iterator[Outcome]:
    """Segment ``images`` with ``zoo`` (``model`` a name or ``auto``); yields in input order.

    Reading, routing and the network run in the calling thread, flows → masks and writing
    in ``workers`` threads.
    """
    from zoo import io

    def prepare(path: Path) -> Callable[[], Outcome] | Failure:
        start = time.perf_counter()
        try:
            image = io.read_image(path)
            own, note = channels_for(image, params)
            pending = zoo.infer(image, model=model, params=own)
        except IMAGE_ERRORS as error:
            return Failure(path, str(error))
        spent = time.perf_counter() - start

        def finish() -> Outcome:
            start = time.perf_counter()
            try:
                result = zoo.finish(pending)
                outputs.write(path.stem, result.prediction.labels, image)
            except IMAGE_ERRORS as error:
                return Failure(path, str(error))
            return Record.of(path, n_cells=result.prediction.n_cells, model=result.model,
                             route=result.route.to_dict() if result.route else None,
                             diameter=result.prediction.diameter,
                             seconds=spent + time.perf_counter() - start, note=note)

        return finish

    return run_bounded(images, prepare, workers=workers)
