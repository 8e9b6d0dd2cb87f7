"""`cimtool sweep`: the full design-space sweep on the array simulator (docs/physics.md#energy-model).

Every configuration method × scheme (A/B) × ADC bits × weight bits × timesteps runs the spiking
network on simulated arrays of one device card (its non-idealities, ``--trials`` chips each; the
same chips for every configuration) and is scored on val (``cimtool.nn.snn_chip``: a
configuration's score does not depend on the rest of the grid). Best case = the highest mean val
accuracy; every other configuration is compared with it on the same val images and chips (the
paired difference and its standard error); recommendation = the cheapest configuration
(``cimtool.devices.cost``) whose loss against the best is below ``--tolerance`` points at
``--confidence`` (one-sided, per comparison: loss + z·SE ≤ tolerance). Only those two are then evaluated on
test, once each. Weights of more bits than a cell holds are simulated as the bit-sliced cells the
cost model charges for (``cimtool.devices.mapping``).

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
import statistics
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
from cimtool.nn.snn_config import MAX_TIMESTEPS
from cimtool.nn.snn_spec import Candidate, load_candidate
from cimtool.params import SweepParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput, check_torch_device, resolve_device
from cimtool.stats import mean_std
from cimtool.ui import Reporter, plural

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
        check_range("--timesteps", steps, 1, MAX_TIMESTEPS)
    ArrayConfig(effects=p.effects).validate()
    check_calibration_samples(p.calibration_samples)
    check_torch_device(p.torch_device)
    check_range("--trials", p.trials, 1, 1000)
    if not (math.isfinite(p.tolerance) and p.tolerance >= 0):
        raise CimtoolError(f"--tolerance must be >= 0 accuracy points, got {p.tolerance}")
    if not 0.5 <= p.confidence < 1:
        raise CimtoolError(f"--confidence must be in [0.5, 1) (one-sided), got {p.confidence}")
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


def check_tolerance(tolerance_points: float, n_val: int) -> None:
    """A tolerance finer than one val image cannot be told apart from zero."""
    resolution = 100 / n_val
    if 0 < tolerance_points < resolution:
        raise CimtoolError(f"--tolerance {tolerance_points:g} points is below the val split's resolution "
                           f"(one image of {n_val} = {resolution:.3g} points): give 0 (the best only) or "
                           f">= {resolution:.3g}")


def select(rows: list[dict[str, Any]], tolerance_points: float, energy: str = "energy_pj",
           confidence: float = 0.95) -> tuple[dict[str, Any], dict[str, Any]]:
    """(best case, recommendation) of rows carrying ``scores`` (:class:`ChipScores`).

    Best: the highest mean val accuracy (ties: cheaper). Each row gains ``diff_vs_best`` and
    ``diff_se`` (points, paired over the same images and chips), ``indistinguishable`` (not
    significantly worse than the best: diff − z·SE ≤ 0) and ``within_tolerance`` (diff + z·SE ≤
    tolerance); z is the one-sided normal quantile of ``confidence``. Recommendation: the cheapest
    row within tolerance by ``energy`` (ties: the cost model's energy, then fewer weight bits, ADC
    bits, timesteps); the best always is."""
    from cimtool.stats import paired_difference

    def cost(r: dict[str, Any]) -> tuple:
        return (r[energy], r["energy_pj"], r["weight_bits"], r["adc_bits"], r["timesteps"], r["scheme"])

    z = statistics.NormalDist().inv_cdf(confidence)
    best = min(rows, key=lambda r: (-r["val_mean"], *cost(r)))
    for r in rows:
        diff = paired_difference(best["scores"], r["scores"])
        r.update(diff_vs_best=diff.mean, diff_se=diff.se, indistinguishable=diff.mean - z * diff.se <= 1e-9,
                 within_tolerance=r is best or diff.mean + z * diff.se <= tolerance_points + 1e-9)
    recommended = min((r for r in rows if r["within_tolerance"]), key=cost)
    return best, recommended


def _mapped(cand: Candidate, card, weight_bits: int, array_rows: int, array_cols: int):
    """(maps, placements) of the candidate's crossbar layers with ``weight_bits`` on the card's cells
    (bit-sliced above its cell bits, as the cost model charges), on arrays of that geometry."""
    from cimtool.devices.mapping import level_code
    from cimtool.nn.network import map_model

    maps = map_model(cand.spiking.model, cand.spiking.arch, level_code(card, weight_bits))
    return maps, {n: m.placement(array_rows, array_cols, "interleaved") for n, m in maps.items()}


def _ir_caveats(candidates: list[Candidate], card, p: SweepParams,
                geometry: dict[tuple[int, int], tuple[int, int]]) -> list[str]:
    """Where the swept mappings run the first-order IR drop beyond its validity: one sentence, with
    the largest r·(A+B) of them."""
    from cimtool.nn.array import IR_VALID_LOAD, ir_caveat_text, ir_worst

    if "ir" not in p.effects:
        return []
    loads = {}
    for ci, cand in enumerate(candidates):
        for bits in p.weight_bits:
            load, layer = ir_worst(*_mapped(cand, card, bits, *geometry[ci, bits]), card.wire_resistance)
            loads[f"{cand.spiking.label} w{bits}"] = (load, layer)
    beyond = [k for k, (load, _) in loads.items() if load > IR_VALID_LOAD]
    if not beyond:
        return []
    worst = max(beyond, key=lambda k: loads[k][0])
    return [f"{', '.join(beyond)}: {ir_caveat_text(loads[worst][0], f'{worst}, layer {loads[worst][1]}')}"]


def _config(p: SweepParams, card, scheme: str, adc_bits: int):
    from cimtool.nn.array import ArrayConfig

    return ArrayConfig(effects=p.effects, adc_bits=adc_bits, scheme=scheme, input_bits=card.input_bits)


def _chips(cand: Candidate, card, unit: _Unit, p: SweepParams, device):
    """The candidate's spiking network on the chips of one unit (mapping and converters)."""
    from cimtool.nn.snn_chip import SpikingChips

    maps, placements = _mapped(cand, card, unit.weight_bits, unit.array_rows, unit.array_cols)
    return SpikingChips(cand.spiking, maps, placements, card,
                        _config(p, card, unit.scheme, unit.adc_bits), cand.calibration, p.seed, device)


