"""How many CPU threads torch may use: the cores this process may run on, unless told otherwise.

torch's default is every core of the machine, whatever the process's CPU affinity (``taskset``,
a cgroup cpuset, a SLURM allocation): jobs side by side then run more threads than cores and
each one slows down several-fold. The count is set through ``OMP_NUM_THREADS`` before torch is
imported (so ``cimtool --help`` never loads torch), and directly when torch is already loaded.

Idle OpenMP threads also *sleep* instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, unless the
user set a policy): a spinning thread holds a core that another job's thread is waiting for.
Measured on 2 cores (tests/bench/bench_scale.py, two ``map-weights --evaluate`` side by side):
3.5× the time of one alone with spinning threads, 1.3× with sleeping ones, and one job alone
equally fast either way.
"""

from __future__ import annotations

import os
import sys

from cimtool.errors import CimtoolError

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_affinity() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch threads (None: an ``OMP_NUM_THREADS`` already set, else the CPU affinity)."""
    if threads is not None and threads < 1:
        raise CimtoolError(f"--threads must be at least 1, got {threads}")
    if threads is None:
        given = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(given) if given.isdigit() and int(given) > 0 else cpu_affinity()
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads (module docstring)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads
