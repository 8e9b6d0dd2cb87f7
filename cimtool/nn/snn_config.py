"""How a converted network spikes: the configuration of :mod:`cimtool.nn.snn`, light to import.

The neuron, reset, level and encoding vocabulary lives here, so that the command line can show
and check it without loading torch; ``docs/physics.md#st-bif-neurons`` gives the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimtool.checks import MAX_LEVELS, check_choice, check_range
from cimtool.errors import CimtoolError
from cimtool.options import option

# neuron → the resets it supports (stbif: signed bounded spike tracer, SpikeZIP-TF, by subtraction)
NEURON_RESETS = {"stbif": ("soft",), "if": ("soft", "hard")}
RESETS = ("soft", "hard")
BOUNDS = ("asymmetric", "symmetric")
ENCODINGS = ("analog", "rate")  # spike (input) encodings
STOPS = ("silent", "fixed")
MAX_TIMESTEPS = 100_000
SNN = "Spiking network"  # the help panel


def level_bounds(levels: int, bounds: str) -> tuple[int, int]:
    """(n_min, p_max) of the spike tracer for ``levels`` levels."""
    if bounds == "symmetric":
        return -(levels // 2), levels // 2 - 1
    return 0, levels - 1


@dataclass(frozen=True)
class SnnConfig:
    """How the converted network spikes."""

    neuron: str = option("stbif", panel=SNN, help="stbif (signed bounded spike tracer, SpikeZIP-TF; "
                         "reset by subtraction) or if (integrate-and-fire, positive spikes).")
    reset: str = option("soft", panel=SNN,
                        help="soft (subtract the threshold) or hard (to zero; --neuron if).")
    levels: int = option(16, panel=SNN, help="Levels L of the equivalent quantized activation.")
    bounds: str = option("asymmetric", panel=SNN, help="Spike-count bounds: asymmetric (0..L-1, suits "
                         "ReLU) or symmetric (-(L//2)..L//2-1).")
    encoding: str = option("analog", panel=SNN, flag="--spike-encoding", old_flag="--encoding",
                           help="Input spikes: analog (the value as a current at the first step) or rate "
                           "(a spike per step with probability |x|/range).")
    timesteps: int = option(32, panel=SNN, help="Timesteps T the thresholds are chosen for.")
    stop: str = option("silent", panel=SNN, help="silent (stop each layer once silent, at most "
                       "--timesteps; same result, less work) or fixed (always --timesteps steps).")

    def validate(self) -> None:
        check_choice("--neuron", self.neuron, NEURON_RESETS)
        check_choice("--reset", self.reset, RESETS)
        if self.reset not in NEURON_RESETS[self.neuron]:
            raise CimtoolError(f"--neuron {self.neuron} resets by subtraction only (--reset soft); "
                               "hard reset is for --neuron if")
        check_range("--levels", self.levels, 2, MAX_LEVELS)
        check_choice("--bounds", self.bounds, BOUNDS)
        if self.neuron == "if" and self.bounds != "asymmetric":
            raise CimtoolError("--neuron if has no negative spikes: use --bounds asymmetric")
        check_choice("--spike-encoding", self.encoding, ENCODINGS)
        check_range("--timesteps", self.timesteps, 1, MAX_TIMESTEPS)
        check_choice("--stop", self.stop, STOPS)

    @property
    def n_min(self) -> int:
        return level_bounds(self.levels, self.bounds)[0]

    @property
    def p_max(self) -> int:
        return level_bounds(self.levels, self.bounds)[1]

    @property
    def top(self) -> int:
        """Largest spike count magnitude a neuron can reach: the top level sits at top·θ."""
        return max(self.p_max, -self.n_min)
