"""`cimtool profile`: latency, throughput, memory and op counts of the ANN and its spiking twin.

Input: a model, qmodel or snn artifact. An snn artifact brings its network (thresholds, neuron,
encoding, T); a plain model is converted the way ``cimtool sweep`` does it (default spiking
settings, θ at 1 × P99.9 of the train split). Modes (``MODES``):

- ``ann_eager``: the float model as it is; ``ann_compiled``: ``torch.compile`` of it (a failed
  compilation, e.g. without a C++ compiler, is recorded in ``note`` and the mode skipped);
- ``snn``: ``SpikingNetwork.run`` at the network's T; ``one_pass``: its quantized-ANN twin.

Inputs are real samples: the first ``B`` of the model's test split (tiled when ``B`` is larger).
Every figure is timed as the whole call on raw inputs (uint8 → float conversion included, as in
``SpikingNetwork.run``). For each mode × phase × dtype × batch size: ``warmup`` untimed runs
(at least one for ``ann_compiled``, so that compiling is never timed), then ``repeats`` timed
runs, interleaved round-robin over the modes of one batch size so that load changes hit every
mode alike; the median and the 10th/90th percentiles are reported, and throughput = B / median.
``forward`` runs under ``torch.no_grad``; ``forward_backward`` (ANN modes only: the spiking
network has no gradient path) is cross-entropy on the labels and ``.backward()``, with the
gradients set to None before every run (not timed). Both phases keep the model in eval mode.
Spiking networks chunk a batch as ``SpikingNetwork.batch_size`` says (noted in ``note``).

On CPU the clock is ``time.perf_counter``; on CUDA, ``torch.cuda.Event`` pairs with a
synchronisation, and the ANN modes get extra ``dtype = "bf16"`` rows under
``torch.autocast("cuda", dtype=torch.bfloat16)``. The spiking simulation runs on the same device
as the ANN.

``peak_memory_mb``, from one extra run per row after the timed ones: the most memory that run
holds at once *beyond what was allocated before it started* (weights, inputs and other resident
tensors are not counted; activations, workspaces and gradients are). On CUDA it is
``torch.cuda.max_memory_allocated() − memory_allocated()`` before the run, after
``reset_peak_memory_stats``. On CPU it is the high-water mark of the running sum of torch's CPU
allocations and frees recorded by ``torch.profiler.profile(profile_memory=True)``, taken in time
order from its raw allocation records (``memory_high_water``).

Op counts: one ``torch.profiler`` run per mode (forward, fp32, the largest batch size; CPU
activity, plus CUDA on a CUDA device). ``op_count`` = the calls of every CPU-side profiler
event (torch ops with their nested calls, compiled regions; not memory records or CUDA runtime
calls); ``kernel_count`` = CUDA kernels (null on CPU). The top ``TOP_OPS`` ops by self time (CPU
time on CPU, device time of the kernels on CUDA) go to ``ops.parquet``.

Writes a ``profile`` artifact:

- ``profile.parquet`` (``PROFILE_SCHEMA``), one row per mode × phase × dtype × batch size: ``mode``,
  ``phase`` (forward, forward_backward), ``dtype`` (fp32, bf16), ``device`` (where it ran),
  ``batch_size``, ``timesteps`` (spiking modes), ``repeats``, ``latency_ms`` (median),
  ``latency_p10_ms``, ``latency_p90_ms``, ``throughput_sps`` (samples/s), ``peak_memory_mb``,
  ``op_count`` and ``kernel_count`` (the profiled rows only), ``note``. A skipped mode keeps its
  rows, with null figures and the reason in ``note``.
- ``ops.parquet`` (``OPS_SCHEMA``): ``mode``, ``batch_size``, ``device``, ``rank``, ``op``, ``calls``,
  ``self_time_ms``.

The summary compares the modes at the largest batch size that all of them measured. Same inputs
and seed give the same rows and columns; the timings themselves vary from run to run.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.checks import check_choices, check_range
from cimtool.data.calibration import check_calibration_samples
from cimtool.errors import CimtoolError
from cimtool.stages.common import StageOutput, check_torch_device, resolve_device
from cimtool.stages.params import ProfileParams  # noqa: F401 (re-exported)
from cimtool.ui import Reporter

KIND = "profile"
ANN_MODES = ("ann_eager", "ann_compiled")
SNN_MODES = ("snn", "one_pass")
MODES = ANN_MODES + SNN_MODES
PHASES = ("forward", "forward_backward")
PHASE_LABELS = {"forward": "fwd", "forward_backward": "fwd+bwd"}  # in the rich table
TOP_OPS = 10
MAX_BATCH = 1 << 16
MAX_REPEATS = 10_000

PROFILE_SCHEMA = pa.schema([
    ("mode", pa.string()), ("phase", pa.string()), ("dtype", pa.string()), ("device", pa.string()),
    ("batch_size", pa.int64()), ("timesteps", pa.int64()), ("repeats", pa.int64()),
    ("latency_ms", pa.float64()), ("latency_p10_ms", pa.float64()), ("latency_p90_ms", pa.float64()),
    ("throughput_sps", pa.float64()), ("peak_memory_mb", pa.float64()), ("op_count", pa.int64()),
    ("kernel_count", pa.int64()), ("note", pa.string()),
])
OPS_SCHEMA = pa.schema([
    ("mode", pa.string()), ("batch_size", pa.int64()), ("device", pa.string()), ("rank", pa.int64()),
    ("op", pa.string()), ("calls", pa.int64()), ("self_time_ms", pa.float64()),
])




def validate(p: ProfileParams) -> None:
    if not p.model:
        raise CimtoolError("--model is required: a model, qmodel or snn artifact")
    if not p.batch_sizes:
        raise CimtoolError("--batch-sizes is empty")
    bad = [b for b in p.batch_sizes if not 1 <= b <= MAX_BATCH]
    if bad:
        raise CimtoolError(f"--batch-sizes must all be in 1..{MAX_BATCH}, got {bad}")
    if len(set(p.batch_sizes)) != len(p.batch_sizes):
        raise CimtoolError(f"--batch-sizes lists a size twice: {list(p.batch_sizes)}")
    check_range("--repeats", p.repeats, 1, MAX_REPEATS)
    check_range("--warmup", p.warmup, 0, MAX_REPEATS)
    if not p.modes:
        raise CimtoolError("--modes is empty")
    check_choices("--modes", p.modes, MODES)
    if len(set(p.modes)) != len(p.modes):
        raise CimtoolError(f"--modes lists a mode twice: {', '.join(p.modes)}")
    check_torch_device(p.torch_device)
    check_calibration_samples(p.calibration_samples)
    if not 0 <= p.seed < 2**32:
        raise CimtoolError(f"--seed must be in [0, 2**32), got {p.seed}")


# --- measurement ---------------------------------------------------------------------------------

@dataclass
class _Cell:
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


def _time_ms(cell: _Cell) -> float:
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
def _native_stderr_silenced() -> Iterator[None]:
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


def _peak_memory_mb(cell: _Cell) -> float:
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

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        cell.call()
    return memory_high_water(prof) / 2**20


def _device_time_us(event) -> float:
    value = getattr(event, "self_device_time_total", None)
    if value is None:  # older torch
        value = getattr(event, "self_cuda_time_total", 0.0)
    return float(value or 0.0)


def _op_profile(cell: _Cell) -> tuple[int, int | None, list[dict[str, Any]]]:
    """(op_count, kernel_count, top ops) of one call under torch.profiler."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = cell.device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    cell.reset()
    with _native_stderr_silenced(), profile(activities=activities) as prof:
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
        ranked = sorted(((e.key, int(e.count), _device_time_us(e) / 1e3) for e in kernels),
                        key=lambda r: (-r[2], r[0]))
    else:
        ranked = sorted(((e.key, int(e.count), float(e.self_cpu_time_total) / 1e3) for e in on_cpu),
                        key=lambda r: (-r[2], r[0]))
    top = [{"mode": cell.mode, "device": cell.device, "rank": i + 1, "op": name, "calls": calls,
            "self_time_ms": ms} for i, (name, calls, ms) in enumerate(ranked[:TOP_OPS])]
    return op_count, kernel_count, top


