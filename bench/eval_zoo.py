"""Evaluate a zoo on the build's validation and test splits with the build's protocol.

Usage:
    .venv/bin/python bench/eval_zoo.py --manifest models.yaml --name after
    git archive d242a26 models.yaml weights | tar -x -C /tmp/before
    .venv/bin/python bench/eval_zoo.py --manifest /tmp/before/models.yaml --name before

The images are those of ``zoo build --seed 0`` (``zoo.evaluate.split_seed``: validation seed 1,
test seed 2, 12 per style; the OOD negatives' validation and test splits, 16 per kind), each
segmented through the product pipeline (``Zoo.segment``) by the protocol of
``zoo.evaluate.evaluate_split``: generalist, routed (``auto``) and oracle, AP pooled per
style; routing accuracy; the fraction of images in distribution and of negatives flagged.
Results go to ``docs/protocol/zoo_<name>.json`` (a build's own figures are in ``docs/zoo.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoo.data.negatives import negatives  # noqa: E402
from zoo.data.synthetic import STYLES, generate_dataset  # noqa: E402
from zoo.evaluate import CURVE_THRESHOLDS, evaluate_split, split_seed  # noqa: E402
from zoo.ood import roc_curve  # noqa: E402
from zoo.params import PredictParams  # noqa: E402
from zoo.pipeline import Zoo  # noqa: E402
from zoo.registry import Registry  # noqa: E402
from zoo.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHOWN = (0.5, 0.75, 0.9)
NEGATIVE_PARAMS = PredictParams(cyto_channel=0, nucleus_channel=None)


def split_figures(zoo: Zoo, split: str, args: argparse.Namespace) -> dict:
    n = args.n_val if split == "validation" else args.n_test
    samples = generate_dataset(STYLES, n, seed=split_seed(split, args.seed))
    start = time.perf_counter()
    result = evaluate_split(zoo, samples, split=split, generalist=args.generalist)
    drawn = negatives(split, per_kind=args.n_negatives, seed=args.seed)
    routes = [zoo.route(item.image, NEGATIVE_PARAMS) for item in drawn]
    kinds = np.array([item.kind for item in drawn])
    flagged = np.array([r.ood for r in routes])
    index = [CURVE_THRESHOLDS.index(t) for t in SHOWN]
    methods = list(result.images[0].counts)
    ap = {m: {s: [round(float(v), 4) for v in result.ap(m, s)[index]] for s in result.styles}
          for m in methods}
    for method in methods:
        ap[method]["mean"] = [round(float(v), 4) for v in result.ap(method)[index]]
    inliers = [i.route.ood_score for i in result.images]
    print(f"{split}: {len(samples)} images and {len(drawn)} negatives in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return {
        "thresholds": list(SHOWN), "ap": ap,
        "routing": {"accuracy": result.routing_accuracy(),
                    "per_style": {s: result.routing_accuracy(s) for s in result.styles}},
        "in_distribution": {"all": result.in_distribution(),
                            **{s: result.in_distribution(s) for s in result.styles}},
        "negatives_flagged": {"all": float(flagged.mean()),
                              **{k: float(flagged[kinds == k].mean()) for k in sorted(set(kinds))}},
        "auroc": roc_curve(inliers, [r.ood_score for r in routes]).auroc,
        "models": sorted({i.route.model for i in result.images}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=ROOT / "models.yaml")
    parser.add_argument("--name", required=True, help="results go to docs/protocol/zoo_NAME.json")
    parser.add_argument("--generalist", default="cpnet.generalist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-val", type=int, default=12)
    parser.add_argument("--n-test", type=int, default=12)
    parser.add_argument("--n-negatives", type=int, default=16)
    parser.add_argument("--splits", nargs="+", default=["validation", "test"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--home", type=Path, default=ROOT / ".bench-home")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = Settings.from_env(home=args.home, device="cpu")
    registry = Registry.from_path(args.manifest, settings=settings)
    zoo = Zoo(registry, settings=settings, max_loaded=32)
    figures = {split: split_figures(zoo, split, args) for split in args.splits}
    for split, data in figures.items():
        gen, routed = data["ap"]["generalist"]["mean"], data["ap"]["routed"]["mean"]
        print(f"{split}: routing {data['routing']['accuracy']:.3f}, in distribution "
              f"{data['in_distribution']['all']:.3f}, negatives flagged "
              f"{data['negatives_flagged']['all']:.3f}, AUROC {data['auroc']:.3f}; AP@0.5/0.75/0.9 "
              f"generalist {gen} routed {routed}")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    out = ROOT / "docs" / "protocol" / f"zoo_{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": f"zoo_{args.name}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv), "commit": commit,
        "manifest": str(args.manifest),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "load_average": os.getloadavg()[0]},
        "splits": {"seed": args.seed, "n_val": args.n_val, "n_test": args.n_test,
                   "n_negatives": args.n_negatives},
        **figures}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
