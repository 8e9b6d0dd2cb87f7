"""Signed weights → conductance levels of a differential pair (docs/physics.md#differential-mapping).

``W_pos = max(W, 0)``, ``W_neg = max(−W, 0)``, ``n = W_± / scale`` (``scale`` = ``shared_max`` of
the layer by default), ``k = argmin_k |n − G_k/g_max|`` over the device's levels, and zero weights
land on level 0 = ``g_min`` (the leak floor, not an open circuit). The array computes
``W_eff = scale · (G_pos − G_neg) / g_max``.

Matrices here are in crossbar orientation: ``[rows, cols]`` = ``[inputs, outputs]``; a Linear
weight ``[out, in]`` is transposed, a conv weight ``[Cout, Cin, kh, kw]`` is unrolled to
``Cin·kh·kw`` rows in ``F.unfold`` order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cimtool.checks import check_choice, check_range
from cimtool.devices.card import DeviceCard
from cimtool.errors import CimtoolError


def level_grid(g_min: float, g_max: float, n_levels: int, spacing: str) -> np.ndarray:
    """Conductance of each level k = 0..L−1, float64 [L]."""
    k = np.arange(n_levels, dtype=np.float64) / (n_levels - 1)
    if spacing == "log":
        return g_min * (g_max / g_min) ** k  # G_k = g_min·(g_max/g_min)^(k/(L−1)), docs/physics.md#level-grid
    return g_min + (g_max - g_min) * k  # linear spacing


def card_grid(card: DeviceCard, weight_bits: int | None) -> np.ndarray:
    """The card's levels, or 2^weight_bits levels over the card's range and spacing."""
    n_levels = card.levels if weight_bits is None else 2**weight_bits
    return level_grid(card.g_min, card.g_max, n_levels, card.spacing)


# How a normalised weight n is compared with the levels (and how the array's output is scaled back).
NORMALIZATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gmax": lambda grid: grid / grid[-1],  # G_k/g_max (docs/physics.md#differential-mapping)
    # (G_k − g_min)/(g_max − g_min): level 0 means 0, so the g_min floor adds no bias on
    # devices with a small on/off ratio
    "range": lambda grid: (grid - grid[0]) / (grid[-1] - grid[0]),
}


def nearest_level(n: np.ndarray, grid: np.ndarray, normalize: str = "gmax") -> np.ndarray:
    """k = argmin_k |n − G_k/g_max| (ties to the lower level), vectorised via the midpoints."""
    norm = NORMALIZATIONS[normalize](grid)
    midpoints = (norm[:-1] + norm[1:]) / 2
    return np.searchsorted(midpoints, n, side="left").astype(np.int16)


# --- scaling: how a layer's weights are normalised onto [0, 1] before picking levels ---------

def _shared_max(w: np.ndarray, _: float) -> np.ndarray:
    return np.full(w.shape[1], np.abs(w).max())  # one scale for the layer (docs/physics.md#weight-scaling)


def _per_column(w: np.ndarray, _: float) -> np.ndarray:
    return np.abs(w).max(axis=0)


def _percentile(w: np.ndarray, pct: float) -> np.ndarray:
    return np.full(w.shape[1], np.percentile(np.abs(w), pct))  # larger |W| clamp to the top level


SCALINGS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "shared_max": _shared_max,
    "per_column": _per_column,
    "percentile": _percentile,
}


@dataclass(frozen=True)
class LayerMap:
    """One crossbar layer on device levels. level_*: int16 [rows, cols]; scale: float64 [cols]."""

    name: str
    level_pos: np.ndarray
    level_neg: np.ndarray
    scale: np.ndarray
    grid: np.ndarray  # G_k, float64 [L]
    normalize: str = "gmax"

    @property
    def shape(self) -> tuple[int, int]:
        return self.level_pos.shape

    @property
    def g_ref(self) -> float:
        """The conductance difference that stands for a weight of ``scale``."""
        return float(self.grid[-1] - (self.grid[0] if self.normalize == "range" else 0.0))

    @property
    def g_pos(self) -> np.ndarray:
        return self.grid[self.level_pos]

    @property
    def g_neg(self) -> np.ndarray:
        return self.grid[self.level_neg]

    def effective_weight(self) -> np.ndarray:
        """W_eff = scale·(G_pos − G_neg)/g_max: what an ideal array computes, [rows, cols]."""
        return self.scale * (self.g_pos - self.g_neg) / self.g_ref


def map_matrix(name: str, w: np.ndarray, grid: np.ndarray, scaling: str = "shared_max",
               percentile: float = 99.9, normalize: str = "gmax") -> LayerMap:
    """Differential mapping of a [rows, cols] weight matrix onto the level grid."""
    w = np.asarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        raise CimtoolError(f"layer '{name}' has NaN or inf weights; cannot map it onto devices")
    scale = SCALINGS[scaling](w, percentile)
    scale = np.where(scale > 0, scale, 1.0)  # an all-zero layer/column maps to g_min everywhere
    w_pos = np.maximum(w, 0.0)  # differential split (docs/physics.md#differential-mapping)
    w_neg = np.maximum(-w, 0.0)
    return LayerMap(name, nearest_level(w_pos / scale, grid, normalize),
                    nearest_level(w_neg / scale, grid, normalize), scale, grid, normalize)


def crossbar_matrix(weight: np.ndarray) -> np.ndarray:
    """Linear [out, in] or conv [Cout, Cin, kh, kw] weight → crossbar [rows, cols]."""
    return weight.reshape(weight.shape[0], -1).T


# --- placement on physical arrays ----------------------------------------------------------

LAYOUTS = ("interleaved", "blocked")


@dataclass(frozen=True)
class Placement:
    """Where a [rows, cols] layer sits on arrays of array_rows × array_cols physical columns.

    Rows are split into tile rows of ``array_rows``; outputs into tile columns of
    ``array_cols // 2`` (each output needs a pos and a neg column in the same array).
    """

    rows: int
    cols: int
    array_rows: int
    array_cols: int
    layout: str

    @property
    def outputs_per_array(self) -> int:
        return self.array_cols // 2

    @property
    def tile_grid(self) -> tuple[int, int]:
        return (-(-self.rows // self.array_rows), -(-self.cols // self.outputs_per_array))

    def tile_of(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        return (row // self.array_rows) * self.tile_grid[1] + col // self.outputs_per_array

    def physical_columns(self, col: np.ndarray,
                         n_outputs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(col_pos, col_neg) of logical outputs among ``n_outputs`` side by side (default: all)."""
        n = self.cols if n_outputs is None else n_outputs
        if self.layout == "interleaved":
            return 2 * col, 2 * col + 1  # col_pos = 2j, col_neg = 2j+1 (docs/physics.md#placement-on-arrays)
        return col, n + col  # blocked: j and J + j, the RTL's order (docs/physics.md#placement-on-arrays)

    def array_columns(self, col: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tile column, col_pos, col_neg) inside its physical array."""
        per = self.outputs_per_array
        tile_col = col // per
        in_tile = np.minimum(per, self.cols - tile_col * per)  # outputs in that array
        pos, neg = self.physical_columns(col - tile_col * per, in_tile)
        return tile_col, pos, neg


def check_placement(array_rows: int, array_cols: int, layout: str) -> None:
    check_choice("--layout", layout, LAYOUTS)
    check_range("--array-rows", array_rows, 1)
    if array_cols < 2 or array_cols % 2:
        raise CimtoolError(f"--array-cols must be an even number >= 2 (pos/neg pairs), got {array_cols}")
