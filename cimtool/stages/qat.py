"""`cimtool qat`: hardware-aware versions of a trained model on a device card's levels.

Modes (``MODES``):

- ``ptq``: quantize the trained weights to the device levels (differential, the card's spacing,
  ``--weight-bits``) and evaluate; no training.
- ``qat``: fine-tune with the forward pass on the discrete levels and a straight-through
  estimator back to float master weights (docs/physics.md#device-aware-training).
- ``noise``: like ``qat``, with the card's D2D, C2C and read noise drawn in every training forward
  pass, so the model survives the array simulator.
- ``onchip``: DNN+NeuroSim V2.1's on-chip training (docs/physics.md#on-chip-training): the crossbar layers are
  re-initialised and trained with device updates only (momentum, QG pulses along the card's
  LTP/LTD curves, stochastic rounding, C2C write noise); the same run with a linear device
  (NL = 0) is reported beside it. Per-epoch weight/update distributions go to ``dist.parquet``.
  ``--recipe v21`` runs DNN+NeuroSim V2.1 train.py's own loop (``cimtool/train/onchip.py`` ``RECIPES``).

The artifact (``qmodel``) stores the float master weights (they map onto the levels with the
recorded mapping options; ``map-weights`` uses them by default) and an evaluation table: float,
PTQ and the result on the ideal array, and the plain vs the new model on the array simulator with
every non-ideality of the card (Monte Carlo).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cimtool import artifacts
from cimtool.checks import check_choice, check_range
from cimtool.data.calibration import calibration_sample, check_calibration_samples
from cimtool.devices.cmap import map_loaded_model, resolve_card
from cimtool.devices.mapping import LevelCode, level_code
from cimtool.errors import CimtoolError
from cimtool.models.io import model_splits, open_model, resolve_model, save_model, save_onchip_epochs
from cimtool.models.registry import MODELS
from cimtool.nn.array import EFFECTS, ArrayConfig
from cimtool.nn.quant import DeviceWeight, NoiseSpec, attach, detach_all
from cimtool.options import default_of, spec_of
from cimtool.params import QatParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput, check_torch_device, resolve_device
from cimtool.stats import mean_std
from cimtool.train.batching import TensorData, to_float
from cimtool.train.distributed import SINGLE, Ranks, launched, process_group
from cimtool.train.loop import TrainConfig, evaluate, fit
from cimtool.train.onchip import RECIPES, OnchipConfig, logits_of, train_onchip, wage_init
from cimtool.ui import Reporter, plural

KIND = "qmodel"
FINE_TUNE_LR_FACTOR = 0.25  # default fine-tuning LR = the model's training LR × this




def validate(p: QatParams) -> None:
    check_choice("--mode", p.mode, MODES)
    p.mapping.validate()
    for name in ("epochs", "batch_size", "trials", "record_every"):
        check_range(f"--{name.replace('_', '-')}", getattr(p, name), 1)
    check_calibration_samples(p.calibration_samples)
    check_torch_device(p.torch_device)
    if p.lr is not None and not (math.isfinite(p.lr) and p.lr > 0):
        raise CimtoolError(f"--lr must be a finite number > 0, got {p.lr}")
    if not (math.isfinite(p.noise_scale) and p.noise_scale >= 0):
        raise CimtoolError(f"--noise-scale must be >= 0, got {p.noise_scale}")
    check_range("--grad-bits", p.grad_bits, 2, 15)
    if not (math.isfinite(p.nl_d2d) and p.nl_d2d >= 0):
        raise CimtoolError(f"--nl-d2d must be >= 0, got {p.nl_d2d}")
    if not 0 <= p.seed < 2**32:
        raise CimtoolError(f"--seed must be in [0, 2**32), got {p.seed}")
    check_choice("--recipe", p.recipe, RECIPES)
    given = [f"--{f.name.replace('_', '-')}" for f in fields(QatParams)
             if (spec_of(f) and spec_of(f).panel == "On-chip") and getattr(p, f.name) != default_of(f)]
    if given and p.mode != "onchip":
        raise CimtoolError(f"{', '.join(given)}: options of --mode onchip, not of --mode {p.mode}")
    for epoch in p.lr_decay_epochs:
        check_range("--lr-decay-epochs", epoch, 1)


def _features(model, data: TensorData, batch_size: int = 4096) -> TensorData:
    """Off-array front-end + scaler outputs (fixed during fine-tuning), computed once."""
    with torch.no_grad():
        chunks = [model.features(to_float(data.x[i: i + batch_size]))
                  for i in range(0, len(data), batch_size)]
    return TensorData(torch.cat(chunks), data.y)


def _evaluation_config(card) -> ArrayConfig:
    """The chip qat evaluates on: every non-ideality of the card, with its ADC and DAC."""
    return ArrayConfig(effects=EFFECTS, adc_bits=card.adc_bits, scheme=card.adc_scheme,
                       input_bits=card.input_bits)


def _nonideal(model, spec, job: Job) -> list[float]:
    """Accuracies of ``trials`` chips on :func:`_evaluation_config`."""
    from cimtool.nn.network import ArrayNetwork

    mapped = map_loaded_model(model, spec, job.p.mapping, job.reporter, job.card)
    card = mapped.card
    config = _evaluation_config(card)
    net = ArrayNetwork(model, mapped.maps, mapped.placements, card, config, job.device)
    net.calibrate(job.calibration)
    return net.trials(job.data["test"], job.p.trials, job.p.seed)


@dataclass
class Job:
    """What every mode works from."""

    p: QatParams
    card: Any
    model: torch.nn.Module  # the plain (input) model, not modified
    spec: dict[str, Any]
    data: dict[str, TensorData]
    layers: list[str]
    code: LevelCode  # how weights are stored on the card's cells
    scratch: Path
    reporter: Reporter
    device: torch.device  # evaluation and array simulation (training runs on the CPU)
    calibration: TensorData  # the train sample that sets the converters' ranges
    ranks: Ranks = SINGLE  # under torchrun: this process's place (fine-tuning only)

    @property
    def head_only(self) -> bool:  # crossbar model: the front-end is fixed, its head is trained
        return MODELS[self.spec["model"]].uses_method

    def quantizer(self, noise: NoiseSpec | None = None):
        m = self.p.mapping
        return lambda: DeviceWeight(self.code, m.scaling, m.scale_percentile, noise=noise)


@dataclass
class Outcome:
    model: torch.nn.Module  # plain weights (float masters, or the realised on-chip weights)
    val_accuracy: float
    metrics: list[dict[str, Any]] = field(default_factory=list)
    timing: list[dict[str, Any]] = field(default_factory=list)
    dists: list[dict[str, Any]] = field(default_factory=list)  # onchip: weight/update histograms
    extra: dict[str, float] = field(default_factory=dict)  # further test accuracies to report
    # onchip: epoch → layer → (weight, its weightOld: OnchipTrainer.realised)
    epochs: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)  # onchip: each layer's digital scale α


def _ptq(job: Job) -> Outcome:
    ptq = copy.deepcopy(job.model)
    attach(ptq, job.layers, job.quantizer())
    return Outcome(copy.deepcopy(job.model), evaluate(ptq, job.data["val"], torch.device("cpu"))[1])


def _finetune(job: Job) -> Outcome:
    """qat / noise: fine-tune on the device levels (STE), optionally with conductance noise."""
    p = job.p
    trained = copy.deepcopy(job.model)
    noise = NoiseSpec.from_card(job.card, p.noise_scale) if p.mode == "noise" else None
    attach(trained, job.layers, job.quantizer(noise))
    torch.manual_seed(p.seed)
    config = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, seed=p.seed, compile="off")
    if job.head_only:
        feats = {k: _features(trained, job.data[k]) for k in ("train", "val")}
        net, train, val = trained.head, feats["train"], feats["val"]
    else:
        net, train, val = trained, job.data["train"], job.data["val"]
    result = fit(net, train, val, config, torch.device("cpu"), job.scratch / "fit.ckpt", p.mode, job.reporter,
                 ranks=job.ranks)
    detach_all(trained, job.layers)
    return Outcome(trained.eval(), result.best_val_acc, result.metrics, result.timing)


def _onchip(job: Job) -> Outcome:
    """Train the crossbar layers on chip with the card's curves, and once more with a linear device."""
    p, card = job.p, job.card
    model = copy.deepcopy(job.model)
    if job.head_only:
        inputs = {k: _features(model, job.data[k]) for k in ("train", "val", "test")}
        net, layers = model.head, [name.removeprefix("head.") for name in job.layers]
    else:
        inputs, net, layers = job.data, model, job.layers
    alphas = {name: float(net.get_submodule(name).weight.detach().abs().max()) for name in layers}
    bits = p.mapping.weight_bits or max(2, math.ceil(math.log2(card.levels)))
    recorded_epochs = len({*range(p.record_every, p.epochs + 1, p.record_every), p.epochs})
    n_weights = sum(net.get_submodule(name).weight.numel() for name in layers)
    job.reporter.log(f"onchip: recording the weights and weightOld of {plural(recorded_epochs, 'epoch')} "
                     f"({recorded_epochs * n_weights * 8 / 1e6:.3g} MB; --record-every to thin)")
    runs = {}
    for label, (nl_ltp, nl_ltd) in (("card", (card.nl_ltp, card.nl_ltd)), ("linear", (0.0, 0.0))):
        trained = copy.deepcopy(net)
        torch.manual_seed(p.seed)  # on-chip training starts from fresh (random) weights
        for module in trained.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.reset_parameters()
        if RECIPES[p.recipe].wage_init:
            alphas = {name: wage_init(trained.get_submodule(name), bits) for name in layers}
        cfg = OnchipConfig(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, weight_bits=bits,
                           grad_bits=p.grad_bits, nl_ltp=nl_ltp, nl_ltd=nl_ltd, nl_d2d=p.nl_d2d,
                           pulses_ltp=card.pulses_ltp, pulses_ltd=card.pulses_ltd, c2c=card.c2c_sigma,
                           variation_model=card.variation_model, g_ratio=card.g_min / card.g_max,
                           seed=p.seed, record_every=p.record_every, recipe=p.recipe,
                           lr_decay_epochs=p.lr_decay_epochs)
        metrics, dists, recorded = train_onchip(trained, layers, alphas, inputs["train"], inputs["val"], cfg,
                                              job.reporter)
        with torch.no_grad():
            acc = float((logits_of(trained, inputs["test"].x).argmax(1) == inputs["test"].y).double().mean())
        runs[label] = (trained, metrics, dists, acc, recorded, dict(alphas))
        job.reporter.log(f"onchip ({label} device): test accuracy {acc:.4f}")
    trained, metrics, dists, acc, recorded, scales = runs["card"]
    if job.head_only:
        model.head = trained
    else:
        model = trained
    prefix = "head." if job.head_only else ""
    return Outcome(model.eval(), metrics[-1]["val_acc"], metrics, dists=dists,
                   extra={"onchip_accuracy": acc, "linear_device_accuracy": runs["linear"][3]},
                   epochs={e: {prefix + name: pair for name, pair in layers_.items()}
                           for e, layers_ in recorded.items()},
                   scales={prefix + name: alpha for name, alpha in scales.items()})


