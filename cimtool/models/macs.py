"""Multiply-accumulate count of one forward pass (conv and linear layers), via forward hooks."""

from __future__ import annotations

import torch
from torch import nn


def count_macs(model: nn.Module, sample: torch.Tensor) -> int:
    """MACs for one sample: Conv2d = out elements · Cin/groups · kh · kw; Linear = in · out."""
    return sum(macs_by_layer(model, sample).values())


def macs_by_layer(model: nn.Module, sample: torch.Tensor) -> dict[str, int]:
    """:func:`count_macs` per conv and linear layer, by module name, in the order they run."""
    macs: dict[str, int] = {}

    def hook(name: str):
        def count(module: nn.Module, inputs, output) -> None:
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                n = output[0].numel() * (module.in_channels // module.groups) * kh * kw
            else:
                n = output[0].numel() * module.in_features
            macs[name] = macs.get(name, 0) + n
        return count

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()
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
    return macs
