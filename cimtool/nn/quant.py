"""Device-level weights inside training: the forward pass sees what the array computes.

``DeviceWeight`` is a ``torch.nn.utils.parametrize`` parametrization of a crossbar layer's weight:
the float master weight is mapped differentially onto the device levels exactly as
``devices.mapping.map_matrix`` does (same scaling, nearest level, normalisation, float64), and the
straight-through estimator passes the gradient back to the master weight: forward on the discrete
levels, backward through the STE to the float master weights (docs/physics.md#device-aware-training;
Bengio, Léonard, Courville, arXiv:1308.3432, 2013). With a
``NoiseSpec`` it also perturbs the chosen conductances in training mode (noise-aware training).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from cimtool.devices.card import DeviceCard
from cimtool.devices.mapping import LevelCode
from cimtool.nn.variation import vary


@dataclass(frozen=True)
class NoiseSpec:
    """Conductance noise drawn at every training forward: programming (D2D ⊕ C2C) and read."""

    sigma: float  # lognormal: σ of ln G; range: σ·(g_max − g_min), in units of g_max
    read_sigma: float  # relative, per read
    model: str  # "lognormal" | "range"

    @classmethod
    def from_card(cls, card: DeviceCard, scale: float = 1.0) -> NoiseSpec:
        sigma = float(np.hypot(card.d2d_sigma, card.c2c_sigma)) * scale
        return cls(sigma=sigma, read_sigma=card.read_noise * scale, model=card.variation_model)


class DeviceWeight(nn.Module):
    """master weight [Cout, ...] → the weight an ideal (or noisy) array realises, with an STE."""

    def __init__(self, code: LevelCode | np.ndarray, scaling: str = "shared_max", percentile: float = 99.9,
                 normalize: str = "gmax", noise: NoiseSpec | None = None) -> None:
        super().__init__()
        if not isinstance(code, LevelCode):  # one cell's level grid
            code = LevelCode.one_cell(np.asarray(code, dtype=np.float64), normalize)
        grid, normalize = code.grid, code.normalize
        g_ref = grid[-1] - (grid[0] if normalize == "range" else 0.0)
        self.register_buffer("midpoints", torch.from_numpy((code.values[:-1] + code.values[1:]) / 2))
        # G / g_max of each cell of each code [codes, S], and the cells' digit weights [S]
        self.register_buffer("g_norm", torch.from_numpy(grid[code.digits] / grid[-1]))
        self.register_buffer("digit_weights", torch.tensor(code.weights))  # a copy: one buffer per layer
        self.g_ref_norm = float(g_ref / grid[-1])
        self.g_floor = float(grid[0] / grid[-1])
        self.scaling, self.percentile, self.noise = scaling, percentile, noise

    def _scale(self, w2: torch.Tensor) -> torch.Tensor:
        """[Cout, rows] → scale per output (crossbar column), like mapping.SCALINGS."""
        a = w2.abs()
        if self.scaling == "per_column":
            s = a.amax(dim=1, keepdim=True)
        elif self.scaling == "percentile":
            s = torch.quantile(a.flatten(), self.percentile / 100).expand(w2.shape[0], 1)
        else:
            s = a.max().expand(w2.shape[0], 1)
        return torch.where(s > 0, s, torch.ones_like(s))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            w2 = w.detach().reshape(w.shape[0], -1).double()
            scale = self._scale(w2)
            k_pos = torch.bucketize(w2.clamp_min(0) / scale, self.midpoints)  # nearest level
            k_neg = torch.bucketize((-w2).clamp_min(0) / scale, self.midpoints)
            c = self.digit_weights
            if self.noise is not None and self.training:  # float32 suffices for a noisy draw
                g_norm, c = self.g_norm.float(), c.float()
                g_pos, g_neg = self._perturb(g_norm[k_pos]), self._perturb(g_norm[k_neg])
                scale = scale.float()
            else:  # float64: exactly what map-weights computes
                g_pos, g_neg = self.g_norm[k_pos], self.g_norm[k_neg]
            diff = (g_pos - g_neg).squeeze(-1) if len(c) == 1 else (g_pos - g_neg) @ c  # shift-add of slices
            w_dev = (scale * diff / self.g_ref_norm).to(w.dtype).reshape(w.shape)
        return w + (w_dev - w).detach()  # straight-through estimator

    def _perturb(self, g: torch.Tensor) -> torch.Tensor:
        """Normalised conductances G/g_max after programming (the card's variation rule) and a read."""
        noise = self.noise
        if noise.model == "lognormal":  # programming and read noise in one lognormal draw
            return vary(g, float(np.hypot(noise.sigma, noise.read_sigma)), noise.model, self.g_floor, 1.0)
        g = vary(g, noise.sigma, noise.model, self.g_floor, 1.0)
        return g * (1 + noise.read_sigma * torch.randn_like(g))


def attach(model: nn.Module, layer_names: list[str], make: callable) -> None:
    """Parametrize the weight of every named crossbar layer with ``make()``."""
    for name in layer_names:
        parametrize.register_parametrization(model.get_submodule(name), "weight", make())


def detach_all(model: nn.Module, layer_names: list[str]) -> None:
    """Remove the parametrizations, keeping the float master weights (what the artifact stores)."""
    for name in layer_names:
        parametrize.remove_parametrizations(model.get_submodule(name), "weight", leave_parametrized=False)
