"""Run a built NeuroSim on a layer record and read its stdout into tables.

DNN_NeuroSim V1.3 prints everything to stdout: a floorplan (tiles, speed-up and utilisation per
layer), per-layer estimates (latency, dynamic and leakage energy, buffer and interconnect, ADC /
accumulation / other breakdowns) and a chip summary (area and its breakdown, latency, energies,
TOPS/W, TOPS, FPS, TOPS/mm²). V2.1 prints the same per epoch of on-chip training, split into
forward, activation gradient, weight gradient and weight update, with peak figures besides. Every
number is kept with the stdout line it came from, and one is derived from them (line None):

- ``leakage_energy_pj`` = leakage power × latency: every tile leaking for the whole run. NeuroSim's
  own figure, kept as ``neurosim_leakage_energy_pj``, charges only idle tiles (V1.3 and V2.1
  main.cpp: while a layer computes, the other layers' tiles, ``numTileOtherLayer·layerReadLatency·
  tileLeakage``; V1.4 adds the computing tiles' buffers), so a one-layer network leaks 0 pJ at
  0.5 µW.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from cimtool.errors import CimtoolError

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_VALUE = re.compile(rf"^(?P<label>.*?)\s*:\s*(?P<value>{_NUMBER})\s*(?P<unit>[A-Za-z^/%0-9]*)\s*$")
_LAYER_LINE = re.compile(r"^layer(?P<layer>\d+)(?P<rest>'s .*|)$")
_ESTIMATION = re.compile(r"Estimation of Layer (\d+)")

# V2.1's training phases: "readLatency of Forward" → forward_latency_ns, "PEAK writeDynamicEnergy of
# Weight Update" → peak_weight_update_energy_pj, … (chip lines add " (per epoch)")
_PHASES = (("Forward", "forward", "read"), ("Activation Gradient", "activation_gradient", "read"),
           ("Weight Gradient", "weight_gradient", "read"), ("Weight Update", "weight_update", "write"))
_PHASE_LABELS = {f"{peak}{kind}{quantity} of {phase}": f"{prefix}{name}_{metric}"
                 for peak, prefix in (("", ""), ("PEAK ", "peak_")) for phase, name, kind in _PHASES
                 for quantity, metric in (("Latency", "latency_ns"), ("DynamicEnergy", "energy_pj"))}

# (pattern on the label, metric name); the first match wins. Breakdown lines start with dashes.
_METRICS: list[tuple[str, str]] = [
    (r"^ChipArea$", "chip_area_um2"),
    (r"^Chip total CIM array$", "area_cim_array_um2"),
    (r"^Total IC Area on chip", "area_ic_um2"),
    (r"^Total ADC .*Area on chip$", "area_adc_um2"),
    (r"^Total Accumulation Circuits .* on chip$", "area_accumulation_um2"),
    (r"^Other Peripheries ", "area_other_um2"),
    (r"^Chip clock period is$", "clock_period_ns"),
    (r"^Chip (layer-by-layer readLatency|pipeline-system-clock-cycle) \(per image\) is$", "latency_ns"),
    (r"^Chip (total|pipeline-system) readDynamicEnergy( \(per image\))? is$", "dynamic_energy_pj"),
    (r"^Chip (total|pipeline-system) leakage Energy( \(per image\))? is$", "neurosim_leakage_energy_pj"),
    (r"^Chip (total|pipeline-system) leakage Power( \(per image\))? is$", "leakage_power_uw"),
    (r"^Chip (pipeline-system )?buffer readLatency( \(per image\))? is$", "buffer_latency_ns"),
    (r"^Chip (pipeline-system )?buffer readDynamicEnergy( \(per image\))? is$", "buffer_energy_pj"),
    (r"^Chip (pipeline-system )?ic readLatency( \(per image\))? is$", "ic_latency_ns"),
    (r"^Chip (pipeline-system )?ic readDynamicEnergy( \(per image\))? is$", "ic_energy_pj"),
    (r"^-+ ADC .*readLatency is$", "adc_latency_ns"),
    (r"^-+ Accumulation Circuits .*readLatency is$", "accumulation_latency_ns"),
    (r"^-+ Other Peripheries .*readLatency is$", "other_latency_ns"),
    (r"^-+ ADC .*readDynamicEnergy is$", "adc_energy_pj"),
    (r"^-+ Accumulation Circuits .*readDynamicEnergy is$", "accumulation_energy_pj"),
    (r"^-+ Other Peripheries .*readDynamicEnergy is$", "other_energy_pj"),
    (r"^Energy Efficiency TOPS/W", "tops_per_w"),
    (r"^Throughput TOPS", "tops"),
    (r"^Throughput FPS", "fps"),
    (r"^Compute efficiency TOPS/mm\^2", "tops_per_mm2"),
    (r"^Memory Utilization of Whole Chip$", "memory_utilization_pct"),
    # V2.1 (training): figures per epoch (batchSize × numIteration images), forward + activation
    # gradient + weight gradient + weight update; "total" is the headline latency and dynamic energy
    (r"^Chip total CIM \(Forward\+Activation Gradient\) array$", "area_cim_array_um2"),
    (r"^Weight Gradient Calculation$", "area_weight_gradient_um2"),
    (r"^Chip total Latency \(per epoch\) is$", "latency_ns"),
    (r"^Chip total Energy \(per epoch\) is$", "dynamic_energy_pj"),
    (r"^Chip PEAK total Latency \(per epoch\) is$", "peak_latency_ns"),
    (r"^Chip PEAK total Energy \(per epoch\) is$", "peak_energy_pj"),
    *[(rf"^Chip {re.escape(label)} \(per epoch\) is$", name) for label, name in _PHASE_LABELS.items()],
    (r"^Chip leakage Energy is$", "neurosim_leakage_energy_pj"),
    (r"^Chip leakage Power is$", "leakage_power_uw"),
    (r"^Peak Energy Efficiency TOPS/W", "peak_tops_per_w"),
    (r"^Peak Throughput TOPS", "peak_tops"),
    (r"^Peak Throughput FPS", "peak_fps"),
    (r"^-+ Synaptic Array w/o ADC .*readLatency is$", "other_latency_ns"),  # V2.1's coreLatencyOther
    (r"^-+ Synaptic Array w/o ADC .*readDynamicEnergy is$", "other_energy_pj"),
    (r"^-+ Buffer (buffer latency|latency|readLatency) is$", "buffer_latency_ns"),
    (r"^-+ Buffer readDynamicEnergy is$", "buffer_energy_pj"),
    (r"^-+ Interconnect (latency|readLatency) is$", "ic_latency_ns"),
    (r"^-+ Interconnect readDynamicEnergy is$", "ic_energy_pj"),
    (r"^-+ Weight Gradient Calculation readLatency is$", "weight_gradient_calc_latency_ns"),
    (r"^-+ Weight Gradient Calculation readDynamicEnergy is$", "weight_gradient_calc_energy_pj"),
    (r"^-+ Weight Update writeLatency is$", "weight_update_write_latency_ns"),
    (r"^-+ Weight Update writeDynamicEnergy is$", "weight_update_write_energy_pj"),
    (r"^-+ DRAM data transfer Latency is$", "dram_latency_ns"),
    (r"^-+ DRAM data transfer (Dynamic)?Energy is$", "dram_energy_pj"),
]
# the training breakdown V2.1 runs have (run-neurosim's summary keeps these)
PHASE_METRICS = tuple(n for n in _PHASE_LABELS.values() if not n.startswith("peak_"))
TRAINING_METRICS = (*PHASE_METRICS, "peak_latency_ns", "peak_energy_pj", "peak_tops_per_w")
# one row per priced epoch (run-neurosim's epochs.parquet): its totals, phases and DRAM transfers
EPOCH_METRICS = ("latency_ns", "dynamic_energy_pj", *PHASE_METRICS, "dram_latency_ns", "dram_energy_pj",
                 "leakage_energy_pj", "tops_per_w")
_LAYER_METRICS: dict[str, str] = {
    "readLatency": "latency_ns", "readDynamicEnergy": "dynamic_energy_pj", "leakagePower": "leakage_power_uw",
    "leakageEnergy": "neurosim_leakage_energy_pj", "buffer latency": "buffer_latency_ns",
    "buffer readDynamicEnergy": "buffer_energy_pj", "ic latency": "ic_latency_ns",
    "ic readDynamicEnergy": "ic_energy_pj",
    # V2.1: "readLatency" and "PEAK readLatency" (pipeline) are the forward pass
    "PEAK readLatency": "peak_forward_latency_ns", "PEAK readDynamicEnergy": "peak_forward_energy_pj",
    **_PHASE_LABELS,
}
_FLOORPLAN = {"# of tile used": "tiles", "Speed-up": "speed_up", "Utilization": "utilization"}


@dataclass
class Parsed:
    chip: list[dict] = field(default_factory=list)  # metric, value, unit, line (None: derived)
    layers: dict[int, dict] = field(default_factory=dict)  # layer → {metric: value}
    layer_lines: list[dict] = field(default_factory=list)  # layer, metric, value, unit, line

    def chip_value(self, metric: str) -> float | None:
        return next((m["value"] for m in self.chip if m["metric"] == metric), None)


def parse_stdout(text: str) -> Parsed:
    """Every number NeuroSim printed, by chip or layer, with its line number (1-based)."""
    out = Parsed()
    section, layer = None, None
    compiled = [(re.compile(p), name) for p, name in _METRICS]
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("-----------------") and not line.startswith("----------- "):
            section = next((v for k, v in _FLOORPLAN.items() if k in line), None)
            found = _ESTIMATION.search(line)
            if found:
                layer = int(found.group(1))
            if "Summary" in line:
                layer = None
            continue
        match = _VALUE.match(line)
        if not match:
            continue
        label, value, unit = match.group("label"), float(match.group("value")), match.group("unit")
        per_layer = _LAYER_LINE.match(label)
        if per_layer and section and not per_layer.group("rest"):  # floorplan: "layer3: 2"
            _put(out, int(per_layer.group("layer")), section, value, unit, number)
        elif per_layer:  # "layer3's readLatency is"
            key = per_layer.group("rest")[3:].removesuffix(" is")
            if key in _LAYER_METRICS:
                _put(out, int(per_layer.group("layer")), _LAYER_METRICS[key], value, unit, number)
        else:
            name = next((n for pattern, n in compiled if pattern.search(label)), None)
            if name is None:
                continue
            if layer is not None and label.startswith("-"):  # a layer's breakdown ("----------- ADC …")
                _put(out, layer, name, value, unit, number)
            else:
                out.chip.append({"metric": name, "value": value, "unit": unit, "line": number})
    power, latency = out.chip_value("leakage_power_uw"), out.chip_value("latency_ns")
    if power is not None and latency is not None:
        # every tile leaks for the whole latency: µW · ns = 1e-3 pJ (NeuroSim's own figure: idle tiles only)
        out.chip.append({"metric": "leakage_energy_pj", "value": float(f"{power * latency * 1e-3:.6g}"),
                         "unit": "pJ", "line": None})  # as many digits as NeuroSim prints
    return out


def _put(out: Parsed, layer: int, metric: str, value: float, unit: str, line: int) -> None:
    out.layers.setdefault(layer, {"layer": layer})[metric] = value
    out.layer_lines.append({"layer": layer, "metric": metric, "value": value, "unit": unit, "line": line})


# --- running -----------------------------------------------------------------------------------

def _diagnose(rc: int, output: str, subarray: int | None, fitting: int | None = None) -> str | None:
    """What went wrong and what to change, or None if the run looks fine (``fitting``: the largest
    subarray this trace's floorplan accepts, for the hint)."""
    if "SubArray Size is too large" in output:
        size = f"{subarray}x{subarray} " if subarray else ""
        fix = f"use --subarray {fitting} (or auto)" if fitting else "use a smaller --subarray"
        return (f"the widest novel-mapped layer (Cout × ⌈WBITS/cellBit⌉ columns) is narrower than two "
                f"{size}subarrays: {fix}, more --weight-bits in neurosim-trace, or fewer --cell-bits")
    if "Width of subArray is even smaller than a single DFF" in output:
        size = f"{subarray}-column " if subarray else ""
        # V2.1 DFF.cpp: the subarray's periphery is laid out along its width, one flip-flop at least
        return (f"the {size}subarray is narrower than one D flip-flop of its periphery (NeuroSim's DFF.cpp; "
                "V2.1 at 22 nm needs >= 32 columns, which run-neurosim sets where it builds NeuroSim): "
                "rebuild the given binary with wider subarrays, or let run-neurosim build it")
    if rc in (134, -6):
        return "NeuroSim aborted (too few arguments for NetWork.csv's layers, or a malformed trace)"
    if rc in (139, -11):
        return ("NeuroSim crashed (segmentation fault): a trace file is probably shorter than NetWork.csv "
                "implies (input rows = Cin·k·k, columns = windows × ABITS)")
    if rc != 0:
        return f"NeuroSim failed (exit {rc})"
    if "ERROR" in output:
        return "NeuroSim reported an error"
    return None


def run(argv: list[str], cwd, timeout: float, on_line: Callable[[str], None],
        subarray: int | None = None, fitting: int | None = None, env: dict[str, str] | None = None) -> str:
    """Run NeuroSim (argv list, no shell) and return its stdout; failures raise with the output tail."""
    try:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=None if env is None else {**os.environ, **env})
    except OSError as exc:
        raise CimtoolError(f"{argv[0]}: cannot run NeuroSim ({exc.strerror})") from None
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)
            on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join()
        raise CimtoolError(f"NeuroSim ran over --timeout {timeout:g} s and was stopped") from None
    reader.join()
    output = "".join(lines)
    problem = _diagnose(rc, output, subarray, fitting)
    if problem:
        tail = "\n".join("  | " + line for line in output.strip().splitlines()[-6:])
        raise CimtoolError(f"{problem}; NeuroSim's last output:\n{tail}")
    return output
