"""NeuroSim traces (byte-identical to the V1.3 reference hook) and real NeuroSim runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cimtool import artifacts
from cimtool.neurosim import build as ns_build
from cimtool.neurosim.trace import (
    bits_csv,
    input_codes,
    layer_weight_csv,
    quantize_weights,
    stretch,
    weight_csv,
)
from tests.neurosim_reference import reference_hook
from tests.neurosim_stdouts import CNN_SUMMARY, HEAD


def _ok(result):
    assert result.code == 0, result.err
    return json.loads(result.out)


@pytest.fixture(scope="module")
def hook():
    module = reference_hook()
    if module is None:
        pytest.skip("hwcomponents-neurosim is not installed (pip install --no-deps --ignore-requires-python "
                    "hwcomponents-neurosim)")
    return module


def _reference_bytes(write, *args) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        write(*args, f"{tmp}/ref.csv")
        return Path(f"{tmp}/ref.csv").read_bytes()


@pytest.mark.parametrize("channels, size, kernel, padding, stride", [
    (3, 8, 3, 1, 1),  # conv with padding
    (4, 9, 3, 0, 1),  # conv without padding
    (5, 10, 3, 1, 2),  # stride 2
    (2, 11, 5, 2, 2),  # 5x5, padding 2, stride 2
])
@pytest.mark.parametrize("bits", [4, 8])
def test_conv_input_file_identical_to_reference(hook, channels, size, kernel, padding, stride, bits):
    rng = np.random.default_rng(channels * size + bits)
    x = rng.uniform(-1, 1, (1, channels, size, size)).astype(np.float32)
    x[0, 0, 0, :3] = [0.0, -1.0, 0.5]  # exact codes and the most negative one
    ref = _reference_bytes(hook.write_matrix_activation_conv,
                           hook.stretch_input(x, kernel, (padding, padding), (stride, stride)), None, bits)
    ours = bits_csv(stretch(x[0].astype(np.float64), kernel, (padding, padding), (stride, stride)), bits)
    assert ours == ref


@pytest.mark.parametrize("bits", [4, 8])
def test_fc_input_and_weight_files_identical_to_reference(hook, bits):
    from utee.wage_quantizer import Q

    rng = np.random.default_rng(bits)
    x = rng.uniform(-1, 1, (1, 300)).astype(np.float32)
    assert bits_csv(x, bits) == _reference_bytes(hook.write_matrix_activation_fc, x, None, bits)
    limit = 1 - 1 / 2**bits  # the +1.0 clip does not bite below this
    for shape in [(16, 3, 3, 3), (10, 64)]:
        w = torch.empty(shape).uniform_(-limit, limit)
        w.view(-1)[:2] = torch.tensor([-1e-4, 0.0])  # rounds to −0.0 and to 0.0
        ref = _reference_bytes(hook.write_matrix_weight, Q(w, bits).numpy())
        assert weight_csv(quantize_weights(w.numpy().astype(np.float64), bits), bits) == ref
        assert layer_weight_csv(w.numpy(), 1.0, bits) == ref


def test_weight_clip_keeps_plus_one_off_the_negative_code():
    w = np.array([[1.0], [-1.0], [0.5]])  # 3 outputs of one input row
    text = layer_weight_csv(w, 1.0, 8).decode()
    assert text == "   0.99219,  -0.99219,   0.50000\n"  # C(x) = ±(1 − 1/128) before rounding


def test_input_codes_saturate_like_the_reference():
    codes = input_codes(np.array([0.999, 1.0, 1.7, -1.0, -1.2, -0.3]), 4)
    as_int = -8 * codes[0].astype(int) + 4 * codes[1] + 2 * codes[2] + codes[3]
    assert as_int.tolist() == [7, 7, 7, -8, -8, -3]  # floor(x·8), clamped to the 4-bit range


def test_patch_param_reads_each_setting_at_start_up_with_the_release_default():
    source = ns_build.bundled_source()
    if source is None:
        pytest.skip("hwcomponents-neurosim is not installed")
    text = (source / "Param.cpp").read_text(errors="replace")
    patched = ns_build.patch_param(text)
    assert re.search(r'^\s*cellBit = cimtool_setting\("CIMTOOL_NS_cellBit", 2\);', patched, re.M)
    assert re.search(r'^\s*resistanceOff = cimtool_setting\("CIMTOOL_NS_resistanceOff", 6e3\*150\);', patched,
                     re.M)
    assert "cellBit = 1;             // force cellBit = 1 for all SRAM cases" in patched  # untouched
    assert len(patched.splitlines()) == len(text.splitlines()) + ns_build._READER.count("\n")
    settings = ns_build.NeuroSimSettings(cellBit=4, resistanceOff=4.18e11)
    env = ns_build.setting_env(settings)
    assert env["CIMTOOL_NS_cellBit"] == "4" and float(env["CIMTOOL_NS_resistanceOff"]) == 4.18e11


# --- the stage ---------------------------------------------------------------------------------

def test_trace_of_the_default_model(default_trace, default_model):
    from cimtool.models.io import model_splits, open_model

    trace = default_trace
    assert trace.file("NetWork.csv").read_text() == "1,1,64,1,1,10,0,1\n"
    command = trace.file("trace_command.sh").read_text()
    assert command.splitlines()[-1] == ('exec "${NEUROSIM:-./NeuroSIM/main}" NetWork.csv 8 8 '
                                        'weight1.csv input1.csv')
    layers = pd.read_parquet(trace.file("layers.parquet"))
    art, model, _ = open_model(default_model[0].path)
    x = model_splits(art)["test"].x[:16].float() / 255
    with torch.no_grad():
        feats = model.features(x).double().numpy()
    scale = layers.loc[0, "input_scale"]
    assert scale == np.abs(feats).max()
    assert trace.file("input1.csv").read_bytes() == bits_csv(feats[:1] / scale, 8)
    bits = np.loadtxt(trace.file("input1.csv"), delimiter=",")
    assert bits.shape == (64, 8)
    assert layers.loc[0, "activity_sample"] == pytest.approx(bits.mean(), abs=1e-12)
    per_sample = [np.concatenate([input_codes(f / scale, 8).ravel()]).mean() for f in feats]
    assert layers.loc[0, "activity_batch"] == pytest.approx(np.mean(per_sample), abs=1e-12)
    weights = np.loadtxt(trace.file("weight1.csv"), delimiter=",")
    assert weights.shape == (64, 10) and np.abs(weights).max() == 0.99219  # 127/128 as "%10.5f"


def test_conv_trace_network_csv_and_activity(tmp_path):
    """VGG8's NetWork.csv equals the one shipped with NeuroSim; conv activity = mean of the file's bits."""
    from cimtool.models.registry import build, make_spec
    from cimtool.neurosim.record import write_record
    from cimtool.params import TraceParams

    spec = make_spec("vgg8", None, (3, 16, 16), 10, [])
    torch.manual_seed(0)
    model = build(spec).eval()
    rows = write_record(model, spec, torch.rand(4, 3, 16, 16), TraceParams(batch_size=4), tmp_path)
    assert (tmp_path / "NetWork.csv").read_text().splitlines()[:3] == [
        "16,16,3,3,3,128,0,1", "16,16,128,3,3,128,1,1", "8,8,128,3,3,256,0,1"]
    assert all(r["padding_note"] for r in rows[:6]) and not rows[6]["padding_note"]
    bits = np.loadtxt(tmp_path / "input2.csv", delimiter=",")
    assert bits.shape == (128 * 9, 16 * 16 * 8)
    assert rows[1]["activity_sample"] == pytest.approx(bits.mean(), abs=1e-12)
    source = ns_build.bundled_source()
    if source is not None:
        spec32 = make_spec("vgg8", None, (3, 32, 32), 10, [])
        write_record(build(spec32).eval(), spec32, torch.rand(1, 3, 32, 32), TraceParams(batch_size=1),
                     tmp_path)
        assert (tmp_path / "NetWork.csv").read_text() == (source / "NetWork_VGG8.csv").read_text()
    v21 = tmp_path / "v21"
    v21.mkdir()
    rows21 = write_record(model, spec, torch.rand(4, 3, 16, 16), TraceParams(format="v21", batch_size=4), v21)
    bits21 = np.loadtxt(v21 / "input1.csv", delimiter=",")
    assert bits21.shape == (27, 14 * 14 * 8)  # unpadded windows only
    assert rows21[0]["activity_sample"] == pytest.approx(bits21.mean(), abs=1e-12)
    assert (v21 / "weightOld3.csv").read_bytes() == (v21 / "weight3.csv").read_bytes()  # no update
    line = (v21 / "trace_command.sh").read_text().splitlines()[-1]
    assert line.split()[2:8] == ["1", "NetWork.csv", "8", "8", "weight1.csv", "weightOld1.csv"]



def test_spike_record_carries_the_spikes_of_one_step(tmp_path):
    """The sweep's NeuroSim record: one bit per input and window, spikes drawn with p = |x|/R at the
    input and a/θ after a neuron layer; inputs at 0 or past full scale spike deterministically."""
    from cimtool.models.registry import build, make_spec
    from cimtool.neurosim.record import write_spike_record
    from cimtool.neurosim.trace import stretch

    spec = make_spec("mnist_cnn", None, (1, 28, 28), 10, [])
    torch.manual_seed(0)
    model = build(spec).eval()
    x = (torch.rand(1, 1, 28, 28) > 0.5).float() * 3.0  # 0 or 3 × R: never or always a spike
    rows = write_spike_record(model, spec, x, [0.5, 0.5, 0.5, 0.5], 2.0, 4, tmp_path, seed=0)
    bits = np.loadtxt(tmp_path / "input1.csv", delimiter=",", dtype=np.uint8)
    expected = stretch((x[0] > 0).numpy().astype(np.uint8), 3, (1, 1), (1, 1)).T  # padded, as V1.3's hook
    assert np.array_equal(bits, expected)  # rows Cin·k·k, one column per window
    assert rows[0]["activity_sample"] == pytest.approx(bits.mean(), abs=1e-12)
    assert (tmp_path / "NetWork.csv").read_text().splitlines()[0] == "28,28,1,3,3,16,1,1"
    later = np.loadtxt(tmp_path / "input3.csv", delimiter=",")
    assert later.shape == (1568,) and set(np.unique(later)) <= {0.0, 1.0}  # a linear layer: one window
    weights = np.loadtxt(tmp_path / "weight4.csv", delimiter=",")
    assert weights.shape == (128, 10) and np.allclose(weights * 8, np.round(weights * 8))  # 4-bit QW codes
    again = tmp_path / "again"
    again.mkdir()
    write_spike_record(model, spec, x, [0.5] * 4, 2.0, 4, again, seed=0)
    assert all((again / f.name).read_bytes() == f.read_bytes() for f in tmp_path.glob("*.csv"))

# --- running NeuroSim for real -----------------------------------------------------------------

def test_run_neurosim_values_equal_stdout(neurosim_run):
    run = neurosim_run
    stdout = run.file("stdout.txt").read_text().splitlines()
    chip = pd.read_parquet(run.file("summary.parquet"))
    per_layer = pd.read_parquet(run.file("layer_metrics.parquet"))
    for table in (chip, per_layer):
        for row in table[table.line.notna()].itertuples():
            line = stdout[int(row.line) - 1]
            printed = re.findall(r"[-+]?\d+\.?\d*(?:[eE][-+]?\d+)?", line.split(":")[-1])[0]
            assert float(printed) == row.value, line
    derived = chip[chip.line.isna()].set_index("metric").value  # the one figure not printed as such
    values = chip.set_index("metric").value
    assert list(derived.index) == ["leakage_energy_pj"]
    every_tile = values["leakage_power_uw"] * values["latency_ns"] * 1e-3  # µW · ns → pJ
    assert derived["leakage_energy_pj"] == pytest.approx(every_tile, rel=1e-5)
    s = run.summary
    for key in ("tops_per_w", "chip_area_um2", "latency_ns", "dynamic_energy_pj", "fps", "tops",
                "tops_per_mm2"):
        assert s[key] > 0, key
    assert s["tops_per_w"] == float(next(line for line in stdout
                                         if line.startswith("Energy Efficiency TOPS/W"))
                                    .split(":")[-1])
    assert set(chip["metric"]) >= {"area_adc_um2", "area_accumulation_um2", "buffer_energy_pj",
                                   "ic_latency_ns", "adc_energy_pj", "accumulation_energy_pj",
                                   "leakage_energy_pj", "neurosim_leakage_energy_pj"}
    layers = pd.read_parquet(run.file("layers.parquet"))
    assert layers["layer"].tolist() == [1] and layers.loc[0, "latency_ns"] > 0
    settings = json.loads(run.file("settings.json").read_text())
    assert settings["applied"] and settings["settings"]["numRowSubArray"] == 16
    assert settings["settings"]["resistanceOn"] == pytest.approx(2.34e8)


def test_run_neurosim_says_what_dominates_and_its_geometry(neurosim_run):
    """The default head on the card chip: the summary and headline name what dominates latency and
    energy (a millisecond read: leakage is most of the energy), the subarray and every tile's leakage."""
    from cimtool.stages.run_neurosim import headline

    s = neurosim_run.summary
    assert (s["array_rows"], s["array_cols"], s["cmap"]) == (16, 16, None)
    assert s["neurosim_leakage_energy_pj"] == 0 < s["leakage_power_uw"]  # NeuroSim: idle tiles only
    assert s["leakage_energy_pj"] == pytest.approx(s["leakage_power_uw"] * s["latency_ns"] * 1e-3, rel=1e-5)
    assert s["latency_dominated_by"] == "accumulation" and s["energy_dominated_by"] == "leakage"
    assert s["area_dominated_by"] == "ADC" and s["clock_read_limited"]
    assert sum(s["energy_shares"].values()) == pytest.approx(1, abs=1e-3)
    assert s["energy_shares"]["leakage"] == pytest.approx(
        s["leakage_energy_pj"] / (s["dynamic_energy_pj"] + s["leakage_energy_pj"]), abs=1e-3)
    assert len(s["caveats"]) == 4 and "234 MΩ" in s["caveats"][1] and "256-level" in s["caveats"][2]
    line = headline(neurosim_run)
    assert f"+ leakage {s['leakage_energy_pj']:.4g} pJ" in line
    assert all(f"\n  {caveat}" in line for caveat in s["caveats"])


