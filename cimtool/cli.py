"""The `cimtool` command line: one thin command per stage (heavy imports inside commands)."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from cimtool.errors import CimtoolError

app = typer.Typer(
    name="cimtool",
    help="Take neural networks onto compute-in-memory and spiking hardware built from emerging "
    "synaptic devices. Each command is a stage that reads and writes versioned artifacts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Options shared by every stage.
ArtifactsRoot = Annotated[
    Path,
    typer.Option(
        "--artifacts-root", envvar="CIMTOOL_ARTIFACTS", help="Root for default outputs and look-ups."
    ),
]
Out = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Output artifact directory (default: a new directory under the artifacts root)."
    ),
]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing --out artifact.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for initialisation and shuffling.")]
Json = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout (progress and logs go to stderr).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
TorchDevice = Annotated[
    str,
    typer.Option("--torch-device", help="Where torch computes: auto (CUDA when available), cpu or cuda."),
]
CalibrationSamples = Annotated[
    int,
    typer.Option(
        "--calibration-samples",
        help="Train samples (stratified, seeded by --seed) that set converter ranges and thresholds; "
        "a number above the split's size takes all of it.",
    ),
]


@app.callback()
def _global_options(
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            envvar="CIMTOOL_THREADS",
            help="CPU threads for torch (before the command: cimtool --threads 1 map-weights …). "
            "Default: OMP_NUM_THREADS if set, else the cores this process may run on (its CPU "
            "affinity), so that jobs side by side do not oversubscribe the machine.",
        ),
    ] = None,
) -> None:
    from cimtool.threads import keep_freed_memory, set_threads

    set_threads(threads)
    keep_freed_memory()


def _reporter(json_mode: bool, quiet: bool):
    from cimtool.ui import Reporter

    return Reporter(quiet=quiet, json_mode=json_mode)


def _emit(reporter, artifact, headline: str) -> None:
    reporter.result(
        {"artifact": str(artifact.path), "kind": artifact.kind, "summary": artifact.summary}, human=headline
    )


@app.command("train-ann")
def train_ann(
    dataset: Annotated[
        str,
        typer.Option(
            rich_help_panel="Data",
            help="mnist5k (embedded), digits (embedded), mnist or cifar10 (from --data-dir), "
            "fashion-mnist (from --data-dir, default /usr/share/datasets/fashion-mnist: "
            "apt-get install dataset-fashion-mnist).",
        ),
    ] = "mnist5k",
    data_dir: Annotated[
        Path | None,
        typer.Option(rich_help_panel="Data",
                     help="Folder with MNIST or Fashion-MNIST IDX files, or CIFAR-10 binary files."),
    ] = None,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            rich_help_panel="Data",
            help="Allow the python (pickle) CIFAR-10 batches; unpickling can run code.",
        ),
    ] = False,
    model: Annotated[
        str,
        typer.Option(
            rich_help_panel="Model",
            help="crossbar (front-end + 64-row crossbar head), vgg8, mnist_cnn or organic_cnn "
            "(organic optoelectronic synapses of --device).",
        ),
    ] = "crossbar",
    method: Annotated[
        str,
        typer.Option(
            rich_help_panel="Model",
            help="Front-end of the crossbar model: proj_sup_64, proj_pca_64, avgpool_8x8, bilinear_8x8.",
        ),
    ] = "proj_sup_64",
    hidden: Annotated[
        list[int] | None,
        typer.Option(
            rich_help_panel="Model", help="Hidden width of the crossbar head (repeat for more layers)."
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            rich_help_panel="Training",
            help="Epochs of the (head) training. Default: as many as see 525,000 training samples "
            "(150 epochs of mnist5k), at most 150: 150 on mnist5k and digits, 10 on Fashion-MNIST's "
            "54,000; the manifest records the number used.",
        ),
    ] = None,
    frontend_epochs: Annotated[
        int,
        typer.Option(
            rich_help_panel="Training",
            help="Epochs of the proj_sup_64 projection training, whatever the data set's size "
            "(unlike --epochs: the projection gains from more data).",
        ),
    ] = 20,
    frontend_lr: Annotated[
        float,
        typer.Option(
            rich_help_panel="Training",
            help="Peak learning rate per 256 samples of the proj_sup_64 projection training.",
        ),
    ] = 1e-2,
    batch_size: Annotated[int, typer.Option(rich_help_panel="Training", help="Mini-batch size.")] = 128,
    lr: Annotated[
        float | None,
        typer.Option(
            rich_help_panel="Training",
            help="Peak learning rate per 256 samples (scaled "
            "linearly with --batch-size); default: 0.04 for "
            "the crossbar head, 0.002 for CNNs.",
        ),
    ] = None,
    optimizer: Annotated[str, typer.Option(rich_help_panel="Training", help="adamw or sgd.")] = "adamw",
    weight_decay: Annotated[
        float, typer.Option(rich_help_panel="Training", help="Decoupled weight decay.")
    ] = 1e-4,
    momentum: Annotated[
        float, typer.Option(rich_help_panel="Training", help="SGD (Nesterov) momentum.")
    ] = 0.9,
    warmup_epochs: Annotated[
        float, typer.Option(rich_help_panel="Training", help="Linear warm-up before cosine decay.")
    ] = 1.0,
    label_smoothing: Annotated[
        float, typer.Option(rich_help_panel="Training", help="Label smoothing of the loss.")
    ] = 0.1,
    grad_clip: Annotated[
        float, typer.Option(rich_help_panel="Training", help="Max global gradient norm (0: off).")
    ] = 1.0,
    val_frac: Annotated[
        float, typer.Option(rich_help_panel="Data", help="Validation fraction (stratified).")
    ] = 0.1,
    test_frac: Annotated[
        float,
        typer.Option(
            rich_help_panel="Data", help="Test fraction, for data sets without an official test set."
        ),
    ] = 0.2,
    split_seed: Annotated[
        int, typer.Option(rich_help_panel="Data", help="Seed of the train/val/test split.")
    ] = 0,
    compile: Annotated[
        str,
        typer.Option(
            rich_help_panel="Training",
            help="torch.compile: auto (on CUDA; on CPU for runs estimated over 10 min), on, off.",
        ),
    ] = "auto",
    loader: Annotated[
        str, typer.Option(rich_help_panel="Training", help="auto, memory (in-memory batcher) or dataloader.")
    ] = "auto",
    augment: Annotated[
        str,
        typer.Option(
            rich_help_panel="Training",
            help="Random crop + horizontal flip of image batches (suits natural images, not digits): "
            "auto (on for CNNs on cifar10), on, off.",
        ),
    ] = "auto",
    torch_device: Annotated[
        str,
        typer.Option(
            "--torch-device", rich_help_panel="Training", help="Where torch trains: auto, cpu or cuda."
        ),
    ] = "auto",
    front_end: Annotated[
        str,
        typer.Option(
            "--front-end",
            rich_help_panel="Model",
            help="none, or optical: the organic optoelectronic sensor (inverse sRGB gamma, Poisson "
            "shot noise, R/G/B responsivity of --device) in front of the model.",
        ),
    ] = "none",
    max_photons: Annotated[
        float | None,
        typer.Option(
            rich_help_panel="Model",
            help="Photons per pixel at full white for --front-end optical (default: the card's, else 10000).",
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            rich_help_panel="Model",
            help="Device card of --front-end optical (its [optical] responsivity) and of --model "
            "organic_cnn (g_max, read voltage, C2C). Default: organic_ofet.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            rich_help_panel="Training",
            help="Continue an interrupted run with the same parameters "
            "from its last epoch checkpoint (the newest one under "
            "the artifacts root, or --out's).",
        ),
    ] = False,
    seed: Seed = 0,
    out: Out = None,
    force: Force = False,
    artifacts_root: ArtifactsRoot = Path("artifacts"),
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train a float model (front-end + crossbar head, or a CNN) and write a model artifact."""
    from cimtool.stages import train_ann as stage

    params = stage.TrainAnnParams(
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        allow_pickle=allow_pickle,
        model=model,
        method=method,
        hidden=list(hidden or []),
        epochs=epochs,
        frontend_epochs=frontend_epochs,
        frontend_lr=frontend_lr,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        momentum=momentum,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        grad_clip=grad_clip,
        val_frac=val_frac,
        test_frac=test_frac,
        split_seed=split_seed,
        seed=seed,
        compile=compile,
        loader=loader,
        augment=augment,
        torch_device=torch_device,
        front_end=front_end,
        max_photons=max_photons,
        device=device,
    )
    reporter = _reporter(json_, quiet)
    artifact = stage.run(params, out, artifacts_root, force, resume, reporter)
    s = artifact.summary
    _emit(
        reporter,
        artifact,
        f"[green]model[/green] {artifact.path}  test_accuracy "
        f"{s['test_accuracy']:.4f}  val_accuracy {s['val_accuracy']:.4f}",
    )


