"""A spiking network on simulated chips: the one evaluation that map-weights and the sweep share.

A configuration's score is a function of that configuration, the model, the seed and the chip
index alone, whatever else is evaluated beside it:

- the converters are calibrated at the T being scored (a rate-coded input spike carries R/T, so
  an ADC range set at another T saturates or wastes its codes);
- chip ``k`` is drawn by ``network.chip_generator(seed, k)`` and its rate-coded input spikes by
  ``seed + k``, the same for every configuration.

Scores keep each image's result (``hits``: how many of the chips classify it correctly), so that
two configurations can be compared on the same images and chips
(:func:`cimtool.stats.paired_difference`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from cimtool.data.tensors import TensorData
    from cimtool.devices.card import DeviceCard
    from cimtool.devices.mapping import LayerMap, Placement
    from cimtool.nn.array_config import ArrayConfig
    from cimtool.nn.snn_spec import SpikingModel


@dataclass(frozen=True)
class ChipScores:
    """Accuracy of each chip, and per image the number of chips that classify it correctly."""

    accuracies: list[float]
    hits: list[int]

    def to_dict(self) -> dict:
        return {"accuracies": self.accuracies, "hits": self.hits}

    @classmethod
    def from_dict(cls, d: dict) -> ChipScores:
        return cls(list(d["accuracies"]), list(d["hits"]))


class SpikingChips:
    """The spiking network of ``spiking`` on arrays of one mapping and converter setting."""

    def __init__(self, spiking: SpikingModel, maps: dict[str, LayerMap], placements: dict[str, Placement],
                 card: DeviceCard, config: ArrayConfig, calibration: TensorData, seed: int,
                 device: torch.device | str = "cpu") -> None:
        from cimtool.nn.network import ArrayNetwork

        arrays = ArrayNetwork(spiking.model, maps, placements, card, config, device)
        self.snn = spiking.network(arrays.model, device)
        self.calibration, self.seed, self.device = calibration, seed, arrays.device
        self._calibrated_at: int | None = None

    def scores(self, data: TensorData, steps: int, trials: int, on_trial=None) -> ChipScores:
        """Chips 0..trials−1 on ``data`` at ``steps`` timesteps (converters calibrated at ``steps``)."""
        import torch

        from cimtool.nn.network import chip_generator

        if self._calibrated_at != steps:
            self.snn.calibrate_converters(self.calibration, steps, self.seed)
            self._calibrated_at = steps
        hits = torch.zeros(len(data), dtype=torch.int64)
        accs = []
        for trial in range(trials):
            self.snn.program(chip_generator(self.seed, trial, self.device))
            pred, _ = self.snn.predict(data, steps, seed=self.seed + trial)
            correct = pred == data.y
            hits += correct
            accs.append(float(correct.double().mean()))
            if on_trial:
                on_trial(trial, accs[-1])
        return ChipScores(accs, hits.tolist())
