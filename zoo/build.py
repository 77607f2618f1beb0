"""Build the default zoo from a seed: data → generalist → styles + clusters → specialists
→ nuclei model → evaluation → weights, style bank and report.

Every step is deterministic for ``BuildConfig.seed`` (up to floating-point
non-determinism of multi-threaded CPU kernels). ``build_zoo`` returns a ``BuildReport``
with the per-step timings and the evaluation tables; ``zoo.release`` writes the weights,
``models.yaml`` entries, model cards and the report.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from zoo.cluster import (
    ClusterParams,
    StyleBank,
    build_style_bank,
    centroids_of,
    nearest_other_distances,
    normalize_styles,
)
from zoo.data.synthetic import STYLES, Sample, generate_dataset
from zoo.embedding import embed_many
from zoo.errors import ZooError
from zoo.metrics import aggregate, match_counts
from zoo.model import SegmentationModel
from zoo.nets.cpnet import NetConfig
from zoo.params import EmbedParams, PredictParams
from zoo.predict import Predictor
from zoo.router import Router
from zoo.settings import Settings
from zoo.train import TrainConfig, fit_size_model, train

log = logging.getLogger(__name__)

GENERALIST = "cpnet.generalist"
NUCLEI = "cpnet.nuclei"
EVAL_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
#: Synthetic images carry a (possibly all-zero) nuclear channel at index 1.
SYNTHETIC_PARAMS = PredictParams(cyto_channel=0, nucleus_channel=1)


def sample_params(sample: Sample) -> PredictParams:
    """The prediction parameters of a synthetic sample: its own channels."""
    cyto, nucleus = sample.channels
    return PredictParams(cyto_channel=cyto, nucleus_channel=nucleus)


def _generalist_schedule() -> TrainConfig:
    return TrainConfig(epochs=50, optimizer="adamw", learning_rate=2e-3, weight_decay=1e-4,
                       warmup_epochs=2, anneal_epochs=12, anneal_every=4, tile=96)


def _zoo_clustering() -> ClusterParams:
    # Chosen by adjusted Rand against the training bank's source styles (see ClusterParams
    # and docs/zoo.md, which also says how the held-out test set figured in the choice).
    return ClusterParams(n_neighbors=20, resolution=1.0, whiten=20)


def _specialist_schedule() -> TrainConfig:
    return TrainConfig(epochs=40, optimizer="adamw", learning_rate=5e-4, weight_decay=1e-4,
                       warmup_epochs=1, anneal_epochs=12, anneal_every=4, tile=96)


@dataclass(frozen=True)
class BuildConfig:
    """What the zoo build trains on and how long.

    Attributes:
        seed: base seed of data generation, training and clustering.
        shape: synthetic image shape.
        n_train: training images per style (also the clustering bank).
        n_test: held-out test images per style (never trained on or clustered).
        width: network channels (input, then per level).
        diam_mean: mean cell diameter the networks are trained at.
        nuclei_diam_mean: mean diameter of the nuclei model.
        generalist: generalist training schedule (from scratch).
        specialist: specialist and nuclei schedule (fine-tuned from the generalist).
        cluster: Leiden clustering of the bank's styles.
        embed: how the style pass embeds images (recorded in the bank).
    """

    seed: int = 0
    shape: tuple[int, int] = (256, 256)
    n_train: int = 48
    n_test: int = 12
    width: tuple[int, ...] = (2, 16, 32, 64, 128)
    diam_mean: float = 17.0
    nuclei_diam_mean: float = 17.0
    generalist: TrainConfig = field(default_factory=_generalist_schedule)
    specialist: TrainConfig = field(default_factory=_specialist_schedule)
    cluster: ClusterParams = field(default_factory=_zoo_clustering)
    embed: EmbedParams = field(default_factory=EmbedParams)


@dataclass
class StyleScores:
    """AP per IoU threshold (``EVAL_THRESHOLDS``) of one method on one style's test set."""

    style: str
    method: str
    ap: np.ndarray


