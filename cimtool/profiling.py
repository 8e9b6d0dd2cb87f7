"""The measurement harness of ``cimtool profile``: timed calls, peak memory and op counts of a
network's forward (and backward) runs, on CPU or CUDA.

A ``Cell`` is one measured configuration (mode, phase, dtype, device) at one batch size: a call
on ready inputs and the reset that runs before it (not timed). ``Bench`` builds the cells of a
float model, its ``torch.compile`` and a spiking network (``SpikingNetwork.run`` and its one-pass
twin); ``measure`` runs them, warm-up first, then timed runs interleaved round-robin over the
cells of one batch size.

- ``time_ms``: wall time of one call, ``torch.cuda.Event`` pairs with a synchronisation on CUDA,
  ``time.perf_counter`` on CPU.
- ``peak_memory_mb``: the most memory one call holds at once beyond what was allocated before it
  started: ``torch.cuda.max_memory_allocated() − memory_allocated()`` on CUDA, the high-water mark
  of torch's CPU allocations and frees under ``torch.profiler`` on CPU (``memory_high_water``).
- ``op_profile``: op count, CUDA kernel count and the top ``TOP_OPS`` ops by self time of one call
  under ``torch.profiler``.

torch is imported inside the functions that use it, never at module import.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cimtool.ui import Reporter

ANN_MODES = ("ann_eager", "ann_compiled")
SNN_MODES = ("snn", "one_pass")
MODES = ANN_MODES + SNN_MODES
PHASES = ("forward", "forward_backward")
TOP_OPS = 10

Key = tuple[str, str, str, int]  # (mode, phase, dtype, batch size): one row of a profile


@dataclass
class Cell:
    """One measured configuration at one batch size: a call on ready inputs and its reset."""

    mode: str
    phase: str
    dtype: str
    device: str  # where it runs: "cpu" or "cuda"
    call: Callable[[], Any]
    reset: Callable[[], None]
    note: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.mode, self.phase, self.dtype


def time_ms(cell: Cell) -> float:
    """Wall time of one call: CUDA events on the GPU, perf_counter on the CPU."""
    import torch

    cell.reset()
    if cell.device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        cell.call()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    cell.call()
    return 1e3 * (time.perf_counter() - t0)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Kineto writes 'profiler_start/stop' lines to file descriptor 2 from C++ at every profiler
    start and stop; hide them (only around profiler runs, while no progress bar is live)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def memory_high_water(prof) -> int:
    """Peak of the running sum of CPU allocations (+) and frees (−) in a ``profile_memory=True``
    run, in bytes, in time order: from the profiler's raw allocation records (every allocation
    and free), else (older torch) at operator resolution from its events."""
    from torch.autograd import DeviceType

    cpu = (DeviceType.CPU, DeviceType.MKLDNN, DeviceType.IDEEP)
    try:
        deltas = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and e.device_type() in cpu]
    except AttributeError:  # each op's net allocation (children excluded) at its start
        deltas = [(e.time_range.start,
                   e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
                  for e in prof.events()]
    level = peak = 0
    for _, delta in sorted(deltas, key=lambda d: d[0]):  # stable: same-time records keep their order
        level += delta
        peak = max(peak, level)
    return peak


def peak_memory_mb(cell: Cell) -> float:
    import torch

    cell.reset()
    if cell.device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        cell.call()
        torch.cuda.synchronize()
        return max(0, torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        cell.call()
    return memory_high_water(prof) / 2**20


def device_time_us(event) -> float:
    value = getattr(event, "self_device_time_total", None)
    if value is None:  # older torch
        value = getattr(event, "self_cuda_time_total", 0.0)
    return float(value or 0.0)


def op_profile(cell: Cell) -> tuple[int, int | None, list[dict[str, Any]]]:
    """(op_count, kernel_count, top ops) of one call under torch.profiler."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = cell.device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    cell.reset()
    with native_stderr_silenced(), profile(activities=activities) as prof:
        cell.call()
        if cuda:
            torch.cuda.synchronize()
    averages = list(prof.key_averages())
    on_cpu = [e for e in averages if getattr(e, "device_type", DeviceType.CPU) == DeviceType.CPU
              and e.key != "[memory]" and not e.key.startswith("cuda")]
    kernels = [e for e in averages if getattr(e, "device_type", None) == DeviceType.CUDA]
    op_count = sum(int(e.count) for e in on_cpu)
    kernel_count = sum(int(e.count) for e in kernels) if cuda else None
    if cuda:
        ranked = sorted(((e.key, int(e.count), device_time_us(e) / 1e3) for e in kernels),
                        key=lambda r: (-r[2], r[0]))
    else:
        ranked = sorted(((e.key, int(e.count), float(e.self_cpu_time_total) / 1e3) for e in on_cpu),
                        key=lambda r: (-r[2], r[0]))
    top = [{"mode": cell.mode, "device": cell.device, "rank": i + 1, "op": name, "calls": calls,
            "self_time_ms": ms} for i, (name, calls, ms) in enumerate(ranked[:TOP_OPS])]
    return op_count, kernel_count, top


