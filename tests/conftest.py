"""Shared fixtures: small networks and synthetic labels, all in tmp_path; and the check that
the run leaves no process behind."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

# One numba cache for the whole run, its subprocesses and servers included (each test's own
# ZOO_HOME would otherwise compile the kernels again); set before numba is imported.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from zoo.model import SegmentationModel  # noqa: E402
from zoo.nets.cpnet import NetConfig  # noqa: E402

SMALL = NetConfig(channels=(2, 8, 16, 32, 64))
_DASK_SCRATCH: str | None = None


@pytest.fixture(scope="session")
def small_model() -> SegmentationModel:
    """A small, freshly initialised network whose cell-probability head is biased positive,
    so untrained flows still produce masks."""
    model = SegmentationModel.create(SMALL, diam_mean=20.0, seed=0)
    with torch.no_grad():
        model.net.head[-1].bias[2] = 2.0
    return model


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ---- one live split service for every HTTP test module --------------------------------------


@pytest.fixture(scope="session")
def service_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ZOO_HOME (and BENTOML_HOME below it) of the shared service."""
    return tmp_path_factory.mktemp("service-home")


@pytest.fixture(scope="session")
def service_url(service_home: Path):
    """The base URL of one ``bentoml serve zoo.service.app:CellZoo`` (split deployment) with
    ``tests.serving.SERVICE_ENV``, shared by the modules that speak HTTP to it."""
    from tests.serving import ROOT, SERVICE_ENV, served

    if not (ROOT / "models.yaml").is_file():
        pytest.skip("no shipped zoo")
    with served("zoo.service.app:CellZoo", service_home, env=SERVICE_ENV) as url:
        yield url


# ---- no process outlives the run ---------------------------------------------------------------
# Every process the tests start inherits this session's mark (servers, `zoo serve`, their
# workers, dask workers...). At the end, any of them still alive fails the run (and is killed).


def pytest_configure(config: pytest.Config) -> None:
    from tests.serving import SESSION_VARIABLE

    os.environ[SESSION_VARIABLE] = uuid.uuid4().hex
    # Dask's scratch space (LocalCluster workers' spill and lock files) goes to a folder of
    # this run, removed at its end, instead of a dask-scratch-space left in the system's /tmp
    global _DASK_SCRATCH
    _DASK_SCRATCH = tempfile.mkdtemp(prefix="cellzoo-tests-dask-")
    os.environ["DASK_TEMPORARY_DIRECTORY"] = _DASK_SCRATCH


@pytest.hookimpl(trylast=True)  # after the session fixtures (the shared service) are torn down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.serving import SESSION_VARIABLE, kill_all, wait_gone

    if _DASK_SCRATCH:
        shutil.rmtree(_DASK_SCRATCH, ignore_errors=True)

    left = wait_gone(SESSION_VARIABLE, os.environ[SESSION_VARIABLE], timeout=15,
                     ignore=_own_multiprocessing_helpers())
    if not left:
        return
    lines = []
    for process in left:
        try:
            lines.append(f"  pid {process.pid}: {' '.join(process.cmdline())[:200]}")
        except Exception:  # noqa: BLE001 (it may have just ended)
            lines.append(f"  pid {process.pid}")
    kill_all(left)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"{len(left)} process(es) started by the tests outlived them (killed now):"
    if reporter is not None:
        reporter.write_line(message + "\n" + "\n".join(lines), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _own_multiprocessing_helpers() -> set[int]:
    """The pids of this interpreter's own multiprocessing helpers (the resource tracker that
    a spawned pool, e.g. a Dask cluster, starts; the fork server): they live as long as the
    pytest process by design and exit when their pipe from it closes, so they outlive no
    test."""
    import sys

    pids = set()
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    if tracker is not None:
        pids.add(getattr(tracker._resource_tracker, "_pid", None))
    forkserver = sys.modules.get("multiprocessing.forkserver")
    if forkserver is not None:
        pids.add(getattr(forkserver._forkserver, "_forkserver_pid", None))
    return {pid for pid in pids if pid}
