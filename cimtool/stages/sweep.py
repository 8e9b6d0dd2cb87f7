"""`cimtool sweep`: the full design-space sweep on the array simulator (docs/physics.md#energy-model).

Every configuration method × scheme (A/B) × ADC bits × weight bits × timesteps runs the spiking
network on simulated arrays of one device card (its non-idealities, ``--trials`` chips each; the
same chips for every configuration) and is scored on val. Best case = the highest mean val
accuracy; recommendation = the cheapest configuration (``cimtool.devices.cost``) whose val
accuracy is within ``--tolerance`` points of the best. Only those two are then evaluated on test,
once each.

The inputs are models (``--method``: the newest model per front-end; ``--model``: model, qmodel or
snn artifacts). An snn artifact brings its thresholds, neuron and encoding; a plain model is
converted with the default spiking settings and thresholds at ``r·P_p`` = 1 × P_99.9.

``--cost neurosim`` ranks by NeuroSim instead (docs/physics.md#neurosim-in-the-sweep): per model and
weight bits, the V1.3 layer record of one timestep of its spiking network (one bit per input, the
spikes of a step; ``cimtool.neurosim.record.write_spike_record``), run on one NeuroSim build per
(weight bits → WBITS and cellBit, ADC bits → levelOutput), the chip set at start-up and the figures
cached by settings. Energy per inference = T × (dynamic + leakage energy of one step); the readout
scheme does not change NeuroSim's chip, so equal NeuroSim energies fall back to the cost model.

Writes a ``sweep`` artifact: ``sweep.parquet`` (one row per configuration), ``selection.parquet``
(best and recommended, with their test accuracy) and, with ``--cost neurosim``, ``neurosim.parquet``
(one row per NeuroSim run) with the records and stdouts under ``neurosim/``.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.checks import check_choice, check_range
from cimtool.data.calibration import check_calibration_samples
from cimtool.errors import CimtoolError
from cimtool.executors import ExecutorConfig, open_executor
from cimtool.models.io import find_model
from cimtool.nn.snn_spec import Candidate, load_candidate
from cimtool.params import SweepParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput, check_torch_device, resolve_device
from cimtool.ui import Reporter

KIND = "sweep"
COSTS = ("model", "neurosim")
ENERGY = {"model": "energy_pj", "neurosim": "neurosim_energy_pj"}  # what ranks the configurations


def validate(p: SweepParams) -> None:
    from cimtool.devices.mapping import check_placement
    from cimtool.nn.array import ArrayConfig

    for scheme in p.schemes:
        ArrayConfig(scheme=scheme).validate()
    for bits in p.adc_bits:
        ArrayConfig(adc_bits=bits).validate()
    for bits in p.weight_bits:
        check_range("--weight-bits", bits, 1, 15)
    for steps in p.timesteps:
        check_range("--timesteps", steps, 1, 100_000)
    ArrayConfig(effects=p.effects).validate()
    check_calibration_samples(p.calibration_samples)
    check_torch_device(p.torch_device)
    check_range("--trials", p.trials, 1, 1000)
    if not (math.isfinite(p.tolerance) and p.tolerance >= 0):
        raise CimtoolError(f"--tolerance must be >= 0 accuracy points, got {p.tolerance}")
    check_placement(p.array_rows, p.array_cols, "interleaved")
    if p.models and p.methods != SweepParams().methods:
        raise CimtoolError("--method chooses the models to sweep when --model is not given; with --model "
                           "it has no effect: give one or the other")
    if not 0 <= p.seed < 2**32:
        raise CimtoolError(f"--seed must be in [0, 2**32), got {p.seed}")
    check_choice("--cost", p.cost, COSTS)
    if not p.neurosim_timeout > 0:
        raise CimtoolError(f"--neurosim-timeout must be > 0 seconds, got {p.neurosim_timeout}")


def _layer_shapes(model, spec: dict[str, Any], sample) -> list:
    """Rows, columns and array reads per step (output pixels) of each crossbar layer."""
    import torch

    from cimtool.devices.cost import LayerShape
    from cimtool.train.batching import to_float

    outputs: dict[str, tuple[int, ...]] = {}
    hooks = [model.get_submodule(layer["name"]).register_forward_hook(
        lambda _m, _i, out, name=layer["name"]: outputs.__setitem__(name, tuple(out.shape)))
        for layer in spec["crossbar_layers"]]
    try:
        with torch.no_grad():
            model(to_float(sample[:1]))
    finally:
        for hook in hooks:
            hook.remove()
    return [LayerShape(layer["rows"], layer["cols"],
                       int(np.prod(outputs[layer["name"]][2:])) if layer["type"] == "conv2d" else 1)
            for layer in spec["crossbar_layers"]]


def _same_val_split(candidates: list[Candidate]) -> None:
    import torch

    first = candidates[0]
    for other in candidates[1:]:
        a, b = first.data["val"], other.data["val"]
        if a.x.shape != b.x.shape or not torch.equal(a.x, b.x) or not torch.equal(a.y, b.y):
            raise CimtoolError(f"{other.spiking.artifact.path} was trained on another data set or split "
                               f"than {first.spiking.artifact.path}: their val accuracies cannot be compared")


def select(rows: list[dict[str, Any]], tolerance_points: float,
           energy: str = "energy_pj") -> tuple[dict[str, Any], dict[str, Any]]:
    """(best case, recommendation): the highest mean val accuracy (ties: cheaper), and the cheapest
    configuration by ``energy`` within ``tolerance_points`` of it (ties: the cost model's energy, then
    fewer weight bits, ADC bits, timesteps)."""
    def cost(r: dict[str, Any]) -> tuple:
        return (r[energy], r["energy_pj"], r["weight_bits"], r["adc_bits"], r["timesteps"], r["scheme"])

    best = min(rows, key=lambda r: (-r["val_mean"], *cost(r)))
    floor = best["val_mean"] - tolerance_points / 100 - 1e-12
    recommended = min((r for r in rows if r["val_mean"] >= floor), key=cost)
    return best, recommended


def _mapped(cand: Candidate, card, weight_bits: int, p: SweepParams):
    """(maps, placements) of the candidate's crossbar layers on 2^weight_bits levels of the card."""
    from cimtool.devices.mapping import Placement, card_grid
    from cimtool.nn.network import map_model

    maps = map_model(cand.spiking.model, cand.spiking.arch, card_grid(card, weight_bits))
    return maps, {n: Placement(*m.shape, p.array_rows, p.array_cols, "interleaved") for n, m in maps.items()}


