"""bench/_results.py: what a benchmark prints is what its JSON holds and the README shows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("_results", ROOT / "bench" / "_results.py")
results = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("_results", results)
_spec.loader.exec_module(results)


def _table():
    table = results.Table([results.Column("size", "size", "d", "²"),
                           results.Column("ours_s", "ours", ".3f", " s"),
                           results.Column("speedup", "speed-up", ".1f", "×"),
                           results.Column("path", "path")], title="t")
    table.add(size=512, ours_s=0.01934, speedup=47.51, path="onnx")
    table.add(size=2048, ours_s=0.3, speedup=None, path="torch")
    return table


def test_a_table_prints_the_same_before_and_after_json():
    table = _table()
    text = table.markdown()
    assert text.splitlines() == ["| size | ours | speed-up | path |", "|---:|---:|---:|---|",
                                 "| 512² | 0.019 s | 47.5× | onnx |",
                                 "| 2048² | 0.300 s | — | torch |"]
    again = results.Table.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again.markdown() == text
    assert again.markdown(["path", "size"]).splitlines()[2] == "| onnx | 512² |"


def test_a_row_with_an_unknown_column_is_refused():
    with pytest.raises(KeyError, match="seconds"):
        _table().add(size=1, seconds=2.0)


def test_a_run_writes_command_machine_tables_and_summary(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(ROOT / "bench" / "bench_x.py"), "--n", "3"])
    run = results.Run("x", "a test", {"n": 3, "out": tmp_path})
    path = run.write({"main": _table()}, {"ratio": 2.0}, out_dir=tmp_path)
    data = json.loads(path.read_text())
    assert path == tmp_path / "x.json" and not list(tmp_path.glob("*.tmp"))
    assert data["benchmark"] == "x" and data["command"] == "python bench/bench_x.py --n 3"
    assert data["settings"] == {"n": 3, "out": str(tmp_path)}
    assert data["machine"]["cpu_count"] >= 1 and len(data["machine"]["load_average"]) == 3
    assert len(data["load_average_end"]) == 3 and data["seconds"] >= 0
    assert data["commit"] is None or (len(data["commit"]) == 40 and isinstance(data["dirty"], bool))
    assert results.Table.from_dict(data["tables"]["main"]).markdown() == _table().markdown()
    assert data["summary"] == {"ratio": 2.0}
