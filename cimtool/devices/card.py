"""Device cards: one validated TOML file says everything cimtool assumes about a synaptic device.

A card is read from a shipped preset (``--device rram_seed003``) or a user file
(``--device my_cell.toml``). Unknown sections or keys, wrong types and physically impossible
values are refused with the offending field named, so a typo cannot silently fall back to a
default. ``cimtool devices show NAME`` prints a card; ``cimtool devices list`` lists presets.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cimtool.errors import CimtoolError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).with_name("presets")
SPACINGS = ("log", "linear")
VARIATION_MODELS = ("lognormal", "range")
SCHEMES = ("A", "B")
MAX_LEVELS = 2**15  # level indices are stored as int16
NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class DeviceCard:
    name: str
    description: str
    source: str
    assumed: tuple[str, ...]
    g_min: float  # S (leak floor: zero weights land here)
    g_max: float  # S
    levels: int  # programmable conductance states
    spacing: str  # "log" | "linear"
    read_voltage: float  # V
    read_noise: float  # relative sigma of a cell's conductance, drawn per read
    variation_model: str  # "lognormal" (sigma of ln G) | "range" (sigma·(g_max−g_min), additive)
    d2d_sigma: float  # device-to-device, fixed per device of a chip
    c2c_sigma: float  # cycle-to-cycle, drawn at every programming
    stuck_off: float  # fraction of devices stuck at g_min
    stuck_on: float  # fraction of devices stuck at g_max
    drift_nu: float  # G(t) = G0·(t/t0)^(−ν)
    drift_nu_sigma: float  # device-to-device spread of ν
    drift_t0: float  # s
    wire_resistance: float  # Ω per cell segment of a row or column wire
    adc_bits: int
    adc_scheme: str  # "A": each column digitised then subtracted; "B": I_pos − I_neg into one ADC
    input_bits: int
    nl_ltp: float | None = None  # LTP/LTD nonlinearity and pulse counts (on-chip training)
    nl_ltd: float | None = None
    pulses_ltp: int | None = None
    pulses_ltd: int | None = None
    responsivity: tuple[float, float, float] | None = None  # optical R, G, B (organic synapses)
    max_photons: float | None = None

    @property
    def r_on(self) -> float:
        return 1.0 / self.g_max

    @property
    def r_off(self) -> float:
        return 1.0 / self.g_min

    @property
    def cell_bits(self) -> int:
        """Bits one device holds: floor(log2 levels), at least 1 (NeuroSim's cellBit; V2.1 train.py)."""
        return max(1, int(math.floor(math.log2(self.levels))))

    @property
    def has_update_curve(self) -> bool:
        return self.pulses_ltp is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["assumed"] = list(self.assumed)
        d["responsivity"] = list(self.responsivity) if self.responsivity else None
        return d


# (section, key) -> (card field, type, check). A check returns an error text or None.
def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0 (a sigma or rate cannot be negative)"


def _fraction(v: float) -> str | None:
    return None if 0 <= v < 1 else "must be a fraction in [0, 1)"


def _one_of(choices: tuple[str, ...]):
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def _at_least(n: int):
    return lambda v: None if v >= n else f"must be at least {n}"


def _any(v: Any) -> str | None:
    return None


_FIELDS: dict[tuple[str, str], tuple[str, type, Any]] = {
    ("", "name"): ("name", str, _any),
    ("", "description"): ("description", str, _any),
    ("", "source"): ("source", str, _any),
    ("", "assumed"): ("assumed", list, _any),
    ("conductance", "g_min"): ("g_min", float, _positive),
    ("conductance", "g_max"): ("g_max", float, _positive),
    ("conductance", "r_on"): ("r_on", float, _positive),
    ("conductance", "r_off"): ("r_off", float, _positive),
    ("conductance", "levels"): ("levels", int, lambda v: None if 2 <= v <= MAX_LEVELS
                                 else f"must be in 2..{MAX_LEVELS}"),
    ("conductance", "spacing"): ("spacing", str, _one_of(SPACINGS)),
    ("read", "voltage"): ("read_voltage", float, _positive),
    ("read", "noise"): ("read_noise", float, _non_negative),
    ("variation", "model"): ("variation_model", str, _one_of(VARIATION_MODELS)),
    ("variation", "d2d"): ("d2d_sigma", float, _non_negative),
    ("variation", "c2c"): ("c2c_sigma", float, _non_negative),
    ("variation", "stuck_off"): ("stuck_off", float, _fraction),
    ("variation", "stuck_on"): ("stuck_on", float, _fraction),
    ("drift", "nu"): ("drift_nu", float, _non_negative),
    ("drift", "nu_sigma"): ("drift_nu_sigma", float, _non_negative),
    ("drift", "t0"): ("drift_t0", float, _positive),
    ("array", "wire_resistance"): ("wire_resistance", float, _non_negative),
    ("update", "nl_ltp"): ("nl_ltp", float, _any),
    ("update", "nl_ltd"): ("nl_ltd", float, _any),
    ("update", "pulses_ltp"): ("pulses_ltp", int, _at_least(1)),
    ("update", "pulses_ltd"): ("pulses_ltd", int, _at_least(1)),
    ("adc", "bits"): ("adc_bits", int, _at_least(2)),
    ("adc", "scheme"): ("adc_scheme", str, _one_of(SCHEMES)),
    ("adc", "input_bits"): ("input_bits", int, _at_least(1)),
    ("optical", "responsivity"): ("responsivity", list, _any),
    ("optical", "max_photons"): ("max_photons", float, _positive),
}
_OPTIONAL = {"g_min", "g_max", "r_on", "r_off", "responsivity", "max_photons", "assumed", "source",
             "description", "nl_ltp", "nl_ltd", "pulses_ltp", "pulses_ltd"}
UPDATE_FIELDS = ("nl_ltp", "nl_ltd", "pulses_ltp", "pulses_ltd")
_SECTIONS = {section for section, _ in _FIELDS if section}


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CimtoolError(f"{where} must be a {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise CimtoolError(f"{where} must be finite, got {value!r}")
    return value


def parse_card(data: dict[str, Any], origin: str) -> DeviceCard:
    """Validate a parsed TOML document and build the card (errors name the file and field)."""
    values: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in _SECTIONS:
                raise CimtoolError(f"{origin}: unknown section [{key}] "
                                   f"(known: {', '.join(sorted(_SECTIONS))})")
            items = [((key, k), v) for k, v in value.items()]
        else:
            items = [(("", key), value)]
        for (section, name), v in items:
            where = f"{origin}: {section + '.' if section else ''}{name}"
            if (section, name) not in _FIELDS:
                raise CimtoolError(f"{where} is not a device-card field")
            field, kind, check = _FIELDS[(section, name)]
            v = _typed(v, kind, where)
            problem = check(v)
            if problem:
                raise CimtoolError(f"{where} {problem}, got {v!r}")
            values[field] = v
    return _build(values, origin)


def _build(values: dict[str, Any], origin: str) -> DeviceCard:
    has_g = "g_min" in values or "g_max" in values
    has_r = "r_on" in values or "r_off" in values
    if has_g and has_r:
        raise CimtoolError(f"{origin}: give the conductance range as g_min/g_max or as r_on/r_off, not both")
    if has_r:
        if "r_on" not in values or "r_off" not in values:
            raise CimtoolError(f"{origin}: conductance needs both r_on and r_off")
        if values["r_on"] >= values["r_off"]:
            raise CimtoolError(f"{origin}: conductance.r_on ({values['r_on']:g} ohm) must be below "
                               f"r_off ({values['r_off']:g} ohm)")
        values["g_max"], values["g_min"] = 1.0 / values.pop("r_on"), 1.0 / values.pop("r_off")
        if not (math.isfinite(values["g_max"]) and values["g_min"] > 0):
            raise CimtoolError(f"{origin}: conductance r_on/r_off give a conductance outside float range")
    elif not ("g_min" in values and "g_max" in values):
        raise CimtoolError(f"{origin}: conductance needs g_min and g_max (S) or r_on and r_off (ohm)")
    elif values["g_min"] >= values["g_max"]:
        raise CimtoolError(f"{origin}: conductance.g_min ({values['g_min']:g} S) must be below "
                           f"g_max ({values['g_max']:g} S)")
    if "responsivity" in values:
        resp = values["responsivity"]
        if len(resp) != 3 or not all(isinstance(r, (int, float)) and r > 0 for r in resp):
            raise CimtoolError(f"{origin}: optical.responsivity must be three positive numbers (R, G, B)")
        values["responsivity"] = tuple(float(r) for r in resp)
    if not all(isinstance(a, str) for a in values.get("assumed", [])):
        raise CimtoolError(f"{origin}: assumed must be a list of field names")
    values["assumed"] = tuple(values.get("assumed", ()))
    if not NAME_RE.fullmatch(values.get("name", "")):
        raise CimtoolError(f"{origin}: name must be letters, digits, '_', '-' or '.', "
                           f"got {values.get('name')!r}")
    if values.get("stuck_off", 0) + values.get("stuck_on", 0) >= 1:
        raise CimtoolError(f"{origin}: variation.stuck_off + stuck_on must be below 1")
    given = [f for f in UPDATE_FIELDS if f in values]
    if given and len(given) < len(UPDATE_FIELDS):
        raise CimtoolError(f"{origin}: [update] needs all of nl_ltp, nl_ltd, pulses_ltp, pulses_ltd")
    values.setdefault("description", "")
    values.setdefault("source", origin)
    required = {f for f, _, _ in _FIELDS.values()} - _OPTIONAL
    missing = sorted(required - set(values))
    if missing:
        names = {f: f"{s + '.' if s else ''}{k}" for (s, k), (f, _, _) in _FIELDS.items()}
        raise CimtoolError(f"{origin}: missing field(s) {', '.join(names[m] for m in missing)}")
    return DeviceCard(**values)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_card(name_or_path: str) -> DeviceCard:
    """A preset name (see ``preset_names``) or a path to a TOML card."""
    path = Path(name_or_path)
    if name_or_path in preset_names():
        path = PRESET_DIR / f"{name_or_path}.toml"
    elif path.suffix != ".toml" and not path.exists():
        raise CimtoolError(f"unknown --device '{name_or_path}' (presets: {', '.join(preset_names())}; "
                           "or give a path to a .toml card)")
    if path.is_dir():
        raise CimtoolError(f"{path}: is a directory, not a .toml device card")
    if not path.is_file():
        raise CimtoolError(f"{path}: no such device card file")
    try:
        # utf-8-sig: a byte-order mark, as some Windows editors write, is not part of the TOML
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CimtoolError(f"{path}: not a valid TOML device card ({exc})") from None
    return parse_card(data, str(path))


def card_toml(card: DeviceCard, header: str = "") -> str:
    """The card as a TOML file that ``load_card`` reads back to the same card (``header``: comment
    lines on top)."""
    def value(v: Any) -> str:
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    values = asdict(card)
    lines = [f"# {line}" for line in header.splitlines()]
    sections: dict[str, list[str]] = {}
    for (section, key), (name, _, _) in _FIELDS.items():
        if name in ("r_on", "r_off") or values.get(name) is None:
            continue
        target = lines if not section else sections.setdefault(section, [])
        target.append(f"{key} = {value(values[name])}")
    for section, entries in sections.items():
        lines += ["", f"[{section}]", *entries]
    return "\n".join(lines) + "\n"
