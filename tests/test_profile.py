"""`cimtool profile` on the default model and its SNN: rows, figures, op tables, errors."""

from __future__ import annotations

import io
import json
import math
import time

import pandas as pd
import pytest
import torch
from rich.console import Console

from cimtool import artifacts
from cimtool.errors import CimtoolError
from cimtool.stages import profile as stage
from cimtool.stages.profile import ProfileParams
from cimtool.ui import Reporter

COMPARED = ("ann_eager", "snn", "one_pass")
BATCHES = (1, 512)  # the largest: a batch where the compute, not the call overhead, dominates


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The profile kind as artifacts.py will register it (idempotent once it is registered)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(artifacts.SCHEMAS, stage.KIND, 1)
        mp.setitem(artifacts.KIND_DIRS, stage.KIND, "profiles")
        mp.setitem(artifacts.REQUIRED_FILES, stage.KIND, ("profile.parquet", "ops.parquet"))
        yield


@pytest.fixture(scope="module")
def default_snn(default_model, tmp_path_factory):
    """calibrate-threshold on the default model (one threshold candidate: fast), in-process."""
    from cimtool.stages.calibrate_threshold import CalibrateParams
    from cimtool.stages.calibrate_threshold import run as calibrate

    art, _, root = default_model
    out = tmp_path_factory.mktemp("snn") / "snn"
    return calibrate(CalibrateParams(model=str(art.path), ratios=(1.0,), percentiles=("99.9",)), out, root,
                     False, Reporter(quiet=True))


@pytest.fixture(scope="module")
def snn_profile(default_snn, tmp_path_factory):
    params = ProfileParams(model=str(default_snn.path), batch_sizes=BATCHES, repeats=15, warmup=2,
                           modes=COMPARED, torch_device="cpu")
    out = tmp_path_factory.mktemp("profile") / "profile"
    t0 = time.perf_counter()
    result = stage.run(params, out, out.parent, False, Reporter(quiet=True))
    return result, time.perf_counter() - t0


def _rows(result: artifacts.Artifact) -> pd.DataFrame:
    return pd.read_parquet(result.file("profile.parquet"))


