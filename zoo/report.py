"""The zoo build report: its data (``docs/zoo.json``) and the pages rendered from that data.

``zoo build`` measures the zoo it trained (AP per style and method, routing accuracy, the
clusters, step timings). ``report_data`` turns that into a JSON-able dictionary;
``write_report`` writes it as ``docs/zoo.json`` together with ``docs/zoo.md``
(``render_report``: the data in a fixed template) and the AP-vs-IoU plot. The README's
figures about the zoo come from the same data (``readme_sections``), filled between
``<!-- zoo:NAME:start -->`` and ``<!-- zoo:NAME:end -->`` markers (``fill_markers``), so the
text cannot drift from the build that produced it.

The data, schema 2::

    date, command, machine (zoo.machine.facts() when the report was written)
    settings    seed, n_train, n_val, n_test, n_negatives, shape, width, diam_mean, embed,
                clustering, ood, select_at, schedules
    styles      the synthetic styles, sorted
    thresholds  the IoU thresholds of "ap", as strings ("0.5", "0.75", ...)
    ap          the test split's AP: method → style (and "mean") → threshold → AP
    routing     the test split's routing: accuracy, correct, images, per_style
    validation  optional: the validation split's {ap, routing} (same shapes; generalist and
                routed with every candidate specialist)
    selection   optional: [{cluster, name, candidate, images, at, generalist, specialist,
                serves}]: which model serves each cluster, decided on validation
    ood         optional: the OOD check (``zoo.ood.OODReport.to_dict``): threshold, score,
                and per split its AUROC, rates at the threshold and ROC points
    clusters    [{id, name, specialist, training_images, sources: {style: count}}]
    clustering  adjusted_rand (clusters against source styles)
    timings_s   build step → seconds
    zoo_eval_reproduces  whether ``zoo eval synthetic`` draws this build's test images
    notes       optional: {"timings": text} (what the figures alone do not say)
    provenance  optional: where the data came from when not written by the build, and
                what changed in the zoo since
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo import machine

if TYPE_CHECKING:
    from collections.abc import Sequence

    from zoo.build import BuildConfig, BuildReport
    from zoo.cluster import StyleBank
    from zoo.evaluate import SplitResult

SCHEMA = 2
METHODS = ("generalist", "routed", "oracle")
SHOWN = ("0.5", "0.75", "0.9")
REPORT_JSON, REPORT_MD = "docs/zoo.json", "docs/zoo.md"
AP_PLOT, ROC_PLOT = "docs/figures/ap_vs_iou.png", "docs/figures/ood_roc.png"
MARKER = re.compile(r"<!-- (?P<name>(?P<kind>[a-z]+):[\w.-]+):start -->(?P<body>.*?)"
                    r"<!-- (?P=name):end -->", re.DOTALL)


# ---- data ------------------------------------------------------------------------------------

def report_data(report: BuildReport, config: BuildConfig) -> dict[str, Any]:
    """The build's measurements as a JSON-able dictionary (schema in the module docstring)."""
    from zoo.build import EVAL_THRESHOLDS, SELECT_AT

    styles = sorted({s.style for s in report.scores})
    ap: dict[str, dict[str, dict[str, float]]] = {}
    for score in report.scores:
        ap.setdefault(score.method, {})[score.style] = _by_threshold(EVAL_THRESHOLDS, score.ap)
    _add_means(ap, styles)
    per_style = {s: report.routing_per_style.get(s, 0.0) for s in styles}
    if report.test is not None:
        correct, images = sum(i.correct for i in report.test.images), len(report.test.images)
    else:
        correct = int(round(sum(per_style.values()) * config.n_test))
        images = config.n_test * len(styles)
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "date": machine.now(),
        "command": build_command(config),
        "machine": {**machine.facts(), "threads": machine.threads()},
        "settings": _settings(config),
        "styles": styles,
        "thresholds": [f"{t:g}" for t in EVAL_THRESHOLDS],
        "ap": ap,
        "routing": {"accuracy": report.routing_accuracy, "correct": correct,
                    "images": images, "per_style": per_style},
        "clusters": clusters_of(report.bank),
        "clustering": {"adjusted_rand": adjusted_rand(report.bank)},
        "timings_s": {step: round(seconds, 1) for step, seconds in report.timings.items()},
        # `zoo eval synthetic` draws the test split of `zoo build --seed 0`, 12 per style
        "zoo_eval_reproduces": (config.seed, config.n_test) == (0, 12),
    }
    if report.validation is not None:
        data["validation"] = split_data(report.validation)
    if report.selection:
        data["selection"] = [{**s.to_dict(), "name": report.bank.names[s.cluster],
                              "at": [f"{t:g}" for t in SELECT_AT]} for s in report.selection]
    if report.ood is not None:
        data["ood"] = report.ood.to_dict()
    return data