EXECUTION = ("executor", "address", "workers")  # how the sweep runs, not what it computes


@dataclass(frozen=True)
class _Unit:
    """One mapping and converter setting of one model, scored at every T on every chip: the sweep's
    unit of work (one Ray task with ``--executor ray``) and of its cache."""

    candidate: int
    weight_bits: int
    scheme: str
    adc_bits: int
    array_rows: int  # the simulated arrays: --array-rows/--array-cols, or NeuroSim's subarray
    array_cols: int


@dataclass
class _Shared:
    """What every unit reads, sent once to each worker."""

    candidates: list[Candidate]  # their val split and calibration sample only
    card: Any
    p: SweepParams
    device: str


def _unit_scores(shared: _Shared, unit: _Unit) -> list[dict]:
    """Val scores (:class:`ChipScores`, as dicts) at each of ``--timesteps``: one unit, wherever it runs."""
    import torch

    cand, p = shared.candidates[unit.candidate], shared.p
    chips = _chips(cand, shared.card, unit, p, torch.device(shared.device))
    return [chips.scores(cand.data["val"], steps, p.trials).to_dict() for steps in p.timesteps]


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
    settings = {k: getattr(p, k) for k in ("timesteps", "effects", "trials", "seed", "calibration_samples")}
    return [unit_key(model=prints[u.candidate], unit={**asdict(u), "candidate": None}, card=card.to_dict(),
                     settings=settings, device=device) for u in units]


def _lean(cand: Candidate) -> Candidate:
    """The candidate as a worker needs it: without the train and test splits."""
    return replace(cand, data={"val": cand.data["val"]})


