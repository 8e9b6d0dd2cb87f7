"""`cimtool export-weightmap`: the device team's CSVs (docs/physics.md#placement-on-arrays).

Per crossbar layer ``weightmap-<layer>.csv`` with the exact header
``row,col_pos,col_neg,level_pos,level_neg,G_pos,G_neg`` (``--with-resistance`` appends
``R_pos,R_neg``; bit-sliced weights append ``output,slice,digit_weight``: shift-add the cells'
read-outs of one output with the digit weights), one line per input row × cell
column, and ``columns-<layer>.csv`` mapping every logical output (and slice) to its physical
pos/neg columns (layer-wide and inside its physical array), so that "weights written right but
read from the wrong column" cannot happen silently.

It exports what was mapped: ``--cmap``, or else the newest cmap that map-weights wrote of the model
(``--model``, or the newest of ``--method``) under the artifacts root and that agrees with every
mapping option given here; a model with cmaps none of which agrees is refused (its CSV would be of a
chip nobody mapped or evaluated), and only a model without any cmap is mapped here.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from cimtool import artifacts
from cimtool.devices.card import load_card
from cimtool.devices.cmap import KIND as CMAP
from cimtool.devices.cmap import MappedModel, MappingOptions, load_cmap, map_loaded_model, resolve_card
from cimtool.errors import CimtoolError
from cimtool.models.io import open_model, resolve_model
from cimtool.params import ExportParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput
from cimtool.ui import Reporter, plural

KIND = "weightmap"
HEADER = ("row", "col_pos", "col_neg", "level_pos", "level_neg", "G_pos", "G_neg")
RESISTANCE = ("R_pos", "R_neg")
COLUMN_HEADER = ("output", "col_pos", "col_neg", "tile_col", "array_col_pos", "array_col_neg", "layout")
_MAPPING_FIELDS = tuple(f.name for f in fields(MappingOptions))


def given_mapping(p: ExportParams) -> dict[str, Any]:
    """The mapping options given on the command line (None: not given)."""
    return {k: getattr(p, k) for k in _MAPPING_FIELDS if getattr(p, k) is not None}


def _flags(options: dict[str, Any]) -> str:
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())


def recorded_card(device: str | None) -> dict[str, Any] | None:
    """The card ``--device`` names as a manifest records it (None: not given)."""
    return None if device is None else json.loads(json.dumps(load_card(device).to_dict(), default=str))


def disagreements(params: dict[str, Any], given: dict[str, Any],
                  card: dict[str, Any] | None) -> dict[str, Any]:
    """The mapping options ``given`` that a cmap (its manifest ``params``) was not mapped with, each
    with the cmap's value. ``--device`` is compared by the card's content (``card``:
    :func:`recorded_card`), so a preset name and a path to the same card agree and an edited card
    file does not."""
    def physics(c: dict[str, Any] | None) -> dict[str, Any] | None:  # what the device is, not its prose
        return None if c is None else {k: v for k, v in c.items() if k not in ("source", "description")}

    mapping = params.get("mapping") or {}
    clash = {k: mapping.get(k) for k, v in given.items() if k != "device" and mapping.get(k) != v}
    if card is not None and physics(card) != physics(params.get("card")):
        recorded = (params.get("card") or {}).get("name")
        clash["device"] = (f"{mapping.get('device')} (another version of the card '{recorded}')"
                           if recorded == card["name"] else mapping.get("device"))
    return clash


def cmaps_of(model: artifacts.Artifact, root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(path, manifest params) of the cmaps under the artifacts root mapped from ``model`` (by its
    manifest hash, however its path was spelled), newest first."""
    sha = model.manifest_sha256()
    found = []
    for manifest_path in (root / artifacts.KIND_DIRS[CMAP]).glob(f"*/{artifacts.MANIFEST}"):
        try:
            manifest = json.loads(manifest_path.read_text())
            newest = (str(manifest.get("created", "")), manifest_path.stat().st_mtime_ns)
        except (OSError, ValueError, AttributeError):
            continue  # not readable: not a candidate (it would fail to load anyway)
        inputs, params = manifest.get("inputs"), manifest.get("params")
        if manifest.get("kind") == CMAP and isinstance(inputs, list) and isinstance(params, dict) and any(
                isinstance(i, dict) and i.get("role") == "model" and i.get("manifest_sha256") == sha
                for i in inputs):
            found.append((newest, manifest_path.parent, params))
    return [(path, params) for _, path, params in sorted(found, key=lambda c: c[0], reverse=True)]


