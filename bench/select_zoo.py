"""Choose the zoo's routing settings on the validation split: embedding, clustering, OOD check.

Usage:
    .venv/bin/python bench/select_zoo.py --generalist weights/cpnet.generalist.safetensors

What it does (seed 0 unless told; no test image is ever generated here):

1. The style pass (``zoo.embedding``) of the given generalist (the one ``zoo build --seed 0``
   trains: its training does not depend on any setting chosen here) embeds the training split
   (the style bank's references), the validation split, a 2x upsampled copy and a central crop
   of every validation image, and the train and validation splits of the OOD negatives, once
   per embedding candidate (``EMBEDDINGS``; ``--cache`` keeps the styles).
2. Embedding × clustering (``CLUSTERINGS``): Leiden on the training styles; validation images
   routed by the 5-NN vote; the figures: validation routing accuracy (``zoo.evaluate``'s
   definition, without the OOD check), adjusted Rand index of the clusters against the
   training images' styles, the fraction of upsampled copies and crops routed to the same
   cluster as their original, the cluster count, and the style pass's network pixels over a
   named model's on the validation images (the cost of ``auto``).
3. OOD settings (``OOD_CANDIDATES``) for the chosen embedding and clustering: fitted on the
   bank, the threshold calibrated on validation images and the train and validation
   negatives (``zoo.ood.calibrate_threshold``, as the build does); the AUROC of validation
   images against validation negatives (and against training negatives) and the rates at
   the threshold.

The choice (printed, and in ``docs/protocol/select_zoo.json``): the embedding and clustering
with the highest validation routing accuracy among those with at least one cluster per two
source styles (``MIN_CLUSTERS_PER_STYLE``: fewer clusters raise the accuracy only by merging
styles, down to a zoo of three specialists for ten styles), ties broken by scale
consistency, then adjusted Rand, then cost. The cost (network pixels of ``auto`` over a named
model's) is reported, not filtered on: measured on the 256-pixel validation images it is the
worst case, since the style pass costs a fixed number of pixels whatever the image's size.
The OOD settings: the highest validation AUROC among those whose calibrated threshold meets
both rates (≥ 95% of negatives flagged, ≥ 95% of images in distribution) on validation, else
the highest AUROC.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoo.cluster import ClusterParams, build_style_bank  # noqa: E402
from zoo.data.negatives import negatives  # noqa: E402
from zoo.data.synthetic import STYLES, generate_dataset  # noqa: E402
from zoo.embedding import mean_style, style_crops  # noqa: E402
from zoo.evaluate import sample_params, split_seed, style_clusters  # noqa: E402
from zoo.model import SegmentationModel  # noqa: E402
from zoo.ood import (  # noqa: E402
    OODParams,
    calibrate_threshold,
    calibration_negatives,
    fit_ood,
    roc_curve,
)
from zoo.params import EmbedParams, PredictParams  # noqa: E402
from zoo.predict import Predictor  # noqa: E402
from zoo.preprocess import central_crop, scaled_shape  # noqa: E402
from zoo.router import Router  # noqa: E402
from zoo.settings import Settings  # noqa: E402
from zoo.tiling import plan_tiles  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COST_TARGET = 1.2
MIN_CLUSTERS_PER_STYLE = 0.5
RATE_TARGET = 0.95
EMBEDDINGS = [EmbedParams(128, 1), EmbedParams(128, 4), EmbedParams(192, 1),
              EmbedParams(256, 1), EmbedParams(64, 4)]
CLUSTERINGS = [ClusterParams(n_neighbors=n, resolution=r, whiten=w)
               for n in (10, 20, 30) for r in (0.5, 1.0, 1.5, 2.0) for w in (None, 20, 40)]
OOD_CANDIDATES = [OODParams(method=m, shrinkage=s, k=k)
                  for m, ks in (("mahalanobis", (1,)), ("knn", (1, 5, 10)))
                  for s in (0.01, 0.1, 0.3, 1.0) for k in ks]
OOD_CANDIDATES += [OODParams(method="logistic", shrinkage=s, regularisation=c, max_false_alarms=f)
                   for s in (0.1, 0.3, 1.0) for c in (0.1, 0.3, 1.0, 3.0) for f in (0.02, 0.05)]
#: size-pass reuse tolerances tried with the 256-pixel single crop (the crop that, at the
#: model's scale, sees what the size pass saw)
AT_SCALE = (0.2, 0.35)
NEGATIVE_PARAMS = PredictParams(cyto_channel=0, nucleus_channel=None)
DIAM_MEAN = 17.0


def _key(embed: EmbedParams) -> str:
    return f"{embed.tile}x{embed.n_tiles}"


def embed_split(predictor: Predictor, items: list[tuple[np.ndarray, PredictParams]]) -> dict:
    """Styles per embedding candidate, the size-pass style, diameters and pixel counts."""
    model = predictor.model
    styles = {_key(e): [] for e in EMBEDDINGS}
    size_styles, diameters, named_pixels = [], [], []
    for image, params in items:
        stack = predictor.prepare(image, params)
        diameter = predictor.diameter_for(stack, params)
        view = central_crop(stack, params.style_size)
        _, size_style = predictor.network_maps(view, params)
        size_styles.append(size_style)
        diameters.append(diameter)
        scaled = scaled_shape(stack.shape[1:], model.diam_mean / diameter)
        grid = plan_tiles(scaled, tile=params.tile_size, overlap=params.tile_overlap,
                          divisor=model.config.divisor)
        view_pixels = int(np.prod([-(-s // 8) * 8 for s in view.shape[1:]]))
        named_pixels.append(view_pixels + len(grid.origins) * int(np.prod(grid.tile)))
        for embed in EMBEDDINGS:
            crops = style_crops(stack, model.diam_mean / diameter, embed,
                                divisor=model.config.divisor)
            _, crop_styles = predictor.runner.run(crops)
            styles[_key(embed)].append(mean_style(crop_styles))
    out = {f"style:{k}": np.stack(v) for k, v in styles.items()}
    out.update({"size_style": np.stack(size_styles), "diameter": np.asarray(diameters),
                "named_pixels": np.asarray(named_pixels)})
    return out


def embed_everything(predictor: Predictor, args: argparse.Namespace) -> dict[str, dict]:
    train = generate_dataset(STYLES, args.n_train, seed=split_seed("train", args.seed))
    val = generate_dataset(STYLES, args.n_val, seed=split_seed("validation", args.seed))
    splits = {
        "train": [(s.image, sample_params(s)) for s in train],
        "validation": [(s.image, sample_params(s)) for s in val],
        "validation_up2": [(np.kron(s.image, np.ones((2, 2, 1), s.image.dtype)), sample_params(s))
                           for s in val],
        "validation_crop": [(s.image[64:192, 32:224], sample_params(s)) for s in val],
    }
    for split in ("train", "validation"):
        drawn = negatives(split, per_kind=args.n_negatives, seed=args.seed)
        splits[f"negatives_{split}"] = [(n.image, NEGATIVE_PARAMS) for n in drawn]
    result = {}
    for name, items in splits.items():
        start = time.perf_counter()
        result[name] = embed_split(predictor, items)
        print(f"embedded {name}: {len(items)} images in {time.perf_counter() - start:.0f} s",
              flush=True)
    result["train"]["style_name"] = np.array([s.style for s in train])
    result["validation"]["style_name"] = np.array([s.style for s in val])
    return result


def _routes(bank, styles: np.ndarray) -> np.ndarray:
    return np.array([r.cluster for r in Router(bank, generalist="g").route_styles(styles)])


def styles_of(split: dict, embed: EmbedParams, at_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The styles of a split for an embedding candidate, and which images paid for crops:
    with ``at_scale`` > 0, an image whose estimated diameter is within that relative
    tolerance of the model's takes its size pass's style instead of the crops'."""
    crops = split[f"style:{_key(embed)}"]
    if not at_scale:
        return crops, np.ones(len(crops), bool)
    near = np.abs(np.log(split["diameter"] / DIAM_MEAN)) <= np.log1p(at_scale)
    return np.where(near[:, None], split["size_style"], crops), ~near


