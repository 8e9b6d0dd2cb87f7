"""The checks every option needs, with one wording: a value among choices, a number in a range.

Each raises :class:`CimtoolError` with one line naming the option, what is allowed and the value
given, which the command line prints as is (exit code 2).
"""

from __future__ import annotations

from collections.abc import Iterable

from cimtool.errors import CimtoolError

# the most levels anything is quantized to: conductance level indices are stored as int16, and
# spike-count levels (the quantized activation of a spiking layer) share the bound
MAX_LEVELS = 2**15


def check_choice(option: str, value: object, choices: Iterable[object]) -> None:
    """``unknown --scheme 'C' (choose from: A, B)`` unless ``value`` is one of ``choices``."""
    allowed = list(choices)
    if value not in allowed:
        raise CimtoolError(f"unknown {option} '{value}' (choose from: {', '.join(map(str, allowed))})")


def check_choices(option: str, values: Iterable[object], choices: Iterable[object]) -> None:
    """``unknown --effects gremlins, trolls (choose from: …)`` for a list option."""
    allowed = list(choices)
    unknown = sorted({str(v) for v in values if v not in allowed})
    if unknown:
        listed = ", ".join(map(str, allowed))
        raise CimtoolError(f"unknown {option} {', '.join(unknown)} (choose from: {listed})")


def check_range(option: str, value: float, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, note: str = "") -> None:
    """``--adc-bits must be in 2..24, got 30``: ``lo ≤ value ≤ hi`` (``lo < value`` with
    ``lo_open``); a missing bound is unbounded; ``note`` follows the bound (e.g. a unit)."""
    if value != value:  # NaN passes every comparison below
        raise CimtoolError(f"{option} must be a number, got nan")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and value > hi
    if not (below or above):
        return
    lo_, hi_ = _number(lo), _number(hi)
    if lo is not None and hi is not None:
        span = f"in ({lo_}, {hi_}]" if lo_open else f"in {lo_}..{hi_}"
    elif lo is not None:
        span = f"> {lo_}" if lo_open else f"at least {lo_}" if isinstance(value, int) else f">= {lo_}"
    else:
        span = f"at most {hi_}"
    raise CimtoolError(f"{option} must be {span}{' ' + note if note else ''}, got {_number(value)}")


def _number(x: float | None) -> str:
    """Integers as they are (2000000, not 2e+06), other numbers shortest (0.5, 1e-05)."""
    return str(x) if x is None or isinstance(x, int) else f"{x:g}"
