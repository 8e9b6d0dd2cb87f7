"""What dominates a NeuroSim estimate, and what its figures rest on, from NeuroSim's own breakdown.

:func:`explain` turns a parsed run into shares of latency, energy and area per component, the
component that dominates each, and sentences (``caveats``) for the conditions that set the
figures: the chip clock (NeuroSim's slowest sensing cycle, column settling through the cells),
the ADC's levels, and the leakage NeuroSim's own energy leaves out (docs/physics.md#neurosim-results).
"""

from __future__ import annotations

from cimtool.neurosim.build import MEMCELLS, NeuroSimSettings
from cimtool.neurosim.results import Parsed

# MultilevelSenseAmp.cpp caps a column's sensing at 10 ns; x beta = 1.4 (Param.cpp, validated): a clock
# beyond twice this is the column settling through the cells (SubArray.cpp colDelay = 0.2·C_col·R/(rows/2))
SENSE_CAP_NS = 14.0
# (name, metric prefix): NeuroSim's breakdown lines. V1.x: "Other Peripheries" holds the buffers and
# the interconnect (its label says so), split off here; V2.1 prints them, and its training parts, apart.
_V1_PARTS = (("ADC", "adc"), ("accumulation", "accumulation"), ("buffers", "buffer"), ("interconnect", "ic"))
V21_PARTS = (*_V1_PARTS, ("synaptic array", "other"), ("weight gradient", "weight_gradient_calc"),
             ("weight update", "weight_update_write"), ("DRAM", "dram"))
_AREA = (("ADC", "area_adc_um2"), ("accumulation", "area_accumulation_um2"), ("interconnect", "area_ic_um2"),
         ("other peripheries", "area_other_um2"), ("arrays", "area_cim_array_um2"),
         ("weight gradient", "area_weight_gradient_um2"))
OTHER = "other peripheries"


def _parts(parsed: Parsed, unit: str, v21: bool) -> dict[str, float]:
    """The breakdown of latency (``unit`` "latency_ns") or dynamic energy ("energy_pj") by component."""
    found = {name: parsed.chip_value(f"{key}_{unit}") for name, key in (V21_PARTS if v21 else _V1_PARTS)}
    parts = {name: value for name, value in found.items() if value is not None}
    other = parsed.chip_value(f"other_{unit}")
    if not v21 and other is not None:  # decoders, mux, switch matrix, pooling, activation
        parts[OTHER] = max(0.0, other - parts.get("buffers", 0.0) - parts.get("interconnect", 0.0))
    return parts


def _shares(parts: dict[str, float]) -> dict[str, float]:
    """Each part's share of their sum (NeuroSim's breakdown adds up to its latency, or in a pipeline to
    the layers' latencies), largest first."""
    total = sum(parts.values())
    if total <= 0:
        return {}
    return {name: round(value / total, 4) for name, value in sorted(parts.items(), key=lambda kv: -kv[1])}


def _top(shares: dict[str, float], n: int = 3) -> str:
    return ", ".join(f"{100 * share:.2g}% {name}" for name, share in list(shares.items())[:n])