@app.command("inspect")
def inspect(
    path: Annotated[Path, typer.Argument(help="An artifact directory.")],
    hashes_only: Annotated[
        bool,
        typer.Option(help="Check the manifest, payload hashes and inputs only, not the content (fast: no "
                     "model rebuild); what pipelines use to skip finished stages."),
    ] = False,
    json_: Json = False,
) -> None:
    """Validate an artifact (schema, payload hashes, unchanged inputs, content) and show its manifest."""
    from cimtool.stages import inspect as stage

    stage.run(path, _reporter(json_, False), deep=not hashes_only)


# Mapping options shared by map-weights and export-weightmap (None: the default / the cmap's).
_MAP = "Mapping"
_SIM = "Simulation (with --evaluate)"
Device = Annotated[
    str | None,
    typer.Option(
        rich_help_panel=_MAP,
        help="Device card: a preset (cimtool devices list) or a .toml file. Default: rram_seed003.",
    ),
]
WeightBits = Annotated[
    int | None,
    typer.Option(
        rich_help_panel=_MAP,
        help="2^N conductance levels over the card's range and spacing (default: the card's levels).",
    ),
]
Scaling = Annotated[
    str | None,
    typer.Option(
        rich_help_panel=_MAP,
        help="Weight scale: shared_max (max|W| per layer, default), per_column, percentile.",
    ),
]
ScalePercentile = Annotated[
    float | None,
    typer.Option(rich_help_panel=_MAP, help="Percentile of |W| for --scaling percentile (default 99.9)."),
]
Normalize = Annotated[
    str | None,
    typer.Option(
        rich_help_panel=_MAP,
        help="Level targets: gmax (n vs G_k/g_max, seed 003; default) or range (n vs "
        "(G_k-g_min)/(g_max-g_min): no bias from the g_min floor on low on/off devices).",
    ),
]
ArrayRows = Annotated[
    int | None, typer.Option(rich_help_panel=_MAP, help="Rows of one physical array (default 128).")
]
ArrayCols = Annotated[
    int | None,
    typer.Option(
        rich_help_panel=_MAP, help="Physical columns of one array, pos+neg pairs (default 128)."
    ),
]
Layout = Annotated[
    str | None,
    typer.Option(
        rich_help_panel=_MAP,
        help="Physical columns of output j: interleaved (2j, 2j+1; default) or blocked (j, J+j).",
    ),
]
ModelPath = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="Model artifact (default: the newest model trained with --method under the artifacts root).",
    ),
]
ModelDataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder of the model's data set, if it moved since training."),
]
Method = Annotated[
    str, typer.Option(help="Front-end of the model to look up when --model is not given.")
]


