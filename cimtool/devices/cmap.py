"""Conductance maps: the mapping options, a loaded model mapped onto a device card's levels, and the
``cmap`` artifact's tables (written by map-weights, read back by export-weightmap and inspect).

A ``cmap`` artifact holds ``cmap.parquet`` (one row per cell pair: layer, tile, row, col (the cell
column: output·S + slice), slice, level_pos, level_neg, G_pos, G_neg, R_pos, R_neg; optionally the
programmed conductances),
``layers.parquet`` (per-layer scale and placement) and ``scales.parquet`` (per-column scale); its
manifest params record the card (``card``), the options (``mapping``) and ``n_levels``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.devices.card import DeviceCard, load_card
from cimtool.devices.mapping import LayerMap, Placement, level_code
from cimtool.devices.mapping_options import DEFAULT_DEVICE, MappingOptions  # noqa: F401 (re-exported)
from cimtool.errors import CimtoolError

if TYPE_CHECKING:
    from cimtool.ui import Reporter

KIND = "cmap"


@dataclass
class MappedModel:
    """A model on device levels: what map-weights writes and export-weightmap reads."""

    card: DeviceCard
    maps: dict[str, LayerMap]
    placements: dict[str, Placement]
    layer_types: dict[str, str]


def map_loaded_model(model, spec: dict[str, Any], opts: MappingOptions, reporter: Reporter,
                     card: DeviceCard | None = None) -> MappedModel:
    """Every crossbar layer of a loaded model (``spec``: its arch spec) on the levels of ``card``
    (default: ``opts.device``'s; :func:`resolve_card` gives both)."""
    from cimtool.nn.network import map_model

    opts.validate()
    card = card or load_card(opts.device or DEFAULT_DEVICE)
    code = level_code(card, opts.weight_bits, opts.normalize)
    if code.slices > 1:
        reporter.log(f"--weight-bits {opts.weight_bits}: {code.slices} cells of {len(code.grid)} levels per "
                     f"weight and polarity on '{card.name}' (bit slicing, shift-add after the ADC)")
    maps = map_model(model, spec, code, opts.scaling, opts.scale_percentile)
    placements = {name: m.placement(opts.array_rows, opts.array_cols, opts.layout)
                  for name, m in maps.items()}
    types = {layer["name"]: layer["type"] for layer in spec["crossbar_layers"]}
    return MappedModel(card, maps, placements, types)


# --- which card: the one the input records, unless --device names another --------------------

def card_of_record(record: dict[str, Any]) -> DeviceCard:
    """A card as a manifest records it (``card.to_dict()``), back into a card."""
    values = dict(record)
    values["assumed"] = tuple(values["assumed"])
    if values.get("responsivity"):
        values["responsivity"] = tuple(values["responsivity"])
    return DeviceCard(**values)


def _physics(card: DeviceCard) -> dict[str, Any]:  # what the device is, not its prose
    return {k: v for k, v in card.to_dict().items() if k not in ("source", "description", "assumed")}


def recorded_card(artifact: artifacts.Artifact) -> tuple[str, DeviceCard] | None:
    """(the --device it was given, the card) an artifact was trained or mapped with, or None.

    A qmodel or cmap records the card's content (``params["card"]``): that is used, so a user's
    card file may have moved or changed since. An snn or a trace has the card of its model; a model
    trained with a card (organic_cnn, the optical front-end) records the card's name or path."""
    params = artifact.params
    if isinstance(params.get("card"), dict):
        device = (params.get("mapping") or {}).get("device") or params.get("device") or params["card"]["name"]
        try:
            return str(device), card_of_record(params["card"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CimtoolError(f"{artifact.path}: manifest params do not describe a device card "
                               f"({exc})") from None
    if artifact.kind in ("snn", "trace"):
        ref = next((i for i in artifact.manifest.get("inputs", []) if i.get("role") == "model"), None)
        return None if ref is None else recorded_card(artifacts.load(ref["path"], verify=False))
    device = params.get("device")
    if not isinstance(device, str):
        return None
    try:
        return device, load_card(device)
    except CimtoolError as exc:
        raise CimtoolError(f"{artifact.path} was trained with the card {device}, which does not load now "
                           f"({exc}); give --device") from None


def resolve_card(device: str | None, inputs: list[artifacts.Artifact],
                 log: Callable[[str], None]) -> tuple[str, DeviceCard]:
    """(--device as the manifest records it, the card) a stage runs on: ``device`` where given (with
    a note where an input records another card), else the card its inputs record, else
    DEFAULT_DEVICE; one log line says which and why. Inputs that record different cards need
    ``device``."""
    recorded = [(a, r) for a in inputs if (r := recorded_card(a)) is not None]
    if device is not None:
        card = load_card(device)
        for artifact, (name, other) in recorded:
            if _physics(other) != _physics(card):
                log(f"[yellow]note: --device {device}: {artifact.path} was {_how(artifact)} '{other.name}' "
                    f"({name}); using '{card.name}' as asked")
        return device, card
    if not recorded:
        log(f"card: {DEFAULT_DEVICE} (the default: {_names(inputs)} records no card; --device to change)")
        return DEFAULT_DEVICE, load_card(DEFAULT_DEVICE)
    distinct = {json.dumps(_physics(card), sort_keys=True, default=str): (a, name, card)
                for a, (name, card) in recorded}
    if len(distinct) > 1:
        cards = ", ".join(f"{a.path}: '{card.name}'" for a, name, card in distinct.values())
        raise CimtoolError(f"the inputs record different device cards ({cards}); give --device")
    artifact, (name, card) = recorded[0]
    log(f"card: '{card.name}', the card {artifact.path} was {_how(artifact)} ({name}; --device to change)")
    return name, card


def _how(artifact: artifacts.Artifact) -> str:
    return "mapped onto" if artifact.kind == KIND else "trained with"


def _names(inputs: list[artifacts.Artifact]) -> str:
    return ", ".join(str(a.path) for a in inputs) or "no input"


# --- writing: the tables of a cmap artifact ---------------------------------------------------

def cell_table(mapped: MappedModel, programmed: dict[str, np.ndarray] | None = None) -> pa.Table:
    """``cmap.parquet``: one row per (layer, row, col), row-major per layer; ``programmed``: the
    programmed conductances [2, rows, cols] of each layer (adds G_pos_programmed, G_neg_programmed)."""
    names = list(mapped.maps)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (
        "layer", "tile", "row", "col", "slice", "level_pos", "level_neg", "G_pos", "G_neg")}
    prog: list[np.ndarray] = []
    for index, (name, lm) in enumerate(mapped.maps.items()):
        rows, cols = lm.cell_shape
        row = np.repeat(np.arange(rows, dtype=np.int32), cols)
        col = np.tile(np.arange(cols, dtype=np.int32), rows)
        parts["layer"].append(np.full(rows * cols, index, dtype=np.int32))
        parts["tile"].append(mapped.placements[name].tile_of(row, col).astype(np.int32))
        parts["row"].append(row)
        parts["col"].append(col)
        parts["slice"].append((col % lm.slices).astype(np.int16))
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


def layer_rows(mapped: MappedModel, opts: MappingOptions) -> list[dict[str, Any]]:
    """``layers.parquet``: per layer its type, shape, scale range, levels and array placement."""
    rows = []
    for name, lm in mapped.maps.items():
        pl = mapped.placements[name]
        tr, tc = pl.tile_grid
        levels = np.concatenate([lm.level_pos.ravel(), lm.level_neg.ravel()])
        rows.append({
            "layer": name, "type": mapped.layer_types[name], "rows": pl.rows, "cols": lm.shape[1],
            "slices": lm.slices,
            "scaling": opts.scaling, "scale_min": float(lm.scale.min()), "scale_max": float(lm.scale.max()),
            "n_levels": len(lm.grid), "g_min": float(lm.grid[0]), "g_max": float(lm.grid[-1]),
            "tile_rows": tr, "tile_cols": tc, "n_arrays": tr * tc,
            "array_utilization": pl.rows * 2 * pl.cols / (tr * tc * pl.array_rows * pl.array_cols),
            "fraction_at_g_min": float((levels == 0).mean()),
        })
    return rows


def scale_table(mapped: MappedModel) -> pa.Table:
    """``scales.parquet``: the scale of every output column of every layer."""
    scales = list(mapped.maps.values())
    layer = np.concatenate([np.full(len(m.scale), i, dtype=np.int32) for i, m in enumerate(scales)])
    return pa.table({"layer": pa.DictionaryArray.from_arrays(layer, list(mapped.maps)),
                     "col": np.concatenate([np.arange(len(m.scale), dtype=np.int32) for m in scales]),
                     "scale": np.concatenate([m.scale for m in scales])})


# --- reading: a cmap artifact back into a mapped model ----------------------------------------

def load_cmap(path: Path | str) -> tuple[artifacts.Artifact, MappedModel, MappingOptions]:
    """Rebuild the mapped model of a cmap artifact (levels, scales, card, placement), checked."""
    artifact = artifacts.load(path, KIND)
    params = artifact.params
    try:
        card = card_of_record(params["card"])
        opts = MappingOptions(**params["mapping"])
        opts.validate()
        code = level_code(card, opts.weight_bits, opts.normalize)  # the rule map-weights applied
        grid = code.grid
        if int(params["n_levels"]) != len(grid):  # before bit slicing, w bits were one cell of 2^w levels
            raise CimtoolError(f"{artifact.path}: its {params['n_levels']} levels per cell are not the "
                               f"{len(grid)} of --weight-bits {opts.weight_bits} on '{card.name}' (a cmap of "
                               "an older cimtool, which stored w bits as one cell of 2^w levels): run "
                               "map-weights again")
    except (KeyError, TypeError, ValueError) as exc:
        raise CimtoolError(f"{artifact.path}: manifest params do not describe a mapping ({exc})") from None
    cells = _read_table(artifact, "cmap.parquet", ("layer", "row", "col", "level_pos", "level_neg", "G_pos",
                                                    "G_neg"))
    scales = _read_table(artifact, "scales.parquet", ("layer", "col", "scale"))
    layers = _read_table(artifact, "layers.parquet", ("layer", "type", "rows", "cols")).to_dict("records")
    where = artifact.file("cmap.parquet")
    if not layers:
        raise CimtoolError(f"{artifact.file('layers.parquet')}: no layers")
    maps, placements, types = {}, {}, {}
    for info in layers:
        name, rows, cols = str(info["layer"]), int(info["rows"]), int(info["cols"]) * code.slices
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
        if len(scale) != int(info["cols"]) or not (np.isfinite(scale).all() and (scale > 0).all()):
            raise CimtoolError(f"{artifact.file('scales.parquet')}: layer '{name}' needs {int(info['cols'])} "
                               "positive scales")
        maps[name] = LayerMap(name, lp, ln, scale, grid, opts.normalize, code.weights)
        placements[name] = maps[name].placement(opts.array_rows, opts.array_cols, opts.layout)
        types[name] = info["type"]
    return artifact, MappedModel(card, maps, placements, types), opts


def _read_table(artifact: artifacts.Artifact, name: str, columns: tuple[str, ...]):
    """A payload table as pandas, with the columns it must have (a one-line error otherwise)."""
    try:
        table = pq.read_table(artifact.file(name))
    except (pa.ArrowException, OSError) as exc:
        raise CimtoolError(f"{artifact.file(name)}: not a readable Parquet table ({exc})") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise CimtoolError(f"{artifact.file(name)}: missing column(s) {', '.join(missing)}")
    return table.to_pandas()
