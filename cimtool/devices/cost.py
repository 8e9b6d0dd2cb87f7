"""Energy per inference of a spiking network on crossbar arrays: the sweep's cost model.

A first-order model, meant to rank configurations (weight bits × ADC bits × scheme × T), not to
replace NeuroSim. Per inference:

    E = T · Σ_layers positions · (conversions · E_ADC(b) + cells · E_cell)

- ``positions``: output pixels of a conv layer (each is one array read per step), 1 for a linear one;
- ``conversions = row_tiles · cols · slices · n_conv``: every row tile has its own ADC per column;
  ``n_conv`` = 2 for scheme A (pos and neg columns digitised), 1 for scheme B (I_pos − I_neg);
- ``slices = ceil(weight_bits / cell_bits)``, ``cell_bits = floor(log2(card levels))``: weights with
  more bits than one device holds are bit-sliced over several cells, as NeuroSim's ``cellBit`` (and
  as the array simulator simulates them: ``cimtool.devices.mapping.slice_count``);
- ``E_ADC(b) = FOM · 2^b``: Walden figure of merit, ``FOM`` = 10 fJ per conversion step (a typical
  SAR ADC, Murmann's ADC performance survey);
- ``cells = 2 · rows · cols · slices``, ``E_cell = V_read² · Ḡ · t_read``, with the mid-range
  conductance ``Ḡ = (g_min + g_max)/2`` and ``t_read`` = 10 ns: every cell of the differential pair
  read once per step (an upper bound: idle inputs draw no current).

Ties (equal energy) go to fewer weight bits, then fewer ADC bits, then fewer timesteps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cimtool.devices.card import DeviceCard
from cimtool.devices.mapping import slice_count


@dataclass(frozen=True)
class LayerShape:
    rows: int
    cols: int
    positions: int  # array reads per step: output pixels (conv) or 1 (linear)


@dataclass(frozen=True)
class CostModel:
    adc_fom: float = 10e-15  # J per conversion step (Walden FOM)
    read_time: float = 10e-9  # s per array read

    def energy(self, card: DeviceCard, layers: list[LayerShape], weight_bits: int, adc_bits: int,
               scheme: str, timesteps: int, array_rows: int) -> dict[str, float]:
        """Energy per inference in pJ: total, ADC and cell parts."""
        slices = slice_count(card, weight_bits)
        n_conv = 2 if scheme == "A" else 1
        e_adc = self.adc_fom * 2**adc_bits
        e_cell = card.read_voltage**2 * (card.g_min + card.g_max) / 2 * self.read_time
        adc = cells = 0.0
        for layer in layers:
            row_tiles = math.ceil(layer.rows / array_rows)
            adc += layer.positions * row_tiles * layer.cols * slices * n_conv * e_adc
            cells += layer.positions * 2 * layer.rows * layer.cols * slices * e_cell
        scale = timesteps * 1e12
        return {"energy_pj": (adc + cells) * scale, "adc_energy_pj": adc * scale,
                "cell_energy_pj": cells * scale, "slices": slices}
