"""`cimtool run-neurosim`: build DNN+NeuroSim for a device card and run it on a trace.

Locates NeuroSim (``cimtool.neurosim.build``), sets ``Param.cpp`` from the card and options so
that NeuroSim and cimtool's simulator describe the same chip (R_on = 1/g_max, R_off = 1/g_min,
read voltage, bits per cell, ADC levels, subarray size, technology node, cell type), builds it
once per settings, runs it with an argument list (no shell) under a timeout, and parses stdout.

Writes a ``neurosim`` artifact: ``stdout.txt`` (raw), ``summary.parquet`` (chip metrics: metric,
value, unit, stdout line), ``layers.parquet`` (one row per layer), ``layer_metrics.parquet`` (per
layer, long form with stdout lines) and ``settings.json`` (what NeuroSim was built with).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.errors import CimtoolError
from cimtool.stages.common import StageOutput
from cimtool.stages.params import RunParams  # noqa: F401 (re-exported)
from cimtool.ui import Reporter

KIND = "neurosim"
HEADLINE = ("chip_area_um2", "latency_ns", "dynamic_energy_pj", "leakage_energy_pj", "tops_per_w", "tops",
            "fps", "tops_per_mm2")




def _argv(binary: str, trace: artifacts.Artifact, layers: list[dict], version: str,
          path=lambda name: name) -> list[str]:
    """NeuroSim's argument list for this record (``path`` turns a trace file name into an argument)."""
    p = trace.params
    args = [binary] + (["1"] if version == "v21" else [])  # V2.1: the epoch first
    args += [path("NetWork.csv"), str(p["weight_bits"]), str(p["input_bits"])]
    for layer in layers:
        k = layer["layer"]
        if version == "v21":
            args += [path(f"weight{k}.csv"), path(f"weightOld{k}.csv"), path(f"input{k}.csv"),
                     repr(layer["activity_sample"])]
        else:
            args += [path(f"weight{k}.csv"), path(f"input{k}.csv")]
    return args


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    return (f"[green]neurosim[/green] {artifact.path}  area {s['chip_area_um2']:.4g} um^2, "
            f"latency {s['latency_ns']:.4g} ns, dynamic energy {s['dynamic_energy_pj']:.4g} pJ, "
            f"{s['tops_per_w']:.4g} TOPS/W, {s['fps']:.4g} FPS")


def run(p: RunParams, out: Path | None, root: Path, force: bool, reporter: Reporter) -> artifacts.Artifact:
    from cimtool.devices.card import load_card
    from cimtool.neurosim.build import NeuroSimSettings, build, cache_root, locate, source_version
    from cimtool.neurosim.results import parse_stdout
    from cimtool.neurosim.results import run as run_binary

    if not p.timeout > 0:
        raise CimtoolError(f"--timeout must be > 0 seconds, got {p.timeout}")
    t_start = time.perf_counter()
    trace = artifacts.load(p.trace, "trace")  # every layer file present and unchanged
    layers = pq.read_table(trace.file("layers.parquet")).to_pylist()
    fmt = trace.params.get("format", "v13")
    card = load_card(p.device)
    settings = NeuroSimSettings.from_card(card, p.cell, p.cell_bits, p.adc_bits, p.subarray, p.technode)
    if settings.cellBit > trace.params["weight_bits"]:
        raise CimtoolError(f"--cell-bits {settings.cellBit} exceeds "
                           f"the trace's {trace.params['weight_bits']} "
                           "weight bits: NeuroSim needs cellBit ≤ WBITS (set --cell-bits)")
    found, origin = locate(p.neurosim)
    if found.is_file():
        binary, version, applied = found, fmt, False
        reporter.log(f"[yellow]note: running the given binary {found}: "
                     "its compiled Param.cpp holds, the card "
                     "and --cell/--cell-bits/--adc-bits/--subarray/--technode are not applied")
    else:
        version = source_version(found)
        if version != fmt:
            raise CimtoolError(f"{p.trace} is a {fmt} trace but {found} is NeuroSim {version}: write the "
                               f"trace with --format {version} or point --neurosim at a matching checkout")
        binary, applied = build(found, settings, cache_root(p.cache_dir), reporter.log), True
    output = StageOutput(KIND, out, root, f"{trace.path.name}-{card.name}", force,
                         inputs=[trace.path], started=t_start)
    out = output.path
    reporter.log(f"run-neurosim: {trace.path} ({len(layers)} layers) on NeuroSim from {origin} → {out}")

    params = {**asdict(p), "trace": str(trace.path), "neurosim_found": str(found), "origin": origin,
              "version": version, "settings": asdict(settings), "settings_applied": applied}
    with output.writer(params) as writer:
        with reporter.progress() as progress:
            task = progress.add_task("NeuroSim", total=len(layers), status="floorplan")

            def on_line(line: str) -> None:
                if "Estimation of Layer" in line:
                    progress.update(task, completed=int(line.split("Layer")[1].split()[0]) - 1,
                                    status=line.strip(" -\n"))
                elif "Summary" in line:
                    progress.update(task, completed=len(layers), status="summary")

            work = writer.scratch / "run"  # V2.1 writes its CSVs into the working directory
            (work / "NeuroSim_Results_Each_Epoch").mkdir(parents=True)
            # absolute paths: NeuroSim runs in a scratch directory
            argv = _argv(str(binary), trace, layers, version, lambda name: str(trace.file(name).resolve()))
            stdout = run_binary(argv, work, p.timeout, on_line,
                                settings.numRowSubArray if applied else None)
        writer.path("stdout.txt").write_text(stdout)
        for produced in [work / "NeuroSim_Output.csv", *work.glob("NeuroSim_Results_Each_Epoch/*.csv")]:
            if produced.is_file():
                shutil.copy2(produced, writer.path(produced.name))
        parsed = parse_stdout(stdout)
        missing = [m for m in ("chip_area_um2", "latency_ns", "tops_per_w") if parsed.chip_value(m) is None]
        if missing:
            raise CimtoolError(f"NeuroSim's output has no {', '.join(missing)}: not a DNN_NeuroSim run? "
                               "(its last line: "
                               f"{stdout.strip().splitlines()[-1] if stdout.strip() else '-'})")
        pq.write_table(pa.Table.from_pylist(parsed.chip), writer.path("summary.parquet"))
        pq.write_table(pa.Table.from_pylist([parsed.layers[k] for k in sorted(parsed.layers)]),
                       writer.path("layers.parquet"))
        pq.write_table(pa.Table.from_pylist(parsed.layer_lines), writer.path("layer_metrics.parquet"))
        writer.path("settings.json").write_text(json.dumps(
            {"settings": asdict(settings), "applied": applied, "card": card.to_dict(), "version": version,
             "arguments": _argv("main", trace, layers, version)[1:]}, indent=2, sort_keys=True, default=str)
            + "\n")
        summary = {m: parsed.chip_value(m) for m in HEADLINE}
        summary.update(layers=len(parsed.layers), device=card.name, cell_bits=settings.cellBit,
                       adc_levels=settings.levelOutput, subarray=settings.numRowSubArray,
                       settings_applied=applied)
        return output.commit(writer, [trace.as_input("trace")], summary)