def test_run_neurosim_on_the_arrays_of_a_cmap(default_model, default_trace, neurosim_run, neurosim_cache,
                                              tmp_path, cli):
    """--cmap: NeuroSim's subarray is the cmap's arrays (16x16: the chip of --subarray 16); 128x128
    arrays, which its floorplan cannot take for the 64→10 head, are refused with the nearest geometry."""
    from tests.test_neurosim_versions import _one_line

    art, _, root = default_model
    for rows in (16, 128):
        assert cli("map-weights", "--model", art.path, "--array-rows", rows, "--array-cols", rows,
                   "--artifacts-root", root, "--out", tmp_path / f"cmap{rows}", "--quiet").code == 0
    out = tmp_path / "on16"
    result = _ok(cli("run-neurosim", "--trace", default_trace.path, "--cmap", tmp_path / "cmap16",
                     "--cache-dir", neurosim_cache, "--out", out, "--json", "--quiet"))
    s = result["summary"]
    assert (s["array_rows"], s["array_cols"], s["subarray_auto"]) == (16, 16, False)
    assert s["cmap"] == str(tmp_path / "cmap16") and s["tops_per_w"] == neurosim_run.summary["tops_per_w"]
    run = artifacts.load(out, "neurosim")
    assert [i["role"] for i in run.manifest["inputs"]] == ["trace", "cmap"]
    refused = tmp_path / "on128"
    _one_line(cli("run-neurosim", "--trace", default_trace.path, "--cmap", tmp_path / "cmap128",
                  "--cache-dir", neurosim_cache, "--out", refused, "--quiet"),
              "NeuroSim cannot take 128x128 arrays", "the nearest geometry both accept is 16x16",
              "re-run map-weights with --array-rows 16 --array-cols 16")
    _one_line(cli("run-neurosim", "--trace", default_trace.path, "--cmap", tmp_path / "cmap16", "--subarray",
                  "16", "--out", refused, "--quiet"), "both set the subarray")
    _one_line(cli("run-neurosim", "--trace", default_trace.path, "--cmap", default_trace.path, "--out",
                  refused, "--quiet"), "expected a 'cmap' artifact")
    assert not refused.exists()


