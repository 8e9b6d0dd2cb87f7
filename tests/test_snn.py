"""ST-BIF / IF neurons and the converted network: integer equivalence with the quantized ANN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimtool.errors import CimtoolError
from cimtool.nn.snn import (
    SnnConfig,
    SpikingNetwork,
    decide,
    level_bounds,
    scan,
)


@pytest.mark.parametrize("levels", [2, 4, 8, 16, 32])
@pytest.mark.parametrize("bounds", ["symmetric", "asymmetric"])
def test_stbif_counts_equal_quantized_activation(levels, bounds):
    """≥100k neurons, signed input streams: integer counts = clamp(floor(Σx/θ + 1/2), n_min, p_max).

    Inputs are multiples of θ/64 (dyadic), so every sum is exact in float32 and the comparison is
    between integers, not θ-scaled floats."""
    gen = torch.Generator().manual_seed(levels)
    n, t_in, theta = 100_000, 6, 0.5
    x = torch.randint(-3 * 64, 3 * 64 + 1, (t_in, n), generator=gen).float() * (theta / 64)
    cfg = SnnConfig(levels=levels, bounds=bounds)
    spikes, count, _ = scan(x, theta, cfg, steps=t_in + 4 * levels + 8, until_silent=True)
    n_min, p_max = level_bounds(levels, bounds)
    total = (x / (theta / 64)).round().long().sum(0)  # integer Σx in units of θ/64
    # floor(Σx/θ + 1/2) in integers: floor((total + 32) / 64)
    expected = torch.div(total + 32, 64, rounding_mode="floor").clamp(n_min, p_max)
    assert torch.equal(count.long(), expected)
    assert torch.equal((spikes / theta).round().long().sum(0), expected)  # counts = Σ spikes
    assert set((spikes / theta).round().unique().tolist()) <= {-1, 0, 1}


def test_level_bounds():
    assert level_bounds(16, "symmetric") == (-8, 7)
    assert level_bounds(16, "asymmetric") == (0, 15)
    assert level_bounds(2, "symmetric") == (-1, 0)


def test_if_neuron_soft_and_hard_reset():
    x = torch.tensor([[2.6, 0.3, -1.0, 9.0]])  # one step of input, θ = 1
    cfg = SnnConfig(neuron="if", levels=8)
    _, count, v = scan(x, 1.0, cfg, steps=20, until_silent=True)
    # soft reset, V0 = 1/2: count = clamp(floor(x + 1/2), 0, 7); the residue stays
    assert count.tolist() == [3.0, 0.0, 0.0, 7.0]
    assert torch.allclose(v, torch.tensor([0.1, 0.8, -0.5, 2.5]))
    hard = SnnConfig(neuron="if", reset="hard", levels=8)
    _, count, v = scan(x, 1.0, hard, steps=20, until_silent=True)
    assert count.tolist() == [1.0, 0.0, 0.0, 1.0]  # hard reset throws the residue away
    const = torch.full((10, 1), 0.4)  # constant 0.4θ per step: hard reset fires every 3rd step
    spikes, count, _ = scan(const, 1.0, hard, steps=10, until_silent=False)
    assert (spikes[:, 0] > 0).nonzero().flatten().tolist() == [1, 4, 7]


def test_fixed_and_silent_runs_agree():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 500, generator=gen)
    cfg = SnnConfig(levels=8, bounds="symmetric")
    a, ca, va = scan(x, 0.3, cfg, steps=40, until_silent=True)
    b, cb, vb = scan(x, 0.3, cfg, steps=40, until_silent=False)
    assert torch.equal(ca, cb) and torch.equal(va, vb)
    assert torch.equal(a, b[: len(a)]) and not b[len(a):].any()


def test_decide_breaks_ties_by_membrane_potential():
    count = torch.tensor([[3.0, 5.0, 5.0], [1.0, 0.0, 0.0]])
    v = torch.tensor([[9.0, 0.2, 0.7], [0.1, 5.0, 0.0]])
    assert decide(count, v).tolist() == [2, 0]


def test_config_errors():
    for bad in (SnnConfig(timesteps=0), SnnConfig(reset="sideways"), SnnConfig(neuron="stbif", reset="hard"),
                SnnConfig(levels=1), SnnConfig(neuron="if", bounds="symmetric"), SnnConfig(encoding="x")):
        with pytest.raises(CimtoolError):
            bad.validate()


class TinyCnn(nn.Module):
    """conv → ReLU → pool → flatten → fc → ReLU → fc: every conversion path."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(6 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)

    def snn_parts(self):
        return (lambda x: x), list(self.body)


@pytest.mark.parametrize("encoding", ["analog", "rate"])
@pytest.mark.parametrize("bounds", ["asymmetric", "symmetric"])
def test_spiking_network_equals_one_pass(encoding, bounds):
    """Run-until-silent spiking predictions (and output counts) = the quantized ANN's, incl. max-pool."""
    model = TinyCnn().eval()
    x = torch.rand(400, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    cfg = SnnConfig(levels=8, bounds=bounds, encoding=encoding, timesteps=4 if encoding == "rate" else 1000)
    net = SpikingNetwork(model, [0.05, 0.08, 0.1], cfg, input_range=1.0)
    enc = net.encode(x, 4, torch.Generator().manual_seed(3))  # rate: 4 input steps
    spiking = net.spike(enc, 1000)  # then run until silent; the cap is far away
    twin = net.quantized(enc.sum(0))
    assert torch.equal(spiking.count, twin.count)
    assert (spiking.pred == twin.pred).double().mean() >= 0.999
    assert spiking.steps < 1000  # it went silent
    if encoding == "analog":
        assert torch.equal(net.one_pass(x).count, twin.count)
