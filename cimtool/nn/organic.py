"""Organic optoelectronic synapse layers (docs/physics.md#organic-synapse-layers).

A layer's weight ``w ∈ [−1, 1]`` is a differential pair of devices in units of the card's range
``Δ = g_max − g_min``: ``G± = g_min + max(±w, 0)·Δ``. The forward pass computes the physical
read-out currents, ``I = conv(x·V_read, G+ − G−)`` (nA for an organic transistor), then
renormalises them, ``y = I/(V_read·Δ)``, so that nA currents do not shrink the activations and
their gradients. While training with the clamp rule every read draws the card's C2C variation on
each device's conductance (``cimtool.nn.variation``: the rule map-weights programs chips by), so
even ``w = 0``, both devices at ``g_min``, is noisy. ``after_step()`` hard-clamps the weights to
``[−1, 1]``; the training loop calls it after every optimizer step.

With a pulse curve (``--organic-update pulses``; the card's [update] section, e.g. from ``cimtool
devices fit``), ``after_step()`` instead writes the devices the way they are programmed. Each
device's state ``u ∈ [0, 1]`` (``G = g_min + u·Δ``) spans its N pulses; the device that holds the
weight's sign moves by the requested ``|w1| − |w0|`` as Δp = SR(|Δu|·N) whole pulses (SR: unbiased
stochastic rounding) along its LTP (up) or LTD (down) curve, NeuroSim's (DNN+NeuroSim V2.1
wage_quantizer.py, the functions ``qat --mode onchip`` uses: ``cimtool.nn.wage``). A step that
crosses zero resets the holding device to g_min and moves the other one up by ``|w1|``. Every
written device then gets the card's C2C variation, so the weights are what the devices hold, and
the forward draws none.

Each layer draws its random numbers from its own generator, on the weight's device, seeded from
the model's seed; ``train_state()`` hands the generator (and the device states) to the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cimtool.nn import wage
from cimtool.nn.variation import vary, vary_state

UPDATES = ("clamp", "pulses")  # --organic-update


@dataclass(frozen=True)
class Synapse:
    """The card's values an organic layer computes with."""

    g_min: float  # S
    g_max: float  # S
    read_voltage: float  # V
    c2c: float  # the card's c2c σ, of its variation model
    variation_model: str = "lognormal"  # "lognormal" | "range" (cimtool.nn.variation)

    @property
    def span(self) -> float:
        return self.g_max - self.g_min


def layer_seed(seed: int, index: int) -> int:
    """The generator seed of organic layer ``index``: numpy's SeedSequence keeps the layers'
    streams apart from each other and from the training loop's (seeded seed·1_000_003 + epoch)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _split(w: torch.Tensor) -> torch.Tensor:
    """[2, *w.shape]: the differential pair's states (max(w, 0), max(−w, 0)) of weights w."""
    return torch.stack([w.clamp(min=0), (-w).clamp(min=0)])


