"""The report's "Device fits" section, on a hand-made ``device`` artifact (the layout `cimtool devices fit`
writes: card.toml, fit.parquet, points.parquet; the manifest summary the section reads)."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cimtool import artifacts
from cimtool.report import content, figures

DEVICE_FILES = ("card.toml", "fit.parquet", "points.parquet")


@contextlib.contextmanager
def device_kind():
    """The ``device`` kind, registered for the duration if this cimtool does not have it yet."""
    if "device" in artifacts.SCHEMAS:
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(artifacts.SCHEMAS, "device", 1)
        mp.setitem(artifacts.KIND_DIRS, "device", "devices")
        mp.setitem(artifacts.REQUIRED_FILES, "device", DEVICE_FILES)
        yield


def pulse_trains(devices: int = 2, cycles: int = 3, pulses: int = 32, seed: int = 0) -> pd.DataFrame:
    """Measured and fitted conductance (S) of LTP then LTD trains: NeuroSim's saturating curve between
    2 and 20 nS, readings scattered about it."""
    rng = np.random.default_rng(seed)
    g_min, g_max, rows = 2e-9, 20e-9, []
    for d in range(devices):
        span = (g_max - g_min) * (1 + 0.1 * d)
        for cycle in range(1, cycles + 1):
            for direction, c in (("ltp", 3.0), ("ltd", -2.0)):
                k = np.arange(1, pulses + 1)
                s = k / pulses if direction == "ltp" else (pulses - k) / pulses
                fitted = g_min + span * (1 - np.exp(-c * s)) / (1 - np.exp(-c))
                measured = fitted + rng.normal(0, 0.4e-9, pulses)
                rows.append(pd.DataFrame({"device": f"D{d + 1}", "cycle": cycle, "direction": direction,
                                          "pulse": k, "measured": measured, "fitted": fitted,
                                          "residual": measured - fitted}))
    return pd.concat(rows, ignore_index=True)


FIT_ROWS = [  # quantity, value, uncertainty, unit, note
    ("g_min", 2.013e-9, 4.1e-11, "S", "fitted curve's range"),
    ("g_max", 2.0e-8, 2.2e-10, "S", "fitted curve's range"),
    ("nl_ltp", 2.41, 0.12, "", "NeuroSim's NL label of the fitted curve"),
    ("nl_ltd", -1.7, 0.15, "", "NeuroSim's NL label of the fitted curve"),
    ("pulses_ltp", 32.0, 0.0, "pulses", "pulses of the measured train"),
    ("pulses_ltd", 32.0, 0.0, "pulses", "pulses of the measured train"),
    ("c2c_sigma", 0.022, 0.0011, "of the range", "scatter of the readings about the fitted curve"),
    ("read_noise", 0.01, math.nan, "", "assumed"),
    ("drift_nu", 0.005, math.nan, "", "assumed"),
]


def write_device_artifact(out: Path, card_name: str = "rram_fitted", seed: int = 0) -> artifacts.Artifact:
    """A ``device`` artifact at ``out``, written through ArtifactWriter as the stage does (call inside
    ``device_kind()``)."""
    points = pulse_trains(seed=seed)
    fit = pd.DataFrame(FIT_ROWS, columns=["quantity", "value", "uncertainty", "unit", "note"])
    residual = points["residual"].to_numpy()
    with artifacts.ArtifactWriter(out, "device", {"data": "hand-made", "seed": seed}) as writer:
        writer.path("card.toml").write_text(f'name = "{card_name}"\ndescription = "hand-made for a test"\n')
        fit.to_parquet(writer.path("fit.parquet"), index=False)
        points.to_parquet(writer.path("points.parquet"), index=False)
        writer.commit([], {"card_name": card_name, "devices": 2, "readings": len(points),
                           "rms_residual": float(np.sqrt(np.mean(residual ** 2))),
                           "point_to_point_noise": float(np.std(np.diff(residual))),
                           "nl_ltp": 2.41, "nl_ltd": -1.7, "pulses_ltp": 32, "pulses_ltd": 32})
    return artifacts.load(out, "device")


def _image(png: bytes) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(png), format="png")


def test_device_fit_figure_from_tables():
    pixels = _image(figures.device_fit(pulse_trains(), "fit"))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500 and pixels.std() > 0.05
    only_ltp = pulse_trains(devices=1, cycles=1).query("direction == 'ltp'")  # one direction still plots
    assert _image(figures.device_fit(only_ltp, "ltp only")).std() > 0.05


def test_value_formatting():
    nbsp = "\u00a0"
    assert content._value(2.013e-9, 4.1e-11, "S") == f"2.013{nbsp}±{nbsp}0.041 nS"
    assert content._value(32.0, 0.0, "pulses") == "32 pulses"  # an exact count: no ± 0
    assert content._value(0.01, math.nan, "") == "0.01"
    assert content._value(0.022, 0.0011, "of the range") == f"0.022{nbsp}±{nbsp}0.0011 of the range"
    assert content._value(math.nan) == "—"
    assert content._value(0.0, math.nan, "S") == "0 S"


def test_devices_section(tmp_path):
    with device_kind():
        art = write_device_artifact(tmp_path / "fit")
    section = content.devices([art])
    text, table, figure = section.blocks
    assert "rram_fitted" in text and "RMS residual" in text and "402 pS" in text and "2 device(s)" in text
    assert isinstance(table, content.Table) and [r[0] for r in table.rows] == [r[0] for r in FIT_ROWS]
    assert table.rows[-1][2] == "assumed"
    assert isinstance(figure, content.Figure) and figure.name == "device-fit.png"
    assert _image(figure.png).std() > 0.05
    assert content.devices([]).blocks == []  # no device artifact: no section


def test_report_renders_device_fits(tmp_path, cli):
    with device_kind():
        write_device_artifact(tmp_path / "arts" / "devices" / "a", card_name="rram_a")
        write_device_artifact(tmp_path / "arts" / "devices" / "b", card_name="rram_b", seed=1)
        result = cli("report", tmp_path / "arts", "--out", tmp_path / "report", "--quiet")
    assert result.code == 0, result.err
    report = tmp_path / "report"
    html_text = (report / "report.html").read_text()
    assert "<h2>Device fits</h2>" in html_text and "rram_a" in html_text and "rram_b" in html_text
    assert {"device-a.png", "device-b.png"} <= {p.name for p in (report / "figures").iterdir()}
    assert "## Device fits" in (report / "report.md").read_text()
    assert "Accuracy across stages" not in html_text  # no accuracy rows: no empty table