def test_profile_of_the_default_snn(snn_profile, default_snn):
    result, wall = snn_profile
    assert wall < 30, f"profile took {wall:.0f} s"
    assert artifacts.load(result.path, stage.KIND).kind == "profile"
    rows = _rows(result)
    expected = {(m, phase, b) for m in COMPARED for phase in ("forward", "forward_backward") for b in BATCHES}
    assert set(zip(rows["mode"], rows["phase"], rows["batch_size"], strict=True)) == expected
    assert len(rows) == len(expected)  # one row each: fp32 only on CPU
    assert list(rows.columns) == stage.PROFILE_SCHEMA.names
    assert (rows["dtype"] == "fp32").all() and (rows["device"] == "cpu").all()
    assert (rows["repeats"] == 15).all()
    notes = rows.set_index(["mode", "phase", "batch_size"])["note"]
    assert notes.loc["snn", "forward_backward", 1].startswith("BPTT through T=32 steps")
    assert notes.loc["one_pass", "forward_backward", 1].startswith("the twin")
    forward = rows[(rows["phase"] == "forward") & (rows["mode"] != "ann_eager")]
    assert forward["note"].isna().all()
    assert (rows["latency_ms"] > 0).all() and rows["latency_ms"].map(math.isfinite).all()
    assert rows["throughput_sps"].tolist() == pytest.approx(
        (rows["batch_size"] / (rows["latency_ms"] / 1e3)).tolist(), rel=1e-12)
    assert (rows["latency_p10_ms"] <= rows["latency_ms"]).all()
    assert (rows["latency_ms"] <= rows["latency_p90_ms"]).all()
    snn_rows = rows["mode"].isin(("snn", "one_pass"))
    assert (rows.loc[snn_rows, "timesteps"] == 32).all() and rows.loc[~snn_rows, "timesteps"].isna().all()

    # peak memory: every pass turns its uint8 batch into float32 first, so at least that is live
    big = rows[rows["batch_size"] == 512]
    assert (big["peak_memory_mb"] >= 512 * 28 * 28 * 4 / 2**20).all()
    small = rows[rows["batch_size"] == 1].set_index(["mode", "phase"])["peak_memory_mb"]
    assert (big.set_index(["mode", "phase"])["peak_memory_mb"] > small).all()
    # the backward pass holds the weight gradients too (the 784→64 projection alone: 0.19 MB)
    fb = rows[(rows["mode"] == "ann_eager") & (rows["phase"] == "forward_backward") &
              (rows["batch_size"] == 1)]["peak_memory_mb"].item()
    assert fb >= 784 * 64 * 4 / 2**20

    # op counts: only at the profiled (largest) batch, forward
    counted = rows[rows["op_count"].notna()]
    assert set(zip(counted["mode"], counted["phase"], counted["batch_size"], strict=True)) == {
        (m, "forward", 512) for m in COMPARED}
    assert rows["kernel_count"].isna().all()  # CPU
    ops_by_mode = counted.set_index("mode")["op_count"]
    assert ops_by_mode["snn"] > ops_by_mode["one_pass"]  # the neuron scan and the tail on top

    ops = pd.read_parquet(result.file("ops.parquet"))
    assert list(ops.columns) == stage.OPS_SCHEMA.names
    assert set(ops["mode"]) == set(COMPARED) and (ops["batch_size"] == 512).all()
    for mode, group in ops.groupby("mode"):
        assert 1 <= len(group) <= stage.TOP_OPS
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert (group["calls"] >= 1).all() and (group["self_time_ms"] >= 0).all()
        assert group["self_time_ms"].is_monotonic_decreasing
        assert group["calls"].sum() <= ops_by_mode[mode]
        assert (ops["device"] == "cpu").all() and "[memory]" not in set(group["op"])
    assert "aten::addmm" in set(ops.loc[ops["mode"] == "ann_eager", "op"])  # the crossbar GEMM

    s = result.summary
    forward = rows[(rows["phase"] == "forward") & (rows["batch_size"] == 512)].set_index("mode")["latency_ms"]
    assert s["timesteps"] == 32 and s["batch_size"] == 512 and s["torch_device"] == "cpu"
    # the summary keeps 12 significant digits (artifacts.rounded), the Parquet every one
    assert s["ann_eager_ms"] == pytest.approx(forward["ann_eager"], rel=1e-11)
    assert s["snn_ms"] == pytest.approx(forward["snn"], rel=1e-11)
    assert s["one_pass_ms"] == pytest.approx(forward["one_pass"], rel=1e-11) and s["ann_compiled_ms"] is None
    assert s["snn_over_ann"] == pytest.approx(s["snn_ms"] / s["ann_eager_ms"])
    assert s["one_pass_speedup"] == pytest.approx(s["snn_ms"] / s["one_pass_ms"])
    assert s["snn_source"] == "artifact" and s["wall_s"] > 0
    # T = 32: the spiking run does the one-pass work plus the neuron scan over time
    assert s["snn_ms"] > s["one_pass_ms"]
    train = rows[(rows["phase"] == "forward_backward") & (rows["batch_size"] == 512)].set_index("mode")
    assert s["train_snn_ms"] == pytest.approx(train.loc["snn", "latency_ms"], rel=1e-11)
    assert s["train_twin_over_ann"] == pytest.approx(train.loc["one_pass", "latency_ms"] /
                                                     train.loc["ann_eager", "latency_ms"])
    assert s["train_snn_over_twin"] > 1  # BPTT through 32 steps costs more than the one-pass twin

    assert result.params["torch_device"] == "cpu" and result.params["model"] == str(default_snn.path)
    [source] = result.manifest["inputs"]
    assert source["role"] == "snn" and source["path"] == str(default_snn.path)


def test_same_inputs_give_the_same_structure(snn_profile, default_snn, tmp_path):
    first, _ = snn_profile
    again = stage.run(ProfileParams(model=str(default_snn.path), batch_sizes=BATCHES, repeats=2, warmup=0,
                                    modes=COMPARED, torch_device="cpu"), tmp_path / "again", tmp_path, False,
                      Reporter(quiet=True))
    keys = ["mode", "phase", "dtype", "device", "batch_size", "timesteps"]
    assert _rows(first)[keys].equals(_rows(again)[keys])
    a, b = _rows(first), _rows(again)
    assert (a["op_count"].fillna(-1) == b["op_count"].fillna(-1)).all()  # the same ops are dispatched


