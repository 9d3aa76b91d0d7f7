"""Where a run's tasks execute: here (``local``, the default), or on a Dask cluster (``dask``).

One small interface, so the stages say what fans out and not how:
``submit(function, *args, gpu=...)`` returns a future, ``as_completed``
yields futures as they finish, ``map`` returns results in call order, and
``share`` sends a large argument to the workers once. The stages use a
distributed executor for feature extraction (one task per backbone and image
size), head groups and fine-tuning; selection, testing and the reports stay in
the driver, as in a local run.

Dask is imported only when ``--executor dask`` asks for it, so a local run
needs nothing beyond the base install. Workers read and write the feature
cache and the results folder themselves: both must be on a filesystem every
worker and the driver see at the same path (NFS, Lustre, GPFS on a cluster).
It imports only ``common.isolated``, which imports nothing of ours.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from common.isolated import call_in_fresh_process

EXECUTORS = ("local", "dask")
# How long to wait for the scheduler to answer, and for a first worker to join it.
CONNECT_SECONDS = 20
WORKER_WAIT_SECONDS = 600


@dataclass(frozen=True)
class ExecutorSettings:
    """Which engine runs the tasks, and the cluster to use.

    ``cluster`` is a Dask scheduler address (``tcp://host:8786``) or a
    scheduler file; None means ``DASK_SCHEDULER_ADDRESS`` (Dask's own
    setting) if set, else a local cluster of single-threaded worker processes
    started for the run. ``local_workers`` sizes that local cluster (0: one
    per CPU core, up to 4, as the head workers).
    """

    kind: str = "local"
    cluster: str | None = None
    local_workers: int = 0

    @property
    def distributed(self) -> bool:
        """Whether tasks run in other processes, possibly on other machines, that read shared folders."""
        return self.kind != "local"


def is_address(cluster: str) -> bool:
    """Whether ``--cluster`` names a scheduler by address (``tcp://host:8786``, ``host:8786``) rather than a file."""
    return "://" in cluster or re.fullmatch(r"[^/\\\s]+:\d+", cluster) is not None


def check_cluster(cluster: str) -> None:
    """Raise ``ValueError`` (one line) if ``--cluster`` is neither an address nor a Dask scheduler file, so a
    missing file is said as such before any work rather than read as an address without its port."""
    if is_address(cluster):
        return
    path = Path(cluster)
    if not path.is_file():
        raise ValueError(f"--cluster {cluster}: no such scheduler file, and not a scheduler address (tcp://host:8786 "
                         "or host:8786)")  # fmt: skip
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        info = None
    if not (isinstance(info, dict) and isinstance(info.get("address"), str)):
        raise ValueError(f"--cluster {cluster} is not a Dask scheduler file (the JSON holding the scheduler's "
                         "address that dask scheduler --scheduler-file FILE writes)")  # fmt: skip


class ExecutorError(RuntimeError):
    """The engine is not installed, or the cluster cannot be reached: one line saying what to do."""


def _identity(value):
    return value


class LocalExecutor:
    """Every task runs here and now, in this process: the run as it always was."""

    kind = "local"
    distributed = False

    def submit(self, function: Callable, *args, gpu: bool = False, single_threaded: bool = False) -> Future:
        """Run ``function(*args)`` now, in this process; a finished future holding its result or exception."""
        future: Future = Future()
        try:
            future.set_result(function(*args))
        except Exception as error:
            future.set_exception(error)
        return future

    def as_completed(self, futures: Iterable[Future]) -> Iterator[Future]:
        """The futures (all finished already), in order."""
        yield from futures

    def map(self, function: Callable, calls: list[tuple], *, gpu: bool = False) -> list:
        """``function(*call)`` for each call, in order; the first exception is raised."""
        return [function(*call) for call in calls]

    def share(self, value):
        """``value`` itself: nothing to send."""
        return value

    def cancel(self, futures: Iterable[Future]) -> None:
        """Nothing runs in the background."""

    def describe(self) -> str:
        """For the log."""
        return "local"


class DaskExecutor:
    """Tasks on a Dask cluster, through a ``distributed.Client``.

    Each task runs in a fresh Python process started by the worker
    (``common.isolated``: a worker's own threads would change a seeded
    model), single-threaded where the local run uses single-threaded
    processes for that work. A task asking for a GPU requests the worker
    resource ``GPU: 1`` when some worker of the cluster was started with
    ``--resources GPU=1``; on a cluster without GPUs it is a plain task, run
    on one worker thread with the CPU threads of the worker's machine.
    """

    kind = "dask"
    distributed = True

    def __init__(self, client, cluster=None):
        self.client, self.cluster = client, cluster

    @property
    def gpu_workers(self) -> int:
        """Workers now in the cluster that were started with a GPU resource."""
        workers = self.client.scheduler_info().get("workers", {})
        return sum(1 for w in workers.values() if w.get("resources", {}).get("GPU"))

    def _resources(self, gpu: bool) -> dict | None:
        return {"GPU": 1} if gpu and self.gpu_workers else None

    def submit(self, function: Callable, *args, gpu: bool = False, single_threaded: bool = False):
        """Schedule ``function(*args)`` on a worker, in a process of its own; a Dask future.

        Never deduplicated: every call runs, even one identical to another.
        """
        return self.client.submit(partial(call_in_fresh_process, single_threaded=single_threaded), function, *args,
                                  resources=self._resources(gpu), pure=False,
                                  key=f"{function.__name__}-{os.urandom(6).hex()}")  # fmt: skip

    def as_completed(self, futures: Iterable) -> Iterator:
        """The futures as each finishes."""
        from dask.distributed import as_completed

        yield from as_completed(list(futures))

    def map(self, function: Callable, calls: list[tuple], *, gpu: bool = False) -> list:
        """``function(*call)`` for each call, in parallel on the workers; the results in call order."""
        futures = [self.submit(function, *call, gpu=gpu) for call in calls]
        try:
            return [future.result() for future in futures]
        except BaseException:
            self.cancel(futures)
            raise

    def share(self, value):
        """Send ``value`` to the cluster once; the future stands for it in any task's arguments.

        Made by a task rather than scattered: the scheduler keeps the task, so
        a copy lost with a killed worker is made again (scattered data would be
        gone, and every task needing it cancelled).
        """
        key = f"shared-{type(value).__name__}-{os.urandom(6).hex()}"
        return self.client.submit(_identity, value, pure=False, key=key)

    def cancel(self, futures: Iterable) -> None:
        """Drop tasks not yet finished (a running one ends its current write, which is atomic)."""
        self.client.cancel(list(futures))

    def describe(self) -> str:
        """For the log: the scheduler and its workers."""
        info = self.client.scheduler_info()
        workers = info.get("workers", {})
        threads = sum(w.get("nthreads", 0) for w in workers.values())
        gpus = f", {self.gpu_workers} with a GPU" if self.gpu_workers else ""
        return f"dask at {info.get('address', '?')}: {len(workers)} workers, {threads} threads{gpus}"


Executor = LocalExecutor | DaskExecutor


@contextmanager
def open_executor(settings: ExecutorSettings) -> Iterator[Executor]:
    """The executor ``settings`` names, connected (and its local cluster started) for the ``with`` block."""
    if not settings.distributed:
        yield LocalExecutor()
        return
    try:
        import dask
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ExecutorError('--executor dask needs Dask: pip install "cxr-bench[dask]"') from None
    address = settings.cluster or dask.config.get("scheduler-address", None)
    cluster = None
    if address is None:
        workers = settings.local_workers or min(os.cpu_count() or 1, 4)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        address = cluster.scheduler_address
    try:
        client = _connect(Client, address)
        try:
            yield DaskExecutor(client, cluster)
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def _connect(client_class, address: str):
    """A client of the scheduler at ``address`` (or named in the scheduler file ``address``) with a worker."""
    by_file = Path(address).is_file()
    try:
        client = client_class(scheduler_file=address, timeout=CONNECT_SECONDS) if by_file else client_class(
            address, timeout=CONNECT_SECONDS)  # fmt: skip
    except (OSError, TimeoutError, ValueError) as error:
        raise ExecutorError(f"cannot reach the Dask scheduler at {address} ({type(error).__name__}: {error}); start "
                            "one (dask scheduler, then dask worker ADDRESS on each machine) or fix --cluster / "
                            "DASK_SCHEDULER_ADDRESS") from None  # fmt: skip
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
    except TimeoutError:
        client.close()
        raise ExecutorError(f"the Dask scheduler at {address} has had no worker for {WORKER_WAIT_SECONDS} s; "
                            "start one with: dask worker ADDRESS") from None  # fmt: skip
    return client
