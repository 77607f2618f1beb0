"""Build the default zoo from a seed, on three disjoint synthetic splits.

Steps (each timed in ``BuildReport.timings``):

1. **generate data**: ``n_train`` training, ``n_val`` validation and ``n_test`` test images
   of every synthetic style (base seeds ``seed``, ``seed + 1``, ``seed + 2``:
   ``zoo.evaluate.split_seed``), and ``n_negatives`` non-microscopy images per kind of each
   of ``zoo.data.negatives``' train, validation and test splits.
2. **train generalist** on the training images (from scratch), with its size regressor.
3. **styles and clustering**: the style pass (``zoo.embedding``) over the training images,
   Leiden clusters (``zoo.cluster``), the bank's references (ids, thumbnails, style map).
4. **train specialists**: one candidate per cluster, fine-tuned from the generalist on the
   cluster's training images.
5. **OOD calibration** (``zoo.ood``): fitted on the bank's styles and the training
   negatives; its threshold is set on validation images and validation negatives.
6. **validation**: the zoo with every candidate, through the product pipeline
   (``Zoo.segment``, ``zoo.evaluate.evaluate_split``). A candidate serves its cluster only
   when it beats the generalist on the validation images routed there (``select``); other
   clusters are served by the generalist and their candidates are not shipped.
7. **test**: the selected zoo on the test images (generalist, routed, oracle) and the OOD
   check on test images and test negatives. Test figures are reported, never used to choose.

The test split never decides anything: every choice (clustering, embedding, OOD settings,
schedules, which model serves each cluster) is made on training or validation data; the
settings explored outside the build are in ``bench/select_zoo.py`` and its results.

Every step is deterministic for ``BuildConfig.seed`` (up to floating-point non-determinism
of multi-threaded CPU kernels).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from zoo.cluster import ClusterParams, StyleBank, build_style_bank
from zoo.data.negatives import Negative, negatives
from zoo.data.synthetic import STYLES, Sample, generate_dataset
from zoo.embedding import embed_many
from zoo.evaluate import (
    CURVE_THRESHOLDS,
    SplitResult,
    evaluate_split,
    home_cluster,
    sample_params,
    split_seed,
)
from zoo.metrics import aggregate
from zoo.model import SegmentationModel
from zoo.nets.cpnet import NetConfig
from zoo.ood import (
    OODParams,
    OODReport,
    calibrate_threshold,
    calibration_negatives,
    fit_ood,
)
from zoo.params import EmbedParams, PredictParams
from zoo.predict import Predictor
from zoo.release import GENERALIST, NUCLEI, write_release
from zoo.settings import Settings
from zoo.train import TrainConfig, fit_size_model, train

log = logging.getLogger(__name__)

__all__ = ["EVAL_THRESHOLDS", "GENERALIST", "NUCLEI", "SYNTHETIC_PARAMS", "BuildConfig",
           "BuildReport", "Selection", "StyleScores", "build_zoo", "sample_params", "select"]

EVAL_THRESHOLDS = CURVE_THRESHOLDS
#: Two-channel synthetic images carry a (possibly all-zero) nuclear channel at index 1.
SYNTHETIC_PARAMS = PredictParams(cyto_channel=0, nucleus_channel=1)
#: What a user passes for a grey or RGB image: the first channel, no nuclear channel.
NEGATIVE_PARAMS = PredictParams(cyto_channel=0, nucleus_channel=None)
#: AP thresholds a specialist must not lose at (``select``).
SELECT_AT = (0.5, 0.75, 0.9)


def _generalist_schedule() -> TrainConfig:
    return TrainConfig(epochs=40, optimizer="adamw", learning_rate=2e-3, weight_decay=1e-4,
                       warmup_epochs=2, anneal_epochs=12, anneal_every=4, tile=96)


def _zoo_clustering() -> ClusterParams:
    # chosen on the training bank and the validation split (bench/select_zoo.py)
    return ClusterParams(n_neighbors=30, resolution=0.5, whiten=40)


def _zoo_ood() -> OODParams:
    # chosen on the validation split (bench/select_zoo.py)
    return OODParams(method="logistic", shrinkage=0.3, regularisation=3.0, max_false_alarms=0.05)


def _specialist_schedule() -> TrainConfig:
    return TrainConfig(epochs=30, optimizer="adamw", learning_rate=5e-4, weight_decay=1e-4,
                       warmup_epochs=1, anneal_epochs=12, anneal_every=4, tile=96)


@dataclass(frozen=True)
class BuildConfig:
    """What the zoo build trains on and how long.

    Attributes:
        seed: base seed of data generation, training and clustering.
        shape: synthetic image shape.
        n_train: training images per style (also the style bank's references).
        n_val: validation images per style (choices only; never trained on).
        n_test: test images per style (reported only).
        n_negatives: non-microscopy images per kind in each negatives split.
        width: network channels (input, then per level).
        diam_mean: mean cell diameter the networks are trained at.
        generalist: generalist training schedule (from scratch).
        specialist: specialist schedule (fine-tuned from the generalist).
        cluster: Leiden clustering of the bank's styles.
        embed: how the style pass embeds images (recorded in the bank).
        ood: the out-of-distribution check's settings.
    """

    seed: int = 0
    shape: tuple[int, int] = (256, 256)
    n_train: int = 48
    n_val: int = 12
    n_test: int = 12
    n_negatives: int = 16
    width: tuple[int, ...] = (2, 16, 32, 64, 128)
    diam_mean: float = 17.0
    generalist: TrainConfig = field(default_factory=_generalist_schedule)
    specialist: TrainConfig = field(default_factory=_specialist_schedule)
    cluster: ClusterParams = field(default_factory=_zoo_clustering)
    embed: EmbedParams = field(default_factory=EmbedParams)
    ood: OODParams = field(default_factory=_zoo_ood)


@dataclass
class StyleScores:
    """AP per IoU threshold (``EVAL_THRESHOLDS``) of one method on one style's test images."""

    style: str
    method: str
    ap: np.ndarray


@dataclass(frozen=True)
class Selection:
    """Which model serves one cluster, and the validation figures that decided it.

    Attributes:
        cluster: the cluster id.
        candidate: the specialist trained for it (None: no trainable image).
        images: validation images routed to the cluster (in distribution).
        generalist: the generalist's pooled AP at ``SELECT_AT`` on those images.
        specialist: the candidate's pooled AP at ``SELECT_AT`` on those images.
        serves: the candidate serves the cluster (else the generalist does).
    """

    cluster: int
    candidate: str | None
    images: int
    generalist: tuple[float, ...]
    specialist: tuple[float, ...]
    serves: bool

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "candidate": self.candidate, "images": self.images,
                "generalist": list(self.generalist), "specialist": list(self.specialist),
                "serves": self.serves}


