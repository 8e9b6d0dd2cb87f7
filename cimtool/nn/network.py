"""A whole model on simulated arrays: map its crossbar layers, calibrate converters, run trials.

Off-array parts (front-end, scaler, normalisation, ReLU, pooling, biases) stay digital and
exact; every crossbar layer of the model's spec becomes an :class:`ArrayLayer`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from cimtool.devices.card import DeviceCard
from cimtool.devices.mapping import LayerMap, Placement, crossbar_matrix, map_matrix
from cimtool.errors import CimtoolError
from cimtool.nn.array import ArrayConfig, ArrayLayer
from cimtool.train.batching import TensorData, to_float


def map_model(model: nn.Module, spec: dict[str, Any], grid: np.ndarray, scaling: str = "shared_max",
              percentile: float = 99.9, normalize: str = "gmax") -> dict[str, LayerMap]:
    """Every crossbar layer of ``spec`` mapped onto the level grid, in network order."""
    layers = spec.get("crossbar_layers", [])
    if not layers:
        raise CimtoolError(f"model '{spec.get('model')}' has no crossbar layer to map")
    maps = {}
    for layer in layers:
        weight = model.get_submodule(layer["name"]).weight.detach().cpu().double().numpy()
        maps[layer["name"]] = map_matrix(layer["name"], crossbar_matrix(weight), grid, scaling,
                                           percentile, normalize)
    return maps


class ArrayNetwork:
    """A copy of ``model`` whose crossbar layers run on simulated arrays of one device card."""

    def __init__(self, model: nn.Module, maps: dict[str, LayerMap], placements: dict[str, Placement],
                 card: DeviceCard, config: ArrayConfig) -> None:
        config.validate()
        self.model = copy.deepcopy(model).cpu().eval()
        self.layers: list[ArrayLayer] = []
        for name, layer_map in maps.items():
            layer = ArrayLayer(self.model.get_submodule(name), layer_map, placements[name], card, config)
            parent, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent) if parent else self.model, child, layer)
            self.layers.append(layer)
        # conv layers are unrolled per output position: smaller batches keep memory bounded
        self.batch_size = 32 if any(layer.is_conv for layer in self.layers) else 512

    def _forward_all(self, data: TensorData, batch_size: int | None = None) -> torch.Tensor:
        batch_size = batch_size or self.batch_size
        preds = [self.model(to_float(data.x[i: i + batch_size])).argmax(1)
                 for i in range(0, len(data), batch_size)]
        return torch.cat(preds)

    @torch.no_grad()
    def calibrate(self, train: TensorData, batch_size: int | None = None) -> None:
        """Input ranges and ADC full scales from the train split on an ideal chip (layer by layer)."""
        for layer in self.layers:
            layer.program_chip(None)
            layer.calibrating = True
        try:
            self._forward_all(train, batch_size)
        finally:
            for layer in self.layers:
                layer.calibrating = False

    @torch.no_grad()
    def accuracy(self, data: TensorData, gen: torch.Generator | None,
                 batch_size: int | None = None) -> float:
        """Accuracy on one chip: ``gen`` draws it (None: the ideal mapped chip)."""
        for layer in self.layers:
            layer.program_chip(gen)
        return float((self._forward_all(data, batch_size) == data.y).double().mean())

    def trials(self, data: TensorData, n: int, seed: int,
               on_trial: Callable[[int, float], None] | None = None) -> list[float]:
        """Monte Carlo: each trial is a fresh chip (D2D, stuck-at, drift), programming (C2C) and
        read-noise stream, seeded by (seed, trial)."""
        accs = []
        for t in range(n):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + t)
            accs.append(self.accuracy(data, gen))
            if on_trial:
                on_trial(t, accs[-1])
        return accs
