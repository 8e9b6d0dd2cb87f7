"""Spiking execution of a converted ANN: ST-BIF and IF neurons, multi-step network, one-pass twin.

**Neurons** (``NEURONS``), in threshold units (state ``V`` is the membrane potential divided by θ):

- ``stbif`` — signed, bounded spike tracer (SpikeZIP-TF, You et al., ICML 2024): ``V0 = 1/2``,
  ``H = V + x/θ``; spike ``+1`` if ``H ≥ 1`` and ``count < p_max``, ``−1`` if ``H < 0`` and
  ``count > n_min``; ``V = H − S`` (reset by subtraction), ``count += S``; output ``S·θ``. Once the
  input has ended and a step is silent, ``count = clamp(floor(Σx/θ + 1/2), n_min, p_max)``: the
  quantized ANN activation, exactly.
- ``if`` — integrate-and-fire, positive spikes only, count capped at ``p_max``; ``soft`` reset
  subtracts the threshold, ``hard`` reset sets ``V = 0`` (the residue is lost). ``V0 = 1/2`` too.

Level bounds for ``L`` levels: symmetric ``n_min = −(L//2)``, ``p_max = L//2 − 1``; asymmetric
``0, L − 1``.

**Network.** A model's digital prefix (front-end, scaler, normalisation) runs once; its output is
the input of the spiking part, encoded as ``analog`` (the value as a current at the first step)
or ``rate`` (each step a spike ``sign(x)`` with probability ``|x|/R``, carrying ``R/T``; ``R`` =
the input range on train). Each ReLU becomes a neuron layer, and the last synaptic layer drives
output neurons; the class is the output neuron with the most spikes, ties broken by membrane
potential. Biases are injected once, at the first step (so Σ over time is ``W·Σx + b``).
Max-pooling acts on the running sums: ``out_t = maxpool(Σ_{≤t}) − maxpool(Σ_{<t})``, so its
total is the max-pool of the totals (exact, signed).

**Execution** is layer by layer with time folded into the batch: one GEMM per synaptic layer on
``[T·B, …]`` rows and one scan over T per neuron layer. Between layers, activity travels as
running sums over time (``Σ_{s≤t}``) wherever the next op takes them: a plain Linear/Conv2d is
linear (its output on running sums is the running sum of its outputs, the bias in every step's
sum), and a max-pool pools running sums anyway; so no layer sums, differences or adds a bias step
by step. Simulated arrays (converters act on each step) get and give per-step values, as before.
``stop="silent"`` runs each layer only while it can still spike (its input has ended and a step
was silent: nothing changes any more), capped at T; the results equal a fixed-length run of T
steps. ``one_pass`` evaluates the equivalent quantized ANN in a single pass (the neuron becomes
``θ·clamp(floor(x/θ + 1/2), n_min, p_max)``); in run-until-silent mode the spiking network
decides the same class.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cimtool.data.tensors import TensorData, to_float
from cimtool.errors import CimtoolError
from cimtool.nn.snn_config import (  # noqa: F401 (re-exported)
    BOUNDS,
    ENCODINGS,
    NEURON_RESETS,
    RESETS,
    STOPS,
    SnnConfig,
    level_bounds,
)

ELEMENTS_PER_BATCH = 1 << 24  # folded [T·B, …] activations per batch stay below this many values


def quantize(u: torch.Tensor, n_min: int, p_max: int) -> torch.Tensor:
    """The quantized activation in threshold units: clamp(floor(u + 1/2), n_min, p_max) (SpikeZIP-TF)."""
    return torch.floor(u + 0.5).clamp(n_min, p_max)


# --- neurons -------------------------------------------------------------------------------------

def if_hard_step(v, count, x, p_max: int):
    """IF with hard reset (V = 0 after a spike: the residue is lost), one step in threshold units."""
    h = v + x
    s = ((h >= 1) & (count < p_max)).to(h.dtype)
    return h * (1 - s), count + s, s


@dataclass(frozen=True)
class NeuronKind:
    name: str
    description: str
    down: int  # the most negative spike (−1: signed, 0: positive spikes only)
    resets: tuple[str, ...]


NEURONS: dict[str, NeuronKind] = {
    n.name: n
    for n in [
        NeuronKind("stbif", "signed bounded spike tracer, reset by subtraction (SpikeZIP-TF)", -1,
                   NEURON_RESETS["stbif"]),
        NeuronKind("if", "integrate-and-fire, positive spikes, soft or hard reset", 0, NEURON_RESETS["if"]),
    ]
}


def _count_dtype(cfg: SnnConfig) -> torch.dtype:
    """The smallest integer type that holds targets, counts and their differences (≤ p_max − n_min)."""
    span = cfg.p_max - cfg.n_min
    return torch.int8 if span <= 127 else torch.int16 if span <= 32767 else torch.int32


def scan(x: torch.Tensor, theta: float, cfg: SnnConfig, steps: int, until_silent: bool, *,
         summed: bool = False, running: bool = False, scaled: bool = True, inplace: bool = False,
         state: bool = True):
    """Neuron layer over time: inputs ``x`` [T_in, …] (T_in ≤ steps) → spikes·θ [T_out, …], count, V.

    With ``until_silent`` the output ends at the first silent step after the input has ended
    (nothing can change afterwards); otherwise it has all ``steps``. ``summed``: ``x`` holds the
    running sums of the input (``Σ_{s≤t} x_s``), not the input of each step. ``running``: return
    the running counts ``Σ_{s≤t} spike_s`` instead of the spikes; ``scaled=False``: in spikes, not
    multiplied by θ (running counts then come as integers, of the smallest type that holds them).
    ``inplace`` consumes ``x`` (its storage holds the output). ``state=False`` skips the final count
    and potential (a hidden layer needs neither) and returns None for them.

    Reset-by-subtraction neurons run as trackers of their target count: with ``V0 = 1/2`` the
    potential before a step's spike is ``H_t = 1/2 + S_t − count_{t−1}`` (``S_t`` = input so far, in
    units of θ), so the ST-BIF rule (+1 if ``H ≥ 1``, −1 if ``H < 0``, within the bounds) is exactly
    "move the count one step towards ``g_t = clamp(floor(S_t + 1/2), n_min, p_max)``". In ``x``'s
    storage: ``1/2 + S_t`` (the running sums divided by θ, as the quantized ANN divides its total);
    ``g_t`` for all steps at once, cast to a small integer type; three ops per step on those for the
    count. After the input has ended the remaining spikes are written in closed form."""
    if cfg.reset == "hard":
        if running or not scaled:
            raise ValueError("hard-reset neurons give spikes·θ only")
        return _scan_hard(_differences(x, inplace) if summed else x, theta, cfg, steps, until_silent)
    x = x[:steps] if inplace else x[:steps].clone()
    t_in = len(x)
    down = NEURONS[cfg.neuron].down
    if not summed:  # running sums Σ_{s≤t} x_s first (in x's units, as the quantized ANN's total)
        x = _running_sums(x, inplace=True)
    # x[t] ← 1/2 + S_t with S_t = Σx/θ divided, not multiplied by a rounded 1/θ: bit for bit the
    # quantized ANN's u + 1/2, so that inputs exactly on a level boundary spike as it quantizes
    acc = x.div_(theta).add_(0.5)[-1]
    keep = state or steps > t_in  # 1/2 + Σx/θ (the input ends at t_in) is needed for V or for the tail
    acc = acc.clone() if keep else None
    # targets g_t = clamp(floor(1/2 + S_t), n_min, p_max) as small integers (the count's steps then
    # move 1–4 bytes per neuron, not 4–8); the cast truncates, which is floor for g ≥ 0
    x.clamp_(cfg.n_min, cfg.p_max)
    if cfg.n_min < 0:
        x.floor_()
    g = x.to(_count_dtype(cfg))
    count = g[0].clamp_(down, 1)  # count_0 = spike_0 = clamp(g_0, down, 1) (count_{−1} = 0)
    if not running:
        count = count.clone()
    for t in range(1, t_in):  # spike_t = clamp(g_t − count_{t−1}, down, 1); count_t = count_{t−1} + spike_t
        spike = g[t].sub_(count).clamp_(down, 1)
        if running:
            count = spike.add_(count)  # g[t] ← count_t
        else:
            count.add_(spike)
    # integer running counts are handed on as they are; anything else in x's dtype (exact)
    out = g if running and not scaled else x.copy_(g)
    if not keep:
        return (out.mul_(theta) if scaled else out), None, None
    count = count.to(x.dtype)
    rest = steps - t_in
    if rest > 0:
        gap = torch.floor(acc).clamp_(cfg.n_min, cfg.p_max).sub_(count)  # spikes still to come, one sign
        if down == 0:
            gap.clamp_(min=0)
        n_tail = min(int(gap.abs().max()), rest) if until_silent and gap.numel() else rest
        if n_tail > 0:
            k = torch.arange(n_tail, dtype=gap.dtype, device=gap.device).view(-1, *([1] * gap.dim()))
            size, sign = gap.abs(), torch.sign(gap)
            if running:  # count + sign·min(k + 1, |gap|)
                tail = torch.minimum(k + 1, size).mul_(sign).add_(count)
                count = tail[-1].clone()
            else:  # spike k of the tail: sign·[k < |gap|]
                tail = (k < size).to(gap.dtype).mul_(sign)
                count = count + tail.sum(0)
            out = torch.cat([out, tail.to(out.dtype)])
    v = acc.sub_(count)  # V = 1/2 + Σx/θ − count (V0 = 1/2, reset by subtraction)
    return (out.mul_(theta) if scaled else out), count, v


def _scan_hard(x: torch.Tensor, theta: float, cfg: SnnConfig, steps: int, until_silent: bool):
    """Hard-reset IF, step by step (the residue it throws away has no closed form)."""
    v = torch.full_like(x[0], 0.5)
    count = torch.zeros_like(x[0])
    u = x / theta
    out = x.new_zeros((steps, *x.shape[1:]))
    t_end = steps
    for t in range(steps):
        v, count, s = if_hard_step(v, count, u[t] if t < len(u) else 0.0, cfg.p_max)
        if until_silent and t >= len(u) and not bool(s.any()):
            t_end = t
            break
        out[t] = s
    return out[: max(t_end, 1)] * theta, count, v


def decide(count: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Class = output neuron with the most spikes; ties broken by membrane potential."""
    top = count.max(dim=1, keepdim=True).values
    return torch.where(count == top, v, torch.tensor(-math.inf, dtype=v.dtype, device=v.device)).argmax(dim=1)


