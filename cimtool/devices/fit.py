"""A device card from measured pulse responses (docs/physics.md#fitting-a-device-card).

Input: readings of a device's conductance after each pulse of a potentiation (LTP) train and a
depression (LTD) train, per cycle and per device, optionally a retention run. The curve is
NeuroSim's (the one ``qat --mode onchip`` updates along, ``cimtool.nn.wage``): in the state
coordinate ``s = p/N`` (p pulses of N from g_min),

    G(s) = lo + (hi − lo)·(1 − e^(−c·s))/(1 − e^(−c)),   c = N/A = 1/a,

one ``c`` per direction (NeuroSim's NL label is a function of a: ``wage.nl_of_a``; c = 0 is a linear
device). Reading k of an LTP train (k = 1..K) is at state k/N, of an LTD train at (N − k)/N: the
train crosses the range in N = K pulses, unless the device saturates earlier (then N < K, and the
readings after pulse N stay at the end of the range; chosen by BIC).

Cycle-to-cycle noise: the scatter of the readings about the fitted curve (NeuroSim's convention
for fitting a measured curve: each pulse lands off the mean curve, independently). Uncertainties:
curve parameters from the fit's Jacobian, widened by the residuals' lag-1 correlation ρ by
(1 + ρ)/(1 − ρ) (a device that also wanders slowly carries less information per reading); the
noise's from the effective number of readings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cimtool.errors import CimtoolError

DIRECTIONS = ("ltp", "ltd")
MIN_PULSES = 8  # per direction: fewer do not determine a curve and a noise
C_BOUND = 50.0  # |c| = N/A; NeuroSim's table ends at NL 9 (c ≈ 17)


# --- reading ----------------------------------------------------------------------------------------

def _read_table(path: Path) -> pd.DataFrame:
    """A CSV (with or without header) or a Parquet file; errors name the file."""
    if not path.is_file():
        raise CimtoolError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CimtoolError(f"{path}: the file is empty")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        head = path.read_text(encoding="utf-8-sig", errors="replace").lstrip().split("\n", 1)[0]
        has_header = any(ch.isalpha() and ch not in "eE" for ch in head)
        return pd.read_csv(path, header=0 if has_header else None, encoding="utf-8-sig")
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise CimtoolError(f"{path}: not a readable CSV or Parquet table ({str(exc).splitlines()[0]})") \
            from None


def read_pulses(path: Path) -> pd.DataFrame:
    """Long table ``device, cycle, direction, pulse, conductance`` from either input format:

    - two columns without header: LTP readings (column 1) and LTD readings (column 2), one cycle;
    - a long table with header: ``pulse, conductance, direction`` (ltp/ltd, or up/down, set/reset,
      potentiation/depression) and optionally ``cycle`` and ``device``."""
    raw = _read_table(path)
    if raw.empty:
        raise CimtoolError(f"{path}: the file has no rows")
    if all(isinstance(c, int) for c in raw.columns):  # no header: the two-column up/down format
        if raw.shape[1] != 2:
            raise CimtoolError(f"{path}: a table without header must have two columns (LTP readings, "
                               f"then LTD readings), got {raw.shape[1]}; or give a header with pulse, "
                               "conductance, direction")
        parts = []
        for col, direction in zip(raw.columns, DIRECTIONS, strict=True):
            values = pd.to_numeric(raw[col], errors="coerce")
            parts.append(pd.DataFrame({"device": "device", "cycle": 0, "direction": direction,
                                       "pulse": np.arange(1, len(values) + 1), "conductance": values,
                                       "row": np.arange(len(values)) + 1}))
        table = pd.concat(parts, ignore_index=True)
    else:
        columns = {str(c).strip().lower(): c for c in raw.columns}
        missing = [c for c in ("pulse", "conductance", "direction") if c not in columns]
        if missing:
            got = ", ".join(map(str, raw.columns))
            raise CimtoolError(f"{path}: missing column(s) {', '.join(missing)} (a long table needs pulse, "
                               f"conductance, direction[, cycle][, device]; got {got})")
        table = pd.DataFrame({
            "device": raw[columns["device"]].astype(str) if "device" in columns else "device",
            "cycle": pd.to_numeric(raw[columns["cycle"]], errors="coerce") if "cycle" in columns else 0,
            "direction": raw[columns["direction"]].astype(str).str.strip().str.lower().map(_DIRECTION_NAMES),
            "pulse": pd.to_numeric(raw[columns["pulse"]], errors="coerce"),
            "conductance": pd.to_numeric(raw[columns["conductance"]], errors="coerce"),
            "row": np.arange(len(raw)) + 2})  # the header is line 1
        bad = table["direction"].isna()
        if bad.any():
            row = int(table["row"][bad].iloc[0])
            raise CimtoolError(f"{path}: line {row}: direction {raw[columns['direction']][bad].iloc[0]!r} is "
                               "not ltp/ltd (or up/down, set/reset, potentiation/depression)")
    for column in ("pulse", "cycle", "conductance"):
        bad = ~np.isfinite(table[column].astype(float))
        if bad.any():
            raise CimtoolError(f"{path}: line {int(table['row'][bad].iloc[0])}: {column} is missing, NaN or "
                               "not a number")
    table = table.astype({"pulse": int, "cycle": int, "conductance": float})
    return table.sort_values(["device", "cycle", "direction", "pulse"], kind="stable").reset_index(drop=True)


_DIRECTION_NAMES = {**{d: d for d in DIRECTIONS}, "up": "ltp", "down": "ltd", "set": "ltp", "reset": "ltd",
                    "potentiation": "ltp", "depression": "ltd", "+": "ltp", "-": "ltd"}


def read_retention(path: Path) -> pd.DataFrame:
    """``time`` (s) and ``conductance`` (the pulse data's units), optionally ``device``."""
    raw = _read_table(path)
    columns = {str(c).strip().lower(): c for c in raw.columns}
    if "time" not in columns or "conductance" not in columns:
        raise CimtoolError(f"{path}: retention data need the columns time, conductance[, device]")
    table = pd.DataFrame({"device": raw[columns["device"]].astype(str) if "device" in columns else "device",
                          "time": pd.to_numeric(raw[columns["time"]], errors="coerce"),
                          "conductance": pd.to_numeric(raw[columns["conductance"]], errors="coerce")})
    for column in ("time", "conductance"):
        bad = ~np.isfinite(table[column]) | (table[column] <= 0)
        if bad.any():
            raise CimtoolError(f"{path}: line {int(np.flatnonzero(bad)[0]) + 2}: {column} must be a positive "
                               "number")
    if table.groupby("device").size().min() < 3:
        raise CimtoolError(f"{path}: retention needs at least 3 readings per device")
    return table


# --- the curve ----------------------------------------------------------------------------------

def curve(s: np.ndarray, c: float) -> np.ndarray:
    """(1 − e^(−c·s))/(1 − e^(−c)) on s ∈ [0, 1]: NeuroSim's normalised update curve (c = N/A)."""
    if abs(c) < 1e-9:
        return s
    return np.expm1(-c * s) / math.expm1(-c)


def states(direction: str, k: np.ndarray, n: float) -> np.ndarray:
    """State s ∈ [0, 1] after pulse k of a train that crosses the range in n pulses."""
    s = k / n if direction == "ltp" else (n - k) / n
    return np.clip(s, 0.0, 1.0)


def nl_label(c: float) -> float:
    """NeuroSim's NL of a curve with c = N/A (0: linear)."""
    from cimtool.nn.wage import nl_of_a

    return float(nl_of_a(1.0 / c)) if abs(c) > 1e-9 else 0.0


@dataclass
class Segment:
    """One train: the readings of one direction of one cycle of one device."""

    device: str
    cycle: int
    direction: str
    pulse: np.ndarray  # 1..K
    g: np.ndarray


def segments(table: pd.DataFrame, where: str) -> list[Segment]:
    out = []
    for (device, cycle, direction), part in table.groupby(["device", "cycle", "direction"], sort=True):
        out.append(Segment(str(device), int(cycle), str(direction), part["pulse"].to_numpy(),
                           part["conductance"].to_numpy(dtype=float)))
    for device in sorted({s.device for s in out}):
        have = {s.direction for s in out if s.device == device}
        if have != set(DIRECTIONS):
            only = ", ".join(sorted(have))
            raise CimtoolError(f"{where}: device {device!r} has only {only} readings: a fit needs both an "
                               "LTP and an LTD train")
    for s in out:
        if len(s.g) < MIN_PULSES:
            raise CimtoolError(f"{where}: device {s.device!r} cycle {s.cycle} {s.direction.upper()} has "
                               f"{len(s.g)} pulses; a fit needs at least {MIN_PULSES} per direction")
        if len(np.unique(s.pulse)) != len(s.pulse):
            raise CimtoolError(f"{where}: device {s.device!r} cycle {s.cycle} {s.direction.upper()} repeats "
                               "a pulse number")
        _check_trend(s, where)
    return out


def _check_trend(s: Segment, where: str) -> None:
    """A train must move its way: LTP up, LTD down, by more than its point-to-point noise."""
    tail = max(4, len(s.g) // 10)
    change = s.g[-tail:].mean() - s.g[:tail].mean()
    noise = np.std(np.diff(s.g)) / math.sqrt(tail)
    sign = 1 if s.direction == "ltp" else -1
    if sign * change <= 3 * noise:
        moves = "rise" if sign > 0 else "fall"
        raise CimtoolError(
            f"{where}: device {s.device!r} cycle {s.cycle}: the {s.direction.upper()} readings do not "
            f"{moves} (first-to-last change {change:+.3g}, noise {noise:.2g}): not a pulse response")


# --- the fit -----------------------------------------------------------------------------------------

@dataclass
class CurveFit:
    """One device's curve: range, curvature and pulse count per direction, with uncertainties."""

    lo: float
    hi: float
    c: dict[str, float]
    pulses: dict[str, int]
    pulses_given: dict[str, int]  # the longest train of each direction
    cov: np.ndarray  # of (lo, hi, c_ltp, c_ltd)
    residual_rho: float  # lag-1 correlation of the residuals (widens cov)

    def predict(self, seg: Segment) -> np.ndarray:
        s = states(seg.direction, seg.pulse.astype(float), self.pulses[seg.direction])
        return self.lo + (self.hi - self.lo) * curve(s, self.c[seg.direction])

    def nl(self, direction: str) -> float:
        return nl_label(self.c[direction])

    def nl_sigma(self, direction: str) -> float:
        i = 2 + DIRECTIONS.index(direction)
        c, sd = self.c[direction], math.sqrt(max(self.cov[i, i], 0.0))
        h = max(1e-4, 1e-3 * abs(c))
        slope = (nl_label(c + h) - nl_label(c - h)) / (2 * h)
        return abs(slope) * sd


def _residuals(theta: np.ndarray, segs: list[Segment], pulses: dict[str, float]) -> np.ndarray:
    lo, hi, c_ltp, c_ltd = theta
    cs = {"ltp": c_ltp, "ltd": c_ltd}
    return np.concatenate([lo + (hi - lo) * curve(states(s.direction, s.pulse.astype(float),
                                                         pulses[s.direction]), cs[s.direction]) - s.g
                           for s in segs])


def _least_squares(segs: list[Segment], pulses: dict[str, float], start: np.ndarray | None = None):
    """The best of several starts (the curvatures' signs are not known in advance), or one ``start``."""
    from scipy.optimize import least_squares

    bounds = ([-np.inf, -np.inf, -C_BOUND, -C_BOUND], [np.inf, np.inf, C_BOUND, C_BOUND])
    if start is not None:
        starts = [start]
    else:
        g = np.concatenate([s.g for s in segs])
        lo, hi = np.percentile(g, 2), np.percentile(g, 98)
        starts = [np.array([lo, hi, c0, c1]) for c0 in (-3.0, 0.0, 3.0) for c1 in (-3.0, 0.0, 3.0)]
    best = None
    for x0 in starts:
        fit = least_squares(_residuals, x0, bounds=bounds, args=(segs, pulses), x_scale="jac")
        if best is None or fit.cost < best.cost - 1e-12:
            best = fit
    return best


def _saturation(segs: list[Segment], direction: str, given: int, base, base_pulses: dict) -> int:
    """The pulse count of ``direction``: the train's own length, or fewer where the device saturates
    (the readings after pulse N stay at the end of the range) and BIC prefers it."""
    m = sum(len(s.g) for s in segs)
    best_n, best_cost = given, base.cost

    def cost(n: int) -> float:
        return _least_squares(segs, {**base_pulses, direction: float(n)}, base.x).cost

    for n in np.unique(np.linspace(given // 2, given, 21).round().astype(int)):
        if MIN_PULSES <= n < given and (c := cost(int(n))) < best_cost:
            best_n, best_cost = int(n), c
    if best_n == given:
        return given
    step = max(1, given // 40)
    for n in range(max(MIN_PULSES, best_n - step), min(given - 1, best_n + step) + 1):  # to the pulse
        if (c := cost(n)) < best_cost:
            best_n, best_cost = n, c
    # BIC for one parameter more (cost = SSE/2), on the effective number of readings: correlated
    # residuals (a wandering device) carry less information than as many independent ones
    rho = min(max(_lag1(_split(base.fun, segs)), 0.0), 0.95)
    m_eff = m * (1 - rho) / (1 + rho)
    bic_gain = m_eff * math.log(base.cost / best_cost) if best_cost > 0 else math.inf
    return best_n if bic_gain > math.log(m_eff) else given


def fit_curve(segs: list[Segment]) -> CurveFit:
    given = {d: max(int(s.pulse.max()) for s in segs if s.direction == d) for d in DIRECTIONS}
    pulses = dict(given)
    base = _least_squares(segs, {d: float(n) for d, n in pulses.items()})
    for direction in DIRECTIONS:
        pulses[direction] = _saturation(segs, direction, given[direction], base,
                                        {d: float(n) for d, n in pulses.items()})
    fit = _least_squares(segs, {d: float(n) for d, n in pulses.items()})
    residuals = fit.fun
    rho = _lag1(_split(residuals, segs))
    jac = fit.jac
    dof = max(1, len(residuals) - jac.shape[1])
    s2 = float(residuals @ residuals) / dof
    widen = (1 + max(rho, 0.0)) / (1 - min(max(rho, 0.0), 0.95))
    cov = np.linalg.pinv(jac.T @ jac) * s2 * widen
    lo, hi, c_ltp, c_ltd = (float(v) for v in fit.x)
    return CurveFit(lo, hi, {"ltp": c_ltp, "ltd": c_ltd}, pulses, given, cov, rho)


def _split(values: np.ndarray, segs: list[Segment]) -> list[np.ndarray]:
    return np.split(values, np.cumsum([len(s.g) for s in segs])[:-1])


def _lag1(parts: list[np.ndarray]) -> float:
    num = sum(float(np.sum(p[:-1] * p[1:])) for p in parts)
    den = sum(float(np.sum(p * p)) for p in parts)
    return num / den if den > 0 else 0.0


# --- noise ---------------------------------------------------------------------------------------------

@dataclass
class Noise:
    c2c: float  # σ of a reading about the fitted curve (data units): the cycle-to-cycle scatter
    c2c_sigma: float  # its uncertainty
    rms_residual: float
    point_to_point: float  # std of the step between consecutive readings (the fitted step removed)
    residual_rho: float  # lag-1 correlation of the residuals: 0 for independent scatter


def noise(segs: list[Segment], fit: CurveFit, resolution: float = 0.0) -> Noise:
    """The scatter of the readings about the curve, σ² = SSE/(m − 4) − δ²/12 (Sheppard's correction
    for readings rounded to a step δ, ``resolution``), with the uncertainty of a standard deviation
    from m_eff = m·(1 − ρ)/(1 + ρ) effective readings (ρ: the residuals' lag-1 correlation)."""
    residuals = [s.g - fit.predict(s) for s in segs]
    flat = np.concatenate(residuals)
    m = len(flat)
    sigma = float(np.sqrt(max(flat @ flat / max(1, m - 4) - resolution ** 2 / 12, 0.0)))
    rho = min(max(_lag1(residuals), 0.0), 0.95)
    m_eff = m * (1 - rho) / (1 + rho)
    steps = np.concatenate([np.diff(r) for r in residuals])
    return Noise(sigma, sigma / math.sqrt(2 * max(m_eff - 4, 1)), float(np.sqrt(np.mean(flat ** 2))),
                 float(np.std(steps)), _lag1(residuals))


# --- retention -------------------------------------------------------------------------------------------

@dataclass
class Drift:
    nu: float
    nu_sigma_fit: float  # uncertainty of ν
    nu_spread: float | None  # device-to-device std of ν (None: one device)
    t0: float


def fit_drift(table: pd.DataFrame) -> Drift:
    """G(t) = G0·(t/t0)^(−ν) per device (a line in log-log), t0 = the first reading's time."""
    t0 = float(table["time"].min())
    nus, ses = [], []
    for _, part in table.groupby("device", sort=True):
        x, y = np.log(part["time"].to_numpy() / t0), np.log(part["conductance"].to_numpy())
        if np.ptp(x) == 0:
            raise CimtoolError("retention data: every reading of a device has the same time")
        slope, intercept = np.polyfit(x, y, 1)
        resid = y - (slope * x + intercept)
        se = math.sqrt(float(resid @ resid) / max(1, len(x) - 2) / float(((x - x.mean()) ** 2).sum()))
        nus.append(-slope)
        ses.append(se)
    nu = float(np.mean(nus))
    spread = float(np.std(nus, ddof=1)) if len(nus) > 1 else None
    sigma = float(math.sqrt(sum(s * s for s in ses)) / len(ses))
    if spread is not None:
        sigma = max(sigma, spread / math.sqrt(len(nus)))
    return Drift(nu, sigma, spread, t0)


# --- the whole fit ---------------------------------------------------------------------------------------

@dataclass
class DeviceFit:
    """Every device's curve and noise, and the values for the card (in data units)."""

    fits: dict[str, CurveFit]
    noises: dict[str, Noise]
    segs: list[Segment]
    drift: Drift | None = None
    resolution: float = 0.0  # the readings' step (smallest between distinct values)
    points: pd.DataFrame = field(default_factory=pd.DataFrame)


def fit_device(table: pd.DataFrame, where: str) -> DeviceFit:
    segs = segments(table, where)
    # readings on a grid (at most half as many distinct values as readings): its step is their resolution
    distinct = np.unique(table["conductance"].to_numpy())
    step = float(np.min(np.diff(distinct))) if 1 < len(distinct) <= len(table) // 2 else 0.0
    fits, noises, rows = {}, {}, []
    for device in sorted({s.device for s in segs}):
        mine = [s for s in segs if s.device == device]
        fits[device] = fit_curve(mine)
        noises[device] = noise(mine, fits[device], step)
        for s in mine:
            fitted = fits[device].predict(s)
            rows.append(pd.DataFrame({"device": device, "cycle": s.cycle, "direction": s.direction,
                                      "pulse": s.pulse, "measured": s.g, "fitted": fitted,
                                      "residual": s.g - fitted}))
    return DeviceFit(fits, noises, segs, None, step,
                     pd.concat(rows, ignore_index=True))


# --- synthetic trains (tests, and what a card predicts) ----------------------------------------------

def simulate_train(nl_ltp: float, nl_ltd: float, pulses_ltp: int, pulses_ltd: int, c2c: float,
                   levels: int | None, cycles: int, seed: int) -> pd.DataFrame:
    """Pulse trains of NeuroSim's device model in normalised units [−1, 1]: pulse k of a train puts
    the device at state k along the LTP (N − k along the LTD) curve, ``wage.nonlinear_weight`` with
    A = ``wage.get_param_a(NL)``·N; each reading lands off the curve by N(0, c2c·range), independent
    from pulse to pulse and cycle to cycle; readings rounded to ``levels`` evenly spaced values
    across the range (None: exact)."""
    import torch

    from cimtool.nn import wage

    gen = np.random.default_rng(seed)
    parts = []
    for cycle in range(cycles):
        for direction, nl, n in (("ltp", nl_ltp, pulses_ltp), ("ltd", nl_ltd, pulses_ltd)):
            k = np.arange(1, n + 1)
            p = torch.tensor(k if direction == "ltp" else n - k, dtype=torch.float64)
            a = torch.tensor(float(wage.get_param_a(nl)) * n, dtype=torch.float64)
            w = (2 * p / n - 1) if torch.isinf(a) else wage.nonlinear_weight(p, a, wage.get_param_b(a, n))
            reading = w.numpy() + gen.normal(0.0, 2 * c2c, size=n)
            if levels is not None:
                reading = np.round((reading + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1
            parts.append(pd.DataFrame({"device": "device", "cycle": cycle, "direction": direction,
                                       "pulse": k, "conductance": reading}))
    return pd.concat(parts, ignore_index=True)


# --- the base card: what the data do not determine ---------------------------------------------------

def nearest_preset(g_min: float, g_max: float) -> str:
    """The preset whose conductance range overlaps [g_min, g_max] (S) most, in log conductance (the
    overlap over the union; where none overlaps, the nearest: the summed distance of the ends): the
    base card of a fit that names none, so organic synapses of nS get the organic card's read-out
    and converters, not an RRAM's."""
    from cimtool.devices.card import load_card, preset_names

    def score(name: str) -> tuple[float, float]:
        card = load_card(name)
        lo, hi = math.log(card.g_min), math.log(card.g_max)
        overlap = min(hi, math.log(g_max)) - max(lo, math.log(g_min))
        union = max(hi, math.log(g_max)) - min(lo, math.log(g_min))
        return -max(overlap, 0.0) / union, abs(lo - math.log(g_min)) + abs(hi - math.log(g_max))

    return min(preset_names(), key=score)


def range_d2d(sigma: float, model: str, g_min: float, g_max: float) -> float:
    """A device-to-device sigma in the range model (a fraction of g_max − g_min, the fitted card's):
    a lognormal sigma of ln G spreads a device at conductance G by about sigma·G, taken at the
    middle of the range."""
    if model == "range":
        return sigma
    return sigma * (g_min + g_max) / 2 / (g_max - g_min)


def carried_assumed(base_assumed: tuple[str, ...], fitted: set[str],
                    section_keys: dict[str, list[str]]) -> list[str]:
    """What a fitted card keeps assumed of its base card's ``assumed`` (sections or section.key):
    every entry the data did not determine (``fitted``: section.key), a section partly fitted
    narrowed to its keys that were not (``section_keys``: the keys of each section)."""
    out: list[str] = []
    for entry in base_assumed:
        if "." in entry:
            out += [] if entry in fitted else [entry]
        elif not any(f"{entry}.{key}" in fitted for key in section_keys.get(entry, [])):
            out.append(entry)
        else:
            out += [f"{entry}.{key}" for key in section_keys[entry] if f"{entry}.{key}" not in fitted]
    return out