def test_relative_trace_path(neurosim_run, default_trace, neurosim_cache, tmp_path, cli, monkeypatch):
    """A trace given relative to the working directory (NeuroSim itself runs elsewhere)."""
    monkeypatch.chdir(default_trace.path.parent)
    cache = Path(os.path.relpath(neurosim_cache, default_trace.path.parent))
    result = _ok(cli("run-neurosim", "--trace", default_trace.path.name, "--subarray", "16", "--cache-dir",
                     cache, "--out", tmp_path / "rel", "--json", "--quiet"))
    assert result["summary"]["tops_per_w"] == neurosim_run.summary["tops_per_w"]


def test_card_settings_reach_neurosim(neurosim_run, default_trace, neurosim_cache, tmp_path, cli):
    base = neurosim_run.summary
    fewer_cell_bits = _ok(cli("run-neurosim", "--trace", default_trace.path, "--subarray", "16",
                              "--cell-bits", "2", "--cache-dir", neurosim_cache, "--out", tmp_path / "c2",
                              "--json", "--quiet"))["summary"]
    smaller_adc = _ok(cli("run-neurosim", "--trace", default_trace.path, "--subarray", "16", "--adc-bits",
                          "4", "--cache-dir", neurosim_cache, "--out", tmp_path / "a4", "--json",
                          "--quiet"))["summary"]
    assert fewer_cell_bits["cell_bits"] == 2 and smaller_adc["adc_levels"] == 16
    assert fewer_cell_bits["chip_area_um2"] != base["chip_area_um2"]
    assert fewer_cell_bits["dynamic_energy_pj"] != base["dynamic_energy_pj"]
    assert smaller_adc["chip_area_um2"] != base["chip_area_um2"]
    assert smaller_adc["dynamic_energy_pj"] < base["dynamic_energy_pj"]  # 16 ADC levels instead of 256