def write_csv(table: pa.Table, path: Path) -> None:
    """CSV with a plain (unquoted) header line, numbers at full precision."""
    with open(path, "wb") as fh:
        fh.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, fh, write_options=pacsv.WriteOptions(include_header=False,
                                                                     quoting_style="none"))


def weightmap_table(mapped: MappedModel, name: str, with_resistance: bool) -> pa.Table:
    lm, pl = mapped.maps[name], mapped.placements[name]
    rows, cols = lm.level_pos.shape  # one line per cell (outputs × cells per weight)
    col = np.tile(np.arange(cols, dtype=np.int32), rows)
    col_pos, col_neg = pl.physical_columns(col)
    g_pos, g_neg = lm.g_pos.ravel(), lm.g_neg.ravel()
    columns = {"row": np.repeat(np.arange(rows, dtype=np.int32), cols), "col_pos": col_pos,
               "col_neg": col_neg, "level_pos": lm.level_pos.ravel(), "level_neg": lm.level_neg.ravel(),
               "G_pos": g_pos, "G_neg": g_neg}
    if with_resistance:
        columns.update(R_pos=1.0 / g_pos, R_neg=1.0 / g_neg)
    if lm.slices > 1:  # bit-sliced: the output, digit (least significant first) and its weight c_s
        columns.update(output=col // lm.slices, slice=col % lm.slices,
                       digit_weight=lm.weights[col % lm.slices])
    return pa.table(columns)


def column_table(mapped: MappedModel, name: str) -> pa.Table:
    """One row per cell column pair: its output (and, bit-sliced, its digit) and physical columns."""
    lm, pl = mapped.maps[name], mapped.placements[name]
    cell = np.arange(pl.cols, dtype=np.int32)
    col_pos, col_neg = pl.physical_columns(cell)
    tile_col, a_pos, a_neg = pl.array_columns(cell)
    columns = {"output": cell // lm.slices, "col_pos": col_pos, "col_neg": col_neg, "tile_col": tile_col,
               "array_col_pos": a_pos, "array_col_neg": a_neg, "layout": pa.array([pl.layout] * pl.cols)}
    if lm.slices > 1:
        columns["slice"] = cell % lm.slices
    return pa.table(columns)


@dataclass(frozen=True)
class Source:
    """What is exported: the input artifact (a cmap, or the model mapped here) and its map."""

    artifact: artifacts.Artifact
    mapped: MappedModel
    opts: MappingOptions
    params: ExportParams  # as resolved: the model and the cmap found
    model: str | None  # the model artifact the map is of
    origin: str  # where the map comes from, for the log


def _model_of(cmap: artifacts.Artifact) -> str | None:
    return next((i.get("path") for i in cmap.manifest.get("inputs", []) if i.get("role") == "model"), None)


