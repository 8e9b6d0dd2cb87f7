"""`cimtool run-neurosim`: build DNN+NeuroSim for a device card and run it on a trace.

Locates NeuroSim (``cimtool.neurosim.build``), sets ``Param.cpp`` from the card and options so
that NeuroSim and cimtool's simulator describe the same chip (R_on = 1/g_max, R_off = 1/g_min,
read voltage, bits per cell, ADC levels, subarray size, technology node, cell type), builds it
once per settings, runs it with an argument list (no shell) under a timeout, and parses stdout.

The subarray is ``--subarray`` (or the largest NeuroSim's floorplan accepts), or with ``--cmap`` the
arrays of that conductance map, cell for cell (``build.neurosim_geometry``: refused, with the
nearest geometry both accept, where NeuroSim cannot take it). The summary says what dominates
latency, energy and area and on what the figures rest (``caveats``: ``cimtool.neurosim.caveats``).

Writes a ``neurosim`` artifact: ``stdout.txt`` (raw), ``summary.parquet`` (chip metrics: metric,
value, unit, stdout line; line null for what is derived from them, the leakage energy of every tile),
``layers.parquet`` (one row per layer), ``layer_metrics.parquet`` (per layer, long form with stdout
lines) and ``settings.json`` (what NeuroSim was built with).

V2.1 (training) figures are per epoch of ``--train-batch`` × ``--iterations`` images (default: the
on-chip run's, else V2.1's 200 × 250), split into forward, activation gradient, weight gradient and
weight update (``--training-estimation off``: inference only); its "FPS" is epochs per second. V2.1
runs cellBit = the trace's WBITS, the only precision at which it maps the trained weights, and the
card's write pulses (``build.check_v21_precision``, ``build.write_pulses``); these options are
refused for V1.x, and records V2.1's training estimate cannot compute are refused before it is
built (``build.check_v21``). V2.1's subarrays have at least 32 columns (``build.v21_columns``).

A V2.1 trace of an on-chip training holds a record per recorded epoch: ``--epochs all`` (default)
runs V2.1 on each, as its ``train.py`` does every epoch, and writes ``epochs.parquet`` (one row per
epoch: total, forward, activation-gradient, weight-gradient and weight-update latency and energy,
DRAM transfers, leakage, TOPS/W; ``NeuroSim_Breakdown_Epock_<e>.csv`` and
``stdout_epoch<e>.txt`` beside); ``--epochs last`` the last only. Everything else (``stdout.txt``,
the tables, the summary) is the last epoch's.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.errors import CimtoolError
from cimtool.params import RunParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput
from cimtool.ui import Reporter, plural

KIND = "neurosim"
# RunParams of V2.1's training estimate only (its Param.cpp, and the epochs it prices)
_V21_ONLY = ("training_estimation", "train_batch", "iterations", "epochs")
CHIPS = ("card", "release")
EPOCHS = ("all", "last")  # --epochs: price every epoch the trace recorded, or its last
_CARD_OPTIONS = ("device", "cell", "cell_bits", "adc_bits", "technode")  # what --chip card sets


def _release_chip(p: RunParams, source, version, training: dict):
    """(settings, the names cimtool sets, the release's Param.cpp values) of ``--chip release``: the
    release's own chip; cimtool sets the subarray only (and V2.1's training-estimate options)."""
    from cimtool.neurosim.build import CHIP_SETTINGS, TRAINING, NeuroSimSettings, release_values

    given = [f"--{f.replace('_', '-')}" for f in _CARD_OPTIONS if getattr(p, f) != getattr(RunParams, f)]
    if given:
        raise CimtoolError(f"{', '.join(given)}: --chip release runs the release's own Param.cpp; give "
                           "--chip card to set the chip")
    if source.is_file():
        raise CimtoolError(f"--chip release needs a NeuroSim source, not the binary {source} (a built "
                           "binary already runs with its own Param.cpp)")
    release = release_values(source, CHIP_SETTINGS)
    defaults = NeuroSimSettings(trainingEstimation=training["training"], batchSize=training["train_batch"],
                                numIteration=training["iterations"])
    base = dataclasses.replace(defaults, **{k: type(getattr(defaults, k))(v) for k, v in release.items()
                                            if v is not None})
    # V1.4+ takes the subarray's rows on its command line and keeps Param.cpp's columns, as its own
    # inference.py --subArray does; V1.3 and V2.1 have both in Param.cpp
    names = () if version.subarray_on_argv else ("numRowSubArray", "numColSubArray")
    return base, names + (TRAINING if version.key == "v21" else ()), release


def _v21_subarray(settings, network: list[list[float]], weight_bits: int, cmap, log):
    """``settings`` with V2.1's subarray columns (``build.v21_columns``): refused for a cmap's arrays,
    which the subarray is cell for cell."""
    from cimtool.neurosim.build import v21_columns

    rows = settings.numRowSubArray
    cols = v21_columns(network, rows, weight_bits, settings.cellBit)
    if cols == rows:
        return settings
    if cmap is not None:
        raise CimtoolError(f"--cmap {cmap.path}: NeuroSim V2.1 needs subarrays of >= {cols} columns, the "
                           f"cmap's arrays have {rows}; give --subarray instead")
    log(f"[yellow]note: NeuroSim V2.1 runs {rows}x{cols} subarrays: its floorplan takes {rows} rows, its "
        f"flip-flops need >= {cols} columns")
    return dataclasses.replace(settings, numColSubArray=cols)


def training_options(p: RunParams, onchip: dict) -> dict:
    """V2.1's training estimate: an epoch of the on-chip run's batch × iterations (``onchip``: the
    trace's ``onchip_training``), where --train-batch and --iterations are not given; else V2.1's
    release (200 × 250)."""
    from cimtool.neurosim.build import ITERATIONS, TRAIN_BATCH

    return dict(training=p.training_estimation == "on",
                train_batch=p.train_batch or onchip.get("train_batch", TRAIN_BATCH),
                iterations=p.iterations or onchip.get("iterations", ITERATIONS))


def training_sources(p: RunParams, onchip: dict) -> dict[str, str]:
    """Where ``training_options`` took the batch and the iterations from."""
    return {k: f"--{k.replace('_', '-')}" if getattr(p, k) else "the on-chip run" if k in onchip
            else "V2.1's release" for k in ("train_batch", "iterations")}


def _cmap_subarray(p: RunParams, network: list[list[float]], weight_bits: int, cell_bits: int,
                   log) -> tuple[artifacts.Artifact, int]:
    """(the cmap, its subarray): the cmap's arrays, refused where NeuroSim's floorplan cannot take them."""
    from cimtool.neurosim.build import neurosim_geometry

    cmap = artifacts.load(p.cmap, "cmap")
    mapping = cmap.params.get("mapping") or {}
    try:
        rows, cols = int(mapping["array_rows"]), int(mapping["array_cols"])
    except (KeyError, TypeError, ValueError):
        raise CimtoolError(f"--cmap {cmap.path}: its manifest records no array geometry "
                           "(params.mapping.array_rows, array_cols)") from None
    subarray, note = neurosim_geometry(network, weight_bits, cell_bits, rows, cols)
    if note:
        raise CimtoolError(f"--cmap {cmap.path}: {note}: re-run map-weights with --array-rows {subarray} "
                           f"--array-cols {subarray}")
    mapped_bits = mapping.get("weight_bits")
    if mapped_bits is not None and mapped_bits != weight_bits:
        log(f"[yellow]note: --cmap {cmap.path} maps {mapped_bits}-bit weights, the trace has {weight_bits} "
            f"(NeuroSim's WBITS): neurosim-trace --weight-bits {mapped_bits} describes the mapped chip")
    return cmap, subarray


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    leakage = f" + leakage {s['leakage_energy_pj']:.4g} pJ" if s.get("leakage_energy_pj") is not None else ""
    source = " auto" if s.get("subarray_auto") else (", as the cmap" if s.get("cmap") else "")
    per = " per epoch" if s.get("epochs_per_s") is not None else ""
    rate = (f"{s['epochs_per_s']:.4g} epochs/s (of {s['train_batch']} x {s['iterations']} images)" if per
            else f"{s['fps']:.4g} FPS")
    priced = s.get("epochs") or []
    if len(priced) > 1:
        rate += f"; epoch {priced[-1]}, the last of {len(priced)} priced (epochs.parquet)"
    return (f"[green]neurosim[/green] {artifact.path}  area {s['chip_area_um2']:.4g} um^2, "
            f"latency{per} {s['latency_ns']:.4g} ns, dynamic energy{per} {s['dynamic_energy_pj']:.4g} pJ"
            f"{leakage}, {s['tops_per_w']:.4g} TOPS/W, {rate} (NeuroSim {s.get('neurosim_version', '?')}, "
            f"{s['subarray']}x{s.get('subarray_cols', s['subarray'])} subarrays{source})"
            + "".join(f"\n  {caveat}" for caveat in s.get("caveats", [])))


def run(p: RunParams, out: Path | None, root: Path, force: bool, reporter: Reporter) -> artifacts.Artifact:
    from cimtool.checks import check_choice
    from cimtool.devices.cmap import resolve_card
    from cimtool.neurosim.build import (
        BY_KEY,
        NeuroSimSettings,
        auto_subarray,
        build,
        cache_root,
        check_v21,
        check_v21_precision,
        locate,
        setting_env,
        source_version,
    )
    from cimtool.neurosim.caveats import explain
    from cimtool.neurosim.record import V21_EPOCH, epoch_folder
    from cimtool.neurosim.results import EPOCH_METRICS, TRAINING_METRICS, parse_stdout
    from cimtool.neurosim.results import run as run_binary
    from cimtool.neurosim.runner import HEADLINE, argv, check_complete, check_physical, fitting, network_rows

    if not p.timeout > 0:
        raise CimtoolError(f"--timeout must be > 0 seconds, got {p.timeout}")
    t_start = time.perf_counter()
    trace = artifacts.load(p.trace, "trace")  # every layer file present and unchanged
    layers = pq.read_table(trace.file("layers.parquet")).to_pylist()
    fmt = trace.params.get("format", "v13")
    card = None
    if p.chip == "card":  # --chip release runs the release's own chip, no card
        inputs = [artifacts.load(p.cmap, "cmap")] if p.cmap is not None else [trace]
        device_name, card = resolve_card(p.device, inputs, reporter.log)
        p = dataclasses.replace(p, device=device_name)
    network = network_rows(trace.file("NetWork.csv"), len(layers))
    check_choice("--training-estimation", p.training_estimation, ("on", "off"))
    check_choice("--chip", p.chip, CHIPS)
    if p.cmap is not None and p.subarray is not None:
        raise CimtoolError(f"--cmap {p.cmap} and --subarray {p.subarray} both set the subarray: give one")
    if p.cmap is not None and p.chip == "release":
        raise CimtoolError(f"--cmap {p.cmap}: a cmap describes the card's chip, --chip release the release's "
                           "own Param.cpp; give --chip card, or --subarray")
    found, origin = locate(p.neurosim)
    if p.cmap is not None and found.is_file():
        raise CimtoolError(f"--cmap {p.cmap}: the binary {found} runs its compiled subarray; give a NeuroSim "
                           "source to run on the cmap's arrays")
    version = BY_KEY[fmt] if found.is_file() else source_version(found)
    given = [f"--{f.replace('_', '-')} {getattr(p, f)}" for f in _V21_ONLY
             if getattr(p, f) != getattr(RunParams, f)]
    if version.key != "v21" and given:
        raise CimtoolError(f"{' '.join(given)}: options of V2.1's training estimate; NeuroSim "
                           f"{version.name} estimates inference only")
    check_choice("--epochs", p.epochs, EPOCHS)
    recorded_epochs = trace.summary.get("epochs") or [V21_EPOCH]  # a V2.1 trace's on-chip epochs
    priced = recorded_epochs[-1:] if p.epochs == "last" else recorded_epochs
    wbits = trace.params["weight_bits"]
    onchip = trace.summary.get("onchip_training") or {}  # the run V2.1's epoch is priced as
    training = training_options(p, onchip)
    cell_bits = p.cell_bits
    if version.key == "v21" and cell_bits is None and p.chip == "card" and p.cell != "sram":
        cell_bits = wbits  # V2.1 maps trained weights onto one cell each (build.check_v21_precision)
        if wbits != card.cell_bits:
            reporter.log(f"[yellow]note: NeuroSim V2.1 runs cellBit {wbits}, the trace's weight bits (the "
                         f"card '{card.name}' holds {card.cell_bits} bits per cell): V2.1 maps a weight "
                         "onto one cell only when they are equal")
    if p.chip == "release":
        base, names, release = _release_chip(p, found, version, training)
    else:
        base = NeuroSimSettings.from_card(card, p.cell, cell_bits, p.adc_bits, 128, p.technode, **training,
                                          wire_width=version.wire_width)
        names, release = version.patched, {}
    if p.cmap is not None:
        cmap, subarray = _cmap_subarray(p, network, wbits, base.cellBit, reporter.log)
    else:
        cmap, subarray = None, p.subarray or auto_subarray(network, wbits, base.cellBit)
    cols = base.numColSubArray if p.chip == "release" and version.subarray_on_argv else subarray
    settings = dataclasses.replace(base, numRowSubArray=subarray, numColSubArray=cols)
    if settings.cellBit > trace.params["weight_bits"]:
        raise CimtoolError(f"cellBit {settings.cellBit} exceeds the trace's {trace.params['weight_bits']} "
                           "weight bits: NeuroSim needs cellBit ≤ WBITS (set --cell-bits, or more "
                           "--weight-bits in neurosim-trace)")
    if found.is_file():
        binary, applied = found, False
        reporter.log(f"[yellow]note: running the given binary {found} as NeuroSim {version.name}: "
                     "its compiled Param.cpp holds, the card "
                     "and --cell/--cell-bits/--adc-bits/--subarray/--technode are not applied")
    else:
        if version.trace != fmt:
            raise CimtoolError(f"{p.trace} is a {fmt} trace but {found} is NeuroSim {version.name}: write "
                               f"the trace with --format {version.trace} or point --neurosim at a matching "
                               "checkout")
        if version.key == "v21":  # a given binary has its own Param.cpp
            check_v21_precision(settings, wbits, p.cell_bits is not None)
            check_v21(network, settings.trainingEstimation, settings.batchSize, settings.cellBit)
            settings = _v21_subarray(settings, network, wbits, cmap, reporter.log)
            cols = settings.numColSubArray
        binary = build(found, cache_root(p.cache_dir), reporter.log, version.patched)
        applied = True
    chip_name = card.name if p.chip == "card" else f"release-{version.key}"
    output = StageOutput(KIND, out, root, f"{trace.path.name}-{chip_name}", force,
                         inputs=[trace.path] + ([cmap.path] if cmap else []), started=t_start)
    out = output.path
    auto = f" (the arrays of {cmap.path})" if cmap else " (auto)" if p.subarray is None else ""
    reporter.log(f"run-neurosim: {trace.path} ({plural(len(layers), 'layer')}) on NeuroSim {version.name} "
                 f"from {origin}, {subarray}x{cols} subarrays{auto}, chip: {chip_name} → {out}")

    recorded = {k: v for k, v in asdict(settings).items() if k in names}
    params = {**asdict(p), "trace": str(trace.path), "cmap": str(cmap.path) if cmap else None,
              "neurosim_found": str(found), "origin": origin,
              "version": version.key, "settings": recorded, "settings_applied": applied,
              "card": card.to_dict() if p.chip == "card" else None}
    with output.writer(params) as writer:
        bits = trace.params["weight_bits"], trace.params["input_bits"]
        env = setting_env(settings, names) if applied else None
        work = writer.scratch / "run"  # V2.1 writes its CSVs into the working directory, one per epoch
        (work / "NeuroSim_Results_Each_Epoch").mkdir(parents=True)
        stdouts: dict[int, str] = {}
        with reporter.progress() as progress:
            task = progress.add_task("NeuroSim", total=len(layers) * len(priced), status="floorplan")
            for n, epoch in enumerate(priced):
                done = n * len(layers)
                label = f"epoch {epoch}: " if len(priced) > 1 else ""

                def on_line(line: str, done=done, label=label) -> None:
                    if "Estimation of Layer" in line:
                        progress.update(task, completed=done + int(line.split("Layer")[1].split()[0]) - 1,
                                        status=label + line.strip(" -\n"))
                    elif "Summary" in line:
                        progress.update(task, completed=done + len(layers), status=label + "summary")

                folder = epoch_folder(epoch, recorded_epochs[-1])

                def record_path(name: str, folder=folder) -> str:  # absolute: NeuroSim runs in scratch
                    return str(trace.file(f"{folder}/{name}" if folder else name).resolve())

                rows = pq.read_table(record_path("layers.parquet")).to_pylist() if folder else layers
                args = argv(str(binary), *bits, rows, version, subarray, record_path, epoch)
                stdouts[epoch] = run_binary(args, work, p.timeout, on_line,
                                            settings.numRowSubArray if applied else None,
                                            fitting(network, bits[0], settings.cellBit), env)
        for produced in [work / "NeuroSim_Output.csv", *work.glob("NeuroSim_Results_Each_Epoch/*.csv")]:
            if produced.is_file():
                shutil.copy2(produced, writer.path(produced.name))
        per_epoch = []
        for epoch, text in stdouts.items():
            writer.path("stdout.txt" if epoch == priced[-1] else f"stdout_epoch{epoch}.txt").write_text(text)
            parsed = parse_stdout(text)
            check_complete(parsed, text)
            check_physical(parsed, text)
            per_epoch.append({"epoch": epoch, **{m: parsed.chip_value(m) for m in EPOCH_METRICS}})
        if version.key == "v21":  # figures per epoch of train_batch × iterations images, as train.py's rows
            pq.write_table(pa.Table.from_pylist(per_epoch), writer.path("epochs.parquet"))
        parsed = parse_stdout(stdouts[priced[-1]])  # the manifest and summary: the last epoch
        pq.write_table(pa.Table.from_pylist(parsed.chip), writer.path("summary.parquet"))
        pq.write_table(pa.Table.from_pylist([parsed.layers[k] for k in sorted(parsed.layers)]),
                       writer.path("layers.parquet"))
        pq.write_table(pa.Table.from_pylist(parsed.layer_lines), writer.path("layer_metrics.parquet"))
        writer.path("settings.json").write_text(json.dumps(
            {"settings": recorded, "applied": applied, "version": version.key, "chip": p.chip,
             **({"card": card.to_dict()} if p.chip == "card" else {"release_param_cpp": release}),
             "patched": list(names) if applied else [], "subarray_auto": p.subarray is None and not cmap,
             "arguments": argv("main", *bits, layers, version, subarray, epoch=priced[-1])[1:]},
            indent=2, sort_keys=True, default=str)
            + "\n")
        kept = (*HEADLINE, "neurosim_leakage_energy_pj", "leakage_power_uw")
        summary = {m: parsed.chip_value(m) for m in kept}
        summary.update(layers=len(parsed.layers), device=chip_name, chip=p.chip, cell_bits=settings.cellBit,
                       adc_levels=settings.levelOutput, subarray=settings.numRowSubArray,
                       subarray_cols=settings.numColSubArray,
                       subarray_auto=p.subarray is None and not cmap, neurosim_version=version.name,
                       settings_applied=applied, array_rows=settings.numRowSubArray,
                       array_cols=settings.numColSubArray, cmap=str(cmap.path) if cmap else None,
                       **explain(parsed, settings if applied else None, version.key == "v21"))
        if version.key == "v21":  # figures per epoch of train_batch × iterations images
            summary.update(training_estimation=p.training_estimation, train_batch=settings.batchSize,
                           iterations=settings.numIteration,
                           training_from=training_sources(p, onchip), epochs=priced,
                           epochs_per_s=summary["fps"] if settings.trainingEstimation else None,
                           dram_energy_pj=parsed.chip_value("dram_energy_pj"),
                           dram_latency_ns=parsed.chip_value("dram_latency_ns"),
                           **{m: parsed.chip_value(m) for m in TRAINING_METRICS})
        roles = [trace.as_input("trace")] + ([cmap.as_input("cmap")] if cmap else [])
        return output.commit(writer, roles, summary)
