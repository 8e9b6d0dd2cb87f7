"""Process settings for torch on CPU: how many threads, how idle threads wait, how freed memory is kept.

**Threads.** The cores this process may run on, unless told otherwise.

torch's default is every core of the machine, whatever the process's CPU affinity (``taskset``,
a cgroup cpuset, a SLURM allocation): jobs side by side then run more threads than cores and
each one slows down several-fold. The count is set through ``OMP_NUM_THREADS`` before torch is
imported (so ``cimtool --help`` never loads torch), and directly when torch is already loaded.

Idle OpenMP threads also *sleep* instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, unless the
user set a policy): a spinning thread holds a core that another job's thread is waiting for.
Measured on 2 cores (tests/bench/bench_scale.py, two ``map-weights --evaluate`` side by side):
3.5× the time of one alone with spinning threads, 1.3× with sleeping ones, and one job alone
equally fast either way.

**Freed memory stays in the process** (glibc only). glibc serves every allocation above a
threshold (at most 32 MiB by its own rule) with a fresh ``mmap`` and returns it on ``free``, so a
batch's working tensors are page-faulted and zeroed by the kernel anew for every batch. Raising
the mmap and trim thresholds keeps freed memory for the next batch, which is what the jemalloc and
tcmalloc that PyTorch's CPU tuning guide recommends do too. Measured on 2 cores
(mnist_cnn, Fashion-MNIST test split): a non-ideal array pass 5.6 s → 4.3 s (system time
2.6 s → 0.03 s), the float pass 0.81 s → 0.48 s; the peak resident memory is what it was (the
pages are kept instead of given back between batches).
"""

from __future__ import annotations

import ctypes
import os
import sys

from cimtool.checks import check_range

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
KEEP_BYTES = 1 << 30  # allocations up to this come from (and go back to) the heap


def cpu_affinity() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch threads (None: an ``OMP_NUM_THREADS`` already set, else the CPU affinity)."""
    if threads is not None:
        check_range("--threads", threads, 1)
    else:
        given = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(given) if given.isdigit() and int(given) > 0 else cpu_affinity()
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads (module docstring)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (module docstring); False where there is no glibc."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    except (OSError, AttributeError):
        return False
