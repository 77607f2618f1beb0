"""``zoo doctor``: what this machine runs cellzoo with, and whether the registry is intact."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Annotated, Any

import typer

from zoo.cli.app import app, fail
from zoo.cli.common import errors_as_one_line


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object instead of text.")] = False,
    manifest: Annotated[Path | None, typer.Option(
        help="Check this models.yaml instead of the shipped zoo (default: $ZOO_MANIFEST).",
        show_default=False)] = None,
) -> None:
    """Show torch/CUDA, onnxruntime, numba, the model cache and registry health.

    Every model file of the registry is checked against its pinned size and sha256; the
    exit code is 1 when any model fails (or the registry is empty).
    """
    import zoo
    from zoo.settings import Settings

    with errors_as_one_line():
        settings = Settings.from_env(manifest=manifest)
        report = {
            "cellzoo": zoo.__version__,
            "python": platform.python_version(),
            "settings": {"backend": settings.backend, "device": settings.device,
                         "precision": settings.precision, "home": str(settings.home),
                         "manifest": str(settings.manifest) if settings.manifest else None,
                         "offline": settings.offline},
            "torch": _torch(settings.device),
            "onnxruntime": _onnxruntime(),
            "numba": _numba(),
            "cache": _cache(settings.home),
            "registry": _registry(settings),
        }
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        _print(report)
    registry = report["registry"]
    if not registry["ok"]:
        bad = [m["ref"] for m in registry["models"] if not m["ok"]]
        fail(f"registry {registry['manifest']}: "
             + (f"{len(bad)} of {len(registry['models'])} model(s) failed: {', '.join(bad)}"
                if bad else "no models"))


def _torch(device: str) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "version": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda else None,
        "zoo_device": device,
        "threads": torch.get_num_threads(),
    }


def _onnxruntime() -> dict[str, Any] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return {"version": onnxruntime.__version__,
            "providers": list(onnxruntime.get_available_providers())}


def _numba() -> dict[str, Any]:
    import numba

    return {"version": numba.__version__, "threads": numba.get_num_threads()}


def _cache(home: Path) -> dict[str, Any]:
    n_files = n_bytes = 0
    for folder, _, names in os.walk(home):
        for name in names:
            try:
                n_bytes += os.stat(os.path.join(folder, name)).st_size
            except OSError:
                continue
            n_files += 1
    return {"path": str(home), "exists": home.is_dir(), "files": n_files, "bytes": n_bytes}


def _registry(settings) -> dict[str, Any]:
    """Registry health: every model checked by ``_model``."""
    from zoo.registry import Registry, embedded_manifest_path

    path = settings.manifest if settings.manifest is not None else embedded_manifest_path()
    registry = Registry.default(settings)
    models = [_model(registry, entry) for entry in registry.list()]
    return {"manifest": str(path), "models": models,
            "ok": bool(models) and all(m["ok"] for m in models)}


def _model(registry, entry) -> dict[str, Any]:
    """One model's files against their pinned size and sha256 (``file_problems``): the
    registry's local copies, or for a Hub model without them, its cached copy if any."""
    from zoo.files import file_problems

    root = registry.layer_dir(entry.ref)
    local = root is not None and all((root / spec.path).is_file() for spec in entry.files)
    installed = registry.is_installed(entry.ref)
    if local:
        where = root
    elif entry.source is not None:
        where = registry.install_dir(entry) if installed else None
    else:
        where = root or Path(".")  # local-only and incomplete: report the missing files
    problems = [] if where is None else [
        problem for spec in entry.files if (problem := file_problems(where / spec.path, spec))]
    return {
        "ref": entry.ref,
        "kind": entry.kind,
        "files": len(entry.files),
        "source": "local" if local else str(entry.source or "none"),
        "checked": str(where) if where is not None else None,
        "installed": installed,
        "ok": not problems,
        "problems": problems,
    }


def _print(report: dict[str, Any]) -> None:
    torch, ort, numba = report["torch"], report["onnxruntime"], report["numba"]
    cuda = (f"CUDA {torch['cuda_version']} available: {torch['device_name']}"
            if torch["cuda_available"] else "CUDA not available")
    cache = report["cache"]
    state = (f"{cache['files']} files, {cache['bytes'] / 1e6:.1f} MB" if cache["exists"]
             else "not created yet")
    registry = report["registry"]
    settings = report["settings"]
    rows = [
        ("cellzoo", f"{report['cellzoo']} (python {report['python']})"),
        ("settings", f"backend {settings['backend']}, device {settings['device']}, "
                     f"precision {settings['precision']}, offline {settings['offline']}"),
        ("torch", f"{torch['version']}; {cuda}; ZOO_DEVICE={torch['zoo_device']}, "
                  f"{torch['threads']} CPU threads"),
        ("onnxruntime", f"{ort['version']}; providers: {', '.join(ort['providers'])}"
                        if ort else "not installed (the onnx backend is unavailable)"),
        ("numba", f"{numba['version']}; {numba['threads']} threads"),
        ("cache", f"{cache['path']}: {state}"),
        ("registry", f"{registry['manifest']}: {len(registry['models'])} model(s)"),
    ]
    for name, text in rows:
        typer.echo(f"{name:<12} {text}")
    for model in registry["models"]:
        status = "ok" if model["ok"] else "FAIL"
        detail = "; ".join(model["problems"]) or (
            f"{model['files']} file(s) match their sha256" if model["checked"]
            else f"{model['source']}, not downloaded yet")
        installed = "installed" if model["installed"] else "not installed"
        typer.echo(f"  {status:<4} {model['ref']:<28} {detail}; {installed}")
    typer.echo(f"registry: {'ok' if registry['ok'] else 'FAILED'}")