@dataclass
class BuildReport:
    """What a build produced and measured.

    ``scores``, ``routing_accuracy`` and ``routing_per_style`` are the test split's;
    ``validation`` and ``test`` hold every image's route and counts.
    """

    models: dict[str, SegmentationModel]
    bank: StyleBank
    specialists: dict[int, str]
    train_styles: dict[str, list[str]]
    scores: list[StyleScores] = field(default_factory=list)
    routing_accuracy: float = 0.0
    routing_per_style: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    losses: dict[str, list[float]] = field(default_factory=dict)
    selection: list[Selection] = field(default_factory=list)
    validation: SplitResult | None = None
    test: SplitResult | None = None
    ood: OODReport | None = None


StepFn = Callable[[str, int, int, float], None]


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings, self.start = timings, time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.timings[step] = now - self.start
        self.start = now


@dataclass
class _Data:
    train: list[Sample]
    validation: list[Sample]
    test: list[Sample]
    negatives: dict[str, list[Negative]]


def _generate(config: BuildConfig) -> _Data:
    def split(name: str, n: int) -> list[Sample]:
        return generate_dataset(STYLES, n, seed=split_seed(name, config.seed), shape=config.shape)

    drawn = {name: negatives(name, per_kind=config.n_negatives, shape=config.shape,
                             seed=config.seed)
             for name in ("train", "validation", "test")}
    return _Data(split("train", config.n_train), split("validation", config.n_val),
                 split("test", config.n_test), drawn)


