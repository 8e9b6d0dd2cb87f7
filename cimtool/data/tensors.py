"""In-memory splits as tensors: the type every layer (data, nn, train, stages) passes around.

Kept in the data layer so that ``cimtool.nn`` need not import ``cimtool.train``. torch is imported
only when a function runs, so importing this module is cheap (``cimtool --help`` loads no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class TensorData:
    """One split as tensors: x uint8 images [N, C, H, W] or float features [N, F]; y int64 [N]."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def nbytes(self) -> int:
        return self.x.element_size() * self.x.nelement()


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; float features pass through.

    Image batches [N, C, H, W] come out channels-last (explicit strides, also for C = 1): every
    convolution then returns channels-last, and CPU max-pooling and convolution run 10-15 % (conv
    training) to ~7× (2×2 max-pool) faster than on contiguous NCHW tensors (tests/bench/bench_scale.py)."""
    import torch

    if x.dtype != torch.uint8:
        return x
    if x.dim() == 4:
        out = torch.empty(x.shape, device=x.device, memory_format=torch.channels_last)
        return out.copy_(x).div_(255.0)
    return x.float().div_(255.0)