def _config(p: SweepParams, card, scheme: str, adc_bits: int):
    from cimtool.nn.array import ArrayConfig

    return ArrayConfig(effects=p.effects, adc_bits=adc_bits, scheme=scheme, input_bits=card.input_bits)


class _Evaluator:
    """Spiking network of one candidate on one mapping and converter setting, over chips and T."""

    def __init__(self, cand: Candidate, maps, placements, card, config, p: SweepParams, device) -> None:
        from cimtool.nn.network import ArrayNetwork

        arrays = ArrayNetwork(cand.spiking.model, maps, placements, card, config, device)
        self.snn = cand.spiking.network(arrays.model, device)
        self.snn.calibrate_converters(cand.calibration, max(p.timesteps), p.seed)
        self.trials, self.seed, self.device = p.trials, p.seed, device

    def accuracies(self, data, steps: int) -> list[float]:
        import torch

        accs = []
        for trial in range(self.trials):  # the same chips for every configuration
            self.snn.program(torch.Generator(self.device).manual_seed(self.seed * 1_000_003 + trial))
            accs.append(self.snn.accuracy(data, steps, seed=self.seed + trial))
        return accs


EXECUTION = ("executor", "address", "workers")  # how the sweep runs, not what it computes


@dataclass(frozen=True)
class _Unit:
    """One mapping and converter setting of one model, scored at every T on every chip: the sweep's
    unit of work (one Ray task with ``--executor ray``) and of its cache."""

    candidate: int
    weight_bits: int
    scheme: str
    adc_bits: int


@dataclass
class _Shared:
    """What every unit reads, sent once to each worker."""

    candidates: list[Candidate]  # their val split and calibration sample only
    card: Any
    p: SweepParams
    device: str


def _unit_accuracies(shared: _Shared, unit: _Unit) -> list[list[float]]:
    """Val accuracy of each chip at each of ``--timesteps``: one unit, wherever it runs."""
    import torch

    cand, p, card = shared.candidates[unit.candidate], shared.p, shared.card
    ev = _Evaluator(cand, *_mapped(cand, card, unit.weight_bits, p), card,
                    _config(p, card, unit.scheme, unit.adc_bits), p, torch.device(shared.device))
    return [ev.accuracies(cand.data["val"], steps) for steps in p.timesteps]


def _fingerprint(cand: Candidate) -> dict[str, str]:
    """What a candidate's units depend on besides the settings: its artifact and the data it reads."""
    import hashlib

    def sha(*tensors) -> str:
        digest = hashlib.sha256()
        for t in tensors:
            digest.update(t.contiguous().numpy().tobytes())
        return digest.hexdigest()

    val = cand.data["val"]
    return {"artifact": cand.spiking.artifact.manifest_sha256(), "val": sha(val.x, val.y),
            "calibration": sha(cand.calibration.x)}