class _Bench:
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
        return [(mode, phase, dtype) for mode in self.modes
                for phase in (PHASES if mode in ANN_MODES else PHASES[:1]) for dtype in self.dtypes(mode)]

    def inputs(self, batch: int):
        import torch

        idx = torch.arange(batch) % len(self.test)
        return self.test.x[idx], self.test.y[idx]

    def cells(self, batch: int) -> list[_Cell]:
        x_cpu, y_cpu = self.inputs(batch)
        x, y = x_cpu.to(self.device), y_cpu.to(self.device)
        out = []
        for mode, phase, dtype in self.keys():
            if mode in self.failed:
                continue
            if mode in ANN_MODES:
                net = self.model if mode == "ann_eager" else self.compiled
                out.append(self._ann_cell(mode, phase, dtype, net, x, y))
            else:
                out.append(self._snn_cell(mode, x))
        return out

    def _ann_cell(self, mode: str, phase: str, dtype: str, net, x, y) -> _Cell:
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

        return _Cell(mode, phase, dtype, self.device.type,
                     forward if phase == "forward" else forward_backward, reset)

    def _snn_cell(self, mode: str, x) -> _Cell:
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
        return _Cell(mode, "forward", "fp32", self.device.type, call, lambda: None, note)


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# --- the stage -----------------------------------------------------------------------------------