def test_neurosim_failures(default_trace, neurosim_cache, tmp_path, cli, monkeypatch):
    # a subarray larger than the layer: NeuroSim prints an error and crashes; we say what to change,
    # with the size that fits (16 for the default model's 20 columns)
    result = cli("run-neurosim", "--trace", default_trace.path, "--subarray", "128", "--cache-dir",
                 neurosim_cache, "--out", tmp_path / "x", "--quiet")
    assert result.code == 2 and "use --subarray 16 (or auto)" in result.err and "SubArray Size" in result.err
    assert not (tmp_path / "x").exists()
    # a trace directory with a missing layer file
    broken = tmp_path / "broken"
    shutil.copytree(default_trace.path, broken)
    (broken / "input1.csv").unlink()
    result = cli("run-neurosim", "--trace", broken, "--subarray", "16", "--cache-dir", neurosim_cache,
                 "--quiet")
    assert result.code == 2 and "input1.csv" in result.err and len(result.err.strip().splitlines()) == 1
    # no NeuroSim anywhere: the message says how to get one
    monkeypatch.setattr(ns_build, "bundled_source", lambda: None)
    monkeypatch.delenv(ns_build.ENV, raising=False)
    result = cli("run-neurosim", "--trace", default_trace.path, "--quiet")
    assert result.code == 2 and ("pip install --no-deps --ignore-requires-python hwcomponents-neurosim"
                                 in result.err)
    result = cli("run-neurosim", "--trace", default_trace.path, "--neurosim", tmp_path, "--quiet")
    assert result.code == 2 and "no NeuroSim source" in result.err


