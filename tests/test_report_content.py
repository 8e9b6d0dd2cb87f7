"""The report's content on hand-made artifacts (the layouts the stages write, a few rows each): every
accuracy row names its chip, each distinct figure once, the device cards, the SNN's accuracy vs T,
the sweep's statistically indistinguishable set, caveats beside their numbers, the chip geometry of
accuracy vs NeuroSim, and no two labels of a figure overlapping."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cimtool import artifacts
from cimtool.report import content, figures
from cimtool.report.render import html_page, markdown

CARD = {  # rram_seed003 as a stage records it (params["card"], DeviceCard.to_dict())
    "name": "rram_seed003", "description": "RRAM of the team's SNN SoC", "source": "measured on the SoC",
    "assumed": ["read.voltage", "read.noise", "variation", "drift", "array.wire_resistance", "update", "adc"],
    "g_min": 2.3923444976076556e-12, "g_max": 4.273504273504273e-09, "levels": 16, "spacing": "log",
    "read_voltage": 0.2, "read_noise": 0.01, "variation_model": "lognormal", "d2d_sigma": 0.05,
    "c2c_sigma": 0.03, "stuck_off": 0.001, "stuck_on": 0.0005, "drift_nu": 0.005, "drift_nu_sigma": 0.002,
    "drift_t0": 1.0, "wire_resistance": 1.0, "adc_bits": 8, "adc_scheme": "B", "input_bits": 8,
    "nl_ltp": 1.0, "nl_ltd": -1.0, "pulses_ltp": 15, "pulses_ltd": 15, "responsivity": None,
    "max_photons": None,
}
MY_CARD = {k: v for k, v in CARD.items() if k != "assumed"} | {"name": "mycard", "levels": 32}  # no `assumed`
IR_CAVEAT = "first-order IR drop at r·(A+B) = 0.35, beyond its validity (≪ 1)"
NS_CAVEAT = "chip clock set by the slowest read (234 MΩ cells); ADC levels dominate energy"
SWEEP_CAVEAT = "weights above the card's 4 bits are bit-sliced over 2 cells"
MAPPING = {"device": "rram_seed003", "weight_bits": 4, "scaling": "shared_max", "scale_percentile": 99.9,
           "normalize": "gmax", "array_rows": 32, "array_cols": 32, "layout": "interleaved"}


def write(out: Path, kind: str, params: dict, summary: dict, files: dict, inputs=()) -> artifacts.Artifact:
    """An artifact of ``kind`` at ``out`` through ArtifactWriter, as a stage writes one: ``files`` name →
    a DataFrame (Parquet) or text."""
    with artifacts.ArtifactWriter(out, kind, params) as writer:
        for name, data in files.items():
            if isinstance(data, pd.DataFrame):
                data.to_parquet(writer.path(name), index=False)
            else:
                writer.path(name).write_text(data)
        writer.commit([a.as_input(role) for role, a in inputs], summary)
    return artifacts.load(out, kind)


EMPTY = pd.DataFrame({"x": [0]})


def model(out: Path) -> artifacts.Artifact:
    metrics = pd.DataFrame({"phase": "train", "epoch": [1, 2, 3], "train_loss": [1.0, 0.6, 0.4],
                            "val_loss": [1.1, 0.7, 0.5], "train_acc": [0.6, 0.8, 0.9],
                            "val_acc": [0.6, 0.78, 0.86]})
    return write(out, "model", {"model": "proj_sup_64"}, {"test_accuracy": 0.8821},
                 {"weights.safetensors": "", "arch.json": "{}", "metrics.parquet": metrics,
                  "timing.parquet": EMPTY})


def qmodel(out: Path, source: artifacts.Artifact) -> artifacts.Artifact:
    summary = {"mode": "noise", "device": "rram_seed003", "n_levels": 16, "ptq_accuracy": 0.85,
               "test_accuracy": 0.87, "nonideal_plain_mean": 0.8, "nonideal_plain_std": 0.01,
               "nonideal_mean": 0.84, "nonideal_std": 0.008}
    return write(out, "qmodel", {"mapping": MAPPING, "card": CARD, "n_levels": 16}, summary,
                 {"weights.safetensors": "", "arch.json": "{}", "metrics.parquet": EMPTY.iloc[:0],
                  "timing.parquet": EMPTY, "evaluation.parquet": EMPTY}, [("model", source)])


def cells(seed: int, n_levels: int = 16) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(layer, r, c) for layer in ("fc1", "fc2") for r in range(32) for c in range(10)]
    frame = pd.DataFrame(rows, columns=["layer", "row", "col"])
    return frame.assign(level_pos=rng.integers(0, n_levels, len(frame)),
                        level_neg=rng.integers(0, n_levels, len(frame)))


def cmap(out: Path, source: artifacts.Artifact, effects: list[str], seed: int = 0, card: dict = CARD,
         array: int = 32, caveats: list[str] | None = None, bits: int = 4,
         extra: dict | None = None) -> artifacts.Artifact:
    n_levels = card["levels"]
    slices = -(-bits // int(np.log2(n_levels)))
    config = {"effects": effects, "adc_bits": 8, "scheme": "B", "input_bits": 8, "encoding": "analog",
              "drift_time": 3600.0}
    summary = {"device": card["name"], "n_levels": n_levels, "accuracy_float": 0.88,
               "accuracy_mapped_ideal": 0.875, "accuracy_nonideal_mean": 0.86, "accuracy_nonideal_std": 0.004,
               "trials": 2, "array_config": config, "weight_bits": bits, "slices": slices}
    if caveats is not None:
        summary["caveats"] = caveats
    summary |= extra or {}
    params = {"mapping": {**MAPPING, "weight_bits": bits, "array_rows": array, "array_cols": array},
              "effects": effects,
              "card": card, "n_levels": n_levels}
    return write(out, "cmap", params, summary,
                 {"cmap.parquet": cells(seed, n_levels), "scales.parquet": EMPTY,
                  "layers.parquet": pd.DataFrame({"n_levels": [n_levels]})}, [("model", source)])


CURVE_T = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


def snn(out: Path, source: artifacts.Artifact, shift: float = 0.0) -> artifacts.Artifact:
    curve = pd.DataFrame({"timesteps": CURVE_T,
                          "val_accuracy": [round(0.9 - 0.5 / t - shift, 4) for t in CURVE_T],
                          "val_accuracy_one_pass": 0.9, "mean_steps": [float(t) for t in CURVE_T]})
    summary = {"timesteps": 32, "levels": 8, "test_accuracy": 0.874, "quantized_ann_test_accuracy": 0.876,
               "ann_test_accuracy": 0.88, "train_epochs": 0}
    return write(out, "snn", {"model": str(source.path)}, summary,
                 {"snn.json": "{}", "calibration.parquet": EMPTY, "thresholds.parquet": EMPTY,
                  "accuracy_vs_t.parquet": curve, "evaluation.parquet": EMPTY}, [("model", source)])


def sweep_table(paired: bool) -> pd.DataFrame:
    rows = []
    for w, scheme, adc, t in itertools.product((2, 4, 8), "AB", (4, 8), (1, 4)):
        val = 0.86 - 0.05 / w - 0.04 / t - (0.01 if adc == 4 else 0)
        # a narrow energy range (all within 1.3x): matplotlib's own log labels of it overlap
        energy = 1000 * (1 + 0.01 * w + 0.02 * adc + 0.05 * t + (0.02 if scheme == "A" else 0))
        rows.append({"method": "proj_sup_64", "model": "m", "candidate": 0, "weight_bits": w,
                     "scheme": scheme, "adc_bits": adc, "timesteps": t, "val_mean": round(val, 4),
                     "val_std": 0.002, "energy_pj": energy})
    table = pd.DataFrame(rows)
    if paired:
        best = table["val_mean"].max()
        table["diff_vs_best"] = (100 * (best - table["val_mean"])).round(2)
        table["diff_se"] = 0.31
        table["indistinguishable"] = table["diff_vs_best"] < 2 * 0.31
    return table


def sweep(out: Path, source: artifacts.Artifact, paired: bool = True) -> artifacts.Artifact:
    table = sweep_table(paired)
    best = table.loc[table["val_mean"].idxmax()]
    cheap = table[table["val_mean"] >= best["val_mean"] - 0.005].sort_values("energy_pj").iloc[0]
    selection = pd.DataFrame([{"role": "best", **best, "test_mean": 0.85, "test_std": 0.003},
                              {"role": "recommended", **cheap, "test_mean": 0.846, "test_std": 0.004}])
    keys = ["method", "weight_bits", "scheme", "adc_bits", "timesteps", "val_mean", "val_std", "test_mean",
            "test_std", "energy_pj", *(["diff_vs_best", "diff_se"] if paired else [])]
    summary = {"device": "rram_seed003", "n_configs": len(table), "trials": 2, "tolerance_points": 0.5,
               "energy_key": "energy_pj", **{role: {k: selection.iloc[i][k] for k in keys}
                                             for i, role in enumerate(("best", "recommended"))}}
    summary = json.loads(pd.Series(summary).to_json())  # numpy scalars → JSON numbers
    if paired:
        summary |= {"confidence": 0.95, "caveats": [SWEEP_CAVEAT]}
    return write(out, "sweep", {"effects": ["d2d", "c2c", "read"], "card": CARD, "array_rows": 32,
                                "array_cols": 32}, summary,
                 {"sweep.parquet": table, "selection.parquet": selection}, [("snn", source)])


def neurosim(out: Path, rows: int = 32, new_keys: bool = True) -> artifacts.Artifact:
    metrics = {"chip_area_um2": 2.1e5, "latency_ns": 1.3e6, "dynamic_energy_pj": 4.2e3, "tops_per_w": 0.045,
               "tops": 0.001, "fps": 782.0}
    summary = {**metrics, "subarray": rows, "subarray_cols": rows, "device": "rram_seed003",
               "caveats": [NS_CAVEAT]}
    if new_keys:
        summary |= {"array_rows": rows, "array_cols": rows}
    breakdown = {"area_cim_array_um2": 1e5, "area_adc_um2": 8e4, "adc_energy_pj": 3e3,
                 "leakage_energy_pj": 10}
    table = pd.DataFrame({"metric": [*metrics, *breakdown],
                          "value": [*metrics.values(), *breakdown.values()]})
    return write(out, "neurosim", {"card": CARD}, summary,
                 {"stdout.txt": "", "summary.parquet": table, "layers.parquet": EMPTY, "settings.json": "{}"})


@pytest.fixture(scope="module")
def arts(tmp_path_factory) -> dict[str, artifacts.Artifact]:
    base = tmp_path_factory.mktemp("report-content") / "artifacts"
    found = {"model": model(base / "model")}
    found["qmodel"] = qmodel(base / "qmodel", found["model"])
    found["cmap-noisy"] = cmap(base / "cmap-noisy", found["qmodel"], ["d2d", "c2c", "read"],
                               caveats=[IR_CAVEAT])
    found["cmap-plain"] = cmap(base / "cmap-plain", found["qmodel"], [])  # the same levels, no effects
    found["cmap-mine"] = cmap(base / "cmap-mine", found["model"], ["read"], seed=1, card=MY_CARD, array=128,
                              bits=8)  # 8 bits on 32 levels: 2 cells per weight
    found["snn"] = snn(base / "snn", found["model"])
    found["snn-q"] = snn(base / "snn-q", found["qmodel"], shift=0.01)
    found["sweep"] = sweep(base / "sweep", found["snn"])
    found["sweep-old"] = sweep(base / "sweep-old", found["snn"], paired=False)
    found["neurosim"] = neurosim(base / "neurosim")
    return found


def _all(arts) -> list[artifacts.Artifact]:
    return list(arts.values())


def _texts(section: content.Section) -> list[str]:
    return [b for b in section.blocks if isinstance(b, str)]


def test_every_accuracy_row_names_device_bits_and_effects(arts):
    table = content.accuracy_table(_all(arts)).set_index(["artifact", "condition"])["chip"]
    assert table["model", "float"] == "ideal"
    assert table["qmodel", "PTQ (ideal levels)"] == "rram_seed003, w4, ideal array"
    assert table["qmodel", "noise on the array, non-ideal"] == \
        "rram_seed003, w4, adc8 B, effects d2d,c2c,stuck,drift,ir,read"  # qat simulates every effect
    assert table["cmap-noisy", "mapped, ideal array"] == "rram_seed003, w4, ideal array"
    assert table["cmap-noisy", "mapped, non-ideal array"] == "rram_seed003, w4, adc8 B, effects d2d,c2c,read"
    # --effects none is not "non-ideal": it is the mapped network with the card's converters only
    assert table["cmap-plain", "mapped, no effects"] == "rram_seed003, w4, adc8 B, no effects"
    assert ("cmap-plain", "mapped, non-ideal array") not in table.index
    assert table["cmap-mine", "mapped, non-ideal array"] == \
        "mycard, w8 as 2 cells per weight, adc8 B, effects read"
    assert table["snn", "SNN, T=32"] == "ideal"
    assert table["snn-q", "SNN, T=32"] == "rram_seed003, w4 weights, no array"  # the qmodel's levels
    b = arts["sweep"].summary["best"]
    best = f"sweep best: w{b['weight_bits']} {b['scheme']} adc{b['adc_bits']} T{b['timesteps']}"
    assert table["sweep", best] == \
        f"rram_seed003, w{b['weight_bits']}, adc{b['adc_bits']} {b['scheme']}, effects d2d,c2c,read"
    assert table.str.len().min() > 0
    rendered = content.accuracy(content.accuracy_table(_all(arts)), _all(arts)).blocks[0]
    assert "device, weight bits, effects" in rendered.columns


def test_mapped_snn_rows_say_t_and_split(arts, tmp_path):
    mapped = cmap(tmp_path / "cmap-snn", arts["snn"], [], extra={"timesteps": 8, "split": "val"})
    assert list(content.accuracy_table([mapped])["condition"]) == ["SNN T=8 mapped, ideal array (val split)",
                                                                   "SNN T=8 mapped, no effects (val split)"]


def test_identical_histograms_are_shown_once(arts):
    section = content.conductances([arts["cmap-noisy"], arts["cmap-plain"], arts["cmap-mine"]])
    shown = [b for b in section.blocks if isinstance(b, content.Figure)]
    assert [f.name for f in shown] == ["levels-cmap-noisy.png", "levels-cmap-mine.png"]
    assert "cmap-plain has exactly the same levels" in shown[0].caption
    assert "cmap-plain" not in shown[1].caption


def test_device_card_section(arts):
    section = content.device_cards(_all(arts))
    text = _texts(section)
    tables = [b for b in section.blocks if isinstance(b, content.Table)]
    assert len(text) == len(tables) == 2  # rram_seed003 and mycard, each once
    assert text[0].startswith("'rram_seed003'") and "Used by qmodel, cmap-noisy, cmap-plain, sweep, " \
        "sweep-old, neurosim." in text[0] and "Assumed, not measured: read.voltage" in text[0]
    rows = {r[0]: r[1:] for r in tables[0].rows}
    assert rows["conductance.levels"][0::2] == ["16", ""]  # measured
    assert rows["conductance.g_max"] == ["4.274", "nS", ""]  # siemens with a prefix
    assert rows["conductance.r_on"][0::2] == ["2.34e+08", ""]  # the range as resistances too
    assert rows["read.voltage"] == ["0.2", "V", "assumed"]
    assert rows["variation.d2d"][0::2] == ["0.05", "assumed"]  # the whole [variation] is assumed
    assert rows["adc.bits"][0::2] == ["8", "assumed"]
    assert rows["drift.t0"] == ["1", "s", "assumed"]
    assert all(unit for key, (_, unit, _) in rows.items() if key.split(".")[1] in ("g_min", "voltage", "d2d"))
    assert "optical.responsivity" not in rows  # not given: no row
    assert "Used by cmap-mine." in text[1] and "lists no assumed values" in text[1]
    assert {r[0]: r[1] for r in tables[1].rows}["conductance.levels"] == "32"
    assert content.device_cards([arts["model"]]).blocks == []


def test_snn_accuracy_vs_t_table_and_plot(arts):
    section = content.spiking_vs_t(_all(arts))
    table = next(b for b in section.blocks if isinstance(b, content.Table))
    assert table.columns == ["T", "snn", "snn-q"]
    for name in ("snn", "snn-q"):
        curve = pd.read_parquet(arts[name].file("accuracy_vs_t.parquet"))
        column = table.columns.index(name)
        assert [r[0] for r in table.rows] == list(curve["timesteps"])
        assert [r[column] for r in table.rows] == [f"{v:.4f}" for v in curve["val_accuracy"]]
    figure = next(b for b in section.blocks if isinstance(b, content.Figure))
    assert figure.name == "snn-accuracy-vs-t.png" and _image(figure.png).std() > 0.05
    assert "snn T=32" in _texts(section)[0]
    assert content.spiking_vs_t([arts["model"]]).blocks == []


def test_sweep_shows_the_indistinguishable_set_and_paired_error(arts):
    section = content.sweeps([arts["sweep"]])
    table = pd.read_parquet(arts["sweep"].file("sweep.parquet"))
    same = table[table["indistinguishable"]]
    text = _texts(section)
    assert "at 95% confidence" in text[0] and "best − recommended = " in text[0]
    rec = arts["sweep"].summary["recommended"]
    assert f"{rec['diff_vs_best']:.2f}\u00a0±\u00a00.31 points (paired standard error" in text[0]
    assert f"{len(same)} of {len(table)} configurations are statistically indistinguishable" in text[1]
    tables = [b for b in section.blocks if isinstance(b, content.Table)]
    assert len(tables[1].rows) == len(same) > 1
    energies = [float(r[-1]) for r in tables[1].rows]
    assert energies == sorted(energies)  # cheapest first
    # an artifact from before the paired comparison: no such table, and nothing invented
    old = content.sweeps([arts["sweep-old"]])
    assert len([b for b in old.blocks if isinstance(b, content.Table)]) == 1
    assert "confidence" not in _texts(old)[0] and "±\u00a00.31" not in _texts(old)[0]
    assert not [b for b in old.blocks if isinstance(b, content.Caveat)]


def test_caveats_beside_their_numbers(arts):
    acc = content.accuracy(content.accuracy_table(_all(arts)), _all(arts))
    assert [(c.artifact, c.text) for c in acc.blocks if isinstance(c, content.Caveat)] == \
        [("cmap-noisy", IR_CAVEAT)]
    sweeps = content.sweeps(_all(arts)).blocks
    first_table = next(i for i, b in enumerate(sweeps) if isinstance(b, content.Table))
    assert sweeps[first_table + 1] == content.Caveat(SWEEP_CAVEAT, "sweep")  # right below its numbers
    ns = content.neurosim(_all(arts), {})
    assert content.Caveat(NS_CAVEAT, "neurosim") in ns.blocks
    md = markdown("t", [acc, ns], "figures")
    assert f"> **Caveat** (cmap-noisy): {IR_CAVEAT}" in md and f"> **Caveat** (neurosim): {NS_CAVEAT}" in md
    page = html_page("t", [acc])
    assert "<p class='caveat'><strong>Caveat</strong> (cmap-noisy): first-order IR drop at r·(A+B)" in page


def test_chip_geometry_same_or_warned(arts, tmp_path):
    same = content.geometry([arts["cmap-noisy"], arts["neurosim"]])
    assert same.blocks[0].rows == [["cmap-noisy", "32×32", "accuracy (map-weights, array simulator)"],
                                   ["neurosim", "32×32", "area, energy, latency (NeuroSim)"]]
    assert same.blocks[1] == "Accuracy and NeuroSim figures are for the same 32×32 arrays."
    old_run = neurosim(tmp_path / "ns16", rows=16, new_keys=False)  # subarray only (before array_rows)
    other = content.geometry([arts["cmap-mine"], old_run])
    warning = other.blocks[-1]
    assert isinstance(warning, content.Caveat)
    assert "cmap-mine 128×128" in warning.text and "ns16 16×16" in warning.text
    assert content.geometry([arts["cmap-mine"]]).blocks[1:] == []  # one side only: nothing to compare
    assert content.geometry([arts["model"]]).blocks == []


# --- no two labels of a figure overlap -------------------------------------------------------------

@contextlib.contextmanager
def overlap_recorder():
    """While on: every figure the report draws is checked for text whose drawn boxes intersect
    (Text.get_window_extent on the renderer); yields the list of (figure title, [(text a, text b)])."""
    import matplotlib.text as mtext

    found: list[tuple[str, list[tuple[str, str]]]] = []
    png = figures._png

    def checked(fig):
        boxes = []
        draw = mtext.Text.draw

        def recording(self, renderer):  # only what is drawn (not ticks outside the view)
            draw(self, renderer)
            if self.get_visible() and self.get_text().strip():
                boxes.append((self.get_text(), self.get_window_extent(renderer)))

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(mtext.Text, "draw", recording)
            fig.canvas.draw()
        title = fig._suptitle.get_text() if fig._suptitle else fig.axes[0].get_title()
        found.append((title, [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
                              if box_a.overlaps(box_b)]))
        return png(fig)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "_png", checked)
        yield found


def test_report_figures_have_no_overlapping_labels(arts, tmp_path):
    arts_list = _all(arts)
    with overlap_recorder() as found:
        for make in (content.curves, content.spiking_vs_t, content.sweeps, content.conductances):
            make(arts_list)
        content.neurosim(arts_list + [neurosim(tmp_path / "neurosim-of-another-chip")], {})
    assert len(found) >= 10
    assert [(title, pairs) for title, pairs in found if pairs] == []


def test_accuracy_vs_energy_labels_do_not_overlap():
    """Energies spanning a fraction of a decade to eight decades: the x labels fit at every range."""
    ranges = [(1000, 1300), (3e3, 2.9e4), (2.1e6, 3.3e6), (1.5, 9), (20, 3e4), (1e-2, 1e6)]
    overlaps = {}
    for low, high in ranges:
        energy = np.geomspace(low, high, 12)
        points = pd.DataFrame({"energy_pj": energy, "val_mean": np.linspace(0.5, 0.9, 12)})
        with overlap_recorder() as found:
            figures.pareto(points, "energy_pj", "val_mean", "configurations", "sweep: accuracy vs energy",
                           {"best": (energy[-1], 0.9), "recommended": (energy[5], 0.7)})
        overlaps[low, high] = found[0][1]
    assert overlaps == {r: [] for r in ranges}


def test_timestep_labels_do_not_overlap():
    steps = (1, 100, 110, 120, 128)  # close on a log axis: not every T gets a label
    table = pd.DataFrame({"method": "m", "weight_bits": 4, "scheme": "B", "adc_bits": 8, "timesteps": steps,
                          "val_mean": [0.5, 0.8, 0.81, 0.82, 0.83], "val_std": 0.01})
    best = table.iloc[-1].to_dict()
    curve = table[["timesteps"]].assign(val_accuracy=table["val_mean"])
    with overlap_recorder() as found:
        figures.sweep_vs_t(table, best, best, "sweep")
        figures.accuracy_vs_t({"snn": (curve, 128)}, "SNN val accuracy vs T")
    assert [pairs for _, pairs in found] == [[], []]


def test_named_points_do_not_overlap():
    runs = pd.DataFrame({"run": ["neurosim-a", "neurosim-b", "neurosim-c"],
                         "image_energy_pj": [1000, 1010, 5000], "test_accuracy": [0.9, 0.901, 0.8]})
    with overlap_recorder() as found:
        png = figures.pareto(runs, "image_energy_pj", "test_accuracy", "NeuroSim runs", "accuracy vs energy",
                             annotate="run")
    assert found[0][1] == [] and _image(png).std() > 0.05


def _image(png: bytes) -> np.ndarray:
    import io

    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(png), format="png")


# --- the stage ------------------------------------------------------------------------------------

def test_report_stage_on_hand_made_artifacts(arts, tmp_path, cli):
    folder = arts["model"].path.parent
    result = cli("report", folder, "--out", tmp_path / "report", "--json", "--quiet")
    assert result.code == 0, result.err
    report = artifacts.load(tmp_path / "report", "report")
    pngs = sorted((report.path / "figures").iterdir())
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in pngs]
    assert len(set(digests)) == len(digests) == report.summary["figures"]  # each distinct figure once
    assert report.summary["caveats"] == 4  # cmap-noisy, sweep, neurosim, the geometry warning
    md = report.file("report.md").read_text()
    for heading in ("Device cards", "Chip geometry", "Spiking networks: accuracy vs T (val)"):
        assert f"\n## {heading}\n" in md
    assert f"> **Caveat** (sweep): {SWEEP_CAVEAT}" in md
    accuracy = pd.read_parquet(report.file("accuracy.parquet"))
    assert accuracy["chip"].str.len().min() > 0
    assert "non-ideal" not in " ".join(accuracy.loc[accuracy["artifact"] == "cmap-plain", "condition"])


def optical_model(out: Path, photons: float, responsivity: list[float], acc: float,
                  std: float) -> artifacts.Artifact:
    arch = {"optical": {"device": "mycard", "responsivity": responsivity, "max_photons": photons}}
    return write(out, "model", {"model": "mnist_cnn", "dataset": "cifar10", "front_end": "optical",
                                "max_photons": photons, "device": "mycard"},
                 {"test_accuracy": acc, "test_accuracy_std": std,
                  "test_accuracy_draws": [acc - std, acc + std], "eval_seed": 0},
                 {"weights.safetensors": "", "arch.json": json.dumps(arch), "metrics.parquet": EMPTY,
                  "timing.parquet": EMPTY})


def test_photon_budget_is_a_column_and_accuracy_vs_photons_a_figure(tmp_path):
    arts = [optical_model(tmp_path / f"m{n}-{r[0]}", n, r, acc, 0.01)
            for n, r, acc in ((10, [0.2, 1, 0.4], 0.6), (100, [0.2, 1, 0.4], 0.8),
                              (10, [1, 1, 1], 0.7), (100, [1, 1, 1], 0.85))]
    arts.append(qmodel(tmp_path / "q", arts[1]))
    table = content.accuracy_table(arts)
    assert sorted(table["photons"].dropna().tolist()) == [10, 10] + [100] * 6  # the qmodel's 4 rows: 100
    assert table[table["stage"] == "model"]["std"].tolist() == [0.01] * 4  # ± over photon-noise draws
    section = content.accuracy(table, arts)
    rendered = section.blocks[0]
    assert rendered.columns[3] == "photons" and {r[3] for r in rendered.rows} == {"10", "100"}
    photons_table = next(b for b in section.blocks[1:] if isinstance(b, content.Table))
    assert [r[0] for r in photons_table.rows] == ["cifar10, mnist_cnn, responsivity 0.2/1/0.4"] * 2 + [
        "cifar10, mnist_cnn, responsivity 1/1/1"] * 2
    assert photons_table.rows[1][1:] == ["100", "0.8000\u00a0±\u00a00.0100"]
    figure = next(b for b in section.blocks if isinstance(b, content.Figure))
    assert figure.name == "accuracy-vs-photons.png" and figure.png.startswith(b"\x89PNG")
    one = content.accuracy(content.accuracy_table(arts[:1]), arts[:1])  # one budget: no figure, column kept
    assert not any(isinstance(b, content.Figure) for b in one.blocks)
    assert one.blocks[0].columns[3] == "photons"
