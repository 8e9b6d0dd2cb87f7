"""A whole model on simulated arrays: map its crossbar layers, calibrate converters, run trials.

Off-array parts (front-end, scaler, normalisation, ReLU, pooling, biases) stay digital and
exact; every crossbar layer of the model's spec becomes an :class:`ArrayLayer`.

**Batches from a memory budget.** After calibration the network knows, per sample, how many
bytes each array layer's working tensors take (unrolled inputs, per-tile currents, noise); a
batch holds as many samples as ``memory_budget`` allows. Where a whole split fits the budget
several times, that many Monte Carlo chips share one pass (each chip keeps its own generator, so
its result does not depend on how many chips share the pass). The budget is a fixed number, not
read from the machine, so the same command gives the same batches, hence byte-identical results.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cimtool.data.tensors import TensorData, to_float
from cimtool.devices.card import DeviceCard
from cimtool.devices.mapping import LayerMap, LevelCode, Placement, crossbar_matrix, map_matrix
from cimtool.errors import CimtoolError
from cimtool.nn.array import ArrayConfig, ArrayLayer, ConverterObserver, calibrate_layers

# working memory of one batch (bytes), fixed per device type so that batches are reproducible; on
# 2 CPU cores 256 MiB ran 10-20 % faster than 1 GiB (fewer page faults, tests/bench/bench_scale.py)
MEMORY_BUDGET = {"cpu": 256 << 20, "cuda": 8 << 30}
CALIBRATION_BATCH = 256


def map_model(model: nn.Module, spec: dict[str, Any], code: LevelCode | np.ndarray,
              scaling: str = "shared_max", percentile: float = 99.9,
              normalize: str = "gmax") -> dict[str, LayerMap]:
    """Every crossbar layer of ``spec`` mapped onto the codes of ``code`` (or one cell's level grid,
    compared under ``normalize``), in network order."""
    layers = spec.get("crossbar_layers", [])
    if not layers:
        raise CimtoolError(f"model '{spec.get('model')}' has no crossbar layer to map")
    maps = {}
    for layer in layers:
        weight = model.get_submodule(layer["name"]).weight.detach().cpu().double().numpy()
        maps[layer["name"]] = map_matrix(layer["name"], crossbar_matrix(weight), code, scaling, percentile,
                                           normalize)
    return maps


def chip_generator(seed: int, trial: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator that draws chip ``trial`` of ``seed`` (its devices, programming and read noise):
    the same chip for every configuration and stage evaluated with that seed."""
    return torch.Generator(device).manual_seed(seed * 1_000_003 + trial)


def layer_bytes(layer: ArrayLayer, positions: int, inputs: int) -> int:
    """Bytes of float32 working tensors per sample of one array layer: ``positions`` reads of
    ``inputs`` input values (a conv's image; a linear layer's rows)."""
    out = layer.cols * positions
    if layer.linear:  # input, its square, output, σ and noise
        return 4 * (2 * inputs + 3 * out)
    width = layer.cell_cols * (2 if layer.config.scheme == "A" else 1)
    tiles = 1 if layer.is_conv else layer.tiles  # a conv reads one row tile at a time
    currents = tiles * width * positions
    return 4 * (4 * inputs + 4 * currents + out)  # v, v⁺/v⁻, a channel slice, v²; currents, σ, noise, sum


def set_modules(model: nn.Module, names: Sequence[str], modules: Sequence[nn.Module]) -> None:
    """Put ``modules`` in the places of the submodules ``names`` of ``model``."""
    for name, module in zip(names, modules, strict=True):
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, module)


