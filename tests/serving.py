"""Start a real ``bentoml serve`` on a free 127.0.0.1 port, for tests that speak HTTP; and
find the processes a test run leaves behind.

Every process a test starts inherits ``SESSION_VARIABLE`` (set by ``tests/conftest.py``), and
each server started by ``served`` also ``SERVER_VARIABLE``: BentoML's workers sit in process
groups of their own, so the environment is how they are found again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
SESSION_VARIABLE = "CELLZOO_TEST_SESSION"
SERVER_VARIABLE = "CELLZOO_TEST_SERVER"
#: The environment of the one split service the HTTP test modules share (``service_url`` in
#: ``tests/conftest.py``): small limits so the limit tests send little, torch on one thread.
SERVICE_ENV = {
    "ZOO_MAX_PIXELS": str(600 * 600),
    "ZOO_MAX_BODY_MB": "16",
    "ZOO_MAX_NETWORK_PIXELS": str(4_000_000),
    "ZOO_NETWORK_TIMEOUT": "120",
    "ZOO_RETRY_AFTER": "3",
    "OMP_NUM_THREADS": "1",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def marked(variable: str, value: str, ignore: set[int] = frozenset()) -> list[psutil.Process]:
    """Live processes (not this one, not zombies, not the pids ``ignore``) whose environment
    has ``variable=value``."""
    found = []
    for process in psutil.process_iter():
        try:
            if (process.pid == os.getpid() or process.pid in ignore
                    or process.status() == psutil.STATUS_ZOMBIE):
                continue
            if process.environ().get(variable) == value:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def wait_gone(variable: str, value: str, timeout: float,
              ignore: set[int] = frozenset()) -> list[psutil.Process]:
    """The marked processes (but the pids ``ignore``) still alive after waiting up to
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := marked(variable, value, ignore)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=10)


@contextmanager
def served(target: str, home: Path, *, timeout: float = 180.0, env: dict | None = None,
           command: list[str] | None = None) -> Iterator[str]:
    """``bentoml serve TARGET`` with ``ZOO_HOME`` and ``BENTOML_HOME`` under ``home``;
    yields the base URL once ``/readyz`` answers 200, stops the server afterwards (SIGTERM,
    then SIGKILL to whatever of it is left after 30 s, workers included).
    ``command`` replaces the ``bentoml serve`` command (``--host``/``--port`` are added)."""
    port = free_port()
    server = uuid.uuid4().hex
    # the server's temporary files (BentoML's clients make some, its sockets live there) go
    # to a short folder of its own (a socket path must stay under 108 bytes), removed below
    scratch = Path(tempfile.mkdtemp(prefix="cz-serve-"))
    environment = {**os.environ, "ZOO_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
                   "ZOO_DEVICE": "cpu", SERVER_VARIABLE: server, "TMPDIR": str(scratch),
                   **(env or {})}
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
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        kill_all(wait_gone(SERVER_VARIABLE, server, timeout=30))
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)