def _si(value: float, unit: str, base: float) -> str:
    """``value`` in units of ``base`` (1e-9 for ns, 1e-12 for pJ) with an SI prefix, 3 digits."""
    x = value * base
    if x == 0:
        return f"0 {dict(((1e-9, 'n'), (1e-12, 'p'))).get(base, '')}{unit}"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"),
                           (1e-12, "p"), (1e-15, "f")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def explain(parsed: Parsed, settings: NeuroSimSettings | None, v21: bool = False) -> dict:
    """Shares, dominant components and caveats of one NeuroSim run (``settings``: the chip it was set
    to, None when a built binary ran with its own Param.cpp; ``v21``: V2.1's training breakdown)."""
    # V2.1's figures are an epoch's with its training estimate on (its default), an image's with it off
    per = "per epoch" if v21 and (settings is None or settings.trainingEstimation) else "per image"
    latency, dynamic = parsed.chip_value("latency_ns"), parsed.chip_value("dynamic_energy_pj")
    leakage = parsed.chip_value("leakage_energy_pj") or 0.0
    energy = (dynamic or 0.0) + leakage
    latency_shares = _shares(_parts(parsed, "latency_ns", v21))
    energy_shares = _shares({**_parts(parsed, "energy_pj", v21), "leakage": leakage})
    area_shares = _shares({n: v for n, m in _AREA if (v := parsed.chip_value(m)) is not None})
    out = {"latency_shares": latency_shares, "energy_shares": energy_shares, "area_shares": area_shares,
           "latency_dominated_by": next(iter(latency_shares), None),
           "energy_dominated_by": next(iter(energy_shares), None),
           "area_dominated_by": next(iter(area_shares), None)}
    caveats = []
    if latency_shares and energy_shares:
        caveats.append(f"Latency {_si(latency, 's', 1e-9)} {per}: {_top(latency_shares)}; energy "
                       f"{_si(energy, 'J', 1e-12)} {per}: {_top(energy_shares)}.")
    clock = parsed.chip_value("clock_period_ns")
    out["clock_period_ns"] = clock
    out["clock_read_limited"] = clock is not None and clock > 2 * SENSE_CAP_NS
    if out["clock_read_limited"]:
        cells = (f" of R_on {_si(settings.resistanceOn, 'Ω', 1)}" if settings is not None
                 and settings.memcelltype != MEMCELLS["sram"] else "")
        caveats.append(f"The chip clock is NeuroSim's slowest sensing cycle, {_si(clock, 's', 1e-9)} "
                       f"({1e3 / clock:.3g} MHz), nearly all of it the columns settling through the "
                       f"cells{cells} (NeuroSim caps the ADC's part at {SENSE_CAP_NS:g} ns); every latency "
                       "is a count of these cycles, so latency, FPS and leakage energy grow with the cells' "
                       "resistance.")
    adc_area, adc_energy = area_shares.get("ADC", 0.0), parsed.chip_value("adc_energy_pj")
    adc_dynamic = adc_energy / dynamic if adc_energy is not None and dynamic else 0.0
    if out["area_dominated_by"] == "ADC" or adc_dynamic >= 0.5:
        levels = (f"{settings.levelOutput}-level ADCs (NeuroSim's multilevel sense amplifiers, "
                  f"{settings.levelOutput - 1} references each)" if settings is not None else "ADCs")
        caveats.append(f"The {levels} are {adc_area:.0%} of the chip area and {adc_dynamic:.0%} of the "
                       "dynamic energy.")
    printed = parsed.chip_value("neurosim_leakage_energy_pj")
    power = parsed.chip_value("leakage_power_uw")
    if printed is not None and power is not None and abs(leakage - printed) > 0.01 * leakage:
        caveats.append(f"Leakage, {power:.3g} µW over the {_si(latency, 's', 1e-9)} latency, is "
                       f"{_si(leakage, 'J', 1e-12)} ({leakage / energy:.0%} of the energy {per}); NeuroSim's "
                       f"own leakage energy, {_si(printed, 'J', 1e-12)}, which its TOPS/W includes, prices "
                       "the idle tiles at the computing layer's tile leakage and leaves the computing tiles' "
                       "own out.")
    dram = parsed.chip_value("dram_energy_pj") if v21 else None
    if dram and dynamic:
        parts = sum(_parts(parsed, "energy_pj", v21).values())
        caveats.append(f"DRAM transfers, {_si(dram, 'J', 1e-12)} {per} by V2.1's breakdown line, are "
                       "inside its forward, activation-gradient and weight-gradient figures, not added to "
                       "them; that line counts each layer's activation transfers 6 times over what those "
                       "figures hold (Chip.cpp: dramLatency = readLatency·6·(6 or 4), the phases 2 each), "
                       f"so the parts add up to {parts / dynamic:.0%} of the dynamic energy.")
    out["caveats"] = caveats
    return out
