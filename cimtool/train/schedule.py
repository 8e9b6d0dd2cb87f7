"""Learning-rate schedule: warm-up, cosine decay, lr scaled by batch (docs/physics.md#training-schedule)."""

from __future__ import annotations

import math


def scaled_lr(lr_per_256: float, batch_size: int) -> float:
    """Linear scaling rule (Goyal et al. 2017, arXiv:1706.02677): lr = lr_256 · batch / 256."""
    return lr_per_256 * batch_size / 256.0


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Learning rate at ``step`` (0-based): linear ramp to ``peak``, then half-cosine to 0."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