def split_data(result: SplitResult) -> dict[str, Any]:
    """One evaluated split (``zoo.evaluate.SplitResult``): its AP table and routing."""
    from zoo.build import EVAL_THRESHOLDS

    methods = list(result.images[0].counts) if result.images else []
    ap = {m: {s: _by_threshold(EVAL_THRESHOLDS, result.ap(m, s)) for s in result.styles}
          for m in methods}
    _add_means(ap, result.styles)
    return {"ap": ap,
            "routing": {"accuracy": result.routing_accuracy(),
                        "correct": int(sum(i.correct for i in result.images)),
                        "images": len(result.images),
                        "per_style": {s: result.routing_accuracy(s) for s in result.styles}},
            "in_distribution": result.in_distribution()}


def _add_means(ap: dict[str, dict[str, dict[str, float]]], styles: Sequence[str]) -> None:
    for by_style in ap.values():
        if set(by_style) == set(styles) and styles:
            thresholds = list(by_style[styles[0]])
            mean = np.mean([[by_style[s][t] for t in thresholds] for s in styles], axis=0)
            by_style["mean"] = {t: round(float(v), 4) for t, v in zip(thresholds, mean)}


def _by_threshold(thresholds: Sequence[float], values: Sequence[float]) -> dict[str, float]:
    return {f"{t:g}": round(float(v), 4) for t, v in zip(thresholds, values)}


def _settings(config: BuildConfig) -> dict[str, Any]:
    from zoo.build import SELECT_AT

    return {"seed": config.seed, "n_train": config.n_train, "n_val": config.n_val,
            "n_test": config.n_test, "n_negatives": config.n_negatives,
            "ood": config.ood.to_dict(), "select_at": [f"{t:g}" for t in SELECT_AT],
            "shape": list(config.shape), "width": list(config.width),
            "diam_mean": config.diam_mean,
            "embed": config.embed.to_dict(), "clustering": asdict(config.cluster),
            "generalist_schedule": _jsonable(asdict(config.generalist)),
            "specialist_schedule": _jsonable(asdict(config.specialist))}


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def build_command(config: BuildConfig) -> str:
    """The ``zoo build`` command line that gives ``config``."""
    from zoo.build import BuildConfig

    default = BuildConfig()
    words = ["zoo build", f"--seed {config.seed}"]
    for name, option in (("n_train", "--n-train"), ("n_val", "--n-val"), ("n_test", "--n-test"),
                         ("n_negatives", "--n-negatives")):
        if getattr(config, name) != getattr(default, name):
            words.append(f"{option} {getattr(config, name)}")
    if config.generalist.epochs != default.generalist.epochs:
        words.append(f"--epochs {config.generalist.epochs}")
    if config.specialist.epochs != default.specialist.epochs:
        words.append(f"--specialist-epochs {config.specialist.epochs}")
    return " ".join(words)


