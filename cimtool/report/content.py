"""What a report says: sections of tables, figures and text, built from loaded artifacts.

Every number comes from an artifact's manifest summary or payload table; tables name the artifact
(and the summary key) each row comes from, and the report lists every artifact with its manifest
hash.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.report import figures


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    wrap: tuple[str, ...] = ()  # columns of long unbroken text (hashes, paths): may break anywhere


@dataclass
class Figure:
    name: str  # file name, e.g. "curves-<artifact>.png"
    png: bytes
    caption: str


@dataclass
class Section:
    title: str
    blocks: list[Table | Figure | str] = field(default_factory=list)


def common_root(arts: list[artifacts.Artifact]) -> Path:
    """The deepest folder holding every artifact (the artifacts root, a pipeline's $OUT)."""
    return Path(os.path.commonpath([str(a.path.parent) for a in arts]))


def names(arts: list[artifacts.Artifact]) -> dict[str, str]:
    """The name each artifact goes by in the report (keyed by ``str(path)``): its directory name, or,
    where several artifacts share one (``models/demo``, ``cmaps/demo``), its path relative to
    :func:`common_root`."""
    root = common_root(arts) if arts else Path("/")
    count = Counter(a.path.name for a in arts)
    return {str(a.path): a.path.name if count[a.path.name] == 1
            else Path(os.path.relpath(a.path, root)).as_posix() for a in arts}


def _file(name: str) -> str:
    """A figure file name part from an artifact name (``models/demo`` → ``models-demo``)."""
    return name.replace("/", "-")


def _read(art: artifacts.Artifact, name: str) -> pd.DataFrame:
    return pq.read_table(art.file(name)).to_pandas()


# --- accuracy across stages ---------------------------------------------------------------------

def _rows_model(art) -> list[tuple[str, str, str | None]]:
    return [("float", "test_accuracy", None)]


def _rows_qmodel(art) -> list[tuple[str, str, str | None]]:
    mode = art.summary.get("mode", "qat")
    return [("PTQ (ideal levels)", "ptq_accuracy", None),
            (f"{mode} (ideal levels)", "test_accuracy", None),
            ("PTQ on the array, non-ideal", "nonideal_plain_mean", "nonideal_plain_std"),
            (f"{mode} on the array, non-ideal", "nonideal_mean", "nonideal_std")]


def _rows_cmap(art) -> list[tuple[str, str, str | None]]:
    if "accuracy_mapped_ideal" not in art.summary:
        return []
    return [("mapped, ideal array", "accuracy_mapped_ideal", None),
            ("mapped, non-ideal array", "accuracy_nonideal_mean", "accuracy_nonideal_std")]


def _rows_snn(art) -> list[tuple[str, str, str | None]]:
    return [("quantized ANN (SNN twin)", "quantized_ann_test_accuracy", None),
            (f"SNN, T={art.summary.get('timesteps')}", "test_accuracy", None)]


ACCURACY_ROWS = {"model": _rows_model, "qmodel": _rows_qmodel, "cmap": _rows_cmap, "snn": _rows_snn}
STAGE_ORDER = ("model", "qmodel", "snn", "cmap", "sweep")


def accuracy_table(arts: list[artifacts.Artifact]) -> pd.DataFrame:
    """One row per (artifact, condition): the accuracy and its std as recorded in the manifest."""
    rows = []
    label = names(arts)
    for art in sorted(arts, key=lambda a: (STAGE_ORDER.index(a.kind) if a.kind in STAGE_ORDER else 99,
                                           str(a.path))):
        s = art.summary
        if art.kind == "sweep":
            for role in ("best", "recommended"):
                c = s[role]
                rows.append({"stage": "sweep",
                             "condition": f"sweep {role}: w{c['weight_bits']} {c['scheme']} "
                                          f"adc{c['adc_bits']} T{c['timesteps']}",
                             "accuracy": c["test_mean"],
                             "std": c["test_std"], "key": f"summary.{role}.test_mean",
                             "artifact": label[str(art.path)], "manifest_sha256": art.manifest_sha256()})
            continue
        for condition, key, std_key in ACCURACY_ROWS.get(art.kind, lambda _a: [])(art):
            if s.get(key) is None:
                continue
            rows.append({"stage": art.kind, "condition": condition, "accuracy": float(s[key]),
                         "std": float(s[std_key]) if std_key and s.get(std_key) is not None else None,
                         "key": f"summary.{key}", "artifact": label[str(art.path)],
                         "manifest_sha256": art.manifest_sha256()})
    return pd.DataFrame(rows, columns=["stage", "condition", "accuracy", "std", "key", "artifact",
                                       "manifest_sha256"])


# --- sections -----------------------------------------------------------------------------------

def _created(manifest: dict[str, Any]) -> str:
    return str(manifest.get("created", "")).replace("T", " ").replace("+00:00", " UTC")


def sources(arts: list[artifacts.Artifact]) -> Section:
    root = common_root(arts)
    rows = [[a.kind, Path(os.path.relpath(a.path, root)).as_posix(), a.manifest["schema"],
             _created(a.manifest), a.manifest_sha256()] for a in arts]
    columns = ["kind", "artifact (path)", "schema", "created", "manifest sha256"]
    return Section("Sources", ["Every number in this report comes from one of these artifacts (verified: "
                               "schema and payload hashes). The report names each by its folder, or by its "
                               f"path where two share a folder name; paths are relative to {root}.",
                               Table(columns, rows, wrap=("artifact (path)", "manifest sha256"))])


def _pm(value: float, std: float, digits: int = 4) -> str:
    """``value ± std`` that does not break across lines."""
    return f"{value:.{digits}f}\u00a0±\u00a0{std:.{digits}f}"


def accuracy(table: pd.DataFrame) -> Section:
    rows = [[r.stage, r.condition, f"{r.accuracy:.4f}", "" if pd.isna(r.std) else f"±\u00a0{r.std:.4f}",
             r.artifact, r.key, r.manifest_sha256[:12]] for r in table.itertuples()]
    if not rows:  # e.g. a report of device fits or NeuroSim runs only: no empty table
        return Section("Accuracy across stages (test split)")
    return Section("Accuracy across stages (test split)",
                   [Table(["stage", "condition", "accuracy", "std", "artifact", "from", "sha256"], rows,
                          wrap=("artifact",))])


def curves(arts: list[artifacts.Artifact]) -> Section:
    section = Section("Training curves")
    label = names(arts)
    for art in arts:
        if art.kind in ("model", "qmodel") and "metrics.parquet" in art.manifest["files"]:
            metrics = _read(art, "metrics.parquet")
            name = label[str(art.path)]
            if len(metrics):
                section.blocks.append(Figure(f"curves-{_file(name)}.png",
                                             figures.training_curves(metrics, name),
                                             f"Loss and accuracy per epoch of {name} (solid: train, dashed: "
                                             "val)."))
    return section


def spiking(arts: list[artifacts.Artifact]) -> Section:
    """Per source model with SNNs at several levels: test accuracy vs L of the float ANN, the
    converted-only SNN and the SNN of the trained twin (calibrate-threshold --train-epochs)."""
    section = Section("Spiking networks: accuracy vs levels")
    label = names(arts)
    rows = []
    for art in arts:
        if art.kind != "snn":
            continue
        s = art.summary
        source = _input_path(art, "model") or str(art.path)
        base = {"source": source, "levels": int(s["levels"]), "artifact": label[str(art.path)]}
        rows.append({**base, "condition": "float ANN", "accuracy": s["ann_test_accuracy"]})
        if s.get("train_epochs"):
            rows.append({**base, "condition": "trained twin", "accuracy": s["test_accuracy"]})
            rows.append({**base, "condition": "converted only", "accuracy": s["converted_test_accuracy"]})
        else:
            rows.append({**base, "condition": "converted only", "accuracy": s["test_accuracy"]})
    if not rows:
        return section
    table = pd.DataFrame(rows).drop_duplicates(["source", "levels", "condition"], keep="last")
    for source, part in table.groupby("source", sort=True):
        if part["levels"].nunique() < 2 and "trained twin" not in set(part["condition"]):
            continue  # one converted SNN: the accuracy table says it all
        name = Path(source).name
        wide = part.pivot(index="levels", columns="condition", values="accuracy").sort_index()
        columns = [c for c in ("float ANN", "converted only", "trained twin") if c in wide.columns]
        cells = [[int(level), *(f"{wide.loc[level, c]:.4f}" if pd.notna(wide.loc[level, c]) else ""
                                for c in columns)] for level in wide.index]
        section.blocks.append(Table(["levels L", *columns], cells))
        png = figures.accuracy_vs_levels(part, f"{name}: SNN test accuracy vs levels")
        section.blocks.append(Figure(f"levels-{_file(name)}.png", png,
                                     f"Test accuracy vs levels L of the SNNs of {name}: the float ANN, the "
                                     "SNN converted with calibrated thresholds, and the SNN of the trained "
                                     "quantized-ANN twin (equal to it exactly)."))
    return section


def sweeps(arts: list[artifacts.Artifact]) -> Section:
    section = Section("Design-space sweeps")
    label = names(arts)
    for art in arts:
        if art.kind != "sweep":
            continue
        table = _read(art, "sweep.parquet")
        sel = _read(art, "selection.parquet").set_index("role")
        best, rec = sel.loc["best"].to_dict(), sel.loc["recommended"].to_dict()
        name = label[str(art.path)]
        energy = art.summary.get("energy_key", "energy_pj")  # what ranked the configurations
        by = (f"NeuroSim {art.summary.get('neurosim_version', '')}" if energy != "energy_pj"
              else "cimtool cost model")
        trials = art.summary.get("trials")
        section.blocks += [
            f"{name}: {len(table)} configurations on '{art.summary.get('device')}', "
            f"{trials} simulated chip{'' if trials == 1 else 's'} each; "
            f"recommendation: the lowest energy by the {by} within {art.summary.get('tolerance_points')} "
            "points of the best (val), both then tested once.",
            Table(["role", "method", "weight bits", "scheme", "ADC bits", "T", "val accuracy",
                   "test accuracy", "energy / inference (pJ)"],
                  [[role, r["method"], r["weight_bits"], r["scheme"], r["adc_bits"], r["timesteps"],
                    _pm(r["val_mean"], r["val_std"]), _pm(r["test_mean"], r["test_std"]),
                    f"{r[energy]:.4g}"] for role, r in (("best", best), ("recommended", rec))]),
            Figure(f"sweep-heatmap-{_file(name)}.png", figures.sweep_heatmap(table, best, rec, name),
                   "Val accuracy vs weight bits × ADC bits (red: best, orange: recommended)."),
            Figure(f"sweep-t-{_file(name)}.png", figures.sweep_vs_t(table, best, rec, name),
                   "Val accuracy vs T for the best and recommended configurations "
                   "(mean ± std over chips)."),
            Figure(f"sweep-pareto-{_file(name)}.png",
                   figures.pareto(table, energy, "val_mean", "configurations",
                                  f"{name}: accuracy vs energy ({by})",
                                  {"best": (best[energy], best["val_mean"]),
                                   "recommended": (rec[energy], rec["val_mean"])}),
                   f"Val accuracy vs energy per inference ({by}) of every configuration, with the Pareto "
                   "front."),
        ]
    return section


def conductances(arts: list[artifacts.Artifact]) -> Section:
    section = Section("Conductance levels")
    label = names(arts)
    for art in arts:
        if art.kind != "cmap":
            continue
        cells = _read(art, "cmap.parquet")
        n_levels = int(_read(art, "layers.parquet")["n_levels"].max())
        name = label[str(art.path)]
        section.blocks.append(Figure(f"levels-{_file(name)}.png",
                                     figures.level_histograms(cells, n_levels, name),
                                     f"Cells per conductance level and layer of {name} (log scale; level 0 "
                                     "= g_min, where the idle branch of each differential pair sits)."))
    return section


# --- device fits (kind "device": `cimtool devices fit`) --------------------------------------------

DEVICE_KIND = "device"


def _value(value: float, uncertainty: float = math.nan, unit: str = "", digits: int = 4) -> str:
    """``value ± uncertainty unit``: siemens with an SI prefix (2.39e-12 S → 2.39 pS), the uncertainty in
    the value's prefix; no ``±`` without an uncertainty (NaN) or an exact one (0); a count as an integer."""
    if not math.isfinite(value):
        return "—"
    exact = not math.isfinite(uncertainty) or uncertainty == 0
    scale, prefix = figures.si_scale(value) if unit == "S" else (1.0, "")
    suffix = f" {prefix}{unit}" if unit else ""
    if exact and float(value).is_integer() and abs(value) < 1e6:
        return f"{int(value)}{suffix}"
    text = f"{value / scale:.{digits}g}"
    if not exact:
        text += f"\u00a0±\u00a0{uncertainty / scale:.2g}"
    return text + suffix


def _number(value: Any) -> float:
    return math.nan if value is None or pd.isna(value) else float(value)


def _text(value: Any) -> str:
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def devices(arts: list[artifacts.Artifact]) -> Section:
    """Per device artifact: the fitted card's values (± uncertainty, how each was determined) and the
    measured vs fitted pulse trains with their residuals."""
    section = Section("Device fits")
    label = names(arts)
    for art in arts:
        if art.kind != DEVICE_KIND:
            continue
        name, s, files = label[str(art.path)], art.summary, art.manifest["files"]
        headline = [f"{name}: device card '{s.get('card_name', '?')}'"]
        if s.get("rms_residual") is not None:
            headline.append(f"RMS residual {_value(float(s['rms_residual']), unit='S', digits=3)}")
        if s.get("point_to_point_noise") is not None:
            headline.append("point-to-point noise "
                            f"{_value(float(s['point_to_point_noise']), unit='S', digits=3)}")
        points = _read(art, "points.parquet") if "points.parquet" in files else None
        if points is not None and len(points):
            headline.append(f"{len(points)} readings of {points['device'].nunique()} device(s), "
                            f"{points.groupby('device')['cycle'].nunique().max()} cycle(s) at most")
        section.blocks.append("; ".join(headline) + ".")
        if "fit.parquet" in files:
            fit = _read(art, "fit.parquet")
            section.blocks.append(Table(
                ["quantity", "value", "how determined"],
                [[r.quantity, _value(_number(r.value), _number(r.uncertainty), _text(r.unit)), _text(r.note)]
                 for r in fit.itertuples()]))
        if points is not None and len(points):
            section.blocks.append(Figure(
                f"device-{_file(name)}.png", figures.device_fit(points, f"{name}: {s.get('card_name', '')}"),
                "Measured (dots) and fitted (line) conductance per pulse, potentiation (LTP) then depression "
                "(LTD) on one pulse axis; below, the residuals (measured − fitted)."))
    return section


AREA_KEYS = ["area_cim_array_um2", "area_adc_um2", "area_accumulation_um2", "area_ic_um2", "area_other_um2"]
ENERGY_KEYS = ["adc_energy_pj", "accumulation_energy_pj", "other_energy_pj", "leakage_energy_pj"]


def neurosim(arts: list[artifacts.Artifact], by_path: dict[str, artifacts.Artifact]) -> Section:
    section = Section("NeuroSim")
    runs = [a for a in arts if a.kind == "neurosim"]
    if not runs:
        return section
    label = names(arts)
    metrics = {label[str(a.path)]: dict(zip(*(_read(a, "summary.parquet")[c] for c in ("metric", "value")),
                                            strict=True))
               for a in runs}
    section.blocks += [
        Table(["run", "area (µm²)", "latency (ns)", "dynamic energy (pJ)", "TOPS/W", "TOPS", "FPS",
               "sha256"],
              [[label[str(a.path)], *(f"{a.summary.get(k):.4g}"
                                      for k in ("chip_area_um2", "latency_ns", "dynamic_energy_pj",
                                                "tops_per_w", "tops", "fps")),
                a.manifest_sha256()[:12]] for a in runs]),
        Figure("neurosim-area.png",
               figures.breakdown_bars(metrics, AREA_KEYS, "area (µm²)", "Chip area breakdown"),
               "NeuroSim chip area by component."),
        Figure("neurosim-energy.png", figures.breakdown_bars(metrics, ENERGY_KEYS, "energy per image (pJ)",
                                                             "Energy per image"),
               "NeuroSim energy per image by component (dynamic parts and leakage)."),
    ]
    points = []
    for a in runs:  # accuracy of the model each run traced: trace → model
        trace = by_path.get(_input_path(a, "trace"))
        model = by_path.get(_input_path(trace, "model")) if trace else None
        if model is not None and model.summary.get("test_accuracy") is not None:
            leakage = metrics[label[str(a.path)]].get("leakage_energy_pj") or 0
            energy = (a.summary.get("dynamic_energy_pj") or 0) + leakage
            points.append({"run": label[str(a.path)], "image_energy_pj": energy,
                           "test_accuracy": model.summary["test_accuracy"]})
    if points:
        frame = pd.DataFrame(points)
        section.blocks.append(Figure("neurosim-pareto.png",
                                     figures.pareto(frame, "image_energy_pj", "test_accuracy",
                                                    "NeuroSim runs", "Accuracy vs NeuroSim energy per image",
                                                    annotate="run"),
                                     "Test accuracy of each traced model vs its NeuroSim energy per image "
                                     "(dynamic + leakage), with the Pareto front."))
    return section


def _input_path(art: artifacts.Artifact | None, role: str) -> str | None:
    ref = next((i for i in (art.manifest.get("inputs", []) if art else []) if i.get("role") == role), None)
    return str(Path(ref["path"]).resolve()) if ref else None


def profiles(arts: list[artifacts.Artifact]) -> Section:
    section = Section("Profiles")
    label = names(arts)
    for art in arts:
        if art.kind != "profile":
            continue
        table = _read(art, "profile.parquet")
        section.blocks += [f"{label[str(art.path)]} (medians of repeated runs after warm-up):",
                           Table(["mode", "phase", "dtype", "device", "batch", "latency (ms)", "samples/s"],
                                 [[r.mode, r.phase, r.dtype, r.device, r.batch_size, f"{r.latency_ms:.4g}",
                                   f"{r.throughput_sps:.4g}"] for r in table.itertuples()])]
    return section