def _running_sums(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """Per-step values [T, …] → running sums ``Σ_{s≤t}`` (step-wise adds beat ``cumsum`` on CPU)."""
    x = x if inplace else x.clone()
    for t in range(1, len(x)):
        x[t].add_(x[t - 1])
    return x


def _differences(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """Running sums [T, …] → per-step values ``Σ_{≤t} − Σ_{<t}`` (two ops for all steps)."""
    x = x if inplace else x.clone()
    x[1:] = x[1:] - x[:-1]
    return x


# --- converted layers ---------------------------------------------------------------------------

class Synapse:
    """A crossbar (or plain) Linear/Conv2d applied to every step at once.

    A plain ``nn.Linear``/``nn.Conv2d`` is linear, so it takes running sums: its output on
    ``Σ_{s≤t} x_s`` is ``Σ_{s≤t}`` of its outputs, and its bias, injected once at step 0, is in
    every step's sum, where the GEMM adds it. Anything else (a simulated array: its converters act
    on each step's input; a subclass with read-out physics) takes the input of each step, and its
    bias is added at step 0 only."""

    def __init__(self, module: nn.Module) -> None:
        self.takes_running = type(module) in (nn.Linear, nn.Conv2d)
        self.bias = None
        if not self.takes_running and module.bias is not None:
            self.bias = module.bias.detach().clone()
            module.bias = None
        self.module = module
        self.is_conv = isinstance(module, nn.Conv2d) or getattr(module, "is_conv", False)

    def _bias(self) -> torch.Tensor:
        return self.bias.view(-1, 1, 1) if self.is_conv else self.bias

    def over_time(self, x: torch.Tensor, running: bool, inplace: bool) -> tuple[torch.Tensor, bool]:
        """``x`` [T, B, …], per step or (``running``) running sums → the output and whether it is
        running sums. ``inplace``: ``x`` may be overwritten."""
        if self.takes_running:
            x = x if running else _running_sums(x, inplace)
            return self.module(x.flatten(0, 1)).unflatten(0, x.shape[:2]), True
        x = _differences(x, inplace) if running else x
        y = self.module(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        if self.bias is not None:
            y[0] += self._bias()
        return y, False

    def once(self, x: torch.Tensor) -> torch.Tensor:
        y = self.module(x)
        return y if self.bias is None else y + self._bias()

    def probe(self, x: torch.Tensor) -> torch.Tensor:
        """An output of the right shape, without simulated converters (they may not be calibrated yet)."""
        return getattr(self.module, "ideal", self.module)(x)


class SpikingMaxPool:
    """Max-pooling of running spike sums: ``maxpool(Σ_{≤t})`` (exact: the total is the max-pool of
    the totals; the output of step t is ``maxpool(Σ_{≤t}) − maxpool(Σ_{<t})``)."""

    takes_running = True

    def __init__(self, module: nn.MaxPool2d) -> None:
        self.module = module

    def over_time(self, x: torch.Tensor, running: bool, inplace: bool,
                  theta: float | None = None, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, bool]:
        """``x`` [T, B, …], per step or (``running``) running sums → running sums. With ``theta``, ``x``
        holds integer running spike counts: pooled as integers (4× fewer bytes) where the backend
        can, then cast to ``dtype`` and scaled by θ (max commutes with scaling by θ > 0)."""
        x = x if running else _running_sums(x, inplace)
        if theta is not None and x.device.type != "cpu":
            x = x.to(dtype)  # CUDA's max-pool kernels take floating types only
        pooled = self.module(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        return (pooled if theta is None else pooled.to(dtype).mul_(theta)), True

    def once(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class Flatten:
    def over_time(self, x: torch.Tensor, running: bool, inplace: bool) -> tuple[torch.Tensor, bool]:
        return x.flatten(2), running

    def once(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@dataclass
class NeuronSite:
    """A neuron layer: its index into the thresholds."""

    index: int


def _is_synapse(module: nn.Module) -> bool:
    from cimtool.nn.array import ArrayLayer

    return isinstance(module, (nn.Linear, nn.Conv2d, ArrayLayer))


def convert(body: list[nn.Module]) -> list:
    """Body layers → converted ops; every ReLU and the last synaptic layer get a NeuronSite."""
    ops: list = []
    sites = 0
    for module in body:
        if _is_synapse(module):
            ops.append(Synapse(module))
        elif isinstance(module, nn.ReLU):
            ops.append(NeuronSite(sites))
            sites += 1
        elif isinstance(module, nn.MaxPool2d):
            ops.append(SpikingMaxPool(module))
        elif isinstance(module, nn.Flatten):
            ops.append(Flatten())
        elif isinstance(module, (nn.Identity, nn.Dropout)):
            continue
        else:
            raise CimtoolError(f"cannot convert a {type(module).__name__} layer to spiking neurons")
    if not ops or not isinstance(ops[-1], Synapse):
        raise CimtoolError("the model must end with a linear or conv layer to drive the output neurons")
    ops.append(NeuronSite(sites))  # the output neurons
    return ops


def neuron_count(model: nn.Module) -> int:
    """Number of neuron layers of the converted model (ReLUs + the output layer)."""
    _, body = model.snn_parts()
    return sum(isinstance(m, nn.ReLU) for m in body) + 1


# --- threshold statistics -----------------------------------------------------------------------

@torch.no_grad()
def activation_percentiles(model: nn.Module, data: TensorData, percentiles: list[str], bounds: str,
                           batch_size: int = 256, cap: int = 1 << 22,
                           device: torch.device | str = "cpu") -> list[dict[str, float]]:
    """Per neuron layer, P_p of the values it must represent (float ANN on ``data``).

    Those values are the positive pre-activations (asymmetric bounds) or the nonzero magnitudes
    (symmetric). ``max`` is exact; the percentiles use every value up to ``cap`` per layer, and an
    evenly strided subsample beyond."""
    prefix, body = model.snn_parts()
    n_sites = neuron_count(model)
    n_batches = math.ceil(len(data) / batch_size)
    stride = [1] * n_sites  # set on the first batch so that about `cap` values are kept per layer
    collected: list[list[np.ndarray]] = [[] for _ in range(n_sites)]
    maxima = [0.0] * n_sites

    def visit(site: int, pre: torch.Tensor, first: bool) -> None:
        if first:
            stride[site] = max(1, math.ceil(pre.numel() * n_batches / cap))
        vals = pre[pre > 0] if bounds == "asymmetric" else pre.abs()[pre != 0]
        if vals.numel():
            maxima[site] = max(maxima[site], float(vals.max()))
            collected[site].append(vals[:: stride[site]].cpu().numpy())

    for start in range(0, len(data), batch_size):
        h = prefix(to_float(data.x[start: start + batch_size].to(device)))
        site = 0
        for module in body:
            if isinstance(module, nn.ReLU):
                visit(site, h, start == 0)
                site += 1
                h = torch.relu(h)
            else:
                h = module(h)
        visit(site, h, start == 0)
    out = []
    for site in range(n_sites):
        values = np.concatenate(collected[site]) if collected[site] else np.zeros(1, np.float32)
        stats = {}
        for p in percentiles:
            stats[p] = maxima[site] if p == "max" else float(np.percentile(values, float(p)))
        out.append(stats)
    return out


# --- the network --------------------------------------------------------------------------------

@dataclass
class SnnRun:
    pred: torch.Tensor  # [B] class
    count: torch.Tensor  # [B, classes] output spike counts
    v: torch.Tensor  # [B, classes] output membrane potentials (threshold units)
    steps: int  # steps the output layer ran


class SpikingNetwork:
    """A converted copy of ``model`` (plain layers or simulated arrays) with one θ per neuron layer."""

    def __init__(self, model: nn.Module, thetas: list[float], cfg: SnnConfig, input_range: float,
                 device: torch.device | str = "cpu") -> None:
        cfg.validate()
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).to(self.device).eval()
        prefix, body = self.model.snn_parts()
        self.prefix = prefix
        self.ops = convert(body)
        n_sites = sum(isinstance(op, NeuronSite) for op in self.ops)
        if len(thetas) != n_sites:
            raise CimtoolError(f"the model has {n_sites} neuron layers, got {len(thetas)} thresholds")
        if not all(math.isfinite(t) and t > 0 for t in thetas):
            raise CimtoolError(f"thresholds must be finite and > 0, got {thetas}")
        self.thetas = [float(t) for t in thetas]
        self.cfg = cfg
        self.input_range = float(input_range) if input_range > 0 else 1.0

    @property
    def array_synapses(self) -> list[Synapse]:
        from cimtool.nn.array import ArrayLayer

        return [op for op in self.ops if isinstance(op, Synapse) and isinstance(op.module, ArrayLayer)]

    def encode(self, x: torch.Tensor, steps: int, gen: torch.Generator | None) -> torch.Tensor:
        """Prefix outputs [B, …] → input currents over time [T_in, B, …]."""
        if self.cfg.encoding == "analog":
            if self.cfg.stop == "silent":
                return x.unsqueeze(0)
            return torch.cat([x.unsqueeze(0), x.new_zeros((steps - 1, *x.shape))])
        p = (x.abs() / self.input_range).clamp(max=1.0)
        u = torch.rand((steps, *x.shape), generator=gen, dtype=x.dtype, device=x.device)
        spike = torch.sign(x) * (self.input_range / steps)  # [B, …]: what a spike carries, ±R/T
        return torch.lt(u, p, out=u).mul_(spike)  # a spike with probability p = |x|/R (u < p: 1.0 or 0.0)

    def batch_size(self, sample: torch.Tensor, steps: int) -> int:
        """Samples per batch so that the folded activations stay below ELEMENTS_PER_BATCH."""
        with torch.no_grad():
            h = self.prefix(to_float(sample[:1].to(self.device)))
            widest = h.numel()
            for op in self.ops:
                if not isinstance(op, NeuronSite):
                    h = op.probe(h) if isinstance(op, Synapse) else op.once(h)
                    widest = max(widest, h.numel())
        return int(max(1, min(4096, ELEMENTS_PER_BATCH // (widest * steps))))

    @torch.no_grad()
    def spike(self, currents: torch.Tensor, steps: int, inplace: bool = False) -> SnnRun:
        """Spiking forward of encoded input currents [T_in, B, …] for up to ``steps`` steps (``inplace``:
        the currents may be overwritten).

        Between layers, activity travels as running sums over time wherever the next synapse takes
        them (a plain Linear/Conv2d; flattens and max-pools pass them on), and per step before a
        simulated array; a neuron layer before a max-pool hands on its integer running counts, scaled
        by θ after pooling."""
        h = currents
        running = False  # h holds running sums Σ_{s≤t}, not each step's values
        owned = inplace  # may h be overwritten?
        unscaled = None  # θ of running counts handed to a max-pool, applied after pooling
        until_silent = self.cfg.stop == "silent"
        for i, op in enumerate(self.ops):
            if isinstance(op, NeuronSite):
                theta = self.thetas[op.index]
                out_running = self.cfg.reset == "soft" and self._runs_on(i)
                unscaled = theta if out_running and isinstance(self.ops[i + 1], SpikingMaxPool) else None
                h, count, v = scan(h, theta, self.cfg, steps, until_silent, summed=running,
                                   running=out_running, scaled=unscaled is None, inplace=owned,
                                   state=i == len(self.ops) - 1)  # the output layer's count and V decide
                running = out_running
            elif isinstance(op, SpikingMaxPool):
                h, running = op.over_time(h, running, owned, unscaled, currents.dtype)
                unscaled = None
            else:
                h, running = op.over_time(h, running, owned)
            owned = owned or not isinstance(op, Flatten)
        return SnnRun(decide(count, v), count, v, len(h))

    def _runs_on(self, i: int) -> bool:
        """Whether the activity after op ``i`` travels as running sums: if the next synapse takes them
        (flattens and max-pools pass them on). Before a simulated array it stays per step."""
        for op in self.ops[i + 1:]:
            if isinstance(op, Synapse):
                return op.takes_running
            if isinstance(op, NeuronSite):
                return True
        return False

    @torch.no_grad()
    def quantized(self, total: torch.Tensor) -> SnnRun:
        """The equivalent quantized ANN on the input totals [B, …], with the same decision rule."""
        h = total
        for op in self.ops:
            if isinstance(op, NeuronSite):
                theta = self.thetas[op.index]
                u = h / theta
                count = quantize(u, self.cfg.n_min, self.cfg.p_max)
                h = count * theta
            else:
                h = op.once(h)
        v = u + 0.5 - count  # residual potential of a silent neuron: V = 1/2 + Σx/θ − count
        return SnnRun(decide(count, v), count, v, 1)

    def run(self, x: torch.Tensor, steps: int | None = None, gen: torch.Generator | None = None,
            cap: int | None = None) -> SnnRun:
        """Spiking forward of raw inputs: ``steps`` of input (rate) and up to ``cap`` steps in all."""
        steps = steps or self.cfg.timesteps
        with torch.no_grad():
            currents = self.encode(self.prefix(to_float(x.to(self.device))), steps, gen)
        return self.spike(currents, max(cap or steps, steps), inplace=True)

    def one_pass(self, x: torch.Tensor, steps: int | None = None,
                 gen: torch.Generator | None = None) -> SnnRun:
        """The quantized-ANN twin of ``run`` (rate codes: the same input spikes, summed)."""
        steps = steps or self.cfg.timesteps
        with torch.no_grad():
            inp = self.prefix(to_float(x.to(self.device)))
            total = inp if self.cfg.encoding == "analog" else self.encode(inp, steps, gen).sum(0)
        return self.quantized(total)

    def predict(self, data: TensorData, steps: int | None = None, seed: int = 0,
                one_pass: bool = False, cap: int | None = None,
                size: int | None = None) -> tuple[torch.Tensor, float]:
        """Predictions (on the CPU) on a whole split and the mean number of steps used (rate spikes
        seeded); ``size`` overrides the samples per batch."""
        steps = steps or self.cfg.timesteps
        gen = torch.Generator(self.device).manual_seed(seed)
        # rate codes draw spikes per batch: the one-pass twin must use the same batches
        fold = 1 if one_pass and self.cfg.encoding == "analog" else steps
        if cap and not one_pass:  # each neuron layer can add up to `levels` silent-mode steps
            fold = min(max(cap, steps), steps + len(self.thetas) * self.cfg.levels)
        size = size or self.batch_size(data.x, fold)
        preds, used = [], []
        for i in range(0, len(data), size):
            if one_pass:
                result = self.one_pass(data.x[i: i + size], steps, gen)
            else:
                result = self.run(data.x[i: i + size], steps, gen, cap)
            preds.append(result.pred)
            used.append(result.steps * len(result.pred))
        return torch.cat(preds).cpu(), sum(used) / max(1, len(data))

    def accuracy(self, data: TensorData, steps: int | None = None, seed: int = 0,
                 one_pass: bool = False) -> float:
        pred, _ = self.predict(data, steps, seed, one_pass)
        return float((pred == data.y).double().mean())

    # --- on simulated arrays ---

    def program(self, gen: torch.Generator | None) -> None:
        """Draw one chip for every array layer (None: the ideal mapped chip)."""
        for op in self.array_synapses:
            op.module.program_chips([gen])

    @torch.no_grad()
    def calibrate_converters(self, data: TensorData, steps: int | None = None, seed: int = 0) -> None:
        """Observe, then freeze: input ranges and per-step ADC full scales of the array layers on
        ``data`` (ideal chip; see ``cimtool.nn.array.calibrate_layers``)."""
        from cimtool.nn.array import calibrate_layers

        synapses = self.array_synapses
        steps = steps or self.cfg.timesteps
        size = self.batch_size(data.x, steps)  # before the observers stand in: probing runs the layers

        def install(modules) -> None:
            for op, module in zip(synapses, modules, strict=True):
                op.module = module

        calibrate_layers([op.module for op in synapses], install, lambda: self.predict(data, steps, seed,
                                                                                     size=size))


def input_range(model: nn.Module, data: TensorData, batch_size: int = 1024,
                device: torch.device | str = "cpu") -> float:
    """Largest |prefix output| on ``data``: the full scale of rate-coded inputs."""
    prefix, _ = model.snn_parts()
    with torch.no_grad():
        return max(float(prefix(to_float(data.x[i: i + batch_size].to(device))).abs().max())
                   for i in range(0, len(data), batch_size))


def thresholds(stats: list[dict[str, float]], percentile: str, ratio: float, cfg: SnnConfig) -> list[float]:
    """θ per neuron layer: the top level top·θ sits at r·P_p (θ = r·P_p/top)."""
    out = []
    for layer in stats:
        value = layer[percentile]
        out.append(ratio * value / cfg.top if value > 0 else 1.0)
    return out
