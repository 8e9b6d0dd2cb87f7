"""`cimtool calibrate-threshold`: convert a (quantized) ANN to spiking neurons and pick thresholds.

Per neuron layer, ``P_p`` = the p-th percentile of the values the layer must represent, measured
on the train split with the float model (p in 99.9, 99.99, max; Rueckauer et al. 2017's robust
normalisation). The threshold puts the neuron's top level at ``r·P_p``: ``θ = r·P_p/top`` with
``top`` = the largest spike count (``p_max``, or ``−n_min`` if larger). Every (p, r) of the grid is
scored on val with the spiking network at the chosen T and reset mode; the best is kept (ties:
the ratio closest to 1, then the earlier percentile). Then, for the chosen thresholds: val
accuracy at ten T from 1 to 32, the run-until-silent spiking predictions against the equivalent
quantized ANN (one pass) on val, and test accuracy of the float ANN, the quantized ANN and the
SNN at T — the only time test is touched.

With ``--train-epochs N`` the quantized-ANN twin is then trained from the chosen thresholds
(``cimtool.nn.qann``: every ReLU becomes its neuron's quantizer with a learnable threshold, LSQ;
the spiking part's weights are fine-tuned too, a qmodel's stay at their device levels), and the
SNN is converted from the trained twin: the rest of the stage (accuracy vs T, the equivalence
checks, test) runs on it, and the converted-only SNN's val and test accuracy are recorded beside.

Writes an ``snn`` artifact: ``snn.json`` (everything needed to rebuild the SNN from its source
model), ``calibration.parquet`` (the grid), ``thresholds.parquet``, ``accuracy_vs_t.parquet`` and
``evaluation.parquet``; with ``--train-epochs``, ``weights.safetensors`` (the trained twin's
weights, which the SNN uses instead of the source model's) and ``twin_metrics.parquet``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cimtool import artifacts
from cimtool.checks import check_range
from cimtool.data.calibration import calibration_sample, check_calibration_samples
from cimtool.errors import CimtoolError
from cimtool.models.io import model_splits, open_model, resolve_model
from cimtool.nn.snn_spec import (
    KIND,
    SNN_FILE,
    SnnSpec,
    neuron_names,
    open_snn,  # noqa: F401 (re-exported: callers open snn artifacts from here)
)
from cimtool.params import CalibrateParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput, check_torch_device, resolve_device
from cimtool.ui import Reporter, plural

PERCENTILES = ("99.9", "99.99", "max")
DEFAULT_RATIOS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5)
# accuracy vs T in the artifact (each point is a pass of the spiking network over val: at full scale a
# CNN's 1..32 took 20 min on 2 cores; these ten show the same curve)
CURVE_T = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
# rate-coded input never goes silent: every step of every sample is computed (analog input stops early)
MAX_RATE_TIMESTEPS = 4096
EQUIVALENCE_CAP = 100_000  # steps: run-until-silent for the equivalence check (it ends long before)
TWIN_LR_FACTOR = 0.25  # default learning rate of the twin = the model's training rate × this
TWIN_WEIGHTS = "weights.safetensors"




def validate(p: CalibrateParams) -> None:
    p.snn.validate()
    steps = p.snn.timesteps
    if p.snn.encoding == "rate" and steps > MAX_RATE_TIMESTEPS:
        raise CimtoolError(f"--spike-encoding rate runs all --timesteps {steps} steps for every val and test "
                           f"sample ({steps / 32:.0f}x the work of T = 32); at most {MAX_RATE_TIMESTEPS}, or "
                           "use --spike-encoding analog, which stops once the network is silent")
    check_calibration_samples(p.calibration_samples)
    check_torch_device(p.torch_device)
    bad = [r for r in p.ratios if not (math.isfinite(r) and r > 0)]
    if bad:
        raise CimtoolError(f"--ratios must all be finite and > 0 (threshold = ratio × percentile), got {bad}")
    if not 0 <= p.seed < 2**32:
        raise CimtoolError(f"--seed must be in [0, 2**32), got {p.seed}")
    check_range("--train-epochs", p.train_epochs, 0)
    check_range("--batch-size", p.batch_size, 1)
    if p.train_lr is not None and not (math.isfinite(p.train_lr) and p.train_lr > 0):
        raise CimtoolError(f"--train-lr must be a finite number > 0, got {p.train_lr}")


def _train_twin(p: CalibrateParams, model, thetas: list[float], kind: str, arch: dict[str, Any],
                data, scratch: Path, reporter: Reporter):
    """The quantized-ANN twin trained from ``thetas`` (on the CPU): (model with its ReLUs back,
    thresholds of every neuron layer, fit result). Only the spiking part trains; a qmodel's
    weights stay at their device levels."""
    import torch

    from cimtool.models.registry import MODELS
    from cimtool.nn.qann import QuantizedTwin
    from cimtool.train.loop import TrainConfig, fit

    cfg = p.snn
    trained = copy.deepcopy(model).cpu().train()
    _, body = trained.snn_parts()
    spiking = {id(w) for module in body for w in module.parameters()}
    for w in trained.parameters():
        w.requires_grad_(kind != "qmodel" and id(w) in spiking)
    twin = QuantizedTwin(trained, thetas, cfg.n_min, cfg.p_max)
    lr = p.train_lr or MODELS[arch["model"]].default_lr * TWIN_LR_FACTOR
    config = TrainConfig(epochs=p.train_epochs, batch_size=p.batch_size, lr=lr, seed=p.seed, compile="off")
    torch.manual_seed(p.seed)
    result = fit(twin, data["train"], data["val"], config, torch.device("cpu"), scratch / "twin.ckpt", "twin",
                 reporter)
    trained, learned = twin.release()
    if not all(math.isfinite(t) and t > 0 for t in learned):
        raise CimtoolError(f"training the twin drove a threshold to {learned}: try a smaller --train-lr")
    return trained.eval(), learned + thetas[len(learned):], result


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    trained = f", twin trained {plural(s['train_epochs'], 'epoch')}" if s.get("train_epochs") else ""
    return (f"[green]snn[/green] {artifact.path}  p{s['percentile']} x {s['ratio']:g}{trained}; "
            f"test accuracy at T={s['timesteps']}: SNN {s['test_accuracy']:.4f}, ANN "
            f"{s['ann_test_accuracy']:.4f}, quantized ANN {s['quantized_ann_test_accuracy']:.4f}; "
            f"run-until-silent = quantized ANN on {s['equivalence_agreement']:.2%} of val")


def run(p: CalibrateParams, out: Path | None, root: Path, force: bool,
        reporter: Reporter) -> artifacts.Artifact:

    from cimtool.models.io import save_weights
    from cimtool.nn.snn import SpikingNetwork, activation_percentiles, input_range, thresholds
    from cimtool.train.loop import evaluate

    validate(p)
    t_start = time.perf_counter()
    model_path = resolve_model(p.model, p.method, root, reporter)
    source, model, spec = open_model(model_path)
    if p.train_epochs:
        from cimtool.nn.qann import trainable_relus

        trainable_relus(model)  # before any work
    p = replace(p, model=str(model_path))
    cfg = p.snn
    data = model_splits(source, p.data_dir)
    device = resolve_device(p.torch_device)
    sample, calibration_record = calibration_sample(data["train"], p.calibration_samples, p.seed)
    output = StageOutput(KIND, out, root, f"{model_path.name}-{cfg.neuron}-T{cfg.timesteps}", force,
                         inputs=[model_path], started=t_start)
    out = output.path
    reporter.log(f"calibrate-threshold: {model_path} → {cfg.neuron} neurons ({cfg.reset} reset, {cfg.levels} "
                 f"{cfg.bounds} levels, {cfg.encoding} input, T={cfg.timesteps}) → {out}")

    model = model.to(device)
    params = {**asdict(p), "torch_device": device.type}
    with output.writer(params) as writer:
        stats = activation_percentiles(model, sample, list(p.percentiles), cfg.bounds, device=device)
        r_in = input_range(model, sample, device=device)
        names = neuron_names(spec, len(stats))

        def network(percentile: str, ratio: float, config=cfg) -> SpikingNetwork:
            return SpikingNetwork(model, thresholds(stats, percentile, ratio, config), config, r_in, device)

        grid = []
        with reporter.progress() as progress:
            task = progress.add_task("threshold grid (val)", total=len(p.percentiles) * len(p.ratios),
                                     status="")
            for percentile in p.percentiles:
                for ratio in p.ratios:
                    pred, steps = network(percentile, ratio).predict(data["val"], seed=p.seed)
                    acc = float((pred == data["val"].y).double().mean())
                    grid.append({"percentile": percentile, "ratio": ratio, "val_accuracy": acc,
                                 "mean_steps": steps})
                    progress.update(task, advance=1, status=f"p{percentile} r{ratio:g}: {acc:.4f}")
        order = {q: i for i, q in enumerate(p.percentiles)}
        best = max(grid, key=lambda g: (g["val_accuracy"], -abs(math.log(g["ratio"])),
                                        -order[g["percentile"]]))
        chosen = network(best["percentile"], best["ratio"])
        reporter.log(f"chosen: p{best['percentile']} × {best['ratio']:g}, val accuracy "
                     f"{best['val_accuracy']:.4f} at T={cfg.timesteps}")
        float_model, converted, twin_fit = model, {}, None
        if p.train_epochs:
            converted = {"converted_val_accuracy": best["val_accuracy"],
                         "converted_test_accuracy": chosen.accuracy(data["test"], seed=p.seed),
                         "thresholds_converted": chosen.thetas}
            reporter.log(f"training the quantized-ANN twin for {plural(p.train_epochs, 'epoch')} from these "
                         "thresholds")
            model, learned, twin_fit = _train_twin(p, model, chosen.thetas, source.kind, spec, data,
                                                   writer.scratch, reporter)
            model = model.to(device)
            chosen = SpikingNetwork(model, learned, cfg, r_in, device)

        curve = []
        curve_t = sorted({*CURVE_T, cfg.timesteps})
        with reporter.progress() as progress:
            task = progress.add_task("accuracy vs T (val)", total=len(curve_t), status="")
            for steps in curve_t:
                pred, used = chosen.predict(data["val"], steps, seed=p.seed)
                twin, _ = chosen.predict(data["val"], steps, seed=p.seed, one_pass=True)
                y = data["val"].y
                curve.append({"timesteps": steps, "val_accuracy": float((pred == y).double().mean()),
                              "val_accuracy_one_pass": float((twin == y).double().mean()),
                              "mean_steps": used})
                progress.update(task, advance=1, status=f"T={steps}: {curve[-1]['val_accuracy']:.4f}")

        # run until silent (input of T steps for rate codes) vs the quantized ANN, on val and test
        silent = SpikingNetwork(model, chosen.thetas, replace(cfg, stop="silent"), r_in, device)
        agree, used = {}, {}
        for split in ("val", "test"):
            pred_s, used[split] = silent.predict(data[split], seed=p.seed, cap=EQUIVALENCE_CAP)
            pred_q, _ = silent.predict(data[split], seed=p.seed, one_pass=True)
            agree[split] = float((pred_s == pred_q).double().mean())
        agreement, steps_s = agree["val"], used["val"]
        reporter.log(f"run-until-silent SNN vs quantized ANN: {agree['val']:.2%} agree on val, "
                     f"{agree['test']:.2%} on test (silent after {steps_s:.1f} steps on average on val)")

        # test, once per condition
        acc_ann = evaluate(float_model, data["test"], device)[1]
        acc_qann = chosen.accuracy(data["test"], seed=p.seed, one_pass=True)
        acc_snn = chosen.accuracy(data["test"], seed=p.seed)

        trained = None
        if twin_fit is not None:
            trained = {"epochs": p.train_epochs, "best_epoch": twin_fit.best_epoch,
                       "thresholds_converted": converted["thresholds_converted"]}
            save_weights(writer.path(TWIN_WEIGHTS), model)
            pq.write_table(pa.Table.from_pylist(twin_fit.metrics), writer.path("twin_metrics.parquet"))
        snn_spec = SnnSpec(cfg, chosen.thetas, r_in, names, percentile=best["percentile"],
                           ratio=best["ratio"], percentile_values=[s[best["percentile"]] for s in stats],
                           source_model=str(model_path), trained=trained,
                           weights=TWIN_WEIGHTS if trained else None)
        writer.path(SNN_FILE).write_text(snn_spec.to_json())
        pq.write_table(pa.Table.from_pylist(grid), writer.path("calibration.parquet"))
        pq.write_table(pa.Table.from_pylist(
            [{"layer": n, **{f"p{q}": s[q] for q in p.percentiles}, "theta": t}
             for n, t, s in zip(names, chosen.thetas, stats, strict=True)]),
            writer.path("thresholds.parquet"))
        pq.write_table(pa.Table.from_pylist(curve), writer.path("accuracy_vs_t.parquet"))
        evaluation = [{"condition": "ann_float", "split": "test", "accuracy": acc_ann},
                      {"condition": "quantized_ann", "split": "test", "accuracy": acc_qann},
                      {"condition": "snn", "split": "test", "accuracy": acc_snn}]
        pq.write_table(pa.Table.from_pylist(evaluation), writer.path("evaluation.parquet"))
        at_t = next(c for c in curve if c["timesteps"] == cfg.timesteps)
        summary = {
            **asdict(cfg),
            "percentile": best["percentile"], "ratio": best["ratio"], "thresholds": chosen.thetas,
            "test_accuracy": acc_snn, "val_accuracy": at_t["val_accuracy"],
            "ann_test_accuracy": acc_ann, "quantized_ann_test_accuracy": acc_qann,
            "gap_to_ann_points": 100 * (acc_ann - acc_snn),
            "equivalence_agreement": agreement, "equivalence_agreement_test": agree["test"],
            "equivalence_mean_steps": steps_s, "train_epochs": p.train_epochs, **converted,
            "mean_steps": at_t["mean_steps"], **calibration_record, "torch_device": device.type,
        }
        return output.commit(writer, [source.as_input("model")], summary)
