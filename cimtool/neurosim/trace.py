"""DNN+NeuroSim layer records, written vectorized (docs/physics.md#neurosim-layer-record).

The file formats are those of DNN_NeuroSim V1.3's ``Inference_pytorch/utee/hook.py`` (its
reference functions are written with per-window Python loops and ``np.savetxt`` of string
arrays; here every file is built as one byte array):

- ``weight<k>.csv``: the quantized weights, rows ``Cin·kh·kw`` (or in_features, PyTorch's
  ``reshape(Cout, -1)`` order), columns ``Cout``, each value ``'%10.5f'``. Weights are divided by
  the layer's ``max|W|`` and quantized with WAGE's ``QW``: clipped to ``±(1 − 2^(1−b))`` first, so
  that +1.0 cannot wrap to the most negative code inside NeuroSim, then ``round(x·2^(b−1))/2^(b−1)``.
- ``input<k>.csv``: the bits of one sample's layer input, scaled to [−1, 1] by the layer's input
  range (max |x| over the batch); rows as the weight rows, column ``v·ABITS + j`` for window
  ``v`` (row-major output positions), ``j = 0`` the sign bit then MSB→LSB of the two's complement
  code ``clamp(floor(x·2^(ABITS−1)), −2^(ABITS−1), 2^(ABITS−1) − 1)`` (``hook.dec2bin``). A conv
  layer's windows are those of its padding and stride (``hook.stretch_input``).
- ``NetWork.csv``: no header, ``H,W,Cin,kh,kw,Cout,followedByPool,stride`` per layer; a linear
  layer is ``1,1,IN,1,1,OUT,0,1``. NeuroSim assumes unpadded convolutions.

V2.1 (on-chip training) records differ in three ways, as V2.1's own hook and C++ do:
``weightOld<k>.csv`` holds the weights before the update (the source model's for a fine-tuned
qmodel, else the same weights: no update; quantized like the weights, so that an unchanged weight
is a zero update), the layer's input activity (the mean bit of its input file) goes on the command
line, and a conv input holds only the unpadded windows ``(H−k+1)×(W−k+1)`` (strided), the ones
V2.1's C++ reads (its hook leaves zero rows for the padded ones; we leave them out).
"""

from __future__ import annotations

import numpy as np

FORMATS = ("v13", "v21")


# --- numbers -----------------------------------------------------------------------------------

def quantize_weights(w: np.ndarray, bits: int) -> np.ndarray:
    """WAGE QW (NeuroSim V2.1 wage_quantizer): clip to ±(1 − 1/S), then round(x·S)/S, S = 2^(b−1)."""
    s = 2.0 ** (bits - 1)
    return np.round(np.clip(w, -1 + 1 / s, 1 - 1 / s) * s) / s