class _ChipCost:
    """NeuroSim's chip figures per (model, weight bits, ADC bits): ``--cost neurosim``.

    One build of the given inference release serves every point (settings read at start-up); the
    points of one model run side by side, one NeuroSim process per core, each cached by settings.
    Its subarray is the swept arrays (``--array-rows`` x ``--array-cols``), or where NeuroSim's
    floorplan cannot take them the nearest geometry it does (``build.neurosim_geometry``), said once
    per model and weight bits and kept in each point (``subarray``, ``geometry_note``)."""

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
        self.card, self.p, self.log = card, p, log
        self.card_bits = card.cell_bits
        self.label = f"NeuroSim {self.version.name} ({origin})"

    def points(self, cand: Candidate, ci: int, directory: Path, progress, task) -> dict[tuple, dict]:
        """{(weight bits, ADC bits): figures} of one model; records and stdouts go to ``directory``."""
        from cimtool.neurosim.build import NeuroSimSettings, neurosim_geometry
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
            subarray, note = neurosim_geometry(network_rows(record / NETWORK, len(layers)), wbits, cell_bits,
                                               p.array_rows, p.array_cols)
            if note:
                self.log(f"[yellow]note: {net.label} w{wbits}: {note}; NeuroSim runs {subarray}x{subarray} "
                         "subarrays")
            for abits in p.adc_bits:
                settings = NeuroSimSettings.from_card(self.card, "rram", cell_bits, abits, subarray,
                                                      p.technode)
                jobs.append((wbits, abits, record, layers, settings, note or ""))

        def one(job) -> tuple[tuple, dict]:
            wbits, abits, record, layers, settings, note = job
            est = estimate(self.binary, self.version, record, wbits, 1, layers, settings,
                           p.neurosim_timeout, self.cache / "estimates")
            (record / f"adc{abits}.stdout.txt").write_text(est.stdout)
            progress.update(task, advance=1, status=f"w{wbits} adc{abits}")
            return (wbits, abits), {"candidate": ci, "weight_bits": wbits, "adc_bits": abits,
                                    "cell_bits": settings.cellBit, "subarray": settings.numRowSubArray,
                                    "geometry_note": note, "cached": est.cached, "record": record.name,
                                    **est.figures}

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # NeuroSim is one process each
            return dict(pool.map(one, jobs))

    @staticmethod
    def columns(point: dict, steps: int) -> dict[str, float]:
        """A configuration's NeuroSim figures: per inference of ``steps`` timesteps (one record run per
        step; leakage: every tile over the step's latency), the chip's area and per-step efficiency as
        NeuroSim prints them."""
        per_step = point["dynamic_energy_pj"] + (point["leakage_energy_pj"] or 0.0)
        return {"neurosim_energy_pj": steps * per_step, "neurosim_latency_ns": steps * point["latency_ns"],
                "neurosim_area_um2": point["chip_area_um2"], "neurosim_tops_per_w": point["tops_per_w"],
                "neurosim_subarray": point["subarray"]}


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary

    def cfg(c):
        chip = (f", NeuroSim {c['neurosim_energy_pj']:.3g} pJ" if "neurosim_energy_pj" in c else "")
        return (f"{c['method']} w{c['weight_bits']} {c['scheme']} adc{c['adc_bits']} T{c['timesteps']}: val "
                f"{c['val_mean']:.4f}, test {c['test_mean']:.4f} ± {c['test_std']:.4f} (std over chips), "
                f"{c['energy_pj']:.3g} pJ (model){chip}")

    line = (f"[green]sweep[/green] {artifact.path}  {plural(s['n_configs'], 'configuration')} on "
            f"{s['device']}, {plural(s['trials'], 'chip')} each\n"
            f"  best:        {cfg(s['best'])}\n  recommended: {cfg(s['recommended'])}")
    rec = s["recommended"]
    if "diff_se" in rec:
        line += (f"\n  the recommendation loses {rec['diff_vs_best']:.2f} ± {rec['diff_se']:.2f} points "
                 f"(paired SE) against the best on {s['n_val']} val images: below {s['tolerance_points']:g} "
                 f"at {s['confidence']:.0%} confidence (per comparison); {s['n_indistinguishable']} of "
                 f"{plural(s['n_configs'], 'configuration')} statistically indistinguishable from the best")
    for caveat in s.get("caveats", []):
        line += f"\n  [yellow]caveat:[/yellow] {caveat}"
    return line


def _executor_config(p: SweepParams, device) -> ExecutorConfig:
    return ExecutorConfig(p.executor, p.address, p.workers, gpu=device.type == "cuda")


