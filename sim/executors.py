"""Where sweep runs execute: in this process, in a local process pool, or on a Dask cluster.

Every executor calls the same function on the same tasks and gives the same
results; only where and in which order tasks finish differ, so callers key results by
task, never by completion order. Worker processes are forked on Linux: they start in
well under a second (spawned ones re-import numpy, pandas and capsim first) and
work from scripts without a ``__main__`` guard and from notebooks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from .errors import ScenarioError

__all__ = ["EXECUTORS", "MAX_WORKERS", "check_executor", "map_tasks", "each_result", "progress_bar"]

EXECUTORS = ("serial", "processes", "dask")
#: more worker processes than this is a typo, not a machine
MAX_WORKERS = 1024

T = TypeVar("T")
R = TypeVar("R")


def check_executor(executor: str, workers: int | None) -> None:
    """Raise ScenarioError naming the argument when ``executor`` or ``workers`` is not accepted."""
    if executor not in EXECUTORS:
        raise ScenarioError("executor", f"must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or not 1 <= workers <= MAX_WORKERS):
        raise ScenarioError("workers", f"must be an integer in [1, {MAX_WORKERS}], got {workers!r}")


def _context() -> Any:
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _workers(workers: int | None) -> int:
    return workers or os.cpu_count() or 1


def map_tasks(fn: Callable[[T], R], tasks: Sequence[T], executor: str = "processes",
              workers: int | None = None) -> list[R]:
    """``[fn(t) for t in tasks]`` in the chosen executor, results in task order.

    For experiments that need more than the summary numbers :func:`sim.sweep` keeps.
    ``fn`` may live in a script: forked processes inherit it, and Dask workers get
    its module by value.
    """
    check_executor(executor, workers)
    if executor == "serial":
        return [fn(t) for t in tasks]
    if executor == "processes":
        with ProcessPoolExecutor(max_workers=_workers(workers), mp_context=_context()) as pool:
            return list(pool.map(fn, tasks))
    import cloudpickle
    from distributed import Client, LocalCluster

    # Workers cannot import a script, so its functions must travel by value. Distributed uses
    # cloudpickle (which honours the by-value registry) only for what plain pickle cannot
    # handle, hence the local wrapper.
    module = getattr(fn, "__module__", "__main__")
    if module != "__main__" and not module.startswith("sim.") and module in sys.modules:
        cloudpickle.register_pickle_by_value(sys.modules[module])

    def call(task: T) -> R:
        return fn(task)

    with LocalCluster(n_workers=_workers(workers), threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        return list(client.gather(client.map(call, tasks, pure=False)))


def each_result(fn: Callable[[T], R], tasks: Sequence[T], done: Callable[[T, R], None], executor: str,
                workers: int | None = None, dask_address: str | None = None) -> None:
    """Call ``done(task, fn(task))`` for every task as results arrive (in any order)."""
    check_executor(executor, workers)
    if executor == "serial" or not tasks:
        for t in tasks:
            done(t, fn(t))
    elif executor == "processes":
        _each_in_processes(fn, tasks, done, workers)
    else:
        _each_in_dask(fn, tasks, done, workers, dask_address)


def _each_in_processes(fn: Callable[[T], R], tasks: Sequence[T], done: Callable[[T, R], None],
                       workers: int | None) -> None:
    with ProcessPoolExecutor(max_workers=_workers(workers), mp_context=_context()) as pool:
        futures = {pool.submit(fn, t): t for t in tasks}
        try:
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _each_in_dask(fn: Callable[[T], R], tasks: Sequence[T], done: Callable[[T, R], None], workers: int | None,
                  address: str | None) -> None:
    import dask
    from distributed import Client, LocalCluster
    from distributed import as_completed as dask_completed

    cluster = None
    if address is None:
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        with dask.config.set({"distributed.worker.multiprocessing-method": method}):
            cluster = LocalCluster(n_workers=_workers(workers), threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = _connect(Client, address)
    try:
        futures = client.map(fn, list(tasks), pure=False)
        index = {f.key: t for f, t in zip(futures, tasks)}
        for fut in dask_completed(futures):
            done(index[fut.key], fut.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


#: how long to try to reach a Dask scheduler before saying it cannot be reached
CONNECT_TIMEOUT = "10s"


def _connect(client_class: Any, address: str) -> Any:
    """A client of the scheduler at ``address``, or ScenarioError naming ``dask_address`` (after CONNECT_TIMEOUT)."""
    try:
        return client_class(address, timeout=CONNECT_TIMEOUT)
    except Exception as exc:  # distributed raises OSError, ValueError or a bare AssertionError for bad addresses
        reason = str(exc) or f"{type(exc).__name__} (not an address like tcp://host:8786)"
        raise ScenarioError("dask_address", f"cannot connect to the Dask scheduler {address!r}: {reason}") from None


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar (or a silent stand-in) counting finished runs."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="run", desc="sweep", dynamic_ncols=True)
