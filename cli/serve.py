"""``zoo serve``: run the BentoML service (split API + network services, or one process).

``zoo serve`` owns everything it starts. ``bentoml serve`` runs in its own session, with
an environment variable naming this run (``CELLZOO_SERVE_RUN``) that every worker
inherits; BentoML's workers sit in process groups of their own, so that name is how they
are found. SIGTERM, SIGINT or SIGHUP to ``zoo serve`` is passed on as SIGTERM to
``bentoml serve`` and every worker at once (they shut down in parallel); whatever is still
running ``GRACE_S`` (5) seconds later is killed.
``bentoml serve`` also gets SIGTERM should ``zoo serve`` itself be killed (Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer

from zoo.cli.app import app, fail

ROOT = Path(__file__).resolve().parent.parent
#: Environment variable that marks every process of one ``zoo serve`` run.
RUN_VARIABLE = "CELLZOO_SERVE_RUN"
#: Seconds the server gets to stop after a signal before it is killed.
GRACE_S = 5.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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


def processes_of_run(run: str, variable: str = RUN_VARIABLE) -> list:
    """Live processes whose environment holds ``variable=run`` (psutil processes)."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid() or process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get(variable) == run:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def stop_processes(processes: list, *, grace_s: float = GRACE_S) -> list:
    """SIGTERM ``processes``, SIGKILL those still alive after ``grace_s``; the killed ones."""
    import psutil

    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    return alive


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def supervise(argv: list[str], *, env: dict[str, str], cwd: Path,
              grace_s: float = GRACE_S) -> int:
    """Run ``argv`` as the owner of all it starts; returns its exit code (0 when it was
    stopped by a signal and stopped cleanly)."""
    run = uuid.uuid4().hex
    process = subprocess.Popen(argv, cwd=cwd, env={**env, RUN_VARIABLE: run},
                               start_new_session=True, preexec_fn=_die_with_parent)
    received: list[int] = []

    def forward(signum: int, _frame) -> None:
        if not received:  # every process of the run at once: workers stop in parallel
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            _terminate(processes_of_run(run))
        received.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in _STOP_SIGNALS}
    stopping_since = None
    try:
        while True:
            try:
                code = process.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if received and stopping_since is None:
                    stopping_since = time.monotonic()
                if stopping_since is not None and time.monotonic() - stopping_since > grace_s:
                    code = None
                    break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        left = processes_of_run(run)
        if process.poll() is None:
            left.append(_as_psutil(process.pid))
        killed = stop_processes([p for p in left if p is not None], grace_s=1.0)
    if killed:
        typer.echo(f"zoo serve: killed {len(killed)} server process(es) that did not stop",
                   err=True)
    if received:
        return 0 if code is not None and not killed else 1
    return code if code is not None else 1


def _terminate(processes: list) -> None:
    import psutil

    for child in processes:
        with contextlib.suppress(psutil.Error):
            child.terminate()


def _as_psutil(pid: int):
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


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
    post-processing) calls a network service that batches the forward passes of
    concurrent requests. SIGTERM or Ctrl-C stops the server and every worker it started.
    """
    if workers is not None and workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    if gpus is not None and gpus < 0:
        fail(f"--gpus must be >= 0, got {gpus}")
    if not 0 < port < 65536:
        fail(f"--port must be 1..65535, got {port}")
    env = os.environ.copy()
    overrides = config_options(workers=workers, gpus=gpus, single=single)
    if overrides:
        env["BENTOML_CONFIG_OPTIONS"] = " ".join(
            filter(None, [env.get("BENTOML_CONFIG_OPTIONS", ""), overrides]))
    raise typer.Exit(supervise(serve_command(host, port, single=single), env=env, cwd=ROOT))
