"""What a report says: sections of tables, figures and text, built from loaded artifacts.

Every number comes from an artifact's manifest summary or payload table; tables name the artifact
(and the summary key) each row comes from, and the report lists every artifact with its manifest
hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.devices import card as device_card
from cimtool.neurosim.caveats import V21_PARTS
from cimtool.nn.array_config import EFFECTS
from cimtool.report import figures
from cimtool.ui import plural


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
class Caveat:
    """A condition a number holds under, shown beside it (an artifact summary's ``caveats``)."""

    text: str
    artifact: str | None = None  # whose numbers it qualifies; None: the report's own


@dataclass
class Section:
    title: str
    blocks: list[Table | Figure | Caveat | str] = field(default_factory=list)


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


def caveats(art: artifacts.Artifact, name: str) -> list[Caveat]:
    """The sentences of the artifact summary's ``caveats`` (none where it has none)."""
    found = art.summary.get("caveats") or []
    return [Caveat(str(text), name) for text in ([found] if isinstance(found, str) else found)]


# --- accuracy across stages ---------------------------------------------------------------------

def _device(art: artifacts.Artifact) -> str:
    return str(art.summary.get("device") or (art.params.get("card") or {}).get("name") or "?")


def _cells(bits: Any, slices: Any) -> str:
    """``w8``, and where a weight is bit-sliced over several cells ``w8 as 2 cells per weight``."""
    return f"w{bits}" + (f" as {slices} cells per weight" if slices and slices > 1 else "")


def _bits(art: artifacts.Artifact) -> str:
    """``w4`` (with its cells per weight), or the card's levels where no ``--weight-bits`` was given."""
    bits = art.summary.get("weight_bits") or (art.params.get("mapping") or {}).get("weight_bits")
    if bits:
        return _cells(bits, art.summary.get("slices"))
    levels = art.summary.get("n_levels") or art.params.get("n_levels")
    return f"{levels} card levels" if levels else "card levels"


def chip(device: str, bits: str, effects: list[str] | tuple[str, ...] | None,
         adc_bits: int | None = None, scheme: str | None = None) -> str:
    """The conditions of an accuracy: ``rram_seed003, w4, adc8 B, effects d2d,c2c,read``; ``effects``
    None: an ideal array (the levels only, ideal converters)."""
    parts = [device, bits]
    if effects is None:
        return ", ".join([*parts, "ideal array"])
    if adc_bits:
        parts.append(f"adc{adc_bits} {scheme}" if scheme else f"adc{adc_bits}")
    return ", ".join([*parts, f"effects {','.join(effects)}" if effects else "no effects"])


Row = tuple[str, str, "str | None", str]  # condition, summary key, its std's key, chip


def _rows_model(art, by_path) -> list[Row]:
    return [("float", "test_accuracy", "test_accuracy_std", "ideal")]  # std: over photon-noise draws


def _rows_qmodel(art, by_path) -> list[Row]:
    mode = art.summary.get("mode", "qat")
    device, bits = _device(art), _bits(art)
    card = art.params.get("card") or {}
    config = art.summary.get("array_config") or {}  # qat simulates every effect with the card's converters
    effects = config.get("effects", EFFECTS)
    on_array = chip(device, bits, effects, config.get("adc_bits", card.get("adc_bits")),
                    config.get("scheme", card.get("adc_scheme")))
    title = "non-ideal" if effects else "no effects"
    return [("PTQ (ideal levels)", "ptq_accuracy", None, chip(device, bits, None)),
            (f"{mode} (ideal levels)", "test_accuracy", None, chip(device, bits, None)),
            (f"PTQ on the array, {title}", "nonideal_plain_mean", "nonideal_plain_std", on_array),
            (f"{mode} on the array, {title}", "nonideal_mean", "nonideal_std", on_array)]


def _rows_cmap(art, by_path) -> list[Row]:
    if "accuracy_mapped_ideal" not in art.summary:
        return []
    s = art.summary
    device, bits = _device(art), _bits(art)
    config = s.get("array_config") or {}
    effects = config.get("effects", art.params.get("effects", ()))
    what = f"SNN T={s['timesteps']} mapped" if "timesteps" in s else "mapped"  # an snn's spiking network
    split = f" ({s['split']} split)" if s.get("split", "test") != "test" else ""
    return [(f"{what}, ideal array{split}", "accuracy_mapped_ideal", None, chip(device, bits, None)),
            (f"{what}, {'non-ideal array' if effects else 'no effects'}{split}", "accuracy_nonideal_mean",
             "accuracy_nonideal_std",
             chip(device, bits, effects, config.get("adc_bits"), config.get("scheme")))]


def _rows_snn(art, by_path) -> list[Row]:
    """The SNN runs without arrays, on its source's weights: device levels where that is a qmodel."""
    ref = _input(art, "model")
    source = by_path.get(str(Path(ref["path"]).resolve())) if ref else None
    if source is not None and source.kind == "qmodel":
        weights = f"{_device(source)}, {_bits(source)} weights, no array"
    elif ref and ref.get("kind") == "qmodel":
        weights = f"device-level weights of {Path(ref['path']).name}, no array"
    else:
        weights = "ideal"
    return [("quantized ANN (SNN twin)", "quantized_ann_test_accuracy", None, weights),
            (f"SNN, T={art.summary.get('timesteps')}", "test_accuracy", None, weights)]


ACCURACY_ROWS = {"model": _rows_model, "qmodel": _rows_qmodel, "cmap": _rows_cmap, "snn": _rows_snn}
STAGE_ORDER = ("model", "qmodel", "snn", "cmap", "sweep")
ACCURACY_COLUMNS = ["stage", "condition", "chip", "photons", "accuracy", "std", "key", "artifact",
                    "manifest_sha256"]


def _photons(art: artifacts.Artifact | None, by_path: dict[str, artifacts.Artifact]) -> float | None:
    """The photon budget (--max-photons of --front-end optical) of ``art``'s model: its own, or that of
    the model it was made from."""
    for _ in range(4):  # model → qmodel / snn → cmap: a short chain
        if art is None:
            return None
        if art.kind == "model":
            return art.params.get("max_photons") if art.params.get("front_end") == "optical" else None
        art = by_path.get(_input_path(art, "model") or "")
    return None


def _sweep_chip(art: artifacts.Artifact, c: dict[str, Any]) -> str:
    return chip(_device(art), _cells(c["weight_bits"], c.get("slices")), art.params.get("effects", ()),
                c["adc_bits"], c["scheme"])


def accuracy_table(arts: list[artifacts.Artifact]) -> pd.DataFrame:
    """One row per (artifact, condition): the accuracy and its std as recorded in the manifest, and the
    chip it was measured on (device, weight bits, converters, effects)."""
    rows = []
    label = names(arts)
    by_path = {str(a.path.resolve()): a for a in arts}
    for art in sorted(arts, key=lambda a: (STAGE_ORDER.index(a.kind) if a.kind in STAGE_ORDER else 99,
                                           str(a.path))):
        s = art.summary
        base = {"artifact": label[str(art.path)], "manifest_sha256": art.manifest_sha256(),
                "photons": _photons(art, by_path)}
        if art.kind == "sweep":
            for role in ("best", "recommended"):
                c = s[role]
                rows.append({"stage": "sweep",
                             "condition": f"sweep {role}: w{c['weight_bits']} {c['scheme']} "
                                          f"adc{c['adc_bits']} T{c['timesteps']}",
                             "chip": _sweep_chip(art, c), "accuracy": c["test_mean"],
                             "std": c["test_std"], "key": f"summary.{role}.test_mean", **base})
            continue
        for condition, key, std_key, conditions in ACCURACY_ROWS.get(art.kind, lambda *_: [])(art, by_path):
            if s.get(key) is None:
                continue
            rows.append({"stage": art.kind, "condition": condition, "chip": conditions,
                         "accuracy": float(s[key]),
                         "std": float(s[std_key]) if std_key and s.get(std_key) is not None else None,
                         "key": f"summary.{key}", **base})
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


# --- sections -----------------------------------------------------------------------------------

def _created(manifest: dict[str, Any]) -> str:
    return str(manifest.get("created", "")).replace("T", " ").replace("+00:00", " UTC")


# where each kind's caveats are shown: beside its numbers (the kinds below have a section of their own;
# any other kind's caveats go under its row of the sources)
ACCURACY_KINDS = ("model", "qmodel", "cmap", "snn")
OWN_SECTION_KINDS = (*ACCURACY_KINDS, "sweep", "neurosim", "device", "profile")


def sources(arts: list[artifacts.Artifact]) -> Section:
    root = common_root(arts)
    label = names(arts)
    rows = [[a.kind, Path(os.path.relpath(a.path, root)).as_posix(), a.manifest["schema"],
             _created(a.manifest), a.manifest_sha256()] for a in arts]
    columns = ["kind", "artifact (path)", "schema", "created", "manifest sha256"]
    return Section("Sources", ["Every number in this report comes from one of these artifacts (verified: "
                               "schema and payload hashes). The report names each by its folder, or by its "
                               f"path where two share a folder name; paths are relative to {root}.",
                               Table(columns, rows, wrap=("artifact (path)", "manifest sha256")),
                               *(c for a in arts if a.kind not in OWN_SECTION_KINDS
                                 for c in caveats(a, label[str(a.path)]))])


def _pm(value: float, std: float, digits: int = 4) -> str:
    """``value ± std`` that does not break across lines."""
    return f"{value:.{digits}f}\u00a0±\u00a0{std:.{digits}f}"


def accuracy(table: pd.DataFrame, arts: list[artifacts.Artifact]) -> Section:
    """The accuracy table, each row with the chip it was measured on, and below it the caveats of the
    artifacts it comes from."""
    section = Section("Accuracy across stages (test split)")
    optical = bool(table["photons"].notna().any())  # the photon budget: a column where any model has one
    rows = [[r.stage, r.condition, r.chip, *([_photon_text(r.photons)] if optical else []),
             f"{r.accuracy:.4f}",
             "" if pd.isna(r.std) else f"±\u00a0{r.std:.4f}", r.artifact, r.key, r.manifest_sha256[:12]]
            for r in table.itertuples()]
    if rows:  # e.g. a report of device fits or NeuroSim runs only: no empty table
        section.blocks.append(Table(["stage", "condition", "device, weight bits, effects",
                                     *(["photons"] if optical else []), "accuracy", "std",
                                     "artifact", "from", "sha256"], rows, wrap=("artifact",)))
    section.blocks += _accuracy_vs_photons(arts)
    label = names(arts)
    section.blocks += [c for a in arts if a.kind in ACCURACY_KINDS for c in caveats(a, label[str(a.path)])]
    return section


def _photon_text(photons: Any) -> str:
    return "" if photons is None or pd.isna(photons) else f"{photons:g}"


def _accuracy_vs_photons(arts: list[artifacts.Artifact]) -> list[Table | Figure | str]:
    """Where models with --front-end optical were trained at several photon budgets: their test accuracy
    (mean ± std over photon-noise draws) vs photons, one line per data set, model and responsivity."""
    rows = []
    for art in arts:
        spec = art.params
        if art.kind != "model" or spec.get("front_end") != "optical":
            continue
        optical = (json.loads((art.path / "arch.json").read_text()).get("optical") or {}
                   if (art.path / "arch.json").is_file() else {})
        resp = optical.get("responsivity")
        rows.append({"series": f"{spec.get('dataset')}, {spec.get('model')}, responsivity "
                               f"{'/'.join(f'{r:g}' for r in resp) if resp else spec.get('device')}",
                     "photons": float(spec["max_photons"]), "accuracy": float(art.summary["test_accuracy"]),
                     "std": float(art.summary.get("test_accuracy_std") or 0.0)})
    table = pd.DataFrame(rows, columns=["series", "photons", "accuracy", "std"])
    if table["photons"].nunique() < 2:
        return []
    table = table.sort_values(["series", "photons"])
    return [Table(["model", "photons at full white", "test accuracy"],
                  [[r.series, f"{r.photons:g}", _pm(r.accuracy, r.std)] for r in table.itertuples()]),
            Figure("accuracy-vs-photons.png", figures.accuracy_vs_photons(table, "Test accuracy vs photons"),
                   "Test accuracy vs photons per pixel at full white of the models with the optical "
                   "front-end (bars: ± std over photon-noise draws), one line per responsivity.")]


# --- the device cards the artifacts ran on --------------------------------------------------------

_CARD_TEXT = ("name", "description", "source", "assumed")  # said in the text above the table


def _shown(value: Any, unit: str) -> tuple[str, str]:
    """A card value and its unit as the table shows them: siemens with an SI prefix (4.274 nS)."""
    if unit == "S":
        scale, prefix = figures.si_scale(value)
        return f"{value / scale:.4g}", f"{prefix}S"
    if isinstance(value, float):
        return f"{value:.4g}", unit
    return (", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)), unit


def _card_rows(card: dict[str, Any]) -> list[list[str]]:
    """One row per key the card has (as ``devices show`` lists them): TOML key, value, unit, and whether
    the card lists it as assumed; a card this cimtool cannot rebuild (another version's fields): its
    recorded fields as they are."""
    fields = {f.name for f in dataclasses.fields(device_card.DeviceCard)}
    try:
        rebuilt = device_card.DeviceCard(**{"assumed": (), **{k: v for k, v in card.items() if k in fields}})
    except TypeError:
        return [[k, *_shown(v, ""), ""] for k, v in card.items() if k not in _CARD_TEXT and v is not None]
    return [[f"{section}.{key}", *_shown(value, unit),
             "assumed" if device_card.is_assumed(rebuilt, section, key) else ""]
            for section, key, value, unit in device_card.card_entries(rebuilt) if section]


def device_cards(arts: list[artifacts.Artifact]) -> Section:
    """Each distinct device card the artifacts were made with (their params' ``card``): its values with
    units, which of them are assumed, and the artifacts that used it."""
    section = Section("Device cards")
    label = names(arts)
    used: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for art in arts:
        card = art.params.get("card")
        if isinstance(card, dict) and card:
            key = json.dumps(card, sort_keys=True, default=str)
            used.setdefault(key, (card, []))[1].append(label[str(art.path)])
    for card, users in used.values():
        assumed = card.get("assumed") or []
        text = f"'{card.get('name', '?')}'"
        if card.get("description"):
            text += f": {card['description']}"
        text += f". Source: {card.get('source', 'not given')}. Used by {', '.join(users)}."
        text += (f" Assumed, not measured: {', '.join(assumed)}." if assumed
                 else " The card lists no assumed values.")
        section.blocks += [text, Table(["TOML key", "value", "unit", "assumed"], _card_rows(card))]
    return section


# --- chip geometry: the arrays accuracy was simulated on vs those NeuroSim costed -----------------

def _geometry(art: artifacts.Artifact) -> tuple[int, int] | None:
    if art.kind == "cmap":
        m = art.params.get("mapping") or {}
        rows, cols = m.get("array_rows"), m.get("array_cols")
    elif art.kind == "neurosim":
        s = art.summary
        rows = s.get("array_rows", s.get("subarray"))
        cols = s.get("array_cols", s.get("subarray_cols", rows))
    else:
        return None
    return (int(rows), int(cols)) if rows and cols else None


def _shape(geometry: tuple[int, int]) -> str:
    return f"{geometry[0]}×{geometry[1]}"


def geometry(arts: list[artifacts.Artifact]) -> Section:
    """The array rows × columns of each map-weights (accuracy) and run-neurosim (area, energy, latency)
    artifact, and whether they describe the same chip."""
    section = Section("Chip geometry")
    label = names(arts)
    found = [(label[str(a.path)], a.kind, g) for a in arts if (g := _geometry(a))]
    if not found:
        return section
    gives = {"cmap": "accuracy (map-weights, array simulator)",
             "neurosim": "area, energy, latency (NeuroSim)"}
    section.blocks.append(Table(["artifact", "array (rows × columns)", "gives"],
                                [[name, _shape(g), gives[kind]] for name, kind, g in found]))
    side = {kind: {name: g for name, k, g in found if k == kind} for kind in gives}
    if side["cmap"] and side["neurosim"]:
        shapes = {g for _, _, g in found}
        if len(shapes) == 1:
            section.blocks.append(f"Accuracy and NeuroSim figures are for the same {_shape(shapes.pop())} "
                                  "arrays.")
        else:
            listed = {kind: ", ".join(f"{n} {_shape(g)}" for n, g in side[kind].items()) for kind in side}
            section.blocks.append(Caveat(
                f"Accuracy and NeuroSim figures are for different arrays, so for different chips: "
                f"map-weights simulated {listed['cmap']}; NeuroSim's area, energy and latency are for "
                f"{listed['neurosim']}."))
    return section


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


def spiking_vs_t(arts: list[artifacts.Artifact]) -> Section:
    """Val accuracy vs timesteps T of every SNN (its ``accuracy_vs_t.parquet``): a table, T by SNN,
    and one plot."""
    section = Section("Spiking networks: accuracy vs T (val)")
    label = names(arts)
    curves = {label[str(a.path)]: (_read(a, "accuracy_vs_t.parquet"), a.summary.get("timesteps"))
              for a in arts if a.kind == "snn" and "accuracy_vs_t.parquet" in a.manifest["files"]}
    curves = {name: (curve, t) for name, (curve, t) in curves.items() if len(curve)}
    if not curves:
        return section
    by_t = {name: dict(zip(curve["timesteps"], curve["val_accuracy"], strict=True))
            for name, (curve, _) in curves.items()}
    steps = sorted({int(t) for accs in by_t.values() for t in accs})
    chosen = ", ".join(f"{name} T={t}" for name, (_, t) in curves.items())
    section.blocks += [
        f"Val accuracy of each SNN when run for T timesteps (accuracy_vs_t.parquet); the T each was "
        f"calibrated at: {chosen} (its test accuracy is in the accuracy table).",
        Table(["T", *by_t], [[t, *(f"{accs[t]:.4f}" if t in accs else "" for accs in by_t.values())]
                             for t in steps]),
        Figure("snn-accuracy-vs-t.png", figures.accuracy_vs_t(curves, "SNN val accuracy vs timesteps T"),
               "Val accuracy vs timesteps T of each SNN (star: the T it was calibrated at)."),
    ]
    return section


def _paired(diff: Any, se: Any) -> str:
    """``best − this ± its standard error`` in points; empty where the sweep predates paired tests."""
    if diff is None or se is None or pd.isna(diff) or pd.isna(se):
        return ""
    return f"{diff:.2f}\u00a0±\u00a0{se:.2f}"


MAX_INDISTINGUISHABLE_ROWS = 25  # the cheapest shown; every row is in sweep.parquet


def _indistinguishable(table: pd.DataFrame, energy: str, confidence: Any) -> list[Table | str]:
    """The configurations not significantly worse than the best (sweep.parquet's ``indistinguishable``),
    cheapest first."""
    if "indistinguishable" not in table.columns:
        return []
    same = table[table["indistinguishable"].astype(bool)].sort_values([energy, "val_mean"],
                                                                       ascending=[True, False])
    at = f" at {float(confidence):.0%} confidence" if confidence is not None else ""
    text = (f"{len(same)} of {plural(len(table), 'configuration')} are statistically indistinguishable from "
            f"the best (not significantly worse{at}; paired over the same val images and chips)")
    if len(same) > MAX_INDISTINGUISHABLE_ROWS:
        text += f"; the {MAX_INDISTINGUISHABLE_ROWS} cheapest are shown, all are in sweep.parquet"
    rows = [[r["method"], r["weight_bits"], r["scheme"], r["adc_bits"], r["timesteps"],
             _pm(r["val_mean"], r["val_std"]), _paired(r.get("diff_vs_best"), r.get("diff_se")),
             f"{r[energy]:.4g}"]
            for _, r in same.head(MAX_INDISTINGUISHABLE_ROWS).iterrows()]
    return [text + ":", Table(["method", "weight bits", "scheme", "ADC bits", "T", "val accuracy",
                               "best − this (points ± SE)", "energy / inference (pJ)"], rows)]


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
        s = art.summary
        energy = s.get("energy_key", "energy_pj")  # what ranked the configurations
        by = f"NeuroSim {s.get('neurosim_version', '')}" if energy != "energy_pj" else "cimtool cost model"
        trials, confidence = s.get("trials"), s.get("confidence")
        effects = art.params.get("effects")
        within = f"within {s.get('tolerance_points')} points of the best (val)"
        if confidence is not None:
            within += f" at {float(confidence):.0%} confidence (per comparison)"
        paired = _paired(s["recommended"].get("diff_vs_best"), s["recommended"].get("diff_se"))
        text = f"{name}: {plural(len(table), 'configuration')} on '{s.get('device')}'"
        if effects is not None:
            text += f" with effects {','.join(effects)}" if effects else " with no effects"
        text += (f", {plural(trials, 'simulated chip')} each; recommendation: the lowest "
                 f"energy by the {by} {within}")
        if paired:
            text += (f"; best − recommended = {paired} points (paired standard error, over the same val "
                     "images and chips)")
        has_paired = "diff_vs_best" in best  # a sweep from before the paired comparison has no such column
        section.blocks += [
            text + "; both then tested once.",
            Table(["role", "method", "weight bits", "scheme", "ADC bits", "T", "val accuracy",
                   *(["best − this (val, points ± SE)"] if has_paired else []), "test accuracy",
                   "energy / inference (pJ)"],
                  [[role, r["method"], r["weight_bits"], r["scheme"], r["adc_bits"], r["timesteps"],
                    _pm(r["val_mean"], r["val_std"]),
                    *([_paired(r.get("diff_vs_best"), r.get("diff_se"))] if has_paired else []),
                    _pm(r["test_mean"], r["test_std"]), f"{r[energy]:.4g}"]
                   for role, r in (("best", best), ("recommended", rec))]),
            *caveats(art, name),
            *_indistinguishable(table, energy, confidence),
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


def _levels_key(cells: pd.DataFrame, n_levels: int) -> str:
    """What a conductance histogram shows, hashed: two cmaps with the same key draw the same figure."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(cells, index=False).to_numpy().tobytes())
    digest.update(str(n_levels).encode())
    return digest.hexdigest()


def conductances(arts: list[artifacts.Artifact]) -> Section:
    """Per distinct set of levels, one histogram figure: cmaps of the same mapping (e.g. evaluated with
    other effects) share it, and its caption names them all."""
    section = Section("Conductance levels")
    label = names(arts)
    groups: dict[str, list[tuple[str, pd.DataFrame, int]]] = {}
    for art in arts:
        if art.kind != "cmap":
            continue
        cells = _read(art, "cmap.parquet")[["layer", "level_pos", "level_neg"]]
        n_levels = int(_read(art, "layers.parquet")["n_levels"].max())
        groups.setdefault(_levels_key(cells, n_levels), []).append((label[str(art.path)], cells, n_levels))
    for members in groups.values():
        name, cells, n_levels = members[0]
        others = [m[0] for m in members[1:]]
        shared = (f"; {', '.join(others)} {'has' if len(others) == 1 else 'have'} exactly the same levels "
                  "(one figure for all)" if others else "")
        section.blocks.append(Figure(f"levels-{_file(name)}.png",
                                     figures.level_histograms(cells, n_levels, ", ".join([name, *others])),
                                     f"Cells per conductance level and layer of {name}{shared} (log "
                                     "scale; level 0 = g_min, where the idle branch of each differential "
                                     "pair sits)."))
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
        section.blocks += ["; ".join(headline) + ".", *caveats(art, name)]
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
# V2.1's training epoch: the parts it prints apart, the gradient, update and DRAM ones included
V21_ENERGY_LABELS = {**{f"{key}_energy_pj": f"{name} energy (pJ)" for name, key in V21_PARTS},
                     "leakage_energy_pj": "leakage energy (pJ)"}
V21_PHASES = ("forward", "activation_gradient", "weight_gradient", "weight_update")
# epochs.parquet's columns shown, per epoch of train-batch × iterations images
V21_EPOCH_COLUMNS = {"latency_ns": "latency (ns)", "dynamic_energy_pj": "dynamic energy (pJ)",
                     **{f"{p}_energy_pj": f"{p.replace('_', ' ')} (pJ)" for p in V21_PHASES},
                     "weight_update_latency_ns": "weight-update latency (ns)",
                     "dram_energy_pj": "DRAM (pJ)", "tops_per_w": "TOPS/W"}


def _is_v21(art: artifacts.Artifact) -> bool:
    """A V2.1 run with its training estimate: figures per epoch, its "FPS" epochs per second."""
    return art.summary.get("epochs_per_s") is not None


def neurosim(arts: list[artifacts.Artifact], by_path: dict[str, artifacts.Artifact]) -> Section:
    section = Section("NeuroSim")
    runs = [a for a in arts if a.kind == "neurosim"]
    if not runs:
        return section
    label = names(arts)
    metrics = {label[str(a.path)]: dict(zip(*(_read(a, "summary.parquet")[c] for c in ("metric", "value")),
                                            strict=True))
               for a in runs}
    inference = {label[str(a.path)]: metrics[label[str(a.path)]] for a in runs if not _is_v21(a)}
    training = {label[str(a.path)]: metrics[label[str(a.path)]] for a in runs if _is_v21(a)}
    per = " (V2.1 training: per epoch)" if training else ""
    section.blocks += [
        Table(["run", "area (µm²)", f"latency (ns){per}", f"dynamic energy (pJ){per}", "TOPS/W", "TOPS",
               "FPS (V2.1 training: epochs/s)" if training else "FPS", "sha256"],
              [[label[str(a.path)], *(f"{a.summary.get(k):.4g}"
                                      for k in ("chip_area_um2", "latency_ns", "dynamic_energy_pj",
                                                "tops_per_w", "tops", "fps")),
                a.manifest_sha256()[:12]] for a in runs]),
        *(c for a in runs for c in caveats(a, label[str(a.path)])),
        Figure("neurosim-area.png",
               figures.breakdown_bars(metrics, AREA_KEYS, "area (µm²)", "Chip area breakdown"),
               "NeuroSim chip area by component."),
    ]
    if inference:
        section.blocks.append(Figure(
            "neurosim-energy.png", figures.breakdown_bars(inference, ENERGY_KEYS, "energy per image (pJ)",
                                                          "Energy per image"),
            "NeuroSim energy per image by component (dynamic parts and leakage)."))
    if training:
        section.blocks.append(Figure(
            "neurosim-energy-epoch.png",
            figures.breakdown_bars(training, list(V21_ENERGY_LABELS), "energy per epoch (pJ)",
                                   "Energy per training epoch (V2.1)", V21_ENERGY_LABELS),
            "NeuroSim V2.1 energy per training epoch (train-batch × iterations images) by component: "
            "the forward and activation-gradient arrays (ADC, accumulation, synaptic array, buffers, "
            "interconnect), the weight gradient, the weight update, DRAM transfers and leakage (V2.1's "
            "breakdown lines: DRAM is part of its forward and gradient figures, not on top)."))
        section.blocks.append(Table(
            ["run", "images per epoch", *(f"{p.replace('_', ' ')} (pJ)" for p in V21_PHASES), "DRAM (pJ)",
             "weight-update latency (ns)", "epochs/s"],
            [[label[str(a.path)], f"{a.summary.get('train_batch')} × {a.summary.get('iterations')}",
              *(f"{a.summary.get(f'{p}_energy_pj') or 0:.4g}" for p in V21_PHASES),
              f"{a.summary.get('dram_energy_pj') or 0:.4g}",
              f"{a.summary.get('weight_update_latency_ns') or 0:.4g}",
              f"{a.summary['epochs_per_s']:.4g}"] for a in runs if _is_v21(a)]))
        section.blocks += [b for a in runs if _is_v21(a) and "epochs.parquet" in a.manifest["files"]
                           for b in _v21_epochs(a, label[str(a.path)])]
    points = []
    for a in runs:  # accuracy of the model each run traced: trace → model
        if _is_v21(a):  # a training epoch's energy is not an image's
            continue
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


def _v21_epochs(art: artifacts.Artifact, name: str) -> list[Table | Figure | str]:
    """V2.1's figures for each epoch it priced (that epoch's weights and weightOld, as its train.py
    runs it every epoch); with several epochs, their energy by phase."""
    rows = _read(art, "epochs.parquet")
    images = f"{art.summary.get('train_batch')} × {art.summary.get('iterations')} images"
    blocks: list[Table | Figure | str] = [
        f"{name}: NeuroSim V2.1 on the weights of each recorded training epoch, figures per epoch of "
        f"{images}.",
        Table(["run", "epoch", *V21_EPOCH_COLUMNS.values()],
              [[name, int(r["epoch"]), *(f"{r[k]:.4g}" for k in V21_EPOCH_COLUMNS)]
               for r in rows.to_dict("records")])]
    if len(rows) > 1:
        keys = [f"{p}_energy_pj" for p in V21_PHASES]
        blocks.append(Figure(
            f"neurosim-epochs-{_file(name)}.png",
            figures.per_epoch(rows, keys, {k: V21_EPOCH_COLUMNS[k] for k in keys}, "energy per epoch (pJ)",
                              f"{name}: V2.1 energy per training epoch"),
            f"NeuroSim V2.1 energy of each training epoch ({images}) by phase, on that epoch's weights "
            "and the weights before its last update."))
    return blocks


def _input(art: artifacts.Artifact | None, role: str) -> dict[str, Any] | None:
    """The manifest's entry for the input of ``role``."""
    return next((i for i in (art.manifest.get("inputs", []) if art else []) if i.get("role") == role), None)


def _input_path(art: artifacts.Artifact | None, role: str) -> str | None:
    ref = _input(art, role)
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
                                   f"{r.throughput_sps:.4g}"] for r in table.itertuples()]),
                           *caveats(art, label[str(art.path)])]
    return section
