"""Where independent units of work run: in this process (``local``) or on a Ray cluster (``ray``).

A stage hands an executor a function ``fn(context, unit)``, one ``context`` (what every unit reads:
models, data splits, calibrations) and a list of units; ``map`` yields ``(index, result)`` as units
finish. The stage orders the results by index, so its output does not depend on the executor, the
number of workers or the order in which they finish.

**Ray** (https://docs.ray.io): the context is put once into the object store and each worker, an
actor that declares its CPUs (and a GPU with ``gpu=True``), fetches it once, with its first unit;
each unit is one task on a worker (an actor task), ``IN_FLIGHT`` of them queued per worker. A worker
whose process dies is restarted and its units retried, up to ``max_retries`` times; beyond that the
run stops with ``IncompleteRun`` once the units in flight have finished. Without an address
(``--address`` or ``RAY_ADDRESS``) a local cluster with this process's cores is started and stopped
again at the end.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cimtool.errors import CimtoolError, IncompleteRun
from cimtool.threads import cpu_affinity, keep_freed_memory, set_threads

INSTALL_RAY = "pip install 'cimtool[ray]'"
Unit = Callable[[Any, Any], Any]  # fn(context, unit) -> result
IN_FLIGHT = 2  # Ray: units queued on a worker, so that it starts the next without waiting for the driver
CONNECT_TIMEOUT_S = 5.0  # an unreachable --address fails after this, not after Ray's minute of retries


@dataclass(frozen=True)
class ExecutorConfig:
    name: str = "local"
    address: str | None = None  # Ray: "auto", "host:port" or "ray://host:port"; None: a local cluster
    workers: int | None = None  # Ray: default one per CPU of the cluster (per GPU with gpu=True)
    threads_per_worker: int = 1
    gpu: bool = False  # Ray: each worker holds one GPU
    max_retries: int = 3  # Ray: restarts of a dead worker (its unit is retried on the new one)


class LocalExecutor:
    """Every unit in turn, in this process."""

    def __init__(self, cfg: ExecutorConfig) -> None:
        self.workers = 1
        self.description = "local (this process)"

    def map(self, fn: Unit, context: Any, units: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for i, unit in enumerate(units):
            yield i, fn(context, unit)

    def close(self) -> None:
        pass


def _import_ray():
    try:
        import ray
    except ImportError:
        raise CimtoolError(f"--executor ray needs Ray, which is not installed: {INSTALL_RAY}") from None
    return ray


def check_address(address: str) -> None:
    """Refuse, in one line and within CONNECT_TIMEOUT_S, a ``host:port`` that nothing answers on."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise CimtoolError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CimtoolError(f"--address {address}: no Ray cluster answers there ({reason})") from None


def check_executor(cfg: ExecutorConfig) -> None:
    """Refuse, before any work, an executor that cannot run: unknown, Ray missing, no cluster there."""
    if cfg.name not in EXECUTORS:
        raise CimtoolError(f"--executor {cfg.name}: expected one of {', '.join(EXECUTORS)}")
    if cfg.workers is not None and cfg.workers < 1:
        raise CimtoolError(f"--workers must be >= 1, got {cfg.workers}")
    if cfg.name == "ray":
        _import_ray()
        address = cfg.address or os.environ.get("RAY_ADDRESS")
        if address:
            check_address(address)


class _Worker:
    """A Ray actor: starts torch at once (while the driver still loads its inputs), fetches the
    shared context with its first unit (again after a restart) and runs units."""

    def __init__(self, threads: int) -> None:
        import torch  # noqa: F401 (the slow import, done before the first unit arrives)

        set_threads(threads)  # the threads it declared, no more (cimtool/threads.py)
        keep_freed_memory()
        self.context, self.context_id = None, None

    def ready(self) -> bool:
        return True

    def run(self, fn: Unit, unit: Any, shared: list) -> Any:
        import ray

        ref = shared[0]  # in a list, so that Ray passes the reference and this worker fetches it once
        if self.context_id != ref.hex():
            self.context, self.context_id = ray.get(ref), ref.hex()
        return fn(self.context, unit)


