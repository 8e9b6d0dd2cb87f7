"""The array simulator: exact ideal equivalence, IR drop against a circuit solve, converters, noise."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cimtool.devices.card import parse_card
from cimtool.devices.mapping import Placement, crossbar_matrix, level_grid, map_matrix
from cimtool.nn.array import (
    EFFECTS,
    ArrayConfig,
    ArrayLayer,
    Converters,
    adc_signed_,
    adc_unsigned_,
    calibrate_layers,
    ir_drop,
    program,
)


def _card(**changes):
    data = {
        "name": "test",
        "conductance": {"g_min": 1e-12, "g_max": 1e-6, "levels": 16, "spacing": "linear"},
        "read": {"voltage": 0.2, "noise": 0.02},
        "variation": {"model": "lognormal", "d2d": 0.05, "c2c": 0.03, "stuck_off": 0.01, "stuck_on": 0.01},
        "drift": {"nu": 0.05, "nu_sigma": 0.0, "t0": 1.0},
        "array": {"wire_resistance": 0.5},
        "update": {"nl_ltp": 1.0, "nl_ltd": -1.0, "pulses_ltp": 16, "pulses_ltd": 16},
        "adc": {"bits": 8, "scheme": "B", "input_bits": 8},
    }
    card = parse_card(data, "test.toml")
    return dataclasses.replace(card, **changes)


def _layer(module, card, config, bits=12, array_rows=128, array_cols=128, layout="interleaved"):
    w = crossbar_matrix(module.weight.detach().double().numpy())
    lm = map_matrix("layer", w, level_grid(card.g_min, card.g_max, 2**bits, card.spacing))
    placement = Placement(*lm.shape, array_rows, array_cols, layout)
    return ArrayLayer(module, lm, placement, card, config), lm


def _mapped_reference(module, lm, x):
    """What an ideal array computes: the layer with W_eff = scale·(G_pos − G_neg)/g_ref."""
    w_eff = torch.from_numpy(lm.effective_weight()).float()
    if isinstance(module, nn.Conv2d):
        return F.conv2d(x, w_eff.T.reshape(module.weight.shape), module.bias, stride=module.stride,
                        padding=module.padding)
    return F.linear(x, w_eff.T, module.bias)


@pytest.mark.parametrize("conv", [False, True])
def test_ideal_array_computes_exactly_the_mapped_weights(conv):
    torch.manual_seed(0)
    card = _card()
    if conv:
        module = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        x = torch.randn(4, 3, 9, 9)  # signed inputs: two reads
    else:
        module = nn.Linear(40, 7)
        x = torch.rand(16, 40)
    layer, lm = _layer(module, card, ArrayConfig(), array_rows=8, array_cols=6)  # several tiles
    calibrate_layers([layer], lambda _: None, lambda: None)  # nothing observed: defaults
    assert layer.converters == Converters(1.0, False, 0.0)
    observers = []
    calibrate_layers([layer], observers.extend, lambda: observers[0](x))
    assert layer.converters.signed == conv and layer.converters.x_max == float(x.abs().max())
    expected = _mapped_reference(module, lm, x)
    got = layer(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
    # and with 12-bit levels the mapped layer is close to the float one
    reference = module(x)
    assert (got - reference).abs().max() < 0.01 * reference.abs().max()


@pytest.mark.parametrize("scheme", ["A", "B"])
@pytest.mark.parametrize("conv, array_rows", [(False, 8), (False, 128), (True, 8), (True, 16), (True, 27)])
def test_fine_converters_on_every_read_path_compute_the_mapped_weights(scheme, conv, array_rows):
    """With a 24-bit ADC each read path (a conv that fits one array's rows as conv2d, unrolled row
    tiles, a partial last tile, linear layers) gives the ideal mapped layer."""
    torch.manual_seed(3)
    card = _card()
    module = nn.Conv2d(3, 5, 3, stride=2, padding=1) if conv else nn.Linear(40, 7)
    x = torch.randn(4, 3, 9, 9) if conv else torch.randn(16, 40)
    config = ArrayConfig(adc_bits=24, scheme=scheme)
    layer, lm = _layer(module, card, config, array_rows=array_rows, array_cols=6)
    observers = []
    calibrate_layers([layer], observers.extend, lambda: observers[0](x))
    assert layer.converters.full_scale > 0
    expected = _mapped_reference(module, lm, x)
    got = layer(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4 * float(expected.detach().abs().max()))


def test_bitserial_equals_analog_at_the_same_input_bits_without_adc():
    torch.manual_seed(1)
    card = _card()
    module = nn.Linear(32, 6)
    x = torch.rand(50, 32)
    outs = []
    for encoding in ("analog", "bitserial"):
        layer, _ = _layer(module, card, ArrayConfig(input_bits=4, encoding=encoding))
        layer.freeze(Converters(1.0, False, 0.0))
        outs.append(layer(x))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def _solve_crossbar(g_phys: np.ndarray, volts: np.ndarray, r: float) -> np.ndarray:
    """Exact nodal analysis of a crossbar (drivers at column 0, sense amps at the bottom)."""
    rows, cols = g_phys.shape
    n = rows * cols
    row_node = lambda i, j: i * cols + j  # noqa: E731
    col_node = lambda i, j: n + i * cols + j  # noqa: E731
    a = np.zeros((2 * n, 2 * n))
    b = np.zeros(2 * n)
    gw = 1.0 / r

    def link(p, q, g):
        a[p, p] += g
        a[q, q] += g
        a[p, q] -= g
        a[q, p] -= g

    for i in range(rows):
        for j in range(cols):
            link(row_node(i, j), col_node(i, j), g_phys[i, j])
            if j == 0:  # wire segment from the driver at V_i
                a[row_node(i, 0), row_node(i, 0)] += gw
                b[row_node(i, 0)] += gw * volts[i]
            else:
                link(row_node(i, j - 1), row_node(i, j), gw)
            if i == rows - 1:  # last segment into the virtual-ground sense amplifier
                a[col_node(i, j), col_node(i, j)] += gw
            else:
                link(col_node(i, j), col_node(i + 1, j), gw)
    v = np.linalg.solve(a, b)
    return np.array([v[col_node(rows - 1, j)] * gw for j in range(cols)])


def test_first_order_ir_drop_matches_the_circuit_solve():
    rng = np.random.default_rng(0)
    rows, outputs, r = 12, 4, 5.0
    g = rng.uniform(1e-6, 1e-4, size=(2, rows, outputs))  # strong cells: a visible IR drop
    volts = rng.uniform(0, 0.2, size=rows)
    placement = Placement(rows, outputs, rows, 2 * outputs, "interleaved")
    eff = ir_drop(torch.from_numpy(g), placement, r).numpy()
    phys = np.empty((rows, 2 * outputs))
    phys[:, 0::2], phys[:, 1::2] = g[0], g[1]
    exact = _solve_crossbar(phys, volts, r)
    ideal = volts @ phys
    first_order = np.empty(2 * outputs)
    first_order[0::2], first_order[1::2] = volts @ eff[0], volts @ eff[1]
    drop = np.abs(ideal - exact).max() / np.abs(exact).max()
    residual = np.abs(first_order - exact).max() / np.abs(exact).max()
    assert drop > 0.01  # the effect is there ...
    assert residual < 0.05 * drop  # ... and the first-order model captures >95 % of it
    # blocked layout moves the neg columns, so their drops differ
    blocked = ir_drop(torch.from_numpy(g), Placement(rows, outputs, rows, 2 * outputs, "blocked"), r)
    assert not torch.allclose(blocked, torch.from_numpy(eff))


def test_adc_quantization_and_saturation():
    i = torch.tensor([-2.0, -1.0, -0.26, 0.0, 0.26, 0.6, 1.0, 3.0])
    assert adc_signed_(i.clone(), 1.0, 2).tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]  # -1, 0, 1
    assert adc_signed_(i.clone(), 1.0, 3).tolist() == pytest.approx([-1, -1, -1 / 3, 0, 1 / 3, 2 / 3, 1, 1])
    u = adc_unsigned_(torch.tensor([-1.0, 0.1, 0.5, 0.9, 2.0]), 1.0, 2)
    assert u.tolist() == pytest.approx([0.0, 0.0, 2 / 3, 1.0, 1.0])  # 4 codes: 0, 1/3, 2/3, 1
    fine = adc_signed_(torch.linspace(-1, 1, 1001), 1.0, 12)
    assert (fine - torch.linspace(-1, 1, 1001)).abs().max() <= 0.5 / 2047 + 1e-7


def test_device_effects_follow_their_formulas():
    card = _card(d2d_sigma=0.0, c2c_sigma=0.0, stuck_off=0.0, stuck_on=0.0, drift_nu_sigma=0.0)
    g = torch.full((2, 200, 200), 5e-7, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    drifted = program(g, card, ("drift",), gen, drift_time=1000.0)
    assert torch.allclose(drifted, g * 1000.0 ** -0.05)  # G(t) = G0·(t/t0)^(−ν)
    assert torch.equal(program(g, card, ("drift",), gen, drift_time=0.5), g)  # before t0: none
    stuck = program(g, _card(stuck_off=0.1, stuck_on=0.05, d2d_sigma=0.0, c2c_sigma=0.0), ("stuck",), gen)
    assert (stuck == card.g_min).double().mean() == pytest.approx(0.1, abs=0.01)
    assert (stuck == card.g_max).double().mean() == pytest.approx(0.05, abs=0.01)
    logn = program(g, _card(d2d_sigma=0.2, c2c_sigma=0.0), ("d2d",), gen)
    assert torch.log(logn / g).std() == pytest.approx(0.2, rel=0.03)
    rng_card = _card(d2d_sigma=0.0, c2c_sigma=0.035, variation_model="range")
    ranged = program(g, rng_card, ("c2c",), gen)
    assert ((ranged - g) / (card.g_max - card.g_min)).std() == pytest.approx(0.035, rel=0.05)
    assert ranged.min() >= card.g_min and ranged.max() <= card.g_max


def test_read_noise_has_the_documented_sigma():
    card = _card(read_noise=0.05)
    module = nn.Linear(64, 3, bias=False)
    layer, _ = _layer(module, card, ArrayConfig(effects=("read",)))
    layer.freeze(Converters(1.0, False, 0.0))
    gen = torch.Generator().manual_seed(0)
    layer.program_chips([gen])
    x = torch.rand(1, 64).expand(20000, 64)
    out = layer(x)
    v = x[0] * card.read_voltage
    g = layer.g[0].double()
    sigma_current = card.read_noise * torch.sqrt((v.double() ** 2) @ (g[0] ** 2 + g[1] ** 2))
    sigma_out = sigma_current * layer.scale.double() / (card.read_voltage * layer.g_ref)
    assert torch.allclose(out.double().std(0), sigma_out, rtol=0.05)


@pytest.mark.parametrize("effect", EFFECTS)
def test_every_effect_changes_the_result(effect):
    """A non-ideality that is switched on must change the array's output (no silent no-op)."""
    torch.manual_seed(2)
    module = nn.Linear(64, 10)
    x = torch.rand(32, 64)
    card = _card(wire_resistance=200.0)
    ideal, _ = _layer(module, card, ArrayConfig())
    noisy, _ = _layer(module, card, ArrayConfig(effects=(effect,), drift_time=1e4))
    for layer in (ideal, noisy):
        layer.freeze(Converters(1.0, False, 0.0))
    noisy.program_chips([torch.Generator().manual_seed(0)])
    assert not torch.allclose(ideal(x), noisy(x), atol=1e-4)


