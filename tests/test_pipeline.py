"""The zoo end to end at toy size: release files → registry → router → segmentation → CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL
from typer.testing import CliRunner

from zoo.build import GENERALIST, NUCLEI, SYNTHETIC_PARAMS, BuildConfig, BuildReport, build_zoo
from zoo.cli.main import app
from zoo.cluster import ClusterParams, build_style_bank
from zoo.data.synthetic import generate, generate_dataset
from zoo.embedding import embed_many
from zoo.errors import UnknownModelError
from zoo.io import read_image
from zoo.manifest import load_manifest
from zoo.model import SegmentationModel
from zoo.pipeline import Zoo
from zoo.predict import Predictor
from zoo.registry import Registry
from zoo.release import write_release
from zoo.report import write_report
from zoo.settings import Settings
from zoo.train import TrainConfig

STYLES = ("nuclei", "phase", "tissue")


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory) -> Path:
    """A released toy zoo: untrained networks, a real style bank over three styles."""
    root = tmp_path_factory.mktemp("zoo")
    samples = generate_dataset(STYLES, 6, seed=0, shape=(64, 64))
    generalist = SegmentationModel.create(SMALL, diam_mean=20.0, seed=0)
    styles, _ = embed_many(Predictor(generalist), (s.image for s in samples), SYNTHETIC_PARAMS)
    bank = build_style_bank(styles, [s.style for s in samples], ClusterParams(n_neighbors=4))
    models = {GENERALIST: generalist, NUCLEI: copy.deepcopy(generalist)}
    specialists = {c: f"cpnet.{name}" for c, name in enumerate(bank.names)}
    models.update({name: copy.deepcopy(generalist) for name in specialists.values()})
    train_styles = {name: list(STYLES) for name in models}
    report = BuildReport(models=models, bank=bank.with_specialists(specialists),
                         specialists=specialists, train_styles=train_styles)
    write_release(report, BuildConfig(n_train=6, shape=(64, 64)), root)
    return root


@pytest.fixture
def zoo(zoo_root: Path, tmp_path: Path) -> Zoo:
    settings = Settings(home=tmp_path / "home", device="cpu")
    return Zoo(Registry.from_path(zoo_root / "models.yaml", settings=settings), settings=settings)


def test_release_writes_a_valid_manifest_with_pinned_files(zoo_root: Path):
    manifest = load_manifest(zoo_root / "models.yaml")
    kinds = {m.name: m.kind for m in manifest.models}
    assert kinds[GENERALIST] == "generalist" and kinds[NUCLEI] == "nuclei"
    assert list(kinds.values()).count("specialist") == len(manifest.models) - 2 >= 1
    generalist = next(m for m in manifest.models if m.name == GENERALIST)
    assert generalist.style_bank == "weights/style_bank.safetensors"
    for entry in manifest.models:
        assert (zoo_root / "weights" / f"{entry.name}.md").is_file()
        for spec in entry.files:
            assert (zoo_root / spec.path).stat().st_size == spec.size


def test_route_picks_a_registered_specialist_with_its_cluster(zoo: Zoo):
    sample = generate("phase", seed=100, shape=(64, 64))
    route = zoo.route(sample.image, SYNTHETIC_PARAMS)
    assert route.model in zoo.registry.names()
    assert 0 < route.confidence <= 1 and route.distance >= 0
    if not route.ood:
        assert route.model == zoo.router.bank.specialists[route.cluster]


def test_auto_segmentation_uses_the_routed_model(zoo: Zoo):
    sample = generate("tissue", seed=101, shape=(64, 64))
    result = zoo.segment(sample.image, params=SYNTHETIC_PARAMS)
    assert result.route is not None and result.model == result.route.model
    assert result.prediction.labels.shape == (64, 64)
    named = zoo.segment(sample.image, model=result.model, params=SYNTHETIC_PARAMS)
    np.testing.assert_array_equal(named.prediction.labels, result.prediction.labels)
    assert named.route is None


def test_unknown_model_raises_with_suggestions(zoo: Zoo):
    with pytest.raises(UnknownModelError, match="cpnet.generalist"):
        zoo.segment(np.zeros((32, 32)), model="cpnet.generalis")


def test_predictors_are_kept_in_a_bounded_lru(zoo_root: Path, tmp_path: Path):
    settings = Settings(home=tmp_path / "home", device="cpu")
    zoo = Zoo(Registry.from_path(zoo_root / "models.yaml", settings=settings),
              settings=settings, max_loaded=1)
    first = zoo.predictor(GENERALIST)
    zoo.predictor(NUCLEI)
    assert zoo.predictor(GENERALIST) is not first


def test_cli_route_and_segment(zoo_root: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    sample = generate("nuclei", seed=102, shape=(64, 64))
    image = tmp_path / "cells.tif"
    import tifffile

    tifffile.imwrite(image, np.moveaxis(sample.image, -1, 0), metadata={"axes": "CYX"})
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00garbage")
    runner = CliRunner()
    manifest = str(zoo_root / "models.yaml")
    routed = runner.invoke(app, ["route", str(image), "--json", "--channels", "0,1", "--manifest", manifest])
    assert routed.exit_code == 0, routed.output
    record = json.loads(routed.stdout.strip().splitlines()[-1])
    assert {"image", "model", "cluster", "confidence", "distance", "ood"} <= set(record)
    out = tmp_path / "out"
    result = runner.invoke(app, ["segment", str(image), str(broken), "--out", str(out), "--overlay",
                                 "--channels", "0,1", "--manifest", manifest])
    assert result.exit_code == 1 and "broken.tif" in result.stderr
    labels = read_image(out / "cells_masks.tif")
    assert labels.shape == (64, 64) and (out / "cells_overlay.png").is_file()


def test_build_zoo_runs_every_step_at_toy_size(tmp_path: Path):
    tiny = TrainConfig(epochs=1, optimizer="adamw", learning_rate=1e-3, warmup_epochs=0, tile=32, batch_size=4)
    config = BuildConfig(n_train=4, n_val=1, n_test=1, n_negatives=1, shape=(48, 48),
                         width=(2, 4, 8, 16, 32), generalist=tiny, specialist=tiny,
                         cluster=ClusterParams(n_neighbors=3))
    report = build_zoo(config, workdir=tmp_path)
    assert list(report.timings) == ["generate data", "train generalist", "styles and clustering",
                                    "train specialists", "OOD calibration", "validation", "test"]
    assert GENERALIST in report.models and NUCLEI in report.models
    # only candidates that beat the generalist on validation serve, and only they ship
    # (besides the nuclei model, kept under its name)
    serving = {s.candidate for s in report.selection if s.serves}
    assert set(report.specialists.values()) == serving
    assert set(report.models) == {GENERALIST, NUCLEI} | serving
    for selection in report.selection:
        if selection.serves:
            assert all(s >= g for s, g in zip(selection.specialist, selection.generalist))
    assert report.bank.ood is not None and report.bank.ood.threshold == report.ood.threshold
    assert len(report.validation.images) == len(report.test.images) == 10
    assert {"generalist", "routed", "oracle"} == {s.method for s in report.scores}
    assert 0 <= report.routing_accuracy <= 1
    summary = report.ood.summary("test")
    assert summary["images"] == 10 and summary["negatives"] == 5
    # the staged zoos were evaluated from their own files, as shipped
    assert (tmp_path / "test" / "models.yaml").is_file()
    assert load_manifest(tmp_path / "test" / "models.yaml").models
    # what `zoo build` writes from it: the report data and the pages rendered from it
    out = tmp_path / "release"
    write_release(report, config, out)
    data = write_report(report, config, out)
    assert data["validation"]["routing"]["images"] == data["routing"]["images"] == 10
    assert [s["cluster"] for s in data["selection"]] == list(range(report.bank.n_clusters))
    page = (out / "docs" / "zoo.md").read_text()
    assert "## Validation: what chose the served models" in page and "OOD ROC" in page
    assert (out / "docs" / "figures" / "ood_roc.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_eval_on_a_cellpose_folder_writes_table_csv_and_plot(zoo_root: Path, tmp_path: Path,
                                                                 monkeypatch):
    import tifffile

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    folder = tmp_path / "data"
    folder.mkdir()
    for index in range(2):
        sample = generate("nuclei", seed=300 + index, shape=(64, 64))
        tifffile.imwrite(folder / f"im{index}_img.tif", sample.image[..., 0])
        tifffile.imwrite(folder / f"im{index}_masks.tif", sample.labels.astype(np.uint16))
    csv_path, plot = tmp_path / "scores.csv", tmp_path / "ap.png"
    result = CliRunner().invoke(app, ["eval", str(folder), "--model", GENERALIST, "--channels", "0",
                                      "--csv", str(csv_path), "--plot", str(plot),
                                      "--manifest", str(zoo_root / "models.yaml")])
    assert result.exit_code == 0, result.output
    assert "| TOTAL |" in result.stdout
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("image,model,ap@0.5") and len(rows) == 4
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
