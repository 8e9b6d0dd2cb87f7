"""WAGE quantizers and NeuroSim's nonlinear LTP/LTD weight update (DNN+NeuroSim V2.1 wage_quantizer.py).

Weights live in the device's normalised range ``[−1, 1]``. Formulas (docs/physics.md#wage-quantizers):
``S(b) = 2^(b−1)``, ``C(x, b) = clamp(x, −1+1/S, 1−1/S)``, ``Q(x, b) = round(x·S)/S``,
``SR(x) = floor(x + U[0,1))``, ``W(x, g, b, σ) = C(x + N(0, 2σ)·sign|g|, b)``,
``NonlinearWeight(p, A, B) = B(1 − e^(−p/A)) − 1``, ``InvNonlinearWeight(w, A, B) = −A·ln(1 − (w+1)/B)``,
``B = 2/(1 − e^(−N/A))``. ``QG`` turns a gradient into pulses ``Δp = round(g/2·N)``, moves the
device along its LTP or LTD curve and returns ``SR(origin − C(x_new))/S(b_G)``.

Unlike the reference code: every random draw takes an explicit ``torch.Generator`` (seeded, on the
tensors' device: the draws land where the weights are), an all-zero gradient returns a zero update
instead of failing an assert, and nothing here moves tensors between devices.
"""

from __future__ import annotations

import numpy as np
import torch

# NeuroSim labels a curve's nonlinearity NL by its largest vertical distance from the linear
# update, in units of the full range: NL = max_p (G(p) − p) / (0.07·√2) for the normalised curve
# G(p) = (1 − e^(−p/a))/(1 − e^(−1/a)), p ∈ [0, 1]. Solving it for a reproduces NeuroSim's
# GetParamA table (e.g. NL 1.75 → a = 0.70208, NL 1.46 → 0.84868, NL 0.01 → 126.27).
_NL_UNIT = 0.07 * np.sqrt(2.0)
NL_LINEAR = 0.01  # below this |NL| the update is linear (NeuroSim's table starts at 0.01)


def S(bits: int) -> float:
    return 2.0 ** (bits - 1)


def C(x: torch.Tensor, bits: int) -> torch.Tensor:
    delta = 0.0 if bits > 15 or bits == 1 else 1.0 / S(bits)
    return x.clamp(-1 + delta, 1 - delta)