def _effects(text: str) -> tuple[str, ...]:
    """--effects: comma-separated names, or all / none."""
    from cimtool.nn.array import EFFECTS

    named = {"all": EFFECTS, "none": ()}.get(text.strip())
    return named if named is not None else tuple(e.strip() for e in text.split(",") if e.strip())


def _mapping(**given):
    return {k: v for k, v in given.items() if v is not None}


@app.command("map-weights")
def map_weights(
    model: ModelPath = None,
    method: Method = "proj_sup_64",
    device: Device = None,
    weight_bits: WeightBits = None,
    scaling: Scaling = None,
    scale_percentile: ScalePercentile = None,
    normalize: Normalize = None,
    array_rows: ArrayRows = None,
    array_cols: ArrayCols = None,
    layout: Layout = None,
    program: Annotated[
        bool,
        typer.Option(
            rich_help_panel=_MAP,
            help="Also draw one chip's programmed conductances (D2D, write noise, stuck-at; --seed).",
        ),
    ] = False,
    evaluate: Annotated[
        bool,
        typer.Option(
            rich_help_panel=_SIM,
            help="Accuracy of float vs mapped (ideal) vs mapped with the card's non-idealities.",
        ),
    ] = False,
    split: Annotated[
        str, typer.Option(rich_help_panel=_SIM, help="Split to evaluate on: test, val or train.")
    ] = "test",
    trials: Annotated[
        int, typer.Option(rich_help_panel=_SIM, help="Monte Carlo trials (fresh chip each).")
    ] = 10,
    effects: Annotated[
        str,
        typer.Option(
            rich_help_panel=_SIM,
            help="Non-idealities, comma-separated: d2d,c2c,stuck,drift,ir,read (or all, none).",
        ),
    ] = "all",
    adc_bits: Annotated[
        int | None, typer.Option(rich_help_panel=_SIM, help="ADC bits (default: the card's).")
    ] = None,
    scheme: Annotated[
        str | None,
        typer.Option(
            rich_help_panel=_SIM,
            help="Readout: A (each column digitised, then subtracted) or B (I_pos-I_neg into one "
            "ADC). Default: the card's.",
        ),
    ] = None,
    input_bits: Annotated[
        int | None, typer.Option(rich_help_panel=_SIM, help="DAC/input bits (default: the card's).")
    ] = None,
    encoding: Annotated[
        str,
        typer.Option(
            rich_help_panel=_SIM,
            help="analog (one read, DAC voltages) or bitserial (one binary read per input bit).",
        ),
    ] = "analog",
    drift_time: Annotated[
        float,
        typer.Option(rich_help_panel=_SIM, help="Seconds after programming, for drift."),
    ] = 3600.0,
    data_dir: ModelDataDir = None,
    calibration_samples: CalibrationSamples = 2048,
    torch_device: TorchDevice = "auto",
    seed: Seed = 0,
    out: Out = None,
    force: Force = False,
    artifacts_root: ArtifactsRoot = Path("artifacts"),
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Map a model's crossbar layers onto device conductance levels (and simulate the array)."""
    from cimtool.stages import map_weights as stage

    params = stage.MapParams(
        mapping=stage.MappingOptions(
            **_mapping(device=device, weight_bits=weight_bits, scaling=scaling,
                       scale_percentile=scale_percentile, normalize=normalize, array_rows=array_rows,
                       array_cols=array_cols, layout=layout)
        ),
        model=str(model) if model else None,
        method=method,
        program=program,
        evaluate=evaluate,
        split=split,
        trials=trials,
        effects=_effects(effects),
        adc_bits=adc_bits,
        scheme=scheme,
        input_bits=input_bits,
        encoding=encoding,
        drift_time=drift_time,
        data_dir=str(data_dir) if data_dir else None,
        seed=seed,
        calibration_samples=calibration_samples,
        torch_device=torch_device,
    )
    reporter = _reporter(json_, quiet)
    artifact = stage.run(params, out, artifacts_root, force, reporter)
    s = artifact.summary
    headline = f"[green]cmap[/green] {artifact.path}  {s['n_cells']} cells on {s['n_arrays']} array(s)"
    if "accuracy_float" in s:
        headline += (
            f"  {s['split']} accuracy: float {s['accuracy_float']:.4f}, mapped ideal "
            f"{s['accuracy_mapped_ideal']:.4f}, non-ideal {s['accuracy_nonideal_mean']:.4f} ± "
            f"{s['accuracy_nonideal_std']:.4f} ({s['trials']} trials)"
        )
    _emit(reporter, artifact, headline)


@app.command("export-weightmap")
def export_weightmap(
    model: ModelPath = None,
    method: Method = "proj_sup_64",
    cmap: Annotated[
        Path | None,
        typer.Option(help="Export an existing conductance map (from map-weights) instead of a model."),
    ] = None,
    device: Device = None,
    weight_bits: WeightBits = None,
    scaling: Scaling = None,
    scale_percentile: ScalePercentile = None,
    normalize: Normalize = None,
    array_rows: ArrayRows = None,
    array_cols: ArrayCols = None,
    layout: Layout = None,
    with_resistance: Annotated[
        bool, typer.Option(help="Append R_pos,R_neg (ohm) to each line.")
    ] = False,
    out: Out = None,
    force: Force = False,
    artifacts_root: ArtifactsRoot = Path("artifacts"),
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Write the device team's CSVs: row,col_pos,col_neg,level_pos,level_neg,G_pos,G_neg per layer,
    plus the logical output → physical column table."""
    from cimtool.stages import export_weightmap as stage

    params = stage.ExportParams(
        model=str(model) if model else None,
        method=method,
        cmap=str(cmap) if cmap else None,
        device=device,
        weight_bits=weight_bits,
        scaling=scaling,
        scale_percentile=scale_percentile,
        normalize=normalize,
        array_rows=array_rows,
        array_cols=array_cols,
        layout=layout,
        with_resistance=with_resistance,
    )
    reporter = _reporter(json_, quiet)
    artifact = stage.run(params, out, artifacts_root, force, reporter)
    s = artifact.summary
    files = ", ".join(f"{v['weightmap']} ({v['lines']} lines)" for v in s["layers"].values())
    _emit(reporter, artifact, f"[green]weightmap[/green] {artifact.path}  {files}; {s['layout']} columns")


@app.command("qat")
def qat(
    mode: Annotated[
        str,
        typer.Option(
            help="ptq (quantize to the device levels, no training), qat (fine-tune on the levels "
            "with a straight-through estimator), noise (qat + the card's D2D/C2C/read noise) or "
            "onchip (NeuroSim V2.1 on-chip training: pulses along the card's LTP/LTD curves).",
        ),
    ] = "qat",
    model: ModelPath = None,
    method: Method = "proj_sup_64",
    device: Device = None,
    weight_bits: WeightBits = None,
    scaling: Scaling = None,
    scale_percentile: ScalePercentile = None,
    normalize: Normalize = None,
    epochs: Annotated[int, typer.Option(rich_help_panel="Training", help="Fine-tuning epochs.")] = 30,
    lr: Annotated[
        float | None,
        typer.Option(
            rich_help_panel="Training",
            help="Peak learning rate per 256 samples (default: the model's training LR x 0.25); "
            "for --mode onchip the QG gradient scale (default 0.25).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(rich_help_panel="Training", help="Mini-batch size.")] = 128,
    noise_scale: Annotated[
        float,
        typer.Option(rich_help_panel="Training", help="Scale of the card's sigmas in --mode noise training."),
    ] = 1.0,
    grad_bits: Annotated[
        int, typer.Option(rich_help_panel="On-chip", help="WAGE gradient bits (--mode onchip).")
    ] = 5,
    nl_d2d: Annotated[
        float,
        typer.Option(
            rich_help_panel="On-chip", help="Device-to-device spread (σ) of the LTP/LTD nonlinearity."
        ),
    ] = 0.0,
    trials: Annotated[
        int,
        typer.Option(help="Monte Carlo chips for the plain vs new comparison on the array simulator."),
    ] = 10,
    data_dir: ModelDataDir = None,
    calibration_samples: CalibrationSamples = 2048,
    torch_device: TorchDevice = "auto",
    seed: Seed = 0,
    out: Out = None,
    force: Force = False,
    artifacts_root: ArtifactsRoot = Path("artifacts"),
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Hardware-aware model on a device card's levels: PTQ, QAT, noise-aware or on-chip training."""
    from cimtool.stages import map_weights
    from cimtool.stages import qat as stage

    params = stage.QatParams(
        mode=mode,
        model=str(model) if model else None,
        method=method,
        mapping=map_weights.MappingOptions(
            **_mapping(device=device, weight_bits=weight_bits, scaling=scaling,
                       scale_percentile=scale_percentile, normalize=normalize)
        ),
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        noise_scale=noise_scale,
        grad_bits=grad_bits,
        nl_d2d=nl_d2d,
        trials=trials,
        data_dir=str(data_dir) if data_dir else None,
        seed=seed,
        calibration_samples=calibration_samples,
        torch_device=torch_device,
    )
    reporter = _reporter(json_, quiet)
    artifact = stage.run(params, out, artifacts_root, force, reporter)
    s = artifact.summary
    _emit(
        reporter,
        artifact,
        f"[green]qmodel[/green] {artifact.path}  test accuracy: float {s['float_accuracy']:.4f}, "
        f"PTQ {s['ptq_accuracy']:.4f}, {s['mode']} {s['test_accuracy']:.4f}; on the array with "
        f"every non-ideality: plain {s['nonideal_plain_mean']:.4f} ± {s['nonideal_plain_std']:.4f}, "
        f"{s['mode']} {s['nonideal_mean']:.4f} ± {s['nonideal_std']:.4f} ({s['trials']} trials)",
    )


# Spiking options shared by calibrate-threshold and sweep.
_SNN = "Spiking network"
Neuron = Annotated[
    str,
    typer.Option(
        rich_help_panel=_SNN,
        help="stbif (signed bounded spike tracer, SpikeZIP-TF; reset by subtraction) or if "
        "(integrate-and-fire, positive spikes).",
    ),
]
Reset = Annotated[
    str,
    typer.Option(rich_help_panel=_SNN, help="soft (subtract the threshold) or hard (to zero; --neuron if)."),
]
Levels = Annotated[
    int, typer.Option(rich_help_panel=_SNN, help="Levels L of the equivalent quantized activation.")
]
Bounds = Annotated[
    str,
    typer.Option(
        rich_help_panel=_SNN,
        help="Spike-count bounds: asymmetric (0..L-1, suits ReLU) or symmetric (-(L//2)..L//2-1).",
    ),
]
SnnEncoding = Annotated[
    str,
    typer.Option(
        "--encoding",
        rich_help_panel=_SNN,
        help="Input encoding: analog (the value as a current at the first step) or rate (a spike "
        "per step with probability |x|/range).",
    ),
]
Stop = Annotated[
    str,
    typer.Option(
        rich_help_panel=_SNN,
        help="silent (stop each layer once silent, at most --timesteps; same result, less work) or "
        "fixed (always --timesteps steps).",
    ),
]


@app.command("calibrate-threshold")
def calibrate_threshold(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Model or qmodel artifact (default: the newest model trained with --method under "
            "the artifacts root).",
        ),
    ] = None,
    method: Method = "proj_sup_64",
    timesteps: Annotated[
        int, typer.Option(rich_help_panel=_SNN, help="Timesteps T the thresholds are chosen for.")
    ] = 32,
    neuron: Neuron = "stbif",
    reset: Reset = "soft",
    levels: Levels = 16,
    bounds: Bounds = "asymmetric",
    encoding: SnnEncoding = "analog",
    stop: Stop = "silent",
    percentiles: Annotated[
        str,
        typer.Option(
            rich_help_panel="Calibration",
            help="Percentiles p of each layer's activations on train (comma-separated; 'max' = the maximum).",
        ),
    ] = "99.9,99.99,max",
    ratios: Annotated[
        str,
        typer.Option(
            rich_help_panel="Calibration",
            help="Ratios r to try on val: the top level sits at r x P_p (comma-separated, > 0).",
        ),
    ] = "0.5,0.6,0.7,0.8,0.9,1,1.1,1.25,1.5",
    data_dir: ModelDataDir = None,
    calibration_samples: CalibrationSamples = 2048,
    torch_device: TorchDevice = "auto",
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of rate-coded input spikes and of the calibration sample.")
    ] = 0,
    out: Out = None,
    force: Force = False,
    artifacts_root: ArtifactsRoot = Path("artifacts"),
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Convert a model to spiking neurons and choose per-layer thresholds on val (writes an SNN artifact)."""
    from cimtool.nn.snn import SnnConfig
    from cimtool.stages import calibrate_threshold as stage
    from cimtool.stages.common import parse_numbers

    params = stage.CalibrateParams(
        model=str(model) if model else None,
        method=method,
        snn=SnnConfig(neuron=neuron, reset=reset, levels=levels, bounds=bounds, encoding=encoding,
                      timesteps=timesteps, stop=stop),
        percentiles=stage.parse_percentiles(percentiles),
        ratios=parse_numbers(ratios, "--ratios", float),
        data_dir=str(data_dir) if data_dir else None,
        seed=seed,
        calibration_samples=calibration_samples,
        torch_device=torch_device,
    )
    reporter = _reporter(json_, quiet)
    artifact = stage.run(params, out, artifacts_root, force, reporter)
    s = artifact.summary
    _emit(
        reporter,
        artifact,
        f"[green]snn[/green] {artifact.path}  p{s['percentile']} x {s['ratio']:g}; test accuracy at "
        f"T={s['timesteps']}: SNN {s['test_accuracy']:.4f}, ANN {s['ann_test_accuracy']:.4f}, quantized ANN "
        f"{s['quantized_ann_test_accuracy']:.4f}; run-until-silent = quantized ANN on "
        f"{s['equivalence_agreement']:.2%} of val",
    )


@app.command("sweep")
def sweep(
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            help="Model, qmodel or snn artifact to sweep (repeat for several; an snn brings its "
            "thresholds, neuron and encoding). Default: the newest model of each --method.",
        ),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(help="Front-end(s) whose newest model to sweep when --model is not given "
                     "(repeat for several; default proj_sup_64)."),
    ] = None,
    device: Device = None,
    scheme: Annotated[
        str, typer.Option(rich_help_panel="Grid", help="Readout schemes (comma-separated): A, B.")
    ] = "A,B",
    adc_bits: Annotated[
        str, typer.Option(rich_help_panel="Grid", help="ADC bits (comma-separated).")
    ] = "3,4,5,6,8",
    weight_bits: Annotated[
        str, typer.Option(rich_help_panel="Grid", help="Weight bits: 2^N levels over the card's range.")
    ] = "2,3,4,5,6,8",
    timesteps: Annotated[str, typer.Option(rich_help_panel="Grid", help="Timesteps T.")] = "1,2,4,8,16,32",
    effects: Annotated[
        str,
        typer.Option(
            rich_help_panel="Grid",
            help="Non-idealities, comma-separated: d2d,c2c,stuck,drift,ir,read (or all, none).",
        ),
    ] = "all",
    trials: Annotated[
        int,
        typer.Option(rich_help_panel="Grid", help="Chips (Monte Carlo) per configuration; the same for all."),
    ] = 3,
    tolerance: Annotated[
        float,
        typer.Option(
            rich_help_panel="Selection",
            help="The recommendation is the cheapest configuration within this many accuracy points "
            "of the best (val).",
        ),
    ] = 0.5,
    array_rows: ArrayRows = None,
    array_cols: ArrayCols = None,
    data_dir: ModelDataDir = None,
    calibration_samples: CalibrationSamples = 2048,
    torch_device: TorchDevice = "auto",
    seed: Annotated[
        int,
        typer.Option("--seed", help="Seed of the chips, of rate-coded spikes and of the calibration sample."),
    ] = 0,
    out: Out = None,
    force: Force = False,
    artifacts_root: ArtifactsRoot = Path("artifacts"),
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Design-space sweep on val (scheme x ADC bits x weight bits x T per model) on the array simulator,
    best case and the cheapest configuration within --tolerance; both then evaluated on test once."""
    from cimtool.stages import sweep as stage
    from cimtool.stages.common import parse_numbers

    params = stage.SweepParams(
        models=tuple(str(m) for m in model or []),
        methods=tuple(method or ["proj_sup_64"]),
        **_mapping(device=device, array_rows=array_rows, array_cols=array_cols),
        schemes=tuple(dict.fromkeys(x.strip().upper() for x in scheme.split(",") if x.strip())),
        adc_bits=parse_numbers(adc_bits, "--adc-bits"),
        weight_bits=parse_numbers(weight_bits, "--weight-bits"),
        timesteps=parse_numbers(timesteps, "--timesteps"),
        effects=_effects(effects),
        trials=trials,
        tolerance=tolerance,
        data_dir=str(data_dir) if data_dir else None,
        seed=seed,
        calibration_samples=calibration_samples,
        torch_device=torch_device,
    )
    reporter = _reporter(json_, quiet)
    artifact = stage.run(params, out, artifacts_root, force, reporter)
    s = artifact.summary

    def cfg(c):
        return (f"{c['method']} w{c['weight_bits']} {c['scheme']} adc{c['adc_bits']} T{c['timesteps']}: val "
                f"{c['val_mean']:.4f}, test {c['test_mean']:.4f} ± {c['test_std']:.4f}, "
                f"{c['energy_pj']:.3g} pJ")

    _emit(reporter, artifact, f"[green]sweep[/green] {artifact.path}  {s['n_configs']} configurations\n"
          f"  best:        {cfg(s['best'])}\n  recommended: {cfg(s['recommended'])}")


@app.command("neurosim-trace")
def neurosim_trace(
    model: ModelPath = None,
    method: Method = "proj_sup_64",
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="v13 (DNN_NeuroSim V1.3/V1.4 inference: weight + input files) or v21 (V2.1 training: "
            "adds weightOld files and each layer's input activity).",
        ),
    ] = "v13",
    weight_bits: Annotated[int, typer.Option(help="Weight precision (NeuroSim's WBITS).")] = 8,
    input_bits: Annotated[int, typer.Option(help="Input activation precision (NeuroSim's ABITS).")] = 8,
    split: Annotated[str, typer.Option(help="Split the batch comes from: test, val or train.")] = "test",
    batch_size: Annotated[
        int, typer.Option(help="Samples whose input bit activity is averaged (the trace has one of them).")
    ] = 16,
    sample: Annotated[int, typer.Option(help="Index in the batch of the sample written to input*.csv.")] = 0,
    data_dir: ModelDataDir = None,
    out: Out = None,
    force: Force = False,
    artifacts_root: ArtifactsRoot = Path("artifacts"),
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Write a DNN+NeuroSim layer record (NetWork.csv, weight/input CSVs, trace_command.sh) of a model."""
    from cimtool.stages import neurosim_trace as stage

    params = stage.TraceParams(model=str(model) if model else None, method=method, format=format,
                               weight_bits=weight_bits, input_bits=input_bits, split=split,
                               batch_size=batch_size, sample=sample,
                               data_dir=str(data_dir) if data_dir else None)
    reporter = _reporter(json_, quiet)
    artifact = stage.run(params, out, artifacts_root, force, reporter)
    s = artifact.summary
    activity = ", ".join(f"{a:.3f}" for a in s["activity_batch"])
    _emit(reporter, artifact, f"[green]trace[/green] {artifact.path}  {s['n_layers']} layers ({s['format']}, "
          f"{s['weight_bits']}/{s['input_bits']} bits); input bit activity over the batch: {activity}")


@app.command("run-neurosim")
def run_neurosim(
    trace: Annotated[Path, typer.Option("--trace", help="Trace artifact (from neurosim-trace).")],
    neurosim: Annotated[
        str | None,
        typer.Option(
            "--neurosim",
            envvar="CIMTOOL_NEUROSIM",
            help="Your DNN_NeuroSim checkout (V1.3/V1.4 inference or V2.1 training; its NeuroSIM "
            "folder or the repository root) or a built binary. Default: the source inside an installed "
            "hwcomponents-neurosim.",
        ),
    ] = None,
    device: Device = None,
    cell: Annotated[
        str, typer.Option(rich_help_panel="Chip (Param.cpp)", help="Memory cell: rram, sram or fefet.")
    ] = "rram",
    cell_bits: Annotated[
        int | None,
        typer.Option(
            rich_help_panel="Chip (Param.cpp)", help="Bits per cell (default: log2 of the card's levels)."
        ),
    ] = None,
    adc_bits: Annotated[
        int | None,
        typer.Option(
            rich_help_panel="Chip (Param.cpp)", help="ADC bits: levelOutput = 2^N (default: the card's)."
        ),
    ] = None,
    subarray: Annotated[
        int, typer.Option(rich_help_panel="Chip (Param.cpp)", help="Subarray rows = columns.")
    ] = 128,
    technode: Annotated[
        int, typer.Option(rich_help_panel="Chip (Param.cpp)", help="Technology node in nm.")
    ] = 22,
    timeout: Annotated[float, typer.Option(help="Seconds NeuroSim may run.")] = 3600.0,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Where built NeuroSims are kept (default: $CIMTOOL_CACHE/neurosim or "
                     "~/.cache/cimtool/neurosim)."),
    ] = None,
    out: Out = None,
    force: Force = False,
    artifacts_root: ArtifactsRoot = Path("artifacts"),
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Build DNN+NeuroSim for a device card and run it on a trace: area, latency, energy, TOPS/W."""
    from cimtool.stages import run_neurosim as stage

    params = stage.RunParams(trace=str(trace), neurosim=neurosim, **_mapping(device=device), cell=cell,
                             cell_bits=cell_bits, adc_bits=adc_bits, subarray=subarray, technode=technode,
                             timeout=timeout, cache_dir=str(cache_dir) if cache_dir else None)
    reporter = _reporter(json_, quiet)
    artifact = stage.run(params, out, artifacts_root, force, reporter)
    s = artifact.summary
    _emit(reporter, artifact, f"[green]neurosim[/green] {artifact.path}  area {s['chip_area_um2']:.4g} um^2, "
          f"latency {s['latency_ns']:.4g} ns, dynamic energy {s['dynamic_energy_pj']:.4g} pJ, "
          f"{s['tops_per_w']:.4g} TOPS/W, {s['fps']:.4g} FPS")


