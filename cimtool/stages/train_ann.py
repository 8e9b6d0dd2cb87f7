"""`cimtool train-ann`: train a float model on a data set and write a model artifact.

For the crossbar model the off-array front-end is fitted first (PCA, or a projection trained
with an auxiliary classifier for proj_sup_64), the features are scaled to [0, 1] on the train
split, and the crossbar head is then trained on the (fixed) features.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cimtool import artifacts
from cimtool.checks import check_choice, check_range
from cimtool.data import load_dataset, make_splits
from cimtool.data.registry import artifact_stem, check_dataset_options
from cimtool.errors import CimtoolError
from cimtool.models.frontends import FRONTENDS
from cimtool.models.io import save_model
from cimtool.models.registry import MODELS, make_spec
from cimtool.nn.organic import UPDATES as ORGANIC_UPDATES
from cimtool.params import TrainAnnParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput
from cimtool.train.batching import TensorData, to_float
from cimtool.train.distributed import Ranks, process_group
from cimtool.train.loop import OPTIMIZERS, FitResult, TrainConfig, evaluate_draws, fit
from cimtool.ui import Reporter

KIND = "model"




# Default --epochs. The recipe was tuned on mnist5k's 3,500 train samples (150 epochs, ~4,100 steps
# at batch 128); a larger data set keeps its number of training samples rather than its epochs, so
# the 650-parameter head does not spend 150 epochs on 54,000 Fashion-MNIST samples (10 give the
# same test accuracy, 0.840). The projection keeps its 20 epochs: it is what gains from more data.
DEFAULT_EPOCHS = 150
EPOCH_BUDGET_SAMPLES = DEFAULT_EPOCHS * 3_500  # 150 epochs of mnist5k's train split

FRONT_ENDS = ("none", "optical")
DEFAULT_MAX_PHOTONS = 10_000.0  # photons per pixel at full white (assumed; docs/physics.md#optical-front-end)
OPTICAL_CARD = "organic_ofet"


def validate(p: TrainAnnParams) -> None:
    """Refuse impossible parameters before anything is loaded or written."""
    dataset = check_dataset_options(p.dataset, p.data_dir, p.image_size)
    check_choice("--model", p.model, [name for name, entry in MODELS.items() if entry.trainable])
    if MODELS[p.model].uses_method:
        check_choice("--method", p.method, FRONTENDS)
    check_choice("--optimizer", p.optimizer, OPTIMIZERS)
    for name in ("epochs", "frontend_epochs", "batch_size"):
        if getattr(p, name) is not None:
            check_range(f"--{name.replace('_', '-')}", getattr(p, name), 1)
    if p.augment == "on" and MODELS[p.model].uses_method:
        raise CimtoolError("--augment on applies to image models (vgg8, mnist_cnn), not the crossbar head")
    if any(h < 1 for h in p.hidden):
        raise CimtoolError(f"--hidden sizes must be positive, got {p.hidden}")
    if p.lr is None:
        raise ValueError("resolve the learning rate first (resolve_defaults)")
    for name in ("lr", "frontend_lr", "weight_decay", "momentum", "warmup_epochs", "label_smoothing",
                 "grad_clip"):
        value = getattr(p, name)
        if not math.isfinite(value) or value < 0 or (name.endswith("lr") and value == 0):
            raise CimtoolError(f"--{name.replace('_', '-')} must be a finite number "
                               f"{'> 0' if name.endswith('lr') else '>= 0'}, got {value}")
    if p.label_smoothing >= 1:
        raise CimtoolError(f"--label-smoothing must be below 1, got {p.label_smoothing}")
    if dataset.official_test:
        if not 0 < p.val_frac < 1:
            raise CimtoolError(f"--val-frac must be in (0, 1), got {p.val_frac}")
    elif not (0 < p.val_frac < 1 and 0 < p.test_frac < 1 and p.val_frac + p.test_frac < 1):
        raise CimtoolError(f"--val-frac {p.val_frac} and --test-frac {p.test_frac} must be in (0, 1) "
                           "and sum to less than 1")
    for name in ("seed", "split_seed"):
        if not 0 <= getattr(p, name) < 2**32:
            raise CimtoolError(f"--{name.replace('_', '-')} must be in [0, 2**32), got {getattr(p, name)}")
    check_choice("--front-end", p.front_end, FRONT_ENDS)
    if p.max_photons is not None and not (math.isfinite(p.max_photons) and p.max_photons > 0):
        raise CimtoolError(f"--max-photons must be a finite number > 0, got {p.max_photons}")
    if p.front_end == "none" and p.max_photons is not None:
        raise CimtoolError("--max-photons applies to --front-end optical")
    if p.front_end == "none" and (p.dark_current != 0 or p.full_well is not None):
        raise CimtoolError("--dark-current and --full-well apply to --front-end optical")
    if not (math.isfinite(p.dark_current) and 0 <= p.dark_current <= (p.max_photons or math.inf)):
        # above full white in the most responsive band, the dark signal swamps the image
        raise CimtoolError(f"--dark-current must be in [0, --max-photons = {p.max_photons:g}] carriers per "
                           f"pixel (the signal range), got {p.dark_current:g}")
    if p.full_well is not None and not (math.isfinite(p.full_well) and p.full_well >= 1):
        raise CimtoolError(f"--full-well must be a finite number >= 1 carrier, got {p.full_well:g}")
    check_choice("--organic-update", p.organic_update, ORGANIC_UPDATES)
    if p.organic_update != "clamp" and p.model != "organic_cnn":
        raise CimtoolError("--organic-update applies to --model organic_cnn")
    if p.device is not None and p.front_end == "none" and p.model != "organic_cnn":
        raise CimtoolError("--device applies to --front-end optical and --model organic_cnn")
    if p.momentum >= 1:
        raise CimtoolError(f"--momentum must be below 1, got {p.momentum}")
    if p.model == "lbpnet":
        lbp_config(p)  # an unknown preset or an impossible field: one line, before anything runs
    elif p.preset != TrainAnnParams.preset or p.lbp_set:
        raise CimtoolError("--preset and --lbp-set apply to --model lbpnet")
    for name, choices in (("compile", ("auto", "on", "off")),
                          ("loader", ("auto", "memory", "dataloader")),
                          ("augment", ("auto", "on", "off")),
                          ("torch_device", ("auto", "cpu", "cuda"))):
        check_choice(f"--{name.replace('_', '-')}", getattr(p, name), choices)


# training options whose default depends on the model: --model lbpnet takes them from its preset's
# recipe (--lbp-set recipe.<field>; warm-up scaled with --epochs), other models from TrainConfig's
RECIPE_FIELDS = ("batch_size", "weight_decay", "label_smoothing", "grad_clip", "warmup_epochs")


def lbp_config(p: TrainAnnParams, epochs: int | None = None):
    """--model lbpnet's configuration: the preset with --lbp-set applied, its recipe scaled to
    ``epochs`` (docs/lbpnet.md)."""
    from cimtool.models.lbpnet import preset, with_overrides

    cfg = with_overrides(preset(p.preset), p.lbp_set)
    return replace(cfg, recipe=cfg.recipe.scaled(epochs)) if epochs else cfg


def resolve_defaults(p: TrainAnnParams) -> TrainAnnParams:
    """Fill in model-dependent defaults, so that the manifest records the values used."""
    if p.model == "lbpnet":  # the preset's recipe, its epoch points (warm-up) scaled to --epochs
        epochs = p.epochs if p.epochs is not None else lbp_config(p).recipe.epochs
        r = lbp_config(p, epochs).recipe
        for name in RECIPE_FIELDS:  # set by the recipe: refuse a value that would be ignored
            given = getattr(p, name)
            if given is not None and given != getattr(r, name):
                raise CimtoolError(f"--{name.replace('_', '-')} does not apply to --model lbpnet: its "
                                   f"preset's recipe sets it ({getattr(r, name)}); use --lbp-set "
                                   f"recipe.{name}={given}")
        p = replace(p, lr=p.lr if p.lr is not None else r.lr, epochs=epochs,
                    **{name: getattr(r, name) for name in RECIPE_FIELDS})
    else:
        from cimtool.train.loop import TrainConfig

        p = replace(p, **{name: getattr(TrainConfig, name) for name in RECIPE_FIELDS
                          if getattr(p, name) is None})
    if p.lr is None and p.model in MODELS:
        p = replace(p, lr=MODELS[p.model].default_lr)
    if p.model == "organic_cnn" and p.device is None:
        p = replace(p, device=OPTICAL_CARD)
    if p.front_end == "optical":
        from cimtool.devices.card import load_card

        card = load_card(p.device or OPTICAL_CARD)
        if card.responsivity is None:
            raise CimtoolError(f"--front-end optical needs a card with [optical] responsivity; "
                               f"'{card.name}' has none")
        if p.max_photons is None:
            p = replace(p, max_photons=card.max_photons or DEFAULT_MAX_PHOTONS)
        p = replace(p, device=p.device or OPTICAL_CARD)
    if p.augment == "auto" and p.model in MODELS:  # LBPNet: its recipe's crop (no flips)
        on = p.model == "lbpnet" or (p.dataset == "cifar10" and not MODELS[p.model].uses_method)
        p = replace(p, augment="on" if on else "off")
    return p


def default_epochs(n_train: int) -> int:
    """Epochs that see EPOCH_BUDGET_SAMPLES training samples, at most DEFAULT_EPOCHS:
    150 on mnist5k (3,500) and digits, 146 on 3,600, 10 on Fashion-MNIST (54,000)."""
    return min(DEFAULT_EPOCHS, math.ceil(EPOCH_BUDGET_SAMPLES / n_train))


def _resolve_device(name: str):
    if name == "cuda" and not torch.cuda.is_available():
        raise CimtoolError("--torch-device cuda: no CUDA device is available (use cpu or auto)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    spread = (f" ± {s['test_accuracy_std']:.4f} ({len(s['test_accuracy_draws'])} photon-noise draws, "
              f"seed {s['eval_seed']})" if "test_accuracy_std" in s else "")
    return (f"[green]model[/green] {artifact.path}  test_accuracy {s['test_accuracy']:.4f}{spread}  "
            f"val_accuracy {s['val_accuracy']:.4f}")


def run(p: TrainAnnParams, out: Path | None, root: Path, force: bool, reporter: Reporter,
        resume: bool = False) -> artifacts.Artifact:
    p = resolve_defaults(p)
    validate(p)
    with process_group(_resolve_device(p.torch_device)) as (ranks, device):
        return _run(p, out, root, force, reporter if ranks.writes else replace(reporter, quiet=True), resume,
                    device, ranks)


def _run(p: TrainAnnParams, out: Path | None, root: Path, force: bool, reporter: Reporter, resume: bool,
         device: torch.device, ranks: Ranks) -> artifacts.Artifact | None:
    raw = load_dataset(p.dataset, Path(p.data_dir) if p.data_dir else None, p.allow_pickle,
                       image_size=p.image_size)
    splits = make_splits(raw.x, raw.y, p.split_seed, p.val_frac, p.test_frac, raw.test)
    _check_fit(p, raw, splits)
    if p.epochs is None:
        p = replace(p, epochs=default_epochs(len(splits.train)))
    spec = _make_spec(p, raw)
    params = {**asdict(p), "torch_device": device.type}
    if p.device is not None:  # the card's content, so later stages map onto it if the file moves or changes
        from cimtool.devices.card import load_card

        params["card"] = load_card(p.device).to_dict()
    name = f"{artifact_stem(p.dataset)}-{p.method if p.model == 'crossbar' else p.model}-s{p.seed}"
    if out is None and resume and ranks.writes:
        out_partial = artifacts.find_resumable(root / artifacts.KIND_DIRS[KIND],
                                               artifacts.sha256_json(params))
        if out_partial is None:
            raise CimtoolError(f"--resume: no interrupted train-ann run with these parameters "
                               f"under {root / artifacts.KIND_DIRS[KIND]}")
        out = out_partial.with_name(out_partial.name[: -len(artifacts.PARTIAL_SUFFIX)])
    output = StageOutput(KIND, out, root, name, force, writes=ranks.writes)
    out = output.path
    processes = f", {ranks.world} processes (torchrun)" if ranks.active else ""
    reporter.log(f"train-ann: {raw.name} ({raw.source}); train {len(splits.train)}, "
                 f"val {len(splits.val)}, test {len(splits.test)}{processes} → {out}")

    tensors = {k: _to_tensors(getattr(splits, k)) for k in ("train", "val", "test")}
    with output.writer(params, resume=resume, keep_on_interrupt=True) as writer:
        if resume and not writer.resumed:
            reporter.log(f"[yellow]--resume: nothing to resume at {writer.partial}; starting afresh")
        if writer.discarded_partial:
            reporter.log(f"[yellow]discarded an interrupted run at {writer.partial} "
                         "(pass --resume to continue one)")
        model, result = _train(p, spec, raw, tensors, device, writer.scratch, reporter, ranks)

        test = evaluate_draws(model, tensors["test"], device, p.seed)  # test is touched once, here

        model.cpu()
        save_model(writer.partial, model, spec)
        _write_table(writer.path("metrics.parquet"), result.metrics)
        _write_table(writer.path("timing.parquet"), result.timing)
        head_timing = [t for t in result.timing if t["phase"] in ("head", "model")]
        summary = {
            "test_accuracy": test["accuracy"],
            **({"test_accuracy_std": test["accuracy_std"], "test_accuracy_draws": test["accuracy_draws"],
                "eval_seed": test["eval_seed"]} if "accuracy_std" in test else {}),
            "val_accuracy": result.best_val_acc,
            "best_epoch": result.best_epoch,
            "n_train": len(splits.train), "n_val": len(splits.val), "n_test": len(splits.test),
            "n_parameters": int(sum(t.numel() for t in model.parameters())),
            "crossbar_layers": [layer["name"] for layer in spec["crossbar_layers"]],
            "torch_device": device.type,
            "compiled": result.compiled,
            "processes": ranks.world,
            "train_samples_per_s": float(np.median([t["samples_per_s"] for t in head_timing])),
        }
        if p.model == "lbpnet":  # the paper's cost metric, per stage in cost.parquet
            from cimtool.models.lbp_cost import cost_table

            table, cost = cost_table(model, tuple(spec["input_shape"]))
            pq.write_table(table, writer.path("cost.parquet"))
            summary.update(cost)
        inputs = [{"role": "dataset", "kind": "dataset", "name": raw.name, "source": raw.source,
                   "data_sha256": raw.sha256(), "split_sha256": splits.indices_sha256}]
        return output.commit(writer, inputs, summary)


def _to_tensors(split) -> TensorData:
    return TensorData(torch.from_numpy(split.x), torch.from_numpy(split.y))


def _train_config(p: TrainAnnParams, epochs: int, lr: float, augment: bool = False):
    crop = {}
    if p.model == "lbpnet":  # digits and clothes: shifts only, by the recipe's pad
        crop = {"augment_pad": lbp_config(p).recipe.augment_crop_pad, "augment_flip": False}
    return TrainConfig(epochs=epochs, batch_size=p.batch_size, lr=lr, optimizer=p.optimizer,
                       weight_decay=p.weight_decay, momentum=p.momentum,
                       warmup_epochs=p.warmup_epochs, label_smoothing=p.label_smoothing,
                       grad_clip=p.grad_clip, seed=p.seed, compile=p.compile, loader=p.loader,
                       augment=augment, **crop)


def _check_fit(p: TrainAnnParams, raw, splits) -> None:
    """Refuse splits and images the chosen model cannot train on."""
    for name in ("train", "val", "test"):
        if len(getattr(splits, name)) == 0:
            raise CimtoolError(f"the {name} split of {raw.name} is empty; adjust --val-frac/--test-frac")
    missing = sorted(set(range(raw.num_classes)) - set(np.unique(splits.train.y).tolist()))
    if missing:
        raise CimtoolError(f"the train split of {raw.name} has no samples of class(es) {missing}")
    entry = MODELS[p.model]
    if min(raw.x.shape[2:]) < entry.min_size:
        raise CimtoolError(f"--model {p.model} needs images of at least {entry.min_size}x"
                           f"{entry.min_size} pixels; {raw.name} has {list(raw.x.shape[2:])}")


def _optical_spec(p: TrainAnnParams) -> dict[str, Any] | None:
    if p.front_end != "optical":
        return None
    from cimtool.devices.card import load_card

    card = load_card(p.device)
    return {"device": card.name, "responsivity": list(card.responsivity), "max_photons": p.max_photons,
            "dark_current": p.dark_current, "full_well": p.full_well}


def _organic_spec(p: TrainAnnParams) -> dict[str, Any] | None:
    if p.model != "organic_cnn":
        return None
    from cimtool.devices.card import load_card

    card = load_card(p.device)
    spec = {"device": card.name, "g_min": card.g_min, "g_max": card.g_max, "read_voltage": card.read_voltage,
            "c2c": card.c2c_sigma, "variation_model": card.variation_model, "seed": p.seed}
    if p.organic_update == "pulses":
        if not card.has_update_curve:
            raise CimtoolError(f"--organic-update pulses needs the card's [update] section (nl_ltp, "
                               f"nl_ltd, pulses_ltp, pulses_ltd); {card.name} has none (cimtool devices fit "
                               "writes one)")
        spec["update"] = {"nl_ltp": card.nl_ltp, "nl_ltd": card.nl_ltd, "pulses_ltp": card.pulses_ltp,
                          "pulses_ltd": card.pulses_ltd}
    return spec


def _make_spec(p: TrainAnnParams, raw) -> dict[str, Any]:
    lbpnet = lbp_config(p, p.epochs).to_dict() if p.model == "lbpnet" else None
    try:
        return make_spec(p.model, p.method, tuple(raw.x.shape[1:]), raw.num_classes, list(p.hidden),
                         _optical_spec(p), _organic_spec(p), lbpnet)
    except (RuntimeError, MemoryError) as exc:  # e.g. an absurd --hidden width
        raise CimtoolError(f"cannot build --model {p.model} with --hidden {p.hidden}: "
                           f"{str(exc).splitlines()[0]}") from None


def _train(p: TrainAnnParams, spec: dict[str, Any], raw, tensors, device, scratch: Path,
           reporter: Reporter, ranks: Ranks):
    torch.manual_seed(p.seed)
    model = MODELS[p.model].build(spec)
    if not MODELS[p.model].uses_method:  # CNN: fit input normalisation, train everything
        with torch.no_grad():
            # a sensor: one gain for every band, so the bands' responsivity survives (docs/physics.md)
            model.normalize.fit(model.optical(tensors["train"].x.float().div(255.0)),
                                per_channel=spec.get("optical") is None)
        config = _train_config(p, p.epochs, p.lr, augment=p.augment == "on")
        recipe = None
        if p.model == "lbpnet":
            from cimtool.train.recipe import LbpRecipe

            recipe = LbpRecipe(model, model.cfg.recipe)
        result = fit(model, tensors["train"], tensors["val"], config, device,
                     scratch / "model.ckpt", "model", reporter, recipe, ranks)
        return model, result

    result = FitResult()
    fitting = FRONTENDS[p.method].fit  # how the off-array front-end is fitted
    if fitting == "pca":
        with torch.no_grad():
            model.frontend.fit_pca(model.optical(tensors["train"].x.float().div(255.0)))
    elif fitting == "supervised":
        # docs/physics.md#front-ends: train P with an auxiliary classifier W_aux; keep P, drop W_aux
        aux = torch.nn.Sequential(model.optical, model.frontend, torch.nn.Linear(64, raw.num_classes))
        config = _train_config(p, p.frontend_epochs, p.frontend_lr)
        result = fit(aux, tensors["train"], tensors["val"], config, device,
                     scratch / "frontend.ckpt", "frontend", reporter, ranks=ranks)
    model.frontend.requires_grad_(False)
    feats = {k: _features(model, v, device) for k, v in tensors.items()}
    model.scaler.fit(feats["train"].x)
    feats = {k: type(v)(model.scaler(v.x), v.y) for k, v in feats.items()}
    head = fit(model.head, feats["train"], feats["val"], _train_config(p, p.epochs, p.lr), device,
               scratch / "head.ckpt", "head", reporter, ranks=ranks)
    result.metrics += head.metrics
    result.timing += head.timing
    result.best_val_acc, result.best_epoch = head.best_val_acc, head.best_epoch
    result.compiled = result.compiled or head.compiled
    return model.to(device), result


def _features(model, data, device, batch_size: int = 4096):
    """Front-end outputs (before scaling) for a whole split, computed once."""
    model.frontend.to(device).eval()
    model.optical.to(device)
    with torch.no_grad():
        chunks = [model.frontend(model.optical(to_float(data.x[i: i + batch_size].to(device)))).float().cpu()
                  for i in range(0, len(data), batch_size)]
    return TensorData(torch.cat(chunks), data.y)


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)
