"""ST-BIF / IF neurons and the converted network: integer equivalence with the quantized ANN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimtool.errors import CimtoolError
from cimtool.nn.snn import (
    SnnConfig,
    SpikingMaxPool,
    SpikingNetwork,
    Synapse,
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


def _literal_soft_reset(x, theta, cfg, steps):
    """The neuron rule as stated, step by step: H = V + x/θ; +1 if H ≥ 1 and count < p_max; −1 (ST-BIF
    only) if H < 0 and count > n_min; V = H − S (reset by subtraction)."""
    n_min, p_max = level_bounds(cfg.levels, cfg.bounds)
    v = torch.full_like(x[0], 0.5)
    count = torch.zeros_like(x[0])
    out = []
    for t in range(steps):
        h = v + (x[t] / theta if t < len(x) else 0.0)
        s = ((h >= 1) & (count < p_max)).float()
        if cfg.neuron == "stbif":
            s -= ((h < 0) & (count > n_min)).float()
        v, count = h - s, count + s
        out.append(s)
    return torch.stack(out), count, v


@pytest.mark.parametrize("levels", [2, 16, 128, 129, 256, 257, 65536])
@pytest.mark.parametrize("neuron,bounds",
                         [("stbif", "symmetric"), ("stbif", "asymmetric"), ("if", "asymmetric")])
def test_tracker_equals_the_literal_neuron_rule(levels, neuron, bounds):
    """Every spike of every step = the literal ST-BIF / IF rule, also across the integer types that
    carry the counts (int8 while p_max − n_min < 128, then int16, int32) and with jumps of ±levels·θ
    in one step (the target is then far from the count). Inputs are multiples of θ/64 (exact in
    float32), and many land exactly on a threshold (H = 1 or H = 0)."""
    gen = torch.Generator().manual_seed(levels)
    theta, t_in, steps = 0.5, 4, 14
    cfg = SnnConfig(neuron=neuron, levels=levels, bounds=bounds)
    reach = 64 * min(levels, 4096)
    x = torch.randint(-reach, reach + 1, (t_in, 3000), generator=gen).float() * (theta / 64)
    x[:, :1000] = torch.randint(-8, 9, (t_in, 1000), generator=gen).float() * (theta / 2)  # on thresholds
    want_spikes, want_count, want_v = _literal_soft_reset(x, theta, cfg, steps)
    spikes, count, v = scan(x, theta, cfg, steps, until_silent=False)
    assert torch.equal(spikes, want_spikes * theta)
    assert torch.equal(count, want_count) and torch.equal(v, want_v)
    # running counts = the cumulative spikes, as small integers; in place = the same, from x's storage
    running, count_r, v_r = scan(x.clone(), theta, cfg, steps, until_silent=False, running=True, scaled=False,
                                 inplace=True)
    span = cfg.p_max - cfg.n_min  # the largest |target − count|
    assert running.dtype == (torch.int8 if span < 2**7 else torch.int16 if span < 2**15 else torch.int32)
    assert torch.equal(running.float(), want_spikes.cumsum(0))
    assert torch.equal(count_r, want_count) and torch.equal(v_r, want_v)
    # the input as running sums (exact here: multiples of θ/64) changes nothing
    summed = scan(x.cumsum(0), theta, cfg, steps, until_silent=False, summed=True, running=True)
    assert torch.equal(summed[0], want_spikes.cumsum(0) * theta)
    assert torch.equal(summed[1], want_count) and torch.equal(summed[2], want_v)


def test_scan_leaves_its_input_alone_unless_in_place():
    x = torch.randn(5, 700, generator=torch.Generator().manual_seed(2))
    keep = x.clone()
    cfg = SnnConfig(levels=8, bounds="symmetric")
    a = scan(x, 0.3, cfg, steps=9, until_silent=False)
    assert torch.equal(x, keep)
    b = scan(x, 0.3, cfg, steps=9, until_silent=False, inplace=True)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


@pytest.mark.parametrize("until_silent", [False, True])
def test_max_pool_of_running_counts(until_silent):
    """The max-pool of the running spike sums, from running counts scaled after pooling or from the
    spikes summed in place: exactly equal (θ a power of two); the total is the max-pool of the totals
    and each step's output is the difference of consecutive running maxima."""
    gen = torch.Generator().manual_seed(4)
    theta = 0.25
    cfg = SnnConfig(levels=8, bounds="symmetric")
    x = torch.randint(-96, 97, (3, 5, 4, 6, 6), generator=gen).float() * (theta / 32)
    spikes, count, _ = scan(x, theta, cfg, steps=12, until_silent=until_silent)
    counts, _, _ = scan(x, theta, cfg, steps=12, until_silent=until_silent, running=True, scaled=False)
    pool = SpikingMaxPool(nn.MaxPool2d(2))
    from_spikes, running = pool.over_time(spikes.clone(), False, True)
    from_counts, _ = pool.over_time(counts, True, True, theta, torch.float32)
    assert running and torch.equal(from_counts, from_spikes)
    assert torch.equal(from_counts[-1], nn.functional.max_pool2d(count * theta, 2))
    sums = spikes.cumsum(0)
    for t in range(len(spikes)):
        assert torch.equal(from_counts[t], nn.functional.max_pool2d(sums[t], 2))


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