def _unit_keys(units: list[_Unit], candidates: list[Candidate], card, p: SweepParams,
               device: str) -> list[str]:
    from cimtool.unit_cache import unit_key

    prints = [_fingerprint(c) for c in candidates]
    settings = {k: getattr(p, k) for k in ("timesteps", "effects", "trials", "array_rows", "array_cols",
                                           "seed", "calibration_samples")}
    return [unit_key(model=prints[u.candidate], unit={**asdict(u), "candidate": None}, card=card.to_dict(),
                     settings=settings, device=device) for u in units]


def _lean(cand: Candidate) -> Candidate:
    """The candidate as a worker needs it: without the train and test splits."""
    return replace(cand, data={"val": cand.data["val"]})


class _ChipCost:
    """NeuroSim's chip figures per (model, weight bits, ADC bits): ``--cost neurosim``.

    One build of the given inference release serves every point (settings read at start-up); the
    points of one model run side by side, one NeuroSim process per core, each cached by settings."""

    def __init__(self, p: SweepParams, card, log) -> None:
        from cimtool.neurosim.build import build, cache_root, locate, source_version

        found, origin = locate(p.neurosim)
        if found.is_file():
            raise CimtoolError(f"--cost neurosim needs a NeuroSim source, not the binary {found}: it sets "
                               "each configuration's chip (weight bits, ADC bits, card) in Param.cpp")
        self.version = source_version(found)
        if self.version.trace != "v13":
            raise CimtoolError(f"{found} is NeuroSim {self.version.name}, an on-chip training estimator: "
                               "--cost neurosim estimates inference (give a V1.3 or V1.4/V1.5 checkout)")
        self.cache = cache_root(p.cache_dir)
        self.binary = build(found, self.cache, log, self.version.patched)
        self.card, self.p = card, p
        self.card_bits = card.cell_bits
        self.label = f"NeuroSim {self.version.name} ({origin})"

    def points(self, cand: Candidate, ci: int, directory: Path, progress, task) -> dict[tuple, dict]:
        """{(weight bits, ADC bits): figures} of one model; records and stdouts go to ``directory``."""
        from cimtool.neurosim.build import NeuroSimSettings, auto_subarray
        from cimtool.neurosim.record import NETWORK, write_spike_record
        from cimtool.neurosim.runner import estimate, network_rows
        from cimtool.train.batching import to_float

        net, p = cand.spiking, self.p
        jobs = []
        for wbits in p.weight_bits:
            record = directory / f"m{ci}-w{wbits}"
            record.mkdir(parents=True, exist_ok=True)  # a resumed sweep writes it again
            layers = write_spike_record(net.model, net.arch, to_float(cand.data["val"].x[:1]), net.thetas,
                                        net.input_range, wbits, record, p.seed)
            cell_bits = min(self.card_bits, wbits)  # NeuroSim: cellBit ≤ WBITS
            subarray = auto_subarray(network_rows(record / NETWORK, len(layers)), wbits, cell_bits)
            for abits in p.adc_bits:
                settings = NeuroSimSettings.from_card(self.card, "rram", cell_bits, abits, subarray,
                                                      p.technode)
                jobs.append((wbits, abits, record, layers, settings))

        def one(job) -> tuple[tuple, dict]:
            wbits, abits, record, layers, settings = job
            est = estimate(self.binary, self.version, record, wbits, 1, layers, settings,
                           p.neurosim_timeout, self.cache / "estimates")
            (record / f"adc{abits}.stdout.txt").write_text(est.stdout)
            progress.update(task, advance=1, status=f"w{wbits} adc{abits}")
            return (wbits, abits), {"candidate": ci, "weight_bits": wbits, "adc_bits": abits,
                                    "cell_bits": settings.cellBit, "subarray": settings.numRowSubArray,
                                    "cached": est.cached, "record": record.name, **est.figures}

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # NeuroSim is one process each
            return dict(pool.map(one, jobs))

    @staticmethod
    def columns(point: dict, steps: int) -> dict[str, float]:
        """A configuration's NeuroSim figures: per inference of ``steps`` timesteps (one record run per
        step), the chip's area and per-step efficiency as NeuroSim prints them."""
        per_step = point["dynamic_energy_pj"] + (point["leakage_energy_pj"] or 0.0)
        return {"neurosim_energy_pj": steps * per_step, "neurosim_latency_ns": steps * point["latency_ns"],
                "neurosim_area_um2": point["chip_area_um2"], "neurosim_tops_per_w": point["tops_per_w"],
                "neurosim_subarray": point["subarray"]}


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary

    def cfg(c):
        chip = (f", NeuroSim {c['neurosim_energy_pj']:.3g} pJ" if "neurosim_energy_pj" in c else "")
        return (f"{c['method']} w{c['weight_bits']} {c['scheme']} adc{c['adc_bits']} T{c['timesteps']}: val "
                f"{c['val_mean']:.4f}, test {c['test_mean']:.4f} ± {c['test_std']:.4f}, "
                f"{c['energy_pj']:.3g} pJ (model){chip}")

    return (f"[green]sweep[/green] {artifact.path}  {s['n_configs']} configurations\n"
            f"  best:        {cfg(s['best'])}\n  recommended: {cfg(s['recommended'])}")


