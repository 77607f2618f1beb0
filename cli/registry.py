"""``zoo list | info | pull | push | validate``: the model registry and the Hub."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from zoo.cli.app import app, fail
from zoo.errors import OfflineError, ZooError

ManifestOption = Annotated[
    Path | None,
    typer.Option(
        "--manifest",
        help="models.yaml to use instead of the shipped zoo (default: $ZOO_MANIFEST, else "
        "the shipped zoo); your own zoo under ZOO_HOME is always included.",
    ),
]
RemoteOption = Annotated[
    str | None,
    typer.Option(
        "--remote", help="Use the models.yaml index of this Hub registry repo (ORG/NAME)."
    ),
]


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (ZooError, OSError) as error:
        fail(str(error))


def _registry(manifest: Path | None, remote: str | None = None):
    from zoo.hub import HubSettings, fetch_remote_index
    from zoo.registry import Registry
    from zoo.settings import Settings

    settings = Settings.from_env(manifest=manifest)
    if remote is not None:
        if settings.offline:
            raise OfflineError(f"cannot read the models.yaml index of {remote} on the Hub: "
                               "offline mode is on (ZOO_OFFLINE or HF_HUB_OFFLINE); unset it "
                               "to use --remote")
        hub = HubSettings.from_env()
        return Registry(fetch_remote_index(remote, hub), settings=settings, hub=hub)
    return Registry.default(settings)


def name_matches(entry, pattern: str) -> bool:
    """Whether a model's name or an alias matches ``pattern``: a glob when it holds
    ``* ? [``, else a case-insensitive substring."""
    import fnmatch

    names = [entry.name, *entry.aliases]
    if set(pattern) & set("*?["):
        return any(fnmatch.fnmatchcase(name, pattern) for name in names)
    return any(pattern.lower() in name.lower() for name in names)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


@app.command("list")
def list_models(
    kind: Annotated[
        str | None, typer.Option(help="generalist, specialist, nuclei or user.")
    ] = None,
    pattern: Annotated[
        str | None, typer.Argument(
            help="Part of a model name or alias (e.g. 'phase'), or a glob ('cpnet.*').")
    ] = None,
    remote: RemoteOption = None,
    manifest: ManifestOption = None,
) -> None:
    """List models: name, kind, cluster, diameter, size, installed?"""
    from zoo.manifest import KINDS

    if kind is not None and kind not in KINDS:
        fail(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    with _errors():
        registry = _registry(manifest, remote)
        rows = [("NAME", "VERSION", "KIND", "CLUSTER", "DIAMETER", "SIZE", "INSTALLED")]
        for entry in registry.list(kind=kind):
            if pattern is not None and not name_matches(entry, pattern):
                continue
            cluster = f"{entry.cluster.id}:{entry.cluster.name}" if entry.cluster else "-"
            installed = "yes" if registry.is_installed(entry.ref) else "no"
            rows.append(
                (
                    entry.name,
                    entry.version,
                    entry.kind,
                    cluster,
                    f"{entry.diameter:g}",
                    _size(entry.size),
                    installed,
                )
            )
    if len(rows) == 1:
        matching = f" matching {pattern!r}" if pattern else ""
        typer.echo("no models" + matching + (f" in {remote}" if remote else ""))
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@app.command()
def info(
    name: Annotated[str, typer.Argument(help="Model name or alias, optionally NAME@VERSION.")],
    remote: RemoteOption = None,
    manifest: ManifestOption = None,
) -> None:
    """Show a model's card: what it is, its files, defaults, training data and metrics."""
    from zoo.manifest import model_card

    with _errors():
        registry = _registry(manifest, remote)
        entry = registry.entry(name)
        installed = registry.is_installed(entry.ref)
    typer.echo(model_card(entry), nl=False)
    where = registry.install_dir(entry) if installed else "no (zoo pull " + entry.ref + ")"
    typer.echo(f"\ninstalled: {where}")


@app.command()
def pull(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models to pull (NAME[@VERSION]).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Pull every model of the registry.")] = False,
    source: Annotated[
        str, typer.Option(help="auto (local zoo first, then Hub), local or hub.")
    ] = "auto",
    force: Annotated[bool, typer.Option(help="Download again even if cached and intact.")] = False,
    remote: RemoteOption = None,
    manifest: ManifestOption = None,
) -> None:
    """Install models into the cache (ZOO_HOME), verifying every sha256."""
    if source not in ("auto", "local", "hub"):
        fail(f"--source must be auto, local or hub, got {source!r}")
    if bool(names) == all_:
        fail("give model names or --all (not both)")
    with _errors():
        registry = _registry(manifest, remote)
        refs = [entry.ref for entry in registry.list()] if all_ else list(names or [])
    failures = []
    for ref in refs:
        try:
            installed = registry.pull(ref, force=force, source=source)  # type: ignore[arg-type]
        except (ZooError, OSError) as error:
            typer.echo(f"error: {error}", err=True)
            failures.append(ref)
            continue
        typer.echo(f"{installed.entry.ref}: {installed.dir}")
    if failures:
        fail(f"{len(failures)} of {len(refs)} model(s) failed: {', '.join(failures)}")


@app.command()
def push(
    name: Annotated[str, typer.Argument(help="Model to publish (NAME[@VERSION]).")],
    repo: Annotated[str, typer.Option(help="Hub model repo ORG/NAME (created if needed).")],
    index: Annotated[
        str | None, typer.Option(help="Also record the model in this registry repo's models.yaml.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite a version already published.")] = False,
    manifest: ManifestOption = None,
) -> None:
    """Publish a model and its model card to the Hub, then pin the new commit in models.yaml."""
    with _errors():
        registry = _registry(manifest)
        commit = registry.push(name, repo, index_repo=index, force=force)
        entry = registry.entry(name)
    typer.echo(f"pushed {entry.ref} to hf://{repo}@{commit}")
    if registry.manifest_path is not None:
        typer.echo(f"updated {registry.manifest_path}")


@app.command()
def validate(
    path: Annotated[
        Path | None, typer.Argument(help="models.yaml (default: the shipped zoo).")
    ] = None,
    files: Annotated[bool, typer.Option(help="Also check local files' sizes and sha256.")] = True,
) -> None:
    """Check a models.yaml against the schema (and its local files); print every problem."""
    from zoo.manifest import load_manifest, validate_manifest
    from zoo.registry import embedded_manifest_path

    path = path if path is not None else embedded_manifest_path()
    problems = validate_manifest(path, check_files=files)
    for problem in problems:
        typer.echo(f"{path}: {problem}", err=True)
    if problems:
        fail(f"{path}: {len(problems)} problem(s)")
    typer.echo(f"{path}: ok ({len(load_manifest(path).models)} models)")