class RayExecutor:
    """Units as tasks on Ray workers; see the module docstring."""

    def __init__(self, cfg: ExecutorConfig) -> None:
        ray = _import_ray()
        address = cfg.address or os.environ.get("RAY_ADDRESS") or None
        self.cfg, self.ray, self.actors = cfg, ray, []
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                      logging_level=logging.ERROR, configure_logging=False)
        if address is None:  # a cluster of our own ("local": even where another one runs), this process's
            address = "local"  # cores or the workers asked for
            kwargs["num_cpus"] = max(cpu_affinity(), (cfg.workers or 0) * cfg.threads_per_worker)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f" at {address}" if address != "local" else ""
            raise CimtoolError(f"--executor ray: cannot start or join a Ray cluster{where}: "
                               f"{str(exc).splitlines()[0]}") from None
        resources = ray.cluster_resources()
        per = "GPU" if cfg.gpu else "CPU"
        available = int(resources.get(per, 0) // (1 if cfg.gpu else cfg.threads_per_worker))
        if available < 1:
            self.close()
            raise CimtoolError(f"--executor ray: the cluster has no {per} for a worker ({resources})")
        self.workers = cfg.workers or available
        where = "a local cluster" if address == "local" else address
        self.description = (f"ray ({where}: {self.workers} workers × {cfg.threads_per_worker} thread(s)"
                            f"{', 1 GPU each' if cfg.gpu else ''})")
        actor = ray.remote(_Worker).options(
            num_cpus=cfg.threads_per_worker, num_gpus=1 if cfg.gpu else 0,
            max_restarts=cfg.max_retries, max_task_retries=cfg.max_retries)
        # started now: they import torch while the caller prepares the units
        self.actors = [actor.remote(cfg.threads_per_worker) for _ in range(self.workers)]

    def map(self, fn: Unit, context: Any, units: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        ray = self.ray
        shared = ray.put(context)  # into the object store once; each worker fetches it once
        pending = list(enumerate(units))[::-1]
        # task -> (unit index, worker); a worker gets its first units when it is up (index None: its
        # ready call), so that no unit waits for a worker that is still starting
        running: dict[Any, tuple[int | None, Any]] = {w.ready.remote(): (None, w) for w in self.actors}
        failure: BaseException | None = None

        def submit(worker) -> None:
            i, unit = pending.pop()
            running[worker.run.remote(fn, unit, [shared])] = (i, worker)

        while running:
            [done], _ = ray.wait(list(running), num_returns=1)
            i, worker = running.pop(done)
            if i is None:  # a worker is up: it gets IN_FLIGHT units, then one for each it returns
                for _ in range(IN_FLIGHT):
                    if pending and failure is None:
                        submit(worker)
                continue
            try:
                result = ray.get(done)
            except ray.exceptions.RayTaskError as exc:  # the unit raised: the user sees its error
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                failure = failure or cause
                continue
            except ray.exceptions.RayActorError as exc:  # the worker died more than max_retries times
                failure = failure or IncompleteRun(
                    f"--executor ray: a worker died {self.cfg.max_retries + 1} times running unit "
                    f"{i + 1} of {len(units)} ({str(exc).splitlines()[0][:160]})")
                continue
            if pending and failure is None:
                submit(worker)
            yield i, result
        if failure is not None:
            raise failure

    def close(self) -> None:  # also ends units still running (after Ctrl-C)
        for worker in self.actors:
            self.ray.kill(worker)
        self.ray.shutdown()


EXECUTORS: dict[str, Callable[[ExecutorConfig], LocalExecutor | RayExecutor]] = {
    "local": LocalExecutor, "ray": RayExecutor}


def open_executor(cfg: ExecutorConfig) -> LocalExecutor | RayExecutor:
    check_executor(cfg)
    return EXECUTORS[cfg.name](cfg)