@dataclass
class BuildReport:
    """What a build produced and measured."""

    models: dict[str, SegmentationModel]
    bank: StyleBank
    specialists: dict[int, str]
    train_styles: dict[str, list[str]]
    scores: list[StyleScores] = field(default_factory=list)
    routing_accuracy: float = 0.0
    routing_per_style: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    losses: dict[str, list[float]] = field(default_factory=dict)


StepFn = Callable[[str, int, int, float], None]


def _named(base: str, taken: set[str]) -> str:
    name = base if base not in taken else f"{base}-style"
    taken.add(name)
    return name


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings, self.start = timings, time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.timings[step] = now - self.start
        self.start = now


def build_zoo(config: BuildConfig | None = None, *, progress: StepFn | None = None) -> BuildReport:
    """Build the whole default zoo in memory (see the module docstring for the steps).

    Args:
        config: sizes, schedules and seed.
        progress: called as ``progress(step, epoch, epochs, loss)`` after each epoch.
    """
    config = config or BuildConfig()
    timings: dict[str, float] = {}
    clock = _Clock(timings)
    train_set = generate_dataset(STYLES, config.n_train, seed=config.seed, shape=config.shape)
    test_set = generate_dataset(STYLES, config.n_test, seed=config.seed + 1, shape=config.shape)
    clock.lap("generate data")

    generalist = SegmentationModel.create(NetConfig(channels=config.width),
                                          diam_mean=config.diam_mean, seed=config.seed)
    losses = {GENERALIST: _train(generalist, train_set, config.generalist, GENERALIST, progress)}
    clock.lap("train generalist")

    styles, _ = embed_many(Predictor(generalist, Settings(device="cpu")),
                           (s.image for s in train_set), [sample_params(s) for s in train_set],
                           config.embed)
    bank = build_style_bank(styles, [s.style for s in train_set], config.cluster)
    bank = with_references(bank, train_set, config)
    clock.lap("styles and clustering")

    models = {GENERALIST: generalist}
    taken = {GENERALIST, NUCLEI}
    specialists, train_styles = {}, {GENERALIST: list(STYLES)}
    for cluster, cluster_name in enumerate(bank.names):
        members = [s for s, label in zip(train_set, bank.labels) if label == cluster]
        if not any(_trainable(s, config.specialist) for s in members):
            log.info("cluster %s has no trainable image: the generalist serves it", cluster_name)
            continue
        name = _named(f"cpnet.{cluster_name}", taken)
        specialist = _fine_tune(generalist, members, config.specialist, name, progress, losses)
        models[name], specialists[cluster] = specialist, name
        train_styles[name] = sorted({s.style for s in members})
    bank = bank.with_specialists(specialists)
    clock.lap("train specialists")

    nuclei_images = [s for s in train_set if s.style == "nuclei"]
    nuclei = _fine_tune(generalist, nuclei_images, config.specialist, NUCLEI, progress, losses,
                        diam_mean=config.nuclei_diam_mean)
    models[NUCLEI], train_styles[NUCLEI] = nuclei, ["nuclei"]
    clock.lap("train nuclei model")

    report = BuildReport(models=models, bank=bank, specialists=specialists,
                         train_styles=train_styles, timings=timings, losses=losses)
    evaluate_routing(report, test_set, config)
    clock.lap("evaluate")
    return report


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


def reembed_bank(bank: StyleBank, generalist: SegmentationModel, config: BuildConfig) -> StyleBank:
    """The bank's references embedded again with ``config.embed`` (their clusters, names
    and specialists kept): regenerates the training images of ``config``'s seed, so the
    bank of a built zoo follows a change of the embedding without retraining."""
    samples = generate_dataset(STYLES, config.n_train, seed=config.seed, shape=config.shape)
    if [s.style for s in samples] != list(bank.sources):
        raise ZooError("the bank's references are not this build's training images")
    styles, _ = embed_many(Predictor(generalist, Settings(device="cpu")),
                           (s.image for s in samples), [sample_params(s) for s in samples],
                           config.embed)
    vectors = normalize_styles(styles)
    rebuilt = replace(
        bank, vectors=vectors, centroids=centroids_of(vectors, bank.labels, bank.n_clusters),
        ood_threshold=float(np.percentile(nearest_other_distances(vectors), 99)))
    return with_references(rebuilt, samples, config)


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
    *,
    fit_size: bool = True,
) -> list[float]:
    log.info("training %s on %d images", name, len(images))
    callback = None if progress is None else (lambda e, n, loss: progress(name, e, n, loss))
    result = train(model, images, schedule, progress=callback)
    if fit_size:
        fit_size_model(model, images, config=schedule)
    return result.losses


