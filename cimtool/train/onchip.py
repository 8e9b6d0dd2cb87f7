"""On-chip training emulation (DNN+NeuroSim V2.1; docs/physics.md#on-chip-training): every weight
update is what the device can do for the gradient: momentum, pulses along the nonlinear LTP/LTD
curves, stochastic rounding, and cycle-to-cycle write noise on the cells that were written.

The crossbar layers' weights live in the device range [−1, 1] (``w``); the layer computes with
``α·QW(w)`` where ``α`` is a fixed per-layer scale (digital). A :class:`Recipe` says how the loop
does what V2.1's train.py leaves open or does its own way (``RECIPES``: ``cimtool``, the default,
and ``v21``, train.py's loop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from cimtool.nn import wage
from cimtool.nn.variation import vary_state
from cimtool.train.batching import TensorData, to_float
from cimtool.ui import Reporter


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction=reduction)


def sse(logits: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
    """0.5·Σ(logits − onehot(y))² (V2.1 wage_util.py ``SSE``; ``mean``: per sample)."""
    target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    total = 0.5 * ((logits - target) ** 2).sum()
    return total if reduction == "sum" else total / len(y)


@dataclass(frozen=True)
class Recipe:
    """What a training step does where cimtool's loop and V2.1's train.py differ; each field is one
    difference (docs/physics.md#on-chip-training lists them with train.py's lines)."""

    loss: Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]
    reduction: str  # over the mini-batch: "mean" or "sum"
    lr: float  # default QG gradient scale (--lr)
    renormalise_velocity: bool  # keep v / shift(max|v|) (V2.1's QG divides the velocity in place)
    reset_velocity: bool  # v ← 0 at the start of every epoch
    wage_bits: tuple[int, int] | None  # (activation, error) WAGE quantizers on every crossbar output
    realised_gradient: bool  # g = ∂L/∂(α·QW(w)) (V2.1's layers scale the gradient back); else ∂L/∂w
    one_max_level: bool  # one pulse count max(N_LTP, N_LTD) for both curves (V2.1's max_level)
    writes_after_updates: bool  # QG for every layer, last first, then every write (V2.1's order)
    old_is_intended: bool  # the recorded old weight is w + update (V2.1's oldWeight), else w before
    digital_biases: bool  # momentum SGD on the biases; else biases fixed at 0 (V2.1's have none)
    wage_init: bool  # V2.1's fresh weights and power-of-two layer scale (``wage_init``); else α = max|W|


RECIPES = {
    "cimtool": Recipe(loss=cross_entropy, reduction="mean", lr=0.25, renormalise_velocity=False,
                      reset_velocity=False, wage_bits=None, realised_gradient=False, one_max_level=False,
                      writes_after_updates=False, old_is_intended=False, digital_biases=True,
                      wage_init=False),
    # V2.1 train.py's defaults: --grad_scale 1, --wl_activate 8, --wl_error 8
    "v21": Recipe(loss=sse, reduction="sum", lr=1.0, renormalise_velocity=True, reset_velocity=True,
                  wage_bits=(8, 8), realised_gradient=True, one_max_level=True, writes_after_updates=True,
                  old_is_intended=True, digital_biases=False, wage_init=False),
}
# train.py's loop on V2.1's own layer start (its constant is tuned for 5-bit weights)
RECIPES["v21_init"] = replace(RECIPES["v21"], wage_init=True)


def wage_init(module: nn.Module, bits: int) -> float:
    """Draw ``module``'s weight as V2.1's layers start (utee/wage_initializer.py ``wage_init_``, with
    the ``factor=1.0`` its QConv2d/QLinear pass) and return its layer scale α = 1/scale (V2.1's layers
    compute ``conv(x, Q(w))/scale``): L = √(3/fan_in), W_m = 1.5·16/2^(b−1), scale = max(2^round(log2
    (W_m/L)), 1), w ~ U(±max(W_m, L)) in device units, from torch's global generator as V2.1 draws."""
    fan_in = module.weight[0].numel()
    limit = float(np.sqrt(3.0 / fan_in))
    w_m = 1.5 * 16 / 2 ** (bits - 1)  # V2.1's constant "beta = 1.5*16", whatever the weight bits
    scale = max(2.0 ** round(float(np.log2(w_m / limit))), 1.0)
    with torch.no_grad():
        module.weight.uniform_(-max(w_m, limit), max(w_m, limit)).div_(scale)  # α·w: α a power of two
    return 1.0 / scale


