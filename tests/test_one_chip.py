"""One chip, one truth: the sweep, map-weights and the cost model describe the same chip.

- a configuration's score depends on that configuration alone, not on the rest of the grid;
- weights of more bits than a cell holds are bit-sliced over the card's cells (and charged so);
- map-weights on an snn artifact scores exactly what the sweep scores at the same settings;
- the recommendation is a paired comparison at a stated confidence;
- the first-order IR drop says when it runs beyond its validity.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from cimtool import artifacts
from cimtool.devices.card import load_card, parse_card
from cimtool.devices.mapping import Placement, level_code, map_matrix, slice_count
from cimtool.nn.array import ArrayConfig, ArrayLayer, Converters
from cimtool.nn.snn_chip import ChipScores
from cimtool.stats import paired_difference
from tests.conftest import run_subprocess


def _ok(result):
    assert result.code == 0, result.err
    return json.loads(result.out)


def _linear_card():
    base = dict(load_card("rram_seed003").to_dict())
    toml = {
        "name": "lin16",
        "conductance": {"g_min": 1e-6, "g_max": 16e-6, "levels": 16, "spacing": "linear"},
        "read": {"voltage": base["read_voltage"], "noise": base["read_noise"]},
        "variation": {"model": "range", "d2d": 0.0, "c2c": 0.0, "stuck_off": 0.0, "stuck_on": 0.0},
        "drift": {"nu": 0.0, "nu_sigma": 0.0, "t0": 1.0},
        "array": {"wire_resistance": 0.0},
        "adc": {"bits": 8, "scheme": "B", "input_bits": 8},
    }
    return parse_card(toml, "lin16")


# --- bit slicing ---------------------------------------------------------------------------------

def test_bit_slicing_on_a_linear_card_is_integer_slicing():
    card = _linear_card()
    assert card.cell_bits == 4 and slice_count(card, 8) == 2 and slice_count(card, 4) == 1
    code = level_code(card, 8, "range")
    assert code.slices == 2 and len(code.grid) == 16
    # c_s = 2^(4s)·15/255: the value of code q is q/255, its digits q mod 16 and q div 16
    assert code.weights.tolist() == pytest.approx([15 / 255, 240 / 255], rel=1e-15)
    q = np.arange(256)
    assert np.allclose(code.values, q / 255, rtol=0, atol=1e-15)
    assert np.array_equal(code.digits, np.stack([q % 16, q // 16], axis=1))
    w = np.random.default_rng(0).normal(size=(40, 7))
    lm = map_matrix("t", w, code, "shared_max")
    assert lm.cell_shape == (40, 14) and lm.shape == (40, 7)
    scale = np.abs(w).max()
    codes = np.round(np.maximum(w, 0) / scale * 255) - np.round(np.maximum(-w, 0) / scale * 255)
    expected = scale * codes / 255
    assert np.allclose(lm.effective_weight(), expected, rtol=0, atol=1e-12)
    # the most significant cell of output j sits beside its least significant one (columns 2j, 2j+1)
    n = np.round(np.maximum(w, 0) / scale * 255).astype(int)
    assert np.array_equal(lm.level_pos[:, 0::2], n % 16) and np.array_equal(lm.level_pos[:, 1::2], n // 16)


def test_eight_bits_on_the_16_level_card_are_two_cells_of_its_levels():
    card = load_card("rram_seed003")
    code = level_code(card, 8)
    assert code.slices == 2 and len(code.grid) == card.levels == 16  # not 256 levels of one cell
    assert np.array_equal(code.grid, level_code(card, None).grid)
    # the top cell holds 4 bits, so every code uses only the card's 16 states
    assert code.digits.max() == 15 and len(code.values) == 256
    # 6 bits = 4 + 2: the top cell's 4 digits spread over the card's states 0, 5, 10, 15 (its 4
    # lowest log states would be near g_min), so every bit width reaches full scale
    six = level_code(card, 6)
    assert six.slices == 2 and sorted(set(six.digits[:, 1])) == [0, 5, 10, 15]
    assert six.weights.tolist() == pytest.approx([15 / 63, 48 / 63], rel=1e-15)
    for bits in (5, 6, 7, 8, 12):
        assert level_code(card, bits).values.max() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("scheme", ["A", "B"])
def test_a_sliced_layer_is_the_shift_add_of_its_digitised_cells(scheme):
    card = _linear_card()
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5, 24))  # Linear [out, in]
    lm = map_matrix("fc", w.T, level_code(card, 8, "range"))
    placement = lm.placement(16, 8, "interleaved")  # 2 row tiles, 4 outputs (8 cells) per array
    linear = torch.nn.Linear(24, 5, bias=False)
    x = torch.from_numpy(rng.uniform(0, 1, size=(9, 24))).float()
    ideal = ArrayLayer(linear, lm, placement, card, ArrayConfig(scheme=scheme))
    ideal.freeze(Converters(1.0, False, 1.0))
    expected = F.linear(x.double(), torch.from_numpy(lm.effective_weight().T)).float()
    assert torch.allclose(ideal(x), expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ideal.ideal(x), expected, rtol=1e-5, atol=1e-6)
    # with a 5-bit ADC each cell column of each row tile is digitised alone, then shifted and added
    bits, full_scale = 5, 3e-6
    layer = ArrayLayer(linear, lm, placement, card, ArrayConfig(scheme=scheme, adc_bits=bits))
    layer.freeze(Converters(1.0, False, full_scale))
    g = np.stack([lm.g_pos, lm.g_neg])  # [2, rows, cells]
    v = x.double().numpy() * card.read_voltage
    codes = 0.0
    for r0 in (0, 16):
        i_pos, i_neg = v[:, r0:r0 + 16] @ g[0, r0:r0 + 16], v[:, r0:r0 + 16] @ g[1, r0:r0 + 16]
        if scheme == "B":
            step = full_scale / (2 ** (bits - 1) - 1)
            top = 2 ** (bits - 1) - 1
            codes = codes + np.clip(np.round((i_pos - i_neg) / step), -top, top) * step
        else:
            step = full_scale / (2**bits - 1)
            codes = codes + (np.clip(np.round(i_pos / step), 0, 2**bits - 1)
                             - np.clip(np.round(i_neg / step), 0, 2**bits - 1)) * step
    cells = codes * lm.cell_scale() / (card.read_voltage * lm.g_ref)
    reference = cells.reshape(9, 5, 2).sum(axis=2)
    assert np.allclose(layer(x).double().numpy(), reference, rtol=1e-5, atol=1e-9)


def test_the_cost_model_charges_the_cells_the_simulator_simulates():
    from cimtool.devices.cost import CostModel, LayerShape

    card = load_card("rram_seed003")
    for bits in (2, 4, 6, 8, 12):
        lm = map_matrix("fc", np.ones((64, 10)), level_code(card, bits))
        energy = CostModel().energy(card, [LayerShape(64, 10, 1)], bits, 6, "B", 1, 128)
        assert energy["slices"] == lm.slices == slice_count(card, bits)
        assert lm.cell_shape == (64, 10 * energy["slices"])


# --- the sweep: grid-independent scores; the same chip as map-weights --------------------------

@pytest.fixture(scope="module")
def rate_snn(default_model, tmp_path_factory):
    art, _, _ = default_model
    out = tmp_path_factory.mktemp("snn") / "rate"
    proc = run_subprocess("calibrate-threshold", "--model", art.path, "--spike-encoding", "rate",
                          "--timesteps", "8", "--ratios", "1", "--percentiles", "99.9", "--out", out,
                          "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr
    return artifacts.load(out, "snn")


def _candidate(default_model, neuron: str, encoding: str):
    from cimtool.nn.snn_config import SnnConfig
    from cimtool.nn.snn_spec import load_candidate
    from cimtool.ui import Reporter

    cand = load_candidate(default_model[0].path, None, Reporter(quiet=True), 512, 0)
    spec = replace(cand.spiking.snn, config=SnnConfig(neuron=neuron, encoding=encoding, levels=8))
    return replace(cand, spiking=replace(cand.spiking, snn=spec))


@pytest.mark.parametrize("neuron, encoding, scheme", [
    ("stbif", "analog", "A"), ("stbif", "rate", "B"), ("if", "rate", "A"), ("if", "analog", "B")])
def test_a_configuration_scores_the_same_alone_and_inside_any_grid(default_model, neuron, encoding, scheme):
    from cimtool.stages import sweep as stage

    cand = _candidate(default_model, neuron, encoding)
    card = load_card("rram_seed003")
    unit = stage._Unit(0, 4, scheme, 4, 128, 128)

    def score(timesteps: tuple[int, ...]) -> dict:
        p = stage.SweepParams(timesteps=timesteps, trials=2, effects=("d2d", "read"), calibration_samples=512)
        found = stage._unit_scores(stage._Shared([cand], card, p, "cpu"), unit)
        return dict(zip(timesteps, found, strict=True))

    alone = score((2,))[2]
    assert score((1, 2, 32))[2] == alone
    assert score((2, 16))[2] == alone
    assert 0.3 < np.mean(alone["accuracies"]) <= 1


def test_small_t_is_not_underrated_by_a_grid_that_contains_a_large_one(rate_snn, tmp_path, cli):
    """The issue's case: rate-coded T = 1 scored 0.56 alone and 0.35 beside T = 32."""
    base = ("sweep", "--model", str(rate_snn.path), "--weight-bits", "8", "--adc-bits", "8", "--scheme", "B",
            "--effects", "none", "--trials", "1", "--json", "--quiet")
    alone = _ok(cli(*base, "--timesteps", "1", "--out", str(tmp_path / "alone")))
    both = _ok(cli(*base, "--timesteps", "1,32", "--out", str(tmp_path / "both")))
    a = pd.read_parquet(artifacts.load(alone["artifact"]).file("sweep.parquet"))
    b = pd.read_parquet(artifacts.load(both["artifact"]).file("sweep.parquet")).set_index("timesteps")
    assert b.loc[1, "val_mean"] == a["val_mean"].iloc[0]


