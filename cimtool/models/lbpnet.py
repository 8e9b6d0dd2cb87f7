"""LBPNet: local binary patterns and random projection instead of multiply-accumulates
(docs/lbpnet.md; Lin, Yang, Gupta, Tu, "Local Binary Pattern Networks", WACV 2020).

One stage (:class:`MacFreeBlock`): input [B, C, H, W] →

1. **LBP** (:class:`LBPLayer`): P·N learnable offsets in a ``window`` (shared by every channel);
   point q compares every channel c at the offset with that channel's pivot,
   b_{q,c} = 1[x_c(i+dy_q, j+dx_q) > x_c(i, j)], and counts the ones over the channels (popcount):
   n_q = Σ_c b_{q,c}. Offsets are rounded to whole pixels in the forward pass (memory reads).
2. **Gates**: one learnable logit per point, open when > 0 (hard).
3. **RP fusion** (:class:`RPFusion`): each output channel reads a fixed, seeded set of
   ``n_bits_per_out`` = k of the P·N gated points, adds their counts and fires when the sum reaches
   θ·C_in (θ = ⌈k/2⌉ unless set): one bit per output channel and pixel.
4. BN → 2×2 average pool where the preset downsamples → + 1×1 shortcut (C_in → C_out, a dense
   layer off the paper's count) → ReLU.

The forward pass is the hard path, in training too: offsets rounded to whole pixels, 0/1
comparisons, popcounts, gates and thresholds. Gradients are straight-through: a sigmoid of slope
1/α for the comparisons, 1/τ for gates and thresholds, the image gradient at the sample for the
offsets. The
head (global average pool → Linear → BN → ReLU → Linear) is the crossbar part; stages stay
digital (``off_array``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cimtool.errors import CimtoolError
from cimtool.models.cnn import Normalize

# --- configuration (every field of the seed's preset) ----------------------------------------------

@dataclass(frozen=True)
class LbpLayerConfig:
    num_patterns: int = 2  # P: sets of sampling points per pixel
    num_points: int = 8  # N: points per pattern (classic LBP-8)
    window: int = 3  # the points lie within window × window around the pivot
    share_across_channels: bool = True  # one set of offsets for every input channel
    mode: str = "bits"  # the layer outputs bits
    alpha_init: float = 0.2  # comparison temperature (STE slope 1/α)
    learn_alpha: bool = True
    offset_init_std: float = 0.8  # px, Gaussian around the pivot
    offset_init: str = "gaussian"  # "gaussian" (the seed's) or "ring": evenly around the square ring


@dataclass(frozen=True)
class RpConfig:
    n_bits_per_out: int = 4  # k: gated bits each output channel counts
    seed: int = 42  # of the fixed routing
    threshold: int | None = None  # popcount ≥ threshold → 1; None: ⌈k/2⌉
    tau: float = 3.0  # gate / threshold temperature (STE slope 1/τ)
    use_ste: bool = True
    gate_logits_init: float = 0.3  # positive: gates start open


@dataclass(frozen=True)
class BlocksConfig:
    stages: int = 3
    channels_per_stage: tuple[int, ...] = (39, 40, 80)
    downsample_at: tuple[int, ...] = (1, 2)  # stages followed by a 2× average pool (0-based)
    fusion_type: str = "rp_paper"


@dataclass(frozen=True)
class HeadConfig:
    hidden: int = 256
    dropout_rate: float = 0.0
    use_bn: bool = True


@dataclass(frozen=True)
class RecipeConfig:
    """The seed's training recipe (train-ann applies it to --model lbpnet)."""

    epochs: int = 300
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 5.0
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    augment_crop_pad: int = 2  # random shifts of up to 2 px (the seed's 2° rotation is not applied)
    # (lr multiplier, weight-decay multiplier) per parameter group
    groups: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "offsets": (5.0, 0.0), "alpha": (1.0, 0.0), "gates": (3.0, 0.0), "head": (0.7, 1.0),
        "base": (1.0, 1.0)})
    alpha_schedule: tuple[float, float] = (1.5, 0.10)  # cosine, first → last epoch
    tau_schedule: tuple[float, float] = (3.0, 0.90)
    freeze_offsets_epochs: int = 8  # offsets and α frozen for the first epochs
    freeze_gates_extra_epochs: int = 4  # gates: that many more
    freeze_gate_epochs: int = 10  # gates: at least this many
    collapse_guard: bool = True
    collapse_window: int = 5
    acc_drop_thr: float = 0.05
    alive_upper: float = 0.26
    hard_start_epoch: int = 260  # hard-finetune phase: rounded offsets, lr × hard_lr_mult
    hard_lr_mult: float = 0.1
    bn_recal_batches: int = 200  # train batches that re-estimate BN statistics on the hard path
    alive_target: float = 0.5
    alive_weight: float = 1e-3
    gate_margin: float = 1.0
    gate_margin_weight: float = 1e-3
    amp: bool = True  # bf16 autocast where the device has it (CUDA)

    def scaled(self, epochs: int) -> RecipeConfig:
        """The recipe for ``epochs`` epochs: its epoch-based points scale with the preset's length."""
        if epochs == self.epochs:
            return self
        s = epochs / self.epochs
        return replace(self, epochs=epochs, warmup_epochs=self.warmup_epochs * s,
                       freeze_offsets_epochs=round(self.freeze_offsets_epochs * s),
                       freeze_gates_extra_epochs=round(self.freeze_gates_extra_epochs * s),
                       freeze_gate_epochs=round(self.freeze_gate_epochs * s),
                       hard_start_epoch=min(epochs, max(1, round(self.hard_start_epoch * s))))

    @property
    def gates_frozen_epochs(self) -> int:
        return max(self.freeze_gate_epochs, self.freeze_offsets_epochs + self.freeze_gates_extra_epochs)


