"""Which non-idealities an array simulation has on: the configuration of :mod:`cimtool.nn.array`,
light to import (the command line shows and checks it without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass

from cimtool.checks import check_choice, check_choices, check_range
from cimtool.errors import CimtoolError

EFFECTS = ("d2d", "c2c", "stuck", "drift", "ir", "read")
ENCODINGS = ("analog", "bitserial")  # DAC (input) encodings
SCHEMES = ("A", "B")


@dataclass(frozen=True)
class ArrayConfig:
    """Which non-idealities are on. ``None`` bits mean an ideal converter."""

    effects: tuple[str, ...] = ()
    adc_bits: int | None = None
    scheme: str = "B"
    input_bits: int | None = None
    encoding: str = "analog"
    drift_time: float = 3600.0  # s after programming

    def validate(self) -> None:
        check_choices("--effects", self.effects, EFFECTS)
        check_choice("--scheme", self.scheme, SCHEMES)
        check_choice("--dac-encoding", self.encoding, ENCODINGS)
        if self.adc_bits is not None:
            check_range("--adc-bits", self.adc_bits, 2, 24)
        if self.input_bits is not None:
            check_range("--input-bits", self.input_bits, 1, 16)
        if self.encoding == "bitserial" and self.input_bits is None:
            raise CimtoolError("--dac-encoding bitserial needs --input-bits")
        check_range("--drift-time", self.drift_time, 0, None, lo_open=True, note="seconds")


IDEAL = ArrayConfig()


def parse_effects(text: str) -> tuple[str, ...]:
    """--effects: comma-separated names, or all / none."""
    named = {"all": EFFECTS, "none": ()}.get(str(text).strip())
    return named if named is not None else tuple(e.strip() for e in str(text).split(",") if e.strip())
