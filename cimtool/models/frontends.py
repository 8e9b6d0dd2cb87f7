"""Off-array front-ends (docs/physics.md#front-ends): an image → 64 features for a 64-row crossbar.

Each front-end maps float images [N, C, H, W] in [0, 1] to [N, 64]. A fitted per-feature scaler
then maps the features to [0, 1] (the input range of the array: voltages or spike rates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

N_FEATURES = 64
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights, to pool colour images as grayscale


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, 1, H, W]; colour images become luma, grayscale passes through."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


class LinearProjection(nn.Module):
    """z = P·x + b_p on the flattened image (docs/physics.md#front-ends). P is learned (proj_sup) or PCA."""

    def __init__(self, in_features: int, out_features: int = N_FEATURES) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(1))

    @torch.no_grad()
    def fit_pca(self, x_train: torch.Tensor) -> None:
        """z_i = v_iᵀ(x − μ), v_i the train split's top principal components (docs/physics.md#front-ends)."""
        flat = x_train.flatten(1).double()
        mean = flat.mean(dim=0)
        # right singular vectors of the centred data = principal directions, by variance
        _, _, vh = torch.linalg.svd(flat - mean, full_matrices=False)
        components = vh[: self.proj.out_features]
        # fix the sign of each component (largest-magnitude loading positive) for reproducibility
        signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))
        components = components * signs
        self.proj.weight.copy_(components.float())
        self.proj.bias.copy_(-(components @ mean).float())


class Pool8x8(nn.Module):
    """Grayscale image resized to 8x8 = 64 features, by area averaging or antialiased bilinear."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gray = to_gray(x)
        if self.mode == "avgpool":
            small = F.adaptive_avg_pool2d(gray, (8, 8))
        else:
            small = F.interpolate(gray, size=(8, 8), mode="bilinear", align_corners=False,
                                  antialias=True)
        return small.flatten(1)


@dataclass(frozen=True)
class FrontEnd:
    name: str
    description: str
    build: Callable[[tuple[int, int, int]], nn.Module]
    fit: str  # "supervised" (trained with an auxiliary classifier), "pca", or "none"


def _flat(shape: tuple[int, int, int]) -> int:
    return shape[0] * shape[1] * shape[2]


FRONTENDS: dict[str, FrontEnd] = {
    f.name: f
    for f in [
        FrontEnd("proj_sup_64", "linear projection to 64, trained with an auxiliary classifier",
                 lambda s: LinearProjection(_flat(s)), fit="supervised"),
        FrontEnd("proj_pca_64", "PCA to 64 components, fitted on the train split only",
                 lambda s: LinearProjection(_flat(s)), fit="pca"),
        FrontEnd("avgpool_8x8", "grayscale image area-averaged to 8x8",
                 lambda s: Pool8x8("avgpool"), fit="none"),
        FrontEnd("bilinear_8x8", "grayscale image resized to 8x8 (antialiased bilinear)",
                 lambda s: Pool8x8("bilinear"), fit="none"),
    ]
}


class FeatureScaler(nn.Module):
    """Per-feature affine map of the train split's [q_lo, q_hi] quantiles onto [0, 1], clamped."""

    def __init__(self, n_features: int = N_FEATURES) -> None:
        super().__init__()
        self.register_buffer("lo", torch.zeros(n_features))
        self.register_buffer("hi", torch.ones(n_features))

    @torch.no_grad()
    def fit(self, features: torch.Tensor, q_lo: float = 0.001, q_hi: float = 0.999) -> None:
        lo = torch.quantile(features, q_lo, dim=0)
        hi = torch.quantile(features, q_hi, dim=0)
        self.lo.copy_(lo)
        self.hi.copy_(torch.maximum(hi, lo + 1e-6))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return ((z - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