@pytest.mark.parametrize("args, message", [
    (["neurosim-trace", "--format", "v99"], "--format"),
    (["neurosim-trace", "--weight-bits", "1"], "--weight-bits"),
    (["neurosim-trace", "--sample", "16"], "--sample"),
    (["neurosim-trace", "--split", "dev"], "--split"),
])
def test_trace_bad_input(default_model, cli, args, message):
    result = cli(*args, "--model", default_model[0].path, "--quiet")
    assert result.code == 2 and message in result.err and "Traceback" not in result.err


# --- NeuroSim's output, parsed: leakage, what dominates, caveats ------------------------------------

def test_leakage_energy_is_every_tile_over_the_latency():
    """NeuroSim V1.3 charges a layer's time to the other layers' tiles only: 0 pJ for a one-layer
    network at 0.505 µW. leakage_energy_pj is P_leak · latency; NeuroSim's own figure is kept."""
    from cimtool.neurosim.results import parse_stdout

    head = parse_stdout(HEAD)
    assert head.chip_value("leakage_power_uw") == 0.504571 and head.chip_value("latency_ns") == 1.27822e6
    assert head.chip_value("neurosim_leakage_energy_pj") == 0.0
    assert head.chip_value("leakage_energy_pj") == pytest.approx(0.504571 * 1.27822e6 * 1e-3, rel=1e-5)  # pJ
    assert [r["metric"] for r in head.chip if r["line"] is None] == ["leakage_energy_pj"]
    layer = head.layers[1]
    assert layer["neurosim_leakage_energy_pj"] == 0.0 and layer["leakage_power_uw"] == 0.504571
    cnn = parse_stdout(CNN_SUMMARY)  # four layers: NeuroSim's idle-tile figure is not P·latency either
    assert cnn.chip_value("neurosim_leakage_energy_pj") == 1.21437e7
    assert cnn.chip_value("leakage_energy_pj") == pytest.approx(46.1029 * 3.05201e8 * 1e-3, rel=1e-5)