def test_sweep_w8_is_two_cells_per_weight_and_equals_map_weights(rate_snn, tmp_path, cli):
    effects = "d2d,c2c,read,stuck"
    sweep = _ok(cli("sweep", "--model", str(rate_snn.path), "--weight-bits", "8", "--adc-bits", "6",
                    "--scheme", "B", "--timesteps", "4", "--trials", "2", "--effects", effects, "--out",
                    str(tmp_path / "sweep"), "--json", "--quiet"))
    row = pd.read_parquet(artifacts.load(sweep["artifact"]).file("sweep.parquet")).iloc[0]
    assert row["slices"] == 2
    mapped = _ok(cli("map-weights", "--model", str(rate_snn.path), "--weight-bits", "8", "--adc-bits", "6",
                     "--scheme", "B", "--timesteps", "4", "--trials", "2", "--effects", effects,
                     "--split", "val", "--evaluate", "--out", str(tmp_path / "cmap"), "--json", "--quiet"))
    cmap = artifacts.load(mapped["artifact"])
    evaluation = pd.read_parquet(cmap.file("evaluation.parquet"))
    chips = evaluation[evaluation.condition == "mapped_nonideal"].sort_values("trial")["accuracy"].tolist()
    assert chips == list(row["val_trials"])  # the same chips, converters and spikes: equal
    s = cmap.summary
    assert s["slices"] == 2 and s["n_levels"] == 16 and s["weight_bits"] == 8
    cells = pd.read_parquet(cmap.file("cmap.parquet"))
    assert sorted(cells["slice"].unique()) == [0, 1] and cells["level_pos"].max() <= 15
    layers = pd.read_parquet(cmap.file("layers.parquet"))
    assert s["n_cells"] == int((2 * layers.rows * layers.cols * 2).sum()) == 2 * len(cells)
    # the cmap records the snn and the model whose weights it maps (export-weightmap finds it by the model)
    assert [(i["role"], i["kind"]) for i in cmap.manifest["inputs"]] == [("snn", "snn"), ("model", "model")]
    # the device team's CSV lists every cell with the output and digit it holds
    export = cli("export-weightmap", "--cmap", str(cmap.path), "--out", str(tmp_path / "csv"))
    assert export.code == 0, export.err
    assert "2 cells of 16 levels per weight" in export.out
    [layer] = layers.to_dict("records")
    csv = pd.read_csv(tmp_path / "csv" / f"weightmap-{layer['layer']}.csv")
    assert list(csv.columns)[-3:] == ["output", "slice", "digit_weight"]
    assert len(csv) == layer["rows"] * layer["cols"] * 2
    expected = np.where(csv.slice == 0, 15 / 255, 240 / 255)
    assert csv.digit_weight.tolist() == pytest.approx(expected.tolist(), rel=1e-12)
    assert sorted(csv.slice.unique()) == [0, 1] and csv.output.max() == layer["cols"] - 1
    assert (csv.col_pos // 2 // 2 == csv.output).all()  # interleaved: output j's cells at 4j..4j+3


# --- the recommendation: paired, at a stated confidence -------------------------------------------

def test_the_paired_difference_and_its_standard_error():
    rng = np.random.default_rng(0)
    n, k = 400, 3
    a_right = rng.random((k, n)) < 0.9
    b_right = a_right & (rng.random((k, n)) > 0.05)  # b loses about 4.5 points, on the same images
    a = ChipScores(a_right.mean(1).tolist(), a_right.sum(0).tolist())
    b = ChipScores(b_right.mean(1).tolist(), b_right.sum(0).tolist())
    diff = paired_difference(a, b)
    assert diff.mean == pytest.approx(100 * (a_right.mean() - b_right.mean()), abs=1e-9)
    d = a_right.mean(0) - b_right.mean(0)
    e = a_right.mean(1) - b_right.mean(1)
    assert diff.se == pytest.approx(100 * np.sqrt(d.var(ddof=1) / n + e.var(ddof=1) / k), rel=1e-12)
    assert paired_difference(a, a) == type(diff)(0.0, 0.0)


def test_select_recommends_only_what_is_within_tolerance_at_the_confidence():
    from cimtool.stages.sweep import select

    n = 500
    rng = np.random.default_rng(3)
    best_right = rng.random(n) < 0.9

    def row(energy: float, lose: int) -> dict:
        right = best_right.copy()
        right[np.flatnonzero(right)[:lose]] = False  # loses `lose` images the best gets right
        scores = ChipScores([float(right.mean())], right.astype(int).tolist())
        return {"val_mean": float(right.mean()), "energy_pj": energy, "weight_bits": 4, "adc_bits": 4,
                "timesteps": 1, "scheme": "B", "scores": scores}

    rows = [row(10.0, 0), row(5.0, 1), row(1.0, 10)]  # the cheapest loses 2 points: not within 1
    best, rec = select(rows, 1.0, confidence=0.95)
    assert best is rows[0] and rec is rows[1]
    z = statistics.NormalDist().inv_cdf(0.95)
    assert rows[1]["diff_vs_best"] == pytest.approx(0.2) and rows[1]["within_tolerance"]
    assert rows[1]["diff_se"] == pytest.approx(100 * np.sqrt((1 - 1 / n) / n / (n - 1)), rel=1e-9)
    assert rows[2]["diff_vs_best"] + z * rows[2]["diff_se"] > 1.0 and not rows[2]["within_tolerance"]
    assert rows[1]["indistinguishable"] and not rows[2]["indistinguishable"]
    # a plain "within 2.5 points of the best" would take the 2-point loser; at 95 % it is not sure
    rows = [row(10.0, 0), row(1.0, 10)]
    best, rec = select(rows, 2.5)
    assert rec is best and rows[1]["diff_vs_best"] == pytest.approx(2.0)
    assert rows[1]["diff_vs_best"] + z * rows[1]["diff_se"] > 2.5


def test_a_tolerance_below_the_val_resolution_is_refused(default_model, cli, tmp_path):
    result = cli("sweep", "--model", str(default_model[0].path), "--tolerance", "0.1", "--weight-bits", "4",
                 "--adc-bits", "6", "--timesteps", "1", "--quiet", "--out", str(tmp_path / "s"))
    assert result.code == 2 and result.err.count("\n") == 1
    assert "resolution" in result.err and "500" in result.err and "0.2 points" in result.err
    assert not (tmp_path / "s").exists()


# --- the first-order IR drop says when it is beyond its validity -------------------------------------

def test_ir_drop_beyond_its_validity_is_a_caveat(default_model, tmp_path, cli):
    from cimtool.devices.card import card_toml

    card = replace(_linear_card(), name="kohm", g_min=1e-5, g_max=1e-4, wire_resistance=2.0)  # 10 kΩ cells
    path = tmp_path / "kohm.toml"
    path.write_text(card_toml(card))
    base = ("map-weights", "--model", str(default_model[0].path), "--evaluate", "--effects", "ir",
            "--trials", "1", "--json", "--quiet")
    s = _ok(cli(*base, "--device", str(path), "--out", str(tmp_path / "kohm")))["summary"]
    [caveat] = s["caveats"]
    assert "r·(A+B)" in caveat and "validity" in caveat
    load = float(caveat.split("up to ")[1].split(" ")[0])
    assert load > 0.1
    assert _ok(cli(*base, "--out", str(tmp_path / "rram")))["summary"]["caveats"] == []  # 234 MΩ cells
    # the sweep says the same, with the largest r·(A+B) of its mappings
    sweep = _ok(cli("sweep", "--model", str(default_model[0].path), "--device", str(path), "--effects", "ir",
                    "--weight-bits", "4", "--adc-bits", "6", "--timesteps", "1", "--trials", "1", "--scheme",
                    "B", "--json", "--quiet", "--out", str(tmp_path / "sweep")))["summary"]
    [swept] = sweep["caveats"]
    assert f"up to {load:.2g} (" in swept and "w4" in swept


def test_ir_load_is_the_first_order_formula():
    from cimtool.nn.array import ir_load

    rng = np.random.default_rng(0)
    rows, outputs, r = 6, 3, 2.0
    g = rng.uniform(1e-6, 1e-5, size=(2, rows, outputs))
    load = ir_load(torch.from_numpy(g), Placement(rows, outputs, rows, 2 * outputs, "interleaved"), r).numpy()
    phys = np.zeros((rows, 2 * outputs))
    phys[:, 0::2], phys[:, 1::2] = g[0], g[1]
    m = np.minimum.outer(np.arange(2 * outputs), np.arange(2 * outputs)) + 1
    nmat = rows - np.maximum.outer(np.arange(rows), np.arange(rows))
    expected = r * (phys @ m + nmat @ phys)  # r·(A + B), A = G·M, B = N·G
    assert np.allclose(load[0], expected[:, 0::2], rtol=1e-12) and np.allclose(load[1], expected[:, 1::2],
                                                                               rtol=1e-12)


def test_export_takes_the_cmap_of_a_copied_card_without_a_source(default_model, tmp_path, cli, monkeypatch):
    """A hand-written card names no source (it defaults to its path): a copy elsewhere is the same
    device."""
    import shutil

    monkeypatch.setenv("COLUMNS", "1000")  # log lines unwrapped

    from cimtool.devices.card import card_toml

    root = tmp_path / "artifacts"
    art = default_model[0]
    shutil.copytree(art.path, root / "models" / art.path.name)
    first, second = tmp_path / "a" / "mine.toml", tmp_path / "b" / "mine.toml"
    first.parent.mkdir()
    second.parent.mkdir()
    text = "\n".join(line for line in card_toml(_linear_card()).splitlines() if not line.startswith("source"))
    first.write_text(text + "\n")
    second.write_text(text + "\n")
    model = root / "models" / art.path.name
    mapped = _ok(cli("map-weights", "--model", str(model), "--device", str(first), "--artifacts-root",
                     str(root), "--json", "--quiet"))
    result = cli("export-weightmap", "--model", str(model), "--device", str(second), "--artifacts-root",
                 str(root), "--out", str(tmp_path / "csv"))
    assert result.code == 0, result.err
    assert mapped["artifact"] in result.err  # the cmap was taken, not a new mapping
