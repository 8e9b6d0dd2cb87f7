"""Signed weights → conductance levels of a differential pair (docs/physics.md#differential-mapping).

``W_pos = max(W, 0)``, ``W_neg = max(−W, 0)``, ``n = W_± / scale`` (``scale`` = ``shared_max`` of
the layer by default), ``k = argmin_k |n − G_k/g_max|`` over the device's levels, and zero weights
land on level 0 = ``g_min`` (the leak floor, not an open circuit). The array computes
``W_eff = scale · (G_pos − G_neg) / g_max``.

**Bit slicing** (docs/physics.md#bit-slicing). A weight of more bits than one device holds
(``w > cell_bits``) is stored over ``S = ⌈w/cell_bits⌉`` cells per polarity, as NeuroSim's
``cellBit`` slices ``WBITS``: cell ``s`` (least significant first) holds a digit of weight
``c_s = 2^(b·s)·(2^b − 1)/(2^w − 1)`` (``b`` = cell bits) on the ``2^b`` levels of the card's range
and spacing (the top cell's fewer digits spread over all of them), and its column is digitised on
its own and shift-added after the ADC. A magnitude ``n`` is stored as the code whose value
``Σ_s c_s·norm(G_state)`` is nearest (all ``2^w`` codes enumerated: integer slicing on a linear
grid). One cell (``S = 1``) is the plain mapping above.

Matrices here are in crossbar orientation: ``[rows, cols]`` = ``[inputs, outputs]``; a Linear
weight ``[out, in]`` is transposed, a conv weight ``[Cout, Cin, kh, kw]`` is unrolled to
``Cin·kh·kw`` rows in ``F.unfold`` order. Level matrices have one column per cell:
``[rows, cols·S]``, the ``S`` cells of output ``j`` side by side (cell column ``j·S + s``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
    """The levels of one cell: the card's, or 2^weight_bits over its range and spacing (at most
    the card's cell bits: more are sliced, :func:`level_code`)."""
    if weight_bits is None:
        return level_grid(card.g_min, card.g_max, card.levels, card.spacing)
    return level_grid(card.g_min, card.g_max, 2 ** min(weight_bits, card.cell_bits), card.spacing)


def slice_count(card: DeviceCard, weight_bits: int | None) -> int:
    """Cells per weight and polarity: ⌈w / cell bits⌉ (NeuroSim: ⌈WBITS/cellBit⌉), 1 for the card's levels."""
    return 1 if weight_bits is None else -(-weight_bits // card.cell_bits)


# How a normalised weight n is compared with the levels (and how the array's output is scaled back).
NORMALIZATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gmax": lambda grid: grid / grid[-1],  # G_k/g_max (docs/physics.md#differential-mapping)
    # (G_k − g_min)/(g_max − g_min): level 0 means 0, so the g_min floor adds no bias on
    # devices with a small on/off ratio
    "range": lambda grid: (grid - grid[0]) / (grid[-1] - grid[0]),
}


def nearest_level(n: np.ndarray, grid: np.ndarray, normalize: str = "gmax") -> np.ndarray:
    """k = argmin_k |n − G_k/g_max| (ties to the lower level), vectorised via the midpoints."""
    return LevelCode.one_cell(grid, normalize).nearest(n)[..., 0]


@dataclass(frozen=True)
class LevelCode:
    """How a normalised magnitude is stored: every code (a digit per cell), its value, ascending.

    ``digits`` int16 [codes, S] (least significant cell first), ``values`` float64 [codes]
    (``Σ_s weights_s · norm(G_{digit_s})``), ``weights`` the digit weights ``c_s`` [S]."""

    grid: np.ndarray  # G_k of one cell, float64 [L]
    digits: np.ndarray
    values: np.ndarray
    weights: np.ndarray
    normalize: str

    @property
    def slices(self) -> int:
        return len(self.weights)

    @classmethod
    def one_cell(cls, grid: np.ndarray, normalize: str = "gmax") -> LevelCode:
        """Every level of one cell a code of its own (no slicing)."""
        return cls(grid, np.arange(len(grid), dtype=np.int16)[:, None], NORMALIZATIONS[normalize](grid),
                   np.ones(1), normalize)

    def nearest(self, n: np.ndarray) -> np.ndarray:
        """Digits [..., S] of the code nearest to each ``n`` (ties to the lower value)."""
        midpoints = (self.values[:-1] + self.values[1:]) / 2
        return self.digits[np.searchsorted(midpoints, n, side="left")]