def _card_chip(subarray: int = 16):
    from cimtool.devices.card import load_card

    return ns_build.NeuroSimSettings.from_card(load_card("rram_seed003"), "rram", None, None, subarray, 22)


def test_what_dominates_the_card_chip_from_neurosim_s_breakdown():
    """Shares from NeuroSim's printed breakdown (V1.x: buffers and interconnect split off its 'other
    peripheries'), energy with every tile's leakage; the caveats name the read-limited clock, the ADC
    levels and the leakage NeuroSim leaves out."""
    from cimtool.neurosim.caveats import explain
    from cimtool.neurosim.results import parse_stdout

    e = explain(parse_stdout(HEAD), _card_chip())
    adc, accumulation, other, buffers, ic = 317540, 545772, 414910, 320641, 84346.5  # ns, as printed
    total = adc + accumulation + other  # = the latency, 1.27822e6 ns
    assert e["latency_shares"] == pytest.approx({
        "accumulation": accumulation / total, "buffers": buffers / total, "ADC": adc / total,
        "interconnect": ic / total, "other peripheries": (other - buffers - ic) / total}, abs=1e-4)
    assert list(e["latency_shares"]) == ["accumulation", "buffers", "ADC", "interconnect",
                                         "other peripheries"]
    leakage = 0.504571 * 1.27822e6 * 1e-3
    energy = 263.628 + 65.1062 + 91.5954 + leakage
    assert e["energy_shares"]["leakage"] == pytest.approx(leakage / energy, abs=1e-4)  # 61 %
    assert e["energy_shares"]["ADC"] == pytest.approx(263.628 / energy, abs=1e-4)
    area = 73118.4 + 1469.86 + 43537.3 + 47.5791  # ADC, accumulation, other, arrays (IC: 0)
    assert e["area_shares"]["ADC"] == pytest.approx(73118.4 / area, abs=1e-4)
    assert (e["latency_dominated_by"], e["energy_dominated_by"], e["area_dominated_by"]) == (
        "accumulation", "leakage", "ADC")
    assert e["clock_period_ns"] == 4961.56 and e["clock_read_limited"]
    dominance, clock, adc_levels, leak = e["caveats"]
    assert dominance.startswith("Latency 1.28 ms per image: 43% accumulation, 25% buffers, 25% ADC; energy "
                                "1.07 nJ per image: 61% leakage, 25% ADC, 6.1% accumulation")
    assert "4.96 µs (0.202 MHz)" in clock and "R_on 234 MΩ" in clock
    assert "256-level ADCs" in adc_levels
    assert "62% of the chip area and 63% of the dynamic energy" in adc_levels
    assert "is 645 pJ (61% of the energy per image)" in leak and "own leakage energy, 0 pJ" in leak
    cnn = explain(parse_stdout(CNN_SUMMARY), _card_chip())
    assert (cnn["latency_dominated_by"], cnn["energy_dominated_by"]) == ("buffers", "leakage")
    assert cnn["energy_shares"]["leakage"] > 0.97 and "14.1 µJ" in cnn["caveats"][-1]
    fast = HEAD.replace("Chip clock period is: 4961.56ns", "Chip clock period is: 1.77206ns")  # R_on 6 kΩ's
    assert not explain(parse_stdout(fast), _card_chip())["clock_read_limited"]
    assert not any("clock" in c for c in explain(parse_stdout(fast), _card_chip())["caveats"])
    assert "R_on" not in explain(parse_stdout(HEAD), None)["caveats"][1]  # a binary's own chip: unknown


