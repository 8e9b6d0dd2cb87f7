"""Organic optoelectronic synapse layers (docs/physics.md#organic-synapse-layers).

A layer's weights are signed conductances in units of the card's ``g_max`` (``w ∈ [−1, 1]``). The
forward pass computes the physical read-out currents, ``I = conv(x·V_read, w·g_max)`` (nA for an
organic transistor), with cycle-to-cycle Gaussian variability of the conductances in training,
then renormalises the read-out, ``y = I/(V_read·g_max)``, so that nA currents do not shrink the
activations and their gradients. ``after_step()`` hard-clamps the weights to the conductance range;
the training loop calls it after every optimizer step.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _OrganicSynapse:
    g_max: float
    read_voltage: float
    c2c: float

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
        self.weight.clamp_(-1.0, 1.0)  # hard clamp to the conductance range


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
