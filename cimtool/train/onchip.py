"""On-chip training emulation (DNN+NeuroSim V2.1; docs/physics.md#on-chip-training): every weight
update is what the device can do for the gradient: momentum, pulses along the nonlinear LTP/LTD
curves, stochastic rounding, and cycle-to-cycle write noise on the cells that were written.

The crossbar layers' weights live in the device range [−1, 1] (``w``); the layer computes with
``α·QW(w)`` where ``α`` is a fixed per-layer scale (digital). Biases are digital and trained with
plain momentum SGD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from cimtool.nn import wage
from cimtool.train.batching import TensorData, to_float
from cimtool.ui import Reporter


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
    c2c: float = 0.0  # σ of the write noise, as a fraction of the range
    seed: int = 0
    record_every: int = 1  # record the weights every this many epochs (and the last)


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
    """Device-level SGD on the crossbar layers of ``net`` (momentum → QG → W), digital biases."""

    def __init__(self, net: nn.Module, layers: list[str], alphas: dict[str, float],
                 cfg: OnchipConfig) -> None:
        self.net, self.layers, self.cfg = net, layers, cfg
        self.gen = torch.Generator().manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
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
            self.a_ltp[name] = _pulse_a(cfg.nl_ltp + d2d, cfg.pulses_ltp, shape)
            self.a_ltd[name] = _pulse_a(cfg.nl_ltd + d2d, cfg.pulses_ltd, shape)
            self.velocity[name] = torch.zeros(shape)
        biases = [m.bias for m in net.modules()
                  if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None]
        self.bias_opt = torch.optim.SGD(biases, lr=cfg.bias_lr, momentum=cfg.gamma)
        self.deltas: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
        self.before: dict[str, torch.Tensor] = {}  # w before the latest update (V2.1's oldWeight)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One mini-batch; returns (summed loss, correct predictions)."""
        cfg = self.cfg
        logits = self.net(to_float(x))
        loss = F.cross_entropy(logits, y)
        self.net.zero_grad(set_to_none=True)
        loss.backward()
        self.bias_opt.step()
        with torch.no_grad():
            for name in self.layers:
                w = self.params[name]
                self.velocity[name] = cfg.gamma * self.velocity[name] + cfg.alpha * w.grad
                update = wage.QG(w, cfg.weight_bits, self.velocity[name], cfg.grad_bits, cfg.lr,
                                 self.a_ltp[name], self.a_ltd[name], cfg.pulses_ltp, cfg.pulses_ltd, self.gen)
                self.before[name] = w.detach().clone()
                w.copy_(wage.W(w - update, update, cfg.weight_bits, cfg.c2c, self.gen))
                self.deltas[name].append(update.flatten())
        return float(loss.detach()) * len(y), int((logits.argmax(1) == y).sum())

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
        """Each layer's realised weight α·QW(w) now and before the latest update (DNN+NeuroSim V2.1
        train.py's weight and ``oldWeight``: the weight and weightOld files of an epoch)."""
        out = {}
        with torch.no_grad():
            for name in self.layers:
                domain = self.net.get_submodule(name).parametrizations.weight[0]
                w = self.params[name].detach()
                out[name] = (domain(w).contiguous(), domain(self.before.get(name, w)).contiguous())
        return out

    def finish(self) -> None:
        """Keep the realised weight α·QW(w) as each layer's plain weight."""
        for name in self.layers:
            module = self.net.get_submodule(name)
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def train_onchip(net: nn.Module, layers: list[str], alphas: dict[str, float], train: TensorData,
                 val: TensorData, cfg: OnchipConfig, reporter: Reporter) -> tuple[list, list, dict]:
    """Train ``net`` (a crossbar head on features, or a whole CNN on images) in place.

    Returns (per-epoch metrics, distribution rows, epoch → layer → (weight, weight before the epoch's
    last update) of every ``cfg.record_every``-th epoch and the last)."""
    trainer = OnchipTrainer(net, layers, alphas, cfg)
    metrics: list[dict[str, Any]] = []
    dists: list[dict[str, Any]] = []
    recorded: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    with reporter.progress() as progress:
        task = progress.add_task("onchip", total=cfg.epochs, status="")
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            order = torch.randperm(len(train), generator=trainer.gen)
            loss_sum, correct = 0.0, 0
            for start in range(0, len(train), cfg.batch_size):
                idx = order[start: start + cfg.batch_size]
                batch_loss, batch_correct = trainer.step(train.x[idx], train.y[idx])
                loss_sum, correct = loss_sum + batch_loss, correct + batch_correct
            net.eval()
            with torch.no_grad():
                val_logits = logits_of(net, val.x)
            val_acc = float((val_logits.argmax(1) == val.y).double().mean())
            metrics.append({"phase": "onchip", "epoch": epoch, "train_loss": loss_sum / len(train),
                            "train_acc": correct / len(train),
                            "val_loss": float(F.cross_entropy(val_logits, val.y)), "val_acc": val_acc,
                            "lr": cfg.lr})
            dists += trainer.distributions(epoch)
            if epoch % cfg.record_every == 0 or epoch == cfg.epochs:
                recorded[epoch] = trainer.realised()
            progress.update(task, advance=1, status=f"val {val_acc:.4f}")
    trainer.finish()
    return metrics, dists, recorded
