"""What a report says: sections of tables, figures and text, built from loaded artifacts.

Every number comes from an artifact's manifest summary or payload table; tables name the artifact
(and the summary key) each row comes from, and the report lists every artifact with its manifest
hash.
"""

from __future__ import annotations

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


@dataclass
class Figure:
    name: str  # file name, e.g. "curves-<artifact>.png"
    png: bytes
    caption: str


@dataclass
class Section:
    title: str
    blocks: list[Table | Figure | str] = field(default_factory=list)


def short(art: artifacts.Artifact) -> str:
    return art.path.name


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
                             "artifact": short(art), "manifest_sha256": art.manifest_sha256()})
            continue
        for condition, key, std_key in ACCURACY_ROWS.get(art.kind, lambda _a: [])(art):
            if s.get(key) is None:
                continue
            rows.append({"stage": art.kind, "condition": condition, "accuracy": float(s[key]),
                         "std": float(s[std_key]) if std_key and s.get(std_key) is not None else None,
                         "key": f"summary.{key}", "artifact": short(art),
                         "manifest_sha256": art.manifest_sha256()})
    return pd.DataFrame(rows, columns=["stage", "condition", "accuracy", "std", "key", "artifact",
                                       "manifest_sha256"])


# --- sections -----------------------------------------------------------------------------------

def sources(arts: list[artifacts.Artifact]) -> Section:
    rows = [[a.kind, short(a), a.manifest["schema"], a.manifest.get("created", ""), a.manifest_sha256(),
             str(a.path)] for a in arts]
    return Section("Sources", ["Every number in this report comes from one of these artifacts (verified: "
                               "schema and payload hashes).",
                               Table(["kind", "artifact", "schema", "created", "manifest sha256", "path"],
                                     rows)])


def accuracy(table: pd.DataFrame) -> Section:
    rows = [[r.stage, r.condition, f"{r.accuracy:.4f}", "" if pd.isna(r.std) else f"± {r.std:.4f}",
             r.artifact, r.key, r.manifest_sha256[:12]] for r in table.itertuples()]
    return Section("Accuracy across stages (test split)",
                   [Table(["stage", "condition", "accuracy", "std", "artifact", "from", "sha256"], rows)])


def curves(arts: list[artifacts.Artifact]) -> Section:
    section = Section("Training curves")
    for art in arts:
        if art.kind in ("model", "qmodel") and "metrics.parquet" in art.manifest["files"]:
            metrics = _read(art, "metrics.parquet")
            if len(metrics):
                section.blocks.append(Figure(f"curves-{short(art)}.png",
                                             figures.training_curves(metrics, short(art)),
                                             f"Loss and accuracy per epoch of {short(art)}."))
    return section