def score_routing(data: dict, embed: EmbedParams, cluster: ClusterParams,
                  at_scale: float = 0.0) -> dict:
    from sklearn.metrics import adjusted_rand_score

    train, val = data["train"], data["validation"]
    bank = build_style_bank(styles_of(train, embed, at_scale)[0], train["style_name"].tolist(),
                            cluster)
    allowed = style_clusters(bank)
    val_styles, paid = styles_of(val, embed, at_scale)
    routed = _routes(bank, val_styles)
    correct = np.array([c in allowed[s] for c, s in zip(routed, val["style_name"])])
    same = {name: float(np.mean(
        _routes(bank, styles_of(data[f"validation_{name}"], embed, at_scale)[0]) == routed))
        for name in ("up2", "crop")}
    pixels = embed.n_tiles * int(np.ceil(embed.tile / 8) * 8) ** 2 * paid
    ratio = (val["named_pixels"] + pixels) / val["named_pixels"]
    per_style = {s: float(correct[val["style_name"] == s].mean()) for s in STYLES}
    return {"embed": embed.to_dict(), "at_scale": at_scale, "cluster": asdict(cluster),
            "clusters": bank.n_clusters,
            "accuracy": float(correct.mean()), "per_style": per_style,
            "adjusted_rand": float(adjusted_rand_score(bank.sources, bank.labels)),
            "same_cluster_up2": same["up2"], "same_cluster_crop": same["crop"],
            "pixel_ratio_mean": float(ratio.mean()), "pixel_ratio_max": float(ratio.max())}


