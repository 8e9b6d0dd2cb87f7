"""Programming variation of a device's conductance: the one rule every stage draws it by
(docs/physics.md#programming-variation).

``vary`` perturbs conductances by the card's variation model: ``lognormal`` (σ is the std of
ln G) or ``range`` (NeuroSim's additive σ·(g_max − g_min), clamped to the device range). The
array simulator (D2D, C2C), ``qat --mode noise``, the organic synapse layers and the pulse
writes of on-chip training on a lognormal card call it (on a range card on-chip training writes
by V2.1's ``wage.W``, the same additive draw in the device's [−1, 1] units); ``g``, ``g_min`` and
``g_max`` only need one unit (siemens, or normalised to g_max). ``vary_state`` does the same for
a device's state ``u ∈ [0, 1]`` (``G = g_min + u·(g_max − g_min)``), the unit of the pulse curves.
"""

from __future__ import annotations

import torch

MODELS = ("lognormal", "range")


def vary(g: torch.Tensor, sigma: float, model: str, g_min: float, g_max: float,
         gen: torch.Generator | None = None) -> torch.Tensor:
    """``g`` with one draw of variation σ, on ``g``'s device (``gen`` on that device; None: torch's
    global generator)."""
    noise = torch.randn(g.shape, generator=gen, dtype=g.dtype, device=g.device)
    if model == "lognormal":  # Ambrogio et al., IEEE TED 61(8):2912, 2014: σ is the std of ln G
        return g * torch.exp(sigma * noise)
    # NeuroSim RealDevice (MLP+NeuroSim V3.0 Cell.cpp): additive σ·(g_max − g_min), clamped to the range
    return (g + sigma * (g_max - g_min) * noise).clamp(g_min, g_max)


def vary_state(u: torch.Tensor, sigma: float, model: str, g_min: float, g_max: float,
               gen: torch.Generator | None = None) -> torch.Tensor:
    """Device states ``u`` (``G = g_min + u·(g_max − g_min)``) after one draw of ``vary``."""
    span = g_max - g_min
    return (vary(g_min + u * span, sigma, model, g_min, g_max, gen) - g_min) / span