def test_spike_leaves_the_callers_currents_alone():
    """The network consumes only tensors it made: here the body starts with a max-pool on the currents."""
    class PoolFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.body = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 8), nn.ReLU(),
                                      nn.Linear(8, 3))

        def snn_parts(self):
            return (lambda x: x), list(self.body)

    cfg = SnnConfig(levels=8, encoding="rate", timesteps=4)
    net = SpikingNetwork(PoolFirst(), [0.1, 0.1], cfg, input_range=1.0)
    enc = net.encode(torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(1)), 4,
                     torch.Generator().manual_seed(2))
    keep = enc.clone()
    net.spike(enc, 50)
    assert torch.equal(enc, keep)


def test_rate_code_draws():
    """Rate spikes: sign(x)·R/T where a uniform draw (one per step and input, in that order) is below
    |x|/R; the same seed gives the same spikes, bit for bit."""
    cfg = SnnConfig(encoding="rate", timesteps=4)
    net = SpikingNetwork(TinyCnn(), [0.05, 0.08, 0.1], cfg, input_range=2.0)
    x = torch.randn(30, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    enc = net.encode(x, 4, torch.Generator().manual_seed(7))
    u = torch.rand((4, *x.shape), generator=torch.Generator().manual_seed(7))
    want = (u < (x.abs() / 2.0).clamp(max=1.0)).float() * torch.sign(x) * (2.0 / 4)
    assert torch.equal(enc.view(torch.int32), want.view(torch.int32))


class StepConv(nn.Conv2d):
    """A Conv2d subclass: the network treats it as a non-plain synapse (per-step input, bias at step 0)."""


class StepLinear(nn.Linear):
    pass


def _dyadic_cnn(conv, linear) -> TinyCnn:
    """TinyCnn with weights and biases on a 1/64 grid, so that every sum below is exact in float32."""
    model = TinyCnn()
    for layer in model.body:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            layer.__class__ = conv if isinstance(layer, nn.Conv2d) else linear
            with torch.no_grad():
                layer.weight.mul_(64).round_().div_(64)
                layer.bias.mul_(64).round_().div_(64)
    return model.eval()


@pytest.mark.parametrize("neuron,reset,bounds", [("stbif", "soft", "symmetric"), ("if", "soft", "asymmetric"),
                                                 ("if", "hard", "asymmetric")])
@pytest.mark.parametrize("encoding,stop", [("rate", "fixed"), ("rate", "silent"), ("analog", "silent")])
def test_running_sums_between_layers_change_nothing(neuron, reset, bounds, encoding, stop):
    """Plain Linear/Conv2d layers run on running sums over time, other synapses on each step's input
    with the bias at step 0: the same network either way, bit for bit (inputs, weights and θ dyadic,
    so no sum rounds)."""
    cfg = SnnConfig(neuron=neuron, reset=reset, bounds=bounds, levels=8, encoding=encoding, timesteps=4,
                    stop=stop)
    thetas = [0.25, 0.5, 1.0]
    x = (torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 64).round() / 64
    runs = []
    for conv, linear in ((nn.Conv2d, nn.Linear), (StepConv, StepLinear)):
        net = SpikingNetwork(_dyadic_cnn(conv, linear), thetas, cfg, input_range=1.0)
        assert [op.takes_running for op in net.ops if isinstance(op, Synapse)] == [conv is nn.Conv2d] * 3
        runs.append(net.run(x, 4, torch.Generator().manual_seed(3), cap=200))
    plain, stepwise = runs
    assert torch.equal(plain.count, stepwise.count) and torch.equal(plain.v, stepwise.v)
    assert torch.equal(plain.pred, stepwise.pred) and plain.steps == stepwise.steps
