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
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and value > hi
    if not (below or above):
        return
    if lo is not None and hi is not None:
        span = f"in ({lo:g}, {hi:g}]" if lo_open else f"in {lo:g}..{hi:g}"
    elif lo is not None:
        span = f"> {lo:g}" if lo_open else f"at least {lo:g}" if isinstance(value, int) else f">= {lo:g}"
    else:
        span = f"at most {hi:g}"
    raise CimtoolError(f"{option} must be {span}{' ' + note if note else ''}, got {value:g}")
