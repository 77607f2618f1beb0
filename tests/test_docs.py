"""The README and docs tell the truth: every figure is rendered from the data it reports
(bench/results/*.json, docs/zoo.json, models.yaml), and the commands they show exist."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zoo.cli.main import app
from zoo.manifest import load_manifest
from zoo.release import with_zoo_table
from zoo.report import README_SECTIONS, fill_markers, load_report, marked_sections, render_report

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


render = _load("cellzoo_docs_render", ROOT / "docs" / "render.py")
results = sys.modules["_results"]


def test_readme_and_docs_agree_with_the_data():
    """README.md and docs/*.md hold exactly what docs/render.py renders from the data."""
    stale = render.stale(ROOT)
    assert not stale, (f"stale: {[str(p.relative_to(ROOT)) for p in stale]}: run "
                       "`python docs/render.py` (after the benchmark or `zoo build`)")


def test_every_benchmark_result_is_shown_in_the_readme_or_a_docs_page():
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    used = {render.BENCH_SECTIONS[name][0] for page in pages
            for name in marked_sections(page.read_text(encoding="utf-8"))
            if name in render.BENCH_SECTIONS}
    stems = {path.stem for path in RESULTS.glob("*.json")}
    assert stems - {"net_cuda"} <= used, f"results no page shows: {stems - used}"


def test_every_benchmark_script_has_committed_results():
    scripts = {p.stem.removeprefix("bench_") for p in (ROOT / "bench").glob("bench_*.py")}
    stems = {path.stem for path in RESULTS.glob("*.json")}
    missing = {s for s in scripts
               if not any(stem == s or stem.startswith(f"{s}_") for stem in stems)}
    assert not missing, f"run these benchmarks and commit bench/results/: {sorted(missing)}"


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_result_file_has_what_its_tables_need(path: Path):
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["schema"] == results.SCHEMA and data["benchmark"] == path.stem
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", data["date"])
    assert data["command"].startswith(f"python bench/bench_{path.stem.removesuffix('_cuda')}.py")
    machine = data["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu_model"]
    assert isinstance(machine["gpus"], list) and len(machine["load_average"]) == 3
    assert machine["versions"]["torch"] and machine["versions"]["numba"]
    assert data["tables"], "no table"
    for key, table in data["tables"].items():
        keys = [c["key"] for c in table["columns"]]
        assert len(set(keys)) == len(keys) and table["rows"], key
        for row in table["rows"]:
            assert set(row) == set(keys), (key, row)
        parsed = results.Table.from_dict(table)
        assert parsed.markdown().count("\n") == len(table["rows"]) + 1
    for name, (stem, renderer) in render.BENCH_SECTIONS.items():
        if stem == path.stem:
            assert renderer(data).strip(), name


def test_the_zoo_report_page_is_its_data_in_the_template():
    data = load_report(ROOT / "docs" / "zoo.json")
    assert (ROOT / "docs" / "zoo.md").read_text(encoding="utf-8") == render_report(data)
    assert set(data["ap"]["generalist"]) == set(data["ap"]["routed"]) == {*data["styles"], "mean"}
    assert data["routing"]["images"] == data["settings"]["n_test"] * len(data["styles"])
    assert sum(c["training_images"] for c in data["clusters"]) == (
        data["settings"]["n_train"] * len(data["styles"]))


def test_known_limits_name_every_style_where_routing_loses():
    data = load_report(ROOT / "docs" / "zoo.json")
    limits = README_SECTIONS["zoo:limits"](data)
    for style in data["styles"]:
        for t in ("0.5", "0.75", "0.9"):
            routed, general = data["ap"]["routed"][style][t], data["ap"]["generalist"][style][t]
            named = f"{style} AP@{t} {routed:.3f} vs {general:.3f}" in limits
            assert named == (routed < general), (style, t)


def test_user_facing_text_names_papers_not_internal_seed_numbers():
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        assert not re.search(r"seed 0\d\d", page.read_text(encoding="utf-8")), page.name


def test_fill_markers_fills_blocks_and_inline_spans_and_refuses_unknown_names():
    text = ("a <!-- bench:x:start -->old<!-- bench:x:end --> b\n"
            "<!-- zoo:y:start -->\nold\nlines\n<!-- zoo:y:end -->\n<!-- other:z:start -->keep"
            "<!-- other:z:end -->")
    filled = fill_markers(text, {"bench:x": "12×", "zoo:y": "| t |\n"}, kinds=("bench", "zoo"))
    assert filled == ("a <!-- bench:x:start -->12×<!-- bench:x:end --> b\n"
                      "<!-- zoo:y:start -->\n| t |\n<!-- zoo:y:end -->\n"
                      "<!-- other:z:start -->keep<!-- other:z:end -->")
    assert fill_markers(filled, {"bench:x": "12×", "zoo:y": "| t |"},
                        kinds=("bench", "zoo")) == filled
    with pytest.raises(KeyError, match="bench:x"):
        fill_markers(text, {"zoo:y": ""}, kinds=("bench", "zoo"))


@pytest.fixture
def copy_of_docs(tmp_path: Path) -> Path:
    """README.md, docs/ (pages and data), bench/results/ and models.yaml in ``tmp_path``."""
    for name in ("README.md", "models.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "docs").mkdir()
    for path in (ROOT / "docs").glob("*.*"):
        shutil.copy(path, tmp_path / "docs" / path.name)
    shutil.copytree(RESULTS, tmp_path / "bench" / "results")
    return tmp_path


def test_a_figure_edited_by_hand_or_a_changed_result_makes_the_docs_stale(copy_of_docs: Path):
    root = copy_of_docs
    assert render.stale(root) == []
    flows = json.loads((root / "bench" / "results" / "flows.json").read_text())
    flows["tables"]["main"]["rows"][0]["ours_flows_to_masks_s"] *= 2
    (root / "bench" / "results" / "flows.json").write_text(json.dumps(flows))
    assert render.stale(root) == [root / "README.md"]
    (root / "README.md").write_text(render.render(root)[root / "README.md"])
    assert render.stale(root) == []
    zoo_md = root / "docs" / "zoo.md"
    zoo_md.write_text(zoo_md.read_text().replace("| cyto |", "| cyto (edited) |", 1))
    assert render.stale(root) == [zoo_md]


def test_a_marked_section_without_its_data_is_an_error_naming_the_file(copy_of_docs: Path):
    (copy_of_docs / "bench" / "results" / "pull.json").unlink()
    with pytest.raises(KeyError, match=r"bench/results/pull\.json"):
        render.render(copy_of_docs)
    (copy_of_docs / "docs" / "zoo.json").unlink()
    (copy_of_docs / "docs" / "zoo.md").write_text(
        "<!-- zoo:limits:start -->\n<!-- zoo:limits:end -->")
    (copy_of_docs / "bench" / "results" / "pull.json").write_text(
        (RESULTS / "pull.json").read_text())
    with pytest.raises(KeyError, match=r"docs/zoo\.json"):
        render.render(copy_of_docs)


@pytest.mark.skipif(not (ROOT / "models.yaml").is_file(), reason="no shipped zoo")
def test_zoo_table_is_generated_from_models_yaml():
    text = README.read_text(encoding="utf-8")
    expected = with_zoo_table(text, load_manifest(ROOT / "models.yaml"))
    assert text == expected, "README zoo table is stale: run `zoo build` or regenerate it"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    first_block = README.read_text(encoding="utf-8").split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_every_zoo_command_in_the_readme_exists():
    text = README.read_text(encoding="utf-8")
    used = set(re.findall(r"^zoo ([a-z]+)", text, flags=re.MULTILINE))
    assert used, "the README shows no zoo command"
    registered = {c.name or c.callback.__name__ for c in app.registered_commands}
    registered |= {g.name for g in app.registered_groups}  # zoo import ..., zoo export ...
    assert used <= registered, f"README names commands that do not exist: {used - registered}"
    for command in sorted(used):
        assert CliRunner().invoke(app, [command, "--help"]).exit_code == 0


def test_every_option_the_readme_gives_a_zoo_command_exists():
    """Each ``--option`` on a README line that runs ``zoo CMD`` is an option of CMD."""
    import typer.main

    commands = typer.main.get_command(app).commands
    checked = 0
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*(?:\d+\.\s+)?zoo (?:-v )?([a-z]+)\b(.*)", line)
        if not match or match.group(1) not in commands:
            continue
        usage = match.group(2).split("#")[0]
        command = commands[match.group(1)]
        if hasattr(command, "commands"):  # zoo import FORMAT ...: the subcommand's options
            name, _, usage = usage.strip().partition(" ")
            command = command.commands[name]
        options = {o for p in command.params for o in [*p.opts, *p.secondary_opts]}
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", usage):
            assert option in options, f"README: `zoo {match.group(1)}` has no {option}: {line.strip()}"
            checked += 1
    assert checked > 20, f"only {checked} options checked: the README lost its examples?"


def test_every_http_endpoint_in_the_readme_is_served():
    """The endpoints the README's curl examples call are APIs of the service."""
    from zoo.service.app import CellZoo

    text = README.read_text(encoding="utf-8")
    used = set(re.findall(r"localhost:3000/([a-z]+)", text))
    builtin = {"readyz", "livez", "metrics", "docs"}
    mounted = {route.path.strip("/").split("/")[0]  # the web page and its helpers
               for app, _, _ in CellZoo.mount_apps for route in getattr(app, "routes", [])}
    assert {"segment", "route", "models", "ui"} <= used
    served = set(CellZoo.apis) | mounted
    assert used - builtin <= served, used - builtin - served
