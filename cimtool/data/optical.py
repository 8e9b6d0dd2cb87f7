"""Optical front-end of an organic optoelectronic synapse array (docs/physics.md#optical-front-end).

An sRGB image in [0, 1] becomes the photo-signal the synapses see: inverse sRGB gamma to linear
light (IEC 61966-2-1), Poisson shot noise at ``max_photons`` photons for full white, and each
colour channel weighted by the material's relative responsivity (grayscale images use the mean
responsivity: a broadband pixel). Noise is drawn at every forward pass (training and evaluation),
from torch's global generator, which the stages seed.
"""

from __future__ import annotations

import torch
from torch import nn


def inverse_srgb(c: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded value → linear light, IEC 61966-2-1."""
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp_min(0) + 0.055) / 1.055) ** 2.4)


class OpticalFrontEnd(nn.Module):
    def __init__(self, channels: int, responsivity: tuple[float, float, float], max_photons: float) -> None:
        super().__init__()
        resp = torch.tensor(responsivity, dtype=torch.float32)
        resp = resp / resp.max()
        weights = resp if channels == 3 else resp.mean().repeat(channels)
        self.register_buffer("responsivity", weights.view(1, channels, 1, 1))
        self.max_photons = float(max_photons)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        light = inverse_srgb(x)
        photons = torch.poisson(light * self.max_photons) / self.max_photons  # shot noise
        return photons * self.responsivity
