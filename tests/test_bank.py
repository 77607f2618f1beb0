"""``zoo bank build`` (a style bank from reference images, one cluster per model) and
``zoo bank import-cellpose`` (Cellpose 2.x's style_choice.npy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_images import local_zoo_env
from typer.testing import CliRunner

from zoo.bank import build_bank, import_style_choice, load_bank, thumbnail
from zoo.cli.main import app
from zoo.cluster import nearest_other_distances
from zoo.data.synthetic import generate, sample_seed
from zoo.embedding import embed_many
from zoo.errors import ZooError
from zoo.pipeline import Zoo
from zoo.router import Router
from zoo.settings import Settings
from zoo.stylemap import pca_layout

runner = CliRunner()
# model name -> synthetic style of its reference images (all shipped models)
REFS = {"cpnet.nuclei": "nuclei", "cpnet.bacteria": "bacteria", "cpnet.phase": "phase"}
PER_MODEL = 3


def _grey(style: str, index: int, seed: int) -> np.ndarray:
    sample = generate(style, seed=sample_seed(style, index, seed=seed), shape=(160, 160))
    return sample.image[..., 0].astype(np.uint16)


def _ref_dirs(root: Path) -> dict[str, Path]:
    dirs = {}
    for model, style in REFS.items():
        folder = root / model
        folder.mkdir(parents=True)
        for index in range(PER_MODEL):
            tifffile.imwrite(folder / f"{style}_{index}.tif", _grey(style, index, seed=5))
        (folder / "notes.txt").write_text("not an image")
        dirs[model] = folder
    return dirs


@pytest.fixture
def home(tmp_path: Path):
    with local_zoo_env(tmp_path / "home") as path:
        yield path


def test_bank_build_cli_writes_one_cluster_per_model(home: Path, tmp_path: Path):
    dirs = _ref_dirs(tmp_path / "refs")
    out = tmp_path / "bank.safetensors"
    args = ["bank", "build", "--embed", "cpnet.generalist", "--out", str(out)]
    for model, folder in dirs.items():
        args += ["--refs", f"{model}={folder}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    bank = load_bank(out)
    n = len(REFS) * PER_MODEL
    assert bank.names == list(REFS)
    assert bank.specialists == dict(enumerate(REFS))
    assert bank.labels.tolist() == [i for i in range(len(REFS)) for _ in range(PER_MODEL)]
    assert bank.refs[0] == "cpnet.nuclei/nuclei_0.tif" and len(set(bank.refs)) == n
    assert bank.thumbnails.shape == (n, 64, 64, 3) and bank.thumbnails.dtype == np.uint8
    assert bank.map_xy.shape == (n, 2)
    assert bank.embedding == {"model": "cpnet.generalist", "tile": 128, "n_tiles": 4}
    assert np.array_equal(bank.map_xy, pca_layout(bank.vectors))
    assert bank.k == PER_MODEL
    assert bank.ood_threshold == pytest.approx(
        float(np.percentile(nearest_other_distances(bank.vectors), 99)))

    # the bank's styles are the routing style pass of the reference images
    zoo = Zoo(settings=Settings.from_env())
    images = [tifffile.imread(p) for m in REFS for p in sorted(dirs[m].glob("*.tif"))]
    styles, _ = embed_many(zoo.predictor("cpnet.generalist"), images)
    assert np.abs(styles - bank.vectors).max() < 1e-5

    # routing with the bank (ZOO_BANK) embeds a query exactly as the references were: a
    # reference image finds itself (distance 0, its own name first among the neighbours), in
    # its model's cluster, through the same pipeline as --model auto
    routed = Zoo(settings=Settings.from_env(bank=out))
    for model, folder in dirs.items():
        image = tifffile.imread(sorted(folder.glob("*.tif"))[0])
        route = routed.route(image)
        assert route.distance < 1e-3 and not route.ood
        assert route.neighbours[0].ref == f"{model}/{sorted(folder.glob('*.tif'))[0].name}"
        assert bank.names[route.neighbours[0].cluster] == model
        assert route.model in REFS


def test_bank_build_refuses_unknown_models_and_bad_pairs(home: Path, tmp_path: Path):
    dirs = _ref_dirs(tmp_path / "refs")
    base = ["bank", "build", "--embed", "cpnet.generalist", "--out", str(tmp_path / "b.st")]
    result = runner.invoke(app, base + ["--refs", f"nosuchmodel={dirs['cpnet.nuclei']}",
                                        "--refs", f"cpnet.bacteria={dirs['cpnet.bacteria']}"])
    assert result.exit_code == 1 and "unknown model 'nosuchmodel'" in result.output
    result = runner.invoke(app, base + ["--refs", "cpnet.bacteria"])
    assert result.exit_code == 1 and "NAME=VALUE" in result.output
    result = runner.invoke(app, base + ["--refs", f"cpnet.bacteria={tmp_path / 'missing'}",
                                        "--refs", f"cpnet.nuclei={dirs['cpnet.nuclei']}"])
    assert result.exit_code == 1 and "no such folder" in result.output
    assert not (tmp_path / "b.st").exists()


def test_build_bank_needs_two_models():
    with pytest.raises(ZooError, match="2 or more models"):
        build_bank(lambda images: np.eye(2), {"a": ["x.tif"]}, embedding={"model": "m"})


def test_thumbnail():
    image = np.arange(96 * 96, dtype=np.float32).reshape(96, 96)
    thumb = thumbnail(image)
    assert thumb.shape == (64, 64, 3) and thumb.dtype == np.uint8 and thumb.max() == 255


# ---- Cellpose 2.x style_choice.npy ----------------------------------------------------------


def _style_choice(path: Path, rng: np.random.Generator) -> dict:
    """A style_choice.npy as Cellpose 2.x's GUI reads it: np.save of a dict."""
    centres = rng.normal(size=(3, 256))
    labels = np.repeat([0, 2, 3], 6)  # cluster 1 unused: ids are renumbered
    styles = centres[[0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]]
    styles = styles + 0.05 * rng.normal(size=styles.shape)
    styles /= np.linalg.norm(styles, axis=1, keepdims=True)
    data = {"train_styles": styles.astype(np.float32), "leiden_labels": labels,
            "label_models": np.array(["CP", "CPx", "TN1", "LC2"])}
    np.save(path, data)
    return data