class PulseCurve:
    """A device's LTP/LTD curves (NeuroSim's): requested state changes → whole pulses along them."""

    def __init__(self, nl_ltp: float, nl_ltd: float, pulses_ltp: int, pulses_ltd: int) -> None:
        self.n = {True: pulses_ltp, False: pulses_ltd}  # key: potentiation
        self.a = {up: float(wage.get_param_a(nl)) * self.n[up]
                  for up, nl in ((True, nl_ltp), (False, nl_ltd))}

    def move(self, u: torch.Tensor, step: torch.Tensor,
             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(device states ``u ∈ [0, 1]`` after the pulses the requested changes ``step`` buy, which
        devices got any): Δp = SR(|step|·N) along LTP where step > 0, along LTD where step < 0."""
        out = u.clone()
        moved = torch.zeros_like(u, dtype=torch.bool)
        for up in (True, False):
            n, a = self.n[up], self.a[up]
            asked = step.clamp(min=0) if up else (-step).clamp(min=0)
            pulses = wage.SR(asked * n, gen)  # N pulses span one device's range: whole pulses, unbiased
            moving = pulses > 0
            # NeuroSim's curve runs over w = 2u − 1 ∈ [−1, 1]
            w, p = (2 * u[moving] - 1).double().clamp(-1, 1), pulses[moving].double()
            if math.isinf(a):  # a linear device
                new = w + (p if up else -p) * 2 / n
            else:
                at = torch.tensor(a, dtype=torch.float64, device=u.device)
                bt = wage.get_param_b(at, n)
                new = wage.nonlinear_weight(wage.inv_nonlinear_weight(w, at, bt) + (p if up else -p), at, bt)
            out[moving] = ((new + 1) / 2).clamp(0.0, 1.0).to(out.dtype)  # a device saturates at its ends
            moved |= moving
        return out, moved


class _OrganicSynapse:
    synapse: Synapse
    seed: int
    index: int = 0  # the layer's place among the model's organic layers (its stream, ``layer_seed``)
    curve: PulseCurve | None = None
    devices: torch.Tensor | None  # [2, *weight.shape]: the states u of G+ and G− (pulse curve only)

    def _init_synapse(self, synapse: Synapse, seed: int) -> None:
        self.synapse, self.seed = synapse, seed
        self._gen: torch.Generator | None = None
        # not in the state_dict (the weight is what inference needs); it follows the weight's device
        self.register_buffer("devices", None, persistent=False)

    def begin_fit(self, seed: int) -> None:
        """A training run's seed: this layer's generator starts over from ``layer_seed(seed, index)``."""
        self.seed, self._gen = layer_seed(seed, self.index), None

    def generator(self) -> torch.Generator:
        """This layer's generator, on the weight's device (a fresh one, seeded alike, after a move)."""
        device = self.weight.device
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device).manual_seed(self.seed)
        return self._gen

    def train_state(self) -> dict[str, torch.Tensor]:
        """What continuing training needs beyond the state_dict (the checkpoint stores it)."""
        state = {"generator": self.generator().get_state()}
        if self.devices is not None:
            state["devices"] = self.devices
        return state

    def load_train_state(self, state: dict[str, torch.Tensor]) -> None:
        self.generator().set_state(state["generator"])
        if "devices" in state:
            self.devices = state["devices"].to(self.weight.device)

    def pair(self, w: torch.Tensor) -> torch.Tensor:
        """[2, *w.shape] conductances (S) of G+ and G−: ``g_min + max(±w, 0)·Δ``, each device with its
        C2C variation in a training read under the clamp rule."""
        s = self.synapse
        g = s.g_min + _split(w) * s.span
        if self.training and self.curve is None and s.c2c > 0:
            g = vary(g, s.c2c, s.variation_model, s.g_min, s.g_max, self.generator())
        return g

    @torch.compiler.disable  # its own generator and device states: eager, also under torch.compile
    @torch.no_grad()
    def _read(self, w: torch.Tensor) -> torch.Tensor:
        """G+ − G− of this read (S)."""
        if self.training and self.curve is not None and self.devices is None:
            self.devices = _split(w.clamp(-1.0, 1.0))  # the initial weights are the devices' first states
        g = self.pair(w)
        return g[0] - g[1]

    def _conductance(self, w: torch.Tensor) -> torch.Tensor:
        """G+ − G− of this read; the gradient is the ideal pair's, Δ per unit of w (the variation is a
        perturbation of the read, as in noise-aware training)."""
        ideal = w * self.synapse.span
        return ideal + (self._read(w.detach()) - ideal).detach()

    def _readout(self, current: torch.Tensor) -> torch.Tensor:
        return current / (self.synapse.read_voltage * self.synapse.span)  # back to O(1): gradients survive

    @torch.no_grad()
    def after_step(self) -> None:  # called by the training loop after every optimizer step
        if self.curve is None:
            self.weight.clamp_(-1.0, 1.0)  # hard clamp to the conductance range
            return
        if self.devices is None:
            self.devices = _split(self.weight.clamp(-1.0, 1.0))
        s, gen = self.synapse, self.generator()
        u = self.devices
        w0, w1 = u[0] - u[1], self.weight.clamp(-1.0, 1.0)
        held = torch.where(w0 == 0, w1 >= 0, w0 > 0)  # G+ holds the weight (else G−)
        cross = torch.where(held, w1 < 0, w1 > 0)  # the step crosses zero: the holder goes to g_min
        holds = held ^ cross  # G+ holds it after the step
        other = torch.where(cross, 0.0, torch.where(holds, u[1], u[0]))  # the other device's state after
        target = torch.stack([torch.where(holds, w1.abs() + other, other),
                              torch.where(holds, other, w1.abs() + other)])
        reset = torch.stack([held & cross, ~held & cross])
        start = torch.where(reset, 0.0, u)
        u, moved = self.curve.move(start, target - start, gen)
        written = moved | reset
        if s.c2c > 0:  # every written device: the card's variation
            u = torch.where(written, vary_state(u, s.c2c, s.variation_model, s.g_min, s.g_max, gen), u)
        self.devices = u
        self.weight.copy_(u[0] - u[1])


class OrganicConv2d(_OrganicSynapse, nn.Conv2d):
    def __init__(self, cin: int, cout: int, kernel: int, synapse: Synapse, seed: int = 0,
                 padding: int = 1) -> None:
        nn.Conv2d.__init__(self, cin, cout, kernel, padding=padding)
        self._init_synapse(synapse, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.synapse.read_voltage
        current = F.conv2d(x * v, self._conductance(self.weight), None, self.stride, self.padding)
        return self._readout(current) + self.bias.view(1, -1, 1, 1)  # bias: digital


class OrganicLinear(_OrganicSynapse, nn.Linear):
    def __init__(self, d_in: int, d_out: int, synapse: Synapse, seed: int = 0) -> None:
        nn.Linear.__init__(self, d_in, d_out)
        self._init_synapse(synapse, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = F.linear(x * self.synapse.read_voltage, self._conductance(self.weight))
        return self._readout(current) + self.bias


def constrain(model: nn.Module) -> None:
    """Apply every layer's physical constraint (called after each optimizer step)."""
    for module in model.modules():
        if isinstance(module, _OrganicSynapse):
            module.after_step()