def _fine_tune(
    parent: SegmentationModel,
    images: Sequence[Sample],
    schedule: TrainConfig,
    name: str,
    progress: StepFn | None,
    losses: dict[str, list[float]],
    *,
    diam_mean: float | None = None,
) -> SegmentationModel:
    model = copy.deepcopy(parent)
    if diam_mean is not None:
        model.diam_mean = diam_mean
    losses[name] = _train(model, images, schedule, name, progress)
    return model


def evaluate_routing(report: BuildReport, test_set: Sequence[Sample], config: BuildConfig) -> None:
    """Score generalist, routed specialists and the oracle specialist on the test set.

    The oracle uses the specialist of the cluster that holds most of the image's style
    in the training bank. A route is correct when it picks the specialist of a cluster
    whose training images are mostly of the image's own style (a style may span two
    clusters, and either one's specialist was trained on it); an out-of-distribution
    fallback to the generalist counts as wrong. Routing accuracy is the fraction of
    test images routed correctly.
    """
    predictors = {name: Predictor(model, Settings(device="cpu"))
                  for name, model in report.models.items()}
    router = Router(report.bank, generalist=GENERALIST)
    oracle = _oracle_specialists(report)
    own = _specialists_by_style(report)
    styles, diameters = embed_many(predictors[GENERALIST], (s.image for s in test_set),
                                   [sample_params(s) for s in test_set], config.embed)
    routes = router.route_styles(styles)
    counts: dict[tuple[str, str], list] = {}
    correct: dict[str, list[bool]] = {}
    for sample, route, diameter in zip(test_set, routes, diameters):
        chosen = {"generalist": GENERALIST, "routed": route.model, "oracle": oracle[sample.style]}
        if sample.style == "nuclei" and NUCLEI in predictors:
            chosen["nuclei model"] = NUCLEI
        correct.setdefault(sample.style, []).append(
            not route.ood and route.model in own.get(sample.style, set()))
        cache: dict[tuple[str, bool], np.ndarray] = {}
        for method, name in chosen.items():
            # a routed image is segmented at the style pass's diameter (as Zoo.infer does);
            # a named model estimates its own
            routed = method == "routed"
            if (name, routed) not in cache:
                params = sample_params(sample)
                params = replace(params, diameter=diameter) if routed else params
                cache[name, routed] = predictors[name].predict(sample.image, params).labels
            counts.setdefault((sample.style, method), []).append(
                match_counts(sample.labels, cache[name, method == "routed"], EVAL_THRESHOLDS))
    report.scores = [StyleScores(style, method, aggregate(c).average_precision)
                     for (style, method), c in counts.items()]
    report.routing_per_style = {style: float(np.mean(v)) for style, v in correct.items()}
    report.routing_accuracy = float(np.mean([x for v in correct.values() for x in v]))


def _specialists_by_style(report: BuildReport) -> dict[str, set[str]]:
    """Source style → specialists of the clusters where that style is the majority."""
    bank, sources = report.bank, np.array(report.bank.sources)
    own: dict[str, set[str]] = {}
    for cluster, specialist in report.specialists.items():
        members = sources[bank.labels == cluster]
        if members.size:
            styles, counts = np.unique(members, return_counts=True)
            own.setdefault(str(styles[counts.argmax()]), set()).add(specialist)
    return own


def _oracle_specialists(report: BuildReport) -> dict[str, str]:
    bank = report.bank
    oracle = {}
    for style in sorted(set(bank.sources)):
        labels = bank.labels[np.array(bank.sources) == style]
        cluster = int(np.bincount(labels).argmax())
        oracle[style] = report.specialists.get(cluster, GENERALIST)
    return oracle