def _weight_old(recipe: str) -> str:
    """What an on-chip run records as each epoch's weightOld (neurosim-trace says it)."""
    if RECIPES[recipe].old_is_intended:
        return (f"the weights after the last on-chip write plus its update (V2.1's oldWeight: param + grad, "
                f"qat --mode onchip --recipe {recipe})")
    return "the weights before the last on-chip update (qat --mode onchip)"


TRAINERS = {"ptq": _ptq, "qat": _finetune, "noise": _finetune, "onchip": _onchip}
MODES = tuple(TRAINERS)


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    return (f"[green]qmodel[/green] {artifact.path}  test accuracy: float {s['float_accuracy']:.4f}, "
            f"PTQ {s['ptq_accuracy']:.4f}, {s['mode']} {s['test_accuracy']:.4f}; on the array with "
            f"every non-ideality: plain {s['nonideal_plain_mean']:.4f} ± {s['nonideal_plain_std']:.4f}, "
            f"{s['mode']} {s['nonideal_mean']:.4f} ± {s['nonideal_std']:.4f} "
            f"({plural(s['trials'], 'trial')})")


ONE_PROCESS_MODES = {"onchip": "its device updates are one simulated chip's, applied pulse by pulse in one "
                               "process", "ptq": "it trains nothing"}


