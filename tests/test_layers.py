"""The package's layers: no import cycles, light modules stay light, arrows point one way.

The import graph is read from the source (every ``import`` and ``from … import``, at module
level or inside functions, except under ``if TYPE_CHECKING:``), with the repository's
``cli/`` and ``service/`` folders named as they install: ``zoo.cli`` and ``zoo.service``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"zoo": "zoo", "cli": "zoo.cli", "service": "zoo.service"}


def _modules() -> dict[str, Path]:
    """Module name → source file, for every module of the installed namespace."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports (resolved to the longest known module name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(node) for guard in ast.walk(tree) if isinstance(guard, ast.If)
               and "TYPE_CHECKING" in ast.unparse(guard.test) for node in ast.walk(guard)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    return {_resolve(t) for t in targets if _resolve(t)} - {name}


def _resolve(target: str) -> str | None:
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _graph() -> dict[str, set[str]]:
    return {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_there_are_no_import_cycles():
    graph = _graph()
    assert "zoo.registry" in graph["zoo.pipeline"] and "zoo.cli.app" in graph["zoo.cli.segment"]
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_its_entry_points_or_their_frameworks():
    for name, path in MODULES.items():
        if name.startswith(("zoo.cli", "zoo.service")):
            continue
        text = path.read_text(encoding="utf-8")
        assert not _imports(name, path) & {m for m in MODULES if m.startswith(("zoo.cli", "zoo.service"))}, name
        for framework in ("bentoml", "typer"):
            assert f"import {framework}" not in text and f"from {framework}" not in text, name


@pytest.mark.parametrize("name", ["zoo", "zoo.params", "zoo.manifest", "zoo.settings",
                                  "zoo.errors", "zoo.files"])
def test_light_modules_load_neither_torch_nor_numba(name):
    probe = (f"import sys, {name}; heavy = sorted(m for m in ('torch', 'numba', 'bentoml') "
             "if m in sys.modules); print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "", f"{name} loads {done.stdout.strip()}"


def test_every_module_imports_alone():
    """Each module imported on its own, with none of cellzoo's other modules loaded before it
    (they are dropped from ``sys.modules`` between imports; third-party packages stay loaded,
    which changes nothing about our import order): an import-order dependency cannot hide."""
    names = sorted(m for m in MODULES if not m.endswith("__main__"))
    probe = """
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "zoo" or m.startswith("zoo.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as error:
        failures[name] = f"{type(error).__name__}: {error}"
print(json.dumps(failures))
"""
    done = subprocess.run([sys.executable, "-c", probe, json.dumps(names)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}
