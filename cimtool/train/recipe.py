"""Training recipes: what a model's training does beyond ``fit``'s AdamW + warm-up + cosine.

``fit(..., recipe=R)`` calls, if given:

- ``R.param_groups(weight_decay)``: parameter groups, each with an ``lr_mult`` and its weight decay;
- ``R.begin_epoch(epoch, epochs)`` at the start of every epoch (1-based; also the first epoch after
  a resume), and reads ``R.lr_scale`` at every step;
- ``R.extra_loss()`` at every step, added to the loss;
- ``R.before_eval(batches)`` before each validation (``batches()``: train batches, seeded);
- ``R.after_epoch(val_acc)`` after it; ``R.state()`` / ``R.load_state(s)``: what a checkpoint keeps.

:class:`LbpRecipe` is the LBPNet seed's recipe (docs/lbpnet.md#training).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cimtool.models.lbpnet import LBPNet, RecipeConfig
from cimtool.train.batching import to_float

GUARD_SOFTEN = 1.25  # τ × this when the collapse guard fires
GUARD_MAX = 3.0  # … up to this multiple of the schedule's τ


def cosine(start: float, end: float, epoch0: int, epochs: int) -> float:
    """start → end over epochs 0 … epochs−1, half a cosine."""
    t = epoch0 / max(1, epochs - 1)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterator[torch.Tensor], n_batches: int) -> int:
    """Re-estimate every BatchNorm's running statistics as the cumulative average over ``n_batches``
    forward passes in train mode (the path the model is on); returns the batches used."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    used = 0
    try:
        for xb in batches:
            if used >= n_batches:
                break
            model(to_float(xb))
            used += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return used


@dataclass
class LbpRecipe:
    """Per-group learning rates, α/τ cosine schedules, freezing, the hard-finetune phase, gate
    regularisers, BN recalibration on the hard path and the collapse guard."""

    model: LBPNet
    cfg: RecipeConfig
    lr_scale: float = 1.0
    hard: bool = False
    tau_mult: float = 1.0  # the collapse guard's softening of τ
    history: list[float] = field(default_factory=list)  # val accuracies, for the guard
    events: list[dict[str, Any]] = field(default_factory=list)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        buckets: dict[str, list[nn.Parameter]] = {k: [] for k in self.cfg.groups}
        for name, p in self.model.named_parameters():
            if name.endswith("offsets_raw"):
                key = "offsets"
            elif name.endswith("lbp.alpha"):
                key = "alpha"
            elif name.endswith("gate_logits"):
                key = "gates"
            elif name.startswith("head."):
                key = "head"
            else:
                key = "base"
            buckets[key].append(p)
        return [{"params": ps, "lr_mult": self.cfg.groups[k][0],
                 "weight_decay": weight_decay * self.cfg.groups[k][1], "name": k}
                for k, ps in buckets.items() if ps]

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        e = epoch - 1  # 0-based, as the preset counts
        alpha = cosine(*self.cfg.alpha_schedule, e, epochs)
        tau = min(self.cfg.tau_schedule[0], cosine(*self.cfg.tau_schedule, e, epochs) * self.tau_mult)
        self.hard = e >= self.cfg.hard_start_epoch
        self.lr_scale = self.cfg.hard_lr_mult if self.hard else 1.0
        with torch.no_grad():
            for lbp in self.model.lbp_layers():
                lbp.alpha.fill_(alpha)
                lbp.frozen = e < self.cfg.freeze_offsets_epochs
            for rp in self.model.rp_layers():
                rp.tau.fill_(tau)
                rp.frozen = e < self.cfg.gates_frozen_epochs

    def extra_loss(self) -> torch.Tensor:
        """Alive-ratio regulariser w·(alive − target)², alive = the share of RP outputs that are 1
        (its sigmoid surrogate, this step's batch), plus the gate margin w·mean(relu(m − |g|))."""
        rps = self.model.rp_layers()
        logits = torch.cat([rp.gate_logits for rp in rps])
        loss = self.cfg.gate_margin_weight * torch.relu(self.cfg.gate_margin - logits.abs()).mean()
        soft = [rp.soft_active for rp in rps if rp.soft_active is not None]  # none without the STE
        if soft:
            loss = loss + self.cfg.alive_weight * (torch.stack(soft).mean() - self.cfg.alive_target) ** 2
        return loss

    def alive(self) -> float:
        """Share of RP outputs that were 1 in the last forward pass (validation, after an epoch)."""
        return float(torch.stack([rp.active for rp in self.model.rp_layers()]).mean())

    def gates_open(self) -> float:
        return float(torch.cat([(rp.gate_logits > 0).float() for rp in self.model.rp_layers()]).mean())

    def before_eval(self, batches: Callable[[], Iterator[torch.Tensor]]) -> None:
        """BN statistics of the weights as they are, from train batches: ``bn_recal_batches`` in the
        hard phase, a quarter of them before (running averages lag weights that move fast)."""
        n = self.cfg.bn_recal_batches if self.hard else max(1, self.cfg.bn_recal_batches // 4)
        recalibrate_bn(self.model, batches(), n)

    def after_epoch(self, epoch: int, val_acc: float) -> None:
        """Collapse guard: when val accuracy falls more than ``acc_drop_thr`` below the best of the
        window while more than ``alive_upper`` of the gates are open, soften τ."""
        self.history = (self.history + [val_acc])[-self.cfg.collapse_window:]
        if not self.cfg.collapse_guard or len(self.history) < 2:
            return
        best = max(self.history)
        if val_acc < (1 - self.cfg.acc_drop_thr) * best and self.alive() > self.cfg.alive_upper:
            self.tau_mult = min(GUARD_MAX, self.tau_mult * GUARD_SOFTEN)
            self.events.append({"epoch": epoch, "val_acc": val_acc, "alive": self.alive(),
                                "tau_mult": self.tau_mult})

    def epoch_metrics(self) -> dict[str, Any]:
        lbp, rp = self.model.lbp_layers()[0], self.model.rp_layers()[0]
        return {"alpha": float(lbp.alpha.detach()), "tau": float(rp.tau), "alive": self.alive(),
                "gates_open": self.gates_open(), "hard": self.hard}

    def state(self) -> dict[str, Any]:
        return {"tau_mult": self.tau_mult, "history": self.history, "events": self.events}

    def load_state(self, state: dict[str, Any]) -> None:
        self.tau_mult, self.history, self.events = state["tau_mult"], state["history"], state["events"]
