"""The simulated crossbar array: a mapped Linear/Conv2d layer as the hardware computes it.

Signal chain of one layer:

1. **DAC / input encoding.** Layer inputs are scaled by ``x_max`` (calibrated on a train sample)
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
4. **ADC** with a full scale calibrated on a train sample (max of the ADC input on an ideal
   chip). Scheme A: ``I_pos`` and ``I_neg`` each digitised (unsigned, ``2^b`` codes), then
   subtracted. Scheme B: ``I_pos − I_neg`` in analog, one signed ADC (codes ``±(2^(b−1)−1)``).
   Values beyond the full scale saturate.
5. **Digital**: partial sums of the row tiles are added, ``y = D/(V_read·g_ref)·scale·x_max + bias``
   (``g_ref = g_max``, or ``g_max − g_min`` with the ``range`` normalisation).

**Without an ADC** nothing non-linear sits between the cells and the digital sum, so a layer is
computed exactly as one GEMM (a ``conv2d`` for conv layers) of the programmed ``G_pos − G_neg``:
row tiles add up linearly, the positive and negative reads of a signed input are one signed read
(``v⁺ − v⁻ = v``) and their read-noise variances add to ``Σ v² G²`` (``v⁺·v⁻ = 0``). With an ADC,
the row tiles of a linear layer's read are one batched GEMM (``bmm``), digitised, then summed; a
conv layer's row tile is one ``conv2d`` over the input channels its rows span (rows are ordered
``(cin, kh, kw)``, so a tile costs its own rows plus at most two partly covered channels, never an
unrolled input), digitised, then summed. Conv tensors stay channels-last, which is also what
makes the model's digital max-pooling fast on CPU.

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

**Chips.** A layer holds ``K`` programmed chips at once; its input is ``K`` blocks of the batch
stacked along dim 0 (chip-major), so several Monte Carlo chips run in one batched pass. Read
noise is drawn from each chip's own generator, so a chip's result does not depend on how many
chips share the pass.

**Calibration** is a separate step (``observe, then freeze``): a :class:`ConverterObserver`
stands in for the layer, computes the ideal mapped layer and records the input range, then (with
that range frozen) the ADC input range on an ideal chip; :meth:`ArrayLayer.freeze` fixes both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cimtool.devices.card import DeviceCard
from cimtool.devices.mapping import LayerMap, Placement
from cimtool.errors import CimtoolError
from cimtool.nn import noise
from cimtool.nn.array_config import EFFECTS, ENCODINGS, IDEAL, ArrayConfig  # noqa: F401 (re-exported)
from cimtool.nn.variation import vary


@dataclass(frozen=True)
class TileBank:
    """One row tile of a conv layer as a filter bank over input channels ``c0:c1`` (rows outside
    the tile zeroed), one [C' columns, c1 − c0, kh, kw] channels-last tensor per chip."""

    c0: int
    c1: int
    read: list[torch.Tensor]  # per chip: G_pos − G_neg (scheme B) or [G_pos | G_neg] (scheme A)
    noise: list[torch.Tensor] | None  # per chip: read_noise²·(G_pos² + G_neg²) or its two halves


@dataclass(frozen=True)
class Converters:
    """The calibrated (frozen) converter ranges of one array layer."""

    x_max: float  # |layer input| that maps to V_read (DAC full scale)
    signed: bool  # inputs can be negative: a second read for the negative part
    full_scale: float  # ADC full scale, A (scheme A: of I_pos/I_neg; B: of I_pos − I_neg)


# --- one chip: programming, drift, IR drop -----------------------------------------------------

def program(g: torch.Tensor, card: DeviceCard, effects: tuple[str, ...], gen: torch.Generator,
            drift_time: float | None = None) -> torch.Tensor:
    """Conductances of one programmed chip (same dtype, device and shape as the target ``g``)."""
    g = g.clone()
    if "d2d" in effects and card.d2d_sigma > 0:
        g = vary(g, card.d2d_sigma, card.variation_model, card.g_min, card.g_max, gen)
    if "c2c" in effects and card.c2c_sigma > 0:
        g = vary(g, card.c2c_sigma, card.variation_model, card.g_min, card.g_max, gen)
    if "stuck" in effects and (card.stuck_off > 0 or card.stuck_on > 0):
        u = torch.rand(g.shape, generator=gen, dtype=g.dtype, device=g.device)
        g = torch.where(u < card.stuck_off, card.g_min, g)
        g = torch.where(u >= 1 - card.stuck_on, card.g_max, g)
    if "drift" in effects and drift_time is not None and drift_time > card.drift_t0 and card.drift_nu > 0:
        nu = card.drift_nu + card.drift_nu_sigma * torch.randn(g.shape, generator=gen, dtype=g.dtype,
                                                               device=g.device)
        g = g * (drift_time / card.drift_t0) ** (-nu.clamp_min(0.0))  # G(t) = G0·(t/t0)^(−ν)
    return g


def ir_load(g: torch.Tensor, placement: Placement, wire_resistance: float) -> torch.Tensor:
    """``r·(A + B)`` of every cell of ``g`` = [2 (pos, neg), rows, cols] (module docstring): the
    first-order IR-drop model holds while it is ≪ 1.

    Arrays of one shape (whole, or the partial ones at the bottom/right edge) are done together."""
    out = torch.empty_like(g)
    rows, cols = placement.rows, placement.cols
    big_r, per = placement.array_rows, placement.outputs_per_array
    row_spans = [(0, rows // big_r * big_r, big_r), (rows // big_r * big_r, rows, rows % big_r)]
    col_spans = [(0, cols // per * per, per), (cols // per * per, cols, cols % per)]
    for r0, r1, rr in row_spans:
        for c0, c1, cc in col_spans:
            if r1 <= r0 or c1 <= c0:
                continue
            nr, nc = (r1 - r0) // rr, (c1 - c0) // cc
            # [2, nr·rr, nc·cc] → arrays [nr·nc, rr, cc] of pos and of neg cells
            tiles = g[:, r0:r1, c0:c1].reshape(2, nr, rr, nc, cc).permute(0, 1, 3, 2, 4)
            tiles = tiles.reshape(2, -1, rr, cc)
            pos, neg = (torch.as_tensor(c, device=g.device)
                        for c in placement.physical_columns(np.arange(cc), cc))
            phys = g.new_zeros(nr * nc, rr, 2 * cc)
            phys[..., pos], phys[..., neg] = tiles[0], tiles[1]
            # A = G·M, M_jk = min(j, k)+1 (row wire, driver at column 0), and B = N·G, N_im = R − max(i, m)
            # (column wire, read at the bottom), as running sums: O(cells) instead of O(cells·width)
            w = torch.arange(1, 2 * cc + 1, dtype=g.dtype, device=g.device)  # j + 1
            run, run_w = phys.cumsum(-1), (phys * w).cumsum(-1)
            a = run_w + w * (run[..., -1:] - run)  # Σ_{j≤k} G_ij (j+1) + (k+1) Σ_{j>k} G_ij
            rw = (big_r - torch.arange(rr, dtype=g.dtype, device=g.device)).unsqueeze(-1)  # R − i
            d0, e = phys.cumsum(-2), (phys * rw).cumsum(-2)
            b = rw * d0 + (e[..., -1:, :] - e)  # (R − i) Σ_{m≤i} G_mk + Σ_{m>i} (R − m) G_mk
            load = wire_resistance * (a + b)
            back = torch.stack([load[..., pos], load[..., neg]]).reshape(2, nr, nc, rr, cc)
            out[:, r0:r1, c0:c1] = back.permute(0, 1, 3, 2, 4).reshape(2, r1 - r0, c1 - c0)
    return out


def ir_drop(g: torch.Tensor, placement: Placement, wire_resistance: float) -> torch.Tensor:
    """First-order IR-drop attenuation ``G ⊙ (1 − r·(A + B))``, clamped at zero (module docstring)."""
    return g * (1 - ir_load(g, placement, wire_resistance)).clamp_min(0.0)


IR_VALID_LOAD = 0.1  # r·(A+B) above which the first-order IR drop is reported as beyond its validity


def ir_worst(maps: dict[str, LayerMap], placements: dict[str, Placement],
             wire_resistance: float) -> tuple[float, str]:
    """(largest r·(A+B), its layer) of these programmed targets."""
    loads = {name: float(ir_load(torch.from_numpy(np.stack([lm.g_pos, lm.g_neg])), placements[name],
                                 wire_resistance).max()) if wire_resistance > 0 else 0.0
             for name, lm in maps.items()}
    name = max(loads, key=loads.get)
    return loads[name], name


def ir_caveat_text(load: float, where: str) -> str | None:
    """The sentence for a largest r·(A+B) of ``load`` (at ``where``) beyond the first-order validity."""
    if load <= IR_VALID_LOAD:
        return None
    return (f"first-order IR drop at r·(A+B) up to {load:.2g} ({where}): beyond its validity (≪ 1, here "
            f"> {IR_VALID_LOAD:g}), the attenuation is underestimated; smaller arrays, lower wire "
            "resistance or a nodal solver")


def ir_caveat(maps: dict[str, LayerMap], placements: dict[str, Placement],
              wire_resistance: float) -> str | None:
    """A sentence when the first-order IR drop runs beyond its validity (r·(A+B) ≪ 1) on these
    programmed targets; None within it."""
    load, name = ir_worst(maps, placements, wire_resistance)
    return ir_caveat_text(load, f"layer {name}")


# --- converters -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Adc:
    """An ADC with a uniform step: currents expressed in steps → integer codes, saturating."""

    step: float  # A per code
    lo: int
    hi: int

    @classmethod
    def make(cls, scheme: str, full_scale: float, bits: int) -> Adc:
        if scheme == "A":  # unsigned: 2^b codes over [0, full_scale]
            return cls(full_scale / (2**bits - 1), 0, 2**bits - 1)
        top = 2 ** (bits - 1) - 1  # signed: codes ±(2^(b−1)−1) over [−full_scale, full_scale]
        return cls(full_scale / top, -top, top)

    def __call__(self, steps: torch.Tensor) -> torch.Tensor:
        """Currents in units of ``step`` → codes (in place)."""
        return steps.round_().clamp_(self.lo, self.hi)


def adc_unsigned_(i: torch.Tensor, full_scale: float, bits: int) -> torch.Tensor:
    """Unsigned ADC of 2^bits codes over [0, full_scale], in amps (in place on ``i``)."""
    adc = Adc.make("A", full_scale, bits)
    return adc(i.div_(adc.step)).mul_(adc.step)


def adc_signed_(i: torch.Tensor, full_scale: float, bits: int) -> torch.Tensor:
    """Signed ADC of codes ±(2^(bits−1)−1) over [−full_scale, full_scale], in amps (in place on ``i``)."""
    adc = Adc.make("B", full_scale, bits)
    return adc(i.div_(adc.step)).mul_(adc.step)


def dac(v: torch.Tensor, bits: int | None) -> torch.Tensor:
    """v in [−1, 1] → the nearest of the 2^bits input levels per sign (ideal when bits is None)."""
    if bits is None:
        return v
    top = 2**bits - 1
    return torch.round(v * top).div_(top)


class _Recorder:
    """An identity ADC (step 1 A) that records the largest |ADC input|: calibration's pass 2."""

    step = 1.0

    def __init__(self) -> None:
        self.full_scale = 0.0

    def __call__(self, currents: torch.Tensor) -> torch.Tensor:
        if currents.numel():
            self.full_scale = max(self.full_scale, float(currents.abs().max()))
        return currents


# --- the layer --------------------------------------------------------------------------------

class ArrayLayer(nn.Module):
    """A Linear or Conv2d computed on simulated crossbar arrays (see the module docstring)."""

    def __init__(self, module: nn.Module, layer_map: LayerMap, placement: Placement, card: DeviceCard,
                 config: ArrayConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.is_conv = isinstance(module, nn.Conv2d)
        if self.is_conv:
            self.conv_args = {"kernel_size": module.kernel_size, "padding": module.padding,
                              "stride": module.stride, "dilation": module.dilation}
            self.weight_shape = tuple(module.weight.shape)
        self.bias = None if module.bias is None else module.bias.detach().clone().float().to(device)
        self.card, self.config, self.placement = card, config, placement
        self.device = torch.device(device)
        self.g_ref = layer_map.g_ref  # conductance difference that stands for a weight of `scale`
        self.target = torch.from_numpy(np.stack([layer_map.g_pos, layer_map.g_neg])).to(self.device)  # f64
        # per cell column: scale_j·c_s (bit slices are shift-added after the ADC; c = 1 unsliced)
        self.scale = torch.from_numpy(layer_map.cell_scale()).float().to(self.device)
        self.rows, self.cols = layer_map.shape
        self.slices = layer_map.slices
        self.cell_cols = self.cols * self.slices
        self.tiles = -(-self.rows // placement.array_rows)
        # no ADC and analog input: the whole layer is one GEMM/conv (module docstring)
        self.linear = config.adc_bits is None and config.encoding == "analog"
        self.read_noise = card.read_noise if "read" in config.effects else 0.0
        self.converters: Converters | None = None
        self.program_chips([None])

    # --- chips ---

    @property
    def chips(self) -> int:
        return len(self.read_gens)

    def program_chips(self, gens: Sequence[torch.Generator | None]) -> None:
        """Program one chip per generator (all device effects of the config); None: the ideal targets.

        Each generator then also draws that chip's read noise."""
        chips = []
        for gen in gens:
            g = self.target
            if gen is not None:
                g = program(g, self.card, self.config.effects, gen, self.config.drift_time)
                if "ir" in self.config.effects and self.card.wire_resistance > 0:
                    g = ir_drop(g, self.placement, self.card.wire_resistance)
            chips.append(g)
        g = torch.stack(chips)  # [K, 2, rows, cols], float64
        self.g = g.float()  # the programmed conductances of the chips
        noisy = self.read_noise > 0 and all(gen is not None for gen in gens)
        self.read_gens = [noise.streams(gen) if noisy else None for gen in gens]
        scheme_b = self.config.scheme == "B" or self.linear
        read = g[:, 0] - g[:, 1] if scheme_b else torch.cat([g[:, 0], g[:, 1]], dim=2)
        sq = g.square()
        sq_sum = None
        if noisy:
            sq_sum = sq[:, 0] + sq[:, 1] if scheme_b else torch.cat([sq[:, 0], sq[:, 1]], dim=2)
        if self.linear:  # in output units (scale/g_ref folded in), [K, cols, rows] as F.linear takes
            unit = self.scale.double() / self.g_ref
            self.w_read = self._outputs(read * unit).transpose(1, 2).float().contiguous()
            self.w_noise = None if sq_sum is None else \
                self._outputs(sq_sum * unit.square()).transpose(1, 2).float().contiguous()
            return
        # [K, rows, C'] with read noise²·G² for σ² = Σ V²·read_noise²·G²
        self.w_read = read.float().contiguous()
        self.w_noise = None if sq_sum is None else (sq_sum * self.read_noise**2).float().contiguous()
        if self.is_conv:
            self.banks = self._tile_banks(self.w_read, self.w_noise)

    def _outputs(self, cells: torch.Tensor) -> torch.Tensor:
        """[..., cols·S] per cell column → [..., cols] per output: the slices' shift-add (a sum, their
        digit weights being in ``scale``)."""
        return cells if self.slices == 1 else cells.unflatten(-1, (self.cols, self.slices)).sum(-1)

    def _tile_banks(self, read: torch.Tensor, noisy: torch.Tensor | None) -> list[TileBank]:
        """[K, rows, C'] matrices → one channels-last filter bank per row tile (see :class:`TileBank`)."""
        cin, kh, kw = self.weight_shape[1:]
        taps, tr = kh * kw, self.placement.array_rows

        def bank(m: torch.Tensor | None, r0: int, r1: int, c0: int, c1: int) -> list[torch.Tensor] | None:
            if m is None:
                return None
            k, _, width = m.shape
            part = m.new_zeros(k, (c1 - c0) * taps, width)
            part[:, r0 - c0 * taps: r1 - c0 * taps] = m[:, r0:r1]
            filters = part.permute(0, 2, 1).reshape(k, width, c1 - c0, kh, kw)
            # explicit channels-last strides, per chip: conv2d then returns channels-last even when
            # Cin = 1 (where channels-last and contiguous are otherwise the same tensor)
            return [torch.empty(f.shape, dtype=f.dtype, device=f.device,
                                memory_format=torch.channels_last).copy_(f) for f in filters]

        banks = []
        for r0 in range(0, self.rows, tr):
            r1 = min(r0 + tr, self.rows)
            c0, c1 = r0 // taps, -(-r1 // taps)
            banks.append(TileBank(c0, c1, bank(read, r0, r1, c0, c1), bank(noisy, r0, r1, c0, c1)))
        return banks

    # --- calibration ---

    def ideal(self, x: torch.Tensor) -> torch.Tensor:
        """The mapped layer without converters, range limits or noise: W_eff = scale·(G_pos − G_neg)/g_ref."""
        w = self._outputs((self.target[0] - self.target[1]) * (self.scale.double() / self.g_ref)).T.float()
        if self.is_conv:
            return F.conv2d(x, w.reshape(self.weight_shape), self.bias, **self._conv_kwargs())
        return F.linear(x, w, self.bias)

    def freeze(self, converters: Converters) -> None:
        self.converters = converters

    # --- forward ---

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cal = self.converters
        if cal is None:
            raise CimtoolError("an array layer ran before its converters were calibrated")
        bits = self.config.adc_bits
        return self.compute(x, cal, None if bits is None else Adc.make(self.config.scheme,
                                                                        cal.full_scale or 1.0, bits))

    def compute(self, x: torch.Tensor, cal: Converters, adc: Adc | _Recorder | None) -> torch.Tensor:
        """The layer on the current chips with converter ranges ``cal`` and ADC ``adc`` (None: none)."""
        if self.linear and adc is None:
            return self._linear(x, cal)
        y = self._convert(x if self.is_conv else x.reshape(-1, self.rows), cal, adc)
        return y if self.bias is None else y.add_(self.bias.view(-1, 1, 1) if self.is_conv else self.bias)

    def _conv_kwargs(self) -> dict:
        return {k: self.conv_args[k] for k in ("padding", "stride", "dilation")}

    def _linear(self, x: torch.Tensor, cal: Converters) -> torch.Tensor:
        """No ADC, analog input: one signed read per chip as a plain GEMM/conv (module docstring)."""
        v = (x / cal.x_max).clamp_(-1.0 if cal.signed else 0.0, 1.0)
        v = dac(v, self.config.input_bits).mul_(cal.x_max)  # the applied input in x units
        outs = []
        for k, xk in enumerate(v.chunk(self.chips)):
            y = self._gemm(xk, self.w_read[k], self.bias)
            if self.w_noise is not None:  # σ = read_noise·sqrt(Σ V²G²), in output units
                sigma = self._gemm(xk.square(), self.w_noise[k], None).sqrt_().mul_(self.read_noise)
                y.addcmul_(sigma, noise.randn_like(y, self.read_gens[k]))
            outs.append(y)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _gemm(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.is_conv:
            return F.conv2d(x, w.view(self.weight_shape), bias, **self._conv_kwargs())
        return F.linear(x, w, bias)

    def _convert(self, x: torch.Tensor, cal: Converters, adc: Adc | _Recorder | None) -> torch.Tensor:
        """Inputs (images of a conv layer, [N, rows] of a linear one; K chips stacked) → outputs
        through DAC, arrays, ADC and the digital tail, without the bias.

        Inputs are carried as DAC codes ``u = round(v·top)`` (``top = 2^input_bits − 1``; unquantized
        ``v`` without a DAC), computed before a conv's inputs are unrolled, and currents as ADC steps:
        the constant ``V_read/(top·step)`` goes into the (small) conductance matrix instead of a pass
        over the activations."""
        bits = self.config.input_bits
        top = 1 if bits is None else 2**bits - 1
        u = (x * (top / cal.x_max)).clamp_(-top if cal.signed else 0, top)
        if bits is not None:
            u.round_()
        step = 1.0 if adc is None else adc.step  # currents are computed in ADC steps
        volt = self.card.read_voltage / (top * step)  # volts (in steps) per input code
        outs = []
        for chip, uk in enumerate(u.chunk(self.chips)):
            acc = self._read(uk.clamp_min(0.0) if cal.signed else uk, chip, adc, volt)
            if cal.signed:  # the negative part as a second read, subtracted digitally
                acc -= self._read(uk.neg_().clamp_min_(0.0), chip, adc, volt)
            outs.append(acc)
        acc = outs[0] if len(outs) == 1 else torch.cat(outs)
        factor = self.scale * (step * cal.x_max / (self.card.read_voltage * self.g_ref))
        if not self.is_conv:
            return self._outputs(acc.mul_(factor))
        acc = acc.mul_(factor.view(-1, 1, 1))
        return acc if self.slices == 1 else acc.unflatten(1, (self.cols, self.slices)).sum(2)

    def _read(self, codes: torch.Tensor, chip: int, adc: Adc | _Recorder | None, volt: float) -> torch.Tensor:
        """Digitised I_pos − I_neg (in ADC steps) of one chip for input codes ≥ 0 applied at ``volt``
        per code: one read (analog) or one per bit plane, shift-added (bitserial)."""
        cfg = self.config
        if cfg.encoding == "analog":
            return self._array(codes, chip, adc, volt)
        top = 2**cfg.input_bits - 1
        ints = codes.to(torch.int32)
        total = None
        for b in range(cfg.input_bits):
            plane = ((ints >> b) & 1).to(codes.dtype)
            d = self._array(plane, chip, adc, self.card.read_voltage / (adc.step if adc else 1.0))
            d.mul_(2**b / top)
            total = d if total is None else total.add_(d)
        return total

    def _array(self, u: torch.Tensor, chip: int, adc: Adc | _Recorder | None, volt: float) -> torch.Tensor:
        """One read of one chip: [N, rows] inputs of a linear layer (:meth:`_tiles`), or the input
        images of a conv layer, one ``conv2d`` per row tile over the channels it spans (channels-last)."""
        if not self.is_conv:
            return self._tiles(u, chip, adc, volt)
        u = u.contiguous(memory_format=torch.channels_last)
        u2 = None if self.w_noise is None else u.square()
        whole = len(self.banks) == 1
        total = None
        for bank in self.banks:
            ut = u if whole else u[:, bank.c0:bank.c1]
            currents = F.conv2d(ut, bank.read[chip] * volt, **self._conv_kwargs())  # [N, C', oh, ow]
            variance = None
            if bank.noise is not None:
                u2t = u2 if whole else u2[:, bank.c0:bank.c1]
                variance = F.conv2d(u2t, bank.noise[chip] * volt**2, **self._conv_kwargs())
            d = self._digitise(currents, variance, chip, adc, dim=1)
            total = d if total is None else total.add_(d)
        return total

    def _tiles(self, u: torch.Tensor, chip: int, adc: Adc | _Recorder | None, volt: float) -> torch.Tensor:
        """One read of one chip: inputs [N, rows] applied at ``volt`` each → per row tile column
        currents (+ read noise), ADC, digital I_pos − I_neg summed over the tiles [N, cols]. The whole
        tiles are one ``bmm`` over a strided view of ``u`` (no copy), the last partial tile another."""
        n = u.shape[0]
        tr = self.placement.array_rows
        whole = self.rows // tr if self.tiles > 1 else 0
        w_read = self.w_read[chip] * volt  # G·V per input unit: a small matrix, not the activations
        w_noise = None if self.w_noise is None else self.w_noise[chip] * volt**2
        u2 = None if w_noise is None else u.square()  # on the contiguous inputs: fast

        def tiles(m: torch.Tensor, r0: int, r1: int) -> torch.Tensor:  # [N, rows] → [tiles, N, rows of one]
            return m[:, r0:r1].view(n, -1, tr).transpose(0, 1) if r1 - r0 > tr else m[:, r0:r1].unsqueeze(0)

        def weights(m: torch.Tensor | None, r0: int, r1: int) -> torch.Tensor | None:
            return None if m is None else m[r0:r1].view(-1, min(tr, r1 - r0), m.shape[1])

        bounds = [(0, whole * tr)] if whole else []
        if whole * tr < self.rows:
            bounds.append((whole * tr, self.rows))  # the last, partial tile
        total = None
        for r0, r1 in bounds:
            currents = torch.bmm(tiles(u, r0, r1), weights(w_read, r0, r1))  # [tiles, N, C']
            variance = None if w_noise is None else torch.bmm(tiles(u2, r0, r1), weights(w_noise, r0, r1))
            d = self._digitise(currents, variance, chip, adc, dim=2)
            d = d[0] if len(d) == 1 else d.sum(0)
            total = d if total is None else total.add_(d)
        return total

    def _digitise(self, currents: torch.Tensor, variance: torch.Tensor | None, chip: int,
                  adc: Adc | _Recorder | None, dim: int) -> torch.Tensor:
        """Column currents (+ read noise of σ² = ``variance``) → ADC → digital I_pos − I_neg (scheme
        A: the pos and neg halves of ``dim``), in place where it can."""
        if variance is not None:  # σ = read_noise·sqrt(Σ V²G²) (read_noise² is in w_noise)
            currents.addcmul_(variance.sqrt_(), noise.randn_like(currents, self.read_gens[chip]))
        if adc is not None:
            currents = adc(currents)
        if self.config.scheme == "A":
            currents = currents.narrow(dim, 0, self.cell_cols) - currents.narrow(dim, self.cell_cols,
                                                                                 self.cell_cols)
        return currents


class ConverterObserver(nn.Module):
    """Stands in for an :class:`ArrayLayer` while its converters are calibrated on an ideal chip.

    Pass 1 records the largest |input| and whether inputs go negative, and returns the ideal mapped
    layer. After :meth:`inputs_done`, pass 2 runs the layer with that input range frozen and an
    identity ADC that records the largest ADC input. :meth:`converters` gives the frozen result."""

    def __init__(self, layer: ArrayLayer) -> None:
        super().__init__()
        self.layer = layer
        self.x_max, self.signed = 0.0, False
        self.recorder = _Recorder()
        self.fixed: Converters | None = None
        # per sample, for memory planning: array reads (output pixels of a conv) and input values
        self.positions, self.inputs = 1, layer.rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed is None:
            self.x_max = max(self.x_max, float(x.abs().max())) if x.numel() else self.x_max
            self.signed = self.signed or bool((x < 0).any())
            y = self.layer.ideal(x)
            if self.layer.is_conv:
                self.positions, self.inputs = y.shape[2] * y.shape[3], x[0].numel()
            return y
        return self.layer.compute(x, self.fixed, self.recorder)

    def inputs_done(self) -> None:
        self.fixed = Converters(self.x_max if self.x_max > 0 else 1.0, self.signed, 0.0)

    def converters(self) -> Converters:
        return Converters(self.x_max if self.x_max > 0 else 1.0, self.signed, self.recorder.full_scale)


def calibrate_layers(layers: Sequence[ArrayLayer], install: Callable[[Sequence[nn.Module]], None],
                     run: Callable[[], None]) -> list[ConverterObserver]:
    """Observe, then freeze: ``install`` puts modules in the layers' places, ``run`` drives data through.

    Pass 1 sets the input ranges; pass 2 (only where an ADC is simulated) the ADC ranges at those
    input ranges. Both on the ideal chip; the layers are put back frozen and reprogrammed ideal."""
    for layer in layers:
        layer.program_chips([None])
    observers = [ConverterObserver(layer) for layer in layers]
    install(observers)
    try:
        with torch.no_grad():
            run()
            if any(layer.config.adc_bits is not None for layer in layers):
                for obs in observers:
                    obs.inputs_done()
                run()
    finally:
        install(layers)
    for layer, obs in zip(layers, observers, strict=True):
        layer.freeze(obs.converters())
    return observers