def test_fashion_pipeline_maps_and_estimates_one_geometry():
    """pipelines/fashion_cnn_cim.sh: qat, map-weights and sweep on the same arrays, a geometry NeuroSim
    takes for mnist_cnn at the mapped 4 bits, and run-neurosim on the cmap's arrays."""
    from tests.test_neurosim_versions import MNIST_CNN

    script = (Path(__file__).parents[1] / "pipelines" / "fashion_cnn_cim.sh").read_text()
    geometry = re.search(r"^GEOMETRY=\(--array-rows (\d+) --array-cols (\d+)\)$", script, re.M)
    rows, cols = map(int, geometry.groups())
    stages = {m.group(1): m.group(0) for m in re.finditer(r"^stage (\S+) .*?(?<!\\)$", script, re.M | re.S)}
    for name in ("qat", "map-weights", "sweep"):
        assert '"${GEOMETRY[@]}"' in stages[name], name
    assert '--cmap "$OUT/cmap"' in stages["run-neurosim"] and "--subarray" not in stages["run-neurosim"]
    assert "--weight-bits 4" in stages["neurosim-trace"] and "--weight-bits 4" in stages["map-weights"]
    assert ns_build.neurosim_geometry(MNIST_CNN, 4, 4, rows, cols) == (rows, None)  # 4-bit cells: the card's



def test_report_labels_v21_training_per_epoch(tmp_path):
    """A V2.1 training run is reported per epoch: its "FPS" as epochs per second, its energy bar per
    epoch with the weight-gradient, weight-update and DRAM parts, the epoch's images the run's."""
    from cimtool.report import content
    from tests.test_report_content import CARD, write

    phases = {"forward_energy_pj": 1.2e9, "activation_gradient_energy_pj": 2e8,
              "weight_gradient_energy_pj": 7e10, "weight_update_energy_pj": 4e7}
    metrics = {"chip_area_um2": 2e7, "latency_ns": 1.1e10, "dynamic_energy_pj": sum(phases.values()),
               "tops_per_w": 1.0, "tops": 0.1, "fps": 0.09079}
    breakdown = {"adc_energy_pj": 1e8, "weight_gradient_calc_energy_pj": 6e10,
                 "weight_update_write_energy_pj": 4e7, "dram_energy_pj": 1e10, "leakage_energy_pj": 5e6}
    summary = {**metrics, **phases, "epochs_per_s": 0.09079, "train_batch": 128, "iterations": 28,
               "dram_energy_pj": 1e10, "weight_update_latency_ns": 3.1e11, "subarray": 32, "device": "ag_asi"}
    table = pd.DataFrame({"metric": [*metrics, *breakdown],
                          "value": [*metrics.values(), *breakdown.values()]})
    epochs = pd.DataFrame([{"epoch": e, **metrics, **phases, "weight_update_latency_ns": 3e11 + e,
                            "dram_energy_pj": 1e10} for e in (1, 2)])
    run = write(tmp_path / "ns", "neurosim", {"card": CARD}, summary,
                {"stdout.txt": "", "summary.parquet": table, "layers.parquet": pd.DataFrame({"a": [1]}),
                 "settings.json": "{}", "epochs.parquet": epochs})
    section = content.neurosim([run], {})
    tables = [b for b in section.blocks if isinstance(b, content.Table)]
    figures = {b.name: b for b in section.blocks if isinstance(b, content.Figure)}
    assert "FPS (V2.1 training: epochs/s)" in tables[0].columns
    assert "latency (ns) (V2.1 training: per epoch)" in tables[0].columns
    assert "neurosim-energy.png" not in figures  # not an image's energy
    assert "DRAM" in figures["neurosim-energy-epoch.png"].caption
    assert "weight update" in figures["neurosim-energy-epoch.png"].caption
    assert tables[1].rows == [[run.path.name, "128 × 28", "1.2e+09", "2e+08", "7e+10", "4e+07", "1e+10",
                               "3.1e+11", "0.09079"]]
    legend = figures["neurosim-energy-epoch.png"].png
    assert legend  # V2.1's parts by its own names: "synaptic array", not V1.x's "other peripheries"
    assert content.V21_ENERGY_LABELS["other_energy_pj"] == "synaptic array energy (pJ)"
    assert content.V21_ENERGY_LABELS["dram_energy_pj"] == "DRAM energy (pJ)"
    intro = next(b for b in section.blocks if isinstance(b, str) and "each recorded training epoch" in b)
    assert "per epoch of 128 × 28 images" in intro
    assert tables[2].columns[:4] == ["run", "epoch", "latency (ns)", "dynamic energy (pJ)"]
    assert [r[1] for r in tables[2].rows] == [1, 2] and tables[2].rows[1][8] == "3e+11"
    assert f"neurosim-epochs-{run.path.name}.png" in figures  # energy by phase per epoch
    from cimtool.stages.run_neurosim import headline

    line = headline(run)
    assert "0.09079 epochs/s (of 128 x 28 images)" in line and "FPS" not in line
    assert "latency per epoch 1.1e+10 ns" in line


