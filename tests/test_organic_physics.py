"""Organic synapse layers: the card's C2C rule, g_min, write noise of pulses, resumable and
device-independent pulse updates (docs/physics.md#organic-synapse-layers)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from cimtool.devices.card import load_card
from cimtool.nn import array
from cimtool.nn.organic import OrganicLinear, PulseCurve
from cimtool.train.loop import evaluate as EVALUATE

G_MIN, G_MAX, C2C = 0.5e-9, 20e-9, 0.05  # an organic card of 0.5-20 nS, C2C 5 %


def _card(model: str):
    return dataclasses.replace(load_card("organic_ofet"), g_min=G_MIN, g_max=G_MAX, c2c_sigma=C2C,
                               variation_model=model)


def _layer(card, devices: int, w: float, **kw) -> OrganicLinear:
    layer = OrganicLinear(1, devices, card.g_max, card.read_voltage, card.c2c_sigma, g_min=card.g_min,
                          variation=card.variation_model, **kw)
    with torch.no_grad():
        layer.weight.fill_(w)
        layer.bias.zero_()
    return layer


@pytest.mark.parametrize("model, expected_ns", [("range", C2C * (G_MAX - G_MIN) * 1e9),  # 0.975 nS
                                                ("lognormal", None)])
def test_organic_c2c_in_ns_is_the_array_simulators_for_the_card(model, expected_ns):
    """At w = 0.1 a training read's device conductance varies as map-weights' array simulator
    programs the same card's device at that conductance: the same draw, the same nS."""
    card, n = _card(model), 20_000
    layer = _layer(card, n, 0.1).train()
    g = G_MIN + 0.55 * (G_MAX - G_MIN)  # the device at w = 0.1 (w = −1 is g_min, w = 1 is g_max)
    assert layer.conductance(torch.tensor(0.1)).item() == pytest.approx(g, rel=1e-6)
    torch.manual_seed(3)
    y = layer(torch.ones(1, 1)).detach().double()[0]  # one read of n devices
    read = G_MIN + (y + 1) * (G_MAX - G_MIN) / 2  # back in S: y = (G − G_ref)/((g_max − g_min)/2)
    torch.manual_seed(3)
    programmed = array.program(torch.full((n, 1), g), card, ("c2c",), None)[:, 0].double()
    torch.testing.assert_close(read, programmed, rtol=1e-5, atol=1e-6 * G_MAX)
    std_ns = float(read.std()) * 1e9
    expected_ns = expected_ns or C2C * g * 1e9  # lognormal: σ of ln G, 0.561 nS at 11.2 nS
    assert std_ns == pytest.approx(expected_ns, rel=0.03)


def test_organic_forward_honours_g_min():
    """w = −1 is the device at g_min: its current is g_min's, and a range card's C2C cannot take a
    device below g_min; a lognormal card's C2C at g_min is σ·g_min."""
    card = _card("range")
    layer = _layer(card, 4_000, -1.0).eval()
    assert layer.conductance(torch.tensor(-1.0)).item() == pytest.approx(G_MIN, rel=1e-6)
    x = torch.rand(3, 1)
    # read-out current against the reference (g_min + g_max)/2, renormalised: exactly −x
    torch.testing.assert_close(layer(x), -x.expand(3, 4_000))
    torch.manual_seed(0)
    y = layer.train()(torch.ones(1, 1)).detach()
    assert float(y.min()) >= -1.0 and float(y.max()) > -0.9  # clamped at g_min, spread above it
    low = _layer(_card("lognormal"), 4_000, -1.0).train()
    y = low(torch.ones(1, 1)).detach().double()
    g = G_MIN + (y + 1) * (G_MAX - G_MIN) / 2
    assert float(g.std()) == pytest.approx(C2C * G_MIN, rel=0.05)


