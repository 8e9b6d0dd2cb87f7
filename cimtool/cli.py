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

# Options shared by every stage (DESIGN.md §7).
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
            help="mnist5k (embedded), digits (embedded), mnist or cifar10 (from --data-dir).",
        ),
    ] = "mnist5k",
    data_dir: Annotated[
        Path | None,
        typer.Option(rich_help_panel="Data", help="Folder with MNIST IDX or CIFAR-10 binary files."),
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
            rich_help_panel="Model", help="crossbar (front-end + 64-row crossbar head), vgg8 or mnist_cnn."
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
        int, typer.Option(rich_help_panel="Training", help="Epochs of the (head) training.")
    ] = 150,
    frontend_epochs: Annotated[
        int, typer.Option(rich_help_panel="Training", help="Epochs of the proj_sup_64 projection training.")
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
    json_: Json = False,
) -> None:
    """Validate an artifact (schema, payload hashes) and show its manifest and summary."""
    from cimtool.stages import inspect as stage

    stage.run(path, _reporter(json_, False))


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