def test_v21_caveats_say_per_epoch_with_its_training_estimate_and_place_dram():
    """V2.1's figures are an epoch's with its training estimate on, an image's with it off; its DRAM
    line is part of the phases (and counts activation transfers over), said with the parts' sum."""
    from cimtool.neurosim.caveats import explain
    from cimtool.neurosim.results import Parsed

    chip = {"latency_ns": 1e9, "dynamic_energy_pj": 1e9, "adc_latency_ns": 5e8, "adc_energy_pj": 4e8,
            "dram_latency_ns": 1e3, "dram_energy_pj": 7e8}
    parsed = Parsed(chip=[{"metric": m, "value": v, "unit": "", "line": 1} for m, v in chip.items()])
    on = explain(parsed, ns_build.NeuroSimSettings(), v21=True)["caveats"]
    off = explain(parsed, ns_build.NeuroSimSettings(trainingEstimation=False), v21=True)["caveats"]
    assert "per epoch" in on[0] and "per image" in off[0]
    assert on[-1].startswith("DRAM transfers, 700 µJ per epoch by V2.1's breakdown line, are inside")
    assert "6 times over" in on[-1] and on[-1].endswith("the parts add up to 110% of the dynamic energy.")
    assert not any("DRAM" in c for c in explain(parsed, None)["caveats"])  # V1.x: no such line


def test_a_cards_write_pulse_is_checked():
    """[update] write_voltage and write_pulse_width: optional, in V and s; a pulse over 1 s is refused
    as a unit slip, in one line naming the key."""
    from cimtool.devices.card import loads_card
    from cimtool.errors import CimtoolError

    base = ('[conductance]\ng_min = 1e-9\ng_max = 1e-8\nlevels = 16\nspacing = "linear"\n[read]\n'
            'voltage = 0.5\n[update]\nnl_ltp = 1.0\nnl_ltd = -1.0\npulses_ltp = 16\npulses_ltd = 16\n')
    card = loads_card(base + "write_voltage = 2.5\nwrite_pulse_width = 1e-6\n", "my.toml")
    assert (card.write_voltage, card.write_pulse_width) == (2.5, 1e-6)
    assert "update.write_pulse_width" not in card.assumed
    assert loads_card(base, "my.toml").write_pulse_width is None  # V2.1's 50 ns stands in
    with pytest.raises(CimtoolError, match=r"my.toml: update.write_pulse_width = 300 s is over a second"):
        loads_card(base + "write_pulse_width = 300\n", "my.toml")
    with pytest.raises(CimtoolError, match=r"update.write_voltage must be > 0"):
        loads_card(base + "write_voltage = -1\n", "my.toml")