def input_codes(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's complement codes of ``x`` in [−1, 1), as hook.dec2bin computes them (same arithmetic).

    Returns uint8 bits [bits, *x.shape]: the sign bit first, then MSB→LSB."""
    delta = 1.0 / 2 ** (bits - 1)
    base = 2 ** (bits - 1)
    x_int = x / delta
    out = np.empty((bits, *x.shape), dtype=np.uint8)
    sign = np.less(x_int, 0, out=out[0].view(bool))
    rest = np.add(x_int, base, out=x_int, where=sign)  # x_int + base·sign
    for i in range(1, bits):  # greedy, exactly as the reference (saturates instead of wrapping)
        base = base / 2
        bit = np.greater_equal(rest, base, out=out[i].view(bool))
        np.subtract(rest, base, out=rest, where=bit)
    return out


# --- windows -----------------------------------------------------------------------------------

def stretch(x: np.ndarray, kernel: int, padding: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """One sample [C, H, W] → [windows, C·k·k] (hook.stretch_input's layout), vectorized."""
    from numpy.lib.stride_tricks import sliding_window_view

    ph, pw = padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    windows = sliding_window_view(x, (kernel, kernel), axis=(1, 2))[:, :: stride[0], :: stride[1]]
    c, oh, ow = windows.shape[:3]
    return windows.transpose(1, 2, 0, 3, 4).reshape(oh * ow, c * kernel * kernel)


# --- CSV bytes ---------------------------------------------------------------------------------

def _csv_from_cells(cells: np.ndarray) -> bytes:
    """cells: uint8 [rows, cols, width] of fixed-width text → 'a,b,…\\n' per row."""
    rows, cols, width = cells.shape
    out = np.empty((rows, cols, width + 1), dtype=np.uint8)
    out[:, :, :width] = cells
    out[:, :, width] = ord(",")
    out[:, -1, width] = ord("\n")
    return out.tobytes()


def _weight_bytes(index: np.ndarray, s: int) -> bytes:
    """Level indices [Cout, rows] (code + S; 2S+1 for −0.0) → the transposed '%10.5f' CSV."""
    values = [k / s for k in range(-s, s + 1)] + [-0.0]
    table = np.frombuffer("".join(f"{v:10.5f}," for v in values).encode(), dtype=np.uint8).reshape(-1, 11)
    cells = table[np.ascontiguousarray(index.T)]  # [rows, Cout, 10 characters + ',']
    cells[:, -1, 10] = ord("\n")
    return cells.tobytes()


def weight_csv(q: np.ndarray, bits: int) -> bytes:
    """Quantized weights [Cout, …] (multiples of 2^(1−b)) → weight CSV bytes ('%10.5f')."""
    s = 2 ** (bits - 1)
    flat = q.reshape(q.shape[0], -1)  # [Cout, rows]; the file is its transpose
    scaled = flat * s
    codes = np.rint(scaled)
    if not np.array_equal(codes, scaled):
        raise ValueError("weights are not quantized to the given bits")
    index = codes.astype(np.int32) + s
    index[(index == s) & np.signbit(flat)] = 2 * s + 1  # rounding can leave −0.0: '  -0.00000'
    return _weight_bytes(index, s)


def layer_weight_csv(weight: np.ndarray, scale: float, bits: int) -> bytes:
    """A layer's float weights → its weight CSV: ``QW(weight/scale)`` (float32, one pass per step)."""
    s = 2 ** (bits - 1)
    codes = np.rint(np.clip(weight.reshape(weight.shape[0], -1).astype(np.float32) * np.float32(s / scale),
                            1 - s, s - 1))  # = round(C(w/scale)·S): the clip bounds are whole codes
    index = codes.astype(np.int32) + s
    index[(index == s) & np.signbit(codes)] = 2 * s + 1
    return _weight_bytes(index, s)


def planes_csv(planes: np.ndarray) -> bytes:
    """Bit planes uint8 [bits, windows, features] → input CSV bytes: rows = features, column v·bits + j."""
    bits, windows, rows = planes.shape
    cols = windows * bits
    out = np.empty((rows, cols, 2), dtype=np.uint8)
    np.add(planes.transpose(2, 1, 0).reshape(rows, cols), ord("0"), out=out[:, :, 0])
    out[:, :, 1] = ord(",")
    out[:, -1, 1] = ord("\n")
    return out.tobytes()


def bits_csv(values: np.ndarray, bits: int) -> bytes:
    """Layer input [windows, features] → input CSV bytes of its ``bits``-bit two's complement codes."""
    return planes_csv(input_codes(values, bits))


def network_row(layer: dict, height: int, width: int, pool: bool) -> list[int]:
    """``H,W,Cin,kh,kw,Cout,followedByPool,stride`` of one crossbar layer."""
    if layer["type"] == "linear":
        return [1, 1, layer["in_features"], 1, 1, layer["out_features"], 0, 1]
    kh, kw = layer["kernel_size"]
    return [height, width, layer["in_channels"], kh, kw, layer["out_channels"], int(pool), layer["stride"][0]]


def network_csv(rows: list[list[int]]) -> str:
    """``NetWork.csv``'s text: one comma-separated row per layer, no header."""
    return "".join(",".join(map(str, r)) + "\n" for r in rows)