def test_pulses_apply_the_cards_write_noise_and_keep_it():
    """Three pulses of a linear device (w: 0 → 6/N) land with the range card's C2C, N(0, 2σ) in w
    (V2.1's W); cells sent no pulse are untouched, and the forward reads what was written."""
    n_pulses, devices = 50, 4_000
    layer = _layer(_card("range"), devices, 0.0)
    layer.curve = PulseCurve(0.0, 0.0, n_pulses, n_pulses, seed=1)  # NL 0: a linear device
    layer.after_step()  # the device holds w = 0
    with torch.no_grad():
        layer.weight[: devices // 2] += 3 * 2 / n_pulses
    layer.after_step()
    moved, kept = layer.weight.detach()[: devices // 2, 0].double(), layer.weight.detach()[devices // 2:, 0]
    assert torch.equal(kept, torch.zeros_like(kept))
    assert float(moved.mean()) == pytest.approx(6 / n_pulses, abs=0.01)
    assert float(moved.std()) == pytest.approx(2 * C2C, rel=0.05)
    layer.train()
    x = torch.ones(1, 1)
    assert torch.equal(layer(x), layer(x))  # no second draw at the read


class Killed(Exception):
    """The process dies here."""


def _tiny_fit(tmp_path, update: str, epochs: int, kill_after: int | None, monkeypatch):
    from cimtool.train import loop
    from cimtool.train.batching import TensorData
    from cimtool.ui import Reporter

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=gen)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    torch.manual_seed(0)
    layer = OrganicLinear(8, 4, G_MAX, 1.0, C2C, g_min=G_MIN, variation="range")
    if update == "pulses":
        layer.curve = PulseCurve(1.5, -2.0, 50, 50, seed=5)
    model = torch.nn.Sequential(layer)
    monkeypatch.setattr(loop, "CHECKPOINT_EVERY_S", 0.0)  # a checkpoint after every epoch
    calls = []

    def killed(*args, **kw):
        calls.append(1)
        if kill_after is not None and len(calls) > kill_after:
            raise Killed  # killed during epoch kill_after + 1
        return EVALUATE(*args, **kw)

    monkeypatch.setattr(loop, "evaluate", killed)
    cfg = loop.TrainConfig(epochs=epochs, batch_size=16, lr=5e-2, seed=2)
    data = TensorData(x, y)
    return loop.fit(model, data, data, cfg, torch.device("cpu"), tmp_path / "ckpt", "organic",
                    Reporter(quiet=True))


@pytest.mark.parametrize("update", ["clamp", "pulses"])
def test_killed_and_resumed_is_the_uninterrupted_run(tmp_path, update, monkeypatch):
    epochs, kill_after = 5, 3
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = _tiny_fit(tmp_path / "a", update, epochs, None, monkeypatch)
    with pytest.raises(Killed):
        _tiny_fit(tmp_path / "b", update, epochs, kill_after, monkeypatch)
    assert load_file(str(tmp_path / "b" / "ckpt"))  # epoch 3's checkpoint
    resumed = _tiny_fit(tmp_path / "b", update, epochs, None, monkeypatch)
    assert [m["train_loss"] for m in resumed.metrics] == [m["train_loss"] for m in whole.metrics]
    assert [m["val_acc"] for m in resumed.metrics] == [m["val_acc"] for m in whole.metrics]
    final_a, final_b = load_file(str(tmp_path / "a" / "ckpt")), load_file(str(tmp_path / "b" / "ckpt"))
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key
    if update == "pulses":
        assert "rng.0.0" in final_a  # the pulse-rounding generator's state


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pulse_updates_draw_on_the_models_device():
    """A pulse-mode layer on CUDA draws its pulse rounding and write noise there: it trains, and
    the same seed gives the same weights."""
    def run() -> torch.Tensor:
        torch.manual_seed(0)
        layer = _layer(_card("lognormal"), 64, 0.0)
        layer.curve = PulseCurve(1.5, -2.0, 50, 50, seed=1)
        layer = layer.cuda()
        assert layer.curve.gen.device.type == "cuda"
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        for _ in range(3):
            loss = layer(torch.ones(4, 1, device="cuda")).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            layer.after_step()
        return layer.weight.detach()

    w = run()
    assert w.device.type == "cuda" and float(w.abs().max()) > 0 and float(w.abs().max()) <= 1
    assert torch.equal(w, run())


def test_qat_noise_is_the_cards_rule_clamped_to_the_range():
    """Noise-aware training perturbs conductances by the same rule: a range card's devices stay
    within [g_min, g_max] (so no weight exceeds the pair's full scale), as the array simulator's."""
    import numpy as np

    from cimtool.nn.quant import DeviceWeight, NoiseSpec

    grid = np.linspace(0.1, 1.0, 16)  # g_min = 0.1·g_max
    layer = DeviceWeight(grid, normalize="range", noise=NoiseSpec(0.5, 0.0, "range")).train()
    w = torch.linspace(-1, 1, 4_000).reshape(-1, 1)
    torch.manual_seed(0)
    out = layer(w).detach()
    assert float(out.abs().max()) <= 1.0 + 1e-6  # |G_pos − G_neg| ≤ g_max − g_min
    assert float((out - w).std()) > 0.2  # and the noise is there
