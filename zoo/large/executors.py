"""Where block tasks run: threads of this process, or a Dask cluster (``zoo.large.distributed``).

A task is a module-level function ``task(get_zoo, shared, item)``: ``get_zoo()`` gives the
``Zoo`` of the process it runs in (loaded once per process), ``shared`` is the same for every
task of a stage (a job description), ``item`` names the piece of work (a block index, a
window). ``Executor.map`` yields the tasks' results as they finish, in any order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Protocol

from zoo.errors import InvalidParamsError

Task = Callable[[Callable[[], Any], Any, Any], Any]


class Executor(Protocol):
    """Runs the tasks of a stage somewhere.

    Attributes:
        concurrency: tasks one process runs at the same time (the block size's memory
            budget is shared among them).
    """

    concurrency: int

    def map(self, task: Task, shared: Any, items: Sequence[Any]) -> Iterator[Any]: ...


class ThreadExecutor:
    """Tasks on ``threads`` threads of this process, with this process's ``zoo``.

    At most ``threads`` tasks run at once; the first task that raises stops the stage (tasks
    not started are cancelled) and its error propagates.
    """

    def __init__(self, zoo: Any, threads: int = 1) -> None:
        if threads < 1:
            raise InvalidParamsError(f"threads must be >= 1, got {threads}")
        self.zoo, self.concurrency = zoo, threads

    def map(self, task: Task, shared: Any, items: Sequence[Any]) -> Iterator[Any]:
        def get_zoo() -> Any:
            return self.zoo

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="zoo-block") as pool:
            pending: set[Future[Any]] = {pool.submit(task, get_zoo, shared, item)
                                         for item in items}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            finally:
                for future in pending:
                    future.cancel()


_TORCH_LOCK = threading.Lock()


def one_torch_thread() -> None:
    """Give torch one intra-op thread (its CPU results depend on the thread count)."""
    import torch

    with _TORCH_LOCK:
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)


@contextmanager
def torch_threads_pinned() -> Iterator[None]:
    """One torch intra-op thread for the duration (the previous count is restored)."""
    import torch

    before = torch.get_num_threads()
    one_torch_thread()
    try:
        yield
    finally:
        torch.set_num_threads(before)