def test_import_style_choice(tmp_path: Path):
    data = _style_choice(tmp_path / "style_choice.npy", np.random.default_rng(0))
    bank = import_style_choice(tmp_path / "style_choice.npy", embed_model="cellpose-general",
                               rename={"TN1": "tissuenet"})
    assert bank.names == ["cp", "tissuenet", "lc2"]
    assert bank.specialists == {0: "cp", 1: "tissuenet", 2: "lc2"}
    assert bank.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert bank.k == 5 and bank.embedding["model"] == "cellpose-general"
    assert bank.embedding["cellpose_models"] == ["CP", "TN1", "LC2"]
    # Cellpose's own rule (5 nearest by euclidean distance, majority label) agrees
    router = Router(bank, generalist="cellpose-general")
    query = 0.9 * data["train_styles"][7] + 0.1 * data["train_styles"][8]
    nearest = data["leiden_labels"][np.argsort(((data["train_styles"] - query) ** 2).sum(1))[:5]]
    cellpose_label = np.bincount(nearest).argmax()
    assert router.route_style(query).model == {0: "cp", 2: "tissuenet", 3: "lc2"}[cellpose_label]


def test_bank_import_cellpose_cli(tmp_path: Path):
    _style_choice(tmp_path / "style_choice.npy", np.random.default_rng(1))
    out = tmp_path / "cellpose_bank.safetensors"
    result = runner.invoke(app, ["bank", "import-cellpose", str(tmp_path / "style_choice.npy"),
                                 "--out", str(out), "--rename", "LC2=livecell"])
    assert result.exit_code == 0, result.output
    assert load_bank(out).specialists == {0: "cp", 1: "tn1", 2: "livecell"}


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_STYLE_CHOICE",))


def test_bank_import_cellpose_refuses_code(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "evil.npy", np.array({"train_styles": _Payload()}, dtype=object),
            allow_pickle=True)
    result = runner.invoke(app, ["bank", "import-cellpose", str(tmp_path / "evil.npy"),
                                 "--out", str(tmp_path / "b.safetensors")])
    assert result.exit_code == 1 and result.output.startswith("error: ")
    assert "refusing to load" in result.output
    assert not (tmp_path / "PWNED_BY_STYLE_CHOICE").exists()
    assert not (tmp_path / "b.safetensors").exists()


def test_style_choice_with_inconsistent_labels(tmp_path: Path):
    np.save(tmp_path / "bad.npy", {"train_styles": np.eye(4, 8, dtype=np.float32),
                                   "leiden_labels": np.array([0, 1, 5, 1]),
                                   "label_models": ["a", "b"]})
    with pytest.raises(ZooError, match="label_models"):
        import_style_choice(tmp_path / "bad.npy", embed_model="g")

