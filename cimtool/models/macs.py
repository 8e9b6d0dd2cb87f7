"""Multiply-accumulate count of one forward pass (conv and linear layers), via forward hooks."""

from __future__ import annotations

import torch
from torch import nn


def count_macs(model: nn.Module, sample: torch.Tensor) -> int:
    """MACs for one sample: Conv2d = out elements · Cin/groups · kh · kw; Linear = in · out."""
    total = 0

    def hook(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output[0].numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += output[0].numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(sample[:1])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total