def clusters_of(bank: StyleBank) -> list[dict[str, Any]]:
    """Each cluster of a ``StyleBank``: id, name, specialist, size and source styles."""
    sources = np.array(bank.sources)
    rows = []
    for cid, name in enumerate(bank.names):
        members = sources[bank.labels == cid]
        styles, counts = np.unique(members, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        rows.append({"id": cid, "name": name, "specialist": bank.specialists.get(cid),
                     "training_images": int(members.size),
                     "sources": {str(styles[i]): int(counts[i]) for i in order}})
    return rows


def adjusted_rand(bank: StyleBank) -> float:
    """Adjusted Rand index of the bank's clusters against its vectors' source styles."""
    from sklearn.metrics import adjusted_rand_score

    return round(float(adjusted_rand_score(bank.sources, bank.labels)), 4)


def load_report(path: str | Path) -> dict[str, Any]:
    """Read ``docs/zoo.json``; raises ValueError naming the file on an unknown schema."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: report schema {data.get('schema')!r}, expected {SCHEMA}")
    return data


def write_report(report: BuildReport, config: BuildConfig, root: Path, *,
                 generalist_from: Path | None = None) -> dict[str, Any]:
    """Write ``docs/zoo.json``, ``docs/zoo.md`` and the AP plot under ``root``; return the data.

    ``generalist_from``: the generalist was reused from that file (``zoo build --generalist``);
    the report says so, with the training time an earlier report under ``root`` recorded.
    """
    from zoo.build import EVAL_THRESHOLDS
    from zoo.viz import plot_ap_curves

    data = report_data(report, config)
    if generalist_from is not None:
        data["command"] += f" --generalist {generalist_from}"
        data.setdefault("notes", {})["timings"] = _reuse_note(root / REPORT_JSON)
    curves = {method: (EVAL_THRESHOLDS,
                       np.mean([s.ap for s in report.scores if s.method == method], axis=0))
              for method in METHODS}
    plot_ap_curves(curves, root / AP_PLOT, title="Held-out synthetic test images, all styles")
    if "ood" in data:
        plot_roc(data["ood"], root / ROC_PLOT)
    (root / REPORT_JSON).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    (root / REPORT_MD).write_text(render_report(data), encoding="utf-8")
    return data


def _reuse_note(previous: Path) -> str:
    note = ("The generalist was not trained by this run: it was reused (`--generalist`) from an "
            "earlier run of the same command with the same seed and sizes, whose later steps "
            "this run redid")
    try:
        earlier = json.loads(previous.read_text(encoding="utf-8"))
        minutes = earlier["timings_s"]["train generalist"] / 60
    except (OSError, ValueError, KeyError):
        return note + "."
    return note + f"; that run trained it in {minutes:.1f} minutes."


def plot_roc(ood: Mapping[str, Any], path: Path) -> Path:
    """The OOD check's ROC per split, with its threshold marked (``data["ood"]``)."""
    from zoo.viz import plot_roc as draw

    splits = [split for split in ("validation", "test") if split in ood]
    curves = {split: (ood[split]["roc"]["false_alarms"], ood[split]["roc"]["detections"],
                      ood[split]["auroc"]) for split in splits}
    marks = {split: (1 - ood[split]["in_distribution"], ood[split]["flagged"]) for split in splits}
    return draw(curves, path, threshold_rates=marks,
                title="OOD check: synthetic microscopy against non-microscopy images")


# ---- pages -----------------------------------------------------------------------------------

def ap_table(data: Mapping[str, Any], methods: tuple[str, ...] = METHODS) -> str:
    """Markdown: AP at 0.5/0.75/0.9 per style and method, the mean row, routing accuracy."""
    routing = data["routing"]
    head = [f"{m} AP@{t}" for m in methods for t in SHOWN]
    lines = ["| style | " + " | ".join(head) + " | routing acc. |",
             "|---|" + "---:|" * (len(head) + 1)]
    for style in [*data["styles"], "mean"]:
        cells = [_ap(data, m, style, t) for m in methods for t in SHOWN]
        accuracy = routing["accuracy"] if style == "mean" else routing["per_style"].get(style)
        lines.append(f"| {style} | " + " | ".join(cells) + f" | {_percent(accuracy)} |")
    return "\n".join(lines)


def _ap(data: Mapping[str, Any], method: str, style: str, threshold: str) -> str:
    value = data["ap"].get(method, {}).get(style, {}).get(threshold)
    return "-" if value is None else f"{value:.3f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _about(data: Mapping[str, Any]) -> str:
    s = data["settings"]
    when = f" on {data['date'][:10]}" if data.get("date") else ""
    where = f" ({machine.describe(data['machine'])})" if data.get("machine") else ""
    return (f"Built by `{data['command']}`{when}{where}: {s['n_train']} training and "
            f"{s['n_test']} held-out test images per synthetic style "
            f"({', '.join(data['styles'])}), "
            f"{s['shape'][0]}×{s['shape'][1]} pixels, network channels {s['width']}.")


def _protocol(data: Mapping[str, Any]) -> str:
    if "validation" in data:
        return _three_splits(data)
    s = data["settings"]
    return f"""## How the images were used

- **Training images** ({s['n_train']} per style, drawn with seed {s['seed']}) trained the
  generalist, make up the style bank (one style vector each) and, cluster by cluster,
  fine-tuned the specialists.
- **Test images** ({s['n_test']} per style, drawn with seed {s['seed'] + 1}) were never
  trained on and are not in the style bank. The AP and routing figures below are measured on
  them.
- **The clustering settings** (see [Style clusters](#style-clusters)) are fixed in the code
  (`zoo.build._zoo_clustering`); they were chosen before this build, by how well candidate
  clusterings of the training images matched those images' source styles (adjusted Rand
  index). The script that compared the candidates also printed each one's routing accuracy
  on these test images, so the test set was seen while the settings were chosen, although
  the choice was made on the training images. The routing accuracy below is therefore not
  a fully independent estimate."""


def _three_splits(data: Mapping[str, Any]) -> str:
    s = data["settings"]
    ood = data.get("ood", {})
    return f"""## How the images were used

Three disjoint splits of synthetic images, drawn from the generator with different seeds
(`zoo.evaluate.split_seed`), and three splits of non-microscopy images
(`zoo.data.negatives`: {s['n_negatives']} per kind and split):

- **Training** ({s['n_train']} per style, seed {s['seed']}): trained the generalist, make up
  the style bank (one style vector each), were clustered, and, cluster by cluster,
  fine-tuned a candidate specialist. The OOD check's whitening and cluster means come from
  the bank alone.
- **Validation** ({s['n_val']} per style, seed {s['seed'] + 1}): never trained on; used for
  choices only: the OOD threshold (with the training and validation negatives:
  {_ood_rule(ood)}), and which model serves each cluster (a cluster's candidate serves only
  if, on the validation images routed to that cluster, it scores at least the generalist's
  AP at {', '.join(s['select_at'])} and more at one of them; otherwise the generalist serves
  it and the candidate is not shipped).
- **Test** ({s['n_test']} per style, seed {s['seed'] + 2}, and the test negatives): only
  reported. Nothing was chosen on it. Every figure under *Test* below is measured on it,
  with the zoo as shipped (fp16 weights, read back through the registry) and segmented
  through the product pipeline (`Zoo.segment`).
- **Settings fixed in code**: the clustering (`zoo.build._zoo_clustering`), the embedding
  (`zoo.params.EmbedParams`) and the OOD check (`zoo.build._zoo_ood`) were compared on the
  training and validation splits only, by `bench/select_zoo.py` with this build's generalist
  (its results are in `docs/protocol/select_zoo.json`). The training schedules were carried
  over from earlier builds, not tuned on these splits."""


def _ood_rule(ood: Mapping[str, Any]) -> str:
    params = ood.get("params", {})
    if not params:
        return "the calibration rule of `zoo.ood.calibrate_threshold`"
    return (f"the threshold flags {params['rejection']:.1%} of the negatives unless that "
            f"would flag more than {params['max_false_alarms']:.0%} of the validation images")


def _validation(data: Mapping[str, Any]) -> str:
    if "validation" not in data:
        return ""
    validation = {**data["validation"], "styles": data["styles"]}
    return f"""## Validation: what chose the served models

AP per style on the validation images, the generalist against routing with every candidate
specialist (before selection):

{ap_table(validation, methods=("generalist", "routed"))}

{_selection(data)}
"""


def _selection(data: Mapping[str, Any]) -> str:
    if not data.get("selection"):
        return ""
    at = "/".join(data["selection"][0]["at"])
    rows = [f"| cluster | name | candidate | validation images routed there | generalist AP@{at} "
            "| candidate AP | served by |", "|---:|---|---|---:|---|---|---|"]
    for s in data["selection"]:
        general = " / ".join(f"{v:.3f}" for v in s["generalist"]) or "-"
        special = " / ".join(f"{v:.3f}" for v in s["specialist"]) or "-"
        served = s["candidate"] if s["serves"] else "generalist"
        rows.append(f"| {s['cluster']} | {s['name']} | {s['candidate'] or '-'} | {s['images']} "
                    f"| {general} | {special} | {served} |")
    return "Which model serves each cluster:\n\n" + "\n".join(rows)


def _ood(data: Mapping[str, Any]) -> str:
    ood = data.get("ood")
    if not ood:
        return ""
    lines = ["| split | AUROC | synthetic images in distribution | non-microscopy images flagged "
             "| flagged, by kind |", "|---|---:|---:|---:|---|"]
    for split in ("validation", "test"):
        if split not in ood:
            continue
        row = ood[split]
        kinds = ", ".join(f"{k} {v:.0%}" for k, v in row["flagged_by_kind"].items())
        lines.append(f"| {split} ({row['images']} images, {row['negatives']} negatives) | "
                     f"{row['auroc']:.3f} | {row['in_distribution']:.1%} | {row['flagged']:.1%} "
                     f"| {kinds} |")
    return f"""## The out-of-distribution check

Score: {ood['score']} in the bank's whitened style space (`zoo.ood`); an image scoring above
{ood['threshold']:.3f} is out of distribution and segmented by the generalist. The threshold
was set on validation images and negatives; test is reported only.

{chr(10).join(lines)}

![OOD ROC](figures/ood_roc.png)
"""


def _reproduce(data: Mapping[str, Any]) -> str:
    if not data.get("zoo_eval_reproduces"):
        return ""
    return ("\nReproduce a column per style with `zoo eval synthetic:STYLE --model "
            "cpnet.generalist` (generalist) or `--model auto` (routed): `zoo eval synthetic` "
            "draws the same test images. The shipped weights are stored in fp16, so figures "
            "can differ in the third decimal.\n")


def _definitions() -> str:
    return """*generalist*: one model for every image; *routed*: the specialist chosen by 5-NN vote
over the style bank; *oracle*: the specialist of the cluster that holds most of the image's
style. *routing acc.*: the fraction of test images routed to the specialist of a cluster
whose training images are mostly of the image's own style (an out-of-distribution fallback
counts as wrong)."""


def _clusters(data: Mapping[str, Any]) -> str:
    lines = ["| cluster | name | specialist | training images | source styles |",
             "|---:|---|---|---:|---|"]
    for c in data["clusters"]:
        sources = ", ".join(f"{style} {n}" for style, n in c["sources"].items())
        lines.append(f"| {c['id']} | {c['name']} | {c['specialist'] or '-'} | "
                     f"{c['training_images']} | {sources} |")
    p = data["settings"]["clustering"]
    space = (f"the styles whitened to their top {p['whiten']} principal components"
             if p.get("whiten") else "the L2-normalised styles")
    graph = f"{p['n_neighbors']}-nearest-neighbour" if p.get("n_neighbors") else "nearest-neighbour"
    text = [f"Leiden on a {graph} graph of {space}, resolution {p['resolution']:g}, Leiden "
            f"seed {p['seed']}. Adjusted Rand index of these clusters against the source "
            f"styles: {data['clustering']['adjusted_rand']:.2f}."]
    split = split_styles(data)
    for style, names in split.items():
        text.append(f"{style.capitalize()} images form {len(names)} clusters "
                    f"({', '.join(f'`{n}`' for n in names)}); a {style} image routed to any "
                    "of them counts as correct, which is why routed can exceed the oracle (the "
                    f"specialist of the largest {style} cluster) on {style}.")
    return "\n".join(lines) + "\n\n" + " ".join(text)


def split_styles(data: Mapping[str, Any]) -> dict[str, list[str]]:
    """Source styles that are the majority of more than one cluster → those clusters' names."""
    majority: dict[str, list[str]] = {}
    for c in data["clusters"]:
        if c["sources"]:
            majority.setdefault(next(iter(c["sources"])), []).append(c["name"])
    return {style: names for style, names in majority.items() if len(names) > 1}


def _timings(data: Mapping[str, Any]) -> str:
    rows = "\n".join(f"| {step} | {seconds / 60:.1f} |"
                     for step, seconds in data["timings_s"].items())
    total = sum(data["timings_s"].values()) / 60
    text = f"| step | minutes |\n|---|---:|\n{rows}\n| total | {total:.1f} |"
    note = data.get("notes", {}).get("timings")
    return text + (f"\n\n{note}" if note else "")


def render_report(data: Mapping[str, Any]) -> str:
    """``docs/zoo.md``: the report ``data`` in this module's fixed template."""
    provenance = f"\n\n{data['provenance']}" if data.get("provenance") else ""
    return f"""# The default zoo: routed specialists against one generalist

<!-- Generated from docs/zoo.json by zoo.report.render_report: `python docs/render.py`
rewrites it. Change the data or the template in zoo/report.py, not this file. -->

{_about(data)}{provenance}

{_protocol(data)}

{_validation(data)}
## {"Test: " if "validation" in data else ""}AP per style (held-out test images)

{ap_table(data)}
{_reproduce(data)}
{_definitions()}

![AP vs IoU](figures/ap_vs_iou.png)

{_ood(data)}
## Style clusters

{_clusters(data)}

## Build time (minutes)

{_timings(data)}
"""


# ---- README sections ---------------------------------------------------------------------------

def _gaps(data: Mapping[str, Any], thresholds: tuple[str, ...] = SHOWN
          ) -> list[tuple[str, str, float, float]]:
    """(style, threshold, routed, generalist) wherever routed scores below the generalist."""
    ap = data["ap"]
    return [(style, t, ap["routed"][style][t], ap["generalist"][style][t])
            for style in data["styles"] for t in thresholds
            if ap["routed"][style][t] < ap["generalist"][style][t]]


def _mean_gain(data: Mapping[str, Any], threshold: str = "0.75") -> str:
    gain = data["ap"]["routed"]["mean"][threshold] - data["ap"]["generalist"]["mean"][threshold]
    verb = "beat" if gain >= 0 else "trail"
    return f"{verb} the generalist by {gain:+.3f} mean AP@{threshold}"


def readme_routing(data: Mapping[str, Any]) -> str:
    """The README's opening evidence: AP@0.75 per style, generalist against routed."""
    ap, styles, routing = data["ap"], data["styles"], data["routing"]

    def cells(method: str) -> str:
        return " | ".join(f"{ap[method][s]['0.75']:.3f}" for s in [*styles, "mean"])

    worse = sorted({style for style, t, _, _ in _gaps(data, ("0.75",))})
    caveat = (f", but not on every style: on {' and '.join(worse)} the routed specialists "
              "score lower (see Known limits)" if worse else " on every style")
    return f"""Why routing matters, measured on our own zoo ({data['settings']['n_test']} held-out
synthetic test images per style; how they were used, AP at 0.5 and 0.9, the oracle and the
plot are in [docs/zoo.md](docs/zoo.md)):

| AP@0.75 | {' | '.join(styles)} | mean |
|---|{'---:|' * (len(styles) + 1)}
| one generalist | {cells('generalist')} |
| routed specialists (`--model auto`) | {cells('routed')} |

Routing picked a cluster of the image's own style for {routing['correct']} of
{routing['images']} test images. Routed specialists {_mean_gain(data)}{caveat}.{_chosen(data)}{_ood_line(data)}{_since(data)}"""


def _chosen(data: Mapping[str, Any]) -> str:
    if "selection" not in data:
        return ""
    served, total = sum(s["serves"] for s in data["selection"]), len(data["selection"])
    which = (f"its specialist won in all {total} clusters" if served == total else
             f"its specialist won in {served} of {total} clusters, the generalist serves the rest")
    return (" The test images decided nothing: a separate validation split chose which model "
            f"serves each cluster ({which}).")


def _ood_line(data: Mapping[str, Any]) -> str:
    test = data.get("ood", {}).get("test")
    if not test:
        return ""
    return (f" The out-of-distribution check kept {test['in_distribution']:.1%} of the test "
            f"images in distribution and flagged {test['flagged']:.1%} of "
            f"{test['negatives']} held-out non-microscopy images (AUROC {test['auroc']:.3f}).")


def _since(data: Mapping[str, Any]) -> str:
    if not data.get("provenance"):
        return ""
    return (f" These figures were measured by the build of {data['date'][:10]}; what has "
            "changed in the zoo since is in [docs/zoo.md](docs/zoo.md).")


def readme_limits(data: Mapping[str, Any]) -> str:
    """The README's known-limits bullet on where routing loses to the generalist."""
    gaps = _gaps(data)
    if not gaps:
        return f"- Routed specialists {_mean_gain(data)} and score at least as high on every style."
    listed = ", ".join(f"{style} AP@{t} {routed:.3f} vs {general:.3f}"
                       for style, t, routed, general in gaps)
    return (f"- Routed specialists {_mean_gain(data)}, but not on every style and threshold "
            f"(routed vs generalist): {listed} ([docs/zoo.md](docs/zoo.md)).")


README_SECTIONS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "zoo:routing": readme_routing, "zoo:limits": readme_limits}


