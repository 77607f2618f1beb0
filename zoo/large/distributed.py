"""Dask as the engine beyond one machine: a cluster, a zoo per worker, block tasks on it.

- ``connect("local")`` starts a ``LocalCluster`` (worker processes, one thread each);
  ``connect("tcp://scheduler:8786")`` joins an existing cluster. Either way a
  ``ZooPlugin`` is registered: every worker (and every worker that joins later) builds its
  ``Zoo`` once, from the same ``Settings``, and gives torch one intra-op thread.
- ``DaskExecutor`` runs the block path's tasks (``zoo.large.engine``) as Dask futures; the
  job description is scattered to the workers once per stage.
- ``worker_zoo(settings)`` is the per-process zoo the tasks use.

Nothing here schedules or queues work itself: Dask's scheduler does. Workers must see the
same files as the client (a shared file system or object store mounted at the same path) and
have cellzoo installed (the same container image). Importing this module imports
dask.distributed (the ``large`` extra); nothing else in ``zoo`` does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

from distributed import Client, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin

from zoo.errors import InvalidParamsError, ZooError
from zoo.large.executors import Task, one_torch_thread
from zoo.settings import Settings

log = logging.getLogger(__name__)

_ZOOS: dict[Settings, Any] = {}
_ZOOS_LOCK = threading.Lock()


def worker_zoo(settings: Settings) -> Any:
    """This process's ``Zoo`` for ``settings``, built on first use and kept."""
    with _ZOOS_LOCK:
        if settings not in _ZOOS:
            from zoo.pipeline import Zoo
            from zoo.registry import Registry

            _ZOOS[settings] = Zoo(Registry.default(settings), settings=settings)
        return _ZOOS[settings]


def _call(item: Any, *, task: Task, shared: Any, settings: Settings) -> Any:
    return task(partial(worker_zoo, settings), shared, item)


class ZooPlugin(WorkerPlugin):
    """A Dask worker plugin: build the worker's zoo when it starts (once per worker).

    Args:
        settings: the zoo's settings (registry, backend, device, cache home).
        preload: model names to load now (e.g. the router's model and specialists).
    """

    name = "cellzoo"

    def __init__(self, settings: Settings, preload: tuple[str, ...] = ()) -> None:
        self.settings, self.preload = settings, tuple(preload)

    def setup(self, worker: Any) -> None:
        one_torch_thread()
        zoo = worker_zoo(self.settings)
        for name in self.preload:
            zoo.predictor(name)

    def teardown(self, worker: Any) -> None:
        with _ZOOS_LOCK:
            _ZOOS.pop(self.settings, None)


class DaskExecutor:
    """The block path's tasks as Dask futures on ``client``'s cluster.

    Args:
        client: a ``distributed.Client``.
        settings: the settings every worker's zoo is built from.
    """

    def __init__(self, client: Any, settings: Settings) -> None:
        self.client, self.settings = client, settings
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        self.concurrency = max((w.get("nthreads", 1) for w in workers), default=1)

    def map(self, task: Task, shared: Any, items: Sequence[Any]) -> Iterator[Any]:
        if not items:
            return
        handle = self.client.scatter(shared, broadcast=True, hash=False)
        futures = self.client.map(_call, list(items), task=task, shared=handle,
                                  settings=self.settings, pure=False)
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            self.client.cancel(futures)
            self.client.cancel([handle])


@contextmanager
def connect(address: str, *, settings: Settings, workers: int | None = None,
            threads: int = 1, preload: tuple[str, ...] = (), timeout: str = "10s"
            ) -> Iterator[Any]:
    """A ``distributed.Client`` for ``address`` with a ``ZooPlugin`` registered.

    Args:
        address: ``local`` (start a LocalCluster here) or a scheduler address
            (``tcp://host:8786``).
        settings: the settings of the workers' zoo.
        workers: worker processes of a local cluster (default: CPU count).
        threads: threads per local worker.
        preload: models every worker loads when it starts.
        timeout: how long to wait for a remote scheduler.

    Raises:
        ZooError: nothing answers at ``address``.
    """
    cluster = None
    if address == "local":
        import os

        n = workers or os.cpu_count() or 1
        if n < 1 or threads < 1:
            raise InvalidParamsError(f"workers and threads must be >= 1, got {n}, {threads}")
        cluster = LocalCluster(n_workers=n, threads_per_worker=threads, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError) as error:
            raise ZooError(f"no Dask scheduler answers at {address}: {error}") from error
    try:
        client.register_plugin(ZooPlugin(settings, preload), name=ZooPlugin.name)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

