"""WAGE / NeuroSim V2.1 formulas on fixed inputs, and `cimtool qat --mode onchip` end to end."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cimtool import artifacts
from cimtool.devices.card import load_card
from cimtool.nn import wage


def test_get_param_a_reproduces_neurosim():
    assert wage.get_param_a(1.75) * 32 == pytest.approx(22.4666, abs=5e-4)  # A_LTP, max_level 32
    assert wage.get_param_a(1.46) * 32 == pytest.approx(27.1577, abs=5e-4)  # A_LTD
    assert wage.get_param_a(0.01) == pytest.approx(126.268958, rel=1e-6)  # first entry of the table
    assert np.isinf(wage.get_param_a(0.0))  # NL = 0: a linear device
    a = wage.get_param_a(np.array([0.5, 1.0, 2.0, 4.0, 8.0]))
    assert (np.diff(a) < 0).all()  # more nonlinear, smaller A
    # V2.1's GetParamA keeps NL's sign: A = sign(NL)·table(|NL|)
    assert wage.get_param_a(-4.88) == -wage.get_param_a(4.88)
    assert wage.nl_of_a(wage.get_param_a(-4.88)) == pytest.approx(-4.88)


def test_negative_nl_bends_the_curve_the_other_way():
    """An LTD with negative NL (NeuroSim's Ag:a-Si, -4.88) falls fastest near g_max; with positive NL
    the same depression falls fastest near g_min (one pulse along V2.1's curve, 32 pulses)."""
    def one_ltd_pulse(nl: float, w: float) -> float:
        a = torch.tensor(float(wage.get_param_a(nl)) * 32, dtype=torch.float64)
        b = wage.get_param_b(a, 32)
        origin = torch.tensor(w, dtype=torch.float64)
        return float(origin - wage.nonlinear_weight(wage.inv_nonlinear_weight(origin, a, b) - 1, a, b))

    for nl, faster_near_top in ((-4.88, True), (4.88, False)):
        near_top, near_bottom = one_ltd_pulse(nl, 0.9), one_ltd_pulse(nl, -0.9)
        assert (near_top > near_bottom) == faster_near_top, (nl, near_top, near_bottom)


def test_nonlinear_weight_round_trip_and_range():
    a = torch.tensor(22.4666, dtype=torch.float64)
    b = wage.get_param_b(a, 32)
    assert float(b) == pytest.approx(2 / (1 - np.exp(-32 / 22.4666)))
    p = torch.arange(0, 33, dtype=torch.float64)
    w = wage.nonlinear_weight(p, a, b)
    assert float(w[0]) == pytest.approx(-1) and float(w[-1]) == pytest.approx(1)
    assert torch.allclose(wage.inv_nonlinear_weight(w, a, b), p, atol=1e-9)


def test_quantizers_on_fixed_inputs():
    assert wage.S(5) == 16.0
    x = torch.tensor([-2.0, -0.97, -0.3, 0.0, 0.3, 0.97, 2.0])
    assert wage.C(x, 5).tolist() == pytest.approx([-15 / 16, -15 / 16, -0.3, 0, 0.3, 15 / 16, 15 / 16])
    assert wage.C(x, 1).tolist() == pytest.approx([-1, -0.97, -0.3, 0, 0.3, 0.97, 1])
    assert wage.Q(torch.tensor([0.3, -0.3, 0.6]), 3).tolist() == [0.25, -0.25, 0.5]
    assert wage.Q(x, 1).tolist() == [-1, -1, -1, 0, 1, 1, 1]
    assert wage.QW(torch.tensor([0.99]), 3).tolist() == [0.75]
    assert float(wage.shift(torch.tensor(0.3))) == 0.25 and float(wage.shift(torch.tensor(0.4))) == 0.5
    e = wage.QE(torch.tensor([0.003, -0.0015, 0.0]), 8)
    assert e.tolist() == [98 / 128, -49 / 128, 0.0]  # ÷ shift(0.003) = 2^-8: 0.768, -0.384 → Q(·, 8)


def test_zero_gradient_is_a_zero_update_not_an_assert():
    gen = torch.Generator().manual_seed(0)
    a = torch.full((4,), 22.4666)
    zero = torch.zeros(4)
    update = wage.QG(torch.zeros(4), 5, zero, 5, 1.0, a, a, 32, 32, gen)
    assert torch.equal(update, torch.zeros(4))
    assert torch.equal(wage.QE(zero, 8), zero)


def test_stochastic_rounding_is_unbiased():
    gen = torch.Generator().manual_seed(0)
    x = torch.full((200_000,), 0.3)
    r = wage.SR(x, gen)
    assert set(r.unique().tolist()) == {0.0, 1.0} and float(r.mean()) == pytest.approx(0.3, abs=0.005)


def test_qg_moves_along_the_ltp_curve():
    """origin 0, gradient −1 (lr 1, N 32): 16 LTP pulses along the NL-1.75 curve."""
    gen = torch.Generator().manual_seed(1)
    n = 100_000
    a_ltp = torch.full((n,), 22.4666, dtype=torch.float64)
    a_ltd = torch.full((n,), 27.1577, dtype=torch.float64)
    origin = torch.zeros(n, dtype=torch.float64)
    minus_one = torch.full((n,), -1.0, dtype=torch.float64)
    update = wage.QG(origin, 8, minus_one, 5, 1.0, a_ltp, a_ltd, 32, 32, gen)
    b = wage.get_param_b(a_ltp[:1], 32)
    p0 = wage.inv_nonlinear_weight(origin[:1], a_ltp[:1], b)
    moved = float(wage.C(wage.nonlinear_weight(p0 + 16, a_ltp[:1], b), 8)) - 0.0
    assert 0 < moved < 1  # LTP raises the weight, by less than 16 linear steps (16·2/32 = 1) near the top
    assert set((update * wage.S(5)).unique().tolist()) <= {-1.0, 0.0}  # SR of −moved ∈ (−1, 0)
    assert float(-update.mean()) * wage.S(5) == pytest.approx(moved, abs=0.01)
    linear = wage.QG(origin, 8, torch.full((n,), -1.0, dtype=torch.float64), 5, 1.0,
                     torch.full((n,), float("inf"), dtype=torch.float64), a_ltd, 32, 32, gen)
    assert float(-linear.mean()) * wage.S(5) == pytest.approx(1.0 - 1 / 128, abs=0.01)  # C(1, 8) = 127/128


def test_write_noise_only_on_updated_cells():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(10_000)
    grad = torch.zeros(10_000)
    grad[:5000] = 0.1
    out = wage.W(x, grad, 8, 0.035, gen)
    assert torch.equal(out[5000:], torch.zeros(5000))
    assert float(out[:5000].std()) == pytest.approx(0.07, rel=0.05)  # N(0, 2σ)


@pytest.fixture(scope="module")
def onchip(default_model, tmp_path_factory):
    from cimtool.cli import main

    out = tmp_path_factory.mktemp("onchip") / "q"
    with pytest.raises(SystemExit) as info:
        main(["qat", "--mode", "onchip", "--device", "ag_asi", "--model", str(default_model[0].path),
              "--out", str(out), "--quiet"])
    assert info.value.code in (0, None)
    return artifacts.load(out, "qmodel")


def test_onchip_with_ag_asi_reaches_080(onchip):
    s = onchip.summary
    assert s["onchip_accuracy"] >= 0.80  # the chip as trained (7-bit WAGE weights)
    assert s["test_accuracy"] >= 0.80  # those weights mapped onto the card's levels
    assert s["linear_device_accuracy"] >= 0.80  # reported beside it
    dist = pq.read_table(onchip.file("dist.parquet")).to_pandas()
    assert set(dist["kind"]) == {"weight", "delta"} and dist["epoch"].max() == 30
    assert all(len(c) == 40 for c in dist["counts"])
    metrics = pq.read_table(onchip.file("metrics.parquet")).to_pandas()
    assert len(metrics) == 30 and (metrics["phase"] == "onchip").all()


def test_onchip_needs_the_update_curve(cli, default_model, tmp_path):
    text = (load_card.__globals__["PRESET_DIR"] / "rram_seed003.toml").read_text()
    card = tmp_path / "no_update.toml"
    card.write_text(text.split("[update]")[0] + "[adc]" + text.split("[adc]")[1])
    assert cli("devices", "show", card).code == 0  # a fine card otherwise
    result = cli("qat", "--mode", "onchip", "--device", card, "--model", default_model[0].path,
                 "--out", tmp_path / "out" / "q")
    assert result.code == 2 and "needs the card's [update] section" in result.err
    assert not (tmp_path / "out").exists()
