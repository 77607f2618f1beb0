"""One-off: write docs/zoo.json for the zoo shipped before the build wrote its report as data.

Usage (from the repository root):

    .venv/bin/python docs/backfill_zoo_json.py [--from-commit 870d8b0] [--out docs/zoo.json]

Rebuilding the zoo takes about an hour, so the report of the shipped build is recovered
instead of re-measured:

* AP per style and method (at IoU 0.5, 0.75 and 0.9, three decimals, with the mean row),
  routing accuracy per style and the step timings (minutes, one decimal) are parsed from
  ``docs/zoo.md`` as ``zoo build`` wrote it and it was committed in ``--from-commit``;
* the clusters, their sizes and source styles and the adjusted Rand index are computed
  from the style bank the build wrote (``weights/style_bank.safetensors`` at that commit);
* the settings are ``zoo.build.BuildConfig()``'s defaults (the page says ``--seed 0`` with
  the default image counts, and the weights' network channels are checked against them),
  except the style pass, which is the build's own (``BuildConfig.view`` at that commit);
* the date is that of the last commit of the weights the build wrote, and the note under
  the timings (the machine was shared during the build) is the page's own paragraph;
* what changed in the shipped zoo since (the bank re-embedded, the generator replaced) is
  said in ``provenance``, with the commits found by ``git log``.

The next ``zoo build`` writes docs/zoo.json itself (``zoo.report.write_report``), with every
IoU threshold, full precision and the machine it ran on; this script is then obsolete.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zoo.build import BuildConfig  # noqa: E402
from zoo.cluster import StyleBank  # noqa: E402
from zoo.manifest import load_manifest  # noqa: E402
from zoo.report import SCHEMA, adjusted_rand, build_command, clusters_of, render_report  # noqa: E402
from zoo.report import _settings as settings_of  # noqa: E402

BANK = "weights/style_bank.safetensors"

def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def table_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first Markdown table after ``heading``."""
    section = text[text.index(heading):]
    block = []
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            break
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in block[2:]]


def parse_ap(text: str) -> tuple[dict, dict, list[str]]:
    header = next(line for line in text.splitlines() if line.startswith("| style |"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:-1]
    ap: dict[str, dict[str, dict[str, float]]] = {}
    routing: dict[str, float] = {}
    styles = []
    for row in table_rows(text, "## AP per style"):
        style, values, accuracy = row[0], row[1:-1], row[-1]
        for column, value in zip(columns, values):
            method, threshold = re.fullmatch(r"(\w+) AP@([\d.]+)", column).groups()
            ap.setdefault(method, {}).setdefault(style, {})[threshold] = float(value)
        routing[style] = float(accuracy.rstrip("%")) / 100
        if style != "mean":
            styles.append(style)
    return ap, routing, styles


def parse_timings(text: str) -> dict[str, float]:
    rows = table_rows(text, "## Build time")
    return {step: round(float(minutes) * 60, 1) for step, minutes in rows if step != "total"}


def timing_note(text: str) -> str:
    """The hand-written paragraph under the build-time table that explains the times."""
    section = text[text.index("## Build time"):]
    paragraph = next(p for p in section.split("\n\n") if p.startswith("This build ran"))
    return " ".join(paragraph.split())


def load_bank(commit: str) -> StyleBank:
    """The style bank as committed in ``commit``."""
    data = subprocess.run(["git", "show", f"{commit}:{BANK}"], cwd=ROOT, capture_output=True,
                          check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bank.safetensors"
        path.write_bytes(data)
        return StyleBank.load(path)


def since(commit: str, path: str) -> str | None:
    """The first commit after ``commit`` that changed ``path``, or None."""
    found = git("log", "--reverse", "--format=%h", f"{commit}..HEAD", "--", path).split()
    return found[0] if found else None


def provenance(commit: str) -> str:
    text = [f"The figures of this build were recovered from the report it wrote (docs/zoo.md "
            f"at commit {commit}: AP to three decimals, times to 0.1 minute) and from the style "
            "bank it wrote, by `docs/backfill_zoo_json.py`; the machine it ran on was not "
            "recorded."]
    reembedded, generator = since(commit, BANK), since(commit, "zoo/data/synthetic.py")
    if reembedded:
        text.append(f"Since then the shipped style bank was re-embedded with the current style "
                    f"pass (commit {reembedded}; the clusters and specialists are unchanged), "
                    "and routing with it was not measured on these test images again.")
    if generator:
        text.append(f"The synthetic generator has also changed (from commit {generator} on): "
                    "`zoo eval synthetic` no longer draws these test images, and `zoo build` "
                    "would now train a different zoo.")
    return " ".join(text)


def old_view(commit: str) -> int:
    """``BuildConfig.view`` (the side of the one view styles were computed on) at ``commit``."""
    match = re.search(r"view: int = (\d+)", git("show", f"{commit}:zoo/build.py"))
    if match is None:
        raise SystemExit(f"zoo/build.py at {commit} has no BuildConfig.view")
    return int(match.group(1))


def backfill(commit: str) -> dict:
    text = git("show", f"{commit}:docs/zoo.md")
    config = BuildConfig()
    expected = (f"`zoo build --seed {config.seed}` ({config.n_train} training and "
                f"{config.n_test} held-out")
    if expected not in " ".join(text.split()):
        raise SystemExit(f"docs/zoo.md at {commit} does not describe the default build")
    generalist = next(m for m in load_manifest(ROOT / "models.yaml").models
                      if m.name == "cpnet.generalist")
    if list(generalist.config["channels"]) != list(config.width):
        raise SystemExit(f"shipped channels {generalist.config['channels']} != {config.width}")
    ap, routing, styles = parse_ap(text)
    bank = load_bank(commit)
    per_style = {s: routing[s] for s in styles}
    settings = settings_of(config)
    settings["embed"] = {"view": old_view(commit)}
    return {
        "schema": SCHEMA,
        "date": git("log", "-1", "--format=%aI", commit, "--", "weights/").strip(),
        "command": build_command(config),
        "machine": None,
        "settings": settings,
        "styles": styles,
        "thresholds": ["0.5", "0.75", "0.9"],
        "ap": ap,
        "routing": {"accuracy": routing["mean"],
                    "correct": int(round(sum(per_style.values()) * config.n_test)),
                    "images": config.n_test * len(styles), "per_style": per_style},
        "clusters": clusters_of(bank),
        "clustering": {"adjusted_rand": adjusted_rand(bank), "ood_threshold": bank.ood_threshold},
        "timings_s": parse_timings(text),
        "zoo_eval_reproduces": since(commit, "zoo/data/synthetic.py") is None,
        "notes": {"timings": timing_note(text)},
        "provenance": provenance(commit),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-commit", default="870d8b0")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "zoo.json")
    args = parser.parse_args()
    data = backfill(args.from_commit)
    render_report(data)  # every field the page needs is there
    args.out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