class Bench:
    """The networks of one profile and the cells they give at a batch size."""

    def __init__(self, model, snn, device: str, test, seed: int, modes: tuple[str, ...],
                 reporter: Reporter) -> None:
        import torch

        self.snn = snn
        self.device = torch.device(device)
        self.test = test
        self.seed = seed
        self.modes = modes
        self.bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
        self.model = model.to(self.device).eval()
        self.compiled = None
        self.failed: dict[str, str] = {}  # mode -> why it was skipped
        if "ann_compiled" in modes:
            try:
                self.compiled = torch.compile(self.model)
            except Exception as exc:  # any compiler failure skips the mode, whatever its type
                self.fail("ann_compiled", exc, reporter)

    def fail(self, mode: str, exc: BaseException, reporter: Reporter) -> None:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        self.failed[mode] = f"skipped: torch.compile failed ({type(exc).__name__}: {first})"
        reporter.log(f"[yellow]profile: {mode} {self.failed[mode]}[/yellow]")

    def dtypes(self, mode: str) -> tuple[str, ...]:
        return ("fp32", "bf16") if mode in ANN_MODES and self.bf16 else ("fp32",)

    def keys(self) -> list[tuple[str, str, str]]:
        """(mode, phase, dtype) of every row at one batch size, in table order."""
        return [(mode, phase, dtype)
                for mode in self.modes for phase in PHASES for dtype in self.dtypes(mode)]

    def inputs(self, batch: int):
        import torch

        idx = torch.arange(batch) % len(self.test)
        return self.test.x[idx], self.test.y[idx]

    def cells(self, batch: int) -> list[Cell]:
        x_cpu, y_cpu = self.inputs(batch)
        x, y = x_cpu.to(self.device), y_cpu.to(self.device)
        out = []
        for mode, phase, dtype in self.keys():
            if mode in self.failed:
                continue
            if mode in ANN_MODES:
                net = self.model if mode == "ann_eager" else self.compiled
                out.append(self._ann_cell(mode, phase, dtype, net, x, y))
            elif phase == "forward":
                out.append(self._snn_cell(mode, x))
            else:
                out.append(self._snn_train_cell(mode, x, y))
        return out

    def _ann_cell(self, mode: str, phase: str, dtype: str, net, x, y) -> Cell:
        import torch

        from cimtool.train.batching import to_float

        def autocast():
            if dtype == "bf16":
                return torch.autocast("cuda", dtype=torch.bfloat16)
            return contextlib.nullcontext()

        def forward() -> None:
            with torch.no_grad(), autocast():
                net(to_float(x))

        def forward_backward() -> None:
            with autocast():
                logits = net(to_float(x))
            torch.nn.functional.cross_entropy(logits.float(), y).backward()

        def reset() -> None:
            self.model.zero_grad(set_to_none=True)

        return Cell(mode, phase, dtype, self.device.type,
                     forward if phase == "forward" else forward_backward, reset)

    def _snn_cell(self, mode: str, x) -> Cell:
        import torch

        net = self.snn
        analog = net.cfg.encoding == "analog"
        # as SpikingNetwork.predict: the spiking run folds T steps into the batch
        size = net.batch_size(x, 1 if mode == "one_pass" and analog else net.cfg.timesteps)
        gen = torch.Generator(self.device).manual_seed(self.seed)
        step = net.one_pass if mode == "one_pass" else net.run
        chunks = [x[i: i + size] for i in range(0, len(x), size)]

        def call() -> None:
            for chunk in chunks:
                step(chunk, gen=gen)

        note = f"{len(chunks)} chunks of ≤ {size} samples (SpikingNetwork.batch_size)" if len(chunks) > 1 \
            else None
        return Cell(mode, "forward", "fp32", self.device.type, call, lambda: None, note)

    def _snn_train_cell(self, mode: str, x, y) -> Cell:
        """One training step's forward and backward: of the spiking network through its T steps
        (``snn``: BPTT, ``cimtool.nn.snn_train``) or of its quantized-ANN twin (``one_pass``: the
        model with its ReLUs as the neurons' quantizers, ``cimtool.nn.qann``)."""
        import copy

        import torch

        from cimtool.nn.qann import QuantizedTwin
        from cimtool.nn.snn_train import spiking_logits
        from cimtool.train.batching import to_float

        net = self.snn
        if mode == "one_pass":
            model = QuantizedTwin(copy.deepcopy(self.model), net.thetas, net.cfg.n_min, net.cfg.p_max,
                                  need_relus=False)

            def logits():
                return model(to_float(x))
            note = "the twin: ReLUs as the neurons' quantizers (LSQ thresholds)"
        else:
            model = net.model

            def logits():
                return spiking_logits(net, x, net.cfg.timesteps)
            note = f"BPTT through T={net.cfg.timesteps} steps (straight-through spikes)"

        def call() -> None:
            torch.nn.functional.cross_entropy(logits(), y).backward()

        return Cell(mode, "forward_backward", "fp32", self.device.type, call,
                    lambda: model.zero_grad(set_to_none=True), note)


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def measure(bench: Bench, batches: list[int], repeats: int, warmup: int,
            reporter: Reporter) -> tuple[dict[Key, list[float]], dict[Key, Cell]]:
    """Warm-up and interleaved timed runs; returns the times and the last cells of every row.

    Each cell gets ``warmup`` untimed runs (at least one for ``ann_compiled``, so that compiling is
    never timed; a compilation that fails there skips the mode), then ``repeats`` timed runs,
    round-robin over the cells of one batch size."""
    times: dict[Key, list[float]] = {}
    cells: dict[Key, Cell] = {}
    per_batch = len(bench.keys())

    def warm(cell: Cell) -> int:
        return max(warmup, 1) if cell.mode == "ann_compiled" else warmup

    total = len(batches) * per_batch * (repeats + warmup)
    with reporter.progress() as progress:
        task = progress.add_task("profile", total=total, status="")
        for batch in batches:
            progress.update(task, status=f"B={batch}: warm-up")
            active = []
            for cell in bench.cells(batch):
                try:
                    for _ in range(warm(cell)):
                        time_ms(cell)
                except Exception as exc:
                    if cell.mode != "ann_compiled":
                        raise
                    bench.fail(cell.mode, exc, reporter)
                else:
                    active.append(cell)
                progress.advance(task, warmup)
            active = [c for c in active if c.mode not in bench.failed]
            progress.update(task, status=f"B={batch}: timing")
            for cell in active:
                times[(*cell.key, batch)] = []
                cells[(*cell.key, batch)] = cell
            for _ in range(repeats):
                for cell in active:
                    times[(*cell.key, batch)].append(time_ms(cell))
                progress.advance(task, per_batch)
        progress.update(task, completed=total, status="done")
    failed = set(bench.failed)
    return ({k: v for k, v in times.items() if k[0] not in failed},
            {k: v for k, v in cells.items() if k[0] not in failed})