def test_table_shows_ann_vs_snn(snn_profile):
    result, _ = snn_profile
    console = Console(record=True, width=220, file=io.StringIO())
    console.print(stage.table(result))
    text = console.export_text()
    for needle in ("ann_eager", "fwd+bwd", "snn", "one_pass", "B=1", "B=512", "/s", "T=32",
                   "SNN / ANN eager", "peak MB"):
        assert needle in text, needle
    rows = _rows(result)
    one_pass = rows[(rows["mode"] == "one_pass") & (rows["batch_size"] == 512)].iloc[0]
    assert f"{one_pass['latency_ms']:.3g} ms" in text and f"{stage._si(one_pass['throughput_sps'])}/s" in text
    assert len(text.splitlines()) < 40  # rows of two lines, no wrapping at 220 columns


def test_plain_model_gets_default_spiking_settings(default_model, tmp_path):
    art, _, _ = default_model
    log = io.StringIO()
    reporter = Reporter(console=Console(file=log, width=300))
    result = stage.run(ProfileParams(model=str(art.path), batch_sizes=(4, 1200), repeats=2, warmup=1,
                                     modes=("snn", "one_pass"), timesteps=8), None, tmp_path, False, reporter)
    assert result.path.parent == tmp_path / "profiles" and result.path.name.startswith(art.path.name)
    assert "default spiking settings" in log.getvalue() and "repeat them" in log.getvalue()
    assert result.summary["snn_source"].startswith("default") and result.summary["timesteps"] == 8
    assert result.summary["ann_eager_ms"] is None and result.summary["snn_over_ann"] is None
    assert result.summary["one_pass_speedup"] > 0
    [source] = result.manifest["inputs"]
    assert source["role"] == "model" and source["path"] == str(art.path)
    rows = _rows(result)
    assert len(rows) == 8 and (rows["latency_ms"] > 0).all()  # 2 modes × 2 phases × 2 batch sizes
    assert (rows["timesteps"] == 8).all()  # --timesteps: the spiking modes at that T
    bptt = rows[(rows["mode"] == "snn") & (rows["phase"] == "forward_backward")]
    assert bptt["note"].str.contains("T=8 steps").all()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:torch")  # torch's own, while compiling
def test_compiled_ann(default_model, tmp_path):
    """torch.compile (inductor on CPU: a C++ compiler) forward and forward+backward, or a clean skip."""
    art, _, _ = default_model
    result = stage.run(ProfileParams(model=str(art.path), batch_sizes=(64,), repeats=3, warmup=1,
                                     modes=("ann_eager", "ann_compiled"), torch_device="cpu"),
                       tmp_path / "p", tmp_path, False, Reporter(quiet=True))
    rows = _rows(result)
    assert set(zip(rows["mode"], rows["phase"], strict=True)) == {
        (m, p) for m in ("ann_eager", "ann_compiled") for p in ("forward", "forward_backward")}
    compiled = rows[rows["mode"] == "ann_compiled"]
    if compiled["note"].notna().any():  # no working compiler here: recorded, not raised
        assert compiled["note"].str.startswith("skipped: torch.compile failed").all()
        assert compiled["latency_ms"].isna().all()
        pytest.skip(f"torch.compile unavailable: {compiled['note'].iloc[0]}")
    assert (compiled["latency_ms"] > 0).all() and compiled["peak_memory_mb"].notna().all()
    forward = compiled.loc[compiled["phase"] == "forward", "latency_ms"].item()
    assert result.summary["ann_compiled_ms"] == pytest.approx(forward, rel=1e-11)
    ops = pd.read_parquet(result.file("ops.parquet"))
    assert set(ops["mode"]) == {"ann_eager", "ann_compiled"}


def test_failed_compilation_is_recorded_not_raised(default_model, tmp_path, monkeypatch):
    art, _, _ = default_model

    def broken(model, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    result = stage.run(ProfileParams(model=str(art.path), batch_sizes=(1, 8), repeats=2, warmup=0,
                                     modes=("ann_eager", "ann_compiled")), tmp_path / "p", tmp_path, False,
                       Reporter(quiet=True))
    rows = _rows(result)
    compiled = rows[rows["mode"] == "ann_compiled"]
    assert len(compiled) == 4 and compiled["latency_ms"].isna().all() and compiled["op_count"].isna().all()
    assert compiled["note"].str.contains("No working C\\+\\+ compiler found").all()
    assert not compiled["note"].str.contains("more detail").any()  # one line
    eager = rows[rows["mode"] == "ann_eager"]
    assert (eager["latency_ms"] > 0).all() and eager["note"].isna().all()
    assert result.summary["skipped"].keys() == {"ann_compiled"}
    assert json.dumps(result.summary)  # stays serialisable
    assert set(pd.read_parquet(result.file("ops.parquet"))["mode"]) == {"ann_eager"}


def test_memory_high_water_is_allocation_exact():
    from torch.profiler import ProfilerActivity, profile

    net = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512))
    x = torch.rand(512, 512)
    size = 512 * 512 * 4
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        net(x)
    assert stage.memory_high_water(prof) == 2 * size  # ReLU's input and output, then output + last layer
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        net(x).sum().backward()
    assert stage.memory_high_water(prof) >= 3 * size  # saved ReLU output + both gradients of the last layer


