"""`cimtool map-weights`: a model's crossbar layers → conductance levels of a device card.

Writes a conductance-map artifact (``cmap``): ``cmap.parquet`` (one row per cell pair: layer, tile,
row, col, level_pos, level_neg, G_pos, G_neg, R_pos, R_neg; with ``--program`` also the
programmed conductances), ``layers.parquet`` (per-layer scale and placement), ``scales.parquet``
(per-column scale) and, with ``--evaluate``, ``evaluation.parquet`` (accuracy per condition and
Monte Carlo trial on the array simulator).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.devices.card import DeviceCard, load_card
from cimtool.devices.mapping import (
    NORMALIZATIONS,
    SCALINGS,
    LayerMap,
    Placement,
    card_grid,
    check_placement,
)
from cimtool.errors import CimtoolError
from cimtool.nn.array import EFFECTS, ArrayConfig
from cimtool.stages.common import (
    CALIBRATION_SAMPLES,
    calibration_sample,
    check_calibration_samples,
    check_torch_device,
    find_model,
    open_model,
    resolve_device,
)
from cimtool.ui import Reporter

KIND = "cmap"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class MappingOptions:
    """How weights become conductances and where they sit (shared with export-weightmap)."""

    device: str = "rram_seed003"
    weight_bits: int | None = None  # None: the card's number of levels
    scaling: str = "shared_max"
    scale_percentile: float = 99.9
    normalize: str = "gmax"
    array_rows: int = 128
    array_cols: int = 128
    layout: str = "interleaved"

    def validate(self) -> None:
        if self.weight_bits is not None and not 1 <= self.weight_bits <= 15:
            raise CimtoolError(f"--weight-bits must be in 1..15 (2..32768 levels), got {self.weight_bits}")
        if self.scaling not in SCALINGS:
            raise CimtoolError(f"unknown --scaling '{self.scaling}' (choose from: {', '.join(SCALINGS)})")
        if self.normalize not in NORMALIZATIONS:
            raise CimtoolError(f"unknown --normalize '{self.normalize}' "
                               f"(choose from: {', '.join(NORMALIZATIONS)})")
        if not 0 < self.scale_percentile <= 100:
            raise CimtoolError(f"--scale-percentile must be in (0, 100], got {self.scale_percentile}")
        check_placement(self.array_rows, self.array_cols, self.layout)


@dataclass(frozen=True)
class MapParams:
    mapping: MappingOptions = field(default_factory=MappingOptions)
    model: str | None = None  # artifact path; None: newest model trained with `method`
    method: str = "proj_sup_64"
    program: bool = False
    evaluate: bool = False
    split: str = "test"
    trials: int = 10
    effects: tuple[str, ...] = EFFECTS
    adc_bits: int | None = None  # None: the card's
    scheme: str | None = None
    input_bits: int | None = None
    encoding: str = "analog"
    drift_time: float = 3600.0
    data_dir: str | None = None
    seed: int = 0
    calibration_samples: int = CALIBRATION_SAMPLES
    torch_device: str = "auto"

    def array_config(self, card: DeviceCard) -> ArrayConfig:
        def pick(given, default):
            return default if given is None else given

        return ArrayConfig(effects=tuple(self.effects), adc_bits=pick(self.adc_bits, card.adc_bits),
                           scheme=pick(self.scheme, card.adc_scheme),
                           input_bits=pick(self.input_bits, card.input_bits), encoding=self.encoding,
                           drift_time=self.drift_time)


@dataclass
class MappedModel:
    """A model on device levels: what map-weights writes and export-weightmap reads."""

    card: DeviceCard
    maps: dict[str, LayerMap]
    placements: dict[str, Placement]
    layer_types: dict[str, str]


def resolve_model(model: str | None, method: str, root: Path, reporter: Reporter) -> Path:
    if model is not None:
        return Path(model)
    path = find_model(root, method)
    reporter.log(f"using the newest --method {method} model: {path}")
    return path


def map_loaded_model(model, spec: dict[str, Any], opts: MappingOptions, reporter: Reporter) -> MappedModel:
    from cimtool.nn.network import map_model

    opts.validate()
    card = load_card(opts.device)
    if opts.weight_bits is not None and 2**opts.weight_bits > card.levels:
        reporter.log(f"[yellow]note: --weight-bits {opts.weight_bits} asks for {2**opts.weight_bits} "
                     f"levels; the card '{card.name}' lists {card.levels} programmable states")
    maps = map_model(model, spec, card_grid(card, opts.weight_bits), opts.scaling, opts.scale_percentile,
                     opts.normalize)
    placements = {name: Placement(*m.shape, opts.array_rows, opts.array_cols, opts.layout)
                  for name, m in maps.items()}
    types = {layer["name"]: layer["type"] for layer in spec["crossbar_layers"]}
    return MappedModel(card, maps, placements, types)


def cell_table(mapped: MappedModel, programmed: dict[str, np.ndarray] | None = None) -> pa.Table:
    """One row per (layer, row, col), row-major per layer."""
    names = list(mapped.maps)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (
        "layer", "tile", "row", "col", "level_pos", "level_neg", "G_pos", "G_neg")}
    prog: list[np.ndarray] = []
    for index, (name, lm) in enumerate(mapped.maps.items()):
        rows, cols = lm.shape
        row = np.repeat(np.arange(rows, dtype=np.int32), cols)
        col = np.tile(np.arange(cols, dtype=np.int32), rows)
        parts["layer"].append(np.full(rows * cols, index, dtype=np.int32))
        parts["tile"].append(mapped.placements[name].tile_of(row, col).astype(np.int32))
        parts["row"].append(row)
        parts["col"].append(col)
        parts["level_pos"].append(lm.level_pos.ravel())
        parts["level_neg"].append(lm.level_neg.ravel())
        parts["G_pos"].append(lm.g_pos.ravel())
        parts["G_neg"].append(lm.g_neg.ravel())
        if programmed is not None:
            prog.append(programmed[name].reshape(2, -1))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    columns = {"layer": pa.DictionaryArray.from_arrays(cat.pop("layer"), names), **cat,
               "R_pos": 1.0 / cat["G_pos"], "R_neg": 1.0 / cat["G_neg"]}
    if programmed is not None:
        g = np.concatenate(prog, axis=1)
        columns["G_pos_programmed"], columns["G_neg_programmed"] = g[0], g[1]
    return pa.table(columns)


def _program_chip(mapped: MappedModel, seed: int) -> dict[str, np.ndarray]:
    """Programmed conductances (write noise, D2D, stuck-at) of one chip, seeded, [2, rows, cols]."""
    import torch

    from cimtool.nn.array import program

    gen = torch.Generator().manual_seed(seed)
    return {name: program(torch.from_numpy(np.stack([lm.g_pos, lm.g_neg])), mapped.card,
                          ("d2d", "c2c", "stuck"), gen).numpy()
            for name, lm in mapped.maps.items()}


def _layer_rows(mapped: MappedModel, opts: MappingOptions) -> list[dict[str, Any]]:
    rows = []
    for name, lm in mapped.maps.items():
        pl = mapped.placements[name]
        tr, tc = pl.tile_grid
        levels = np.concatenate([lm.level_pos.ravel(), lm.level_neg.ravel()])
        rows.append({
            "layer": name, "type": mapped.layer_types[name], "rows": pl.rows, "cols": pl.cols,
            "scaling": opts.scaling, "scale_min": float(lm.scale.min()), "scale_max": float(lm.scale.max()),
            "n_levels": len(lm.grid), "g_min": float(lm.grid[0]), "g_max": float(lm.grid[-1]),
            "tile_rows": tr, "tile_cols": tc, "n_arrays": tr * tc,
            "array_utilization": pl.rows * 2 * pl.cols / (tr * tc * pl.array_rows * pl.array_cols),
            "fraction_at_g_min": float((levels == 0).mean()),
        })
    return rows


def _scale_rows(mapped: MappedModel) -> pa.Table:
    scales = list(mapped.maps.values())
    layer = np.concatenate([np.full(len(m.scale), i, dtype=np.int32) for i, m in enumerate(scales)])
    return pa.table({"layer": pa.DictionaryArray.from_arrays(layer, list(mapped.maps)),
                     "col": np.concatenate([np.arange(len(m.scale), dtype=np.int32) for m in scales]),
                     "scale": np.concatenate([m.scale for m in scales])})


def validate(p: MapParams) -> None:
    p.mapping.validate()
    if p.split not in SPLITS:
        raise CimtoolError(f"unknown --split '{p.split}' (choose from: {', '.join(SPLITS)})")
    if not 1 <= p.trials <= 10_000:
        raise CimtoolError(f"--trials must be in 1..10000, got {p.trials}")
    if not 0 <= p.seed < 2**32:
        raise CimtoolError(f"--seed must be in [0, 2**32), got {p.seed}")
    check_calibration_samples(p.calibration_samples)
    check_torch_device(p.torch_device)
    if not math.isfinite(p.drift_time):
        raise CimtoolError(f"--drift-time must be finite, got {p.drift_time}")
    # the card fills unset converter options later; validate what the user gave
    ArrayConfig(effects=tuple(p.effects), adc_bits=p.adc_bits, scheme=p.scheme or "B",
                input_bits=1 if p.input_bits is None else p.input_bits, encoding=p.encoding,
                drift_time=p.drift_time).validate()


def evaluate_mapped(model, mapped: MappedModel, data: dict[str, Any], split: str, config: ArrayConfig,
                    trials: int, seed: int, reporter: Reporter,
                    calibration_samples: int = CALIBRATION_SAMPLES,
                    device=None) -> tuple[list[dict], dict[str, Any]]:
    """Float vs mapped-ideal vs non-ideal accuracy (Monte Carlo) on one split; converters
    calibrated on a stratified sample of ``calibration_samples`` train items."""
    import torch

    from cimtool.nn.network import ArrayNetwork
    from cimtool.train.loop import evaluate

    device = device or torch.device("cpu")
    sample, record = calibration_sample(data["train"], calibration_samples, seed)
    _, acc_float = evaluate(model.to(device), data[split], device)
    ideal = ArrayNetwork(model, mapped.maps, mapped.placements, mapped.card, ArrayConfig(), device)
    ideal.calibrate(sample)
    acc_ideal = ideal.accuracy(data[split], None)
    net = ArrayNetwork(model, mapped.maps, mapped.placements, mapped.card, config, device)
    net.calibrate(sample)
    reporter.log(f"[dim]array simulator on {device.type}: batches of {net.batch_size(len(data[split]))}, "
                 f"{net.chips_per_pass(len(data[split]), trials)} chip(s) per pass[/dim]")
    with reporter.progress() as progress:
        task = progress.add_task("Monte Carlo", total=trials, status="")
        accs = net.trials(data[split], trials, seed,
                          lambda t, a: progress.update(task, advance=1, status=f"acc {a:.4f}"))
    rows = [{"condition": "float", "trial": 0, "accuracy": acc_float},
            {"condition": "mapped_ideal", "trial": 0, "accuracy": acc_ideal}]
    rows += [{"condition": "mapped_nonideal", "trial": t, "accuracy": a} for t, a in enumerate(accs)]
    summary = {"split": split, "accuracy_float": acc_float, "accuracy_mapped_ideal": acc_ideal,
               "accuracy_nonideal_mean": float(np.mean(accs)), "accuracy_nonideal_std": float(np.std(accs)),
               "trials": trials, "array_config": asdict(config), **record, "torch_device": device.type}
    return rows, summary


def run(p: MapParams, out: Path | None, root: Path, force: bool, reporter: Reporter) -> artifacts.Artifact:
    validate(p)
    t_start = time.perf_counter()
    model_path = resolve_model(p.model, p.method, root, reporter)
    model_artifact, model, spec = open_model(model_path)
    mapped = map_loaded_model(model, spec, p.mapping, reporter)
    if model_artifact.kind == "qmodel" and model_artifact.params.get("mapping") != asdict(p.mapping):
        reporter.log(f"[yellow]note: this qmodel was trained for the mapping "
                     f"{model_artifact.params.get('mapping')}; mapping it with {asdict(p.mapping)}")
    p = replace(p, model=str(model_path))
    data = None
    if p.evaluate:
        from cimtool.stages.common import model_splits

        data = model_splits(model_artifact, p.data_dir)
    bits = p.mapping.weight_bits
    name = f"{model_path.name}-{mapped.card.name}-{f'w{bits}' if bits else 'card'}"
    out = out or artifacts.default_out(root, KIND, name)
    artifacts.check_out(out, force)
    device = resolve_device(p.torch_device)
    params = {**asdict(p), "torch_device": device.type, "card": mapped.card.to_dict(),
              "n_levels": len(next(iter(mapped.maps.values())).grid)}
    reporter.log(f"map-weights: {len(mapped.maps)} crossbar layer(s) of {model_path} onto "
                 f"'{mapped.card.name}' ({params['n_levels']} {mapped.card.spacing} levels) → {out}")
    with artifacts.ArtifactWriter(out, KIND, params, force=force) as writer:
        programmed = _program_chip(mapped, p.seed) if p.program else None
        pq.write_table(cell_table(mapped, programmed), writer.path("cmap.parquet"))
        layer_rows = _layer_rows(mapped, p.mapping)
        pq.write_table(pa.Table.from_pylist(layer_rows), writer.path("layers.parquet"))
        pq.write_table(_scale_rows(mapped), writer.path("scales.parquet"))
        summary: dict[str, Any] = {
            "device": mapped.card.name, "n_levels": params["n_levels"],
            "layers": [r["layer"] for r in layer_rows],
            "n_cells": int(sum(2 * r["rows"] * r["cols"] for r in layer_rows)),
            "n_arrays": int(sum(r["n_arrays"] for r in layer_rows)),
            "programmed": p.program,
        }
        if p.evaluate and "drift" in p.effects and p.drift_time <= mapped.card.drift_t0:
            reporter.log(f"[yellow]note: --drift-time {p.drift_time:g} s is not after the card's drift t0 "
                         f"({mapped.card.drift_t0:g} s): no drift")
        if p.evaluate:
            rows, acc = evaluate_mapped(model, mapped, data, p.split, p.array_config(mapped.card),
                                        p.trials, p.seed, reporter, p.calibration_samples, device)
            pq.write_table(pa.Table.from_pylist(rows), writer.path("evaluation.parquet"))
            summary.update(acc)
        summary["wall_s"] = time.perf_counter() - t_start
        path = writer.commit([model_artifact.as_input("model")], summary)
    return artifacts.load(path, KIND)


def load_cmap(path: Path | str) -> tuple[artifacts.Artifact, MappedModel, MappingOptions]:
    """Rebuild the mapped model of a cmap artifact (levels, scales, card, placement), checked."""
    from cimtool.devices.card import DeviceCard

    artifact = artifacts.load(path, KIND)
    params = artifact.params
    try:
        card_dict = dict(params["card"])
        card_dict["assumed"] = tuple(card_dict["assumed"])
        if card_dict.get("responsivity"):
            card_dict["responsivity"] = tuple(card_dict["responsivity"])
        card = DeviceCard(**card_dict)
        opts = MappingOptions(**params["mapping"])
        from cimtool.devices.mapping import level_grid

        grid = level_grid(card.g_min, card.g_max, int(params["n_levels"]), card.spacing)
    except (KeyError, TypeError, ValueError) as exc:
        raise CimtoolError(f"{artifact.path}: manifest params do not describe a mapping ({exc})") from None
    opts.validate()
    cells = _read_table(artifact, "cmap.parquet", ("layer", "row", "col", "level_pos", "level_neg", "G_pos",
                                                    "G_neg"))
    scales = _read_table(artifact, "scales.parquet", ("layer", "col", "scale"))
    layers = _read_table(artifact, "layers.parquet", ("layer", "type", "rows", "cols")).to_dict("records")
    where = artifact.file("cmap.parquet")
    if not layers:
        raise CimtoolError(f"{artifact.file('layers.parquet')}: no layers")
    maps, placements, types = {}, {}, {}
    for info in layers:
        name, rows, cols = str(info["layer"]), int(info["rows"]), int(info["cols"])
        sel = cells[cells["layer"] == name].sort_values(["row", "col"], kind="stable")
        expected_rows = np.repeat(np.arange(rows), cols)
        expected_cols = np.tile(np.arange(cols), rows)
        if len(sel) != rows * cols or not (np.array_equal(sel["row"].to_numpy(), expected_rows)
                                           and np.array_equal(sel["col"].to_numpy(), expected_cols)):
            raise CimtoolError(f"{where}: layer '{name}' does not hold each of its {rows}x{cols} cells once")
        levels = [sel[c].to_numpy() for c in ("level_pos", "level_neg")]
        if not all(np.issubdtype(lv.dtype, np.integer) for lv in levels):
            raise CimtoolError(f"{where}: level columns of layer '{name}' are not integers")
        lp, ln = (lv.reshape(rows, cols).astype(np.int16) for lv in levels)
        if min(lp.min(), ln.min()) < 0 or max(lp.max(), ln.max()) >= len(grid):
            raise CimtoolError(f"{where}: layer '{name}' has levels outside 0..{len(grid) - 1}")
        if not np.array_equal(grid[lp].ravel(), sel["G_pos"].to_numpy()) or \
                not np.array_equal(grid[ln].ravel(), sel["G_neg"].to_numpy()):
            raise CimtoolError(f"{where}: G values of layer '{name}' do not match its levels on the "
                               "recorded device card")
        scale = scales[scales["layer"] == name].sort_values("col")["scale"].to_numpy(dtype=np.float64)
        if len(scale) != cols or not (np.isfinite(scale).all() and (scale > 0).all()):
            raise CimtoolError(f"{artifact.file('scales.parquet')}: layer '{name}' needs {cols} "
                               "positive scales")
        maps[name] = LayerMap(name, lp, ln, scale, grid, opts.normalize)
        placements[name] = Placement(rows, cols, opts.array_rows, opts.array_cols, opts.layout)
        types[name] = info["type"]
    return artifact, MappedModel(card, maps, placements, types), opts


def _read_table(artifact: artifacts.Artifact, name: str, columns: tuple[str, ...]):
    """A payload table as pandas, with the columns it must have (a one-line error otherwise)."""
    import pyarrow as pa

    try:
        table = pq.read_table(artifact.file(name))
    except (pa.ArrowException, OSError) as exc:
        raise CimtoolError(f"{artifact.file(name)}: not a readable Parquet table ({exc})") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise CimtoolError(f"{artifact.file(name)}: missing column(s) {', '.join(missing)}")
    return table.to_pandas()
