"""`cimtool devices fit DATA`: a device card from measured pulse responses
(docs/physics.md#fitting-a-device-card).

Reads the readings (``cimtool.devices.fit.read_pulses``), fits NeuroSim's LTP/LTD curve per device
(``fit_device``), and writes a ``device`` artifact: ``card.toml`` (loadable by every ``--device``
option: the fitted values, the rest from ``--base``, assumed where the base card assumes it),
``fit.parquet`` (each value with its uncertainty and how it was determined), ``points.parquet``
(measured, fitted and residual conductance per pulse, in siemens) and ``fit.png`` (measured vs
fitted, residuals).
Everything is checked and fitted before anything is written.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from cimtool import artifacts
from cimtool.devices.card import MAX_LEVELS, NAME_RE, card_entries, card_toml, load_card
from cimtool.devices.fit import (
    DIRECTIONS,
    DeviceFit,
    carried_assumed,
    fit_device,
    fit_drift,
    nearest_preset,
    range_d2d,
    read_pulses,
    read_retention,
)
from cimtool.errors import CimtoolError
from cimtool.params import DeviceFitParams
from cimtool.stages.common import StageOutput
from cimtool.ui import Reporter

KIND = "device"


def _check(p: DeviceFitParams) -> None:
    if (p.g_min is None) != (p.g_max is None):
        raise CimtoolError("--g-min and --g-max go together (normalised data); give both or neither")
    if p.g_min is not None and not (0 < p.g_min < p.g_max and math.isfinite(p.g_max)):
        raise CimtoolError(f"--g-min/--g-max must satisfy 0 < g_min < g_max (S), got {p.g_min:g}, "
                           f"{p.g_max:g}")
    if p.name is not None and not NAME_RE.fullmatch(p.name):
        raise CimtoolError(f"--name must be letters, digits, '_', '-' or '.', got {p.name!r}")


class _Siemens:
    """Data units → siemens: the identity for conductances, else the fitted range onto [g_min, g_max]."""

    def __init__(self, p: DeviceFitParams, lo: float, hi: float) -> None:
        self.normalised = p.g_min is not None
        self.lo, self.hi = lo, hi
        self.scale = (p.g_max - p.g_min) / (hi - lo) if self.normalised else 1.0
        self.g_min = p.g_min if self.normalised else lo

    def __call__(self, x):
        return self.g_min + (x - self.lo) * self.scale if self.normalised else x


def _values(result: DeviceFit, to_s: _Siemens, base) -> tuple[dict[str, Any], list[dict[str, Any]], set[str]]:
    """The card's fields, the fit report's rows (quantity, value, uncertainty, unit, note) and the
    names of the fields the data determined."""
    devices = sorted(result.fits)
    fits = [result.fits[d] for d in devices]
    noises = [result.noises[d] for d in devices]
    n = len(devices)
    rows: list[dict[str, Any]] = []

    def row(quantity: str, value: float, sigma: float, unit: str, note: str) -> None:
        rows.append({"quantity": quantity, "value": float(value), "uncertainty": float(sigma), "unit": unit,
                     "note": note})

    def pooled(values: list[float], sigmas: list[float]) -> tuple[float, float]:
        """Mean over devices; uncertainty: the fits' own, or the devices' spread where larger."""
        sigma = math.sqrt(sum(s * s for s in sigmas)) / n
        if n > 1:
            sigma = max(sigma, float(np.std(values, ddof=1)) / math.sqrt(n))
        return float(np.mean(values)), sigma

    g_lo = pooled([to_s(f.lo) for f in fits], [math.sqrt(f.cov[0, 0]) * to_s.scale for f in fits])
    g_hi = pooled([to_s(f.hi) for f in fits], [math.sqrt(f.cov[1, 1]) * to_s.scale for f in fits])
    how = ("given (--g-min, --g-max); the fitted range mapped onto it" if to_s.normalised
           else "fitted curve's range")
    row("g_min", g_lo[0], np.nan if to_s.normalised else g_lo[1], "S", how)
    row("g_max", g_hi[0], np.nan if to_s.normalised else g_hi[1], "S", how)
    card: dict[str, Any] = {"g_min": g_lo[0], "g_max": g_hi[0]}
    for d in DIRECTIONS:
        nl = pooled([f.nl(d) for f in fits], [f.nl_sigma(d) for f in fits])
        row(f"nl_{d}", *nl, "", "NeuroSim's NL label of the fitted curve (sign: curvature)")
        pulses = int(round(float(np.median([f.pulses[d] for f in fits]))))
        given = max(f.pulses_given[d] for f in fits)
        saturated = pulses < given
        row(f"pulses_{d}", pulses, 0.0, "pulses",
            f"the device saturated after {pulses} of {given} pulses (BIC)" if saturated
            else "pulses of the measured train")
        card[f"nl_{d}"], card[f"pulses_{d}"] = round(nl[0], 4), pulses
    c2c = pooled([x.c2c / (f.hi - f.lo) for x, f in zip(noises, fits, strict=True)],
                 [x.c2c_sigma / (f.hi - f.lo) for x, f in zip(noises, fits, strict=True)])
    row("c2c_sigma", *c2c, "of the range", "scatter of the readings about the fitted curve"
        + (f" (readings' step {result.resolution:.3g} removed, Sheppard)" if result.resolution else ""))
    card["c2c_sigma"] = round(c2c[0], 6)
    levels = min(MAX_LEVELS, min(card["pulses_ltp"], card["pulses_ltd"]) + 1)
    row("levels", levels, 0.0, "states", "pulses + 1 states along the curve")
    card["levels"] = levels
    if n > 1:
        mids = [(to_s(f.lo) + to_s(f.hi)) / 2 for f in fits]
        d2d = float(np.std(mids, ddof=1)) / (g_hi[0] - g_lo[0])
        row("d2d_sigma", d2d, d2d / math.sqrt(2 * (n - 1)), "of the range",
            f"spread of the {n} devices' mid-range conductance")
        row("nl_d2d", float(np.std([f.nl("ltp") for f in fits], ddof=1)), np.nan, "",
            f"spread of NL (LTP) over the {n} devices (qat --nl-d2d)")
        card["d2d_sigma"] = round(d2d, 6)
    else:  # one device has no spread of its own: the base card's, in the range model
        card["d2d_sigma"] = round(range_d2d(base.d2d_sigma, base.variation_model, g_lo[0], g_hi[0]), 6)
        lognormal = (f" (its lognormal σ {base.d2d_sigma:g} of ln G at mid-range)"
                     if base.variation_model != "range" else "")
        row("d2d_sigma", card["d2d_sigma"], np.nan, "of the range",
            f"the base card {base.name}'s{lognormal}; one device measured")
    if result.drift is not None:
        drift = result.drift
        row("drift_nu", drift.nu, drift.nu_sigma_fit, "",
            "G(t) = G0·(t/t0)^(−ν), log-log fit of the retention")
        card["drift_nu"], card["drift_t0"] = round(drift.nu, 6), drift.t0
        if drift.nu_spread is not None:
            row("drift_nu_sigma", drift.nu_spread, np.nan, "", "spread of ν over the devices")
            card["drift_nu_sigma"] = round(drift.nu_spread, 6)
    rms = float(np.mean([x.rms_residual for x in noises])) * to_s.scale
    p2p = float(np.mean([x.point_to_point for x in noises])) * to_s.scale
    row("rms_residual", rms, np.nan, "S", "RMS of measured − fitted")
    row("point_to_point_noise", p2p, np.nan, "S", "std of the step between consecutive readings, fitted step "
        "removed")
    row("residual_lag1", float(np.mean([x.residual_rho for x in noises])), np.nan, "",
        "lag-1 correlation of the residuals (0: independent scatter; > 0: the device also wanders)")
    return card, rows, set(card) - ({"d2d_sigma"} if n == 1 else set())


# the card's keys of the fitted values; the fit also sets the range's other spelling, the variation
# model (its C2C is a fraction of the range) and the spacing (linear: an approximation, assumed)
_FITTED_KEYS = {"g_min": "conductance.g_min", "g_max": "conductance.g_max", "levels": "conductance.levels",
                "nl_ltp": "update.nl_ltp", "nl_ltd": "update.nl_ltd", "pulses_ltp": "update.pulses_ltp",
                "pulses_ltd": "update.pulses_ltd", "c2c_sigma": "variation.c2c", "d2d_sigma": "variation.d2d",
                "drift_nu": "drift.nu", "drift_t0": "drift.t0", "drift_nu_sigma": "drift.nu_sigma"}
_SET_BY_FIT = ("conductance.r_on", "conductance.r_off", "variation.model", "conductance.spacing")


def _assumed(base, card, fitted: set[str]) -> tuple[str, ...]:
    """What the base card assumed of the values the data did not determine, and the spacing; a value
    the base card measured stays measured."""
    sections: dict[str, list[str]] = {}
    for section, key, _, _ in card_entries(card):
        if section:
            sections.setdefault(section, []).append(key)
    determined = {_FITTED_KEYS[f] for f in fitted} | set(_SET_BY_FIT)
    return tuple(carried_assumed(base.assumed, determined, sections) + ["conductance.spacing"])


def run(p: DeviceFitParams, out: Path | None, root: Path, force: bool,
        reporter: Reporter) -> artifacts.Artifact:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t_start = time.perf_counter()
    _check(p)
    base = load_card(p.base) if p.base is not None else None
    data = Path(p.data)
    name = p.name or "".join(ch if NAME_RE.fullmatch(ch) else "_" for ch in data.stem)
    output = StageOutput(KIND, out, root, name, force, started=t_start)  # --out checked before the fit
    table = read_pulses(data)
    data_sha = _sha256(data)
    if p.g_min is None and (table["conductance"] <= 0).any():
        row = table.loc[table["conductance"] <= 0].iloc[0]
        raise CimtoolError(f"{data}: a conductance of {row['conductance']:g} S (device {row['device']}, "
                           f"{row['direction']} pulse {row['pulse']}) is not positive; for normalised data "
                           "give --g-min and --g-max")
    retention = read_retention(Path(p.retention)) if p.retention else None
    result = fit_device(table, str(data))
    reporter.log(f"devices fit: {len(table)} readings of {table['device'].nunique()} device(s), "
                 f"{table.groupby('device')['cycle'].nunique().sum()} cycle(s) from {data}")
    lo = float(np.mean([f.lo for f in result.fits.values()]))
    hi = float(np.mean([f.hi for f in result.fits.values()]))
    to_s = _Siemens(p, lo, hi)
    if not to_s.normalised and lo <= 0:
        raise CimtoolError(f"{data}: the fitted bottom of the range is {lo:g} S, not positive; for "
                           "normalised data give --g-min and --g-max")
    if retention is not None:
        retention = retention.assign(conductance=to_s(retention["conductance"]))
        if (retention["conductance"] <= 0).any():
            raise CimtoolError(f"{p.retention}: a retention reading maps to a conductance <= 0 S")
        result.drift = fit_drift(retention)
    how = "--base"
    if base is None:
        base = load_card(nearest_preset(float(to_s(lo)), float(to_s(hi))))
        how = "the preset nearest the fitted conductance range; --base to choose another"
    reporter.log(f"devices fit: base card '{base.name}' ({how}) for what the data do not determine")
    fitted, rows, measured = _values(result, to_s, base)
    variation = {"variation_model": "range"} if base.variation_model != "range" else {}
    card = replace(base, name=name, description=f"fitted to {data.name}",
                   source=f"cimtool devices fit {data.name} (sha256 {data_sha[:12]})",
                   spacing="linear", **variation, **fitted, assumed=())
    card = replace(card, assumed=_assumed(base, card, measured))
    text = card_toml(card, f"Device card fitted by cimtool devices fit to {data.name}.\n"
                           "Values the data did not determine come from the base card "
                           f"{base.name}; 'assumed' lists what it assumed of them.")
    points = result.points.assign(measured=to_s(result.points["measured"]),
                                  fitted=to_s(result.points["fitted"]),
                                  residual=result.points["residual"] * to_s.scale)
    params = {**asdict(p), "data_sha256": data_sha,
              "retention_sha256": _sha256(Path(p.retention)) if p.retention else None}
    with output.writer(params) as writer:
        Path(writer.path("card.toml")).write_text(text)
        load_card(str(writer.path("card.toml")))  # what every --device option will read back
        pq.write_table(pa.Table.from_pylist(rows), writer.path("fit.parquet"))
        pq.write_table(pa.Table.from_pandas(points, preserve_index=False), writer.path("points.parquet"))
        from cimtool.report import figures

        png = figures.device_fit(points, f"{card.name}: measured vs fitted")
        Path(writer.path("fit.png")).write_bytes(png)
        value = {r["quantity"]: r["value"] for r in rows}
        summary = {"card_name": card.name, "devices": len(result.fits), "readings": len(table),
                   "nl_ltp": card.nl_ltp, "nl_ltd": card.nl_ltd, "pulses_ltp": card.pulses_ltp,
                   "pulses_ltd": card.pulses_ltd, "c2c_sigma": card.c2c_sigma, "g_min": card.g_min,
                   "g_max": card.g_max, "rms_residual": value["rms_residual"],
                   "point_to_point_noise": value["point_to_point_noise"],
                   "rms_over_point_to_point": value["rms_residual"] / value["point_to_point_noise"],
                   "assumed": list(card.assumed)}
        return output.commit(writer, [], summary)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    return (f"[green]device[/green] {artifact.path}  card {artifact.path / 'card.toml'}\n"
            f"  NL LTP {s['nl_ltp']:+.2f}, LTD {s['nl_ltd']:+.2f}; {s['pulses_ltp']}/{s['pulses_ltd']} "
            "pulses; "
            f"c2c {s['c2c_sigma']:.3g} of the range; RMS residual / point-to-point noise "
            f"{s['rms_over_point_to_point']:.3f}")
