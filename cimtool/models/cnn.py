"""Convolutional models whose every conv/linear layer is a crossbar layer."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel (x − mean) / std with train-split statistics (off-array, digital)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, per_channel: bool = True) -> None:
        """``per_channel=False``: one offset and scale for every channel, so that the ratios between
        channels (a sensor's spectral response) survive the normalisation."""
        dims = (0, 2, 3) if per_channel else (0, 1, 2, 3)
        self.mean.copy_(x.mean(dim=dims).expand(self.mean.shape[1]).view_as(self.mean))
        self.std.copy_(x.std(dim=dims).clamp_min(1e-6).expand(self.std.shape[1]).view_as(self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _conv(cin: int, cout: int) -> nn.Module:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ConvNet(nn.Module):
    """normalize → conv stack (with 2x2 max-pools) → flatten → classifier."""

    def __init__(self, input_shape: tuple[int, int, int], plan: list[int | str],
                 fc: list[int], num_classes: int, optical: nn.Module | None = None,
                 conv: Callable[[int, int], nn.Module] = _conv,
                 linear: Callable[[int, int], nn.Module] = nn.Linear) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.optical = optical or nn.Identity()  # sensor physics before anything digital
        self.normalize = Normalize(channels)
        layers: list[nn.Module] = []
        for item in plan:
            if item == "pool":
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            else:
                layers += [conv(channels, int(item)), nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        dims = [channels * height * width, *fc]
        head: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            head += [linear(d_in, d_out), nn.ReLU(inplace=True)]
        head.append(linear(dims[-1], num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(self.optical(x))).flatten(1))

    def snn_parts(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[nn.Module]]:
        """(digital prefix, the layers after it in order): what a spiking conversion needs."""
        return (lambda x: self.normalize(self.optical(x))), [*self.features, nn.Flatten(), *self.classifier]


# DNN+NeuroSim's CIFAR VGG8: conv128 conv128 pool conv256 conv256 pool conv512 conv512 pool fc1024 fc10
VGG8_PLAN: list[int | str] = [128, 128, "pool", 256, 256, "pool", 512, 512, "pool"]
MNIST_CNN_PLAN: list[int | str] = [16, "pool", 32, "pool"]
