"""LBPNet: local binary patterns and random projection instead of multiply-accumulates
(docs/lbpnet.md; Lin, Yang, Gupta, Tu, "Local Binary Pattern Networks", WACV 2020).

One stage (:class:`MacFreeBlock`): input [B, C, H, W] →

1. **LBP** (:class:`LBPLayer`): P·N learnable offsets in a ``window`` (shared by every channel);
   point q compares its channel c_q (fixed, seeded) at the offset with the pivot of that channel:
   b_q = 1[x_{c_q}(i+dy_q, j+dx_q) > x_{c_q}(i, j)], P·N bits per pixel. Offsets are rounded to
   whole pixels in the forward pass (memory reads).
2. **Gates**: one learnable logit per bit position, open when > 0 (hard); alive ratio = open share.
3. **RP fusion** (:class:`RPFusion`): each output channel reads a fixed, seeded set of
   ``n_bits_per_out`` of the P·N gated bits, counts them (popcount) and thresholds the count at
   ⌈k/2⌉: one bit per output channel and pixel.
4. BN → 2×2 average pool where the preset downsamples → + 1×1 shortcut (C_in → C_out, a dense
   layer off the paper's count) → ReLU.

The forward pass is the hard path, in training too: offsets rounded to whole pixels, 0/1 bits,
gates and thresholds. Gradients are straight-through: a sigmoid of slope 1/α for the comparisons,
1/τ for gates and thresholds, bilinear sampling at the continuous offsets for the offsets. The
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
        if not sep or section not in _SECTIONS or name not in {f.name for f in fields(_SECTIONS[section])}:
            known = ", ".join(f"{s}.<field>" for s in _SECTIONS)
            raise CimtoolError(f"--lbp-set '{item}': expected section.field=value with a known field "
                               f"({known}; docs/lbpnet.md lists them)")
        part = getattr(cfg, section)
        part = replace(part, **{name: _parse_value(value, getattr(part, name), key.strip())})
        cfg = replace(cfg, **{section: part})
    cfg.validate()
    return cfg


PRESETS: dict[str, LbpNetConfig] = {
    # the seed's paper_mnist_rp_full60k: 31,629 parameters (reference count), k = 4
    "paper_mnist_rp": LbpNetConfig(),
    # its 2025-09-08 update: 8 bits per output, for the paper's ~0.0007 GOPs budget
    "paper_mnist_rp_k8": LbpNetConfig(rp=RpConfig(n_bits_per_out=8)),
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


class _Step(torch.autograd.Function):
    """1[z > 0] forward; backward the gradient of sigmoid(z / T) (to z, and to T when it learns)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z, temperature)
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, t = ctx.saved_tensors
        s = torch.sigmoid(z / t)
        ds = grad * s * (1 - s)
        grad_t = -(ds * z).sum().reshape(t.shape) / (t * t) if ctx.needs_input_grad[1] else None
        return ds / t, grad_t


def step(z: torch.Tensor, temperature: torch.Tensor, surrogate: bool) -> torch.Tensor:
    """1[z > 0], with the sigmoid(z / T) straight-through gradient when ``surrogate``."""
    return _Step.apply(z, temperature) if surrogate else (z > 0).to(z.dtype)