class ArrayNetwork:
    """A copy of ``model`` whose crossbar layers run on simulated arrays of one device card."""

    def __init__(self, model: nn.Module, maps: dict[str, LayerMap], placements: dict[str, Placement],
                 card: DeviceCard, config: ArrayConfig, device: torch.device | str = "cpu",
                 memory_budget: int | None = None) -> None:
        config.validate()
        self.device = torch.device(device)
        self.memory_budget = memory_budget or MEMORY_BUDGET[self.device.type]
        self.model = copy.deepcopy(model).to(self.device).eval()
        self.names = list(maps)
        self.layers = [ArrayLayer(self.model.get_submodule(name), layer_map, placements[name], card, config,
                                  self.device) for name, layer_map in maps.items()]
        set_modules(self.model, self.names, self.layers)
        self.bytes_per_sample: int | None = None  # known after calibration

    @torch.no_grad()
    def calibrate(self, sample: TensorData) -> None:
        """Observe, then freeze: input ranges and ADC full scales on ``sample`` (ideal chip)."""
        observers = calibrate_layers(self.layers, lambda mods: set_modules(self.model, self.names, mods),
                                     lambda: self._logits(sample, CALIBRATION_BATCH, 1, lambda _: None))
        self.bytes_per_sample = self._plan(observers, sample)

    def _plan(self, observers: Sequence[ConverterObserver], sample: TensorData) -> int:
        digital = 3 * 4 * max(1, sample.x[0].numel()) * 16  # activations of the digital layers, generous
        arrays = max(layer_bytes(layer, obs.positions, obs.inputs)
                     for layer, obs in zip(self.layers, observers, strict=True))
        return arrays + digital

    def batch_size(self, n: int) -> int:
        """Samples per batch within the memory budget (the whole split if it fits)."""
        if self.bytes_per_sample is None:
            raise CimtoolError("the array network ran before its converters were calibrated")
        return int(max(1, min(n, self.memory_budget // self.bytes_per_sample)))

    def chips_per_pass(self, n: int, trials: int) -> int:
        """Chips evaluated together: only when the whole split fits the budget that many times."""
        batch = self.batch_size(n)
        if batch < n:
            return 1
        return int(max(1, min(trials, self.memory_budget // (self.bytes_per_sample * n))))

    def _logits(self, data: TensorData, batch: int, chips: int,
                each: Callable[[torch.Tensor], None]) -> None:
        for i in range(0, len(data), batch):
            x = to_float(data.x[i: i + batch].to(self.device))
            if chips > 1:
                x = x.expand(chips, *x.shape).reshape(-1, *x.shape[1:])
            each(self.model(x))

    def predict(self, data: TensorData) -> torch.Tensor:
        """Class predictions [K, N] of the chips currently programmed."""
        chips = self.layers[0].chips
        preds: list[torch.Tensor] = []
        self._logits(data, self.batch_size(len(data)), chips,
                     lambda logits: preds.append(logits.argmax(1).view(chips, -1)))
        return torch.cat(preds, dim=1)

    def program(self, gens: Sequence[torch.Generator | None]) -> None:
        for layer in self.layers:
            layer.program_chips(gens)

    @torch.no_grad()
    def accuracy(self, data: TensorData, gen: torch.Generator | None) -> float:
        """Accuracy on one chip: ``gen`` draws it (None: the ideal mapped chip)."""
        self.program([gen])
        return float((self.predict(data)[0].cpu() == data.y).double().mean())

    def chip_generator(self, seed: int, trial: int) -> torch.Generator:
        return chip_generator(seed, trial, self.device)

    @torch.no_grad()
    def trials(self, data: TensorData, n: int, seed: int,
               on_trial: Callable[[int, float], None] | None = None) -> list[float]:
        """Monte Carlo: each trial is a fresh chip (D2D, stuck-at, drift), programming (C2C) and
        read-noise stream, seeded by (seed, trial); several chips per pass where memory allows."""
        accs: list[float] = []
        per_pass = self.chips_per_pass(len(data), n)
        labels = data.y.to(self.device)
        for start in range(0, n, per_pass):
            self.program([self.chip_generator(seed, t) for t in range(start, min(n, start + per_pass))])
            for pred in self.predict(data):
                accs.append(float((pred == labels).double().mean()))
                if on_trial:
                    on_trial(len(accs) - 1, accs[-1])
        return accs