@dataclass(frozen=True)
class LbpNetConfig:
    lbp: LbpLayerConfig = field(default_factory=LbpLayerConfig)
    rp: RpConfig = field(default_factory=RpConfig)
    blocks: BlocksConfig = field(default_factory=BlocksConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LbpNetConfig:
        def make(kind, values):
            out = {}
            for f in fields(kind):
                if f.name in values:
                    v = values[f.name]
                    out[f.name] = tuple(tuple(x) if isinstance(x, list) else x for x in v) \
                        if isinstance(v, list) else v
            return kind(**out)

        recipe = dict(d.get("recipe", {}))
        if "groups" in recipe:
            recipe["groups"] = {k: tuple(v) for k, v in recipe["groups"].items()}
        return cls(make(LbpLayerConfig, d.get("lbp", {})), make(RpConfig, d.get("rp", {})),
                   make(BlocksConfig, d.get("blocks", {})), make(HeadConfig, d.get("head", {})),
                   make(RecipeConfig, recipe))

    def validate(self) -> None:
        lbp, rp, blocks = self.lbp, self.rp, self.blocks
        if lbp.window < 3 or lbp.window % 2 == 0:
            raise CimtoolError(f"lbp window must be an odd number >= 3, got {lbp.window}")
        if not 1 <= lbp.num_points <= lbp.window**2 - 1:
            raise CimtoolError(f"lbp num_points must be in [1, window² − 1 = {lbp.window**2 - 1}] (the "
                               f"points of a {lbp.window}x{lbp.window} window besides the pivot), got "
                               f"{lbp.num_points}")
        if lbp.num_patterns < 1:
            raise CimtoolError(f"lbp num_patterns must be >= 1, got {lbp.num_patterns}")
        if lbp.offset_init not in ("gaussian", "ring"):
            raise CimtoolError(f"lbp offset_init must be gaussian or ring, got '{lbp.offset_init}'")
        if not lbp.share_across_channels or lbp.mode != "bits":
            raise CimtoolError("lbp: only share_across_channels = true and mode = 'bits' are implemented")
        bits = lbp.num_patterns * lbp.num_points
        if not 1 <= rp.n_bits_per_out <= bits:
            raise CimtoolError(f"rp n_bits_per_out must be in [1, num_patterns·num_points = {bits}], got "
                               f"{rp.n_bits_per_out}")
        if rp.threshold is not None and not 1 <= rp.threshold <= rp.n_bits_per_out:
            raise CimtoolError(f"rp threshold must be in [1, n_bits_per_out], got {rp.threshold}")
        if len(blocks.channels_per_stage) != blocks.stages or min(blocks.channels_per_stage, default=0) < 1:
            raise CimtoolError(f"blocks channels_per_stage {list(blocks.channels_per_stage)} must list "
                               f"{blocks.stages} positive channel counts (one per stage)")
        if any(not 0 <= s < blocks.stages for s in blocks.downsample_at):
            raise CimtoolError(f"blocks downsample_at {list(blocks.downsample_at)} names a stage outside "
                               f"0..{blocks.stages - 1}")
        if blocks.fusion_type != "rp_paper":
            raise CimtoolError(f"blocks fusion_type '{blocks.fusion_type}': only rp_paper is implemented")
        if self.recipe.epochs < 1:
            raise CimtoolError(f"epochs must be >= 1, got {self.recipe.epochs}")


_SECTIONS = {"lbp": LbpLayerConfig, "rp": RpConfig, "blocks": BlocksConfig, "head": HeadConfig,
             "recipe": RecipeConfig}


def _parse_value(text: str, default: Any, where: str) -> Any:
    """``text`` as the type of the field's ``default``."""
    text = text.strip()
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if isinstance(default, tuple):
            kind = type(default[0]) if default else int
            return tuple(kind(v) for v in text.split(",") if v.strip())
        if default is None:  # rp.threshold: a whole number or none
            return None if text.lower() == "none" else int(text)
        if isinstance(default, int | float | str):
            return type(default)(text)
    except ValueError:
        raise CimtoolError(f"--lbp-set {where}={text}: not a {type(default).__name__}") from None
    raise CimtoolError(f"--lbp-set {where}: cannot be set from the command line")


def with_overrides(cfg: LbpNetConfig, assignments: tuple[str, ...] | list[str]) -> LbpNetConfig:
    """``cfg`` with ``section.field=value`` assignments applied (--lbp-set), then validated."""
    for item in assignments:
        key, sep, value = item.partition("=")
        section, _, name = key.strip().partition(".")
        name, _, entry = name.partition(".")  # recipe.groups.<group>: one entry of a table
        known = section in _SECTIONS and name in {f.name for f in fields(_SECTIONS[section])}
        part = getattr(cfg, section) if known else None
        current = getattr(part, name) if known else None
        table = isinstance(current, dict)
        if not (sep and known) or table != bool(entry) or (table and entry not in current):
            known = ", ".join(f"{s}.<field>" for s in _SECTIONS)
            raise CimtoolError(f"--lbp-set '{item}': expected section.field=value with a known field "
                               f"({known}, recipe.groups.<group>=lr_mult,wd_mult; docs/lbpnet.md lists "
                               "them)")
        if entry:
            try:
                v = tuple(float(x) for x in value.split(","))
            except ValueError:
                v = ()
            if len(v) != 2:
                raise CimtoolError(f"--lbp-set {key.strip()}={value}: expected lr_mult,wd_mult (two numbers)")
            part = replace(part, **{name: {**current, entry: v}})
        else:
            part = replace(part, **{name: _parse_value(value, current, key.strip())})
        cfg = replace(cfg, **{section: part})
    cfg.validate()
    return cfg


PRESETS: dict[str, LbpNetConfig] = {
    # the seed's paper_mnist_rp_full60k: 31,629 parameters (reference count), k = 4
    "paper_mnist_rp": LbpNetConfig(),
    # its 2025-09-08 update: 8 bits per output, for the paper's ~0.0007 GOPs budget
    "paper_mnist_rp_k8": LbpNetConfig(rp=RpConfig(n_bits_per_out=8)),
    # cimtool's recipe for 2 CPU cores (docs/lbpnet.md#presets): the preset's architecture and cost,
    # RP threshold 1 of k·C_in (θ = 2 leaves 96 % of the outputs 0), offsets fixed on the ring of
    # neighbours (learning them made 30-epoch runs noisier and 2 points worse), gates fixed open, no
    # hard-finetune phase (the forward pass is hard throughout), peak lr 1e-2, 5 warm-up epochs of 30
    "paper_mnist_rp_cpu": LbpNetConfig(
        lbp=LbpLayerConfig(offset_init="ring"), rp=RpConfig(threshold=1),
        recipe=RecipeConfig(epochs=30, lr=1e-2, warmup_epochs=5.0, freeze_offsets_epochs=30,
                            freeze_gate_epochs=30, hard_start_epoch=30)),
}
DEFAULT_PRESET = "paper_mnist_rp"


def preset(name: str) -> LbpNetConfig:
    if name not in PRESETS:
        raise CimtoolError(f"unknown --preset '{name}' (known: {', '.join(PRESETS)})")
    return PRESETS[name]


# --- layers ------------------------------------------------------------------------------------

def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """``hard`` in the forward pass (exactly: soft − soft is 0), the gradient of ``soft`` backward."""
    return hard.detach() + (soft - soft.detach())


def _window(padded: torch.Tensor, dx: int, dy: int, pad: int, h: int, w: int) -> torch.Tensor:
    """The image read at whole-pixel offset (dx, dy) from every pixel: a view of the padded image."""
    return padded[:, :, pad + dy:pad + dy + h, pad + dx:pad + dx + w]


# The LBP's elementwise work over [B, C, H, W], one offset at a time. Eager, or through
# torch.compile (LbpKernels.compiled: fused loops; tests/bench/bench_lbpnet.py measures the gain).

def _count(sample: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_c 1[sample > pivot]: [B, H, W]."""
    return (sample > x).sum(1, dtype=x.dtype)


def _slope(d: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """d sigmoid(d / α) / dd."""
    s = torch.sigmoid(d / alpha)
    return s * (1 - s) / alpha


def _surrogate(sample: torch.Tensor, x: torch.Tensor, grad: torch.Tensor, alpha: torch.Tensor):
    """(gradient to each difference d = sample − pivot, Σ of it · d) for the sigmoid(d / α) surrogate."""
    d = sample - x
    g = grad * _slope(d, alpha)
    return g, (g * d).sum()


def _surrogate_offsets(sample: torch.Tensor, x: torch.Tensor, grad: torch.Tensor, alpha: torch.Tensor,
                       right: torch.Tensor, left: torch.Tensor, down: torch.Tensor, up: torch.Tensor):
    """:func:`_surrogate`, and Σ_c slope · the central differences of the image at the sample
    (along x: (right − left)/2, along y: (down − up)/2), each [B, H, W]."""
    d = sample - x
    slope = _slope(d, alpha)
    g = grad * slope
    return g, (g * d).sum(), (slope * (right - left)).sum(1) / 2, (slope * (down - up)).sum(1) / 2


@dataclass(frozen=True)
class LbpKernels:
    """The functions the LBP and RP layers call for their elementwise work."""

    count: Any = _count
    surrogate: Any = _surrogate
    surrogate_offsets: Any = _surrogate_offsets

    @classmethod
    def compiled(cls) -> LbpKernels:
        """torch.compile of each (a new input shape compiles once more, then sizes are dynamic)."""
        return cls(*(torch.compile(f) for f in (_count, _surrogate, _surrogate_offsets)))


EAGER = LbpKernels()
# eager training step of paper_mnist_rp_cpu at 28×28 on 2 CPU cores: 1.0 s per 256 samples
# (tests/bench/bench_lbpnet.py; compiled kernels: 0.64 s)
EAGER_S_PER_SAMPLE = 1.0 / 256


class _Step(torch.autograd.Function):
    """1[z > 0] forward; backward the gradient of sigmoid(z / T) (to z, and to T when it learns)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, temperature: torch.Tensor, kernels: LbpKernels) -> torch.Tensor:
        ctx.save_for_backward(z, temperature)
        ctx.kernels = kernels
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, t = ctx.saved_tensors
        g, gz = ctx.kernels.surrogate(z, torch.zeros((), dtype=z.dtype, device=z.device), grad, t)
        return g, -(gz / t).reshape(t.shape) if ctx.needs_input_grad[1] else None, None


def step(z: torch.Tensor, temperature: torch.Tensor, surrogate: bool,
         kernels: LbpKernels = EAGER) -> torch.Tensor:
    """1[z > 0], with the sigmoid(z / T) straight-through gradient when ``surrogate``."""
    return _Step.apply(z, temperature, kernels) if surrogate else (z > 0).to(z.dtype)


def lbp_counts(x: torch.Tensor, rounded: tuple[tuple[int, int], ...], radius: int,
               kernels: LbpKernels = EAGER) -> torch.Tensor:
    """count_q(i, j) = Σ_c 1[x_c(i + dy_q, j + dx_q) > x_c(i, j)], edges replicated: [B, Q, H, W]."""
    h, w = x.shape[2:]
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    counts = {u: kernels.count(_window(padded, *u, radius, h, w), x) for u in set(rounded)}
    return torch.stack([counts[u] for u in rounded], 1)


class _ChannelLBP(torch.autograd.Function):
    """:func:`lbp_counts` with a straight-through backward: each comparison's gradient is that of
    sigmoid(d / α) (to the sample, the pivot and α), and an offset's is that surrogate times the
    image gradient at its sample (the paper's learned sampling points). Points that round to the
    same offset share one pass; only x is kept, the backward pass recomputes the differences."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, offsets: torch.Tensor, alpha: torch.Tensor,
                rounded: tuple[tuple[int, int], ...], radius: int, kernels: LbpKernels) -> torch.Tensor:
        ctx.save_for_backward(x, alpha)
        ctx.rounded, ctx.pad, ctx.kernels = rounded, radius + 1, kernels  # one more: image gradient
        return lbp_counts(x, rounded, radius, kernels)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, alpha = ctx.saved_tensors
        rounded, pad, kernels = ctx.rounded, ctx.pad, ctx.kernels
        h, w = x.shape[2:]
        padded = F.pad(x, (pad,) * 4, mode="replicate")
        want_x, want_off, want_alpha = ctx.needs_input_grad[:3]
        grad_padded = torch.zeros_like(padded) if want_x else None
        grad_off = torch.zeros(len(rounded), 2, dtype=x.dtype, device=x.device) if want_off else None
        grad_alpha = torch.zeros((), dtype=x.dtype, device=x.device)
        for u in dict.fromkeys(rounded):  # first-seen order: a fixed summation order
            points = [q for q, v in enumerate(rounded) if v == u]
            sample = _window(padded, *u, pad, h, w)
            shared = grad[:, points].sum(1, keepdim=True)
            if want_off:
                near = [_window(padded, u[0] + ax, u[1] + ay, pad, h, w)
                        for ax, ay in ((1, 0), (-1, 0), (0, 1), (0, -1))]
                g, gd, slope_x, slope_y = kernels.surrogate_offsets(sample, x, shared, alpha, *near)
                for q in points:
                    grad_off[q, 0] = (grad[:, q] * slope_x).sum()
                    grad_off[q, 1] = (grad[:, q] * slope_y).sum()
            else:
                g, gd = kernels.surrogate(sample, x, shared, alpha)
            grad_alpha -= gd / alpha  # d sigmoid(d/α) / dα = slope · (−d/α)
            if want_x:
                _window(grad_padded, *u, pad, h, w).add_(g)
                _window(grad_padded, 0, 0, pad, h, w).sub_(g)
        grad_x = torch.ops.aten.replication_pad2d_backward(grad_padded, x, [pad] * 4) if want_x else None
        return grad_x, grad_off, grad_alpha.reshape(alpha.shape) if want_alpha else None, None, None, None


def initial_offsets(cfg: LbpLayerConfig) -> torch.Tensor:
    """Raw offsets [P, N, (x, y)]. ``gaussian``: N(0, offset_init_std²), clamped to ±r (the seed's;
    draws from torch's generator). ``ring``: point n of pattern p at angle 2π(n + p/P)/N on the
    square ring 0.75·r from the pivot, so that whole-pixel reads start on distinct neighbours (a
    Gaussian start rounds several points onto the pivot, where they compare a pixel with itself)."""
    r = (cfg.window - 1) // 2
    if cfg.offset_init == "gaussian":
        return (torch.randn(cfg.num_patterns, cfg.num_points, 2) * cfg.offset_init_std).clamp(-r, r)
    p, n = torch.meshgrid(torch.arange(cfg.num_patterns), torch.arange(cfg.num_points), indexing="ij")
    angle = 2 * math.pi * (n + p / cfg.num_patterns) / cfg.num_points
    direction = torch.stack([torch.cos(angle), torch.sin(angle)], -1).double()
    offsets = 0.75 * r * direction / direction.abs().amax(-1, keepdim=True)
    return (r * torch.atanh(offsets / r)).float()  # offsets() = r·tanh(raw / r)


class LBPLayer(nn.Module):
    """P·N learnable sampling points shared by every input channel; per point and pixel, the count
    of channels whose sample is brighter than their pivot (a popcount of 0/1 comparisons)."""

    def __init__(self, cfg: LbpLayerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.radius = (cfg.window - 1) // 2
        self.offsets_raw = nn.Parameter(initial_offsets(cfg))  # [P, N, (x, y)], the same for every channel
        self.alpha = nn.Parameter(torch.tensor(float(cfg.alpha_init)), requires_grad=cfg.learn_alpha)
        self.frozen = False  # offsets and α get no gradient
        self.kernels = EAGER  # LBPNet.compile_kernels() swaps in compiled ones

    def offsets(self) -> torch.Tensor:
        """Continuous offsets in px, strictly inside (−r, r): r·tanh(raw / r)."""
        raw = self.offsets_raw.detach() if self.frozen else self.offsets_raw
        return self.radius * torch.tanh(raw / self.radius)

    def rounded_offsets(self) -> tuple[tuple[int, int], ...]:
        """Each point's whole-pixel offset (dx, dy): where the hard path reads."""
        return tuple((int(dx), int(dy)) for dx, dy in torch.round(self.offsets().detach()).view(-1, 2))

    def bits(self, x: torch.Tensor) -> torch.Tensor:
        """The comparisons themselves, 0/1: [B, P·N, C, H, W] (forward returns their sum over C)."""
        h, w = x.shape[2:]
        padded = F.pad(x, (self.radius,) * 4, mode="replicate")
        return torch.stack([(_window(padded, *u, self.radius, h, w) > x).to(x.dtype)
                            for u in self.rounded_offsets()], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] → per point the number of channels whose comparison is 1: [B, P·N, H, W]."""
        learning = self.training and torch.is_grad_enabled()
        if not learning:
            return lbp_counts(x, self.rounded_offsets(), self.radius, self.kernels)
        alpha = (self.alpha.detach() if self.frozen else self.alpha).clamp_min(1e-3)
        return _ChannelLBP.apply(x, self.offsets().view(-1, 2), alpha, self.rounded_offsets(), self.radius,
                                 self.kernels)


class RPFusion(nn.Module):
    """Gated points → fixed random routing of k points per output channel → popcount ≥ θ·C_in.

    Each point carries the count of its C_in channel comparisons, so an output counts k·C_in
    comparison bits and fires when at least θ·C_in of them are 1: for one input channel, k bits
    against θ; for many, the channel average of the k-bit popcount against θ."""

    def __init__(self, n_bits: int, in_channels: int, out_channels: int, cfg: RpConfig, stage: int) -> None:
        super().__init__()
        self.k, self.threshold = cfg.n_bits_per_out, cfg.threshold or math.ceil(cfg.n_bits_per_out / 2)
        self.in_channels = in_channels
        rng = np.random.default_rng([cfg.seed, stage])  # fixed by the preset's seed and the stage
        routing = np.stack([rng.choice(n_bits, size=self.k, replace=False) for _ in range(out_channels)])
        self.register_buffer("routing", torch.from_numpy(routing).long())  # [C_out, k]
        self.gate_logits = nn.Parameter(torch.full((n_bits,), float(cfg.gate_logits_init)))
        self.register_buffer("tau", torch.tensor(float(cfg.tau)))
        self.use_ste = cfg.use_ste
        self.frozen = False  # gates get no gradient
        self.kernels = EAGER  # LBPNet.compile_kernels() swaps in compiled ones
        self.active = torch.zeros(())  # share of 1 outputs in the last forward pass
        self.soft_active: torch.Tensor | None = None  # its differentiable surrogate (training)

    def gates(self) -> torch.Tensor:
        g = self.gate_logits.detach() if self.frozen else self.gate_logits
        hard = (g > 0).to(g.dtype)
        if not (self.training and self.use_ste and torch.is_grad_enabled()):
            return hard
        return straight_through(hard, torch.sigmoid(g / self.tau))

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        # popcount of each output's k routed, gated points; computed as counts · R with R the 0/1
        # routing matrix (exact small integers; the hardware adds, the simulator uses one matmul)
        routing = torch.zeros(counts.shape[1], len(self.routing), device=counts.device, dtype=counts.dtype)
        routing.scatter_(0, self.routing.T.to(counts.device), 1.0)
        total = torch.einsum("bihw,io->bohw", counts, routing * self.gates()[:, None].to(counts.dtype))
        # total ≥ θ·C for whole counts, exactly; the surrogate sees the channel average, centred
        # half a comparison below θ
        z = (total - (self.threshold * self.in_channels - 0.5)) / self.in_channels
        learning = self.training and self.use_ste and torch.is_grad_enabled()
        out = step(z, self.tau, learning, self.kernels)
        self.active = out.detach().mean()
        self.soft_active = torch.sigmoid(z / self.tau).mean() if learning else None
        return out


class MacFreeBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, downsample: bool, cfg: LbpNetConfig, stage: int) -> None:
        super().__init__()
        bits = cfg.lbp.num_patterns * cfg.lbp.num_points
        self.lbp = LBPLayer(cfg.lbp)
        self.fuse = RPFusion(bits, c_in, c_out, cfg.rp, stage)
        self.bn = nn.BatchNorm2d(c_out)
        self.pool = nn.AvgPool2d(2) if downsample else nn.Identity()
        self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()
        self.res_scale = nn.Parameter(torch.tensor(1.0))
        if isinstance(self.shortcut, nn.Conv2d):
            nn.init.kaiming_normal_(self.shortcut.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.pool(self.bn(self.fuse(self.lbp(x))))
        return F.relu(f * self.res_scale + self.shortcut(self.pool(x)))


class LBPNet(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, cfg: LbpNetConfig,
                 optical: nn.Module | None = None) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        channels = input_shape[0]
        self.input_hw = tuple(input_shape[1:])
        self.optical = optical or nn.Identity()  # sensor physics, as in ConvNet
        self.normalize = Normalize(channels)
        stages = []
        for i, c_out in enumerate(cfg.blocks.channels_per_stage):
            stages.append(MacFreeBlock(channels, c_out, i in cfg.blocks.downsample_at, cfg, i))
            channels = c_out
        self.stages = nn.Sequential(*stages)
        head: list[nn.Module] = [nn.Linear(channels, cfg.head.hidden)]
        if cfg.head.use_bn:
            head.append(nn.BatchNorm1d(cfg.head.hidden))
        head.append(nn.ReLU())
        if cfg.head.dropout_rate > 0:
            head.append(nn.Dropout(cfg.head.dropout_rate))
        head.append(nn.Linear(cfg.head.hidden, num_classes))
        self.head = nn.Sequential(*head)
        for m in self.head:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.normalize(self.optical(x))).mean(dim=(2, 3))  # global average pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def eager_estimate_s(self, samples: int, epochs: int) -> float:
        """Deterministic guess of an eager CPU training run (for fit's --compile auto)."""
        h, w = self.input_hw
        return EAGER_S_PER_SAMPLE * samples * epochs * h * w / (28 * 28)

    def compile_kernels(self) -> None:
        """Run the LBP layers' elementwise work through torch.compile (same values; faster on long
        runs, each new input shape compiles once)."""
        kernels = LbpKernels.compiled()
        for layer in self.lbp_layers() + self.rp_layers():
            layer.kernels = kernels

    # --- what the training recipe steers -------------------------------------------------------
    def lbp_layers(self) -> list[LBPLayer]:
        return [block.lbp for block in self.stages]

    def rp_layers(self) -> list[RPFusion]:
        return [block.fuse for block in self.stages]


# --- the paper's cost metric -----------------------------------------------------------------------

# Reference parameter count (the seed's 31,629): the reference implementation also builds, in each
# stage, a 1×1 conv from the P·N bits to C_out that its rp_paper forward never uses.
def reference_parameters(model: LBPNet) -> int:
    cfg = model.cfg
    bits = cfg.lbp.num_patterns * cfg.lbp.num_points
    return sum(p.numel() for p in model.parameters()) + bits * sum(cfg.blocks.channels_per_stage)


def stage_grids(cfg: LbpNetConfig, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(H, W, C_in, C_out) at which each stage's LBP and RP run (before its pooling)."""
    rows, c_in = [], 1
    for i, c_out in enumerate(cfg.blocks.channels_per_stage):
        rows.append((height, width, c_in, c_out))
        if i in cfg.blocks.downsample_at:
            height, width = height // 2, width // 2
        c_in = c_out
    return rows


def paper_cost(cfg: LbpNetConfig, height: int, width: int, in_channels: int = 1) -> list[dict[str, Any]]:
    """Per stage, the paper's count of LBP and RP work (docs/lbpnet.md#cost): comparisons =
    P·N·H·W (LBP) + C_out·H·W (RP thresholds); additions = P·N·H·W (sample − pivot) + (k−1)·C_out·H·W
    (popcounts); no multiplications; bytes = offsets (fp32) + routing map (int32)."""
    bits, k = cfg.lbp.num_patterns * cfg.lbp.num_points, cfg.rp.n_bits_per_out
    rows = []
    for i, (h, w, c_in, c_out) in enumerate(stage_grids(cfg, height, width)):
        c_in = in_channels if i == 0 else c_in
        ops = {"comparisons": bits * h * w + c_out * h * w,
               "additions": bits * h * w + (k - 1) * c_out * h * w, "multiplications": 0}
        rows.append({"layer": f"stages.{i}", "height": h, "width": w, "in_channels": c_in,
                     "out_channels": c_out, **ops, "gops": sum(ops.values()) / 1e9,
                     # by the same convention per input channel (the paper counts one comparison per
                     # point and pixel): C_in comparisons and subtractions, then C_in − 1 additions
                     "channel_comparisons": bits * c_in * h * w + c_out * h * w,
                     "channel_additions": bits * (2 * c_in - 1) * h * w + (k - 1) * c_out * h * w,
                     "lbp_bytes": bits * 2 * 4, "rp_bytes": c_out * k * 4,
                     "size_bytes": bits * 2 * 4 + c_out * k * 4})
    return rows


COST_TOTALS = ("comparisons", "additions", "multiplications", "lbp_bytes", "rp_bytes", "size_bytes",
               "channel_comparisons", "channel_additions")


def cost_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's totals over the stage rows of :func:`paper_cost`."""
    total = {k: sum(r[k] for r in rows) for k in COST_TOTALS}
    return {**total, "gops": (total["comparisons"] + total["additions"] + total["multiplications"]) / 1e9}
