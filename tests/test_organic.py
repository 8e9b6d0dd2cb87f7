"""Organic synapse layers: the differential pair with g_min, C2C by the card's rule (the one
map-weights programs chips by), write noise of pulse updates, and resumable training."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cimtool.devices.card import load_card
from cimtool.devices.mapping import card_grid, map_matrix
from cimtool.nn.array import program
from cimtool.nn.organic import OrganicLinear, PulseCurve, Synapse
from cimtool.nn.variation import vary_state

N = 200_000  # draws per measured std: its relative sampling error is 1/sqrt(2N) = 0.16 %


def _card(model: str, c2c: float = 0.05):
    """organic_ofet with g_min = 0.2·g_max and 11 linear levels, so that w = 0.1 is a level."""
    return replace(load_card("organic_ofet"), g_min=2e-9, g_max=1e-8, levels=11, variation_model=model,
                   c2c_sigma=c2c)


def _synapse(card) -> Synapse:
    return Synapse(card.g_min, card.g_max, card.read_voltage, card.c2c_sigma, card.variation_model)


def _lognormal_std(g: float, sigma: float) -> float:
    return g * float(np.sqrt(np.expm1(sigma**2)) * np.exp(sigma**2 / 2))  # std of g·exp(σN)


def _read(layer: OrganicLinear, w: float) -> torch.Tensor:
    """G+ − G− (S) of one read of every output of a one-input layer whose weights are all ``w``."""
    with torch.no_grad():
        layer.weight.fill_(w)
        layer.bias.zero_()
        span = layer.synapse.g_max - layer.synapse.g_min
        return layer(torch.ones(1, 1))[0].double() * span


@pytest.mark.parametrize("model", ["range", "lognormal"])
def test_training_c2c_equals_map_weights_c2c(model):
    card = _card(model)
    layer = OrganicLinear(1, N, _synapse(card)).train()
    trained = _read(layer, 0.1)
    # map-weights: w = 0.1 of a layer whose largest weight is 1, on the card's levels, one programming
    w = np.full((N + 1, 1), 0.1)
    w[-1] = 1.0
    lm = map_matrix("l", w, card_grid(card, None), normalize="range")
    assert lm.g_pos[0, 0] == pytest.approx(card.g_min + 0.1 * (card.g_max - card.g_min))
    g = program(torch.from_numpy(np.stack([lm.g_pos, lm.g_neg])), card, ("c2c",),
                torch.Generator().manual_seed(1))
    mapped = (g[0] - g[1])[:-1, 0]
    assert float(trained.std()) == pytest.approx(float(mapped.std()), rel=0.01)
    g_pos = card.g_min + 0.1 * (card.g_max - card.g_min)
    if model == "lognormal":  # both devices vary: G+ at w = 0.1, G− at g_min
        expected = np.hypot(_lognormal_std(g_pos, 0.05), _lognormal_std(card.g_min, 0.05))
        assert float(trained.std()) == pytest.approx(expected, rel=0.01)
    else:  # σ·(g_max − g_min) on G+; G− at g_min is clamped to the range (a half-normal)
        assert float(trained.std()) > 0.05 * (card.g_max - card.g_min)


def test_g_min_is_honoured_by_the_pair():
    card = replace(_card("lognormal"), g_min=5e-9)  # g_min/g_max = 0.5
    layer = OrganicLinear(1, N, _synapse(card)).train()
    pair = layer.pair(torch.zeros(N))
    for device in pair:  # both devices at g_min, each with its own C2C
        assert float(device.mean()) == pytest.approx(card.g_min * np.exp(0.05**2 / 2), rel=0.002)
        assert float(device.std()) == pytest.approx(_lognormal_std(card.g_min, 0.05), rel=0.01)
    current = _read(layer, 0.0)  # the read-out current at w = 0 (V_read = 1 V)
    assert float(current.std()) == pytest.approx(np.sqrt(2) * _lognormal_std(card.g_min, 0.05), rel=0.01)
    # the ideal read: V_read·x·(G+ − G−)/(V_read·Δ) + b with G± = g_min + max(±w, 0)·Δ
    lin = OrganicLinear(6, 4, replace(_synapse(card), read_voltage=0.5)).eval()
    x = torch.rand(3, 6)
    w = lin.weight.detach().double()
    span = card.g_max - card.g_min
    g_pos, g_neg = card.g_min + w.clamp(min=0) * span, card.g_min + (-w).clamp(min=0) * span
    expected = (0.5 * x.double()) @ (g_pos - g_neg).T / (0.5 * span) + lin.bias.detach().double()
    torch.testing.assert_close(lin(x).double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["range", "lognormal"])
def test_pulse_updates_get_the_cards_write_noise(model):
    """Same seed, same pulses: the layer with C2C differs from the noise-free one by the card's C2C
    on every written device, and only there."""
    layers = []
    for c2c in (0.0, 0.03):
        card = _card(model, c2c)
        layer = OrganicLinear(1, N, _synapse(card), seed=5).train()
        layer.curve = PulseCurve(card.nl_ltp, card.nl_ltd, card.pulses_ltp, card.pulses_ltd)
        with torch.no_grad():
            layer.weight[: N // 2] = 0.5  # G+ at mid-range, G− at g_min
            layer.weight[N // 2:] = -0.5
        layer(torch.ones(1, 1))  # a training read: the devices take the initial weights
        with torch.no_grad():
            layer.weight[: N // 2] += 3 / card.pulses_ltp  # three LTP pulses on G+
        layer.after_step()
        layers.append(layer)
    clean, noisy = (layer.devices for layer in layers)
    written = clean[0, : N // 2]
    assert torch.all(written > 0.5)
    assert torch.equal(noisy[:, N // 2:], clean[:, N // 2:])  # unwritten: as before
    span = card.g_max - card.g_min
    g_clean = card.g_min + written.double() * span
    g_noisy = card.g_min + noisy[0, : N // 2].double() * span
    if model == "range":  # σ·(g_max − g_min)
        assert float((g_noisy - g_clean).std()) == pytest.approx(0.03 * span, rel=0.01)
    else:  # σ of ln G
        assert float(torch.log(g_noisy / g_clean).std()) == pytest.approx(0.03, rel=0.01)
    assert torch.equal(layers[1].weight, noisy[0] - noisy[1])  # the weights are what the devices hold


def test_pulse_updates_follow_the_pair():
    """Same sign: the holding device moves |w1| − |w0|; across zero it is reset to g_min and the
    other device moves up by |w1| (a linear device, c2c 0: exact pulses)."""
    layer = OrganicLinear(1, 4, Synapse(1e-9, 1e-8, 1.0, 0.0)).train()
    layer.curve = PulseCurve(0.0, 0.0, 8, 8)  # steps of 1/8: exact pulses
    with torch.no_grad():
        layer.weight[:, 0] = torch.tensor([0.5, 0.5, -0.375, 0.0])
    layer(torch.ones(1, 1))
    with torch.no_grad():
        layer.weight[:, 0] = torch.tensor([0.75, -0.25, -0.125, -0.5])
    layer.after_step()
    assert torch.equal(layer.devices[0, :, 0], torch.tensor([0.75, 0.0, 0.0, 0.0]))
    assert torch.equal(layer.devices[1, :, 0], torch.tensor([0.0, 0.25, 0.125, 0.5]))
    assert torch.equal(layer.weight[:, 0], torch.tensor([0.75, -0.25, -0.125, -0.5]))


def test_vary_state_is_neurosims_write_noise_on_a_range_card():
    """wage.W's N(0, 2σ) in [−1, 1] units is the range rule on the state u = (w + 1)/2."""
    u = torch.full((N,), 0.5, dtype=torch.float64)
    w = 2 * vary_state(u, 0.035, "range", 1e-9, 1e-8, torch.Generator().manual_seed(0)) - 1
    assert float(w.std()) == pytest.approx(0.07, rel=0.01)