def level_code(card: DeviceCard, weight_bits: int | None, normalize: str = "gmax") -> LevelCode:
    """The codes of ``weight_bits`` on the card (module docstring): one cell of 2^w levels up to the
    card's cell bits, bit-sliced cells of 2^cell_bits levels above."""
    grid = card_grid(card, weight_bits)
    slices = slice_count(card, weight_bits)
    if slices == 1:
        return LevelCode.one_cell(grid, normalize)
    norm, b = NORMALIZATIONS[normalize](grid), card.cell_bits
    top = weight_bits - b * (slices - 1)  # bits of the most significant cell
    # digit d of cell s weighs 2^(b·s)/(2^w − 1); a cell's state k stands for its digit k/(2^b − 1)
    # (docs/physics.md#bit-slicing): c_s = 2^(b·s)·(2^b − 1)/(2^w − 1), and the top cell's 2^top
    # digits are spread over the whole range (state ≈ d·(2^b − 1)/(2^top − 1)), c_top = 2^(b·(S−1))·
    # (2^top − 1)/(2^w − 1), so that every code reaches full scale on any spacing
    span = np.full(slices, 2**b - 1)
    span[-1] = 2**top - 1
    weights = 2.0 ** (b * np.arange(slices)) * span / (2**weight_bits - 1)
    codes = np.arange(2**weight_bits)
    digits = np.stack([(codes >> (b * s)) & (2**b - 1) for s in range(slices)], axis=1)
    digits[:, -1] = np.rint(digits[:, -1] * (2**b - 1) / span[-1])  # the top digit's state
    digits = digits.astype(np.int16)
    values = norm[digits] @ weights
    order = np.argsort(values, kind="stable")
    return LevelCode(grid, digits[order], values[order], weights, normalize)


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
    """One crossbar layer on device levels. level_*: int16 [rows, cols·S] (the S cells of output j
    at columns j·S..j·S+S−1); scale: float64 [cols]; weights: the digit weight of each cell [S]."""

    name: str
    level_pos: np.ndarray
    level_neg: np.ndarray
    scale: np.ndarray
    grid: np.ndarray  # G_k of one cell, float64 [L]
    normalize: str = "gmax"
    weights: np.ndarray = field(default_factory=lambda: np.ones(1))

    @property
    def slices(self) -> int:
        return len(self.weights)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, outputs) of the weight matrix."""
        return self.level_pos.shape[0], self.level_pos.shape[1] // self.slices

    @property
    def cell_shape(self) -> tuple[int, int]:
        """(rows, cell columns) of one polarity: outputs × slices."""
        return self.level_pos.shape

    def placement(self, array_rows: int, array_cols: int, layout: str) -> Placement:
        """Where its cells sit on arrays of array_rows × array_cols physical columns."""
        return Placement(*self.cell_shape, array_rows, array_cols, layout)

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

    def cell_scale(self) -> np.ndarray:
        """What one unit of (G_pos − G_neg)/g_ref of each cell column stands for: scale_j · c_s [cols·S]."""
        return np.repeat(self.scale, self.slices) * np.tile(self.weights, len(self.scale))

    def effective_weight(self) -> np.ndarray:
        """W_eff = Σ_s scale·c_s·(G_pos − G_neg)/g_ref: what an ideal array computes, [rows, cols]."""
        cells = self.cell_scale() * (self.g_pos - self.g_neg) / self.g_ref
        rows, cols = self.shape
        return cells.reshape(rows, cols, self.slices).sum(axis=2) if self.slices > 1 else cells


def map_matrix(name: str, w: np.ndarray, code: LevelCode | np.ndarray, scaling: str = "shared_max",
               percentile: float = 99.9, normalize: str = "gmax") -> LayerMap:
    """Differential mapping of a [rows, cols] weight matrix onto the codes of ``code`` (or onto one
    cell's level grid, compared under ``normalize``)."""
    if not isinstance(code, LevelCode):
        code = LevelCode.one_cell(np.asarray(code, dtype=np.float64), normalize)
    w = np.asarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        raise CimtoolError(f"layer '{name}' has NaN or inf weights; cannot map it onto devices")
    scale = SCALINGS[scaling](w, percentile)
    scale = np.where(scale > 0, scale, 1.0)  # an all-zero layer/column maps to g_min everywhere
    rows, cols = w.shape

    def levels(part: np.ndarray) -> np.ndarray:  # [rows, cols] magnitudes → [rows, cols·S] cell levels
        return code.nearest(part / scale).reshape(rows, cols * code.slices)

    # differential split (docs/physics.md#differential-mapping)
    return LayerMap(name, levels(np.maximum(w, 0.0)), levels(np.maximum(-w, 0.0)), scale, code.grid,
                    code.normalize, code.weights)


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