def readme_sections(data: Mapping[str, Any]) -> dict[str, str]:
    """Marker name → generated text, for every ``zoo:`` section the README may hold."""
    return {name: render(data) for name, render in README_SECTIONS.items()}


def fill_markers(text: str, sections: Mapping[str, str], *, kinds: tuple[str, ...]) -> str:
    """``text`` with every marked section of ``kinds`` replaced by ``sections[name]``.

    A section whose start marker ends its line is a block (the text goes on lines of its
    own); one that goes on in the same line is inline (``… <!-- bench:x:start -->14×<!--
    bench:x:end --> …``).

    Raises:
        KeyError: a marker of one of ``kinds`` names no section in ``sections``.
    """
    def replace(match: re.Match) -> str:
        if match["kind"] not in kinds:
            return match[0]
        if match["name"] not in sections:
            raise KeyError(f"no generator for the marked section {match['name']!r}")
        body = sections[match["name"]].strip("\n")
        start, end = f"<!-- {match['name']}:start -->", f"<!-- {match['name']}:end -->"
        if match["body"].startswith("\n"):
            return f"{start}\n{body}\n{end}"
        return f"{start}{body}{end}"

    return MARKER.sub(replace, text)


def marked_sections(text: str) -> list[str]:
    """The names of the marked sections in ``text``, in order."""
    return [match["name"] for match in MARKER.finditer(text)]
