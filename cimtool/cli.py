"""The `cimtool` command line, derived from the stages' params dataclasses.

Each stage command is one row of ``STAGES``: its options are the fields of its params class
(``cimtool/params.py``, see ``cimtool/options.py``) plus the output options every stage
shares (``OUTPUT``, declared once here); its body builds the params, runs the stage and prints the
stage's headline. Stage modules are imported when their command runs, so ``cimtool --help`` never
loads torch.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import traceback
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from cimtool import options
from cimtool import params as P
from cimtool.errors import CimtoolError

app = typer.Typer(
    name="cimtool",
    help="Take neural networks onto compute-in-memory and spiking hardware built from emerging synaptic "
         "devices. Each command is a stage that reads and writes versioned artifacts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

Json = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout (progress and logs go to stderr).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


def _param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


# The options every artifact-writing stage shares.
OUTPUT = [
    _param("out", Annotated[Path | None, typer.Option(
        "--out", help="Output artifact directory (default: a new directory under the artifacts root).")],
        None),
    _param("force", Annotated[bool, typer.Option("--force", help="Replace an existing --out artifact.")],
           False),
    _param("artifacts_root", Annotated[Path, typer.Option(
        "--artifacts-root", envvar="CIMTOOL_ARTIFACTS", help="Root for default outputs and look-ups.")],
        Path("artifacts")),
    _param("json_", Json, False),
    _param("quiet", Quiet, False),
]
RESUME = _param("resume", Annotated[bool, typer.Option(
    rich_help_panel="Training",
    help="Continue an interrupted run with the same parameters from its last epoch checkpoint (the newest "
    "one under the artifacts root, or --out's).")], False)

# command, stage module (cimtool.stages.<module>: run(params, out, root, force, reporter) and
# headline(artifact)), params class, help
STAGES = [
    ("train-ann", "train_ann", P.TrainAnnParams,
     "Train a float model (front-end + crossbar head, or a CNN) and write a model artifact."),
    ("import-model", "import_model", P.ImportParams,
     "Your own PyTorch network (FILE.py:FUNCTION) and trained weights (.safetensors or a .pt/.pth "
     "state_dict) as a model artifact, evaluated on the data set's test split; every later stage takes "
     "it as --model."),
    ("map-weights", "map_weights", P.MapParams,
     "Map a model's crossbar layers onto device conductance levels (and simulate the array)."),
    ("export-weightmap", "export_weightmap", P.ExportParams,
     "Write the device team's CSVs: row,col_pos,col_neg,level_pos,level_neg,G_pos,G_neg per layer, plus "
     "the logical output → physical column table."),
    ("qat", "qat", P.QatParams,
     "Hardware-aware model on a device card's levels: PTQ, QAT, noise-aware or on-chip training."),
    ("calibrate-threshold", "calibrate_threshold", P.CalibrateParams,
     "Convert a model to spiking neurons and choose per-layer thresholds on val (writes an SNN artifact)."),
    ("sweep", "sweep", P.SweepParams,
     "Design-space sweep on val (scheme x ADC bits x weight bits x T per model) on the array simulator, "
     "best case and the cheapest configuration within --tolerance; both then evaluated on test once."),
    ("neurosim-trace", "neurosim_trace", P.TraceParams,
     "Write a DNN+NeuroSim layer record (NetWork.csv, weight/input CSVs, trace_command.sh) of a model."),
    ("run-neurosim", "run_neurosim", P.RunParams,
     "Build DNN+NeuroSim for a device card and run it on a trace: area, latency, energy, TOPS/W."),
    ("profile", "profile", P.ProfileParams,
     "Latency, throughput and memory of the ANN (eager, compiled) vs its spiking simulation and "
     "one-pass twin."),
    ("report", "report", P.ReportParams,
     "Markdown + self-contained HTML report (tables, plots, every artifact with its hash)."),
]


def _parameters(cls: type) -> list[inspect.Parameter]:
    """The command-line parameters of a params class (``cimtool/options.py``)."""
    out = []
    for f, kind, spec in options.walk(cls):
        flags = (spec.flag,) if spec.flag else ()
        if spec.argument:
            marker = typer.Argument(help=escape(spec.help), show_default=False)
        else:  # help is plain text: rich markup would swallow "[ray]" or "[optical]"
            marker = typer.Option(*flags, help=escape(spec.help), rich_help_panel=spec.panel,
                                  envvar=spec.envvar)
        default = inspect.Parameter.empty
        if not spec.required:
            default = options.default_of(f)
            default = spec.show(default) if spec.show else default
        out.append(_param(f.name, Annotated[spec.cli_type or kind, marker], default))
        if spec.old_flag:  # the earlier spelling: hidden, with a deprecation note (_deprecated)
            out.append(_param(f"{f.name}__old", Annotated[(spec.cli_type or kind) | None, typer.Option(
                spec.old_flag, hidden=True)], None))
    return out


def _deprecated(cls: type, values: dict[str, Any]) -> list[str]:
    """Move values given with an old flag spelling to their field; the notes to show (after the run,
    so that an error stays one line)."""
    notes = []
    for f, _, spec in options.walk(cls):
        old = values.pop(f"{f.name}__old", None) if spec.old_flag else None
        if old is not None:
            notes.append(f"[yellow]note: {spec.old_flag} is now {spec.flag_for(f.name)}; the old spelling "
                         "goes in the next release")
            values[f.name] = old
    return notes


def _reporter(json_mode: bool, quiet: bool):
    from cimtool.ui import Reporter

    return Reporter(quiet=quiet, json_mode=json_mode)


def _add_stage(name: str, module: str, cls: type, help: str, on: typer.Typer = app) -> None:
    resume = name == "train-ann"

    def command(**values: Any) -> None:
        stage = importlib.import_module(f"cimtool.stages.{module}")
        reporter = _reporter(values.pop("json_"), values.pop("quiet"))
        out, force, root = values.pop("out"), values.pop("force"), values.pop("artifacts_root")
        extra = {"resume": values.pop("resume")} if resume else {}
        notes = _deprecated(cls, values)
        artifact = stage.run(options.build(cls, values), out, root, force, reporter, **extra)
        if artifact is None:  # a torchrun rank other than 0: rank 0 reports
            return
        for note in notes:
            reporter.log(note)
        details = getattr(stage, "table", None)  # e.g. profile
        if details is not None and not (reporter.quiet or reporter.json_mode):
            reporter.console.print(details(artifact))
        reporter.result({"artifact": str(artifact.path), "kind": artifact.kind, "summary": artifact.summary},
                        human=stage.headline(artifact))

    command.__signature__ = inspect.Signature([*_parameters(cls), *([RESUME] if resume else []), *OUTPUT])
    command.__name__ = module
    on.command(name, help=escape(help))(command)


for _stage in STAGES:
    _add_stage(*_stage)


def _print_version(given: bool) -> None:
    if given:
        print(f"cimtool {metadata.version('cimtool')}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print cimtool's version and exit.")] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            envvar="CIMTOOL_THREADS",
            help="CPU threads for torch (before the command: cimtool --threads 1 map-weights …). Default: "
                 "OMP_NUM_THREADS if set, else the cores this process may run on (its CPU affinity), so "
                 "that jobs side by side do not oversubscribe the machine.",
        ),
    ] = None,
) -> None:
    from cimtool.threads import keep_freed_memory, set_threads

    set_threads(threads)
    keep_freed_memory()


@app.command("inspect")
def inspect_(
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


devices_app = typer.Typer(help="List and show device cards (presets or your own TOML files), start one "
                               "from a template, and fit one to measured pulse responses.",
                          no_args_is_help=True)
app.add_typer(devices_app, name="devices")
_add_stage("fit", "device_fit", P.DeviceFitParams,
           "Fit a device card to measured LTP/LTD pulse responses (NeuroSim's nonlinearity, pulse counts, "
           "cycle-to-cycle noise, device spread, drift): writes a device artifact with card.toml.",
           on=devices_app)


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
    """Validate a device card and print every key as the file names it (assumed values marked)."""
    from cimtool.stages import devices as stage

    stage.show_card(card, _reporter(json_, False))


@devices_app.command("new")
def devices_new(
    name: Annotated[str, typer.Argument(help="The card's name (letters, digits, '_', '-', '.').")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="The file to write (default: NAME.toml in this folder).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    json_: Json = False,
) -> None:
    """Write a commented device-card template to start from (every key, its unit and its default)."""
    from cimtool.stages import devices as stage

    stage.new_card(name, out, force, _reporter(json_, False))


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
