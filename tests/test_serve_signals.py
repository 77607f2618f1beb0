"""``zoo serve`` owns every process it starts: SIGTERM or SIGINT to its PID stops the
``bentoml serve`` under it and every worker within 10 seconds (issue #12: SIGTERM left
``bentoml serve`` and its workers running and answering)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.serving import ROOT, SERVER_VARIABLE, free_port, kill_all, marked, wait_gone

pytestmark = pytest.mark.skipif(not (ROOT / "models.yaml").is_file(), reason="no shipped zoo")
STOP_WITHIN_S = 10.0


def _start(home: Path, *options: str) -> tuple[subprocess.Popen, str, str]:
    port, server = free_port(), uuid.uuid4().hex
    env = {**os.environ, "ZOO_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
           "ZOO_DEVICE": "cpu", SERVER_VARIABLE: server}
    zoo = str(Path(sys.executable).parent / "zoo")
    log = open(home / "serve.log", "wb")  # noqa: SIM115 (the child holds it; closed on exit)
    process = subprocess.Popen([zoo, "serve", "--port", str(port), *options], env=env,
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url, server
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            kill_all(marked(SERVER_VARIABLE, server))
            raise RuntimeError((home / "serve.log").read_text()[-3000:])
        time.sleep(0.5)


@pytest.mark.parametrize(("signum", "options"), [(signal.SIGTERM, ()),
                                                  (signal.SIGINT, ("--single",))],
                         ids=["SIGTERM split", "SIGINT single"])
def test_a_signal_to_zoo_serve_stops_every_process(tmp_path: Path, signum: int,
                                                   options: tuple[str, ...]) -> None:
    process, url, server = _start(tmp_path, *options)
    try:
        workers = marked(SERVER_VARIABLE, server)
        assert len(workers) >= (3 if options else 4), workers  # zoo serve, bentoml serve, workers
        assert httpx.get(f"{url}/models", timeout=30).status_code == 200
        start = time.monotonic()
        process.send_signal(signum)
        process.wait(timeout=STOP_WITHIN_S + 5)
        left = wait_gone(SERVER_VARIABLE, server, timeout=STOP_WITHIN_S - (time.monotonic() - start))
        stopped = time.monotonic() - start
        assert left == [], [p.pid for p in left]
        assert stopped < STOP_WITHIN_S
        assert process.returncode == 0
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/readyz", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
        kill_all(marked(SERVER_VARIABLE, server))


def test_the_session_check_finds_a_detached_process() -> None:
    """What ``pytest_sessionfinish`` (tests/conftest.py) looks for: a process a test started
    in a session of its own, which no process-group kill would reach, carries the run's
    mark and is found by it."""
    from tests.serving import SESSION_VARIABLE

    run = os.environ[SESSION_VARIABLE]
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert orphan.pid in [p.pid for p in marked(SESSION_VARIABLE, run)]
    finally:
        orphan.kill()
        orphan.wait()
    assert orphan.pid not in [p.pid for p in wait_gone(SESSION_VARIABLE, run, timeout=5)]
