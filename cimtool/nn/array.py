"""The simulated crossbar array: a mapped Linear/Conv2d layer as the hardware computes it.

Signal chain of one layer (seed 003 §2 lists the non-idealities; DESIGN.md §6):

1. **DAC / input encoding.** Layer inputs are scaled by ``x_max`` (calibrated on the train split)
   to ``[−1, 1]``. ``analog``: one read with voltages ``V = v·V_read`` quantized to ``input_bits``.
   ``bitserial``: the ``input_bits`` bits of ``round(v·(2^b−1))`` are applied as binary pulses, each
   read and digitised separately and shift-added. Negative inputs (e.g. a CNN's normalized image)
   are applied as a second read of ``max(−v, 0)`` and subtracted digitally.
2. **Conductances** of the differential pair (``G_pos``, ``G_neg``) after programming one chip:
   D2D (per device, fixed for the chip), C2C (per programming), stuck-at faults, drift
   ``G(t) = G0·(t/t0)^(−ν)`` with a per-device ν, and IR drop (below).
3. **Column currents** ``I = V·G`` per physical array (row tiles of ``array_rows``), plus read
   noise: each cell's conductance varies by ``read_noise`` (relative σ) at every read; the column
   current therefore gets Gaussian noise of σ = ``read_noise·sqrt(Σ_i V_i² G_ij²)`` (exact for
   independent per-cell noise).
4. **ADC** with a full scale calibrated on the train split (max of the ADC input on an ideal
   chip). Scheme A: ``I_pos`` and ``I_neg`` each digitised (unsigned, ``2^b`` codes), then
   subtracted. Scheme B: ``I_pos − I_neg`` in analog, one signed ADC (codes ``±(2^(b−1)−1)``).
   Values beyond the full scale saturate.
5. **Digital**: partial sums of the row tiles are added, ``y = D/(V_read·g_ref)·scale·x_max + bias``
   (``g_ref = g_max``, or ``g_max − g_min`` with the ``range`` normalisation).

**IR drop, first-order model.** Each row wire is driven at physical column 0 and each column
wire is read at the bottom of the array (virtual ground) through segments of ``wire_resistance``
per cell. Starting from the ideal cell currents, the voltage lost along row ``i`` up to column
``j`` is ``r·Σ_m I_im·(min(j, m)+1)`` and the voltage the column wire of ``j`` rises to at row ``i`` is
``r·Σ_m I_mj·(R − max(i, m))`` (``R`` = array rows). Feeding those drops back once (one Jacobi step,
exact to first order in ``r``) is equivalent to an input-independent attenuation of every cell:
``G_eff = G ⊙ (1 − r·(A + B))`` with ``A = G·M``, ``M_mj = min(j, m)+1`` and ``B = N·G``,
``N_mi = R − max(i, m)``, computed on the physical layout of each array (pos and neg columns
both load the row wire). It is accurate while ``r·(A+B) ≪ 1`` (nS devices, small arrays), and
clamps at zero beyond that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cimtool.devices.card import DeviceCard
from cimtool.devices.mapping import LayerMap, Placement
from cimtool.errors import CimtoolError

EFFECTS = ("d2d", "c2c", "stuck", "drift", "ir", "read")
ENCODINGS = ("analog", "bitserial")


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
        unknown = sorted(set(self.effects) - set(EFFECTS))
        if unknown:
            raise CimtoolError(f"unknown --effects {', '.join(unknown)} (choose from: {', '.join(EFFECTS)})")
        if self.scheme not in ("A", "B"):
            raise CimtoolError(f"unknown --scheme '{self.scheme}' (choose from: A, B)")
        if self.encoding not in ENCODINGS:
            raise CimtoolError(f"unknown --encoding '{self.encoding}' (choose from: {', '.join(ENCODINGS)})")
        if self.adc_bits is not None and not 2 <= self.adc_bits <= 24:
            raise CimtoolError(f"--adc-bits must be in 2..24, got {self.adc_bits}")
        if self.input_bits is not None and not 1 <= self.input_bits <= 16:
            raise CimtoolError(f"--input-bits must be in 1..16, got {self.input_bits}")
        if self.encoding == "bitserial" and self.input_bits is None:
            raise CimtoolError("--encoding bitserial needs --input-bits")
        if not self.drift_time > 0:
            raise CimtoolError(f"--drift-time must be > 0 seconds, got {self.drift_time}")


IDEAL = ArrayConfig()


# --- one chip: programming, drift, IR drop -----------------------------------------------------

def _vary(g: torch.Tensor, sigma: float, card: DeviceCard, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(g.shape, generator=gen, dtype=g.dtype)
    if card.variation_model == "lognormal":
        return g * torch.exp(sigma * noise)  # σ is the std of ln G
    # NeuroSim RealDevice: additive σ·(g_max − g_min), clamped to the device range
    return (g + sigma * (card.g_max - card.g_min) * noise).clamp(card.g_min, card.g_max)


def program(g: torch.Tensor, card: DeviceCard, effects: tuple[str, ...], gen: torch.Generator,
            drift_time: float | None = None) -> torch.Tensor:
    """Conductances of one programmed chip (float64, same shape as the target ``g``)."""
    g = g.clone()
    if "d2d" in effects and card.d2d_sigma > 0:
        g = _vary(g, card.d2d_sigma, card, gen)
    if "c2c" in effects and card.c2c_sigma > 0:
        g = _vary(g, card.c2c_sigma, card, gen)
    if "stuck" in effects and (card.stuck_off > 0 or card.stuck_on > 0):
        u = torch.rand(g.shape, generator=gen, dtype=g.dtype)
        g = torch.where(u < card.stuck_off, card.g_min, g)
        g = torch.where(u >= 1 - card.stuck_on, card.g_max, g)
    if "drift" in effects and drift_time is not None and drift_time > card.drift_t0 and card.drift_nu > 0:
        nu = card.drift_nu + card.drift_nu_sigma * torch.randn(g.shape, generator=gen, dtype=g.dtype)
        g = g * (drift_time / card.drift_t0) ** (-nu.clamp_min(0.0))  # G(t) = G0·(t/t0)^(−ν)
    return g


def ir_drop(g: torch.Tensor, placement: Placement, wire_resistance: float) -> torch.Tensor:
    """First-order IR-drop attenuation (module docstring) of ``g`` = [2 (pos, neg), rows, cols]."""
    out = torch.empty_like(g)
    tile_rows, tile_cols = placement.tile_grid
    per, big_r = placement.outputs_per_array, placement.array_rows
    for tr in range(tile_rows):
        r0, r1 = tr * big_r, min((tr + 1) * big_r, placement.rows)
        for tc in range(tile_cols):
            c0, c1 = tc * per, min((tc + 1) * per, placement.cols)
            n_out = c1 - c0
            _, pos, neg = placement.array_columns(np.arange(c0, c1))
            phys = g.new_zeros(r1 - r0, 2 * n_out)
            phys[:, pos] = g[0, r0:r1, c0:c1]
            phys[:, neg] = g[1, r0:r1, c0:c1]
            rows = torch.arange(r1 - r0, dtype=g.dtype)
            cols = torch.arange(2 * n_out, dtype=g.dtype)
            m = torch.minimum(cols[:, None], cols[None, :]) + 1  # row wire, driver at column 0
            n = big_r - torch.maximum(rows[:, None], rows[None, :])  # column wire, read at the bottom
            eff = phys * (1 - wire_resistance * (phys @ m + n @ phys)).clamp_min(0.0)
            out[0, r0:r1, c0:c1] = eff[:, pos]
            out[1, r0:r1, c0:c1] = eff[:, neg]
    return out


# --- converters -------------------------------------------------------------------------------

def adc_unsigned(i: torch.Tensor, full_scale: float, bits: int) -> torch.Tensor:
    step = full_scale / (2**bits - 1)
    return torch.round(i / step).clamp(0, 2**bits - 1) * step


def adc_signed(i: torch.Tensor, full_scale: float, bits: int) -> torch.Tensor:
    top = 2 ** (bits - 1) - 1
    step = full_scale / top
    return torch.round(i / step).clamp(-top, top) * step


def dac(v: torch.Tensor, bits: int | None) -> torch.Tensor:
    """v in [0, 1] → the nearest of 2^bits input levels (ideal when bits is None)."""
    if bits is None:
        return v
    top = 2**bits - 1
    return torch.round(v * top) / top


# --- the layer --------------------------------------------------------------------------------

class ArrayLayer(nn.Module):
    """A Linear or Conv2d computed on simulated crossbar arrays (see the module docstring)."""

    def __init__(self, module: nn.Module, layer_map: LayerMap, placement: Placement, card: DeviceCard,
                 config: ArrayConfig) -> None:
        super().__init__()
        self.is_conv = isinstance(module, nn.Conv2d)
        if self.is_conv:
            self.conv_args = {"kernel_size": module.kernel_size, "padding": module.padding,
                              "stride": module.stride, "dilation": module.dilation}
        self.bias = None if module.bias is None else module.bias.detach().clone()
        self.card, self.config, self.placement = card, config, placement
        self.g_ref = layer_map.g_ref  # conductance difference that stands for a weight of `scale`
        self.target = torch.from_numpy(np.stack([layer_map.g_pos, layer_map.g_neg]))  # float64
        self.scale = torch.from_numpy(layer_map.scale).float()
        self.g = self.target.float()  # conductances of the current chip, [2, rows, cols]
        self.read_gen: torch.Generator | None = None
        self.x_max = 0.0  # calibrated input range
        self.signed = False  # inputs can be negative: a second read for the negative part
        self.full_scale = 0.0  # calibrated ADC full scale (A)
        self.calibrating = False

    def program_chip(self, gen: torch.Generator | None) -> None:
        """Draw one chip (all device effects of the config) or reset to the ideal targets."""
        effects = self.config.effects if gen is not None else ()
        g = self.target
        if gen is not None:
            g = program(g, self.card, effects, gen, self.config.drift_time)
        if "ir" in effects and self.card.wire_resistance > 0:
            g = ir_drop(g, self.placement, self.card.wire_resistance)
        self.g = g.float()
        self.read_gen = gen if "read" in effects and self.card.read_noise > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_conv:
            return self._mvm(x)
        batch, _, height, width = x.shape
        cols = F.unfold(x, **self.conv_args)  # [B, Cin·kh·kw, L]
        y = self._mvm(cols.transpose(1, 2).reshape(-1, cols.shape[1]))
        kh, kw = self.conv_args["kernel_size"]
        (ph, pw), (sh, sw), (dh, dw) = (self.conv_args[k] for k in ("padding", "stride", "dilation"))
        out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        return y.view(batch, out_h * out_w, -1).transpose(1, 2).reshape(batch, -1, out_h, out_w)

    def _mvm(self, x: torch.Tensor) -> torch.Tensor:
        """[N, rows] → [N, cols] through DAC, arrays, ADC and the digital tail."""
        if self.calibrating:
            self.x_max = max(self.x_max, float(x.abs().max()))
            self.signed = self.signed or bool((x < 0).any())
        x_max = self.x_max if self.x_max > 0 else 1.0
        v = (x / x_max).clamp(-1.0, 1.0)
        acc = self._read(v.clamp_min(0.0))
        if self.signed:
            acc = acc - self._read((-v).clamp_min(0.0))
        y = acc * (self.scale * (x_max / (self.card.read_voltage * self.g_ref)))
        return y if self.bias is None else y + self.bias

    def _read(self, v: torch.Tensor) -> torch.Tensor:
        """Digitised I_pos − I_neg for inputs v in [0, 1], summed over bit planes and row tiles."""
        cfg = self.config
        if cfg.encoding == "analog":
            planes = [(dac(v, cfg.input_bits), 1.0)]
        else:
            top = 2**cfg.input_bits - 1
            codes = torch.round(v * top).to(torch.int32)
            planes = [(((codes >> b) & 1).to(v.dtype), 2**b / top) for b in range(cfg.input_bits)]
        total = None
        for u, weight in planes:
            d = self._tiles(u * self.card.read_voltage) * weight
            total = d if total is None else total + d
        return total

    def _tiles(self, volts: torch.Tensor) -> torch.Tensor:
        out = None
        step = self.placement.array_rows
        for r0 in range(0, self.g.shape[1], step):
            d = self._array(volts[:, r0: r0 + step], self.g[:, r0: r0 + step])
            out = d if out is None else out + d
        return out

    def _array(self, volts: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """One row tile: column currents (+ read noise), ADC per scheme → digital I_pos − I_neg."""
        currents = volts @ g  # [2, N, cols]: I_pos, I_neg
        if self.read_gen is not None:
            sigma = self.card.read_noise * torch.sqrt(volts.square() @ g.square())
            currents = currents + sigma * torch.randn(currents.shape, generator=self.read_gen)
        cfg = self.config
        if cfg.scheme == "A":
            if self.calibrating:
                self.full_scale = max(self.full_scale, float(currents.max()))
            if cfg.adc_bits is not None:
                fs = self.full_scale or 1.0
                currents = adc_unsigned(currents, fs, cfg.adc_bits)
            return currents[0] - currents[1]
        diff = currents[0] - currents[1]
        if self.calibrating:
            self.full_scale = max(self.full_scale, float(diff.abs().max()))
        if cfg.adc_bits is not None:
            diff = adc_signed(diff, self.full_scale or 1.0, cfg.adc_bits)
        return diff