def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    ratio = f"SNN/ANN {s['snn_over_ann']:.2f}x, " if s.get("snn_over_ann") else ""
    speedup = (f"one-pass {s['one_pass_speedup']:.1f}x faster than the SNN"
               if s.get("one_pass_speedup") else "")
    return f"[green]profile[/green] {artifact.path}  batch {s.get('batch_size')}: {ratio}{speedup}"


def run(p: ProfileParams, out: Path | None, root: Path, force: bool,
        reporter: Reporter) -> artifacts.Artifact:
    import torch

    from cimtool.nn.snn_spec import load_candidate

    validate(p)
    t_start = time.perf_counter()
    device = resolve_device(p.torch_device).type
    path = Path(p.model)
    # model/qmodel/snn; anything else is refused
    cand = load_candidate(path, p.data_dir, reporter, p.calibration_samples, p.seed)
    source = cand.spiking.artifact
    p = replace(p, model=str(source.path))
    output = StageOutput(KIND, out, root, source.path.name, force, inputs=[source.path], started=t_start)
    out = output.path
    torch.manual_seed(p.seed)
    snn = cand.spiking.network(device=device)
    timesteps = cand.spiking.config.timesteps
    test = cand.data["test"]
    batches = list(p.batch_sizes)
    largest = max(batches)
    reporter.log(f"profile: {source.path} ({source.kind}), modes {', '.join(p.modes)}, batch sizes "
                 f"{', '.join(map(str, batches))}, T={timesteps}, {p.warmup} warm-up + {p.repeats} timed "
                 f"runs each, on {device} ({torch.get_num_threads()} CPU threads) → {out}")
    if largest > len(test):
        reporter.log(f"profile: the test split has {len(test)} samples; larger batches repeat them")

    params = {**asdict(p), "torch_device": device}
    with output.writer(params) as writer:
        bench = _Bench(cand.spiking.model, snn, device, test, p.seed, p.modes, reporter)
        keys = bench.keys()
        try:
            times, cells = _measure(bench, batches, p, reporter)
            reporter.log(f"profile: peak memory of every row, and op counts at batch {largest}")
            memory = {k: _peak_memory_mb(c) for k, c in cells.items()}
            ops: list[dict[str, Any]] = []
            counts: dict[str, tuple[int, int | None]] = {}
            for (mode, phase, dtype, batch), cell in cells.items():
                if batch == largest and phase == "forward" and dtype == "fp32":
                    op_count, kernel_count, top = _op_profile(cell)
                    counts[mode] = (op_count, kernel_count)
                    ops.extend({**row, "batch_size": batch} for row in top)
        finally:
            if bench.compiled is not None:
                torch._dynamo.reset()  # drop the compiled graphs and their guards

        rows = []
        for mode, phase, dtype in keys:
            for batch in batches:
                key = (mode, phase, dtype, batch)
                row: dict[str, Any] = {
                    "mode": mode, "phase": phase, "dtype": dtype,
                    "device": device, "batch_size": batch,
                    "timesteps": timesteps if mode in SNN_MODES else None, "repeats": p.repeats,
                    "latency_ms": None, "latency_p10_ms": None, "latency_p90_ms": None,
                    "throughput_sps": None, "peak_memory_mb": None, "op_count": None, "kernel_count": None,
                    "note": bench.failed.get(mode)}
                if key in times:
                    median = _percentile(times[key], 50)
                    row.update(latency_ms=median, latency_p10_ms=_percentile(times[key], 10),
                               latency_p90_ms=_percentile(times[key], 90),
                               throughput_sps=batch / (median / 1e3), peak_memory_mb=memory[key],
                               note=cells[key].note)
                    if batch == largest and phase == "forward" and dtype == "fp32" and mode in counts:
                        row["op_count"], row["kernel_count"] = counts[mode]
                rows.append(row)
        pq.write_table(pa.Table.from_pylist(rows, schema=PROFILE_SCHEMA), writer.path("profile.parquet"))
        pq.write_table(pa.Table.from_pylist(ops, schema=OPS_SCHEMA), writer.path("ops.parquet"))
        summary = _summary(rows, batches, timesteps, device, bench.failed)
        summary.update(snn_source="artifact" if source.kind == "snn" else "default settings, 1 × P99.9",
                       threads=torch.get_num_threads(),
                       gpu=torch.cuda.get_device_name() if device == "cuda" else None)
        return output.commit(writer, [source.as_input("snn" if source.kind == "snn" else "model")], summary)


