"""The training loop: AdamW/SGD, warm-up + cosine, label smoothing, gradient clipping, bf16
autocast on CUDA, optional torch.compile, per-epoch checkpoints, best-val weights."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimtool.errors import CimtoolError
from cimtool.stats import mean_std
from cimtool.train.augment import random_crop_flip
from cimtool.train.batching import TensorData, make_batcher, to_float
from cimtool.train.checkpoint import load_checkpoint, load_train_states, save_checkpoint, train_states
from cimtool.train.distributed import SINGLE, Ranks
from cimtool.train.schedule import scaled_lr, warmup_cosine
from cimtool.ui import Reporter

STATUS_EVERY = 25  # steps between live progress updates (each reads the loss: a host sync)
# A checkpoint is written after an epoch when this long has passed since the last one (and after
# the last epoch): a kill loses at most this plus an epoch, and the 64->10 head, whose mnist5k
# epochs take ~10 ms, no longer spends a quarter of its time writing checkpoints (~3 ms each).
CHECKPOINT_EVERY_S = 1.0
# clip_grad_norm on CPU skips its scaling kernels when the norm is below this fraction of the limit:
# the factor min(1, max_norm / (norm + 1e-6)) is then exactly 1 (float32 rounding is ~1e-7).
NO_CLIP_BELOW = 0.999
# --compile auto on CPU compiles a model's own kernels (LBPNet's: 1.56x faster steps, 10-30 s to
# compile) only when the eager run is estimated to last longer than this. It never compiles a whole
# model on CPU: tests/bench/bench_train.py, torch 2.13, 2 cores, batch 128: inductor steps VGG8
# 1.04x faster after a 31 s compile and mnist_cnn 1.6x slower (its max-pools, generated loops).
CPU_COMPILE_MIN_EAGER_S = 600.0
RECIPE_SEED = 7_919  # offsets a recipe's own batch order from the epoch's shuffle


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 128
    lr: float = 2e-3  # per 256 samples; scaled linearly with the batch size
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    seed: int = 0
    compile: str = "auto"  # auto | on | off
    loader: str = "auto"  # auto | memory | dataloader
    eval_batch_size: int = 256  # val per epoch: on 2 CPU cores 256 ran ~40 % faster than 2048 (cache)
    augment: bool = False  # random crop + horizontal flip of image batches
    augment_pad: int = 4  # crop: shifts of up to this many pixels
    augment_flip: bool = True  # False for digits


@dataclass
class FitResult:
    metrics: list[dict[str, Any]] = field(default_factory=list)  # deterministic per-epoch figures
    timing: list[dict[str, Any]] = field(default_factory=list)  # wall time, samples/s
    best_val_acc: float = -1.0
    best_epoch: int = 0
    compiled: bool = False


# fused kernels: one call per step instead of a loop over tensors (tests/bench: 225 -> 140 µs/step)
OPTIMIZERS = {
    "adamw": lambda params, cfg, lr: torch.optim.AdamW(params, lr=lr, fused=True,
                                                       weight_decay=cfg.weight_decay),
    "sgd": lambda params, cfg, lr: torch.optim.SGD(params, lr=lr, momentum=cfg.momentum,
                                                   nesterov=cfg.momentum > 0, fused=True,
                                                   weight_decay=cfg.weight_decay),
}


def log_softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over each row of [B, K] logits, computed over dim 0 of the transposed view:
    the same values up to rounding, 4-6x faster on CPU for K = 10, as its kernel then vectorizes
    across the B rows (tests/bench: 24 -> 6 us for 128 x 10, 654 -> 100 us for 3,500 x 10)."""
    return torch.log_softmax(logits.T, dim=0).T


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """Label-smoothed CE (Szegedy et al. 2016): −mean_b Σ_k q_k·log p_k with the smoothed target
    q = (1 − ε)·onehot(y) + ε/K, which is (1 − ε)·NLL + ε·mean_k(−log p_k).

    Same value and gradient as ``F.cross_entropy(..., label_smoothing=ε)`` in fewer, faster
    kernels, which matters for the tiny crossbar head (tests/bench)."""
    logp = log_softmax_rows(logits)
    k = logits.shape[1]
    q = torch.full_like(logp, eps / k).scatter_(1, target[:, None], 1 - eps + eps / k)
    return (logp * q).sum().div(-len(target))


