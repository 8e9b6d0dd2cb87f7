"""What each stage is asked to do: one params dataclass per stage, every field an option.

The command line is derived from these classes (``cimtool/options.py``): a field's help, panel,
flag and parser are declared here once, and the manifest records ``asdict(params)`` (field order
is part of the artifact bytes: append new fields, do not reorder). Options several stages share
are declared once below (``seed``, ``torch_device``, ``calibration_samples``, ``model``, …) or
borrowed from the domain class that owns them (``MappingOptions``, ``SnnConfig``).

Light to import: ``cimtool --help`` loads it, so it must not load torch, numpy or pyarrow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cimtool.data.calibration import CALIBRATION_SAMPLES
from cimtool.devices.mapping_options import MAP, MappingOptions
from cimtool.nn.array_config import EFFECTS, parse_effects
from cimtool.nn.snn_config import SnnConfig
from cimtool.options import comma_list, comma_text, like, numbers, option, text

SIM = "Simulation (with --evaluate)"
PERCENTILES = ("99.9", "99.99", "max")
DEFAULT_RATIOS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5)
PROFILE_MODES = ("ann_eager", "ann_compiled", "snn", "one_pass")


# --- options several stages share ------------------------------------------------------------------

def seed_option(help: str = "Seed for initialisation and shuffling."):
    return option(0, help=help)


def torch_device_option(help: str = "Where torch computes: auto (CUDA when available), cpu or cuda.",
                        panel: str | None = None):
    return option("auto", help=help, panel=panel)


def calibration_samples_option():
    return option(CALIBRATION_SAMPLES, help="Train samples (stratified, seeded by --seed) that set "
                                            "converter ranges and thresholds; a number above the split's "
                                            "size takes all of it.")


def data_dir_option():
    return option(None, cli_type=Path | None, parse=text,
                  help="Folder of the model's data set (its .npz file for --dataset npz:PATH), if it "
                       "moved since training.")


def model_option(help: str = "Model artifact (default: the newest model trained with --method under the "
                 "artifacts root)."):
    return option(None, cli_type=Path | None, parse=text, help=help)


def method_option():
    return option("proj_sup_64", help="Front-end of the model to look up when --model is not given.")


def effects_option(panel: str):
    return option(EFFECTS, panel=panel, cli_type=str, parse=parse_effects, show=lambda v: "all",
                  help="Non-idealities, comma-separated: d2d,c2c,stuck,drift,ir,read (or all, none).")


def neurosim_option(panel: str | None = None):
    return option(None, envvar="CIMTOOL_NEUROSIM", panel=panel,
                  help="Your DNN_NeuroSim checkout (V1.3 or V1.4/V1.5 inference, V2.1 training; its NeuroSIM "
                       "folder or the repository root) or a built binary. Default: the source inside an "
                       "installed hwcomponents-neurosim.")


def neurosim_cache_option(panel: str | None = None):
    return option(None, cli_type=Path | None, parse=text, panel=panel,
                  help="Where built NeuroSims (and, for sweep, NeuroSim estimates) are kept (default: "
                       "$CIMTOOL_CACHE/neurosim or ~/.cache/cimtool/neurosim).")


def technode_option(panel: str):
    return option(22, panel=panel, help="Technology node in nm.")


def numbers_option(default: tuple, kind: type, help: str, panel: str | None = None):
    """A comma-separated list of numbers."""
    return option(default, panel=panel, cli_type=str, parse=numbers(kind), show=comma_text, help=help)


def parse_percentiles(given: str) -> tuple[str, ...]:
    """--percentiles: numbers in (0, 100] or 'max', as written."""
    out = []
    for item in (s.strip() for s in str(given).split(",") if s.strip()):
        if item != "max":
            try:
                value = float(item)
            except ValueError:
                raise ValueError(f"'{item}' is not a number or 'max'") from None
            if not 0 < value <= 100:
                raise ValueError(f"{item} is outside (0, 100]")
        out.append(item)
    if not out:
        raise ValueError("empty")
    return tuple(dict.fromkeys(out))


def _subarray(given: str | int | None) -> int | None:
    """--subarray: a size, or auto (None)."""
    if given is None or str(given).strip().lower() == "auto":
        return None
    try:
        return int(given)
    except ValueError:
        raise ValueError(f"'{given}' is not a number or auto") from None


def _schemes(given: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(comma_list(str.upper)(given)))


# --- the stages, in pipeline order ------------------------------------------------------------------

@dataclass(frozen=True)
class TrainAnnParams:
    dataset: str = option("mnist5k", panel="Data", help="mnist5k (embedded), digits (embedded), mnist or "
                                                        "cifar10 (from --data-dir), fashion-mnist (from "
                                                        "--data-dir, default "
                                                        "/usr/share/datasets/fashion-mnist: apt-get "
                                                        "install dataset-fashion-mnist); your own: "
                                                        "folder:PATH (one subfolder of PNG/JPEG images "
                                                        "per class; train/ and test/ keep a test split) "
                                                        "or npz:PATH (uint8 x [N, C, H, W], labels y; "
                                                        "optionally x_test, y_test).")
    data_dir: str | None = option(None, panel="Data", cli_type=Path | None, parse=text,
                                  help="Folder with MNIST or Fashion-MNIST IDX files, or CIFAR-10 binary "
                                       "files.")
    allow_pickle: bool = option(False, panel="Data", help="Allow the python (pickle) CIFAR-10 batches; "
                                                          "unpickling can run code.")
    model: str = option("crossbar", panel="Model", help="crossbar (front-end + 64-row crossbar head), "
                                                        "vgg8, mnist_cnn, organic_cnn (organic "
                                                        "optoelectronic synapses of --device) or lbpnet "
                                                        "(local binary patterns; --preset).")
    method: str = option("proj_sup_64", panel="Model", help="Front-end of the crossbar model: proj_sup_64, "
                                                            "proj_pca_64, avgpool_8x8, bilinear_8x8.")
    hidden: list[int] = option(panel="Model", factory=list, cli_type=list[int] | None,
                               parse=lambda v: list(v or []), show=lambda v: None,
                               help="Hidden width of the crossbar head (repeat for more layers).")
    epochs: int | None = option(None, panel="Training", help="Epochs of the (head) training. Default: as "
                                                             "many as see 525,000 training samples (150 "
                                                             "epochs of mnist5k), at most 150: 150 on "
                                                             "mnist5k and digits, 10 on Fashion-MNIST's "
                                                             "54,000; lbpnet: its preset's (300, or 30 "
                                                             "for paper_mnist_rp_cpu). The manifest "
                                                             "records the number used.")
    frontend_epochs: int = option(20, panel="Training", help="Epochs of the proj_sup_64 projection "
                                                             "training, whatever the data set's size "
                                                             "(unlike --epochs: the projection gains from "
                                                             "more data).")
    frontend_lr: float = option(1e-2, panel="Training", help="Peak learning rate per 256 samples of the "
                                                             "proj_sup_64 projection training.")
    batch_size: int | None = option(None, panel="Training", help="Mini-batch size (default 128; lbpnet: its "
                                                                 "recipe's).")
    lr: float | None = option(None, panel="Training", help="Peak learning rate per 256 samples (scaled "
                                                           "linearly with --batch-size); default: 0.04 for "
                                                           "the crossbar head, 0.002 for CNNs.")
    optimizer: str = option("adamw", panel="Training", help="adamw or sgd.")
    weight_decay: float | None = option(None, panel="Training", help="Decoupled weight decay (default 1e-4; "
                                                                     "lbpnet: its recipe's).")
    momentum: float = option(0.9, panel="Training", help="SGD (Nesterov) momentum.")
    warmup_epochs: float | None = option(None, panel="Training", help="Linear warm-up before cosine decay "
                                                                      "(default 1; lbpnet: its recipe's).")
    label_smoothing: float | None = option(None, panel="Training", help="Label smoothing of the loss "
                                                                        "(default 0.1; lbpnet: its "
                                                                        "recipe's).")
    grad_clip: float | None = option(None, panel="Training", help="Max global gradient norm, 0: off "
                                                                  "(default 1; lbpnet: its recipe's).")
    val_frac: float = option(0.1, panel="Data", help="Validation fraction (stratified).")
    test_frac: float = option(0.2, panel="Data", help="Test fraction, for data sets without an official "
                                                      "test set.")
    split_seed: int = option(0, panel="Data", help="Seed of the train/val/test split.")
    seed: int = seed_option()
    compile: str = option("auto", panel="Training", help="torch.compile: auto (on CUDA; on CPU only "
                                                         "lbpnet's own kernels, for runs estimated "
                                                         "over 10 min), on, off.")
    loader: str = option("auto", panel="Training", help="auto, memory (in-memory batcher) or dataloader.")
    augment: str = option("auto", panel="Training", help="Random crop + horizontal flip of image batches "
                                                         "(suits natural images, not digits; lbpnet: shifts "
                                                         "by its recipe's crop pad, no flip): auto (on for "
                                                         "CNNs on cifar10 and for lbpnet), on, off.")
    torch_device: str = torch_device_option("Where torch trains: auto, cpu or cuda.", panel="Training")
    front_end: str = option("none", panel="Model", help="none, or optical: the organic optoelectronic "
                                                        "sensor (inverse sRGB gamma, R/G/B responsivity "
                                                        "of --device, Poisson shot noise on the carriers) "
                                                        "in front of the model.")
    max_photons: float | None = option(None, panel="Model", help="Photons per pixel at full white for "
                                                                 "--front-end optical (default: the "
                                                                 "card's, else 10000).")
    dark_current: float = option(0.0, panel="Model", help="Dark carriers per pixel per exposure of "
                                                          "--front-end optical (Poisson; 0: none).")
    full_well: float | None = option(None, panel="Model", help="Full-well capacity (carriers per pixel) of "
                                                               "--front-end optical: counts clip there "
                                                               "(default: no clipping).")
    device: str | None = option(None, panel="Model", help="Device card of --front-end optical (its "
                                                          "[optical] responsivity) and of --model "
                                                          "organic_cnn (conductance range, read voltage, "
                                                          "C2C variation). "
                                                          "Default: organic_ofet.")
    preset: str = option("paper_mnist_rp", panel="Model", help="--model lbpnet: its architecture and "
                                                               "training recipe (paper_mnist_rp: the "
                                                               "seed's, k = 4; paper_mnist_rp_k8: 8 bits "
                                                               "per output). The recipe sets batch size, "
                                                               "learning rate, weight decay, warm-up, label "
                                                               "smoothing and clipping; --epochs and --lr "
                                                               "override.")
    lbp_set: tuple[str, ...] = option((), panel="Model", cli_type=list[str] | None,
                                      parse=lambda v: tuple(v or ()), show=lambda v: None,
                                      help="--model lbpnet: change one preset field, section.field=value "
                                           "(repeat), e.g. rp.n_bits_per_out=8, "
                                           "blocks.channels_per_stage=32,64,128.")
    organic_update: str = option("clamp", panel="Model",
                                 help="--model organic_cnn: how an optimizer step reaches the synapses: "
                                      "clamp (the step itself, clamped to the range) or pulses (whole "
                                      "pulses, stochastically rounded, along the card's LTP/LTD curve: "
                                      "NeuroSim's model, as cimtool devices fit writes it; every written "
                                      "device gets the card's C2C variation).")
    image_size: int | None = option(None, panel="Data", help="--dataset folder:PATH: resize every image to "
                                                             "N x N pixels (bilinear; aspect ratio not "
                                                             "kept). Without it all images must have the "
                                                             "same size.")


@dataclass(frozen=True)
class MapParams:
    mapping: MappingOptions = field(default_factory=MappingOptions)
    model: str | None = model_option()
    method: str = method_option()
    program: bool = option(False, panel=MAP, help="Also draw one chip's programmed conductances (D2D, "
                                                  "write noise, stuck-at; --seed).")
    evaluate: bool = option(False, panel=SIM, help="Accuracy of float vs mapped (ideal) vs mapped with the "
                                                   "card's non-idealities.")
    split: str = option("test", panel=SIM, help="Split to evaluate on: test, val or train.")
    trials: int = option(10, panel=SIM, help="Monte Carlo trials (fresh chip each).")
    effects: tuple[str, ...] = effects_option(SIM)
    adc_bits: int | None = option(None, panel=SIM, help="ADC bits (default: the card's).")
    scheme: str | None = option(None, panel=SIM, help="Readout: A (each column digitised, then subtracted) "
                                                      "or B (I_pos-I_neg into one ADC). Default: the "
                                                      "card's.")
    input_bits: int | None = option(None, panel=SIM, help="DAC/input bits (default: the card's).")
    encoding: str = option("analog", panel=SIM, flag="--dac-encoding", old_flag="--encoding",
                           help="Inputs: analog (one read, DAC voltages) or bitserial (one binary read per "
                                "input bit).")
    drift_time: float = option(3600.0, panel=SIM, help="Seconds after programming, for drift.")
    data_dir: str | None = data_dir_option()
    seed: int = seed_option()
    calibration_samples: int = calibration_samples_option()
    torch_device: str = torch_device_option()
    timesteps: int | None = option(None, panel=SIM, help="With an snn artifact as --model: timesteps T of "
                                   "its spiking network on the chips (default: its own T); the sweep "
                                   "scores the same chips.")


# export-weightmap: each mapping option is optional (None: the cmap's own, or the mapping default)
_OPTIONAL = "(Default: the cmap's; the mapping default when the model is mapped here.)"


@dataclass(frozen=True)
class ExportParams:
    model: str | None = model_option()
    method: str = method_option()
    cmap: str | None = option(None, cli_type=Path | None, parse=text,
                              help="Conductance map (from map-weights) to export. Default: the newest cmap "
                                   "of the model (--model, or the newest of --method) under the artifacts "
                                   "root that was mapped with every mapping option given here; if the "
                                   "model has cmaps but none agrees, export-weightmap refuses (run "
                                   "map-weights with those options first); a model without any cmap is "
                                   "mapped here.")
    device: str | None = like(MappingOptions, "device", None, _OPTIONAL)
    weight_bits: int | None = like(MappingOptions, "weight_bits", None)
    scaling: str | None = like(MappingOptions, "scaling", None, _OPTIONAL)
    scale_percentile: float | None = like(MappingOptions, "scale_percentile", None, _OPTIONAL)
    normalize: str | None = like(MappingOptions, "normalize", None, _OPTIONAL)
    array_rows: int | None = like(MappingOptions, "array_rows", None, _OPTIONAL)
    array_cols: int | None = like(MappingOptions, "array_cols", None, _OPTIONAL)
    layout: str | None = like(MappingOptions, "layout", None, _OPTIONAL)
    with_resistance: bool = option(False, help="Append R_pos,R_neg (ohm) to each line.")


@dataclass(frozen=True)
class QatParams:
    mode: str = option("qat", help="ptq (quantize to the device levels, no training), qat (fine-tune on "
                                   "the levels with a straight-through estimator), noise (qat + the card's "
                                   "D2D/C2C/read noise) or onchip (NeuroSim V2.1 on-chip training: pulses "
                                   "along the card's LTP/LTD curves).")
    model: str | None = model_option()
    method: str = method_option()
    mapping: MappingOptions = field(default_factory=MappingOptions)
    epochs: int = option(30, panel="Training", help="Fine-tuning epochs.")
    lr: float | None = option(None, panel="Training", help="Peak learning rate per 256 samples (default: "
                                                           "the model's training LR x 0.25); for --mode "
                                                           "onchip the QG gradient scale (default 0.25, "
                                                           "--recipe v21: 1).")
    batch_size: int = option(128, panel="Training", help="Mini-batch size.")
    noise_scale: float = option(1.0, panel="Training", help="Scale of the card's sigmas in --mode noise "
                                                            "training.")
    grad_bits: int = option(5, panel="On-chip", help="WAGE gradient bits (--mode onchip).")
    nl_d2d: float = option(0.0, panel="On-chip", help="Device-to-device spread (σ) of the LTP/LTD "
                                                      "nonlinearity.")
    record_every: int = option(1, panel="On-chip", help="Record the crossbar weights (and their "
                                                        "weightOld: before each epoch's last update; "
                                                        "--recipe v21, v21_init: V2.1's param + "
                                                        "grad) every this many epochs and at the last, "
                                                        "for NeuroSim V2.1's per-epoch PPA "
                                                        "(neurosim-trace --format v21).")
    trials: int = option(10, help="Monte Carlo chips for the plain vs new comparison on the array simulator.")
    data_dir: str | None = data_dir_option()
    seed: int = seed_option()
    calibration_samples: int = calibration_samples_option()
    torch_device: str = torch_device_option()
    recipe: str = option("cimtool", panel="On-chip", help="The --mode onchip loop: cimtool (cross-entropy, "
                                                          "plain momentum, digital biases) "
                                                          "or v21 (DNN+NeuroSim V2.1 train.py's: SSE loss, "
                                                          "WAGE activation/error rounding, the velocity "
                                                          "renormalised by QG and reset every epoch, "
                                                          "biases at 0; --lr default 1) or v21_init "
                                                          "(v21 from V2.1's own initial weights and "
                                                          "power-of-two layer scales); see "
                                                          "docs/physics.md#on-chip-training.")
    lr_decay_epochs: tuple[int, ...] = numbers_option((200, 250), int, panel="On-chip",
                                                      help="After each of these many epochs the --mode "
                                                           "onchip QG gradient scale (--lr) is divided "
                                                           "by 8 (V2.1 train.py --decreasing_lr).")


TWIN = "Training the twin (--train-epochs)"


@dataclass(frozen=True)
class CalibrateParams:
    model: str | None = model_option("Model or qmodel artifact (default: the newest model trained with "
                                     "--method under the artifacts root).")
    method: str = method_option()
    snn: SnnConfig = field(default_factory=SnnConfig)
    percentiles: tuple[str, ...] = option(PERCENTILES, panel="Calibration", cli_type=str,
                                          parse=parse_percentiles, show=comma_text,
                                          help="Percentiles p of each layer's activations on train "
                                               "(comma-separated; 'max' = the maximum).")
    ratios: tuple[float, ...] = numbers_option(DEFAULT_RATIOS, float, panel="Calibration",
                                               help="Ratios r to try on val: the top level sits at r x P_p "
                                                    "(comma-separated, > 0).")
    data_dir: str | None = data_dir_option()
    seed: int = seed_option("Seed of rate-coded input spikes and of the calibration sample.")
    calibration_samples: int = calibration_samples_option()
    torch_device: str = torch_device_option()
    train_epochs: int = option(0, panel=TWIN,
                               help="Then train the quantized-ANN twin for this many epochs (0: convert "
                                    "only): every ReLU becomes its neuron's quantizer with a learnable "
                                    "threshold (LSQ), started from the calibrated one; the weights are "
                                    "fine-tuned too (a qmodel keeps its device-level weights). The SNN "
                                    "equals the trained twin exactly.")
    train_lr: float | None = option(None, panel=TWIN, help="Learning rate of the twin (default: the "
                                                           "model's training rate x 0.25).")
    batch_size: int = option(128, panel=TWIN, help="Batch size of the twin's training.")


COST = "Cost (--cost neurosim)"
EXECUTION = "Execution (the results do not depend on these)"


@dataclass(frozen=True)
class SweepParams:
    models: tuple[str, ...] = option((), flag="--model", cli_type=list[Path] | None,
                                     parse=lambda v: tuple(str(m) for m in v or []), show=lambda v: None,
                                     help="Model, qmodel or snn artifact to sweep (repeat for several; an "
                                          "snn brings its thresholds, neuron and encoding). Default: the "
                                          "newest model of each --method.")
    methods: tuple[str, ...] = option(("proj_sup_64",), flag="--method", cli_type=list[str] | None,
                                      parse=lambda v: tuple(v or ["proj_sup_64"]), show=lambda v: None,
                                      help="Front-end(s) whose newest model to sweep when --model is not "
                                           "given (repeat for several; default proj_sup_64).")
    device: str | None = like(MappingOptions, "device")
    schemes: tuple[str, ...] = option(("A", "B"), flag="--scheme", panel="Grid", cli_type=str,
                                      show=comma_text, parse=_schemes,
                                      help="Readout schemes (comma-separated): A, B.")
    adc_bits: tuple[int, ...] = numbers_option((3, 4, 5, 6, 8), int, panel="Grid",
                                               help="ADC bits (comma-separated).")
    weight_bits: tuple[int, ...] = numbers_option((2, 3, 4, 5, 6, 8), int, panel="Grid",
                                                  help="Weight bits (as --weight-bits of map-weights: "
                                                       "bit-sliced above the card's cell bits).")
    timesteps: tuple[int, ...] = numbers_option((1, 2, 4, 8, 16, 32), int, panel="Grid", help="Timesteps T.")
    effects: tuple[str, ...] = effects_option("Grid")
    trials: int = option(3, panel="Grid", help="Chips (Monte Carlo) per configuration; the same for all.")
    tolerance: float = option(1.0, panel="Selection", help="The recommendation is the cheapest "
                              "configuration that loses less than this many accuracy points against the "
                              "best (val) at --confidence: loss + z·SE <= tolerance, SE of the paired "
                              "difference (0: the best).")
    array_rows: int = like(MappingOptions, "array_rows")
    array_cols: int = like(MappingOptions, "array_cols")
    data_dir: str | None = data_dir_option()
    seed: int = seed_option("Seed of the chips, of rate-coded spikes and of the calibration sample.")
    calibration_samples: int = calibration_samples_option()
    torch_device: str = torch_device_option()
    cost: str = option("model", panel=COST, help="What ranks the configurations: model (cimtool's energy "
                                                 "model, fast) or neurosim (NeuroSim's chip energy per "
                                                 "inference: one run per weight bits × ADC bits, cached).")
    neurosim: str | None = neurosim_option(COST)
    technode: int = technode_option(COST)
    neurosim_timeout: float = option(600.0, panel=COST, help="Seconds each NeuroSim run may take.")
    cache_dir: str | None = neurosim_cache_option(COST)
    executor: str = option("local", panel=EXECUTION,
                           help="Where the units (one per model × weight bits × scheme × ADC bits, every T) "
                                "run: local (this process) or ray (a Ray cluster; pip install "
                                "'cimtool[ray]'). The sweep is the same whichever runs it.")
    address: str | None = option(None, panel=EXECUTION, envvar="RAY_ADDRESS",
                                 help="Ray cluster to join (auto, HOST:PORT or ray://HOST:PORT). Default: "
                                      "start a local one with this machine's cores.")
    workers: int | None = option(None, panel=EXECUTION,
                                 help="Ray workers (one thread each; one GPU each with --torch-device cuda). "
                                      "Default: one per CPU (GPU) of the cluster.")
    confidence: float = option(0.95, panel="Selection", help="Confidence (one-sided) that the "
                               "recommendation loses less than --tolerance against the best, paired over "
                               "the same val images and chips.")

    @property
    def n_configs_per_model(self) -> int:
        return len(self.schemes) * len(self.adc_bits) * len(self.weight_bits) * len(self.timesteps)


@dataclass(frozen=True)
class TraceParams:
    model: str | None = model_option()
    method: str = method_option()
    format: str = option("v13", help="v13 (DNN_NeuroSim V1.3/V1.4 inference: weight + input files) or v21 "
                                     "(V2.1 training: adds weightOld files and each layer's input "
                                     "activity).")
    weight_bits: int | None = option(None, help="Weight precision (NeuroSim's WBITS; default: the weight "
                                                "bits of a qat --mode onchip qmodel, which V2.1 maps one "
                                                "per cell, else 8).")
    input_bits: int = option(8, help="Input activation precision (NeuroSim's ABITS).")
    split: str = option("test", help="Split the batch comes from: test, val or train.")
    batch_size: int = option(16, help="Samples whose input bit activity is averaged (the trace has one of "
                                      "them).")
    sample: int = option(0, help="Index in the batch of the sample written to input*.csv.")
    data_dir: str | None = data_dir_option()


CHIP = "Chip (Param.cpp)"


@dataclass(frozen=True)
class RunParams:
    trace: str = option("", required=True, cli_type=Path, parse=text,
                        help="Trace artifact (from neurosim-trace).")
    neurosim: str | None = neurosim_option()
    device: str | None = like(MappingOptions, "device")
    cell: str = option("rram", panel=CHIP, help="Memory cell: rram, sram or fefet.")
    cell_bits: int | None = option(None, panel=CHIP,
                                   help="Bits per cell (default: log2 of the card's levels).")
    adc_bits: int | None = option(None, panel=CHIP, help="ADC bits: levelOutput = 2^N (default: the card's).")
    subarray: int | None = option(None, panel=CHIP, cli_type=str, parse=_subarray, show=lambda v: "auto",
                                  help="Subarray rows = columns: a power of two >= 8, or auto (the largest "
                                       "of 128, 64, ..., 8 that NeuroSim's floorplan accepts for the "
                                       "trace); V2.1 runs at least 32 columns.")
    technode: int = technode_option(CHIP)
    timeout: float = option(3600.0, help="Seconds NeuroSim may run.")
    cache_dir: str | None = neurosim_cache_option()
    # V2.1 only (Param.cpp's trainingEstimation, batchSize, numIteration): refused for a V1.x NeuroSim
    training_estimation: str = option("on", panel="NeuroSim V2.1", help="on: V2.1 estimates on-chip "
                                                                        "training (forward, activation "
                                                                        "gradient, weight gradient, weight "
                                                                        "update); off: inference only.")
    train_batch: int | None = option(None, panel="NeuroSim V2.1", help="Images per training iteration "
                                                                       "(NeuroSim's batchSize; at least "
                                                                       "2^cellBit; default: the on-chip "
                                                                       "training's batch, else V2.1's 200).")
    iterations: int | None = option(None, panel="NeuroSim V2.1", help="Iterations per epoch (NeuroSim's "
                                                                      "numIteration; default: the on-chip "
                                                                      "training's, else V2.1's 250): "
                                                                      "V2.1's figures are per epoch of "
                                                                      "train-batch × iterations images; "
                                                                      "neither changes its run time.")
    epochs: str = option("all", panel="NeuroSim V2.1", help="all: price every epoch the trace recorded "
                                                            "(qat --mode onchip --record-every; one V2.1 run "
                                                            "each, one row each in epochs.parquet), as "
                                                            "V2.1's train.py does; last: its last only.")
    chip: str = option("card", panel=CHIP, help="card: the chip of --device and the options above; "
                                                "release: the release's own Param.cpp (its cell, node, "
                                                "cellBit, ADC), only the subarray set.")
    cmap: str | None = option(None, panel=CHIP, cli_type=Path | None, parse=text,
                              help="Conductance map (map-weights) whose arrays the subarray is: its "
                                   "--array-rows x --array-cols, refused (with the nearest geometry NeuroSim "
                                   "accepts) where NeuroSim's floorplan cannot take it; instead of "
                                   "--subarray.")


@dataclass(frozen=True)
class ProfileParams:
    model: str = option(required=True, cli_type=Path, parse=text,
                        help="Model, qmodel or snn artifact (an snn brings its T, neuron and encoding).")
    batch_sizes: tuple[int, ...] = numbers_option((1, 16, 64, 256), int,
                                                  help="Batch sizes to scan (comma-separated).")
    repeats: int = option(10, help="Timed runs per figure (the median is reported).")
    warmup: int = option(3, help="Untimed runs before timing.")
    modes: tuple[str, ...] = option(PROFILE_MODES, cli_type=str, parse=comma_list(str), show=comma_text,
                                    help="What to time: ann_eager, ann_compiled, snn, one_pass "
                                         "(comma-separated).")
    timesteps: int | None = option(None, help="T of the spiking modes (default: the snn artifact's, or "
                                              "the spiking defaults' for a model): time BPTT vs the "
                                              "twin at another T without recalibrating.")
    torch_device: str = torch_device_option("auto, cpu or cuda (CUDA events and bf16 rows on a GPU).")
    data_dir: str | None = data_dir_option()
    seed: int = seed_option()
    calibration_samples: int = calibration_samples_option()


@dataclass(frozen=True)
class ReportParams:
    paths: tuple[str, ...] = option((), argument=True, cli_type=list[Path] | None,
                                    parse=lambda v: tuple(str(p) for p in v or []), show=lambda v: None,
                                    help="Artifacts and/or folders to search (default: the artifacts root).")
    title: str = option("cimtool report", help="Report title.")


@dataclass(frozen=True)
class DeviceFitParams:
    data: str = option("", argument=True, required=True, cli_type=Path, parse=text,
                       help="Measured pulse responses: two columns without header (LTP readings, then LTD "
                            "readings, as in aihwkit's gong_et_al.csv) or a CSV/Parquet table with columns "
                            "pulse, conductance, direction (ltp/ltd) and optionally cycle, device.")
    g_min: float | None = option(None, help="The data are normalised: the fitted bottom of the range is this "
                                            "conductance (S). Give with --g-max; without both, the data are "
                                            "conductances in siemens.")
    g_max: float | None = option(None, help="The data are normalised: the fitted top of the range is this "
                                            "conductance (S).")
    retention: str | None = option(None, cli_type=Path | None, parse=text,
                                   help="Retention readings (CSV/Parquet: time in s, conductance in the "
                                        "pulse data's units, optionally device): fits drift nu (and its "
                                        "spread).")
    base: str | None = option(None, help="Card whose values the data do not determine (read voltage, ADC, "
                                         "wires, stuck cells, optics, ...): a preset, a .toml path or a "
                                         "device artifact; the fitted card lists as assumed what the base "
                                         "card assumes of them. Default: the preset whose conductance range "
                                         "overlaps the fitted one most in log conductance (the nearest "
                                         "where none does): organic synapses of a few nS get organic_ofet, "
                                         "not an RRAM card; the log names it.")
    name: str | None = option(None, help="The fitted card's name (default: the data file's name).")


@dataclass(frozen=True)
class ImportParams:
    model: str = option("", required=True, panel="Model",
                        help="Your network: FILE.py:FUNCTION (a Python file, imported by path: its code "
                             "runs) or package.module:FUNCTION, called as FUNCTION(num_classes=N, "
                             "input_shape=(C, H, W), **model args); it returns a torch nn.Module that "
                             "takes float images in [0, 1], shape [N, C, H, W], and returns logits.")
    weights: str = option("", required=True, panel="Model", cli_type=Path, parse=text,
                          help="Trained weights: a .safetensors file or a .pt/.pth state_dict "
                               "(torch.save(model.state_dict()); a pickled module is refused). Names and "
                               "shapes must match the model's exactly.")
    dataset: str = like(TrainAnnParams, "dataset", required=True, help="The data set the network was "
                        "trained on; its test split (--split-seed, as train-ann splits) is evaluated.")
    data_dir: str | None = like(TrainAnnParams, "data_dir")
    digital: tuple[str, ...] = option((), panel="Model", cli_type=str, parse=comma_list(), show=comma_text,
                                      help="Modules computed digitally, off the crossbar arrays, "
                                           "comma-separated qualified names (e.g. stem,head.norm).")
    model_arg: tuple[str, ...] = option((), panel="Model", cli_type=list[str] | None,
                                        parse=lambda v: tuple(v or ()), show=lambda v: None,
                                        help="key=value passed to FUNCTION (repeat); values are read as "
                                             "int, float, true/false or text.")
    val_frac: float = like(TrainAnnParams, "val_frac")
    test_frac: float = like(TrainAnnParams, "test_frac")
    split_seed: int = like(TrainAnnParams, "split_seed")
    image_size: int | None = like(TrainAnnParams, "image_size")
    seed: int = seed_option("Seed of the evaluation's noise draws (a model with a stochastic module).")
    torch_device: str = torch_device_option()
