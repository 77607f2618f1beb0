"""Start a real ``bentoml serve`` on a free 127.0.0.1 port, for tests that speak HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(target: str, home: Path, *, timeout: float = 180.0, env: dict | None = None,
           command: list[str] | None = None) -> Iterator[str]:
    """``bentoml serve TARGET`` with ``ZOO_HOME`` and ``BENTOML_HOME`` under ``home``;
    yields the base URL once ``/readyz`` answers 200, stops the server afterwards.
    ``command`` replaces the ``bentoml serve`` command (``--host``/``--port`` are added)."""
    port = free_port()
    environment = {**os.environ, "ZOO_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
                   "ZOO_DEVICE": "cpu", **(env or {})}
    log = open(home / f"serve-{port}.log", "wb")  # noqa: SIM115 (closed below)
    argv = command or [sys.executable, "-m", "bentoml", "serve", target]
    process = subprocess.Popen([*argv, "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                               env=environment, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bentoml serve {target} did not become ready: "
                                   f"{(home / f'serve-{port}.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        stop_group(process.pid)
        log.close()


def stop_group(group: int, timeout: float = 30.0) -> None:
    """End what is left of process group ``group``: ``zoo serve`` runs ``bentoml serve`` as a
    child, which outlives its parent's SIGTERM."""
    left = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == group and process.info["status"] != psutil.STATUS_ZOMBIE:
                left.append(process)
        except (OSError, psutil.Error):
            continue
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGTERM)
    _, left = psutil.wait_procs(left, timeout=timeout)
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