def renormalised(v: torch.Tensor) -> torch.Tensor:
    """v / shift(max|v|): what V2.1's QG leaves in the velocity (``x /= shift(max_entry)`` on the
    tensor ``param.grad.data = velocity[j]`` aliases)."""
    max_entry = v.abs().max()
    return v if max_entry == 0 else v / wage.shift(max_entry)


@dataclass(frozen=True)
class OnchipConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1.0  # gradient scale into QG (pulses = round(lr·g/2·N))
    bias_lr: float = 0.05
    weight_bits: int = 7
    grad_bits: int = 5
    gamma: float = 0.9  # momentum (DNN+NeuroSim V2.1 train.py: γ = 0.9, α = 0.1)
    alpha: float = 0.1
    nl_ltp: float = 0.0
    nl_ltd: float = 0.0
    nl_d2d: float = 0.0  # device-to-device spread of NL
    pulses_ltp: int = 32
    pulses_ltd: int = 32
    c2c: float = 0.0  # σ of the write noise (the card's C2C)
    variation_model: str = "range"  # the card's: "range" (σ of the range, V2.1's W) or "lognormal"
    g_ratio: float = 0.0  # g_min/g_max: where a lognormal draw sits on the conductance scale
    seed: int = 0
    record_every: int = 1  # record the weights every this many epochs (and the last)
    recipe: str = "cimtool"  # a key of RECIPES
    lr_decay_epochs: tuple[int, ...] = (200, 250)  # V2.1 train.py --decreasing_lr


def grad_scale(cfg: OnchipConfig, epoch: int) -> float:
    """QG's gradient scale in (1-based) ``epoch``: ÷8 after each of ``cfg.lr_decay_epochs`` epochs
    (V2.1 train.py: ``if epoch in decreasing_lr: grad_scale = grad_scale / 8.0``, epochs from 0)."""
    return cfg.lr / 8.0 ** sum(d < epoch for d in cfg.lr_decay_epochs)


class DeviceDomain(nn.Module):
    """weight = α·QW(w) with a straight-through gradient to w."""

    def __init__(self, alpha: float, bits: int) -> None:
        super().__init__()
        self.alpha, self.bits = alpha, bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.alpha * (w + (wage.QW(w, self.bits) - w).detach())


def _pulse_a(nl, pulses: int, shape: torch.Size) -> torch.Tensor:
    """A in pulses (GetParamA · N) per device; inf for a linear device."""
    a = np.broadcast_to(wage.get_param_a(nl) * pulses, shape)
    return torch.from_numpy(np.ascontiguousarray(a)).float()


def _histogram(values: torch.Tensor, lo: float, hi: float, bins: int = 40) -> list[int]:
    return torch.histc(values.float(), bins=bins, min=lo, max=hi).long().tolist()


