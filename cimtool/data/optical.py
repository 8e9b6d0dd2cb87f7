"""Optical front-end of an organic optoelectronic synapse array (docs/physics.md#optical-front-end).

An sRGB image in [0, 1] becomes the photo-signal the synapses see, in the order the physics has
it: inverse sRGB gamma to linear light (IEC 61966-2-1), ``max_photons`` photons for full white,
each colour band weighted by the material's relative responsivity (its quantum efficiency; a
grayscale image uses the mean responsivity: a broadband pixel), Poisson shot noise on the
photo-generated carriers, optional dark carriers (Poisson, per pixel) and full-well clipping. The
output is in carriers per ``max_photons``: full white in the most responsive band reads 1 on
average. Noise is drawn at every forward pass (training and evaluation), from torch's global
generator, which the stages seed.
"""

from __future__ import annotations

import torch
from torch import nn


def inverse_srgb(c: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded value → linear light, IEC 61966-2-1."""
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp_min(0) + 0.055) / 1.055) ** 2.4)


class OpticalFrontEnd(nn.Module):
    stochastic = True  # a fresh shot-noise draw at every pass: evaluations report mean ± std

    def __init__(self, channels: int, responsivity: tuple[float, float, float], max_photons: float,
                 dark_current: float = 0.0, full_well: float | None = None) -> None:
        super().__init__()
        resp = torch.tensor(responsivity, dtype=torch.float32)
        resp = resp / resp.max()
        weights = resp if channels == 3 else resp.mean().repeat(channels)
        self.register_buffer("responsivity", weights.view(1, channels, 1, 1))
        self.max_photons = float(max_photons)
        self.dark_current = float(dark_current)
        self.full_well = None if full_well is None else float(full_well)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        light = inverse_srgb(x)
        # shot noise is on the carriers: quantum efficiency thins the photons before the draw
        carriers = torch.poisson(light * self.max_photons * self.responsivity)
        if self.dark_current > 0:  # thermally generated carriers, Poisson, independent per pixel
            carriers = carriers + torch.poisson(torch.full_like(carriers, self.dark_current))
        if self.full_well is not None:  # the pixel's capacity
            carriers = carriers.clamp_max(self.full_well)
        return carriers / self.max_photons
