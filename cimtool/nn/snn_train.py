"""Training the spiking network itself: backpropagation through time (BPTT) over its T steps
(docs/physics.md#training-the-spiking-network), the cost ``profile`` sets beside training its
quantized-ANN twin (``cimtool.nn.qann``).

The forward pass is the spiking network's (``cimtool.nn.snn``) at a fixed T with analog input:
the input current at step 0, each synaptic layer one GEMM over the folded ``[T·B]`` rows with
its bias at step 0, max-pooling on running sums, and each neuron layer an ST-BIF scan over T
kept for autograd. A spike is the hard decision in the forward pass; its gradient is
straight-through over the neuron's linear region, ∂S/∂H = 1 for 0 ≤ H ≤ 1 (between the −1 and
+1 thresholds) and 0 elsewhere. The loss reads the output layer's total input Σ_t x_t: the
spiking decision (most spikes, ties by membrane potential) is its argmax.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cimtool.errors import CimtoolError


def stbif_bptt(x: torch.Tensor, theta: float, n_min: int, p_max: int) -> torch.Tensor:
    """ST-BIF neurons over time, differentiable: inputs [T, …] → spikes·θ [T, …]."""
    v = torch.full_like(x[0], 0.5)  # threshold units, V0 = 1/2
    count = torch.zeros_like(x[0])
    out = []
    for step in x:
        h = v + step / theta
        hard = ((h >= 1) & (count < p_max)).to(h.dtype) - ((h < 0) & (count > n_min)).to(h.dtype)
        ramp = h.clamp(0.0, 1.0)
        s = hard + (ramp - ramp.detach())  # straight-through between the thresholds
        v = h - s
        count = count + hard
        out.append(s * theta)
    return torch.stack(out)


def _synapse(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[T, B, …] → [T, B, …]: the weights on every step, the bias at step 0 only."""
    if type(module) not in (nn.Linear, nn.Conv2d):
        raise CimtoolError(f"training the spiking network through time needs plain Linear/Conv2d layers, "
                           f"not {type(module).__name__}")
    flat = x.flatten(0, 1)
    if isinstance(module, nn.Linear):
        y = F.linear(flat, module.weight)
    else:
        y = F.conv2d(flat, module.weight, None, module.stride, module.padding, module.dilation, module.groups)
    y = y.unflatten(0, x.shape[:2])
    if module.bias is None:
        return y
    bias = module.bias.view(-1, *([1] * (y.dim() - 3)))
    return torch.cat([y[:1] + bias, y[1:]])


def spiking_logits(net, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The output layer's total input over ``steps`` steps of the spiking network ``net``
    (a ``SpikingNetwork``) on raw inputs ``x``, differentiable through time."""
    from cimtool.data.tensors import to_float
    from cimtool.nn.snn import Flatten, NeuronSite, SpikingMaxPool, Synapse

    cfg = net.cfg
    inp = net.prefix(to_float(x.to(net.device)))
    h = torch.cat([inp.unsqueeze(0), inp.new_zeros((steps - 1, *inp.shape))])
    for op in net.ops[:-1]:  # the last op is the output neurons: their input decides
        if isinstance(op, Synapse):
            h = _synapse(op.module, h)
        elif isinstance(op, NeuronSite):
            h = stbif_bptt(h, net.thetas[op.index], cfg.n_min, cfg.p_max)
        elif isinstance(op, SpikingMaxPool):
            pooled = op.module(h.cumsum(0).flatten(0, 1)).unflatten(0, h.shape[:2])
            h = torch.diff(pooled, dim=0, prepend=torch.zeros_like(pooled[:1]))
        elif isinstance(op, Flatten):
            h = h.flatten(2)
    return h.sum(0)