def logits_of(net: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    return torch.cat([net(to_float(x[i: i + batch_size])) for i in range(0, len(x), batch_size)])


class OnchipTrainer:
    """Device-level SGD on the crossbar layers of ``net`` (momentum → QG → W) by ``cfg.recipe``."""

    def __init__(self, net: nn.Module, layers: list[str], alphas: dict[str, float],
                 cfg: OnchipConfig) -> None:
        self.net, self.layers, self.cfg = net, layers, cfg
        self.recipe = RECIPES[cfg.recipe]
        self.device = next(net.parameters()).device
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.alphas = alphas
        self.lr = cfg.lr
        rng = np.random.default_rng(cfg.seed)
        pulses = ((max(cfg.pulses_ltp, cfg.pulses_ltd),) * 2 if self.recipe.one_max_level
                  else (cfg.pulses_ltp, cfg.pulses_ltd))
        self.pulses_ltp, self.pulses_ltd = pulses
        self.params, self.a_ltp, self.a_ltd, self.velocity = {}, {}, {}, {}
        for name in layers:
            module = net.get_submodule(name)
            w0 = (module.weight.detach() / alphas[name]).clamp(-1, 1)
            domain = DeviceDomain(alphas[name], cfg.weight_bits)
            parametrize.register_parametrization(module, "weight", domain)
            with torch.no_grad():
                module.parametrizations.weight.original.copy_(wage.C(w0, cfg.weight_bits))
            self.params[name] = module.parametrizations.weight.original
            shape = self.params[name].shape
            d2d = rng.normal(0.0, cfg.nl_d2d, size=shape) if cfg.nl_d2d > 0 else 0.0  # per device
            self.a_ltp[name] = _pulse_a(cfg.nl_ltp + d2d, self.pulses_ltp, shape).to(self.device)
            self.a_ltd[name] = _pulse_a(cfg.nl_ltd + d2d, self.pulses_ltd, shape).to(self.device)
            self.velocity[name] = torch.zeros(shape, device=self.device)
        biases = [m.bias for m in net.modules()
                  if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None]
        if self.recipe.digital_biases:
            self.bias_opt = torch.optim.SGD(biases, lr=cfg.bias_lr, momentum=cfg.gamma) if biases else None
        else:
            self.bias_opt = None
            with torch.no_grad():
                for bias in biases:
                    bias.zero_()
        self.hooks = []
        if self.recipe.wage_bits:  # V2.1 cifar/model.py: the last layer's activations are not rounded
            bits_a, bits_e = self.recipe.wage_bits
            for name in layers:
                a = -1 if name == layers[-1] else bits_a
                self.hooks.append(net.get_submodule(name).register_forward_hook(
                    lambda _m, _x, out, a=a: wage.WAGEQuantizer_f(out, a, bits_e)))
        self.deltas: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
        self.old: dict[str, torch.Tensor] = {}  # each layer's V2.1 oldWeight (Recipe.old_is_intended)

    def start_epoch(self, epoch: int) -> None:
        self.lr = grad_scale(self.cfg, epoch)
        if self.recipe.reset_velocity:
            self.velocity = {name: torch.zeros_like(v) for name, v in self.velocity.items()}

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One mini-batch; returns (summed loss, correct predictions)."""
        recipe = self.recipe
        x, y = x.to(self.device), y.to(self.device)
        logits = self.net(to_float(x))
        loss = recipe.loss(logits, y, recipe.reduction)
        self.net.zero_grad(set_to_none=True)
        loss.backward()
        if self.bias_opt is not None:
            self.bias_opt.step()
        with torch.no_grad():
            if recipe.writes_after_updates:  # V2.1 train.py: QG in named_parameters()[::-1], step, then W
                updates = {name: self._update(name) for name in self.layers[::-1]}
                for name, update in updates.items():
                    self._write(name, update)
            else:
                for name in self.layers:
                    self._write(name, self._update(name))
        total = float(loss.detach()) * (len(y) if recipe.reduction == "mean" else 1)
        return total, int((logits.argmax(1) == y).sum())

    def _update(self, name: str) -> torch.Tensor:
        """QG's update of one layer from its momentum."""
        cfg, w = self.cfg, self.params[name]
        grad = w.grad / self.alphas[name] if self.recipe.realised_gradient else w.grad
        self.velocity[name] = cfg.gamma * self.velocity[name] + cfg.alpha * grad
        if self.recipe.renormalise_velocity:
            self.velocity[name] = renormalised(self.velocity[name])
        return wage.QG(w, cfg.weight_bits, self.velocity[name], cfg.grad_bits, self.lr, self.a_ltp[name],
                       self.a_ltd[name], self.pulses_ltp, self.pulses_ltd, self.gen)

    def _write(self, name: str, update: torch.Tensor) -> None:
        w = self.params[name]
        before = w.detach().clone()
        w.copy_(self._written(w - update, update))
        self.old[name] = w + update if self.recipe.old_is_intended else before  # V2.1: param + grad
        self.deltas[name].append(update.flatten())

    def _written(self, target: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """The weights the written cells reach: the card's C2C on each (cimtool/nn/variation.py)."""
        cfg = self.cfg
        if cfg.variation_model == "range":  # V2.1's W: N(0, 2σ) over [−1, 1] is σ of the range
            return wage.W(target, update, cfg.weight_bits, cfg.c2c, self.gen)
        # w ∈ [−1, 1] is one device's state u = (w + 1)/2 between g_min and g_max (V2.1's mapping)
        noisy = 2 * vary_state((target + 1) / 2, cfg.c2c, cfg.variation_model, cfg.g_ratio, 1.0, self.gen) - 1
        return wage.C(torch.where(update != 0, noisy, target), cfg.weight_bits)

    def distributions(self, epoch: int) -> list[dict[str, Any]]:
        """NeuroSim V2.1's weight_dist / delta_dist of this epoch (and resets the update record)."""
        rows = []
        d_max = 2.0 / wage.S(self.cfg.grad_bits)
        for name in self.layers:
            d = torch.cat(self.deltas[name]) if self.deltas[name] else torch.zeros(1)
            for kind, values, lo, hi in (("weight", self.params[name].detach(), -1.0, 1.0),
                                         ("delta", d, -d_max, d_max)):
                rows.append({"epoch": epoch, "layer": name, "kind": kind,
                             "mean": float(values.mean()), "std": float(values.std()),
                             "fraction_zero": float((values == 0).double().mean()),
                             "lo": lo, "hi": hi, "counts": _histogram(values, lo, hi)})
            self.deltas[name] = []
        return rows

    def realised(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's realised weight α·QW(w) now and its old weight (before the latest update, or
        V2.1's w + update): DNN+NeuroSim V2.1 train.py's weight and ``oldWeight``, the weight and
        weightOld files of an epoch."""
        out = {}
        with torch.no_grad():
            for name in self.layers:
                domain = self.net.get_submodule(name).parametrizations.weight[0]
                w = self.params[name].detach()
                out[name] = (domain(w).cpu().contiguous(), domain(self.old.get(name, w)).cpu().contiguous())
        return out

    def finish(self) -> None:
        """Keep the realised weight α·QW(w) as each layer's plain weight (and drop the WAGE quantizers:
        the model computes as the array does)."""
        for hook in self.hooks:
            hook.remove()
        for name in self.layers:
            module = self.net.get_submodule(name)
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def train_onchip(net: nn.Module, layers: list[str], alphas: dict[str, float], train: TensorData,
                 val: TensorData, cfg: OnchipConfig, reporter: Reporter) -> tuple[list, list, dict]:
    """Train ``net`` (a crossbar head on features, or a whole CNN on images) in place.

    Returns (per-epoch metrics, distribution rows, epoch → layer → ``OnchipTrainer.realised()`` of
    every ``cfg.record_every``-th epoch and the last)."""
    trainer = OnchipTrainer(net, layers, alphas, cfg)
    metrics: list[dict[str, Any]] = []
    dists: list[dict[str, Any]] = []
    recorded: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    with reporter.progress() as progress:
        task = progress.add_task("onchip", total=cfg.epochs, status="")
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            trainer.start_epoch(epoch)
            order = torch.randperm(len(train), generator=trainer.gen, device=trainer.device)
            order = order.to(train.x.device)
            loss_sum, correct = 0.0, 0
            for start in range(0, len(train), cfg.batch_size):
                idx = order[start: start + cfg.batch_size]
                batch_loss, batch_correct = trainer.step(train.x[idx], train.y[idx])
                loss_sum, correct = loss_sum + batch_loss, correct + batch_correct
            net.eval()
            with torch.no_grad():
                val_logits = logits_of(net, val.x.to(trainer.device))
            val_y = val.y.to(trainer.device)
            val_acc = float((val_logits.argmax(1) == val_y).double().mean())
            metrics.append({"phase": "onchip", "epoch": epoch, "train_loss": loss_sum / len(train),
                            "train_acc": correct / len(train),
                            "val_loss": float(trainer.recipe.loss(val_logits, val_y, "mean")),
                            "val_acc": val_acc, "lr": trainer.lr})
            dists += trainer.distributions(epoch)
            if epoch % cfg.record_every == 0 or epoch == cfg.epochs:
                recorded[epoch] = trainer.realised()
            progress.update(task, advance=1, status=f"val {val_acc:.4f}")
    trainer.finish()
    return metrics, dists, recorded