def _executor_config(p: SweepParams, device) -> ExecutorConfig:
    return ExecutorConfig(p.executor, p.address, p.workers, gpu=device.type == "cuda")


def run(p: SweepParams, out: Path | None, root: Path, force: bool, reporter: Reporter) -> artifacts.Artifact:
    from cimtool.devices.card import load_card

    validate(p)
    t_start = time.perf_counter()
    card = load_card(p.device)
    device = resolve_device(p.torch_device)
    paths = [Path(m) for m in p.models] or [find_model(root, method) for method in p.methods]
    for path in paths:  # a wrong path fails before a Ray cluster starts
        artifacts.load(path, verify=False)
    executor = open_executor(_executor_config(p, device))  # Ray's workers start while the models load
    try:
        return _run(p, paths, out, root, force, reporter, card, device, executor, t_start)
    finally:
        executor.close()


def _run(p: SweepParams, paths: list[Path], out: Path | None, root: Path, force: bool, reporter: Reporter,
         card, device, executor, t_start: float) -> artifacts.Artifact:
    from cimtool.devices.cost import CostModel
    from cimtool.unit_cache import UnitCache

    candidates = [load_candidate(path, p.data_dir, reporter, p.calibration_samples, p.seed) for path in paths]
    _same_val_split(candidates)
    labels = "+".join(c.spiking.label for c in candidates)
    params = {**{k: v for k, v in asdict(p).items() if k not in EXECUTION}, "torch_device": device.type,
              "card": card.to_dict()}
    if out is None:  # the same command after a kill or a failure continues its partial artifact
        partial = artifacts.find_resumable(root / artifacts.KIND_DIRS[KIND], artifacts.sha256_json(params))
        out = partial.with_name(partial.name[: -len(artifacts.PARTIAL_SUFFIX)]) if partial else None
    output = StageOutput(KIND, out, root, f"{labels}-{card.name}", force,
                         inputs=[c.spiking.artifact.path for c in candidates], started=t_start)
    out = output.path
    cost = CostModel()
    chip = _ChipCost(p, card, reporter.log) if p.cost == "neurosim" else None
    total = len(candidates) * p.n_configs_per_model
    ranked = f"ranked by {chip.label}" if chip else "ranked by the cost model"
    reporter.log(f"sweep: {total} configurations × {p.trials} chips on '{card.name}' (val), {ranked} → {out}")

    units = [_Unit(ci, wbits, scheme, abits) for ci in range(len(candidates)) for wbits in p.weight_bits
             for scheme in p.schemes for abits in p.adc_bits]
    keys = _unit_keys(units, candidates, card, p, device.type)
    rows: list[dict[str, Any]] = []
    with output.writer(params, resume="auto", keep_on_interrupt=True) as writer:
        cache = UnitCache(writer.scratch / "units")
        accuracies = {i: cache.get(key) for i, key in enumerate(keys)}
        missing = [i for i, found in accuracies.items() if found is None]
        if len(missing) < len(units):
            reporter.log(f"sweep: {len(units) - len(missing)} of {len(units)} units already computed in "
                         f"{writer.partial}; computing the other {len(missing)}")
        executed = "nothing (every unit cached)"
        with reporter.progress() as progress:
            points: dict[tuple, dict] = {}
            if chip:
                runs = len(candidates) * len(p.weight_bits) * len(p.adc_bits)
                ns_task = progress.add_task("NeuroSim", total=runs, status="")
                for ci, cand in enumerate(candidates):
                    for (wbits, abits), point in chip.points(cand, ci, writer.path("neurosim"), progress,
                                                             ns_task).items():
                        points[ci, wbits, abits] = point
            per_unit = len(p.timesteps)
            task = progress.add_task("sweep (val)", total=total,
                                     completed=(len(units) - len(missing)) * per_unit, status="")
            t_units = time.perf_counter()
            if missing:
                executed = executor.description
                reporter.log(f"sweep: {len(missing)} units on {executed}")
                shared = _Shared([_lean(c) for c in candidates], card, p, device.type)
                for j, accs in executor.map(_unit_accuracies, shared, [units[i] for i in missing]):
                    i = missing[j]
                    cache.put(keys[i], accs)
                    accuracies[i] = accs
                    u = units[i]
                    label = candidates[u.candidate].spiking.label
                    progress.update(task, advance=per_unit, status=f"{label} w{u.weight_bits} {u.scheme} "
                                    f"adc{u.adc_bits}: {np.mean(accs[-1]):.4f} at T{p.timesteps[-1]}")
            units_wall = time.perf_counter() - t_units
        shapes = [_layer_shapes(c.spiking.model, c.spiking.arch, c.data["val"].x) for c in candidates]
        for i, unit in enumerate(units):
            net = candidates[unit.candidate].spiking
            ci, wbits, abits = unit.candidate, unit.weight_bits, unit.adc_bits
            for steps, accs in zip(p.timesteps, accuracies[i], strict=True):
                energy = cost.energy(card, shapes[ci], wbits, abits, unit.scheme, steps, p.array_rows)
                if chip:
                    energy.update(chip.columns(points[ci, wbits, abits], steps))
                rows.append({"method": net.label, "model": str(net.artifact.path), "candidate": ci,
                             "weight_bits": wbits, "scheme": unit.scheme, "adc_bits": abits,
                             "timesteps": steps, "val_mean": float(np.mean(accs)),
                             "val_std": float(np.std(accs)), "val_trials": accs, **energy})
        best, recommended = select(rows, p.tolerance, ENERGY[p.cost])

        selection = []
        reporter.log(f"sweep: best and recommended configurations on test ({p.trials} chips each)")
        for role, row in (("best", best), ("recommended", recommended)):
            if role == "recommended" and row is best:
                test = selection[0]["test_trials"]  # the same configuration: test touched once
            else:
                cand = candidates[row["candidate"]]
                ev = _Evaluator(cand, *_mapped(cand, card, row["weight_bits"], p), card,
                                _config(p, card, row["scheme"], row["adc_bits"]), p, device)
                test = ev.accuracies(cand.data["test"], row["timesteps"])
            selection.append({"role": role, **{k: v for k, v in row.items() if k != "val_trials"},
                              "test_mean": float(np.mean(test)), "test_std": float(np.std(test)),
                              "test_trials": test})
        pq.write_table(pa.Table.from_pylist(rows), writer.path("sweep.parquet"))
        pq.write_table(pa.Table.from_pylist(selection), writer.path("selection.parquet"))
        if chip:
            pq.write_table(pa.Table.from_pylist([points[k] for k in sorted(points)]),
                           writer.path("neurosim.parquet"))

        def brief(s: dict[str, Any]) -> dict[str, Any]:
            keys = ("method", "weight_bits", "scheme", "adc_bits", "timesteps", "val_mean", "val_std",
                    "test_mean", "test_std", "energy_pj", "neurosim_energy_pj", "neurosim_latency_ns",
                    "neurosim_area_um2", "neurosim_tops_per_w", "neurosim_subarray")
            return {k: s[k] for k in keys if k in s}

        summary = {"device": card.name, "n_configs": len(rows), "trials": p.trials,
                   "tolerance_points": p.tolerance, "best": brief(selection[0]),
                   "recommended": brief(selection[1]),
                   "test_accuracy": selection[1]["test_mean"], "val_accuracy": selection[1]["val_mean"],
                   "cost": p.cost, "energy_key": ENERGY[p.cost],
                   "energy_saving": 1 - selection[1][ENERGY[p.cost]] / selection[0][ENERGY[p.cost]],
                   **candidates[0].calibration_record, "torch_device": device.type,
                   "executor": executed, "units": len(units), "units_computed": len(missing),
                   "units_cached": len(units) - len(missing), "units_wall_s": units_wall}
        if chip:
            summary.update(neurosim_version=chip.version.name, neurosim_runs=len(points),
                           neurosim_cached=sum(pt["cached"] for pt in points.values()))
        roles = [c.spiking.artifact.as_input("model" if c.spiking.artifact.kind != "snn" else "snn")
                 for c in candidates]
        return output.commit(writer, roles, summary)