def _measure(bench: _Bench, batches: list[int], p: ProfileParams, reporter: Reporter):
    """Warm-up and interleaved timed runs; returns the times and the last cells of every row."""
    times: dict[tuple[str, str, str, int], list[float]] = {}
    cells: dict[tuple[str, str, str, int], _Cell] = {}
    per_batch = len(bench.keys())

    def warm(cell: _Cell) -> int:
        return max(p.warmup, 1) if cell.mode == "ann_compiled" else p.warmup

    total = len(batches) * per_batch * (p.repeats + p.warmup)
    with reporter.progress() as progress:
        task = progress.add_task("profile", total=total, status="")
        for batch in batches:
            progress.update(task, status=f"B={batch}: warm-up")
            active = []
            for cell in bench.cells(batch):
                try:
                    for _ in range(warm(cell)):
                        _time_ms(cell)
                except Exception as exc:
                    if cell.mode != "ann_compiled":
                        raise
                    bench.fail(cell.mode, exc, reporter)
                else:
                    active.append(cell)
                progress.advance(task, p.warmup)
            active = [c for c in active if c.mode not in bench.failed]
            progress.update(task, status=f"B={batch}: timing")
            for cell in active:
                times[(*cell.key, batch)] = []
                cells[(*cell.key, batch)] = cell
            for _ in range(p.repeats):
                for cell in active:
                    times[(*cell.key, batch)].append(_time_ms(cell))
                progress.advance(task, per_batch)
        progress.update(task, completed=total, status="done")
    failed = set(bench.failed)
    return ({k: v for k, v in times.items() if k[0] not in failed},
            {k: v for k, v in cells.items() if k[0] not in failed})