@pytest.mark.parametrize("change, message", [
    ({"batch_sizes": (0, 16)}, "--batch-sizes"),
    ({"batch_sizes": ()}, "--batch-sizes"),
    ({"batch_sizes": (16, 16)}, "twice"),
    ({"repeats": 0}, "--repeats"),
    ({"warmup": -1}, "--warmup"),
    ({"timesteps": 0}, "--timesteps"),
    ({"modes": ("ann_eager", "spiking")}, "unknown --modes spiking"),
    ({"modes": ()}, "--modes"),
    ({"torch_device": "tpu"}, "--torch-device"),
    ({"model": None}, "--model"),
    ({"seed": -1}, "--seed"),
])
def test_bad_parameters(default_model, tmp_path, change, message):
    art, _, _ = default_model
    params = ProfileParams(**{"model": str(art.path), **change})
    with pytest.raises(CimtoolError, match=message):
        stage.run(params, tmp_path / "x", tmp_path, False, Reporter(quiet=True))
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_requested_without_cuda(default_model, tmp_path):
    art, _, _ = default_model
    with pytest.raises(CimtoolError, match="no CUDA device"):
        stage.validate(ProfileParams(model=str(art.path), torch_device="cuda"))


def test_not_a_model(default_model, tmp_path, cli):
    art, _, _ = default_model
    made = cli("map-weights", "--model", art.path, "--out", tmp_path / "cmap", "--quiet", "--json")
    assert made.code == 0, made.err
    for path, message in ((tmp_path / "cmap", "expected a model, qmodel or snn artifact, found a 'cmap'"),
                          (tmp_path / "missing", "no such artifact")):
        with pytest.raises(CimtoolError, match=message):
            stage.run(ProfileParams(model=str(path)), tmp_path / "x", tmp_path, False, Reporter(quiet=True))
        assert not (tmp_path / "x").exists()


def test_existing_output_is_refused(snn_profile, default_snn):
    result, _ = snn_profile
    with pytest.raises(CimtoolError, match="already exists"):
        stage.run(ProfileParams(model=str(default_snn.path)), result.path, result.path.parent, False,
                  Reporter(quiet=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rows(default_snn, tmp_path):
    result = stage.run(ProfileParams(model=str(default_snn.path), batch_sizes=(1, 64), repeats=3, warmup=1,
                                     modes=COMPARED, torch_device="cuda"), tmp_path / "p", tmp_path, False,
                       Reporter(quiet=True))
    rows = _rows(result)
    ann = rows[rows["mode"] == "ann_eager"]
    spiking = rows[rows["mode"].isin(("snn", "one_pass"))]
    assert (ann["device"] == "cuda").all() and (spiking["device"] == "cpu").all()
    assert spiking["note"].str.contains("CPU only").all() and (spiking["dtype"] == "fp32").all()
    dtypes = {"fp32", "bf16"} if torch.cuda.is_bf16_supported() else {"fp32"}
    assert set(ann["dtype"]) == dtypes and len(ann) == 2 * 2 * len(dtypes)
    assert (rows["latency_ms"] > 0).all()
    assert (ann.loc[ann["batch_size"] == 64, "peak_memory_mb"] > 0).all()
    profiled = ann[ann["op_count"].notna()]
    assert len(profiled) == 1 and profiled["kernel_count"].item() > 0
    ops = pd.read_parquet(result.file("ops.parquet"))
    assert (ops.loc[ops["mode"] == "ann_eager", "device"] == "cuda").all()
    assert (ops.loc[ops["mode"] != "ann_eager", "device"] == "cpu").all()
    assert result.summary["torch_device"] == "cuda" and result.summary["gpu"]