def clip_grad_norm(grads: list[torch.Tensor], max_norm: float) -> None:
    """Scale gradients so that their global L2 norm is at most ``max_norm`` (in place).

    The arithmetic of ``nn.utils.clip_grad_norm_`` without its per-call grouping overhead. On CPU,
    where reading the norms costs no device sync, nothing more is done when the factor is 1."""
    norms = torch._foreach_norm(grads)
    if norms[0].device.type == "cpu" and math.hypot(*map(float, norms)) + 1e-6 < NO_CLIP_BELOW * max_norm:
        return
    total = torch.linalg.vector_norm(torch.stack(norms))
    torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp_(max=1.0))


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA devices that support it; a no-op elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def should_compile(mode: str, device: torch.device, own_kernels_estimate_s: float | None) -> bool:
    """auto compiles on CUDA; on CPU only a model's own kernels (``own_kernels_estimate_s``: its
    eager run's estimated length, None without such kernels), for runs that repay the compile."""
    if mode != "auto":
        return mode == "on"
    if device.type == "cuda":
        return True
    return own_kernels_estimate_s is not None and own_kernels_estimate_s > CPU_COMPILE_MIN_EAGER_S


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorData, device: torch.device,
             batch_size: int = 2048) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``data``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for start in range(0, len(data), batch_size):
        xb = to_float(data.x[start: start + batch_size].to(device))
        yb = data.y[start: start + batch_size].to(device)
        with autocast(device):
            logits = model(xb).float()
        loss_sum += nn.functional.nll_loss(log_softmax_rows(logits), yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    n = max(1, len(data))
    return float(loss_sum) / n, int(correct) / n


EVAL_DRAWS = 5  # seeded noise draws behind each reported accuracy of a stochastic front-end


def evaluate_draws(model: nn.Module, data: TensorData, device: torch.device, seed: int,
                   draws: int = EVAL_DRAWS) -> dict[str, Any]:
    """Accuracy of ``model`` on ``data``. A model with a stochastic module (photon noise, drawn at
    every pass) is scored on ``draws`` draws seeded ``seed``, ``seed + 1``, …: their mean, std
    (population), each draw and the seed; a deterministic one is one number."""
    if not any(getattr(m, "stochastic", False) for m in model.modules()):
        return {"accuracy": evaluate(model, data, device)[1]}
    accs = []
    for k in range(draws):
        torch.manual_seed(seed + k)
        accs.append(evaluate(model, data, device)[1])
    mean, std = mean_std(accs)
    return {"accuracy": mean, "accuracy_std": std, "accuracy_draws": accs, "eval_seed": seed}


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def _seed_global_rng(device: torch.device, seed: int) -> None:
    """Seed the global RNG that dropout or noise on ``device`` draws from. On CPU that is the CPU
    generator alone, all that torch.manual_seed changes for CPU ops, without its ~0.2 ms of
    seeding every other backend (2 % of a mnist5k head epoch)."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def post_step_hooks(model: nn.Module) -> list[Callable[[], None]]:
    """What ``fit`` calls after every optimizer step: each module's own post-step hook.

    A module takes part by defining ``after_step()``, e.g. a layer that projects its weights back
    onto a physically realisable range. The training loop knows nothing of what a hook does; hooks
    run in ``model.modules()`` order."""
    return [m.after_step for m in model.modules() if callable(getattr(m, "after_step", None))]


def fit(model: nn.Module, train: TensorData, val: TensorData, cfg: TrainConfig,
        device: torch.device, checkpoint: Path, phase: str, reporter: Reporter,
        recipe: Any = None, ranks: Ranks = SINGLE) -> FitResult:
    """Train ``model`` in place; on return it holds the best-val weights.

    If ``checkpoint`` exists (an interrupted run), training continues from it and ends with the
    same weights as an uninterrupted run: shuffling and torch's global generator are seeded per
    epoch, and a module's own generators are seeded from ``cfg.seed`` (its ``begin_fit(seed)``) and
    kept in the checkpoint (``checkpoint.train_states``).
    ``recipe``: a model's own schedule on top (``cimtool.train.recipe``). ``ranks``: this process's
    place under torchrun (``cimtool.train.distributed``); only rank 0 writes the checkpoint.
    """
    last = len(train) % cfg.batch_size
    if ranks.active and 0 < last < ranks.world:  # a process would get an empty share of the last batch
        raise CimtoolError(f"{phase}: the last batch has {last} sample(s) for {ranks.world} processes; "
                           f"choose a --batch-size that leaves at least {ranks.world} ({len(train)} samples)")
    model.to(device).train()
    for module in model.modules():  # a module's own generators follow this run's --seed
        if callable(getattr(module, "begin_fit", None)):
            module.begin_fit(cfg.seed)
    batcher = make_batcher(train, cfg.batch_size, device, cfg.loader)
    steps_per_epoch = len(batcher)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = min(total_steps, round(cfg.warmup_epochs * steps_per_epoch))
    peak_lr = scaled_lr(cfg.lr, min(cfg.batch_size, len(train)))  # the batch actually used
    params = [p for p in model.parameters() if p.requires_grad]
    groups = recipe.param_groups(cfg.weight_decay) if recipe else params
    optimizer = OPTIMIZERS[cfg.optimizer](groups, cfg, peak_lr)
    # a model with its own compiled kernels (LBPNet) estimates its own eager time and compiles those
    own = getattr(model, "compile_kernels", None)
    estimate = model.eager_estimate_s(len(train), cfg.epochs) if own else None
    compiled = should_compile(cfg.compile, device, estimate)
    if compiled and own:
        own()

    result = FitResult(compiled=compiled)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_epoch = 0
    resumed = load_checkpoint(checkpoint, model, optimizer) if ranks.writes and checkpoint.is_file() else None
    if ranks.active:  # rank 0's checkpoint, if any, on every rank
        state = ranks.from_rank0(resumed and (*resumed, model.state_dict(), optimizer.state_dict(),
                                              train_states(model)))
        if state and not ranks.writes:
            model.load_state_dict(state[2])
            optimizer.load_state_dict(state[3])
            load_train_states(model, state[4])
        resumed = state and state[:2]
    if resumed:
        best_state, loop = resumed
        result = FitResult(loop["metrics"], loop["timing"], loop["best_val_acc"], loop["best_epoch"],
                           compiled)
        start_epoch = loop["epoch"]
        if recipe:
            recipe.load_state(loop["recipe"])
        reporter.log(f"[dim]{phase}: resuming after epoch {start_epoch} from {checkpoint}[/dim]")

    trained = ranks.wrap(model, device, unused_parameters=recipe is not None)  # a recipe freezes some
    step_model = torch.compile(trained) if compiled and not own else trained
    after_step = post_step_hooks(model)
    sizes = torch.tensor([min(cfg.batch_size, len(train) - start)  # of the epoch's batches
                          for start in range(0, len(train), cfg.batch_size)],
                         device=device, dtype=torch.float32)
    show = not reporter.quiet  # live status reads the loss (a host sync): only when it is shown
    amp = autocast(device)  # reusable: entered once per step
    last_save = time.perf_counter()
    with reporter.progress() as progress:
        task = progress.add_task(phase, total=total_steps, completed=start_epoch * steps_per_epoch,
                                 status="")
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            _seed_global_rng(device, _epoch_seed(cfg.seed, epoch))  # dropout or noise, if any
            generator = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
            # reduced once per epoch (fewer ops per step); outputs: the epoch's logits, N x classes
            losses, outputs, targets = [], [], []
            if recipe:
                recipe.begin_epoch(epoch, cfg.epochs)
            t0 = time.perf_counter()
            for i, (xb, yb) in enumerate(batcher.epoch(generator)):
                if cfg.augment:
                    xb = random_crop_flip(xb, generator, cfg.augment_pad, cfg.augment_flip)
                batch = len(yb)
                xb, yb = ranks.shard(xb), ranks.shard(yb)  # the global batch's rows of this rank
                step = (epoch - 1) * steps_per_epoch + i
                lr = warmup_cosine(step, total_steps, warmup_steps, peak_lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_mult", 1.0) * (recipe.lr_scale if recipe else 1.0)
                with amp:
                    logits = step_model(to_float(xb))
                    loss = smoothed_cross_entropy(logits.float(), yb, cfg.label_smoothing)
                    if ranks.active:
                        loss = loss * ranks.loss_scale(len(yb), batch)
                    if recipe:
                        loss = loss + recipe.extra_loss()
                for p in params:  # zero_grad(set_to_none=True) without its profiler hooks
                    p.grad = None
                loss.backward()
                if cfg.grad_clip > 0:
                    clip_grad_norm([p.grad for p in params if p.grad is not None], cfg.grad_clip)
                optimizer.step()
                for hook in after_step:
                    hook()
                losses.append(loss.detach())
                outputs.append(logits.detach())
                targets.append(yb)
                if show and i % STATUS_EVERY == 0:
                    progress.update(task, completed=step + 1,
                                    status=f"ep {epoch}/{cfg.epochs} loss {loss.item():.3f}")
            loss_sum = ranks.all_sum((torch.stack(losses).float() * sizes).sum() / ranks.world)
            correct = ranks.all_sum((torch.cat(outputs).argmax(1) == torch.cat(targets)).sum())
            ranks.sync_buffers(model)  # rank 0's BN statistics: every rank validates alike
            wall = time.perf_counter() - t0
            if not torch.isfinite(loss_sum):
                raise CimtoolError(f"{phase}: training diverged (loss is not finite in epoch {epoch}); "
                                   f"lower the learning rate (it peaked at {peak_lr:.3g})")
            if recipe:  # train batches of their own seed (the epoch's shuffle is untouched)
                recipe.before_eval(lambda epoch=epoch: (xb for xb, _ in batcher.epoch(
                    torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch) + RECIPE_SEED))))
            val_loss, val_acc = evaluate(model, val, device, cfg.eval_batch_size)
            if recipe:
                recipe.after_epoch(epoch, val_acc)
            result.metrics.append({
                "phase": phase, "epoch": epoch, "train_loss": float(loss_sum) / len(train),
                "train_acc": int(correct) / len(train), "val_loss": val_loss, "val_acc": val_acc,
                "lr": lr, **(recipe.epoch_metrics() if recipe else {}),
            })
            result.timing.append({"phase": phase, "epoch": epoch, "wall_s": wall,
                                  "samples_per_s": len(train) / wall})
            if val_acc > result.best_val_acc:
                result.best_val_acc, result.best_epoch = val_acc, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            progress.update(task, completed=epoch * steps_per_epoch,
                            status=f"ep {epoch}/{cfg.epochs} val_acc {val_acc:.4f} "
                                   f"(best {result.best_val_acc:.4f})")
            due = epoch == cfg.epochs or time.perf_counter() - last_save >= CHECKPOINT_EVERY_S
            if ranks.writes and due:
                save_checkpoint(checkpoint, model, best_state, optimizer, {
                    "epoch": epoch, "metrics": result.metrics, "timing": result.timing,
                    "best_val_acc": result.best_val_acc, "best_epoch": result.best_epoch,
                    "recipe": recipe.state() if recipe else None,
                })
                last_save = time.perf_counter()
    model.load_state_dict(best_state)
    return result