def build_zoo(
    config: BuildConfig | None = None,
    *,
    progress: StepFn | None = None,
    workdir: str | Path | None = None,
    generalist: SegmentationModel | None = None,
) -> BuildReport:
    """Build the whole default zoo (see the module docstring for the steps).

    Args:
        config: sizes, schedules and seed.
        progress: called as ``progress(step, done, total, loss)`` after each training epoch
            (``loss`` the epoch's mean) and each evaluated image (``loss`` NaN).
        workdir: where the staged zoos evaluated on validation and test are written
            (default: a temporary folder, removed afterwards).
        generalist: a generalist to use instead of training one: the one an earlier build
            of the same ``config`` trained (its training depends only on the seed, the
            training split and ``config.generalist``), to redo the later steps alone.
    """
    config = config or BuildConfig()
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="zoo-build-") as tmp:
            return build_zoo(config, progress=progress, workdir=tmp, generalist=generalist)
    workdir = Path(workdir)
    timings: dict[str, float] = {}
    clock = _Clock(timings)
    data = _generate(config)
    clock.lap("generate data")

    if generalist is None:
        generalist = SegmentationModel.create(NetConfig(channels=config.width),
                                              diam_mean=config.diam_mean, seed=config.seed)
        losses = {GENERALIST: _train(generalist, data.train, config.generalist, GENERALIST,
                                     progress)}
    else:
        _check_generalist(generalist, config)
        generalist, losses = copy.deepcopy(generalist), {}
    clock.lap("train generalist")

    embedder = Predictor(generalist, Settings(device="cpu"))
    styles, _ = embed_many(embedder, (s.image for s in data.train),
                           [sample_params(s) for s in data.train], config.embed)
    bank = build_style_bank(styles, [s.style for s in data.train], config.cluster)
    bank = with_references(bank, data.train, config)
    clock.lap("styles and clustering")

    candidates = _train_specialists(generalist, bank, data.train, config, progress, losses)
    models = {GENERALIST: generalist, **{name: m for name, (m, _) in candidates.items()}}
    clock.lap("train specialists")

    bank, ood = calibrate_ood(bank, embedder, data, config)
    clock.lap("OOD calibration")

    by_cluster = {cluster: name for name, (_, cluster) in candidates.items()}
    report = BuildReport(models=models, bank=bank.with_specialists(by_cluster),
                         specialists=by_cluster, train_styles=_train_styles(bank, candidates),
                         timings=timings, losses=losses, ood=ood)
    zoo = _staged(report, config, workdir / "validation")
    report.validation = evaluate_split(zoo, data.validation, split="validation",
                                       generalist=GENERALIST, methods=("generalist", "routed"),
                                       progress=_counter(progress, "validation",
                                                         len(data.validation)))
    report.selection = select(report.validation, by_cluster, bank.n_clusters)
    _serve(report, config)
    clock.lap("validation")

    zoo = _staged(report, config, workdir / "test")
    report.test = evaluate_split(zoo, data.test, split="test", generalist=GENERALIST,
                                 progress=_counter(progress, "test", len(data.test)))
    negative_routes = [zoo.route(n.image, NEGATIVE_PARAMS) for n in data.negatives["test"]]
    ood.record("test", [i.route.ood_score for i in report.test.images],
               [r.ood_score for r in negative_routes], [n.kind for n in data.negatives["test"]])
    _summarise(report)
    clock.lap("test")
    return report


def _check_generalist(model: SegmentationModel, config: BuildConfig) -> None:
    """Refuse a given generalist that this config could not have trained."""
    from zoo.errors import InvalidParamsError

    if tuple(model.config.channels) != tuple(config.width) or model.diam_mean != config.diam_mean:
        raise InvalidParamsError(
            f"the given generalist has channels {tuple(model.config.channels)} and diameter "
            f"{model.diam_mean}, but this build trains channels {tuple(config.width)} at "
            f"diameter {config.diam_mean}")
    if model.size is None:
        raise InvalidParamsError("the given generalist has no size model (zoo build fits one)")


