"""NeuroSim as users have it: V1.3 (hwcomponents-neurosim), V1.4 (and V1.5) and V2.1 checkouts,
found by what their main.cpp is; --subarray auto; traces and results checked before they count.

V1.4 and V2.1 come from the unmodified release snapshots in the folder named by
``CIMTOOL_NEUROSIM_SNAPSHOTS`` (``.ci/run`` sets it when the folder is there); their tests skip
without it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cimtool import artifacts
from cimtool.errors import CimtoolError
from cimtool.neurosim import build as ns_build

SNAPSHOTS = os.environ.get("CIMTOOL_NEUROSIM_SNAPSHOTS")
HEAD = [[1, 1, 64, 1, 1, 10, 0, 1]]  # the default model's NetWork.csv: a 64→10 crossbar head
MNIST_CNN = [[28, 28, 1, 3, 3, 16, 1, 1], [14, 14, 16, 3, 3, 32, 1, 1], [1, 1, 1568, 1, 1, 128, 0, 1],
             [1, 1, 128, 1, 1, 10, 0, 1]]


def _snapshot(version: str, part: str) -> Path:
    if not SNAPSHOTS:
        pytest.skip("CIMTOOL_NEUROSIM_SNAPSHOTS is not set (the DNN+NeuroSim release snapshots)")
    path = Path(SNAPSHOTS) / f"DNN_NeuroSim_{version}" / part
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    if shutil.which("make") is None or shutil.which("g++") is None:
        pytest.skip("building NeuroSim needs make and g++")
    return path


def _one_line(result, *needles):
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and "Traceback" not in result.err, result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_auto_subarray_follows_the_floorplan_rule():
    """Chip.cpp: the widest novel-mapped layer, 2^⌈log2(Cout·⌈WBITS/cellBit⌉)⌉ columns, spans at
    least two subarrays."""
    assert ns_build.auto_subarray(HEAD, 8, 4) == 16  # 10 outputs × 2 cells = 20 → 32 columns
    assert not ns_build.subarray_fits(HEAD, 32, 8, 4)
    assert ns_build.auto_subarray(HEAD, 8, 1) == 64  # 80 → 128 columns; Cin 64 fills a 64-row subarray
    assert ns_build.auto_subarray(MNIST_CNN, 8, 4) == 32  # the 3x3 convs are novel-mapped: 32 × 2 = 64
    assert ns_build.auto_subarray(MNIST_CNN, 8, 1) == 128
    with pytest.raises(CimtoolError, match="no --subarray of 128, 64, 32, 16, 8 fits"):
        ns_build.auto_subarray([[1, 1, 64, 1, 1, 2, 0, 1]], 2, 2)


def test_v21_subarrays_are_at_least_32_columns_inside_the_pe():
    """V2.1's floorplan takes the rows, its flip-flops >= 32 columns; a PE (the widest novel-mapped
    layer) narrower than that has no V2.1 geometry."""
    assert ns_build.auto_subarray(MNIST_CNN, 4, 4) == 16  # one cell per weight: 32 columns, two rows
    assert ns_build.v21_columns(MNIST_CNN, 16, 4, 4) == 32
    assert ns_build.v21_columns(MNIST_CNN, 32, 8, 4) == 32
    assert ns_build.v21_columns(MNIST_CNN, 128, 8, 1) == 128
    narrow = [[28, 28, 1, 3, 3, 16, 1, 1], [14, 14, 16, 3, 3, 16, 1, 1], [1, 1, 784, 1, 1, 10, 0, 1]]
    assert ns_build.auto_subarray(narrow, 4, 4) == 8
    with pytest.raises(CimtoolError, match=r">= 32 columns .* = 16 columns here"):
        ns_build.v21_columns(narrow, 8, 4, 4)


def test_neurosim_geometry_takes_the_arrays_or_names_the_nearest():
    """One subarray = one cimtool array: accepted when square, a power of two >= 8 and in the floorplan
    rule; otherwise the nearest geometry NeuroSim takes (fewest doublings or halvings; ties: larger)."""
    geometry = ns_build.neurosim_geometry
    assert geometry(MNIST_CNN, 4, 4, 16, 16) == (16, None)  # 4-bit weights on 4-bit cells: 16 or 8
    assert geometry(MNIST_CNN, 4, 4, 8, 8) == (8, None)
    assert geometry(MNIST_CNN, 8, 4, 32, 32) == (32, None)  # two cells per weight: 64 columns
    size, note = geometry(MNIST_CNN, 4, 4, 128, 128)
    assert size == 16 and note == (
        "NeuroSim cannot take 128x128 arrays (its widest novel-mapped layer, 2^⌈log2(Cout·⌈4/4⌉)⌉ = 32 "
        "columns, must span two 128-column subarrays); the nearest geometry both accept is 16x16")
    size, note = geometry(HEAD, 8, 4, 128, 128)  # no 64-row layer fills a 128-row subarray
    assert size == 16 and "has Cin·k·k >= 128 rows" in note
    size, note = geometry(MNIST_CNN, 4, 4, 16, 32)
    assert size == 16 and "square" in note
    assert geometry(MNIST_CNN, 4, 4, 64, 8)[0] == 16  # 8 and 16 are 3 steps away: the larger
    size, note = geometry(MNIST_CNN, 4, 4, 12, 12)
    assert size == 16 and "powers of two" in note
    with pytest.raises(CimtoolError, match="no --subarray of 128, 64, 32, 16, 8 fits"):
        geometry([[1, 1, 64, 1, 1, 2, 0, 1]], 2, 2, 16, 16)


def test_versions_are_told_by_main_cpp(tmp_path):
    source = ns_build.bundled_source()
    if source is None:
        pytest.skip("no bundled V1.3 source")
    assert ns_build.source_version(source).key == "v13"
    fake = tmp_path / "NeuroSIM"
    fake.mkdir()
    (fake / "main.cpp").write_text("int main(int argc, char * argv[]) { return 0; }\n")
    (fake / "Param.cpp").write_text("Param::Param() { technode = 22; }\n")
    known = r"not a DNN\+NeuroSim release cimtool knows \(V2.1, V1.4/V1.5, V1.3\)"
    with pytest.raises(CimtoolError, match=known):
        ns_build.source_version(fake)


def test_unknown_version_is_one_line_and_writes_nothing(default_trace, tmp_path, cli):
    fake = tmp_path / "NeuroSIM"
    fake.mkdir()
    (fake / "main.cpp").write_text("int main() { return 0; }\n")
    (fake / "Param.cpp").write_text("Param::Param() { technode = 22; }\n")
    out = tmp_path / "out"
    _one_line(cli("run-neurosim", "--trace", default_trace.path, "--neurosim", fake, "--out", out, "--quiet"),
              "not a DNN+NeuroSim release cimtool knows")
    assert not out.exists()


def test_a_malformed_network_csv_is_refused_before_neurosim_runs(default_trace, tmp_path, cli):
    broken = tmp_path / "trace"
    shutil.copytree(default_trace.path, broken)
    network = broken / "NetWork.csv"
    network.write_text(network.read_text().replace(",0,1\n", ",0\n"))  # 7 columns
    manifest = json.loads((broken / "manifest.json").read_text())  # re-hashed: only the content is wrong
    manifest["files"]["NetWork.csv"] = {"sha256": artifacts.sha256_file(network),
                                        "bytes": network.stat().st_size}
    (broken / "manifest.json").write_text(json.dumps(manifest))
    try:
        artifacts.load(broken, "trace")
    except CimtoolError as exc:  # the manifest format changed: rebuild it the way the writer does
        pytest.skip(f"cannot re-hash a manifest by hand here: {exc}")
    out = tmp_path / "out"
    _one_line(cli("run-neurosim", "--trace", broken, "--out", out, "--quiet"), "NetWork.csv:1",
              "not a NetWork.csv row")
    assert not out.exists()


def test_impossible_figures_are_refused(neurosim_auto_run):
    from cimtool.neurosim.results import parse_stdout
    from cimtool.neurosim.runner import check_physical

    stdout = neurosim_auto_run.file("stdout.txt").read_text()
    check_physical(parse_stdout(stdout), stdout)  # the real run passes
    chip = pd.read_parquet(neurosim_auto_run.file("summary.parquet")).set_index("metric")
    lines = stdout.splitlines()
    n = int(chip.loc["dynamic_energy_pj", "line"]) - 1  # the line the parser read the chip's energy from
    lines[n] = lines[n].split(":")[0] + ": -3.77e+09pJ"
    bad = "\n".join(lines)
    with pytest.raises(CimtoolError, match=r"physically impossible figures \(dynamic_energy_pj -3.77e\+09\)"):
        check_physical(parse_stdout(bad), bad)


@pytest.fixture(scope="module")
def neurosim_auto_run(default_trace, neurosim_cache, tmp_path_factory):
    """The default model through V1.3 with no --subarray."""
    from cimtool.cli import main

    out = tmp_path_factory.mktemp("ns-auto") / "run"
    with pytest.raises(SystemExit) as exc:
        main(["run-neurosim", "--trace", str(default_trace.path), "--cache-dir", str(neurosim_cache),
              "--out", str(out), "--quiet"])
    assert exc.value.code == 0
    return artifacts.load(out, "neurosim")


def test_default_model_runs_on_v13_without_a_subarray(neurosim_auto_run, neurosim_run):
    s = neurosim_auto_run.summary
    assert s["subarray"] == 16 and s["subarray_auto"] and s["neurosim_version"] == "V1.3"
    assert s["tops_per_w"] == neurosim_run.summary["tops_per_w"]  # the same chip as --subarray 16


def _values_equal_stdout(run: artifacts.Artifact) -> None:
    stdout = run.file("stdout.txt").read_text().splitlines()
    chip = pd.read_parquet(run.file("summary.parquet"))
    assert len(chip) > 20
    for row in chip[chip.line.notna()].itertuples():  # not the derived leakage of every tile
        line = stdout[int(row.line) - 1]
        printed = re.findall(r"[-+]?\d+\.?\d*(?:[eE][-+]?\d+)?", line.split(":")[-1])[0]
        assert float(printed) == row.value, line


def test_v14_builds_and_runs_the_default_model_without_a_subarray(default_trace, neurosim_cache, tmp_path,
                                                                   cli):
    source = _snapshot("V1.4", "Inference_pytorch")
    assert ns_build.source_version(ns_build._source_dir(source)).key == "v14"
    out = tmp_path / "v14"
    result = cli("run-neurosim", "--trace", default_trace.path, "--neurosim", source, "--cache-dir",
                 neurosim_cache, "--out", out, "--quiet", "--json")
    assert result.code == 0, result.err
    run = artifacts.load(out, "neurosim")
    _values_equal_stdout(run)
    s = run.summary
    assert s["neurosim_version"] == "V1.4/V1.5" and s["subarray"] == 16 and s["subarray_auto"]
    for key in ("chip_area_um2", "latency_ns", "dynamic_energy_pj", "tops_per_w"):
        assert s[key] > 0, key
    # a pipeline: its leakage is every tile over the cycle, as V1.4 prints it; the parts are the layers'
    assert s["leakage_energy_pj"] == pytest.approx(s["neurosim_leakage_energy_pj"], rel=1e-5)
    assert s["leakage_energy_pj"] == pytest.approx(s["leakage_power_uw"] * s["latency_ns"] * 1e-3, rel=1e-5)
    assert s["latency_dominated_by"] == max(s["latency_shares"], key=s["latency_shares"].get)
    assert s["clock_read_limited"] and "R_on 234 MΩ" in s["caveats"][1]
    settings = json.loads(run.file("settings.json").read_text())
    assert settings["version"] == "v14"
    assert settings["arguments"][3:5] == ["16", "16"]  # subArray, parallelRead
    assert "readVoltage" not in settings["patched"]  # V1.4 derives it from technode



def test_v14_with_its_own_param_cpp(default_trace, neurosim_cache, tmp_path, cli):
    """--chip release: the release's chip (V1.4: SRAM, cellBit 1, 32 ADC levels), only the subarray
    rows set, on its command line as its inference.py does; equal to a build of the unmodified
    source; card options refused."""
    from cimtool.neurosim.results import run as run_binary

    source = _snapshot("V1.4", "Inference_pytorch")
    out = tmp_path / "release"
    result = cli("run-neurosim", "--trace", default_trace.path, "--neurosim", source, "--chip", "release",
                 "--cache-dir", neurosim_cache, "--out", out, "--quiet")
    assert result.code == 0, result.err
    run = artifacts.load(out, "neurosim")
    _values_equal_stdout(run)
    s = run.summary
    assert (s["chip"], s["cell_bits"], s["adc_levels"], s["subarray"], s["subarray_cols"]) == (
        "release", 1, 32, 64, 128)
    settings = json.loads(run.file("settings.json").read_text())
    assert settings["patched"] == [] and settings["arguments"][3:5] == ["64", "64"]
    assert settings["release_param_cpp"]["memcelltype"] == 1  # SRAM
    plain = ns_build.build(ns_build._source_dir(source), tmp_path / "plain", lambda *_: None, ())
    args = [str(plain), *(str(default_trace.file(a)) if a.endswith(".csv") else a
                          for a in settings["arguments"])]
    stdout = run_binary(args, tmp_path, 60, lambda _line: None)
    strip = re.compile(r"^Total Run-time.*$", re.MULTILINE)  # the one line that measures the run
    assert strip.sub("", stdout) == strip.sub("", run.file("stdout.txt").read_text())
    _one_line(cli("run-neurosim", "--trace", default_trace.path, "--neurosim", source, "--chip", "release",
                  "--cell-bits", "2", "--out", tmp_path / "no", "--quiet"), "--cell-bits", "--chip card")
    assert not (tmp_path / "no").exists()

@pytest.mark.parametrize("version, part", [("V1.4", "Inference_pytorch"), ("V2.1", "Training_pytorch")])
def test_trace_files_identical_to_each_releases_own_hook(version, part, tmp_path):
    """neurosim-trace's input and weight files, byte for byte what the release's utee/hook.py writes.

    V2.1's stretch_input ignores padding and stride (it takes the valid stride-1 windows of the
    unpadded input and leaves the other rows zero), so V2.1 is compared on unpadded stride-1 convs."""
    import numpy as np
    import torch

    from cimtool.neurosim.trace import bits_csv, layer_weight_csv, stretch
    from tests.neurosim_reference import reference_files

    checkout = _snapshot(version, part)
    rng = np.random.default_rng(3)
    cases, ours = {}, {}
    for bits in (4, 8):
        geometries = ((3, 1, 1), (3, 0, 2), (5, 2, 2)) if version != "V2.1" else ((3, 0, 1), (5, 0, 1))
        for kernel, padding, stride in geometries:
            x = rng.uniform(-1, 1, (1, 3, 9, 9)).astype(np.float32)
            name = f"conv_{bits}_{kernel}_{padding}_{stride}"
            cases[name] = x
            windows = stretch(x[0].astype(np.float64), kernel, (padding, padding), (stride, stride))
            ours[name] = bits_csv(windows, bits)
        x = rng.uniform(-1, 1, (1, 300)).astype(np.float32)
        cases[f"fc_{bits}"] = x
        ours[f"fc_{bits}"] = bits_csv(x, bits)
        limit = 1 - 1 / 2**bits  # the +1.0 clip does not bite below this
        for n, shape in enumerate([(16, 3, 3, 3), (10, 64)]):
            w = torch.empty(shape).uniform_(-limit, limit).numpy()
            cases[f"weight_{bits}_{n}"] = w
            ours[f"weight_{bits}_{n}"] = layer_weight_csv(w, 1.0, bits)
    reference = reference_files(checkout, cases, tmp_path)
    for name in cases:
        assert ours[name] == reference[name], name


# --- V2.1: the training estimate, fast by default --------------------------------------------------

@pytest.fixture(scope="module")
def v21_trace(default_model, tmp_path_factory):
    from cimtool.stages import neurosim_trace as stage
    from cimtool.ui import Reporter

    art, _, root = default_model
    out = tmp_path_factory.mktemp("trace-v21") / "trace"
    return stage.run(stage.TraceParams(model=str(art.path), format="v21"), out, root, False,
                     Reporter(quiet=True))


def test_training_settings_are_patched_in_v21_only():
    assert set(ns_build.TRAINING) <= set(ns_build.BY_KEY["v21"].patched)
    for key in ("v13", "v14"):  # V1.x builds and their cache keys are what they were
        assert not set(ns_build.TRAINING) & set(ns_build.BY_KEY[key].patched)
    text = ("Param::Param() {\n\ttrainingEstimation = true; // x\n\tbatchSize = 200;\n"
            "\tnumIteration = 250;\n}\n")
    settings = ns_build.NeuroSimSettings(trainingEstimation=False, batchSize=4, numIteration=2)
    patched = ns_build.patch_param(text, ns_build.TRAINING)
    assert 'trainingEstimation = cimtool_setting("CIMTOOL_NS_trainingEstimation", true); // x' in patched
    assert 'batchSize = cimtool_setting("CIMTOOL_NS_batchSize", 200);' in patched
    assert ns_build.setting_env(settings, ns_build.TRAINING) == {
        "CIMTOOL_NS_trainingEstimation": "0", "CIMTOOL_NS_batchSize": "4", "CIMTOOL_NS_numIteration": "2"}


def test_v21_options_are_refused_for_v1x_in_one_line(default_trace, tmp_path, cli):
    if ns_build.bundled_source() is None:
        pytest.skip("no bundled V1.3 source")
    out = tmp_path / "out"
    result = cli("run-neurosim", "--trace", default_trace.path, "--iterations", "3", "--out", out, "--quiet")
    _one_line(result, "--iterations 3", "NeuroSim V1.3 estimates inference only")
    assert not out.exists()


def test_a_v13_trace_is_refused_by_v21_in_one_line(default_trace, tmp_path, cli):
    source = _snapshot("V2.1", "Training_pytorch")
    out = tmp_path / "out"
    result = cli("run-neurosim", "--trace", default_trace.path, "--neurosim", source, "--out", out, "--quiet")
    _one_line(result, "is a v13 trace", "NeuroSim V2.1", "--format v21")
    assert not out.exists()


def test_v21_refuses_what_it_cannot_compute():
    for training in (True, False):  # fully connected only: NaN figures, or V2.1 spins for hours
        with pytest.raises(CimtoolError, match=r"V2.1 cannot estimate a network without a conv layer"):
            ns_build.check_v21(HEAD, training, 200, 4)
    small = [[12, 12, 2, 5, 5, 8, 0, 1], [1, 1, 128, 1, 1, 10, 0, 1]]  # 8×8 = 64 output positions
    with pytest.raises(CimtoolError, match=r"needs >= 128 output positions .* layer 1, the largest input; it "
                                           r"has 64"):
        ns_build.check_v21(small, True, 200, 4)
    ns_build.check_v21(small, False, 200, 4)
    with pytest.raises(CimtoolError, match=r"--train-batch 8: .* --train-batch >= 16"):
        ns_build.check_v21(MNIST_CNN, True, 8, 4)
    ns_build.check_v21(MNIST_CNN, True, 16, 4)


def test_the_default_model_is_refused_by_v21_in_one_line(v21_trace, tmp_path, cli):
    source = _snapshot("V2.1", "Training_pytorch")
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = cli("run-neurosim", "--trace", v21_trace.path, "--neurosim", source, "--cache-dir", cache,
                 "--out", out, "--quiet")
    _one_line(result, "V2.1 cannot estimate a network without a conv layer", "V1.4")
    assert not out.exists() and not cache.exists()  # refused before building
    result = cli("run-neurosim", "--trace", v21_trace.path, "--neurosim", source, "--training-estimation",
                 "off", "--cache-dir", cache, "--out", out, "--quiet")
    _one_line(result, "V2.1 cannot estimate a network without a conv layer")
    assert not out.exists() and not cache.exists()


def test_v21_builds_and_runs_a_cnn_in_seconds(neurosim_cache, tmp_path):
    """V2.1's training estimate, built with cimtool's settings and its defaults, on a small CNN's
    record (random weights and inputs): every figure parsed equals its stdout line."""
    import numpy as np

    from cimtool.devices.card import load_card
    from cimtool.devices.mapping_options import DEFAULT_DEVICE
    from cimtool.neurosim.caveats import explain
    from cimtool.neurosim.results import TRAINING_METRICS, parse_stdout
    from cimtool.neurosim.results import run as run_binary
    from cimtool.params import RunParams

    source = ns_build._source_dir(_snapshot("V2.1", "Training_pytorch"))
    p = RunParams(trace="-")
    card = load_card(p.device or DEFAULT_DEVICE)
    subarray = ns_build.auto_subarray(MNIST_CNN, 8, 4)
    settings = ns_build.NeuroSimSettings.from_card(card, p.cell, 4, p.adc_bits, subarray, p.technode, True,
                                                   p.train_batch, p.iterations)
    ns_build.check_v21(MNIST_CNN, True, settings.batchSize, settings.cellBit)
    names = ns_build.BY_KEY["v21"].patched
    binary = ns_build.build(source, neurosim_cache, lambda *_: None, names)
    rng = np.random.default_rng(0)
    (tmp_path / "NetWork.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in MNIST_CNN))
    argv = [str(binary), "1", str(tmp_path / "NetWork.csv"), "8", "8"]
    for k, (h, w, cin, kh, kw, cout, _, _) in enumerate(MNIST_CNN, 1):
        weights = rng.uniform(-1, 1, (cin * kh * kw, cout))
        np.savetxt(tmp_path / f"weight{k}.csv", weights, delimiter=",", fmt="%.5f")
        np.savetxt(tmp_path / f"weightOld{k}.csv", weights * 0.99, delimiter=",", fmt="%.5f")
        bits = rng.random((cin * kh * kw, (h - kh + 1) * (w - kw + 1) * 8)) < 0.4
        np.savetxt(tmp_path / f"input{k}.csv", bits, delimiter=",", fmt="%d")
        argv += [str(tmp_path / f"{n}{k}.csv") for n in ("weight", "weightOld", "input")] + ["0.4"]
    work = tmp_path / "run"
    (work / "NeuroSim_Results_Each_Epoch").mkdir(parents=True)
    env = ns_build.setting_env(settings, names)
    stdout = run_binary(argv, work, 60, lambda line: None, subarray, None, env)
    parsed = parse_stdout(stdout)
    lines = stdout.splitlines()
    for row in [r for r in parsed.chip if r["line"] is not None] + parsed.layer_lines:
        printed = re.findall(r"[-+]?\d+\.?\d*(?:[eE][-+]?\d+)?", lines[row["line"] - 1].split(":")[-1])[0]
        assert float(printed) == row["value"], lines[row["line"] - 1]
    chip = {m["metric"]: m["value"] for m in parsed.chip}
    for key in ("chip_area_um2", "latency_ns", "dynamic_energy_pj", "leakage_energy_pj", "tops_per_w", "tops",
                "fps", "area_weight_gradient_um2"):
        assert chip[key] > 0, key
    for key in TRAINING_METRICS:
        assert chip[key] > 0, key
    phases = ("forward", "activation_gradient", "weight_gradient", "weight_update")
    assert chip["latency_ns"] == pytest.approx(sum(chip[f"{p}_latency_ns"] for p in phases), rel=1e-4)
    assert chip["dynamic_energy_pj"] == pytest.approx(sum(chip[f"{p}_energy_pj"] for p in phases), rel=1e-4)
    assert {"forward_latency_ns", "weight_update_energy_pj", "adc_energy_pj", "dram_energy_pj"} <= set(
        parsed.layers[2])
    assert chip["leakage_energy_pj"] == pytest.approx(chip["leakage_power_uw"] * chip["latency_ns"] * 1e-3,
                                                      rel=1e-5)  # every tile for the epoch
    parts = explain(parsed, settings, v21=True)["latency_shares"]  # V2.1 prints its parts apart
    assert set(parts) >= {"ADC", "synaptic array", "buffers", "interconnect", "weight gradient", "DRAM"}
    assert sum(parts.values()) == pytest.approx(1, abs=1e-3)
    assert (work / "NeuroSim_Results_Each_Epoch" / "NeuroSim_Breakdown_Epock_1.csv").stat().st_size > 0
    runtime = next(line for line in lines if line.startswith("Total Run-time of NeuroSim"))
    assert float(runtime.split(":")[1].split()[0]) <= 60, runtime


def test_a_checkout_that_does_not_build_is_one_line_with_the_log(default_trace, tmp_path, cli):
    source = ns_build.bundled_source()
    if source is None or shutil.which("make") is None or shutil.which("g++") is None:
        pytest.skip("needs the bundled V1.3 source, make and g++")
    broken = tmp_path / "NeuroSIM"
    shutil.copytree(source, broken, ignore=shutil.ignore_patterns("*.o", "main"))
    (broken / "Chip.cpp").write_text((broken / "Chip.cpp").read_text() + "\nthis is not C++;\n")
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = cli("run-neurosim", "--trace", default_trace.path, "--neurosim", broken, "--cache-dir", cache,
                 "--out", out, "--quiet")
    _one_line(result, "building NeuroSim", "Chip.cpp", "error:", "the whole log:")
    log = Path(result.err.split("the whole log: ")[1].strip())
    assert log.is_file() and "this is not C++" in log.read_text()
    assert not out.exists()


def test_a_v21_run_over_its_timeout_is_killed(neurosim_cache, tmp_path, cli):
    """mnist_cnn's v21 trace through V2.1 with a timeout it cannot meet (its run takes ~1 s)."""
    source = _snapshot("V2.1", "Training_pytorch")
    trace = _cnn_v21_trace(tmp_path)
    out = tmp_path / "out"
    result = cli("run-neurosim", "--trace", trace, "--neurosim", source, "--cache-dir", neurosim_cache,
                 "--timeout", "0.2", "--out", out, "--quiet")
    _one_line(result, "NeuroSim ran over --timeout 0.2 s and was stopped")
    assert not out.exists() and not list(tmp_path.glob("out.*"))  # no artifact, no partial, no lock


