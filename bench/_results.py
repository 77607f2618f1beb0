"""Benchmark results as data: each script writes ``bench/results/<name>.json`` through this.

A result file holds what the script printed and where it was measured::

    {
      "schema": 1,
      "benchmark": "net",                       # the file's stem
      "title": "Network forward pass ...",
      "date": "2026-12-02T12:00:00+00:00",      # when the run started
      "command": "python bench/bench_net.py --batches 1 4",
      "commit": "5873831...", "dirty": false,   # the checkout measured (None outside git)
      "seconds": 83.2,                          # the run's wall time
      "machine": {...},                         # zoo.machine.facts() at the start
      "load_average_end": [8.1, 8.4, 7.9],
      "settings": {...},                        # the script's arguments
      "tables": {"main": {"title": ..., "columns": [...], "rows": [{key: value}, ...]}},
      "summary": {...}                          # headline figures (ratios etc.)
    }

Each column is ``{"key", "label", "fmt", "suffix"}``: a row value ``v`` prints as
``format(v, fmt) + suffix`` (``—`` for None), so the printed table, the JSON and the README
table rendered from it (``docs/render.py``) show the same figures. Numbers are stored
unrounded. Stdlib only, so that the cellpose reference venv could import it too.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SCHEMA = 1
MISSING = "—"

if str(ROOT) not in sys.path:  # zoo.machine, when run from a checkout without an install
    sys.path.insert(0, str(ROOT))
from zoo import machine  # noqa: E402


@dataclass(frozen=True)
class Column:
    """One column: ``key`` in the rows, ``label`` in the header, how a value prints."""

    key: str
    label: str
    fmt: str = ""
    suffix: str = ""

    def cell(self, value: Any) -> str:
        """``value`` as printed in this column."""
        return format_value(value, self.fmt, self.suffix)

    @property
    def numeric(self) -> bool:
        return bool(self.fmt) or bool(self.suffix)


def format_value(value: Any, fmt: str = "", suffix: str = "") -> str:
    """``format(value, fmt) + suffix``; None prints as ``—``; a string ignores ``fmt``."""
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    return format(value, fmt) + suffix


@dataclass
class Table:
    """A table a benchmark prints: columns and rows of raw values keyed by column."""

    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    title: str = ""

    def add(self, **values: Any) -> None:
        """Append a row; every key must be a column's."""
        unknown = set(values) - {c.key for c in self.columns}
        if unknown:
            raise KeyError(f"no column(s) {sorted(unknown)} in table {self.title!r}")
        self.rows.append(values)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": [asdict(c) for c in self.columns],
                "rows": self.rows}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Table:
        return cls(columns=[Column(**c) for c in data["columns"]], rows=list(data["rows"]),
                   title=data.get("title", ""))

    def markdown(self, keys: list[str] | None = None) -> str:
        """The table in Markdown, optionally only the columns ``keys`` in that order."""
        by_key = {c.key: c for c in self.columns}
        columns = [by_key[k] for k in keys] if keys else self.columns
        lines = ["| " + " | ".join(c.label for c in columns) + " |",
                 "|" + "|".join("---:" if c.numeric else "---" for c in columns) + "|"]
        for row in self.rows:
            lines.append("| " + " | ".join(c.cell(row.get(c.key)) for c in columns) + " |")
        return "\n".join(lines)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def command_line(argv: list[str] | None = None) -> str:
    """How the script was run, as one would type it from the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        argv[0] = script.relative_to(ROOT).as_posix()
    except ValueError:
        argv[0] = script.name
    return shlex.join(["python", *argv])


class Run:
    """One benchmark run: started when created (date, machine, load), written by ``write``.

    Args:
        name: the benchmark's name; the file is ``bench/results/<name>.json``.
        title: what is measured, in a few words.
        settings: the script's arguments (e.g. ``vars(args)``); kept as JSON.
    """

    def __init__(self, name: str, title: str, settings: dict[str, Any] | None = None) -> None:
        self.name, self.title = name, title
        self.settings = {k: _jsonable(v) for k, v in (settings or {}).items()}
        self.date = machine.now()
        self.machine = machine.facts()
        self.command = command_line()
        self._start = time.perf_counter()

    def record(self, tables: dict[str, Table], summary: dict[str, Any] | None = None
               ) -> dict[str, Any]:
        """The JSON payload of this run with ``tables`` and ``summary``."""
        commit = _git("rev-parse", "HEAD")
        status = _git("status", "--porcelain", "--untracked-files=no")
        # torch and numba may have been imported since the start
        self.machine.update(gpus=machine.facts()["gpus"], threads=machine.threads())
        return {
            "schema": SCHEMA,
            "benchmark": self.name,
            "title": self.title,
            "date": self.date,
            "command": self.command,
            "commit": commit,
            "dirty": None if status is None else bool(status),
            "seconds": round(time.perf_counter() - self._start, 1),
            "machine": self.machine,
            "load_average_end": machine.load_average(),
            "settings": self.settings,
            "tables": {key: table.to_dict() for key, table in tables.items()},
            "summary": summary or {},
        }

    def write(self, tables: dict[str, Table], summary: dict[str, Any] | None = None,
              out_dir: Path = RESULTS_DIR) -> Path:
        """Write ``<out_dir>/<name>.json`` (whole file, then rename); return its path."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.record(tables, summary), indent=1, ensure_ascii=False)
                       + "\n", encoding="utf-8")
        tmp.replace(path)
        print(f"\nwritten: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}",
              file=sys.stderr)
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def load(name: str, results_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    """The result ``<results_dir>/<name>.json``."""
    return json.loads((results_dir / f"{name}.json").read_text(encoding="utf-8"))


def table(result: dict[str, Any], key: str = "main") -> Table:
    """Table ``key`` of a loaded result."""
    return Table.from_dict(result["tables"][key])