def with_references(bank: StyleBank, samples: Sequence[Sample], config: BuildConfig) -> StyleBank:
    """``bank`` with what people see of its references: ids (``<style>-<index>``), 48-pixel
    false-colour thumbnails, a 2-D style map (t-SNE, fixed seed) and the embedding record."""
    from zoo.viz import composite, embed_2d

    counts: dict[str, int] = {}
    refs = []
    for sample in samples:
        refs.append(f"{sample.style}-{counts.get(sample.style, 0):03d}")
        counts[sample.style] = counts.get(sample.style, 0) + 1
    thumbs = np.stack([_thumbnail(composite(s.image)) for s in samples])
    layout = embed_2d(bank.vectors, np.zeros((0, bank.style_dim)), seed=config.seed)
    return replace(bank, refs=refs, thumbnails=thumbs, map_xy=layout.astype(np.float32),
                   embedding={"model": GENERALIST, **config.embed.to_dict()})


def calibrate_ood(bank: StyleBank, embedder: Predictor, data: _Data, config: BuildConfig
                  ) -> tuple[StyleBank, OODReport]:
    """The bank with its OOD check (``zoo.ood``): fitted on the bank's styles (and, for a
    method that learns from negatives, the training negatives), the threshold calibrated on
    the validation images and the negatives it was not fitted on."""
    def styles(images: Sequence[np.ndarray], params) -> np.ndarray:
        return embed_many(embedder, images, params, config.embed)[0]

    negative_styles = {split: styles([n.image for n in data.negatives[split]], NEGATIVE_PARAMS)
                       for split in ("train", "validation")}
    model = fit_ood(bank.vectors, bank.labels, config.ood, negatives=negative_styles["train"])
    validation = model.score(styles([s.image for s in data.validation],
                                    [sample_params(s) for s in data.validation]))
    negative = {split: model.score(found) for split, found in negative_styles.items()}
    threshold = calibrate_threshold(
        validation, calibration_negatives(config.ood, negative["train"], negative["validation"]),
        config.ood)
    model = model.with_threshold(threshold)
    report = OODReport(threshold, model.params, model.description)
    report.record("validation", validation, negative["validation"],
                  [n.kind for n in data.negatives["validation"]])
    return replace(bank, ood=model), report


def select(result: SplitResult, candidates: dict[int, str], n_clusters: int) -> list[Selection]:
    """Which model serves each cluster, decided on validation.

    A candidate serves its cluster when, pooled over the validation images routed to that
    cluster (in distribution), its AP is at least the generalist's at every threshold of
    ``SELECT_AT`` and higher at one of them. A cluster no validation image was routed to, or
    without a candidate, is served by the generalist.
    """
    index = [EVAL_THRESHOLDS.index(t) for t in SELECT_AT]
    selections = []
    for cluster in range(n_clusters):
        routed = [i for i in result.images if not i.route.ood and i.route.cluster == cluster]
        candidate = candidates.get(cluster)
        if not routed or candidate is None:
            selections.append(Selection(cluster, candidate, len(routed), (), (), False))
            continue
        general = aggregate(i.counts["generalist"] for i in routed).average_precision[index]
        special = aggregate(i.counts["routed"] for i in routed).average_precision[index]
        serves = bool(np.all(special >= general) and np.any(special > general))
        selections.append(Selection(cluster, candidate, len(routed),
                                    tuple(round(float(v), 4) for v in general),
                                    tuple(round(float(v), 4) for v in special), serves))
    return selections


def _serve(report: BuildReport, config: BuildConfig) -> None:
    """Keep the candidates that serve; name the nuclei cluster's one ``cpnet.nuclei``."""
    served = {s.cluster: s.candidate for s in report.selection if s.serves}
    evidence = {s.cluster: {"generalist": list(s.generalist), "specialist": list(s.specialist),
                            "images": s.images, "at": list(SELECT_AT), "serves": s.serves}
                for s in report.selection if s.candidate is not None}
    for cluster, name in report.specialists.items():
        if cluster not in served and name != NUCLEI:
            report.models.pop(name, None)
            report.train_styles.pop(name, None)
    report.specialists = served
    report.bank = replace(report.bank.with_specialists(served), selection=evidence)