def test_trials_are_seeded():
    card = _card()
    module = nn.Linear(16, 4)
    layer, _ = _layer(module, card, ArrayConfig(effects=EFFECTS, adc_bits=6))
    x = torch.rand(8, 16)
    layer.freeze(Converters(1.0, False, 1e-5))
    outs = []
    for seed in (5, 5, 6):
        layer.program_chips([torch.Generator().manual_seed(seed)])
        outs.append(layer(x))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("conv, array_rows", [(False, 128), (False, 16), (True, 128), (True, 16)])
def test_read_noise_sigma_on_every_adc_path(conv, array_rows):
    """With an ADC too fine to matter, each read path (a linear or a conv layer, on one row tile
    or on several) adds read noise of σ = read_noise·sqrt(Σ V²(G_pos² + G_neg²)) per column."""
    torch.manual_seed(0)
    card = _card(read_noise=0.05)
    module = nn.Conv2d(4, 3, 3, padding=1, bias=False) if conv else nn.Linear(64, 3, bias=False)
    layer, _ = _layer(module, card, ArrayConfig(effects=("read",), adc_bits=24), array_rows=array_rows)
    layer.freeze(Converters(1.0, False, 1e-3))
    layer.program_chips([torch.Generator().manual_seed(0)])
    x = torch.rand(1, 4, 6, 6) if conv else torch.rand(1, 64)
    got = layer(x.expand(4000, *x.shape[1:]).contiguous()).double().std(0)
    rows = F.unfold(x, 3, padding=1)[0].T if conv else x  # [positions, rows]
    g = layer.g[0].double()
    variance = (rows.double() * card.read_voltage) ** 2 @ (g[0] ** 2 + g[1] ** 2)
    sigma = card.read_noise * variance.sqrt() * layer.scale.double() / (card.read_voltage * layer.g_ref)
    if conv:
        got = got.permute(1, 2, 0).reshape(-1, 3)
    assert torch.allclose(got, sigma, rtol=0.06)
