"""`cimtool calibrate-threshold` and `cimtool sweep` on the default model, end to end."""

from __future__ import annotations

import json
import statistics

import pandas as pd
import pytest

from cimtool import artifacts
from cimtool.stages.calibrate_threshold import open_snn
from tests.conftest import run_subprocess


def _ok(result):
    assert result.code == 0, result.err
    return json.loads(result.out)


@pytest.fixture(scope="module")
def default_snn(default_model, tmp_path_factory):
    """calibrate-threshold with every default on the default model (a subprocess, as users run it)."""
    art, _, _ = default_model
    out = tmp_path_factory.mktemp("snn") / "snn"
    proc = run_subprocess("calibrate-threshold", "--model", art.path, "--out", out, "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr
    return artifacts.load(out, "snn")


def test_calibrated_snn_matches_the_ann(default_snn, default_model):
    s = default_snn.summary
    # the calibrated SNN at the chosen T is within 1 point of the ANN's test accuracy
    assert abs(s["ann_test_accuracy"] - s["test_accuracy"]) <= 0.01
    assert s["ann_test_accuracy"] == default_model[0].summary["test_accuracy"]
    # run-until-silent predictions equal the quantized ANN's on ≥ 99.9 % of val
    assert s["equivalence_agreement"] >= 0.999
    assert s["timesteps"] == 32 and s["neuron"] == "stbif" and s["encoding"] == "analog"
    curve = pd.read_parquet(default_snn.file("accuracy_vs_t.parquet"))
    assert curve["timesteps"].tolist() == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
    assert curve["val_accuracy"].between(0.5, 1).all()
    grid = pd.read_parquet(default_snn.file("calibration.parquet"))
    assert len(grid) == 3 * 9 and set(grid["percentile"]) == {"99.9", "99.99", "max"}
    assert s["val_accuracy"] == curve.set_index("timesteps").loc[32, "val_accuracy"]
    evaluation = pd.read_parquet(default_snn.file("evaluation.parquet")).set_index("condition")
    assert evaluation.loc["snn", "accuracy"] == s["test_accuracy"]
    snn = open_snn(default_snn.path)
    # θ = r·P_p/p_max, from the recorded thresholds table
    table = pd.read_parquet(default_snn.file("thresholds.parquet"))
    expected = s["ratio"] * table[f"p{s['percentile']}"] / snn.config.p_max
    assert table["theta"].tolist() == pytest.approx(expected.tolist(), rel=1e-12)
    assert snn.thetas == table["theta"].tolist()


def test_snn_artifact_is_reproducible_and_inspectable(default_snn, default_model, tmp_path, cli):
    art, _, _ = default_model
    again = tmp_path / "again"
    _ok(cli("calibrate-threshold", "--model", art.path, "--out", again, "--quiet", "--json"))
    first = default_snn.manifest["files"]
    second = artifacts.load(again, "snn").manifest["files"]
    assert first == second  # byte-identical payloads
    shown = _ok(cli("inspect", default_snn.path, "--json"))
    assert shown["verified"] and shown["kind"] == "snn"


def test_rate_coded_mlp_equivalence_and_hard_reset(tmp_path, cli):
    """A hidden ReLU layer, rate-coded input: run-until-silent ST-BIF = the quantized ANN. IF neurons
    cannot take back an overshoot (no negative spikes); a hard reset loses the residue."""
    model = _ok(cli("train-ann", "--hidden", "32", "--epochs", "15", "--out", tmp_path / "mlp", "--quiet",
                    "--json"))
    rate = _ok(cli("calibrate-threshold", "--model", model["artifact"], "--encoding", "rate", "--timesteps",
                   "8", "--ratios", "1", "--percentiles", "99.99", "--out", tmp_path / "rate", "--json",
                   "--quiet"))["summary"]
    assert rate["equivalence_agreement"] >= 0.999
    soft = _ok(cli("calibrate-threshold", "--model", model["artifact"], "--neuron", "if", "--ratios", "1",
                   "--percentiles", "99.99", "--out", tmp_path / "soft", "--json", "--quiet"))["summary"]
    hard = _ok(cli("calibrate-threshold", "--model", model["artifact"], "--neuron", "if", "--reset", "hard",
                   "--ratios", "1", "--percentiles", "99.99", "--out", tmp_path / "hard", "--json",
                   "--quiet"))["summary"]
    # analog input arrives at once: a hard reset throws away everything above one threshold
    assert hard["test_accuracy"] < soft["test_accuracy"] - 0.05


def test_sweep_default_grid(default_model, tmp_path, monkeypatch):
    """≥ 100 configurations on mnist5k val; best and recommended (paired, at the stated confidence);
    test touched once per selected configuration."""
    from cimtool.nn.snn_chip import SpikingChips
    from cimtool.stages import sweep as stage
    from cimtool.ui import Reporter

    art, _, root = default_model
    touched = []
    original = SpikingChips.scores

    def spy(self, data, steps, trials, on_trial=None):
        touched.append(len(data))
        return original(self, data, steps, trials, on_trial)

    monkeypatch.setattr(SpikingChips, "scores", spy)
    result = stage.run(stage.SweepParams(models=(str(art.path),)), tmp_path / "sweep", root, False,
                       Reporter(quiet=True))
    table = pd.read_parquet(result.file("sweep.parquet"))
    assert len(table) == 2 * 5 * 6 * 6 >= 100
    assert table["val_mean"].between(0, 1).all()
    n_val, n_test = art.summary["n_val"], art.summary["n_test"]
    selection = pd.read_parquet(result.file("selection.parquet")).set_index("role")
    best, rec = selection.loc["best"], selection.loc["recommended"]
    assert best["val_mean"] == table["val_mean"].max()
    s = result.summary
    z = statistics.NormalDist().inv_cdf(s["confidence"])
    # the recommendation loses less than the tolerance at the stated confidence, paired
    assert rec["diff_vs_best"] + z * rec["diff_se"] <= s["tolerance_points"] + 1e-9
    assert rec["diff_vs_best"] == pytest.approx(100 * (best["val_mean"] - rec["val_mean"]), abs=1e-9)
    assert rec["energy_pj"] <= best["energy_pj"]
    cheaper = table[table["energy_pj"] < rec["energy_pj"]]
    assert not cheaper["within_tolerance"].any()  # nothing cheaper qualifies
    assert (cheaper["diff_vs_best"] + z * cheaper["diff_se"] > s["tolerance_points"]).all()
    indist = table[table["indistinguishable"]]
    assert s["n_indistinguishable"] == len(indist) >= 1
    assert (indist["diff_vs_best"] - z * indist["diff_se"] <= 1e-9).all()
    same = (best[["weight_bits", "scheme", "adc_bits", "timesteps"]] ==
            rec[["weight_bits", "scheme", "adc_bits", "timesteps"]]).all()
    assert touched.count(n_test) == (1 if same else 2)  # test: once per selected configuration
    assert touched.count(n_val) == len(table)
    assert s["recommended"]["test_mean"] == pytest.approx(rec["test_mean"], rel=1e-11)
    # more ADC bits help on average; 2-bit weights lose against 8-bit ones
    by_adc = table.groupby("adc_bits")["val_mean"].mean()
    assert by_adc[8] > by_adc[3]
    by_w = table.groupby("weight_bits")["val_mean"].mean()
    assert by_w[8] > by_w[2] + 0.05
    # 8-bit weights on the 16-level card are two 4-bit cells, as the cost model charges
    assert set(table.loc[table.weight_bits == 8, "slices"]) == {2}
    assert set(table.loc[table.weight_bits <= 4, "slices"]) == {1}


def test_cost_model_formula():
    from cimtool.devices.card import load_card
    from cimtool.devices.cost import CostModel, LayerShape

    card = load_card("rram_seed003")  # 16 levels: 4 bits per cell
    e = CostModel().energy(card, [LayerShape(64, 10, 1)], weight_bits=6, adc_bits=5, scheme="A",
                           timesteps=4, array_rows=128)
    adc = 4 * 1 * 10 * 2 * 2 * 10e-15 * 2**5  # T · tiles · cols · slices · n_conv · FOM·2^b
    cells = 4 * 2 * 64 * 10 * 2 * card.read_voltage**2 * (card.g_min + card.g_max) / 2 * 10e-9
    assert e["adc_energy_pj"] == pytest.approx(adc * 1e12)
    assert e["cell_energy_pj"] == pytest.approx(cells * 1e12)
    assert e["slices"] == 2


@pytest.mark.parametrize("args, message", [
    (["calibrate-threshold", "--timesteps", "0"], "--timesteps"),
    (["calibrate-threshold", "--reset", "sideways"], "unknown --reset"),
    (["calibrate-threshold", "--ratios", "0.5,0,1"], "--ratios"),
    (["calibrate-threshold", "--ratios", "abc"], "--ratios"),
    (["calibrate-threshold", "--percentiles", "120"], "--percentiles"),
    (["calibrate-threshold", "--neuron", "stbif", "--reset", "hard"], "subtraction"),
    (["sweep", "--adc-bits", "1"], "--adc-bits"),
    (["sweep", "--scheme", "C"], "--scheme"),
    (["sweep", "--tolerance", "-1"], "--tolerance"),
    (["sweep", "--timesteps", "0"], "--timesteps"),
])
def test_bad_input(default_model, cli, args, message):
    art, _, _ = default_model
    result = cli(*args, "--model", art.path, "--quiet")
    assert result.code == 2
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err


def test_not_a_model(default_snn, default_model, tmp_path, cli):
    art, _, _ = default_model
    cmap = _ok(cli("map-weights", "--model", art.path, "--out", tmp_path / "cmap", "--quiet", "--json"))
    for args in (["calibrate-threshold", "--model", cmap["artifact"]],
                 ["calibrate-threshold", "--model", default_snn.path],
                 ["sweep", "--model", cmap["artifact"]]):
        result = cli(*args, "--out", tmp_path / "x", "--quiet")
        assert result.code == 2 and "artifact" in result.err, result.err
        assert not (tmp_path / "x").exists()
