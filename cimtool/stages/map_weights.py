"""`cimtool map-weights`: a model's crossbar layers → conductance levels of a device card.

``--model`` is a model, qmodel or snn artifact; with an snn, ``--evaluate`` runs its spiking
network on the chips (``cimtool.nn.snn_chip``: the same chips, converters and scores as the
sweep's configuration of the same settings).

Writes a conductance-map artifact (``cmap``): ``cmap.parquet`` (one row per cell pair: layer, tile,
row, col, level_pos, level_neg, G_pos, G_neg, R_pos, R_neg; with ``--program`` also the
programmed conductances), ``layers.parquet`` (per-layer scale and placement), ``scales.parquet``
(per-column scale) and, with ``--evaluate``, ``evaluation.parquet`` (accuracy per condition and
Monte Carlo trial on the array simulator).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.checks import check_choice, check_range
from cimtool.data.calibration import CALIBRATION_SAMPLES, calibration_sample, check_calibration_samples
from cimtool.devices.card import DeviceCard
from cimtool.devices.cmap import (
    KIND,
    MappedModel,
    cell_table,
    layer_rows,
    map_loaded_model,
    resolve_card,
    scale_table,
)
from cimtool.errors import CimtoolError
from cimtool.models.io import model_splits, open_model, resolve_model
from cimtool.nn.array import ArrayConfig, ir_caveat
from cimtool.nn.snn_config import MAX_TIMESTEPS
from cimtool.nn.snn_spec import KIND as SNN_KIND
from cimtool.nn.snn_spec import open_snn
from cimtool.params import MapParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput, check_torch_device, resolve_device
from cimtool.stats import mean_std
from cimtool.ui import Reporter, plural

SPLITS = ("train", "val", "test")




def _program_chip(mapped: MappedModel, seed: int) -> dict[str, np.ndarray]:
    """Programmed conductances (write noise, D2D, stuck-at) of one chip, seeded, [2, rows, cols]."""
    import torch

    from cimtool.nn.array import program

    gen = torch.Generator().manual_seed(seed)
    return {name: program(torch.from_numpy(np.stack([lm.g_pos, lm.g_neg])), mapped.card,
                          ("d2d", "c2c", "stuck"), gen).numpy()
            for name, lm in mapped.maps.items()}


def array_config(p: MapParams, card: DeviceCard) -> ArrayConfig:
    """The simulation's converters and effects: the options given, the card's where not."""
    def pick(given, default):
        return default if given is None else given

    return ArrayConfig(effects=tuple(p.effects), adc_bits=pick(p.adc_bits, card.adc_bits),
                       scheme=pick(p.scheme, card.adc_scheme), input_bits=pick(p.input_bits, card.input_bits),
                       encoding=p.encoding, drift_time=p.drift_time)


def validate(p: MapParams) -> None:
    p.mapping.validate()
    check_choice("--split", p.split, SPLITS)
    check_range("--trials", p.trials, 1, 10_000)
    if not 0 <= p.seed < 2**32:
        raise CimtoolError(f"--seed must be in [0, 2**32), got {p.seed}")
    check_calibration_samples(p.calibration_samples)
    check_torch_device(p.torch_device)
    if p.timesteps is not None:
        check_range("--timesteps", p.timesteps, 1, MAX_TIMESTEPS)
    if not math.isfinite(p.drift_time):
        raise CimtoolError(f"--drift-time must be finite, got {p.drift_time}")
    # the card fills unset converter options later; validate what the user gave
    ArrayConfig(effects=tuple(p.effects), adc_bits=p.adc_bits, scheme=p.scheme or "B",
                input_bits=1 if p.input_bits is None else p.input_bits, encoding=p.encoding,
                drift_time=p.drift_time).validate()


def _evaluation(split: str, acc_float: float, acc_ideal: float, accs: list[float], config: ArrayConfig,
                extra: dict[str, Any], device) -> tuple[list[dict], dict[str, Any]]:
    """``evaluation.parquet``'s rows and the summary's accuracies: float, mapped ideal, each chip."""
    rows = [{"condition": "float", "trial": 0, "accuracy": acc_float},
            {"condition": "mapped_ideal", "trial": 0, "accuracy": acc_ideal}]
    rows += [{"condition": "mapped_nonideal", "trial": t, "accuracy": a} for t, a in enumerate(accs)]
    mean, std = mean_std(accs)
    summary = {"split": split, "accuracy_float": acc_float, "accuracy_mapped_ideal": acc_ideal,
               "accuracy_nonideal_mean": mean, "accuracy_nonideal_std": std, "trials": len(accs),
               "array_config": asdict(config), **extra, "torch_device": device.type}
    return rows, summary


def evaluate_snn_mapped(spiking, mapped: MappedModel, data: dict[str, Any], split: str, config: ArrayConfig,
                        trials: int, seed: int, steps: int, reporter: Reporter,
                        calibration_samples: int = CALIBRATION_SAMPLES,
                        device=None) -> tuple[list[dict], dict[str, Any]]:
    """The spiking network of an snn artifact: digital vs mapped (ideal) vs with ``config``'s effects
    (Monte Carlo) at ``steps`` timesteps on one split, as the sweep scores a configuration."""
    import torch

    from cimtool.nn.array import IDEAL
    from cimtool.nn.snn_chip import SpikingChips

    device = device or torch.device("cpu")
    sample, record = calibration_sample(data["train"], calibration_samples, seed)
    acc_float = spiking.network(device=device).accuracy(data[split], steps, seed)

    def chips(cfg: ArrayConfig) -> SpikingChips:
        return SpikingChips(spiking, mapped.maps, mapped.placements, mapped.card, cfg, sample, seed, device)

    acc_ideal = chips(IDEAL).scores(data[split], steps, 1).accuracies[0]
    with reporter.progress() as progress:
        task = progress.add_task("Monte Carlo (SNN)", total=trials, status="")
        accs = chips(config).scores(data[split], steps, trials, lambda t, a: progress.update(
            task, advance=1, status=f"acc {a:.4f}")).accuracies
    return _evaluation(split, acc_float, acc_ideal, accs, config, {**record, "timesteps": steps}, device)


def evaluate_mapped(model, mapped: MappedModel, data: dict[str, Any], split: str, config: ArrayConfig,
                    trials: int, seed: int, reporter: Reporter,
                    calibration_samples: int = CALIBRATION_SAMPLES,
                    device=None) -> tuple[list[dict], dict[str, Any]]:
    """Float vs mapped-ideal vs non-ideal accuracy (Monte Carlo) on one split; converters
    calibrated on a stratified sample of ``calibration_samples`` train items."""
    import torch

    from cimtool.nn.network import ArrayNetwork
    from cimtool.train.loop import evaluate_draws

    device = device or torch.device("cpu")
    sample, record = calibration_sample(data["train"], calibration_samples, seed)
    scored = evaluate_draws(model.to(device), data[split], device, seed)  # photon noise: mean ± std
    acc_float = scored["accuracy"]
    if "accuracy_std" in scored:
        record = {**record, "accuracy_float_std": scored["accuracy_std"],
                  "accuracy_float_draws": scored["accuracy_draws"], "eval_seed": scored["eval_seed"]}
    ideal = ArrayNetwork(model, mapped.maps, mapped.placements, mapped.card, ArrayConfig(), device)
    ideal.calibrate(sample)
    acc_ideal = ideal.accuracy(data[split], None)
    net = ArrayNetwork(model, mapped.maps, mapped.placements, mapped.card, config, device)
    net.calibrate(sample)
    reporter.log(f"[dim]array simulator on {device.type}: batches of {net.batch_size(len(data[split]))}, "
                 f"{plural(net.chips_per_pass(len(data[split]), trials), 'chip')} per pass[/dim]")
    with reporter.progress() as progress:
        task = progress.add_task("Monte Carlo", total=trials, status="")
        accs = net.trials(data[split], trials, seed,
                          lambda t, a: progress.update(task, advance=1, status=f"acc {a:.4f}"))
    return _evaluation(split, acc_float, acc_ideal, accs, config, record, device)


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    bits = s.get("weight_bits")
    cells = f"w{bits}" if bits else "the card's levels"
    if s.get("slices", 1) > 1:
        cells += f" as {s['slices']} cells per weight"
    geometry = f"{s['array_rows']}×{s['array_cols']} " if "array_rows" in s else ""
    line = (f"[green]cmap[/green] {artifact.path}  {s['device']}, {cells}: {s['n_cells']} cells on "
            f"{s['n_arrays']} {geometry}array(s)")
    if "accuracy_float" in s:
        effects = s["array_config"]["effects"]
        label = f"with {','.join(effects)}" if effects else "no effects"
        at = f" at T = {s['timesteps']}" if "timesteps" in s else ""
        trials = s["trials"]
        spread = f" ± {s['accuracy_float_std']:.4f}" if "accuracy_float_std" in s else ""
        line += (f"  {s['split']} accuracy{at}: float {s['accuracy_float']:.4f}{spread}, mapped ideal "
                 f"{s['accuracy_mapped_ideal']:.4f}, {label} {s['accuracy_nonideal_mean']:.4f} ± "
                 f"{s['accuracy_nonideal_std']:.4f} ({plural(trials, 'chip')})")
    for caveat in s.get("caveats", []):
        line += f"\n  [yellow]caveat:[/yellow] {caveat}"
    return line


def run(p: MapParams, out: Path | None, root: Path, force: bool, reporter: Reporter) -> artifacts.Artifact:
    validate(p)
    t_start = time.perf_counter()
    model_path = resolve_model(p.model, p.method, root, reporter)
    spiking = None
    if artifacts.load(model_path, verify=False).kind == SNN_KIND:
        spiking = open_snn(model_path)
        model_artifact, model, spec, source = spiking.artifact, spiking.model, spiking.arch, spiking.source
    else:
        if p.timesteps is not None:
            raise CimtoolError(f"--timesteps is for an snn artifact as --model; {model_path} is not one")
        model_artifact, model, spec = open_model(model_path)
        source = model_artifact
    device_name, card = resolve_card(p.mapping.device, [model_artifact], reporter.log)
    p = replace(p, mapping=replace(p.mapping, device=device_name))
    mapped = map_loaded_model(model, spec, p.mapping, reporter, card)
    if model_artifact.kind == "qmodel" and model_artifact.params.get("mapping") != asdict(p.mapping):
        reporter.log(f"[yellow]note: this qmodel was trained for the mapping "
                     f"{model_artifact.params.get('mapping')}; mapping it with {asdict(p.mapping)}")
    p = replace(p, model=str(model_path))
    data = None
    if p.evaluate:
        data = model_splits(source, p.data_dir)
    bits = p.mapping.weight_bits
    name = f"{model_path.name}-{mapped.card.name}-{f'w{bits}' if bits else 'card'}"
    inputs = [model_path] if spiking is None else [model_path, source.path]  # an snn: its model's weights
    output = StageOutput(KIND, out, root, name, force, inputs=inputs, started=t_start)
    out = output.path
    device = resolve_device(p.torch_device)
    params = {**asdict(p), "torch_device": device.type, "card": mapped.card.to_dict(),
              "n_levels": len(next(iter(mapped.maps.values())).grid)}
    reporter.log(f"map-weights: {len(mapped.maps)} crossbar layer(s) of {model_path} onto "
                 f"'{mapped.card.name}' ({params['n_levels']} {mapped.card.spacing} levels) → {out}")
    with output.writer(params) as writer:
        programmed = _program_chip(mapped, p.seed) if p.program else None
        pq.write_table(cell_table(mapped, programmed), writer.path("cmap.parquet"))
        layers = layer_rows(mapped, p.mapping)
        pq.write_table(pa.Table.from_pylist(layers), writer.path("layers.parquet"))
        pq.write_table(scale_table(mapped), writer.path("scales.parquet"))
        summary: dict[str, Any] = {
            "device": mapped.card.name, "n_levels": params["n_levels"], "weight_bits": bits,
            "slices": layers[0]["slices"], "array_rows": p.mapping.array_rows,
            "array_cols": p.mapping.array_cols, "layers": [r["layer"] for r in layers],
            "n_cells": int(sum(2 * r["rows"] * r["cols"] * r["slices"] for r in layers)),
            "n_arrays": int(sum(r["n_arrays"] for r in layers)),
            "programmed": p.program, "caveats": [],
        }
        if p.evaluate and "ir" in p.effects:
            caveat = ir_caveat(mapped.maps, mapped.placements, mapped.card.wire_resistance)
            if caveat:
                reporter.log(f"[yellow]warning: {caveat}")
                summary["caveats"].append(caveat)
        if p.evaluate and "drift" in p.effects and p.drift_time <= mapped.card.drift_t0:
            reporter.log(f"[yellow]note: --drift-time {p.drift_time:g} s is not after the card's drift t0 "
                         f"({mapped.card.drift_t0:g} s): no drift")
        if p.evaluate and spiking is not None:
            rows, acc = evaluate_snn_mapped(spiking, mapped, data, p.split, array_config(p, mapped.card),
                                            p.trials, p.seed, p.timesteps or spiking.config.timesteps,
                                            reporter, p.calibration_samples, device)
        elif p.evaluate:
            rows, acc = evaluate_mapped(model, mapped, data, p.split, array_config(p, mapped.card),
                                        p.trials, p.seed, reporter, p.calibration_samples, device)
        if p.evaluate:
            pq.write_table(pa.Table.from_pylist(rows), writer.path("evaluation.parquet"))
            summary.update(acc)
        roles = [model_artifact.as_input("model")] if spiking is None else \
            [model_artifact.as_input("snn"), source.as_input("model")]
        return output.commit(writer, roles, summary)
