"""`cimtool export-weightmap`: the device team's CSVs (docs/physics.md#placement-on-arrays).

Per crossbar layer ``weightmap-<layer>.csv`` with the exact header
``row,col_pos,col_neg,level_pos,level_neg,G_pos,G_neg`` (``--with-resistance`` appends
``R_pos,R_neg``), one line per input row × output, and ``columns-<layer>.csv`` mapping every
logical output to its physical pos/neg columns (layer-wide and inside its physical array), so that
"weights written right but read from the wrong column" cannot happen silently.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from cimtool import artifacts
from cimtool.devices.cmap import MappedModel, MappingOptions, load_cmap, map_loaded_model
from cimtool.errors import CimtoolError
from cimtool.models.io import open_model, resolve_model
from cimtool.params import ExportParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput
from cimtool.ui import Reporter

KIND = "weightmap"
HEADER = ("row", "col_pos", "col_neg", "level_pos", "level_neg", "G_pos", "G_neg")
RESISTANCE = ("R_pos", "R_neg")
COLUMN_HEADER = ("output", "col_pos", "col_neg", "tile_col", "array_col_pos", "array_col_neg", "layout")
_MAPPING_FIELDS = tuple(f.name for f in fields(MappingOptions))


def given_mapping(p: ExportParams) -> dict[str, Any]:
    """The mapping options given on the command line (None: not given)."""
    return {k: getattr(p, k) for k in _MAPPING_FIELDS if getattr(p, k) is not None}




def write_csv(table: pa.Table, path: Path) -> None:
    """CSV with a plain (unquoted) header line, numbers at full precision."""
    with open(path, "wb") as fh:
        fh.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, fh, write_options=pacsv.WriteOptions(include_header=False,
                                                                     quoting_style="none"))


def weightmap_table(mapped: MappedModel, name: str, with_resistance: bool) -> pa.Table:
    lm, pl = mapped.maps[name], mapped.placements[name]
    rows, cols = lm.shape
    col = np.tile(np.arange(cols, dtype=np.int32), rows)
    col_pos, col_neg = pl.physical_columns(col)
    g_pos, g_neg = lm.g_pos.ravel(), lm.g_neg.ravel()
    columns = {"row": np.repeat(np.arange(rows, dtype=np.int32), cols), "col_pos": col_pos,
               "col_neg": col_neg, "level_pos": lm.level_pos.ravel(), "level_neg": lm.level_neg.ravel(),
               "G_pos": g_pos, "G_neg": g_neg}
    if with_resistance:
        columns.update(R_pos=1.0 / g_pos, R_neg=1.0 / g_neg)
    return pa.table(columns)


def column_table(mapped: MappedModel, name: str) -> pa.Table:
    pl = mapped.placements[name]
    out = np.arange(pl.cols, dtype=np.int32)
    col_pos, col_neg = pl.physical_columns(out)
    tile_col, a_pos, a_neg = pl.array_columns(out)
    return pa.table({"output": out, "col_pos": col_pos, "col_neg": col_neg, "tile_col": tile_col,
                     "array_col_pos": a_pos, "array_col_neg": a_neg,
                     "layout": pa.array([pl.layout] * pl.cols)})


def _mapped(p: ExportParams, root: Path, reporter: Reporter):
    """(input artifact, mapped model, mapping options) from --cmap, or by mapping a model."""
    if p.cmap is not None:
        if p.model is not None:
            raise CimtoolError("give either --model or --cmap, not both")
        artifact, mapped, opts = load_cmap(p.cmap)
        clash = {k: v for k, v in given_mapping(p).items() if getattr(opts, k) != v}
        if clash:
            raise CimtoolError(f"--cmap {p.cmap} was mapped with "
                               + ", ".join(f"--{k.replace('_', '-')} {getattr(opts, k)}" for k in clash)
                               + "; run map-weights again to change that")
        return artifact, mapped, opts
    opts = MappingOptions(**given_mapping(p))
    opts.validate()
    model_path = resolve_model(p.model, p.method, root, reporter)
    artifact, model, spec = open_model(model_path)
    return artifact, map_loaded_model(model, spec, opts, reporter), opts


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    files = ", ".join(f"{v['weightmap']} ({v['lines']} lines)" for v in s["layers"].values())
    return f"[green]weightmap[/green] {artifact.path}  {files}; {s['layout']} columns"


def run(p: ExportParams, out: Path | None, root: Path, force: bool, reporter: Reporter) -> artifacts.Artifact:
    t_start = time.perf_counter()
    MappingOptions(**given_mapping(p)).validate()  # refuse bad options before reading anything
    source, mapped, opts = _mapped(p, root, reporter)
    output = StageOutput(KIND, out, root, f"{source.path.name}-{opts.layout}", force,
                         inputs=[source.path], started=t_start)
    out = output.path
    params = {**asdict(p), "mapping": asdict(opts), "card": mapped.card.to_dict()}
    reporter.log(f"export-weightmap: {len(mapped.maps)} layer(s), {opts.layout} columns → {out}")
    files: dict[str, dict[str, Any]] = {}
    with output.writer(params) as writer:
        for name, lm in mapped.maps.items():
            weights, cols = f"weightmap-{name}.csv", f"columns-{name}.csv"
            write_csv(weightmap_table(mapped, name, p.with_resistance), writer.path(weights))
            write_csv(column_table(mapped, name), writer.path(cols))
            files[name] = {"weightmap": weights, "columns": cols, "rows": lm.shape[0],
                           "outputs": lm.shape[1], "lines": lm.shape[0] * lm.shape[1],
                           "physical_columns": 2 * lm.shape[1]}
        summary = {"device": mapped.card.name, "layout": opts.layout, "n_levels": len(lm.grid),
                   "g_min": mapped.card.g_min, "g_max": mapped.card.g_max,
                   "with_resistance": p.with_resistance, "layers": files}
        return output.commit(writer, [source.as_input(source.kind)], summary)