def _train_specialists(
    generalist: SegmentationModel,
    bank: StyleBank,
    train_set: Sequence[Sample],
    config: BuildConfig,
    progress: StepFn | None,
    losses: dict[str, list[float]],
) -> dict[str, tuple[SegmentationModel, int]]:
    """One fine-tuned candidate per cluster with a trainable image: name → (model, cluster).

    The candidate of the cluster where most ``nuclei`` references are is ``cpnet.nuclei``."""
    nuclei_home = home_cluster(bank, "nuclei") if "nuclei" in bank.sources else -1
    taken = {GENERALIST, NUCLEI}
    candidates = {}
    for cluster, cluster_name in enumerate(bank.names):
        members = [s for s, label in zip(train_set, bank.labels) if label == cluster]
        if not any(_trainable(s, config.specialist) for s in members):
            log.info("cluster %s has no trainable image: the generalist serves it", cluster_name)
            continue
        name = NUCLEI if cluster == nuclei_home else _named(f"cpnet.{cluster_name}", taken)
        model = copy.deepcopy(generalist)
        losses[name] = _train(model, members, config.specialist, name, progress)
        candidates[name] = (model, cluster)
    return candidates


def _train_styles(bank: StyleBank, candidates: dict[str, tuple[SegmentationModel, int]]
                  ) -> dict[str, list[str]]:
    sources = np.asarray(bank.sources)
    styles = {GENERALIST: sorted(set(bank.sources))}
    for name, (_, cluster) in candidates.items():
        styles[name] = sorted(set(sources[bank.labels == cluster].tolist()))
    return styles


def _staged(report: BuildReport, config: BuildConfig, root: Path):
    """The zoo of ``report`` written under ``root`` (fp16 weights, as shipped) and opened
    through the registry, as a user would."""
    from zoo.pipeline import Zoo
    from zoo.registry import Registry

    write_release(report, config, root)
    settings = Settings(home=root / ".home", device="cpu", offline=True)
    registry = Registry.from_path(root / "models.yaml", settings=settings)
    return Zoo(registry, settings=settings, max_loaded=len(report.models) + 1)


def _summarise(report: BuildReport) -> None:
    test = report.test
    report.scores = [StyleScores(style, method, test.ap(method, style))
                     for style in test.styles for method in test.images[0].counts]
    report.routing_per_style = {style: test.routing_accuracy(style) for style in test.styles}
    report.routing_accuracy = test.routing_accuracy()


def _counter(progress: StepFn | None, step: str, total: int) -> Callable[[], None] | None:
    if progress is None:
        return None
    done = [0]

    def tick() -> None:
        done[0] += 1
        progress(step, done[0], total, float("nan"))

    return tick


def _as_shipped(model: SegmentationModel) -> None:
    """Round the weights through float16 in place, as ``zoo.release`` stores them, so styles
    embedded during the build are those the shipped model computes."""
    with torch.no_grad():
        for tensor in model.net.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


def _named(base: str, taken: set[str]) -> str:
    name = base if base not in taken else f"{base}-style"
    taken.add(name)
    return name


def _thumbnail(rgb: np.ndarray, size: int = 48) -> np.ndarray:
    """``(Y, X, 3)`` float RGB in [0, 1] → ``(size, size, 3)`` uint8 (area-averaged)."""
    from PIL import Image

    picture = Image.fromarray(np.round(rgb * 255).astype(np.uint8))
    return np.asarray(picture.resize((size, size), Image.Resampling.BOX))


def _trainable(sample: Sample, schedule: TrainConfig) -> bool:
    """Whether training keeps ``sample`` (it has at least ``min_rois`` cells)."""
    return len(np.unique(sample.labels)) - 1 >= schedule.min_rois


def _train(
    model: SegmentationModel,
    images: Sequence[Sample],
    schedule: TrainConfig,
    name: str,
    progress: StepFn | None,
) -> list[float]:
    log.info("training %s on %d images", name, len(images))
    callback = None if progress is None else (lambda e, n, loss: progress(name, e, n, loss))
    result = train(model, images, schedule, progress=callback)
    _as_shipped(model)
    fit_size_model(model, images, config=schedule)
    return result.losses
