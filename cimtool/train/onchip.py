"""On-chip training emulation (DNN+NeuroSim V2.1, seed 001): every weight update is what the
device can do for the gradient: momentum, pulses along the nonlinear LTP/LTD curves, stochastic
rounding, and cycle-to-cycle write noise on the cells that were written.

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
from cimtool.train.batching import TensorData
from cimtool.ui import Reporter


@dataclass(frozen=True)
class OnchipConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1.0  # gradient scale into QG (pulses = round(lr·g/2·N))
    bias_lr: float = 0.05
    weight_bits: int = 7
    grad_bits: int = 5
    gamma: float = 0.9  # momentum (seed 001: γ = 0.9, α = 0.1)
    alpha: float = 0.1
    nl_ltp: float = 0.0
    nl_ltd: float = 0.0
    nl_d2d: float = 0.0  # device-to-device spread of NL
    pulses_ltp: int = 32
    pulses_ltd: int = 32
    c2c: float = 0.0  # σ of the write noise, as a fraction of the range
    seed: int = 0


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


def train_onchip(head: nn.Module, layers: list[str], alphas: dict[str, float], train: TensorData,
                 val: TensorData, cfg: OnchipConfig, reporter: Reporter) -> tuple[list, list]:
    """Train ``head`` (inputs: features) in place. Returns (per-epoch metrics, distribution rows)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    params, a_ltp, a_ltd, velocity = {}, {}, {}, {}
    for name in layers:
        module = head.get_submodule(name)
        w0 = (module.weight.detach() / alphas[name]).clamp(-1, 1)
        parametrize.register_parametrization(module, "weight", DeviceDomain(alphas[name], cfg.weight_bits))
        with torch.no_grad():
            module.parametrizations.weight.original.copy_(wage.C(w0, cfg.weight_bits))
        params[name] = module.parametrizations.weight.original
        shape = params[name].shape
        d2d = rng.normal(0.0, cfg.nl_d2d, size=shape) if cfg.nl_d2d > 0 else 0.0  # per device
        a_ltp[name] = _pulse_a(cfg.nl_ltp + d2d, cfg.pulses_ltp, shape)
        a_ltd[name] = _pulse_a(cfg.nl_ltd + d2d, cfg.pulses_ltd, shape)
        velocity[name] = torch.zeros(shape)
    biases = [m.bias for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None]
    bias_opt = torch.optim.SGD(biases, lr=cfg.bias_lr, momentum=cfg.gamma)
    metrics: list[dict[str, Any]] = []
    dists: list[dict[str, Any]] = []
    with reporter.progress() as progress:
        task = progress.add_task("onchip", total=cfg.epochs, status="")
        for epoch in range(cfg.epochs):
            head.train()
            order = torch.randperm(len(train), generator=gen)
            loss_sum, correct, deltas = 0.0, 0, {n: [] for n in layers}
            for start in range(0, len(train), cfg.batch_size):
                idx = order[start: start + cfg.batch_size]
                logits = head(train.x[idx])
                loss = F.cross_entropy(logits, train.y[idx])
                head.zero_grad(set_to_none=True)
                loss.backward()
                loss_sum += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == train.y[idx]).sum())
                bias_opt.step()
                with torch.no_grad():
                    for name in layers:
                        w = params[name]
                        velocity[name] = cfg.gamma * velocity[name] + cfg.alpha * w.grad
                        update = wage.QG(w, cfg.weight_bits, velocity[name], cfg.grad_bits, cfg.lr,
                                         a_ltp[name], a_ltd[name], cfg.pulses_ltp, cfg.pulses_ltd, gen)
                        w.copy_(wage.W(w - update, update, cfg.weight_bits, cfg.c2c, gen))
                        deltas[name].append(update.flatten())
            head.eval()
            with torch.no_grad():
                val_logits = head(val.x)
            val_acc = float((val_logits.argmax(1) == val.y).double().mean())
            metrics.append({"phase": "onchip", "epoch": epoch + 1, "train_loss": loss_sum / len(train),
                            "train_acc": correct / len(train),
                            "val_loss": float(F.cross_entropy(val_logits, val.y)), "val_acc": val_acc,
                            "lr": cfg.lr})
            for name in layers:  # the seed's weight_dist / delta_dist, per epoch
                d = torch.cat(deltas[name])
                d_max = 2.0 / wage.S(cfg.grad_bits)
                for kind, values, lo, hi in (("weight", params[name].detach(), -1.0, 1.0),
                                             ("delta", d, -d_max, d_max)):
                    dists.append({"epoch": epoch + 1, "layer": name, "kind": kind,
                                  "mean": float(values.mean()), "std": float(values.std()),
                                  "fraction_zero": float((values == 0).double().mean()),
                                  "lo": lo, "hi": hi, "counts": _histogram(values, lo, hi)})
            progress.update(task, advance=1, status=f"val {val_acc:.4f}")
    for name in layers:  # keep the realised weight α·QW(w) as the model's weight
        parametrize.remove_parametrizations(head.get_submodule(name), "weight", leave_parametrized=True)
    return metrics, dists
