"""``zoo serve``: run the BentoML service (split API + network services, or one process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from zoo.cli.app import app, fail

ROOT = Path(__file__).resolve().parent.parent


def serve_command(host: str, port: int, *, single: bool) -> list[str]:
    """The ``bentoml serve`` command line for the chosen mode."""
    target = "zoo.service.app:CellZooLocal" if single else "zoo.service.app:CellZoo"
    return [sys.executable, "-m", "bentoml", "serve", target, "--host", host, "--port", str(port)]


def config_options(*, workers: int | None, gpus: int | None, single: bool) -> str:
    """``BENTOML_CONFIG_OPTIONS`` that size the deployment (space-separated overrides)."""
    options = []
    api = "cellzoo_local" if single else "cellzoo"
    if workers is not None:
        options.append(f"services.{api}.workers={workers}")
    if gpus is not None:
        options.append(f"services.{api if single else 'cellzoo_network'}.resources.gpu={gpus}")
    return " ".join(options)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3000,
    workers: Annotated[int | None, typer.Option(
        help="API worker processes (decoding, routing, CPU post-processing).")] = None,
    gpus: Annotated[int | None, typer.Option(
        help="GPUs for the network service (needs CUDA torch).")] = None,
    single: Annotated[bool, typer.Option(
        "--single", help="One process, networks in-process, no batching across requests "
                         "(development mode).")] = False,
) -> None:
    """Serve /segment, /route and /models over HTTP, plus /livez, /readyz and /metrics.

    The default is the split deployment: the API service (validation, routing, CPU
    post-processing) calls a network service whose batchable API groups the forward
    passes of concurrent requests (BentoML adaptive batching).
    """
    if workers is not None and workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    if gpus is not None and gpus < 0:
        fail(f"--gpus must be >= 0, got {gpus}")
    env = os.environ.copy()
    overrides = config_options(workers=workers, gpus=gpus, single=single)
    if overrides:
        env["BENTOML_CONFIG_OPTIONS"] = " ".join(
            filter(None, [env.get("BENTOML_CONFIG_OPTIONS", ""), overrides]))
    raise typer.Exit(subprocess.call(serve_command(host, port, single=single), cwd=ROOT, env=env))