def _summary(rows: list[dict[str, Any]], batches: list[int], timesteps: int, device: str,
             failed: dict[str, str]) -> dict[str, Any]:
    """The ANN vs SNN comparison at the largest batch size that every compared mode measured."""
    forward = {(r["mode"], r["batch_size"]): r["latency_ms"] for r in rows
               if r["phase"] == "forward" and r["dtype"] == "fp32" and r["latency_ms"] is not None}
    present = [m for m in ("ann_eager", "snn", "one_pass") if any(k[0] == m for k in forward)]
    common = [b for b in batches if all((m, b) in forward for m in present)]
    batch = max(common) if common else max(batches)

    def at(mode: str) -> float | None:
        return forward.get((mode, batch))

    ann, snn, one = at("ann_eager"), at("snn"), at("one_pass")
    return {"timesteps": timesteps, "batch_size": batch, "torch_device": device, "snn_device": device,
            "ann_eager_ms": ann, "ann_compiled_ms": at("ann_compiled"), "snn_ms": snn, "one_pass_ms": one,
            "snn_over_ann": snn / ann if snn and ann else None,
            "one_pass_speedup": snn / one if snn and one else None,
            "skipped": dict(failed)}


# --- display -------------------------------------------------------------------------------------

def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _cell_text(latency: float | None, throughput: float | None) -> str:
    if latency is None or throughput is None or not math.isfinite(latency):
        return "—"
    return f"{latency:.3g} ms\n{_si(throughput)}/s"


def render(rows: list[dict[str, Any]], title: str | None = None, caption: str | None = None):
    """The ANN vs SNN table: a row per mode/phase/dtype/device, a column per batch size, cells
    "median latency ms" over "samples per second" ("—": not measured, see the notes)."""
    from rich import box
    from rich.table import Table

    batches = sorted({int(r["batch_size"]) for r in rows})
    groups: dict[tuple[str, str, str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["mode"], r["phase"], r["dtype"], r["device"]), {})[int(r["batch_size"])] = r
    notes = list(dict.fromkeys(r["note"] for r in rows if r.get("note")))
    legend = (f"cells: median latency, samples per second; peak MB and ops at B={batches[-1]}; "
              "fwd+bwd = forward + backward" if batches else None)
    table = Table(title=title, caption="\n".join(filter(None, [caption, legend, *notes])) or None,
                  box=box.SIMPLE_HEAD, show_lines=True)
    body = []
    for (mode, phase, dtype, device), by_batch in groups.items():
        memory = by_batch.get(batches[-1], {}).get("peak_memory_mb")
        op_count = next((r["op_count"] for r in by_batch.values() if r.get("op_count") is not None), None)
        cells = [by_batch.get(b, {}) for b in batches]
        body.append([mode, PHASE_LABELS.get(phase, phase), dtype, device,
                     *(_cell_text(c.get("latency_ms"), c.get("throughput_sps")) for c in cells),
                     "—" if memory is None else f"{memory:.3g}",
                     "—" if op_count is None else f"{int(op_count):,}"])
    headers = ["mode", "phase", "dtype", "device", *(f"B={b}" for b in batches), "peak MB", "ops"]
    for i, name in enumerate(headers):
        width = max(len(line) for text in [name, *(row[i] for row in body)] for line in text.splitlines())
        table.add_column(name, style="bold" if i == 0 else None, justify="left" if i < 4 else "right",
                         no_wrap=True, min_width=width)
    for row in body:
        table.add_row(*row)
    return table


def table(artifact: artifacts.Artifact):
    """``render`` of a profile artifact, titled with its source and the SNN-vs-ANN ratios."""
    rows = pq.read_table(artifact.file("profile.parquet")).to_pylist()
    s = artifact.summary
    source = next((i["path"] for i in artifact.manifest.get("inputs", [])), str(artifact.path))
    title = f"profile: {Path(source).name} (T={s.get('timesteps')}, {s.get('torch_device')})"
    parts = []
    if s.get("snn_over_ann") is not None:
        parts.append(f"SNN / ANN eager = {s['snn_over_ann']:.2f}×")
    if s.get("one_pass_speedup") is not None:
        parts.append(f"one-pass {s['one_pass_speedup']:.2f}× faster than the spiking run")
    caption = f"at B={s.get('batch_size')}: " + "; ".join(parts) if parts else None
    return render(rows, title, caption)

