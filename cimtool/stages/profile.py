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
``forward`` runs under ``torch.no_grad``; ``forward_backward`` is one training step's
cross-entropy on the labels and ``.backward()``, with the gradients set to None before every run
(not timed): of the ANN; of the spiking network through its T steps (``snn``: BPTT with
straight-through spikes, ``cimtool.nn.snn_train``); and of its quantized-ANN twin (``one_pass``:
the ReLUs as the neurons' quantizers with learnable thresholds, what ``calibrate-threshold
--train-epochs`` trains, ``cimtool.nn.qann``). All phases keep the model in eval mode.
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

An LBPNet model (``--model lbpnet``) has no spiking twin: its spiking modes are skipped (noted),
and the artifact adds ``cost.parquet`` (``COST_SCHEMA`` of ``cimtool.models.lbp_cost``): per stage
the paper's comparisons, additions, multiplications, GOPs and bytes (LBP + RP only), per dense
layer its MACs, and a total row; the summary adds ``lbp_cost``, ``dense_macs`` and the MACs of
``mnist_cnn`` on the same input (docs/lbpnet.md#cost).

The summary compares the modes at the largest batch size that all of them measured. Same inputs
and seed give the same rows and columns; the timings themselves vary from run to run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.checks import check_choices, check_range
from cimtool.data.calibration import check_calibration_samples
from cimtool.errors import CimtoolError
from cimtool.nn.snn_config import MAX_TIMESTEPS
from cimtool.params import ProfileParams  # noqa: F401 (re-exported)
from cimtool.profiling import (  # noqa: F401 (TOP_OPS, memory_high_water: re-exported)
    MODES,
    SNN_MODES,
    TOP_OPS,
    Bench,
    measure,
    memory_high_water,
    op_profile,
    peak_memory_mb,
    percentile,
)
from cimtool.report.profile_table import render
from cimtool.report.profile_table import si as _si  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput, check_torch_device, resolve_device
from cimtool.ui import Reporter

KIND = "profile"
NO_TWIN = "skipped: no spiking twin (LBPNet's stages are digital bit logic; cost.parquet has its op counts)"
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
    if p.timesteps is not None:
        check_range("--timesteps", p.timesteps, 1, MAX_TIMESTEPS)
    if not p.modes:
        raise CimtoolError("--modes is empty")
    check_choices("--modes", p.modes, MODES)
    if len(set(p.modes)) != len(p.modes):
        raise CimtoolError(f"--modes lists a mode twice: {', '.join(p.modes)}")
    check_torch_device(p.torch_device)
    check_calibration_samples(p.calibration_samples)
    if not 0 <= p.seed < 2**32:
        raise CimtoolError(f"--seed must be in [0, 2**32), got {p.seed}")


# --- the stage -----------------------------------------------------------------------------------

def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    ratio = f"SNN/ANN {s['snn_over_ann']:.2f}x, " if s.get("snn_over_ann") else ""
    speedup = (f"one-pass {s['one_pass_speedup']:.1f}x faster than the SNN"
               if s.get("one_pass_speedup") else "")
    cost = s.get("lbp_cost")
    if cost:  # LBPNet: the paper's count beside the MACs (docs/lbpnet.md#cost)
        speedup = (f"LBP+RP {cost['comparisons']:,} comparisons / {cost['additions']:,} additions / "
                   f"{cost['multiplications']:,} multiplications, {cost['size_bytes']:,} B, "
                   f"{cost['gops']:.6f} GOPs; dense layers {s['dense_macs']:,} MACs, "
                   f"mnist_cnn {s['mnist_cnn_macs']:,} MACs")
    return f"[green]profile[/green] {artifact.path}  batch {s.get('batch_size')}: {ratio}{speedup}"


def run(p: ProfileParams, out: Path | None, root: Path, force: bool,
        reporter: Reporter) -> artifacts.Artifact:
    import torch

    from cimtool.models.io import model_splits
    from cimtool.nn.snn_spec import load_candidate

    validate(p)
    t_start = time.perf_counter()
    device = resolve_device(p.torch_device).type
    path = Path(p.model)
    twinless = _twinless_model(path)
    if twinless is None:  # model/qmodel/snn; anything else is refused
        cand = load_candidate(path, p.data_dir, reporter, p.calibration_samples, p.seed)
        source, model, test = cand.spiking.artifact, cand.spiking.model, cand.data["test"]
    else:  # LBPNet: its own cost table instead of a spiking twin
        source, model = twinless
        if p.timesteps is not None:
            raise CimtoolError(f"--timesteps: {source.path} has no spiking twin to time at T steps "
                               f"({type(model).__name__})")
        test = model_splits(source, p.data_dir)["test"]
    p = replace(p, model=str(source.path))
    output = StageOutput(KIND, out, root, source.path.name, force, inputs=[source.path], started=t_start)
    out = output.path
    torch.manual_seed(p.seed)
    snn, timesteps = None, None
    if twinless is None:
        spec = cand.spiking.snn
        if p.timesteps is not None:  # another T: the same thresholds and weights
            spec = replace(spec, config=replace(spec.config, timesteps=p.timesteps))
        snn, timesteps = spec.network(cand.spiking.model, device), spec.config.timesteps
    batches = list(p.batch_sizes)
    largest = max(batches)
    reporter.log(f"profile: {source.path} ({source.kind}), modes {', '.join(p.modes)}, batch sizes "
                 f"{', '.join(map(str, batches))}, T={timesteps}, {p.warmup} warm-up + {p.repeats} timed "
                 f"runs each, on {device} ({torch.get_num_threads()} CPU threads) → {out}")
    if largest > len(test):
        reporter.log(f"profile: the test split has {len(test)} samples; larger batches repeat them")

    params = {**asdict(p), "torch_device": device}
    with output.writer(params) as writer:
        bench = Bench(model, snn, device, test, p.seed, p.modes, reporter)
        if snn is None:
            bench.failed.update({m: NO_TWIN for m in SNN_MODES if m in p.modes})
        keys = bench.keys()
        try:
            times, cells = measure(bench, batches, p.repeats, p.warmup, reporter)
            reporter.log(f"profile: peak memory of every row, and op counts at batch {largest}")
            memory = {k: peak_memory_mb(c) for k, c in cells.items()}
            ops: list[dict[str, Any]] = []
            counts: dict[str, tuple[int, int | None]] = {}
            for (mode, phase, dtype, batch), cell in cells.items():
                if batch == largest and phase == "forward" and dtype == "fp32":
                    op_count, kernel_count, top = op_profile(cell)
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
                    median = percentile(times[key], 50)
                    row.update(latency_ms=median, latency_p10_ms=percentile(times[key], 10),
                               latency_p90_ms=percentile(times[key], 90),
                               throughput_sps=batch / (median / 1e3), peak_memory_mb=memory[key],
                               note=cells[key].note)
                    if batch == largest and phase == "forward" and dtype == "fp32" and mode in counts:
                        row["op_count"], row["kernel_count"] = counts[mode]
                rows.append(row)
        pq.write_table(pa.Table.from_pylist(rows, schema=PROFILE_SCHEMA), writer.path("profile.parquet"))
        pq.write_table(pa.Table.from_pylist(ops, schema=OPS_SCHEMA), writer.path("ops.parquet"))
        summary = _summary(rows, batches, timesteps, device, bench.failed)
        if twinless is not None:  # the paper's cost metric beside the dense MACs (docs/lbpnet.md#cost)
            from cimtool.models.lbp_cost import cost_table

            table, cost = cost_table(model, tuple(test.x.shape[1:]))
            pq.write_table(table, writer.path("cost.parquet"))
            summary.update(cost)
        summary.update(snn_source=None if twinless is not None else
                       "artifact" if source.kind == "snn" else "default settings, 1 × P99.9",
                       threads=torch.get_num_threads(),
                       gpu=torch.cuda.get_device_name() if device == "cuda" else None)
        return output.commit(writer, [source.as_input("snn" if source.kind == "snn" else "model")], summary)


def _twinless_model(path: Path):
    """(artifact, model) of a model without a spiking twin (LBPNet: its stages compare and count
    bits, digitally), or None for everything else."""
    from cimtool.models.io import MODEL_KINDS, open_model

    if artifacts.load(path).kind not in MODEL_KINDS:
        return None
    artifact, model, _ = open_model(path)
    return None if hasattr(model, "snn_parts") else (artifact, model)


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
    train = {r["mode"]: r["latency_ms"] for r in rows if r["phase"] == "forward_backward"
             and r["dtype"] == "fp32" and r["batch_size"] == batch and r["latency_ms"] is not None}

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    return {"timesteps": timesteps, "batch_size": batch, "torch_device": device, "snn_device": device,
            "ann_eager_ms": ann, "ann_compiled_ms": at("ann_compiled"), "snn_ms": snn, "one_pass_ms": one,
            "snn_over_ann": ratio(snn, ann), "one_pass_speedup": ratio(snn, one),
            # a training step (forward + backward): the spiking network through T vs its twin vs the ANN
            "train_ann_ms": train.get("ann_eager"), "train_snn_ms": train.get("snn"),
            "train_twin_ms": train.get("one_pass"),
            "train_snn_over_twin": ratio(train.get("snn"), train.get("one_pass")),
            "train_twin_over_ann": ratio(train.get("one_pass"), train.get("ann_eager")),
            "skipped": dict(failed)}


# --- display -------------------------------------------------------------------------------------

def table(artifact: artifacts.Artifact):
    """``render`` of a profile artifact, titled with its source and the SNN-vs-ANN ratios."""
    rows = pq.read_table(artifact.file("profile.parquet")).to_pylist()
    s = artifact.summary
    source = next((i["path"] for i in artifact.manifest.get("inputs", [])), str(artifact.path))
    steps = f"T={s['timesteps']}, " if s.get("timesteps") else ""  # none: a model without spiking twin
    title = f"profile: {Path(source).name} ({steps}{s.get('torch_device')})"
    parts = []
    if s.get("snn_over_ann") is not None:
        parts.append(f"SNN / ANN eager = {s['snn_over_ann']:.2f}×")
    if s.get("one_pass_speedup") is not None:
        parts.append(f"one-pass {s['one_pass_speedup']:.2f}× faster than the spiking run")
    caption = f"at B={s.get('batch_size')}: " + "; ".join(parts) if parts else None
    return render(rows, title, caption)