class LBPLayer(nn.Module):
    """P·N comparisons per pixel, each of one input channel with itself at a learnable offset."""

    def __init__(self, cfg: LbpLayerConfig, in_channels: int, seed: int, stage: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.radius = (cfg.window - 1) / 2
        raw = (torch.randn(cfg.num_patterns, cfg.num_points, 2) * cfg.offset_init_std).clamp(
            -self.radius, self.radius)
        self.offsets_raw = nn.Parameter(raw)  # [P, N, (x, y)], the same for every channel
        self.alpha = nn.Parameter(torch.tensor(float(cfg.alpha_init)), requires_grad=cfg.learn_alpha)
        bits = cfg.num_patterns * cfg.num_points
        rng = np.random.default_rng([seed, stage, 1])  # which channel each point compares in
        chosen = rng.choice(in_channels, size=bits, replace=in_channels < bits)
        self.register_buffer("channels", torch.from_numpy(np.asarray(chosen)).long())
        self.frozen = False  # offsets and α get no gradient

    def offsets(self) -> torch.Tensor:
        """Continuous offsets in px, strictly inside (−r, r): r·tanh(raw / r)."""
        raw = self.offsets_raw.detach() if self.frozen else self.offsets_raw
        return self.radius * torch.tanh(raw / self.radius)

    def rounded_offsets(self) -> torch.Tensor:
        return torch.round(self.offsets().detach()).long().view(-1, 2)

    def _bilinear(self, xs: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
        """Point q's channel at (i + dy_q, j + dx_q), bilinear, edges replicated: [B, P·N, H, W]."""
        b, n, h, w = xs.shape
        ys = torch.linspace(-1, 1, h, device=xs.device, dtype=xs.dtype)
        xx = torch.linspace(-1, 1, w, device=xs.device, dtype=xs.dtype)
        gy, gx = torch.meshgrid(ys, xx, indexing="ij")
        off = off.view(-1, 2).to(xs.dtype)
        grid = torch.stack([gx[None] + off[:, 0, None, None] * 2 / max(w - 1, 1),
                            gy[None] + off[:, 1, None, None] * 2 / max(h - 1, 1)], dim=-1)  # [PN, H, W, 2]
        out = F.grid_sample(xs.reshape(b * n, 1, h, w), grid.repeat(b, 1, 1, 1), mode="bilinear",
                            padding_mode="border", align_corners=True)
        return out.view(b, n, h, w)

    def _shifted(self, xs: torch.Tensor) -> torch.Tensor:
        """Point q's channel at its whole-pixel offset (memory reads, edges replicated), one gather."""
        r = int(self.radius)
        b, n, h, w = xs.shape
        padded = F.pad(xs, (r, r, r, r), mode="replicate").reshape(b, n, -1)
        rows = torch.arange(h, device=xs.device)[:, None] + r
        cols = torch.arange(w, device=xs.device)[None, :] + r
        offs = self.rounded_offsets().to(xs.device)
        index = (rows[None] + offs[:, 1, None, None]) * (w + 2 * r) + cols[None] + offs[:, 0, None, None]
        return padded.gather(2, index.reshape(1, n, -1).expand(b, -1, -1)).view(b, n, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x[:, self.channels]  # [B, P·N, H, W]: each point's channel (its pivot is the same)
        learning = self.training and torch.is_grad_enabled()
        samples = self._shifted(xs)  # whole-pixel reads: the hard path, in training too
        if learning and not self.frozen:  # the offsets learn through bilinear sampling (STE)
            samples = straight_through(samples, self._bilinear(xs, self.offsets()))
        alpha = (self.alpha.detach() if self.frozen else self.alpha).clamp_min(1e-3)
        return step(samples - xs, alpha, learning)


class RPFusion(nn.Module):
    """Gated bits → fixed random routing of k bits per output channel → popcount ≥ θ."""

    def __init__(self, n_bits: int, out_channels: int, cfg: RpConfig, stage: int) -> None:
        super().__init__()
        self.k, self.threshold = cfg.n_bits_per_out, cfg.threshold or math.ceil(cfg.n_bits_per_out / 2)
        rng = np.random.default_rng([cfg.seed, stage])  # fixed by the preset's seed and the stage
        routing = np.stack([rng.choice(n_bits, size=self.k, replace=False) for _ in range(out_channels)])
        self.register_buffer("routing", torch.from_numpy(routing).long())  # [C_out, k]
        self.gate_logits = nn.Parameter(torch.full((n_bits,), float(cfg.gate_logits_init)))
        self.register_buffer("tau", torch.tensor(float(cfg.tau)))
        self.use_ste = cfg.use_ste
        self.frozen = False  # gates get no gradient
        self.active = torch.zeros(())  # share of 1 outputs in the last forward pass
        self.soft_active: torch.Tensor | None = None  # its differentiable surrogate (training)

    def gates(self) -> torch.Tensor:
        g = self.gate_logits.detach() if self.frozen else self.gate_logits
        hard = (g > 0).to(g.dtype)
        if not (self.training and self.use_ste and torch.is_grad_enabled()):
            return hard
        return straight_through(hard, torch.sigmoid(g / self.tau))

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        # popcount of each output's k routed, gated bits; computed as bits · R with R the 0/1 routing
        # matrix (exact small integers; the hardware counts, the simulator uses one matmul)
        routing = torch.zeros(bits.shape[1], len(self.routing), device=bits.device, dtype=bits.dtype)
        routing.scatter_(0, self.routing.T.to(bits.device), 1.0)
        count = torch.einsum("bihw,io->bohw", bits, routing * self.gates()[:, None].to(bits.dtype))
        # count ≥ θ for whole counts; the surrogate is centred between θ − 1 and θ
        z = count - (self.threshold - 0.5)
        learning = self.training and self.use_ste and torch.is_grad_enabled()
        out = step(z, self.tau, learning)
        self.active = out.detach().mean()
        self.soft_active = torch.sigmoid(z / self.tau).mean() if learning else None
        return out


class MacFreeBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, downsample: bool, cfg: LbpNetConfig, stage: int) -> None:
        super().__init__()
        bits = cfg.lbp.num_patterns * cfg.lbp.num_points
        self.lbp = LBPLayer(cfg.lbp, c_in, cfg.rp.seed, stage)
        self.fuse = RPFusion(bits, c_out, cfg.rp, stage)
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
        rows.append({
            "layer": f"stages.{i}", "height": h, "width": w, "in_channels": c_in, "out_channels": c_out,
            "comparisons": bits * h * w + c_out * h * w,
            "additions": bits * h * w + (k - 1) * c_out * h * w,
            "multiplications": 0,
            "lbp_bytes": bits * 2 * 4, "rp_bytes": c_out * k * 4,
            # outside the paper's count: the 1×1 shortcut (a dense layer)
            "shortcut_macs": (c_in * c_out * (h // 2) * (w // 2) if i in cfg.blocks.downsample_at
                              else c_in * c_out * h * w) if c_in != c_out else 0,
        })
    return rows


def cost_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    total = {k: sum(r[k] for r in rows) for k in ("comparisons", "additions", "multiplications",
                                                  "lbp_bytes", "rp_bytes", "shortcut_macs")}
    ops = total["comparisons"] + total["additions"] + total["multiplications"]
    return {**total, "size_bytes": total["lbp_bytes"] + total["rp_bytes"], "gops": ops / 1e9}
