"""Organic optoelectronic synapse layers (docs/physics.md#organic-synapse-layers).

A layer's weights are signed conductances in units of the card's ``g_max`` (``w ∈ [−1, 1]``). The
forward pass computes the physical read-out currents, ``I = conv(x·V_read, w·g_max)`` (nA for an
organic transistor), with cycle-to-cycle Gaussian variability of the conductances in training,
then renormalises the read-out, ``y = I/(V_read·g_max)``, so that nA currents do not shrink the
activations and their gradients. ``after_step()`` hard-clamps the weights to the conductance range;
the training loop calls it after every optimizer step.

With a pulse curve (``--organic-update pulses``; the card's [update] section, e.g. from ``cimtool
devices fit``), ``after_step()`` instead turns each weight's requested step into whole pulses, the
way the device is written: Δp = SR(Δw·N/2) (a linear device moves 2/N per pulse over [−1, 1];
SR: unbiased stochastic rounding), and moves the weight Δp pulses along the LTP (Δp > 0) or LTD
curve from where it is, with NeuroSim's curve (DNN+NeuroSim V2.1 wage_quantizer.py, the same
functions ``qat --mode onchip`` uses: ``cimtool.nn.wage``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from cimtool.nn import wage

UPDATES = ("clamp", "pulses")  # --organic-update


class PulseCurve:
    """A device's LTP/LTD curves (NeuroSim's): requested weight steps → whole pulses along them."""

    def __init__(self, nl_ltp: float, nl_ltd: float, pulses_ltp: int, pulses_ltd: int, seed: int) -> None:
        self.n = {True: pulses_ltp, False: pulses_ltd}  # key: potentiation
        self.a = {up: float(wage.get_param_a(nl)) * self.n[up]
                  for up, nl in ((True, nl_ltp), (False, nl_ltd))}
        self.gen = torch.Generator().manual_seed(seed)

    def move(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """The weights the device reaches from ``before`` when asked for ``after``."""
        out = before.clone()
        for up in (True, False):
            n, a = self.n[up], self.a[up]
            step = (after - before).clamp(min=0) if up else (before - after).clamp(min=0)
            pulses = wage.SR(step * n / 2, self.gen)  # whole pulses, unbiased
            moving = pulses > 0
            if not moving.any():
                continue
            w, p = before[moving].double().clamp(-1, 1), pulses[moving].double()
            if math.isinf(a):  # a linear device
                new = w + (p if up else -p) * 2 / n
            else:
                at = torch.tensor(a, dtype=torch.float64)
                bt = wage.get_param_b(at, n)
                new = wage.nonlinear_weight(wage.inv_nonlinear_weight(w, at, bt) + (p if up else -p), at, bt)
            out[moving] = new.to(out.dtype)
        return out.clamp(-1.0, 1.0)


class _OrganicSynapse:
    g_max: float
    read_voltage: float
    c2c: float
    curve: PulseCurve | None = None
    _written: torch.Tensor | None = None  # the weights as the device holds them after the last step

    def _synapse(self, w: torch.Tensor) -> torch.Tensor:
        """Conductances (S) of this read: w·g_max, with C2C noise while training."""
        g = w * self.g_max
        if self.training and self.c2c > 0:
            g = g * (1 + self.c2c * torch.randn_like(g))
        return g

    def _readout(self, current: torch.Tensor) -> torch.Tensor:
        return current / (self.read_voltage * self.g_max)  # back to O(1): gradients survive

    @torch.no_grad()
    def after_step(self) -> None:  # called by the training loop after every optimizer step
        if self.curve is None:
            self.weight.clamp_(-1.0, 1.0)  # hard clamp to the conductance range
            return
        before = self._written if self._written is not None else self.weight.clamp(-1.0, 1.0)
        self.weight.copy_(self.curve.move(before, self.weight))
        self._written = self.weight.detach().clone()


class OrganicConv2d(_OrganicSynapse, nn.Conv2d):
    def __init__(self, cin: int, cout: int, kernel: int, g_max: float, read_voltage: float, c2c: float,
                 padding: int = 1) -> None:
        nn.Conv2d.__init__(self, cin, cout, kernel, padding=padding)
        self.g_max, self.read_voltage, self.c2c = g_max, read_voltage, c2c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = F.conv2d(x * self.read_voltage, self._synapse(self.weight), None, self.stride, self.padding)
        return self._readout(current) + self.bias.view(1, -1, 1, 1)  # bias: digital


class OrganicLinear(_OrganicSynapse, nn.Linear):
    def __init__(self, d_in: int, d_out: int, g_max: float, read_voltage: float, c2c: float) -> None:
        nn.Linear.__init__(self, d_in, d_out)
        self.g_max, self.read_voltage, self.c2c = g_max, read_voltage, c2c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = F.linear(x * self.read_voltage, self._synapse(self.weight))
        return self._readout(current) + self.bias


def constrain(model: nn.Module) -> None:
    """Apply every layer's physical constraint (called after each optimizer step)."""
    for module in model.modules():
        if isinstance(module, _OrganicSynapse):
            module.after_step()