def _source(p: ExportParams, root: Path, reporter: Reporter) -> Source:
    """--cmap, else the newest agreeing cmap of the model, else the model mapped here (module
    docstring)."""
    given = given_mapping(p)
    if p.cmap is not None:
        if p.model is not None:
            raise CimtoolError("give either --model or --cmap, not both")
        artifact, mapped, opts = load_cmap(p.cmap)
        clash = disagreements(artifact.params, given, recorded_card(p.device))
        if clash:
            raise CimtoolError(f"--cmap {p.cmap} was mapped with {_flags(clash)}; run map-weights again "
                               "to change that")
        return Source(artifact, mapped, opts, p, _model_of(artifact), f"cmap {p.cmap}")
    model_path = resolve_model(p.model, p.method, root, reporter)
    cmaps = cmaps_of(artifacts.load(model_path, verify=False), root)
    card = recorded_card(p.device) if cmaps else None
    agreeing = [path for path, params in cmaps if not disagreements(params, given, card)]
    if agreeing:
        artifact, mapped, opts = load_cmap(agreeing[0])
        mapped_with = f" mapped with {_flags(given)}" if given else ""
        return Source(artifact, mapped, opts, replace(p, model=str(model_path), cmap=str(agreeing[0])),
                      str(model_path), f"the newest cmap of the model{mapped_with}: {agreeing[0]} "
                                       "(--cmap exports another)")
    if cmaps:
        newest, params = cmaps[0]
        raise CimtoolError(f"no cmap of {model_path} agrees with {_flags(given)} (the newest, {newest}, "
                           f"was mapped with {_flags(disagreements(params, given, card))}); export it "
                           f"without those options or with --cmap, or run map-weights {_flags(given)} first")
    artifact, model, spec = open_model(model_path)
    device_name, card = resolve_card(p.device, [artifact], reporter.log)
    opts = MappingOptions(**{**given, "device": device_name})
    opts.validate()
    folder = root / artifacts.KIND_DIRS[CMAP]
    return Source(artifact, map_loaded_model(model, spec, opts, reporter, card), opts,
                  replace(p, model=str(model_path)), str(model_path),
                  f"the model mapped here (it has no cmap under {folder})")


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    bits = f"w{s['weight_bits']} ({s['n_levels']} levels)" if s.get("weight_bits") else \
        f"the card's {s['n_levels']} levels"
    if s.get("slices", 1) > 1:
        bits = f"w{s['weight_bits']} ({s['slices']} cells of {s['n_levels']} levels per weight)"
    source = f"cmap {Path(s['cmap']).name}" if s.get("cmap") else "mapped here"
    files = ", ".join(f"{v['weightmap']} ({plural(v['lines'], 'line')})" for v in s["layers"].values())
    model = Path(s["model"]).name if s.get("model") else "?"
    return (f"[green]weightmap[/green] {artifact.path}  model {model} on '{s['device']}', "
            f"{bits}, {s['layout']} columns ({source}): {files}")


def run(p: ExportParams, out: Path | None, root: Path, force: bool, reporter: Reporter) -> artifacts.Artifact:
    t_start = time.perf_counter()
    MappingOptions(**given_mapping(p)).validate()  # refuse bad options before reading anything
    source = _source(p, root, reporter)
    p, mapped, opts = source.params, source.mapped, source.opts
    from_cmap = source.artifact.kind == CMAP
    output = StageOutput(KIND, out, root, f"{source.artifact.path.name}-{opts.layout}", force,
                         inputs=[source.artifact.path], started=t_start)
    out = output.path
    params = {**asdict(p), "mapping": asdict(opts), "card": mapped.card.to_dict()}
    reporter.log(f"export-weightmap: {source.origin}")
    reporter.log(f"export-weightmap: {plural(len(mapped.maps), 'layer')} of {source.model} on "
                 f"'{mapped.card.name}', {opts.layout} columns → {out}")
    files: dict[str, dict[str, Any]] = {}
    with output.writer(params) as writer:
        for name, lm in mapped.maps.items():
            weights, cols = f"weightmap-{name}.csv", f"columns-{name}.csv"
            write_csv(weightmap_table(mapped, name, p.with_resistance), writer.path(weights))
            write_csv(column_table(mapped, name), writer.path(cols))
            rows, cells = lm.level_pos.shape
            files[name] = {"weightmap": weights, "columns": cols, "rows": rows, "outputs": lm.shape[1],
                           "lines": rows * cells, "physical_columns": 2 * cells}
        summary = {"device": mapped.card.name, "layout": opts.layout, "n_levels": len(lm.grid),
                   "slices": lm.slices,
                   "g_min": mapped.card.g_min, "g_max": mapped.card.g_max,
                   "with_resistance": p.with_resistance, "layers": files, "model": source.model,
                   "weight_bits": opts.weight_bits, "cmap": str(source.artifact.path) if from_cmap else None}
        return output.commit(writer, [source.artifact.as_input(source.artifact.kind)], summary)