def sweeps(arts: list[artifacts.Artifact]) -> Section:
    section = Section("Design-space sweeps")
    for art in arts:
        if art.kind != "sweep":
            continue
        table = _read(art, "sweep.parquet")
        sel = _read(art, "selection.parquet").set_index("role")
        best, rec = sel.loc["best"].to_dict(), sel.loc["recommended"].to_dict()
        name = short(art)
        energy = art.summary.get("energy_key", "energy_pj")  # what ranked the configurations
        by = (f"NeuroSim {art.summary.get('neurosim_version', '')}" if energy != "energy_pj"
              else "cimtool cost model")
        section.blocks += [
            f"{name}: {len(table)} configurations on '{art.summary.get('device')}', "
            f"{art.summary.get('trials')} chips each; "
            f"recommendation: the lowest energy by the {by} within {art.summary.get('tolerance_points')} "
            "points of the best (val), both then tested once.",
            Table(["role", "method", "weight bits", "scheme", "ADC bits", "T", "val", "test",
                   f"energy (pJ, {by})"],
                  [[role, r["method"], r["weight_bits"], r["scheme"], r["adc_bits"], r["timesteps"],
                    f"{r['val_mean']:.4f} ± {r['val_std']:.4f}",
                    f"{r['test_mean']:.4f} ± {r['test_std']:.4f}",
                    f"{r[energy]:.4g}"] for role, r in (("best", best), ("recommended", rec))]),
            Figure(f"sweep-heatmap-{name}.png", figures.sweep_heatmap(table, best, rec, name),
                   "Val accuracy vs weight bits × ADC bits (red: best, orange: recommended)."),
            Figure(f"sweep-t-{name}.png", figures.sweep_vs_t(table, best, rec, name),
                   "Val accuracy vs T for the best and recommended configurations "
                   "(mean ± std over chips)."),
            Figure(f"sweep-pareto-{name}.png",
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
    for art in arts:
        if art.kind != "cmap":
            continue
        cells = _read(art, "cmap.parquet")
        n_levels = int(_read(art, "layers.parquet")["n_levels"].max())
        section.blocks.append(Figure(f"levels-{short(art)}.png",
                                     figures.level_histograms(cells, n_levels, short(art)),
                                     f"Cells per conductance level and layer of {short(art)} (log scale)."))
    return section


AREA_KEYS = ["area_cim_array_um2", "area_adc_um2", "area_accumulation_um2", "area_ic_um2", "area_other_um2"]
ENERGY_KEYS = ["adc_energy_pj", "accumulation_energy_pj", "other_energy_pj", "leakage_energy_pj"]


def neurosim(arts: list[artifacts.Artifact], by_path: dict[str, artifacts.Artifact]) -> Section:
    section = Section("NeuroSim")
    runs = [a for a in arts if a.kind == "neurosim"]
    if not runs:
        return section
    metrics = {short(a): dict(zip(*(_read(a, "summary.parquet")[c] for c in ("metric", "value")),
                                  strict=True))
               for a in runs}
    section.blocks += [
        Table(["run", "area (µm²)", "latency (ns)", "dynamic energy (pJ)", "TOPS/W", "TOPS", "FPS",
               "sha256"],
              [[short(a), *(f"{a.summary.get(k):.4g}"
                            for k in ("chip_area_um2", "latency_ns", "dynamic_energy_pj",
                                      "tops_per_w", "tops", "fps")),
                a.manifest_sha256()[:12]] for a in runs]),
        Figure("neurosim-area.png", figures.breakdown_bars(metrics, AREA_KEYS, "µm²", "Chip area breakdown"),
               "NeuroSim chip area by component."),
        Figure("neurosim-energy.png", figures.breakdown_bars(metrics, ENERGY_KEYS, "pJ", "Energy per image"),
               "NeuroSim energy per image by component (dynamic parts and leakage)."),
    ]
    points = []
    for a in runs:  # accuracy of the model each run traced: trace → model
        trace = by_path.get(_input_path(a, "trace"))
        model = by_path.get(_input_path(trace, "model")) if trace else None
        if model is not None and model.summary.get("test_accuracy") is not None:
            leakage = metrics[short(a)].get("leakage_energy_pj") or 0
            energy = (a.summary.get("dynamic_energy_pj") or 0) + leakage
            points.append({"run": short(a), "energy_pj": energy,
                           "test_accuracy": model.summary["test_accuracy"]})
    if points:
        frame = pd.DataFrame(points)
        section.blocks.append(Figure("neurosim-pareto.png",
                                     figures.pareto(frame, "energy_pj", "test_accuracy", "NeuroSim runs",
                                                    "Accuracy vs NeuroSim energy per image"),
                                     "Test accuracy of each traced model vs its NeuroSim energy per image "
                                     "(dynamic + leakage), with the Pareto front."))
    return section


def _input_path(art: artifacts.Artifact | None, role: str) -> str | None:
    ref = next((i for i in (art.manifest.get("inputs", []) if art else []) if i.get("role") == role), None)
    return str(Path(ref["path"]).resolve()) if ref else None


def profiles(arts: list[artifacts.Artifact]) -> Section:
    section = Section("Profiles")
    for art in arts:
        if art.kind != "profile":
            continue
        table = _read(art, "profile.parquet")
        section.blocks += [f"{short(art)} (medians of repeated runs after warm-up):",
                           Table(["mode", "phase", "dtype", "device", "batch", "latency (ms)", "samples/s"],
                                 [[r.mode, r.phase, r.dtype, r.device, r.batch_size, f"{r.latency_ms:.4g}",
                                   f"{r.throughput_sps:.4g}"] for r in table.itertuples()])]
    return section