def run(p: SweepParams, out: Path | None, root: Path, force: bool, reporter: Reporter) -> artifacts.Artifact:
    from cimtool.devices.cmap import resolve_card

    validate(p)
    t_start = time.perf_counter()
    device = resolve_device(p.torch_device)
    paths = [Path(m) for m in p.models] or [find_model(root, method) for method in p.methods]
    inputs = [artifacts.load(path, verify=False) for path in paths]  # a wrong path fails before Ray starts
    said: list[str] = []  # said once the executor is up: a refused --executor stays one line
    device_name, card = resolve_card(p.device, inputs, said.append)
    p = replace(p, device=device_name)
    executor = open_executor(_executor_config(p, device))  # Ray's workers start while the models load
    for line in said:
        reporter.log(line)
    try:
        return _run(p, paths, out, root, force, reporter, card, device, executor, t_start)
    finally:
        executor.close()


def _run(p: SweepParams, paths: list[Path], out: Path | None, root: Path, force: bool, reporter: Reporter,
         card, device, executor, t_start: float) -> artifacts.Artifact:
    from cimtool.devices.cost import CostModel
    from cimtool.nn.snn_chip import ChipScores
    from cimtool.unit_cache import UnitCache

    candidates = [load_candidate(path, p.data_dir, reporter, p.calibration_samples, p.seed) for path in paths]
    _same_val_split(candidates)
    check_tolerance(p.tolerance, len(candidates[0].data["val"]))
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
    reporter.log(f"sweep: {plural(total, 'configuration')} × {plural(p.trials, 'chip')} on '{card.name}' "
                 f"(val), {ranked} → {out}")
    rows: list[dict[str, Any]] = []
    with output.writer(params, resume="auto", keep_on_interrupt=True) as writer:
        points: dict[tuple, dict] = {}
        if chip:
            with reporter.progress() as progress:
                runs = len(candidates) * len(p.weight_bits) * len(p.adc_bits)
                ns_task = progress.add_task("NeuroSim", total=runs, status="")
                for ci, cand in enumerate(candidates):
                    for (wbits, abits), point in chip.points(cand, ci, writer.path("neurosim"), progress,
                                                             ns_task).items():
                        points[ci, wbits, abits] = point
        # the arrays simulated are the ones NeuroSim estimates: the requested geometry, or the nearest
        # its floorplan takes (one per model and weight bits)
        geometry = {(ci, wbits): (points[ci, wbits, p.adc_bits[0]]["subarray"],) * 2 if chip
                    else (p.array_rows, p.array_cols)
                    for ci in range(len(candidates)) for wbits in p.weight_bits}
        caveats = _ir_caveats(candidates, card, p, geometry)
        for caveat in caveats:
            reporter.log(f"[yellow]warning: {caveat}")
        units = [_Unit(ci, wbits, scheme, abits, *geometry[ci, wbits]) for ci in range(len(candidates))
                 for wbits in p.weight_bits for scheme in p.schemes for abits in p.adc_bits]
        keys = _unit_keys(units, candidates, card, p, device.type)
        cache = UnitCache(writer.scratch / "units")
        results = {i: cache.get(key) for i, key in enumerate(keys)}
        missing = [i for i, found in results.items() if found is None]
        if len(missing) < len(units):
            reporter.log(f"sweep: {len(units) - len(missing)} of {plural(len(units), 'unit')} already "
                         f"computed in {writer.partial}; computing the other {len(missing)}")
        executed = "nothing (every unit cached)"
        with reporter.progress() as progress:
            per_unit = len(p.timesteps)
            task = progress.add_task("sweep (val)", total=total,
                                     completed=(len(units) - len(missing)) * per_unit, status="")
            t_units = time.perf_counter()
            if missing:
                executed = executor.description
                reporter.log(f"sweep: {plural(len(missing), 'unit')} on {executed}")
                shared = _Shared([_lean(c) for c in candidates], card, p, device.type)
                for j, found in executor.map(_unit_scores, shared, [units[i] for i in missing]):
                    i = missing[j]
                    cache.put(keys[i], found)
                    results[i] = found
                    u = units[i]
                    label = candidates[u.candidate].spiking.label
                    last = np.mean(found[-1]["accuracies"])
                    progress.update(task, advance=per_unit, status=f"{label} w{u.weight_bits} {u.scheme} "
                                    f"adc{u.adc_bits}: {last:.4f} at T{p.timesteps[-1]}")
            units_wall = time.perf_counter() - t_units
        shapes = [_layer_shapes(c.spiking.model, c.spiking.arch, c.data["val"].x) for c in candidates]
        for i, unit in enumerate(units):
            net = candidates[unit.candidate].spiking
            ci, wbits, abits = unit.candidate, unit.weight_bits, unit.adc_bits
            for steps, found in zip(p.timesteps, results[i], strict=True):
                scores = ChipScores.from_dict(found)
                accs = scores.accuracies
                energy = cost.energy(card, shapes[ci], wbits, abits, unit.scheme, steps, unit.array_rows)
                if chip:
                    energy.update(chip.columns(points[ci, wbits, abits], steps))
                val_mean, val_std = mean_std(accs)
                rows.append({"method": net.label, "model": str(net.artifact.path), "candidate": ci,
                             "weight_bits": wbits, "scheme": unit.scheme, "adc_bits": abits,
                             "array_rows": unit.array_rows, "array_cols": unit.array_cols,
                             "timesteps": steps, "val_mean": val_mean, "val_std": val_std, "val_trials": accs,
                             "scores": scores, **energy})
        best, recommended = select(rows, p.tolerance, ENERGY[p.cost], p.confidence)
        for r in rows:
            del r["scores"]

        selection = []
        reporter.log(f"sweep: best and recommended configurations on test ({plural(p.trials, 'chip')} each)")
        for role, row in (("best", best), ("recommended", recommended)):
            if role == "recommended" and row is best:
                test = selection[0]["test_trials"]  # the same configuration: test touched once
            else:
                cand = candidates[row["candidate"]]
                unit = _Unit(row["candidate"], row["weight_bits"], row["scheme"], row["adc_bits"],
                             row["array_rows"], row["array_cols"])
                test = _chips(cand, card, unit, p, device).scores(cand.data["test"], row["timesteps"],
                                                                  p.trials).accuracies
            selection.append({"role": role, **{k: v for k, v in row.items() if k != "val_trials"},
                              **dict(zip(("test_mean", "test_std"), mean_std(test), strict=True)),
                              "test_trials": test})
        pq.write_table(pa.Table.from_pylist(rows), writer.path("sweep.parquet"))
        pq.write_table(pa.Table.from_pylist(selection), writer.path("selection.parquet"))
        if chip:
            pq.write_table(pa.Table.from_pylist([points[k] for k in sorted(points)]),
                           writer.path("neurosim.parquet"))

        def brief(s: dict[str, Any]) -> dict[str, Any]:
            keys = ("method", "weight_bits", "scheme", "adc_bits", "timesteps", "slices", "array_rows",
                    "array_cols", "val_mean",
                    "val_std", "diff_vs_best", "diff_se", "test_mean", "test_std", "energy_pj",
                    "neurosim_energy_pj", "neurosim_latency_ns",
                    "neurosim_area_um2", "neurosim_tops_per_w", "neurosim_subarray")
            return {k: s[k] for k in keys if k in s}

        summary = {"device": card.name, "n_configs": len(rows), "trials": p.trials,
                   "tolerance_points": p.tolerance, "confidence": p.confidence,
                   "n_val": len(candidates[0].data["val"]),
                   "n_indistinguishable": sum(r["indistinguishable"] for r in rows),
                   "best": brief(selection[0]),
                   "recommended": brief(selection[1]),
                   "test_accuracy": selection[1]["test_mean"], "val_accuracy": selection[1]["val_mean"],
                   "cost": p.cost, "energy_key": ENERGY[p.cost],
                   "energy_saving": 1 - selection[1][ENERGY[p.cost]] / selection[0][ENERGY[p.cost]],
                   **candidates[0].calibration_record, "torch_device": device.type,
                   "executor": executed, "units": len(units), "units_computed": len(missing),
                   "units_cached": len(units) - len(missing), "units_wall_s": units_wall,
                   "caveats": caveats}
        if chip:
            summary.update(neurosim_version=chip.version.name, neurosim_runs=len(points),
                           neurosim_cached=sum(pt["cached"] for pt in points.values()))
        roles = [c.spiking.artifact.as_input("model" if c.spiking.artifact.kind != "snn" else "snn")
                 for c in candidates]
        return output.commit(writer, roles, summary)