def score_ood(data: dict, embed: EmbedParams, cluster: ClusterParams, params: OODParams,
              at_scale: float) -> dict:
    def styles(split: str) -> np.ndarray:
        return styles_of(data[split], embed, at_scale)[0]

    bank = build_style_bank(styles("train"), data["train"]["style_name"].tolist(), cluster)
    model = fit_ood(bank.vectors, bank.labels, params, negatives=styles("negatives_train"))
    inliers = model.score(styles("validation"))
    outliers = model.score(styles("negatives_validation"))
    train_negatives = model.score(styles("negatives_train"))
    threshold = calibrate_threshold(
        inliers, calibration_negatives(params, train_negatives, outliers), params)
    return {"ood": params.to_dict(), "auroc_validation": roc_curve(inliers, outliers).auroc,
            "auroc_train_negatives": roc_curve(inliers, train_negatives).auroc,
            "threshold": threshold,
            "in_distribution": float(np.mean(inliers <= threshold)),
            "flagged": float(np.mean(outliers > threshold))}


def choose_routing(rows: list[dict]) -> dict:
    enough = [r for r in rows if r["clusters"] >= MIN_CLUSTERS_PER_STYLE * len(STYLES)] or rows
    return max(enough, key=lambda r: (
        round(r["accuracy"], 4), round(min(r["same_cluster_up2"], r["same_cluster_crop"]), 4),
        round(r["adjusted_rand"], 4), -r["pixel_ratio_mean"]))


def choose_ood(rows: list[dict]) -> dict:
    meeting = [r for r in rows if r["in_distribution"] >= RATE_TARGET
               and r["flagged"] >= RATE_TARGET] or rows
    return max(meeting, key=lambda r: (round(r["auroc_validation"], 4), r["in_distribution"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generalist", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=48)
    parser.add_argument("--n-val", type=int, default=12)
    parser.add_argument("--n-negatives", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=None, help="npz of the styles (reused)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "protocol" / "select_zoo.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cache is not None and args.cache.is_file():
        flat = dict(np.load(args.cache, allow_pickle=False))
        data: dict[str, dict] = {}
        for key, value in flat.items():
            split, _, name = key.partition("/")
            data.setdefault(split, {})[name] = value
    else:
        predictor = Predictor(SegmentationModel.load(args.generalist), Settings(device="cpu"))
        data = embed_everything(predictor, args)
        if args.cache is not None:
            np.savez(args.cache, **{f"{s}/{k}": v for s, d in data.items() for k, v in d.items()})
    routing = [score_routing(data, e, c) for e in EMBEDDINGS for c in CLUSTERINGS]
    routing += [score_routing(data, EmbedParams(256, 1), c, t) for t in AT_SCALE
                for c in CLUSTERINGS]
    chosen = choose_routing(routing)
    embed, cluster = EmbedParams(**chosen["embed"]), ClusterParams(**chosen["cluster"])
    ood = [score_ood(data, embed, cluster, p, chosen["at_scale"]) for p in OOD_CANDIDATES]
    chosen_ood = choose_ood(ood)
    print(f"{'embedding':>10} {'clustering':>26} {'K':>3} {'val acc':>7} {'ARI':>5} "
          f"{'up2':>5} {'crop':>5} {'pixels':>6}")
    for row in sorted(routing, key=lambda r: -r["accuracy"])[:20]:
        c = row["cluster"]
        print(f"{row['embed']['tile']:>6}x{row['embed']['n_tiles']}{'r' if row['at_scale'] else ' '}"
              f"{row['at_scale'] or '':<4} "
              f"{'n=%s r=%s w=%s' % (c['n_neighbors'], c['resolution'], c['whiten']):>26} "
              f"{row['clusters']:>3} {row['accuracy']:>7.3f} {row['adjusted_rand']:>5.2f} "
              f"{row['same_cluster_up2']:>5.2f} {row['same_cluster_crop']:>5.2f} "
              f"{row['pixel_ratio_mean']:>6.2f}")
    print(f"chosen: {chosen['embed']} {chosen['cluster']} (validation routing accuracy "
          f"{chosen['accuracy']:.3f})")
    for row in sorted(ood, key=lambda r: -r["auroc_validation"]):
        print(f"{row['ood']['method']:>12} shrink {row['ood']['shrinkage']:<5} k {row['ood']['k']:<3}"
              f" C {row['ood']['regularisation']:<4} false alarms ≤ {row['ood']['max_false_alarms']:<4}"
              f" AUROC val {row['auroc_validation']:.4f} train negatives "
              f"{row['auroc_train_negatives']:.4f} | "
              f"in-dist {row['in_distribution']:.3f} flagged {row['flagged']:.3f}")
    print(f"chosen OOD: {chosen_ood['ood']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "select_zoo",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "load_average": os.getloadavg()[0]},
        "splits": {"seed": args.seed, "n_train": args.n_train, "n_val": args.n_val,
                   "n_negatives": args.n_negatives},
        "targets": {"cost": COST_TARGET, "rates": RATE_TARGET},
        "chosen": {"embed": chosen["embed"], "at_scale": chosen["at_scale"],
                   "cluster": chosen["cluster"],
                   "ood": chosen_ood["ood"]},
        "routing": routing, "ood": ood}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