def run(p: QatParams, out: Path | None, root: Path, force: bool,
        reporter: Reporter) -> artifacts.Artifact | None:
    validate(p)
    if launched() and p.mode in ONE_PROCESS_MODES:
        raise CimtoolError(f"--mode {p.mode} does not run under torchrun ({ONE_PROCESS_MODES[p.mode]}): "
                           "run it as one process")
    with process_group(torch.device("cpu")) as (ranks, _):  # fine-tuning runs on CPU (gloo)
        return _run(p, out, root, force, reporter if ranks.writes else replace(reporter, quiet=True), ranks)


def _run(p: QatParams, out: Path | None, root: Path, force: bool, reporter: Reporter,
         ranks: Ranks) -> artifacts.Artifact | None:
    t_start = time.perf_counter()
    model_path = resolve_model(p.model, p.method, root, reporter)
    source, model, spec = open_model(model_path)
    if p.lr is None:
        default = MODELS[spec["model"]].default_lr * FINE_TUNE_LR_FACTOR
        p = replace(p, lr=RECIPES[p.recipe].lr if p.mode == "onchip" else default)
    p = replace(p, model=str(model_path))
    device_name, card = resolve_card(p.mapping.device, [source], reporter.log)
    p = replace(p, mapping=replace(p.mapping, device=device_name))
    if p.mode == "onchip" and not card.has_update_curve:
        raise CimtoolError(f"--mode onchip needs the card's [update] section (nl_ltp, nl_ltd, pulses_ltp, "
                           f"pulses_ltd); '{card.name}' has none")
    code = level_code(card, p.mapping.weight_bits, p.mapping.normalize)
    grid = code.grid
    data = model_splits(source, p.data_dir)
    layers = [layer["name"] for layer in spec["crossbar_layers"]]
    if not layers:
        raise CimtoolError(f"{model_path}: the model has no crossbar layer")
    bits = f"w{p.mapping.weight_bits}" if p.mapping.weight_bits else "card"
    output = StageOutput(KIND, out, root, f"{model_path.name}-{p.mode}-{card.name}-{bits}", force,
                         inputs=[model_path], started=t_start, writes=ranks.writes)
    out = output.path
    device = resolve_device(p.torch_device)
    calibration, calibration_record = calibration_sample(data["train"], p.calibration_samples, p.seed)
    cells = f", {code.slices} cells per weight" if code.slices > 1 else ""
    reporter.log(f"qat --mode {p.mode}: {model_path} on '{card.name}' ({len(grid)} levels{cells}) → {out}")

    params = {**asdict(p), "torch_device": device.type, "card": card.to_dict(), "n_levels": len(grid)}
    with output.writer(params) as writer:
        job = Job(p, card, model, spec, data, layers, code, writer.scratch, reporter, device, calibration,
                  ranks)
        acc_float = evaluate(copy.deepcopy(model).to(device), data["test"], device)[1]
        ptq = copy.deepcopy(model)
        attach(ptq, layers, job.quantizer())
        acc_ptq = evaluate(ptq.to(device), data["test"], device)[1]
        reporter.log(f"float {acc_float:.4f}, PTQ {acc_ptq:.4f}")

        outcome = TRAINERS[p.mode](job)
        new = copy.deepcopy(outcome.model)
        attach(new, layers, job.quantizer())
        acc_after = evaluate(new.to(device), data["test"], device)[1]  # ideal device levels; test once
        plain = _nonideal(model, spec, job)
        ours = plain if p.mode == "ptq" else _nonideal(outcome.model, spec, job)
        rows = [{"model": "float", "condition": "float", "trial": 0, "accuracy": acc_float},
                {"model": "plain", "condition": "ideal_array", "trial": 0, "accuracy": acc_ptq},
                {"model": p.mode, "condition": "ideal_array", "trial": 0, "accuracy": acc_after}]
        rows += [{"model": key, "condition": "ideal_array", "trial": 0, "accuracy": value}
                 for key, value in outcome.extra.items()]
        rows += [{"model": name, "condition": "nonideal_array", "trial": t, "accuracy": a}
                 for name, accs in (("plain", plain), (p.mode, ours)) for t, a in enumerate(accs)]

        save_model(writer.partial, outcome.model, spec)
        if outcome.epochs:  # neurosim-trace --format v21 writes them as weight and weightOld
            save_onchip_epochs(writer.partial, outcome.epochs)
        for name, rows_, schema in (("metrics", outcome.metrics, _METRICS_SCHEMA),
                                    ("timing", outcome.timing, _TIMING_SCHEMA)):
            pq.write_table(pa.Table.from_pylist(rows_, schema=schema), writer.path(f"{name}.parquet"))
        pq.write_table(pa.Table.from_pylist(rows), writer.path("evaluation.parquet"))
        if outcome.dists:
            pq.write_table(pa.Table.from_pylist(outcome.dists), writer.path("dist.parquet"))
        drop = acc_float - acc_ptq
        summary = {
            "mode": p.mode, "device": card.name, "n_levels": len(grid),
            "float_accuracy": acc_float, "ptq_accuracy": acc_ptq,
            "test_accuracy": acc_after, "val_accuracy": outcome.val_accuracy,
            "gain_over_ptq": acc_after - acc_ptq,
            "recovered_fraction_of_ptq_drop": (acc_after - acc_ptq) / drop if drop > 0 else None,
            **dict(zip(("nonideal_plain_mean", "nonideal_plain_std"), mean_std(plain), strict=True)),
            **dict(zip(("nonideal_mean", "nonideal_std"), mean_std(ours), strict=True)),
            "trials": p.trials, "array_config": asdict(_evaluation_config(card)),
            "crossbar_layers": layers, **outcome.extra, **calibration_record,
            **({"onchip_scales": outcome.scales, "onchip_weight_old": _weight_old(p.recipe)}
               if outcome.scales else {}),
            "torch_device": device.type, "processes": ranks.world,
        }
        return output.commit(writer, [source.as_input("model")], summary)


_METRICS_SCHEMA = pa.schema([("phase", pa.string()), ("epoch", pa.int64()), ("train_loss", pa.float64()),
                             ("train_acc", pa.float64()), ("val_loss", pa.float64()),
                             ("val_acc", pa.float64()), ("lr", pa.float64())])
_TIMING_SCHEMA = pa.schema([("phase", pa.string()), ("epoch", pa.int64()), ("wall_s", pa.float64()),
                            ("samples_per_s", pa.float64())])