def _cnn_v21_trace(tmp_path: Path) -> Path:
    """A v21 trace of mnist_cnn trained one epoch on mnist5k (a CNN: V2.1 can estimate its training)."""
    from cimtool.cli import main

    for args in (["train-ann", "--model", "mnist_cnn", "--epochs", "1", "--out", str(tmp_path / "cnn")],
                 ["neurosim-trace", "--model", str(tmp_path / "cnn"), "--format", "v21", "--out",
                  str(tmp_path / "trace")]):
        with pytest.raises(SystemExit) as exc:
            main([*args, "--artifacts-root", str(tmp_path), "--quiet"])
        assert exc.value.code == 0
    return tmp_path / "trace"


def test_one_build_serves_every_chip_and_equals_a_dedicated_build(default_trace, neurosim_cache, tmp_path):
    """The environment-driven binary gives, byte for byte, the stdout of a build whose Param.cpp has
    the same settings written in (what cimtool built before), for a chip unlike the release's."""
    import subprocess

    from cimtool.neurosim.results import run as run_binary

    source = ns_build.bundled_source()
    if source is None or shutil.which("make") is None:
        pytest.skip("needs the bundled V1.3 source and make")
    settings = ns_build.NeuroSimSettings(cellBit=2, levelOutput=16, numRowSubArray=16, numColSubArray=16,
                                         resistanceOn=2.34e8, resistanceOff=4.18e11, readVoltage=0.2)
    binary = ns_build.build(source, neurosim_cache, lambda *_: None)
    dedicated = tmp_path / "dedicated"
    shutil.copytree(source, dedicated, ignore=shutil.ignore_patterns("*.o", "main"))
    text = (dedicated / "Param.cpp").read_text(errors="replace")
    for name, value in dataclasses.asdict(settings).items():  # literal values, as a user edits Param.cpp
        literal = repr(value) if isinstance(value, float) else str(value)
        text = re.sub(rf"^(\s*){name}\s*=\s*[^;]*;", rf"\g<1>{name} = {literal};", text, count=1, flags=re.M)
    (dedicated / "Param.cpp").write_text(text)
    subprocess.run(["make", "-j2"], cwd=dedicated, check=True, capture_output=True)
    files = default_trace.path
    args = [str(files / "NetWork.csv"), "8", "8", str(files / "weight1.csv"), str(files / "input1.csv")]
    outputs = []
    for exe, env in ((binary, ns_build.setting_env(settings)), (dedicated / "main", None)):
        work = tmp_path / f"run-{len(outputs)}"
        work.mkdir()
        outputs.append(run_binary([str(exe), *args], work, 120, lambda line: None, 16, None, env))
    strip = [re.sub(r"Total Run-time of NeuroSim: .*", "", o) for o in outputs]
    assert strip[0] == strip[1] and "ChipArea" in strip[0]