@pytest.mark.parametrize("update", ["clamp", "pulses"])
def test_killed_organic_run_resumes_to_the_same_weights(cli, tmp_path, interrupt_at_validation, update):
    """Killed in epoch 3 (after epoch 2's checkpoint), resumed: the uninterrupted run's bytes."""
    from safetensors import safe_open

    args = ["--dataset", "digits", "--model", "organic_cnn", "--front-end", "optical", "--epochs", "3",
            "--organic-update", update, "--artifacts-root", tmp_path / "root", "--quiet", "--json"]
    straight = cli("train-ann", *args, "--out", tmp_path / "straight")
    assert straight.code == 0, straight.err
    interrupt_at_validation(3)
    assert cli("train-ann", *args).code == 130
    (checkpoint,) = (tmp_path / "root").glob("models/*.partial/scratch/model.ckpt")
    with safe_open(str(checkpoint), framework="pt") as fh:
        assert json.loads(fh.metadata()["loop"])["epoch"] == 2
        assert any(key.startswith("train.") and key.endswith(".generator") for key in fh.keys())
    interrupt_at_validation(None)
    resumed = cli("train-ann", "--resume", *args)
    assert resumed.code == 0, resumed.err
    out = json.loads(resumed.out)["artifact"]
    for name in ("weights.safetensors", "metrics.parquet"):
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / out / name).read_bytes(), name


def test_a_training_runs_seed_reseeds_the_layers_noise():
    """``fit`` hands its --seed to every organic layer (``begin_fit``): a fine-tuning run (qat) draws
    its own C2C stream, and train-ann, whose model records its own seed, draws the same one as before."""
    from cimtool.models.registry import build, make_spec
    from cimtool.nn.organic import layer_seed

    card = load_card("organic_ofet")
    organic = {"device": card.name, "g_min": card.g_min, "g_max": card.g_max,
               "read_voltage": card.read_voltage, "c2c": card.c2c_sigma,
               "variation_model": card.variation_model, "seed": 3}
    model = build(make_spec("organic_cnn", None, (1, 8, 8), 10, [], None, organic, None))
    layers = [m for m in model.modules() if hasattr(m, "begin_fit")]
    assert [m.seed for m in layers] == [layer_seed(3, i) for i in range(len(layers))]
    before = [m.generator().get_state() for m in layers]
    for m in layers:
        m.begin_fit(3)  # train-ann: the seed its model records
    assert all(torch.equal(a, m.generator().get_state()) for a, m in zip(before, layers, strict=True))
    for m in layers:
        m.begin_fit(4)  # another run's seed: another stream, each layer its own
    assert [m.seed for m in layers] == [layer_seed(4, i) for i in range(len(layers))]
    assert not torch.equal(before[0], layers[0].generator().get_state())
