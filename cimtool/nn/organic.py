"""Organic optoelectronic synapse layers (docs/physics.md#organic-synapse-layers).

A layer's weights are normalised conductances ``w ∈ [−1, 1]``: one device per weight, ``G = g_min +
(w+1)/2·(g_max − g_min)`` (w = −1 is g_min, as on the pulse curve), read against a reference
conductance ``G_ref = (g_min + g_max)/2`` whose current is subtracted (NeuroSim's training
mapping: DNN+NeuroSim V2.1 keeps a weight in [−1, 1] on one cell). The forward pass computes the
physical read-out current, ``I = conv(x·V_read, G − G_ref)`` (nA for an organic transistor), and
renormalises it, ``y = I/(V_read·(g_max − g_min)/2)``, so that nA currents do not shrink the
activations and their gradients. Cycle-to-cycle variability is the card's (``variation.model``,
drawn by ``cimtool.nn.array.vary``, the rule map-weights' array simulator programs with).
``after_step()`` hard-clamps the weights to the conductance range; the training loop calls it
after every optimizer step. With ``clamp`` every training read draws C2C (each step stands for a
write of every device).

With a pulse curve (``--organic-update pulses``; the card's [update] section, e.g. from ``cimtool
devices fit``), ``after_step()`` instead turns each weight's requested step into whole pulses, the
way the device is written: Δp = SR(Δw·N/2) (a linear device moves 2/N per pulse over [−1, 1];
SR: unbiased stochastic rounding), and moves the weight Δp pulses along the LTP (Δp > 0) or LTD
curve from where it is, with NeuroSim's curve (DNN+NeuroSim V2.1 wage_quantizer.py, the same
functions ``qat --mode onchip`` uses: ``cimtool.nn.wage``); every pulsed device then lands with the
card's C2C write noise, which it keeps (the forward reads what was written). All random numbers
of the pulses are drawn from the curve's generator, on the layer's device; ``random_generators()``
exposes it to the training checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from cimtool.nn import wage
from cimtool.nn.array import vary

UPDATES = ("clamp", "pulses")  # --organic-update


class PulseCurve:
    """A device's LTP/LTD curves (NeuroSim's): requested weight steps → whole pulses along them."""

    def __init__(self, nl_ltp: float, nl_ltd: float, pulses_ltp: int, pulses_ltd: int, seed: int) -> None:
        self.n = {True: pulses_ltp, False: pulses_ltd}  # key: potentiation
        self.a = {up: float(wage.get_param_a(nl)) * self.n[up]
                  for up, nl in ((True, nl_ltp), (False, nl_ltd))}
        self.seed = seed
        self.gen = torch.Generator().manual_seed(seed)
        self.pulsed: torch.Tensor | None = None  # the cells the last move() sent any pulse to

    def to(self, device: torch.device) -> None:
        """Draw on ``device`` from now on (a new stream of the same seed: called before training)."""
        if self.gen.device != device:
            self.gen = torch.Generator(device).manual_seed(self.seed)

    def move(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """The weights the device reaches from ``before`` when asked for ``after``."""
        out = before.clone()
        self.pulsed = torch.zeros_like(before, dtype=torch.bool)
        for up in (True, False):
            n, a = self.n[up], self.a[up]
            step = (after - before).clamp(min=0) if up else (before - after).clamp(min=0)
            pulses = wage.SR(step * n / 2, self.gen)  # whole pulses, unbiased
            moving = pulses > 0
            if not moving.any():
                continue
            self.pulsed |= moving
            w, p = before[moving].double().clamp(-1, 1), pulses[moving].double()
            if math.isinf(a):  # a linear device
                new = w + (p if up else -p) * 2 / n
            else:
                at = torch.tensor(a, dtype=torch.float64, device=w.device)
                bt = wage.get_param_b(at, n)
                new = wage.nonlinear_weight(wage.inv_nonlinear_weight(w, at, bt) + (p if up else -p), at, bt)
            out[moving] = new.to(out.dtype)
        return out.clamp(-1.0, 1.0)


class _OrganicSynapse:
    g_max: float
    g_min: float
    read_voltage: float
    c2c: float
    variation: str  # the card's variation.model: "lognormal" | "range"
    curve: PulseCurve | None = None
    _written: torch.Tensor | None = None  # what the device holds: after the last step, or as first read

    def _set_card(self, g_max: float, read_voltage: float, c2c: float, g_min: float, variation: str) -> None:
        self.g_max, self.read_voltage, self.c2c = g_max, read_voltage, c2c
        self.g_min, self.variation = g_min, variation

    def conductance(self, w: torch.Tensor) -> torch.Tensor:
        """The device's conductance (S) for normalised weights w ∈ [−1, 1]."""
        # G = g_min + (w+1)/2·(g_max − g_min): one cell per weight, V2.1's [−1, 1] (docs/physics.md)
        return self.g_min + (w + 1) * ((self.g_max - self.g_min) / 2)

    def weight_of(self, g: torch.Tensor) -> torch.Tensor:
        return (g - self.g_min) * (2 / (self.g_max - self.g_min)) - 1

    def _c2c(self, g: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        return vary(g, self.c2c, self.variation, self.g_min, self.g_max, gen)

    def _synapse(self, w: torch.Tensor) -> torch.Tensor:
        """G − G_ref (S) of this read, with C2C while training under ``clamp``."""
        if self.curve is not None and self.training and self._written is None:
            self._written = w.detach().clamp(-1.0, 1.0)  # what the device holds before the next step
        g = self.conductance(w)
        if self.training and self.c2c > 0 and self.curve is None:
            g0 = g.detach()
            g = g + (self._c2c(g0) - g0)  # the gradient passes straight through the draw
        return g - (self.g_min + self.g_max) / 2

    def _readout(self, current: torch.Tensor) -> torch.Tensor:
        # back to O(1), in units of w: gradients survive
        return current / (self.read_voltage * (self.g_max - self.g_min) / 2)

    def random_generators(self) -> list[torch.Generator]:
        """The generators this layer draws from besides the global one (the training checkpoint's)."""
        return [self.curve.gen] if self.curve is not None else []

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if self.curve is not None:
            self.curve.to(self.weight.device)
        self._written = None  # the weight itself holds what was written (read again at the next forward)
        return out

    @torch.no_grad()
    def after_step(self) -> None:  # called by the training loop after every optimizer step
        if self.curve is None:
            self.weight.clamp_(-1.0, 1.0)  # hard clamp to the conductance range
            return
        before = self._written if self._written is not None else self.weight.clamp(-1.0, 1.0)  # no read yet
        moved = self.curve.move(before, self.weight)
        pulsed = self.curve.pulsed
        if self.c2c > 0 and pulsed.any():  # write noise on the pulsed devices (range model: V2.1's W)
            moved[pulsed] = self.weight_of(self._c2c(self.conductance(moved[pulsed].double()), self.curve.gen)
                                           ).to(moved.dtype).clamp(-1.0, 1.0)
        self.weight.copy_(moved)
        self._written = self.weight.detach().clone()


class OrganicConv2d(_OrganicSynapse, nn.Conv2d):
    def __init__(self, cin: int, cout: int, kernel: int, g_max: float, read_voltage: float, c2c: float,
                 padding: int = 1, g_min: float = 0.0, variation: str = "lognormal") -> None:
        nn.Conv2d.__init__(self, cin, cout, kernel, padding=padding)
        self._set_card(g_max, read_voltage, c2c, g_min, variation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = F.conv2d(x * self.read_voltage, self._synapse(self.weight), None, self.stride, self.padding)
        return self._readout(current) + self.bias.view(1, -1, 1, 1)  # bias: digital


class OrganicLinear(_OrganicSynapse, nn.Linear):
    def __init__(self, d_in: int, d_out: int, g_max: float, read_voltage: float, c2c: float,
                 g_min: float = 0.0, variation: str = "lognormal") -> None:
        nn.Linear.__init__(self, d_in, d_out)
        self._set_card(g_max, read_voltage, c2c, g_min, variation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = F.linear(x * self.read_voltage, self._synapse(self.weight))
        return self._readout(current) + self.bias


def constrain(model: nn.Module) -> None:
    """Apply every layer's physical constraint (called after each optimizer step)."""
    for module in model.modules():
        if isinstance(module, _OrganicSynapse):
            module.after_step()