def Q(x: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 1:
        return torch.sign(x)
    if bits > 15:
        return x
    return torch.round(x * S(bits)) / S(bits)


def SR(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Stochastic rounding: floor(x + U[0, 1)), unbiased."""
    return torch.floor(x + torch.rand(x.shape, generator=gen, dtype=x.dtype, device=x.device))


def shift(x: torch.Tensor) -> torch.Tensor:
    """The power of two nearest to x (x > 0)."""
    return 2.0 ** torch.round(torch.log2(x))


def QW(x: torch.Tensor, bits: int) -> torch.Tensor:
    return Q(C(x, bits), bits)


def QE(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Error (back-propagated gradient) quantizer: scaled by a power of two, clipped, rounded."""
    max_entry = x.abs().max()
    if max_entry == 0:  # guard: the reference asserts here
        return torch.zeros_like(x)
    return Q(C(x / shift(max_entry), bits), bits)


class _Rounding(torch.autograd.Function):
    """Forward Q(x, b_A) (b_A = −1: x); backward QE(error, b_E) (b_E = −1: the error as it is)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bits_a: int, bits_e: int) -> torch.Tensor:
        ctx.bits_e = bits_e
        return x.clone() if bits_a == -1 else Q(x, bits_a)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (grad if ctx.bits_e == -1 else QE(grad, ctx.bits_e)), None, None


def WAGEQuantizer_f(x: torch.Tensor, bits_a: int, bits_e: int) -> torch.Tensor:
    """A layer's output: clipped (C, the gradient stops outside) and rounded to ``bits_a``, its error
    rounded to ``bits_e`` on the way back (V2.1 wage_quantizer.py ``WAGEQuantizer_f``)."""
    if bits_a != -1:
        x = C(x, bits_a)
    return _Rounding.apply(x, bits_a, bits_e)


def W(x: torch.Tensor, grad: torch.Tensor, bits: int, sigma_c2c: float, gen: torch.Generator) -> torch.Tensor:
    """Cycle-to-cycle write noise on the updated cells only, then clip to the device range."""
    if sigma_c2c > 0:
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
        noise = noise * (2 * sigma_c2c)  # N(0, 2σ)
        x = x + noise * torch.sign(grad.abs())
    return C(x, bits)


def nonlinear_weight(pulses: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return b * (1 - torch.exp(-pulses / a)) - 1


def inv_nonlinear_weight(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return -a * torch.log(1 - (weight + 1) / b)


def get_param_b(a: torch.Tensor | float, max_level: int):
    """B = 2/(1 − e^(−N/A)): the curve spans [−1, 1] over N pulses."""
    return 2 / (1 - np.exp(-max_level / a)) if isinstance(a, float) else 2 / (1 - torch.exp(-max_level / a))


def _max_deviation(a: np.ndarray) -> np.ndarray:
    u = -np.expm1(-1.0 / a)  # 1 − e^(−1/a)
    return (1 - a * u) / u + a * np.log(a * u)  # at p* = −a·ln(a·u), where the slope is 1


def get_param_a(nl: np.ndarray | float) -> np.ndarray:
    """NeuroSim's GetParamA: NL → a = A/N (multiply by the pulse count for A), with NL's sign (V2.1
    wage_quantizer.py: ``A = sign(NL)·table(|NL|)``; a negative A bends the curve the other way,
    e.g. an LTD that falls fastest near g_max). inf = linear."""
    target = np.abs(np.asarray(nl, dtype=np.float64)) * _NL_UNIT
    lo, hi = np.full(target.shape, 1e-3), np.full(target.shape, 1e4)  # deviation falls as a grows
    for _ in range(100):  # bisection on log a
        mid = np.sqrt(lo * hi)
        too_linear = _max_deviation(mid) < target
        hi, lo = np.where(too_linear, mid, hi), np.where(too_linear, lo, mid)
    a = np.sqrt(lo * hi)
    nl = np.asarray(nl, dtype=np.float64)
    return np.where(np.abs(nl) < NL_LINEAR, np.inf, np.sign(nl) * a)


def nl_of_a(a: np.ndarray | float) -> np.ndarray:
    """The inverse of ``get_param_a``: NeuroSim's NL label of a curve with a = A/N (inf: 0, linear)."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a) & (a != 0)
    safe = np.where(finite, np.abs(a), 1.0)
    return np.where(finite, np.sign(a) * _max_deviation(safe) / _NL_UNIT, 0.0)


def QG(origin: torch.Tensor, bits_w: int, x: torch.Tensor, bits_g: int, lr: float,
       a_ltp: torch.Tensor, a_ltd: torch.Tensor, max_level_ltp: int, max_level_ltd: int,
       gen: torch.Generator) -> torch.Tensor:
    """The update a device can make for gradient ``x`` at weights ``origin`` (NeuroSim V2.1 ``QG``).

    ``a_ltp``/``a_ltd`` are A in pulses (per device; inf = a linear device)."""
    max_entry = x.abs().max()
    if max_entry == 0:  # guard the all-zero gradient (the reference asserts)
        return torch.zeros_like(x)
    gradient = lr * x / shift(max_entry)
    n_levels = max(max_level_ltp, max_level_ltd)
    delta_pulse = torch.round(gradient / 2 * n_levels)
    potentiate = delta_pulse < 0  # a negative gradient step raises the weight: LTP
    a = torch.where(potentiate, a_ltp, a_ltd)
    linear = torch.isinf(a)
    a_safe = torch.where(linear, torch.ones_like(a), a)
    b = torch.where(potentiate, get_param_b(a_safe, max_level_ltp), get_param_b(a_safe, max_level_ltd))
    x_pulse = inv_nonlinear_weight(origin.clamp(-1, 1), a_safe, b)
    x_new = nonlinear_weight(x_pulse - delta_pulse, a_safe, b)
    # a linear device moves 2/N per pulse
    steps = torch.where(potentiate, 2.0 / max_level_ltp, 2.0 / max_level_ltd)
    x_new = torch.where(linear, origin - delta_pulse * steps, x_new)
    return SR(origin - C(x_new, bits_w), gen) / S(bits_g)
