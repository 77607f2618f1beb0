"""The zoo build report as data: report_data → docs/zoo.json → docs/zoo.md and README sections."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from zoo import machine
from zoo.build import EVAL_THRESHOLDS, GENERALIST, BuildConfig, BuildReport, StyleScores
from zoo.cluster import ClusterParams, build_style_bank
from zoo.report import (
    ap_table,
    build_command,
    fill_markers,
    load_report,
    readme_sections,
    render_report,
    report_data,
    split_styles,
    write_report,
)

STYLES = ("cyto", "nuclei", "phase")


def _ap(start: float) -> np.ndarray:
    """AP falling with the IoU threshold, one value per EVAL_THRESHOLDS."""
    return np.linspace(start, start / 4, len(EVAL_THRESHOLDS))


@pytest.fixture(scope="module")
def report() -> BuildReport:
    """A measured build without networks: a real style bank (phase split in two clusters)
    and scores where routing wins on cyto, loses on nuclei at every threshold."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    sources = ["cyto"] * 20 + ["nuclei"] * 20 + ["phase"] * 20
    which = [0] * 20 + [1] * 20 + [2] * 10 + [3] * 10
    styles = centres[which] + 0.05 * rng.normal(size=(60, 16))
    bank = build_style_bank(styles, sources, ClusterParams(n_neighbors=5, resolution=0.5))
    specialists = {c: f"cpnet.{name}" for c, name in enumerate(bank.names)}
    scores = []
    for style, generalist, routed in (("cyto", 0.8, 0.9), ("nuclei", 0.9, 0.85),
                                      ("phase", 0.7, 0.75)):
        scores += [StyleScores(style, "generalist", _ap(generalist)),
                   StyleScores(style, "routed", _ap(routed)),
                   StyleScores(style, "oracle", _ap(routed))]
    return BuildReport(models={}, bank=bank.with_specialists(specialists),
                       specialists=specialists, train_styles={GENERALIST: list(STYLES)},
                       scores=scores, routing_accuracy=0.75,
                       routing_per_style={"cyto": 1.0, "nuclei": 0.5, "phase": 0.75},
                       timings={"train generalist": 120.0, "evaluate": 6.0})


CONFIG = BuildConfig(n_train=20, n_test=4)


def test_report_data_is_json_and_holds_what_the_pages_need(report: BuildReport):
    data = json.loads(json.dumps(report_data(report, CONFIG)))
    assert data["styles"] == list(STYLES)
    assert data["command"] == "zoo build --seed 0 --n-train 20 --n-test 4"
    assert data["ap"]["routed"]["cyto"]["0.75"] == pytest.approx(_ap(0.9)[5], abs=1e-4)
    assert data["ap"]["generalist"]["mean"]["0.5"] == pytest.approx(np.mean([0.8, 0.9, 0.7]))
    assert data["routing"] == {"accuracy": 0.75, "correct": 9, "images": 12,
                               "per_style": {"cyto": 1.0, "nuclei": 0.5, "phase": 0.75}}
    assert sum(c["training_images"] for c in data["clusters"]) == 60
    assert split_styles(data) == {"phase": [c["name"] for c in data["clusters"]
                                            if next(iter(c["sources"])) == "phase"]}
    assert 0 < data["clustering"]["adjusted_rand"] <= 1
    assert data["machine"]["cpu_count"] >= 1
    assert data["settings"]["clustering"]["whiten"] == CONFIG.cluster.whiten
    assert data["settings"]["ood"]["method"] == CONFIG.ood.method and data["settings"]["n_val"] == 12


def test_the_page_and_the_readme_sections_show_the_data(report: BuildReport):
    data = report_data(report, CONFIG)
    page = render_report(data)
    assert ap_table(data) in page and "| nuclei | 0.900 |" in page
    assert "never\n  trained on and are not in the style bank" in page
    assert "routing accuracy" in page and "seen while the settings were chosen" in page
    assert "Phase images form 2 clusters" in page
    sections = readme_sections(data)
    assert "9 of\n12 test images" in sections["zoo:routing"]
    assert "on nuclei the routed specialists score lower" in sections["zoo:routing"]
    limits = sections["zoo:limits"]
    assert limits.count("nuclei AP@") == 3 and "cyto AP@" not in limits


def test_routing_that_never_loses_says_so(report: BuildReport):
    winning = replace(report, scores=[s if s.method != "generalist" else replace(s, ap=s.ap / 2)
                                      for s in report.scores])
    sections = readme_sections(report_data(winning, CONFIG))
    assert sections["zoo:routing"].endswith("on every style.")
    assert "at least as high on every style" in sections["zoo:limits"]


def test_write_report_writes_the_json_the_page_is_rendered_from(report: BuildReport,
                                                               tmp_path: Path):
    data = write_report(report, CONFIG, tmp_path)
    assert load_report(tmp_path / "docs" / "zoo.json") == json.loads(json.dumps(data))
    assert (tmp_path / "docs" / "zoo.md").read_text() == render_report(data)
    assert (tmp_path / "docs" / "figures" / "ap_vs_iou.png").read_bytes()[:4] == b"\x89PNG"
    readme = "x\n<!-- zoo:routing:start -->\n<!-- zoo:routing:end -->\n"
    filled = fill_markers(readme, readme_sections(data), kinds=("zoo",))
    assert "| routed specialists (`--model auto`) |" in filled


def test_load_report_refuses_another_schema(tmp_path: Path):
    path = tmp_path / "zoo.json"
    path.write_text(json.dumps({"schema": 99}))
    with pytest.raises(ValueError, match="schema 99"):
        load_report(path)


def test_build_command_names_only_what_differs_from_the_defaults():
    config = BuildConfig(seed=3)
    assert build_command(config) == "zoo build --seed 3"
    longer = replace(config, generalist=replace(config.generalist, epochs=5))
    assert build_command(longer) == "zoo build --seed 3 --epochs 5"


def test_machine_facts_describe_cpu_gpu_load_and_versions():
    facts = json.loads(json.dumps(machine.facts()))
    assert facts["cpu_count"] >= 1 and facts["versions"]["numpy"]
    line = machine.describe(facts)
    assert f"{facts['cpu_count']} CPUs" in line and ("GPU" in line or facts["gpus"])
