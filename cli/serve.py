"""``zoo serve``: run the BentoML service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.main import app

ROOT = Path(__file__).resolve().parent.parent


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3000,
) -> None:
    """Serve /segment and /route over HTTP (bentoml serve service.app:CellZoo)."""
    command = [sys.executable, "-m", "bentoml", "serve", "service.app:CellZoo",
               "--host", host, "--port", str(port)]
    raise typer.Exit(subprocess.call(command, cwd=ROOT, env=os.environ.copy()))
