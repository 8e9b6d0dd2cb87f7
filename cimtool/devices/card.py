"""Device cards: one validated TOML file says everything cimtool assumes about a synaptic device.

A card is read from a shipped preset (``--device rram_seed003``) or a user file
(``--device my_cell.toml``). Unknown sections or keys, wrong types, physically impossible values
and implausible ones (a percentage where a fraction belongs) are refused with the offending key
named, so a typo cannot silently fall back to a default or load as a broken device. Only the
conductance range, levels, spacing and read voltage are essential; every other key has a
documented default (``_FIELDS``, docs/physics.md#device-cards), and a card that leaves one out lists
it in ``assumed``. ``cimtool devices new NAME`` writes a commented template (``template_toml``),
``cimtool devices show NAME`` prints a card, ``cimtool devices list`` lists presets.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cimtool.checks import MAX_LEVELS
from cimtool.errors import CimtoolError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).with_name("presets")
SPACINGS = ("log", "linear")
VARIATION_MODELS = ("lognormal", "range")
SCHEMES = ("A", "B")
NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
# the largest plausible conductance: 100 ohm, far below the ~kohm on-resistance of memristive
# synapses (NeuroSim's default cell: 6 kohm); above it a resistance or a unit typo is likely
MAX_CONDUCTANCE = 1e-2  # S


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
    write_voltage: float | None = None  # V, of a programming pulse (None: NeuroSim V2.1's 4 V)
    write_pulse_width: float | None = None  # s (None: NeuroSim V2.1's 50 ns)

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


# A check returns None or the problem, worded to follow the key ("read.noise must be >= 0, got -1").
def _positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, got {v!r}"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else f"must be >= 0 (a sigma or rate cannot be negative), got {v!r}"


def _fraction(limit: float, why: str) -> Callable[[float], str | None]:
    """A fraction (0.02 = 2 %) of at most ``limit``: above it, the likely meaning is a percentage."""
    def check(v: float) -> str | None:
        if v < 0 or v <= limit:
            return _non_negative(v)
        guess = f": did you mean {v / 100:g}?" if v / 100 <= limit else ""
        return f"= {v:g} is {100 * v:g} %{guess} (a fraction, 0.02 = 2 %; {why})"
    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, got {v!r}"


def _at_least(n: int) -> Callable[[int], str | None]:
    return lambda v: None if v >= n else f"must be at least {n}, got {v!r}"


def _pulse_width(v: float) -> str | None:
    """A programming pulse in seconds: above 1 s, the likely meaning is µs or ns."""
    return _positive(v) or (None if v <= 1 else f"= {v:g} s is over a second: give it in s (300 µs = 3e-4)")


def _levels(v: int) -> str | None:
    return None if 2 <= v <= MAX_LEVELS else f"must be in 2..{MAX_LEVELS}, got {v!r}"


def _any(v: Any) -> str | None:
    return None


ESSENTIAL = object()  # no default: every card gives it
ABSENT = object()  # no default: a card without it has none (no update curve, not optical)


class Field(NamedTuple):
    attr: str  # DeviceCard field
    kind: type
    check: Callable[[Any], str | None]
    default: Any  # what a card that leaves the key out gets (and lists in `assumed`), or a marker
    unit: str
    note: str  # the template's comment
    example: Any = None  # the template's value where there is no default

    @property
    def has_default(self) -> bool:
        return self.default is not ESSENTIAL and self.default is not ABSENT


_READ = "above 0.5, the Gaussian read makes G negative on > 2 % of reads"
_SIGMA = "a sigma above 1 spreads G by more than a factor e (lognormal) or the whole range"
_STUCK = "above 0.5, more than half the devices are stuck"
# (section, key) -> Field, in the order of a card file. The defaults switch an effect off or take
# DNN+NeuroSim's; their sources are in docs/physics.md#device-cards.
_FIELDS: dict[tuple[str, str], Field] = {
    ("", "name"): Field("name", str, _any, ABSENT, "", "letters, digits, _ - . (default: the file's name)"),
    ("", "description"): Field("description", str, _any, ABSENT, "", "one line for cimtool devices list"),
    ("", "source"): Field("source", str, _any, ABSENT, "", "where the numbers come from"),
    ("", "assumed"): Field("assumed", list, _any, ABSENT, "",
                           "not measured: sections or section.key (left-out keys are added)"),
    ("conductance", "g_min"): Field("g_min", float, _positive, ABSENT, "S",
                                    "lowest programmable conductance (zero weights land here)", 3.0769e-9),
    ("conductance", "g_max"): Field("g_max", float, _positive, ABSENT, "S",
                                    "highest programmable conductance", 3.8462e-8),
    ("conductance", "r_on"): Field("r_on", float, _positive, ABSENT, "ohm",
                                   "instead of g_max (= 1/r_on); g_min/g_max or r_on/r_off, not both", 2.6e7),
    ("conductance", "r_off"): Field("r_off", float, _positive, ABSENT, "ohm",
                                    "instead of g_min (= 1/r_off)", 3.25e8),
    ("conductance", "levels"): Field("levels", int, _levels, ESSENTIAL, "states",
                                     f"programmable conductance levels, 2..{MAX_LEVELS}", 97),
    ("conductance", "spacing"): Field("spacing", str, _one_of(SPACINGS), ESSENTIAL, "",
                                      '"log" (a constant ratio apart) or "linear" (a constant step)',
                                      "linear"),
    ("read", "voltage"): Field("read_voltage", float, _positive, ESSENTIAL, "V",
                               "the read voltage the conductances are measured at", 0.5),
    ("read", "noise"): Field("read_noise", float, _fraction(0.5, _READ), 0.0, "fraction",
                             "relative sigma of G at every read, at most 0.5"),
    ("variation", "model"): Field("variation_model", str, _one_of(VARIATION_MODELS), "lognormal", "",
                                  '"lognormal" (sigma of ln G) or "range" (of g_max - g_min, NeuroSim)'),
    ("variation", "d2d"): Field("d2d_sigma", float, _fraction(1.0, _SIGMA), 0.0, "fraction",
                                "device-to-device sigma, fixed per chip, at most 1"),
    ("variation", "c2c"): Field("c2c_sigma", float, _fraction(1.0, _SIGMA), 0.0, "fraction",
                                "cycle-to-cycle sigma, per programming, at most 1"),
    ("variation", "stuck_off"): Field("stuck_off", float, _fraction(0.5, _STUCK), 0.0, "fraction",
                                      "of devices stuck at g_min, at most 0.5"),
    ("variation", "stuck_on"): Field("stuck_on", float, _fraction(0.5, _STUCK), 0.0, "fraction",
                                     "of devices stuck at g_max, at most 0.5"),
    ("drift", "nu"): Field("drift_nu", float, _non_negative, 0.0, "dimensionless",
                           "exponent of G(t) = G0 (t/t0)^-nu"),
    ("drift", "nu_sigma"): Field("drift_nu_sigma", float, _non_negative, 0.0, "dimensionless",
                                 "device-to-device sigma of nu"),
    ("drift", "t0"): Field("drift_t0", float, _positive, 1.0, "s", "reference time of the drift law"),
    ("array", "wire_resistance"): Field("wire_resistance", float, _non_negative, 0.0, "ohm",
                                        "per wire segment between neighbouring cells (0: no IR drop)"),
    ("update", "nl_ltp"): Field("nl_ltp", float, _any, ABSENT, "dimensionless",
                                "LTP nonlinearity (NeuroSim's NL)", 2.4),
    ("update", "nl_ltd"): Field("nl_ltd", float, _any, ABSENT, "dimensionless", "LTD nonlinearity", -4.88),
    ("update", "pulses_ltp"): Field("pulses_ltp", int, _at_least(1), ABSENT, "pulses",
                                    "from g_min to g_max", 97),
    ("update", "pulses_ltd"): Field("pulses_ltd", int, _at_least(1), ABSENT, "pulses",
                                    "from g_max to g_min", 100),
    # optional in [update]: NeuroSim V2.1's Param.cpp writeVoltage 4 V, writePulseWidth 50 ns stand in
    ("update", "write_voltage"): Field("write_voltage", float, _positive, ABSENT, "V",
                                       "of one programming pulse (default: NeuroSim V2.1's 4 V)", 3.2),
    ("update", "write_pulse_width"): Field("write_pulse_width", float, _pulse_width, ABSENT, "s",
                                           "of one programming pulse (default: NeuroSim V2.1's 50 ns)",
                                           300e-6),
    ("adc", "bits"): Field("adc_bits", int, _at_least(2), 5, "bits",
                           "ADC resolution (DNN+NeuroSim's default)"),
    ("adc", "scheme"): Field("adc_scheme", str, _one_of(SCHEMES), "A", "",
                             '"A" (each column digitised, then subtracted) or "B" (I_pos - I_neg, one ADC)'),
    ("adc", "input_bits"): Field("input_bits", int, _at_least(1), 8, "bits",
                                 "input DAC resolution (DNN+NeuroSim's default)"),
    ("optical", "responsivity"): Field("responsivity", list, _any, ABSENT, "relative",
                                       "R, G, B photoresponse (three numbers > 0)", [0.55, 1.0, 0.4]),
    ("optical", "max_photons"): Field("max_photons", float, _positive, ABSENT, "photons",
                                      "per pixel at full white", 10000.0),
}
UPDATE_FIELDS = ("nl_ltp", "nl_ltd", "pulses_ltp", "pulses_ltd")
_SECTIONS = {section for section, _ in _FIELDS if section}
_ESSENTIAL_KEYS = "conductance range (g_min/g_max or r_on/r_off), levels, spacing and read.voltage"
_TEMPLATE_HINT = "`cimtool devices new NAME` writes a template with every key"


def _key(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CimtoolError(f"{where} must be a {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise CimtoolError(f"{where} must be finite, got {value!r}")
    return value


def parse_card(data: dict[str, Any], origin: str) -> DeviceCard:
    """Validate a parsed TOML document and build the card (errors name the file and key)."""
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
            where = f"{origin}: {_key(section, name)}"
            if (section, name) not in _FIELDS:
                raise CimtoolError(f"{where} is not a device-card field")
            field = _FIELDS[(section, name)]
            v = _typed(v, field.kind, where)
            problem = field.check(v)
            if problem:
                raise CimtoolError(f"{where} {problem}")
            values[field.attr] = v
    return _build(values, origin)


def _build(values: dict[str, Any], origin: str) -> DeviceCard:
    has_g = "g_min" in values or "g_max" in values
    has_r = "r_on" in values or "r_off" in values
    missing = [_key(s, k) for (s, k), f in _FIELDS.items() if f.default is ESSENTIAL and f.attr not in values]
    if not (has_g or has_r):
        missing.insert(0, "conductance.g_min/g_max (or r_on/r_off)")
    if missing:
        raise CimtoolError(f"{origin}: missing field(s) {', '.join(missing)} (every card gives the "
                           f"{_ESSENTIAL_KEYS}; the rest has defaults; {_TEMPLATE_HINT})")
    if has_g and has_r:
        raise CimtoolError(f"{origin}: give the conductance range as g_min/g_max or as r_on/r_off, not both")
    if has_r:
        if "r_on" not in values or "r_off" not in values:
            raise CimtoolError(f"{origin}: conductance needs both r_on and r_off")
        if values["r_on"] >= values["r_off"]:
            raise CimtoolError(f"{origin}: conductance.r_on ({values['r_on']:g} ohm) must be below "
                               f"r_off ({values['r_off']:g} ohm)")
        r_on = values["r_on"]
        values["g_max"], values["g_min"] = 1.0 / values.pop("r_on"), 1.0 / values.pop("r_off")
        if not (math.isfinite(values["g_max"]) and values["g_min"] > 0):
            raise CimtoolError(f"{origin}: conductance r_on/r_off give a conductance outside float range")
        if values["g_max"] > MAX_CONDUCTANCE:
            raise CimtoolError(f"{origin}: conductance.r_on = {r_on:g} ohm is below {1 / MAX_CONDUCTANCE:g} "
                               "ohm, no memristive cell: is it a conductance in S? (give those as "
                               "g_min/g_max)")
    elif not ("g_min" in values and "g_max" in values):
        raise CimtoolError(f"{origin}: conductance needs g_min and g_max (S) or r_on and r_off (ohm)")
    elif values["g_min"] >= values["g_max"]:
        raise CimtoolError(f"{origin}: conductance.g_min ({values['g_min']:g} S) must be below "
                           f"g_max ({values['g_max']:g} S)")
    elif values["g_max"] > MAX_CONDUCTANCE:
        raise CimtoolError(f"{origin}: conductance.g_max = {values['g_max']:g} S is a cell below "
                           f"{1 / MAX_CONDUCTANCE:g} ohm: is it a resistance, or in uS/nS? (conductances are "
                           "in S, 4e-9 = 4 nS; give resistances as r_on/r_off in ohm)")
    if "responsivity" in values:
        resp = values["responsivity"]
        if len(resp) != 3 or not all(isinstance(r, (int, float)) and r > 0 for r in resp):
            raise CimtoolError(f"{origin}: optical.responsivity must be three positive numbers (R, G, B)")
        values["responsivity"] = tuple(float(r) for r in resp)
    if not all(isinstance(a, str) for a in values.get("assumed", [])):
        raise CimtoolError(f"{origin}: assumed must be a list of field names")
    stem = Path(origin).stem
    values.setdefault("name", stem if NAME_RE.fullmatch(stem) else "")
    if not NAME_RE.fullmatch(values["name"]):
        raise CimtoolError(f"{origin}: name must be letters, digits, '_', '-' or '.', "
                           f"got {values['name']!r}")
    if values.get("stuck_off", 0) + values.get("stuck_on", 0) >= 1:
        raise CimtoolError(f"{origin}: variation.stuck_off + stuck_on must be below 1")
    given = [f for f in UPDATE_FIELDS if f in values]
    if given and len(given) < len(UPDATE_FIELDS):
        raise CimtoolError(f"{origin}: [update] needs all of nl_ltp, nl_ltd, pulses_ltp, pulses_ltd")
    values.setdefault("description", "")
    values.setdefault("source", origin)
    assumed = tuple(values.get("assumed", ()))
    for (section, key), f in _FIELDS.items():
        if f.has_default and f.attr not in values:
            values[f.attr] = f.default
            if section not in assumed and _key(section, key) not in assumed:
                assumed += (_key(section, key),)  # a default is an assumption: shown, never silent
    values["assumed"] = assumed
    return DeviceCard(**values)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_card(name_or_path: str) -> DeviceCard:
    """A preset name (see ``preset_names``), a path to a TOML card, or a device artifact folder (what
    ``cimtool devices fit`` writes: its ``card.toml``)."""
    from cimtool.artifacts import MANIFEST

    path = Path(name_or_path)
    if name_or_path in preset_names():
        path = PRESET_DIR / f"{name_or_path}.toml"
    elif path.suffix != ".toml" and not path.exists():
        raise CimtoolError(f"unknown --device '{name_or_path}' (presets: {', '.join(preset_names())}; "
                           "or give a path to a .toml card or a device artifact folder)")
    if path.is_dir() and (path / MANIFEST).is_file() and (path / "card.toml").is_file():
        path = path / "card.toml"
    elif path.is_dir():
        raise CimtoolError(f"{path}: is a directory, neither a .toml device card nor a device artifact "
                           "(cimtool devices fit writes one: a card.toml and a manifest)")
    if not path.is_file():
        raise CimtoolError(f"{path}: no such device card file")
    try:
        # utf-8-sig: a byte-order mark, as some Windows editors write, is not part of the TOML
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CimtoolError(f"{path}: not a valid TOML device card ({exc})") from None
    return loads_card(text, str(path))


def loads_card(text: str, origin: str) -> DeviceCard:
    """A card from the text of a TOML file (``origin``: where it comes from, for the errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CimtoolError(f"{origin}: not a valid TOML device card ({exc})") from None
    return parse_card(data, origin)


def _toml(v: Any) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def card_toml(card: DeviceCard, header: str = "") -> str:
    """The card as a TOML file that ``load_card`` reads back to the same card (``header``: comment
    lines on top)."""
    values = asdict(card)
    lines = [f"# {line}" for line in header.splitlines()]
    sections: dict[str, list[str]] = {}
    for (section, key), f in _FIELDS.items():
        if f.attr in ("r_on", "r_off") or values.get(f.attr) is None:
            continue
        target = lines if not section else sections.setdefault(section, [])
        target.append(f"{key} = {_toml(values[f.attr])}")
    for section, entries in sections.items():
        lines += ["", f"[{section}]", *entries]
    return "\n".join(lines) + "\n"


def card_entries(card: DeviceCard) -> list[tuple[str, str, Any, str]]:
    """(section, key, value, unit) of every key the card has, in card-file order, with the range both
    as conductances and as resistances (``unit`` is "" for text and choices)."""
    out = []
    for (section, key), f in _FIELDS.items():
        value = getattr(card, f.attr)
        if value is None:
            continue
        out.append((section, key, list(value) if isinstance(value, tuple) else value, f.unit))
    return out


def is_assumed(card: DeviceCard, section: str, key: str) -> bool:
    return bool(section) and (section in card.assumed or _key(section, key) in card.assumed)


_ESSENTIAL_STAND_INS = ("conductance", "read.voltage")  # the template's values to replace


def template_toml(name: str) -> str:
    """A commented card named ``name`` that ``load_card`` reads: the essential keys hold NeuroSim's
    Ag:a-Si values as stand-ins (listed as assumed), every other key is commented out at its
    default (so a card that keeps it out lists it as assumed) or, where there is none, at an example."""
    if not NAME_RE.fullmatch(name):
        raise CimtoolError(f"device card name must be letters, digits, '_', '-' or '.', got {name!r}")
    top = {"name": name, "description": "", "source": "", "assumed": list(_ESSENTIAL_STAND_INS)}
    lines = [
        f"# Device card {name}: a template written by `cimtool devices new` (docs/physics.md#device-cards).",
        "# Essential: the conductance range, levels, spacing and read voltage. Their values below are",
        "# stand-ins (NeuroSim's Ag:a-Si device): replace them with your device's, then delete",
        '# "conductance" and "read.voltage" from `assumed`.',
        "# Every other key is commented out at its default: uncomment it to give your value. A key a card",
        "# leaves out takes its default and is listed in the card's `assumed` (`cimtool devices show`).",
        "# Fractions are fractions: 0.02 means 2 %. [update] and [optical] are optional (all or none).",
        "",
    ]
    section = ""
    for (s, key), f in _FIELDS.items():
        if s != section:
            section = s
            optional = f.default is ABSENT and s not in ("conductance",)
            lines += ["", f"{'# ' if optional else ''}[{s}]"]
        if not s:
            line = f"{key} = {_toml(top[key])}"
        elif f.default is ESSENTIAL or (s == "conductance" and key in ("g_min", "g_max")):
            line = f"{key} = {_toml(f.example)}"
        else:
            line = f"# {key} = {_toml(f.example if f.default is ABSENT else f.default)}"
        lines.append(f"{line:<23} # {f.unit + ': ' if f.unit else ''}{f.note}")
    return "\n".join(lines) + "\n"