# --- on-chip training → its PPA: qat --mode onchip hands its weights to a V2.1 record ------------

def test_onchip_training_hands_its_update_to_v21(neurosim_cache, tmp_path, cli):
    """A CNN trained on chip (qat --mode onchip, two epochs) gives a V2.1 record at its training's
    weight bits (⌈log2 16⌉ = 4 on rram_seed003), with its batch and iterations and, as weightOld, its
    weights before the last update; and the record of its first epoch, from that epoch's weights, in
    epoch1/. run-neurosim takes cellBit = WBITS and the run's batch × iterations, refuses another
    cellBit, and prices every epoch (one row each), or the last: mnist_cnn's widest conv (32
    outputs, one cell per weight) spans two 16-row subarrays, which V2.1 runs 32 columns wide."""
    from safetensors.numpy import load_file

    from cimtool.models.io import model_splits, onchip_epochs
    from cimtool.neurosim.trace import layer_weight_csv
    from cimtool.params import RunParams
    from cimtool.stages.run_neurosim import training_options, training_sources

    source = _snapshot("V2.1", "Training_pytorch")
    root = tmp_path / "root"
    assert cli("train-ann", "--model", "mnist_cnn", "--epochs", "1", "--artifacts-root", root, "--out",
               root / "m", "--quiet").code == 0
    assert cli("qat", "--mode", "onchip", "--epochs", "2", "--trials", "1", "--model", root / "m",
               "--artifacts-root", root, "--out", root / "q", "--quiet").code == 0
    for name in ("q", "m"):
        assert cli("neurosim-trace", "--format", "v21", "--model", root / name, "--artifacts-root", root,
                   "--out", root / f"t{name}", "--quiet").code == 0
    trace = artifacts.load(root / "tq", "trace")
    qmodel = artifacts.load(root / "q", "qmodel")
    n_train = len(model_splits(qmodel)["train"])
    assert trace.params["weight_bits"] == 4 and trace.summary["onchip_training"] == {
        "weight_bits": 4, "train_batch": 128, "iterations": -(-n_train // 128), "epochs": 2}
    plain = artifacts.load(root / "tm", "trace")
    assert plain.params["weight_bits"] == 8 and "onchip_training" not in plain.summary
    assert "before the last on-chip update" in trace.summary["weight_old"]
    assert plain.summary["weight_old"] == "the same weights (no update)"
    assert trace.summary["epochs"] == [1, 2] and plain.summary["epochs"] == [1]
    epochs = onchip_epochs(qmodel)
    after = load_file(str(qmodel.file("weights.safetensors")))
    name = "features.0"
    new = after[f"{name}.weight"]
    assert list(epochs) == [1, 2] and np.array_equal(epochs[2][name][0], new)
    before = {name: epochs[2][name][1]}
    assert before[name].shape == new.shape and 0 < np.mean(before[name] != new) < 1  # one update's writes
    scale = qmodel.summary["onchip_scales"][name]  # the layer's α: the files hold the device states w
    assert np.array_equal(new / scale * 8, np.round(new / scale * 8)) and np.abs(new).max() < scale
    assert trace.file("weight1.csv").read_bytes() == layer_weight_csv(new, scale, 4)
    assert trace.file("weightOld1.csv").read_bytes() == layer_weight_csv(before[name], scale, 4)
    assert trace.file("weightOld1.csv").read_bytes() != trace.file("weight1.csv").read_bytes()
    first, first_old = epochs[1][name]  # epoch 1's record: its weights, its weightOld, its inputs
    assert trace.file("epoch1/weight1.csv").read_bytes() == layer_weight_csv(first, scale, 4)
    assert trace.file("epoch1/weightOld1.csv").read_bytes() == layer_weight_csv(first_old, scale, 4)
    assert trace.file("epoch1/weight1.csv").read_bytes() != trace.file("weight1.csv").read_bytes()
    assert "main}\" 1 NetWork.csv 4 8" in trace.file("epoch1/trace_command.sh").read_text()
    assert "main}\" 2 NetWork.csv 4 8" in trace.file("trace_command.sh").read_text()

    onchip = trace.summary["onchip_training"]
    p = RunParams(trace="-")
    assert training_options(p, onchip) == {"training": True, "train_batch": 128,
                                           "iterations": onchip["iterations"]}
    assert training_options(p, {}) == {"training": True, "train_batch": 200, "iterations": 250}
    given = RunParams(trace="-", train_batch=64)
    assert training_options(given, onchip)["train_batch"] == 64
    assert training_sources(given, onchip) == {"train_batch": "--train-batch",
                                               "iterations": "the on-chip run"}

    out = root / "n"
    result = cli("run-neurosim", "--trace", root / "tq", "--neurosim", source, "--cell-bits", "2",
                 "--cache-dir", neurosim_cache, "--artifacts-root", root, "--out", out, "--quiet")
    _one_line(result, "--cell-bits 2 with the trace's 4-bit weights", "cellBit = WBITS", "--cell-bits 4")
    result = cli("run-neurosim", "--trace", root / "tq", "--neurosim", source, "--epochs", "first",
                 "--cache-dir", neurosim_cache, "--artifacts-root", root, "--out", out, "--quiet")
    _one_line(result, "--epochs", "first")
    assert not out.exists()
    assert cli("run-neurosim", "--trace", root / "tq", "--neurosim", source, "--cache-dir", neurosim_cache,
               "--artifacts-root", root, "--out", out, "--quiet").code == 0
    run = artifacts.load(out, "neurosim")
    s = run.summary
    assert (s["subarray"], s["subarray_cols"], s["cell_bits"], s["epochs"]) == (16, 32, 4, [1, 2])
    rows = pd.read_parquet(run.file("epochs.parquet"))
    assert rows["epoch"].tolist() == [1, 2]
    for metric in ("latency_ns", "dynamic_energy_pj", "forward_energy_pj", "weight_update_latency_ns",
                   "dram_energy_pj"):
        assert rows[metric].iloc[-1] == s[metric], metric  # the summary is the last epoch's
    assert rows["weight_update_latency_ns"].nunique() == 2  # each epoch's own update
    for e in (1, 2):
        assert f"NeuroSim_Breakdown_Epock_{e}.csv" in run.manifest["files"]
    assert "stdout_epoch1.txt" in run.manifest["files"] and "stdout_epoch2.txt" not in run.manifest["files"]
    dram = next(c for c in s["caveats"] if c.startswith("DRAM transfers"))
    assert "per epoch" in dram and "inside its forward" in dram
    last = root / "n-last"
    assert cli("run-neurosim", "--trace", root / "tq", "--neurosim", source, "--epochs", "last",
               "--cache-dir", neurosim_cache, "--artifacts-root", root, "--out", last, "--quiet").code == 0
    only = pd.read_parquet(artifacts.load(last, "neurosim").file("epochs.parquet"))
    pd.testing.assert_frame_equal(only, rows.iloc[1:].reset_index(drop=True))


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    """A CIFAR-10 binary folder of random 32×32×3 images: 5 × 8 training records, 8 test records."""
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, (8, 1), dtype=np.uint8)
        np.concatenate([labels, rng.integers(0, 256, (8, 3072), dtype=np.uint8)], axis=1).tofile(
            folder / f"{name}.bin")
    return folder


def _v21_rerun(run: artifacts.Artifact, trace: artifacts.Artifact, directory: Path, **changes) -> dict:
    """V2.1's chip figures for the record in ``directory`` on ``run``'s chip (``changes``: settings)."""
    from cimtool.neurosim.results import parse_stdout
    from cimtool.neurosim.runner import estimate

    recorded = json.loads(run.file("settings.json").read_text())["settings"]
    settings = dataclasses.replace(ns_build.NeuroSimSettings(**recorded), **changes)
    source = ns_build._source_dir(_snapshot("V2.1", "Training_pytorch"))
    binary = ns_build.build(source, Path(run.params["cache_dir"]), lambda *_: None,
                            ns_build.BY_KEY["v21"].patched)
    layers = pd.read_parquet(directory / "layers.parquet").to_dict("records")
    result = estimate(binary, ns_build.BY_KEY["v21"], directory, trace.params["weight_bits"],
                      trace.params["input_bits"], layers, settings, 600, None)
    return {m["metric"]: m["value"] for m in parse_stdout(result.stdout).chip}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mnist_cnn", "vgg8"])
def test_v21_prices_the_onchip_trained_weights_with_the_cards_pulses(model, cifar_dir, neurosim_cache,
                                                                     tmp_path, cli):
    """mnist_cnn (mnist5k) and VGG8 (32×32×3 images), trained one epoch on chip on ag_asi (97 levels:
    7-bit weights, one 7-bit cell each), priced by V2.1 on their trained weights: with every weight
    and weightOld at +0.99 of the scale instead, its forward energy moves (the cells' conductances
    enter the column currents) and the weight update vanishes (weight = weightOld: no pulse); its
    update latency is the card's pulses (97/100 of 300 µs at 3.2 V), thousands of times V2.1's
    default 60 pulses of 50 ns (VGG8: the card's write settings in its run; V2.1's own once, on the
    small network)."""
    from cimtool.devices.card import load_card
    from cimtool.neurosim.trace import layer_weight_csv

    source = _snapshot("V2.1", "Training_pytorch")
    root = tmp_path / "root"
    data = ["--dataset", "cifar10", "--data-dir", cifar_dir] if model == "vgg8" else []
    common = ["--artifacts-root", root, "--quiet"]
    assert cli("train-ann", "--model", model, "--epochs", "1", *data, "--out", root / "m", *common).code == 0
    assert cli("qat", "--mode", "onchip", "--device", "ag_asi", "--epochs", "1", "--trials", "1", "--model",
               root / "m", "--out", root / "q", *common).code == 0
    assert cli("neurosim-trace", "--format", "v21", "--model", root / "q", "--batch-size", "8", "--out",
               root / "t", *common).code == 0
    assert cli("run-neurosim", "--trace", root / "t", "--neurosim", source, "--cache-dir", neurosim_cache,
               "--out", root / "n", *common).code == 0
    trace, run = artifacts.load(root / "t", "trace"), artifacts.load(root / "n", "neurosim")
    bits = trace.params["weight_bits"]
    assert bits == run.summary["cell_bits"] == 7 and run.summary["subarray_cols"] >= ns_build.V21_MIN_COLS
    chip = pd.read_parquet(run.file("summary.parquet"))
    trained = dict(zip(chip["metric"], chip["value"], strict=True))

    flat = tmp_path / "flat"  # the same record, every crossbar weight and weightOld at +0.99 of the scale
    shutil.copytree(trace.path, flat, ignore=shutil.ignore_patterns("manifest.json"))
    for layer in pd.read_parquet(flat / "layers.parquet").to_dict("records"):
        for name in (f"weight{layer['layer']}.csv", f"weightOld{layer['layer']}.csv"):
            shape = (layer["cols"], layer["rows"])  # [Cout, Cin·k·k]: the file is its transpose
            (flat / name).write_bytes(layer_weight_csv(np.full(shape, 0.99), 1.0, bits))
    same = _v21_rerun(run, trace, flat)
    assert same["forward_energy_pj"] != trained["forward_energy_pj"]
    assert same["adc_energy_pj"] != trained["adc_energy_pj"]
    assert trained["peak_weight_update_latency_ns"] > 0 == same["peak_weight_update_latency_ns"]
    assert same["weight_update_energy_pj"] < 1e-2 * trained["weight_update_energy_pj"]

    settings = json.loads(run.file("settings.json").read_text())["settings"]
    card = load_card("ag_asi")
    assert (settings["maxNumLevelLTP"], settings["maxNumLevelLTD"]) == (card.pulses_ltp, card.pulses_ltd)
    assert settings["writePulseWidth"] == pytest.approx(card.write_pulse_width)
    if model == "vgg8":  # a VGG8 run takes ~22 s
        return
    release = ns_build.release_values(ns_build._source_dir(source), ns_build.WRITE)  # 60, 60, 4 V, 50 ns
    default = _v21_rerun(run, trace, trace.path, **{k: type(getattr(ns_build.NeuroSimSettings(), k))(v)
                                                    for k, v in release.items()})
    assert default["forward_energy_pj"] == trained["forward_energy_pj"]
    ratio = trained["weight_update_latency_ns"] / default["weight_update_latency_ns"]
    # V2.1 prices an update by its pulses: 300 µs / 50 ns = 6000 times as long a pulse, and up to 100
    # pulses a swing for its 60; its decoders and drivers are the same on both
    assert 3000 < ratio <= 6000 * 100 / 60, ratio


# --- V2.1 prices the trained weights (one precision) and the card's write pulses -------------------

# a CNN V2.1 can map one weight per cell: a 64-output 3×3 conv spans two 32-column subarrays (V2.1's
# narrowest: 16 columns are narrower than its flip-flops); 12×12 = 144 output positions of the largest input
WIDE_CNN = [[28, 28, 1, 3, 3, 64, 1, 1], [14, 14, 64, 3, 3, 64, 1, 1], [1, 1, 3136, 1, 1, 10, 0, 1]]


def _v21_epoch(binary, directory, weights, old, bits, card, cell_bits, technode=22):
    """V2.1's chip figures for WIDE_CNN with these weights (and weightOld) files, inputs already there."""
    from cimtool.neurosim.results import parse_stdout
    from cimtool.neurosim.runner import estimate

    for k, (w, o) in enumerate(zip(weights, old, strict=True), 1):
        np.savetxt(directory / f"weight{k}.csv", w, delimiter=",", fmt="%10.5f")
        np.savetxt(directory / f"weightOld{k}.csv", o, delimiter=",", fmt="%10.5f")
    settings = dataclasses.replace(
        ns_build.NeuroSimSettings.from_card(card, "rram", cell_bits, None, 32, technode, True, 128, 28,
                                            wire_width=ns_build.BY_KEY["v21"].wire_width),
        numRowSubArray=32, numColSubArray=32)
    layers = [{"layer": k, "activity_sample": 0.3} for k in range(1, len(WIDE_CNN) + 1)]
    result = estimate(binary, ns_build.BY_KEY["v21"], directory, bits, 8, layers, settings, 120, None)
    return {m["metric"]: m["value"] for m in parse_stdout(result.stdout).chip}


def _wide_cnn_inputs(directory: Path, rng) -> list[tuple[int, int]]:
    """WIDE_CNN's NetWork.csv and input files in ``directory``; its layers' weight shapes."""
    (directory / "NetWork.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in WIDE_CNN))
    for k, (h, w, cin, kh, kw, _, _, _) in enumerate(WIDE_CNN, 1):
        bits = rng.random((cin * kh * kw, (h - kh + 1) * (w - kw + 1) * 8)) < 0.3
        np.savetxt(directory / f"input{k}.csv", bits, delimiter=",", fmt="%d")
    return [(cin * kh * kw, cout) for _, _, cin, kh, kw, cout, _, _ in WIDE_CNN]


def test_v21_runs_on_its_own_wire_table_at_every_node(neurosim_cache, tmp_path):
    """V2.1's Param.cpp knows other wire widths than V1.x's (its AR/Rho switch exits on any other):
    cimtool's table for it is the one its source comments give, and V2.1 runs at 45, 32 and 22 nm
    (V1.x's 80 and 56 nm wires made it exit 255), its chip shrinking with the node."""
    import re

    from cimtool.devices.card import load_card

    source = ns_build._source_dir(_snapshot("V2.1", "Training_pytorch"))
    table, param = {}, (source / "Param.cpp").read_text()
    for width, nodes in re.findall(r"case (\d+):.*// for technode: ([\d, ]+)", param):
        table.update({int(n): int(width) for n in nodes.split(",")})
    assert table == ns_build.WIRE_WIDTH_V21
    binary = ns_build.build(source, neurosim_cache, lambda *_: None, ns_build.BY_KEY["v21"].patched)
    rng = np.random.default_rng(2)
    weights = [np.round(rng.uniform(-1, 1, s) * 8) / 8 for s in _wide_cnn_inputs(tmp_path, rng)]
    chips = {node: _v21_epoch(binary, tmp_path, weights, weights, 4, load_card("ag_asi"), 4, node)
             for node in (45, 32, 22)}
    assert chips[45]["chip_area_um2"] > chips[32]["chip_area_um2"] > chips[22]["chip_area_um2"]


def test_v21_prices_the_trained_weights_only_at_cellbit_equal_to_wbits(neurosim_cache, tmp_path):
    """The weights V2.1 is given move its forward energy when cellBit = WBITS; at 8-bit weights on
    6-bit cells (the documented flow before: trace 8, ag_asi 6) they do not, which run-neurosim refuses."""
    from cimtool.devices.card import load_card

    source = ns_build._source_dir(_snapshot("V2.1", "Training_pytorch"))
    binary = ns_build.build(source, neurosim_cache, lambda *_: None, ns_build.BY_KEY["v21"].patched)
    card = load_card("ag_asi")
    rng = np.random.default_rng(1)
    shapes = _wide_cnn_inputs(tmp_path, rng)
    trained = [np.round(rng.uniform(-1, 1, s) * 8) / 8 for s in shapes]  # 4-bit codes
    flat = [np.full(s, 0.99) for s in shapes]
    energy = {}
    for bits, cell in ((4, 4), (8, 6)):
        for name, weights in (("trained", trained), ("flat", flat)):
            chip = _v21_epoch(binary, tmp_path, weights, weights, bits, card, cell)
            energy[bits, name] = chip["forward_energy_pj"]
    # the weights count (ag_asi's nS cells: the array's own read energy is a small part of the forward)
    assert abs(energy[4, "flat"] / energy[4, "trained"] - 1) > 1e-5, energy
    assert energy[8, "flat"] == energy[8, "trained"], energy  # every cell at G_min: dropped
    with pytest.raises(CimtoolError, match=r"cellBit 6 with the trace's 8-bit weights: .* cellBit = WBITS"):
        ns_build.check_v21_precision(ns_build.NeuroSimSettings(cellBit=6), 8, False)
    ns_build.check_v21_precision(ns_build.NeuroSimSettings(cellBit=4), 4, True)
    ns_build.check_v21_precision(ns_build.NeuroSimSettings(cellBit=1, memcelltype=1), 8, True)  # SRAM

    # the card's write pulses: ag_asi's 97/100 pulses of 300 µs at 3.2 V, against V2.1's 60 of 50 ns at 4 V
    old = [np.clip(w + rng.choice([-0.25, 0, 0.25], w.shape), -0.875, 0.875) for w in trained]
    updates = {}
    for name, c in (("card", card), ("release", dataclasses.replace(card, pulses_ltp=None, pulses_ltd=None,
                                                                    write_voltage=None,
                                                                    write_pulse_width=None))):
        updates[name] = _v21_epoch(binary, tmp_path, trained, old, 4, c, 4)
    ratio = updates["card"]["weight_update_latency_ns"] / updates["release"]["weight_update_latency_ns"]
    assert ratio > 1000, (ratio, updates["card"]["weight_update_latency_ns"])
    assert updates["card"]["forward_energy_pj"] == updates["release"]["forward_energy_pj"]


def test_v21_takes_the_cards_write_pulses():
    from cimtool.devices.card import load_card

    card = load_card("ag_asi")
    settings = ns_build.NeuroSimSettings.from_card(card, "rram", None, None, 128, 22)
    assert (settings.maxNumLevelLTP, settings.maxNumLevelLTD, settings.writeVoltage,
            settings.writePulseWidth) == (97, 100, 3.2, 300e-6)
    assert "MLP+NeuroSim V3.0" in card.source and "V2.1 Param.cpp" not in card.source
    plain = ns_build.NeuroSimSettings.from_card(load_card("rram_seed003"), "rram", None, None, 128, 22)
    assert (plain.writeVoltage, plain.writePulseWidth) == (4.0, 50e-9)  # V2.1's Param.cpp
    assert set(ns_build.WRITE) <= set(ns_build.BY_KEY["v21"].patched)
    for key in ("v13", "v14"):
        assert not set(ns_build.WRITE) & set(ns_build.BY_KEY[key].patched)
    v21 = _snapshot("V2.1", "Training_pytorch") / "NeuroSIM" / "Param.cpp"
    assert ns_build.release_values(v21.parent, ns_build.WRITE) == {
        "maxNumLevelLTP": 60, "maxNumLevelLTD": 60, "writeVoltage": 4, "writePulseWidth": 50e-9}
    patched = ns_build.patch_param(v21.read_text(errors="replace"), ns_build.WRITE)
    assert 'writePulseWidth = cimtool_setting("CIMTOOL_NS_writePulseWidth", 50e-9);' in patched
    assert ns_build.setting_env(settings, ns_build.WRITE) == {
        "CIMTOOL_NS_maxNumLevelLTP": "97", "CIMTOOL_NS_maxNumLevelLTD": "100",
        "CIMTOOL_NS_writeVoltage": "3.2", "CIMTOOL_NS_writePulseWidth": "0.0003"}
