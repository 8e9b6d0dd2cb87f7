"""How weights become conductances and where they sit: the options map-weights, export-weightmap,
qat and sweep share, light to import (the command line shows them without loading numpy)."""

from __future__ import annotations

from dataclasses import dataclass

from cimtool.checks import check_choice, check_range
from cimtool.options import option

SCALING_NAMES = ("shared_max", "per_column", "percentile")  # cimtool.devices.mapping.SCALINGS
NORMALIZATION_NAMES = ("gmax", "range")  # cimtool.devices.mapping.NORMALIZATIONS
MAP = "Mapping"  # the help panel
DEFAULT_DEVICE = "rram_seed003"  # the card of an input that records none (cimtool.devices.cmap.resolve_card)


@dataclass(frozen=True)
class MappingOptions:
    """How weights become conductances and where they sit (map-weights, export-weightmap, qat)."""

    device: str | None = option(None, panel=MAP, help="Device card: a preset (cimtool devices list), a "
                                "device artifact (cimtool devices fit) or a .toml file. Default: the card "
                                f"the input was trained or mapped with, else {DEFAULT_DEVICE}.")
    weight_bits: int | None = option(None, panel=MAP, help="N bits per weight: one cell of 2^N levels over "
                                     "the card's range and spacing up to its cell bits (log2 of its levels), "
                                     "ceil(N/cell bits) bit-sliced cells above (default: the card's levels).")
    scaling: str = option("shared_max", panel=MAP,
                          help="Weight scale: shared_max (max|W| per layer), per_column, percentile.")
    scale_percentile: float = option(99.9, panel=MAP, help="Percentile of |W| for --scaling percentile.")
    normalize: str = option("gmax", panel=MAP, help="Level targets: gmax (n vs G_k/g_max) or range (n vs "
                            "(G_k-g_min)/(g_max-g_min): no bias from the g_min floor on low on/off devices).")
    array_rows: int = option(128, panel=MAP, help="Rows of one physical array.")
    array_cols: int = option(128, panel=MAP, help="Physical columns of one array, pos+neg pairs.")
    layout: str = option("interleaved", panel=MAP, help="Physical columns of output j: interleaved "
                         "(2j, 2j+1) or blocked (j, J+j).")

    def validate(self) -> None:
        from cimtool.devices.mapping import check_placement

        if self.weight_bits is not None:
            check_range("--weight-bits", self.weight_bits, 1, 15, note="(2..32768 levels)")
        check_choice("--scaling", self.scaling, SCALING_NAMES)
        check_choice("--normalize", self.normalize, NORMALIZATION_NAMES)
        check_range("--scale-percentile", self.scale_percentile, 0, 100, lo_open=True)
        check_placement(self.array_rows, self.array_cols, self.layout)