@app.command("profile")
def profile(
    model: Annotated[
        Path,
        typer.Option("--model",
                     help="Model, qmodel or snn artifact (an snn brings its T, neuron and encoding)."),
    ],
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes to scan (comma-separated).")] = "1,16,64,256",
    modes: Annotated[
        str, typer.Option(help="What to time: ann_eager, ann_compiled, snn, one_pass (comma-separated).")
    ] = "ann_eager,ann_compiled,snn,one_pass",
    repeats: Annotated[int, typer.Option(help="Timed runs per figure (the median is reported).")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing.")] = 3,
    torch_device: Annotated[
        str, typer.Option("--torch-device", help="auto, cpu or cuda (CUDA events and bf16 rows on a GPU).")
    ] = "auto",
    data_dir: ModelDataDir = None,
    calibration_samples: CalibrationSamples = 2048,
    seed: Seed = 0,
    out: Out = None,
    force: Force = False,
    artifacts_root: ArtifactsRoot = Path("artifacts"),
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    ("Latency, throughput and memory of the ANN (eager, compiled) vs its spiking simulation "
     "and one-pass twin.")
    from cimtool.stages import profile as stage
    from cimtool.stages.common import parse_numbers

    params = stage.ProfileParams(model=str(model), batch_sizes=parse_numbers(batch_sizes, "--batch-sizes"),
                                 repeats=repeats, warmup=warmup,
                                 modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
                                 torch_device=torch_device, data_dir=str(data_dir) if data_dir else None,
                                 seed=seed, calibration_samples=calibration_samples)
    reporter = _reporter(json_, quiet)
    artifact = stage.run(params, out, artifacts_root, force, reporter)
    if not (quiet or json_):
        reporter.console.print(stage.table(artifact))
    s = artifact.summary
    ratio = f"SNN/ANN {s['snn_over_ann']:.2f}x, " if s.get("snn_over_ann") else ""
    speedup = (f"one-pass {s['one_pass_speedup']:.1f}x faster than the SNN"
               if s.get("one_pass_speedup") else "")
    _emit(reporter, artifact,
          f"[green]profile[/green] {artifact.path}  batch {s.get('batch_size')}: {ratio}{speedup}")


@app.command("report")
def report(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Artifacts and/or folders to search (default: the artifacts root)."),
    ] = None,
    title: Annotated[str, typer.Option(help="Report title.")] = "cimtool report",
    out: Out = None,
    force: Force = False,
    artifacts_root: ArtifactsRoot = Path("artifacts"),
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Markdown + self-contained HTML report (tables, plots, every artifact with its hash)."""
    from cimtool.stages import report as stage

    params = stage.ReportParams(paths=tuple(str(p) for p in paths or []), title=title)
    reporter = _reporter(json_, quiet)
    artifact = stage.run(params, out, artifacts_root, force, reporter)
    s = artifact.summary
    _emit(reporter, artifact,
          f"[green]report[/green] {artifact.path / 'report.html'}  {s['artifacts']} artifacts, "
          f"{s['figures']} figures, {s['accuracy_rows']} accuracy rows")


devices_app = typer.Typer(help="List and show device cards (presets or your own TOML files).",
                          no_args_is_help=True)
app.add_typer(devices_app, name="devices")


@devices_app.command("list")
def devices_list(json_: Json = False) -> None:
    """The shipped device cards."""
    from cimtool.stages import devices as stage

    stage.list_cards(_reporter(json_, False))


@devices_app.command("show")
def devices_show(
    card: Annotated[str, typer.Argument(help="A preset name or a path to a .toml card.")],
    json_: Json = False,
) -> None:
    """Validate a device card and print every field (assumed values are marked)."""
    from cimtool.stages import devices as stage

    stage.show_card(card, _reporter(json_, False))


INTERRUPTED = "cimtool: interrupted (an interrupted train-ann continues with --resume)"


def _is_usage_error(exc: Exception) -> bool:
    """click's (or typer's vendored click's) usage errors, recognised without importing click."""
    return hasattr(exc, "format_message") and hasattr(exc, "exit_code")


def _fail(message: str, code: int) -> None:
    sys.stderr.write(" ".join(message.split()) + "\n")  # always exactly one line
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2; bugs print a traceback and exit 1."""
    try:
        code = app(args=argv, standalone_mode=False)
    except CimtoolError as exc:
        _fail(f"cimtool: error: {exc}", 2)
    except (typer.Abort, KeyboardInterrupt):
        _fail(INTERRUPTED, 130)
    except typer.Exit as exc:
        if exc.exit_code == 130:  # Ctrl-C, as older typer versions report it
            _fail(INTERRUPTED, 130)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - classify, then show bugs in full
        if type(exc).__name__ == "NoArgsIsHelpError" and getattr(exc, "ctx", None):
            print(exc.ctx.get_help())
            sys.exit(0)
        if _is_usage_error(exc):
            ctx = getattr(exc, "ctx", None)
            where = f" ({ctx.command_path})" if ctx is not None else ""
            _fail(f"cimtool: error{where}: {exc.format_message()}", 2)
        traceback.print_exc()
        _fail("cimtool: internal error (a bug) - please report it with the traceback above", 1)
    if code == 130:  # typer returns Ctrl-C as exit code 130 when not in standalone mode
        _fail(INTERRUPTED, 130)
    sys.exit(code if isinstance(code, int) else 0)
