"""Training-speed benchmarks for cimtool (CPU-friendly; about 2-3 minutes on 2 cores).

1. ``fit`` vs a minimal hand-written PyTorch loop, same model, same data, same epochs:
   (i) the default crossbar head (Linear(64, 10)) on avgpool_8x8 features of mnist5k, and
   (ii) ``mnist_cnn`` on mnist5k images. cimtool's figure is reported twice: end-to-end wall
   time of ``fit`` (what a user waits for: it also evaluates on val and writes a checkpoint
   every epoch) and the training-only figure ``fit`` records itself (``FitResult.timing``).
2. VGG8 train step (forward + backward + AdamW) at batch 128 on CIFAR-shaped random data,
   eager vs ``torch.compile`` (inductor), with the compile time reported separately.

Run:  python tests/bench/bench_train.py          (or: nox -s bench)
      python tests/bench/bench_train.py --quick  (a few seconds; checks that it runs)

Writes every figure to tests/bench/results/bench_train.json (git-ignored). Not a pytest file:
nothing here is named test_*, and pytest ignores tests/bench.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimtool.data import load_dataset, make_splits
from cimtool.models.registry import MODELS, make_spec
from cimtool.stages.train_ann import TrainAnnParams
from cimtool.train.batching import TensorData, to_float
from cimtool.train.loop import TrainConfig, evaluate, fit
from cimtool.train.schedule import scaled_lr
from cimtool.ui import Reporter

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results" / "bench_train.json"
CPU = torch.device("cpu")


@dataclass(frozen=True)
class BenchSettings:
    repeats: int = 3  # timed runs per implementation (alternated); the median is reported
    head_epochs: int = 150  # train-ann's default --epochs; ~3-5 s per fit() on 2 cores
    head_warmup_epochs: int = 5
    cnn_epochs: int = 3
    cnn_warmup_epochs: int = 1
    vgg_batch: int = 128
    vgg_warmup_steps: int = 2
    vgg_steps: int = 5
    vgg: bool = True
    seed: int = 0

    @classmethod
    def quick(cls) -> BenchSettings:
        return cls(repeats=1, head_epochs=5, head_warmup_epochs=1, cnn_epochs=1,
                   cnn_warmup_epochs=1, vgg_batch=8, vgg_warmup_steps=1, vgg_steps=1)


# --------------------------------------------------------------------------- data and models


@dataclass
class Case:
    """One fit-vs-hand comparison: a model factory and the data it trains on."""

    name: str
    description: str
    model: str  # registry name, for train-ann's defaults
    build: Callable[[], nn.Module]  # a fresh model with the same initial weights every call
    train: TensorData
    val: TensorData
    epochs: int
    warmup_epochs: int


def load_mnist5k() -> tuple[TensorData, TensorData]:
    """mnist5k train/val splits as train-ann makes them (split seed 0, val 0.1, test 0.2)."""
    raw = load_dataset("mnist5k")
    splits = make_splits(raw.x, raw.y, 0, 0.1, 0.2)
    return (TensorData(torch.from_numpy(splits.train.x), torch.from_numpy(splits.train.y)),
            TensorData(torch.from_numpy(splits.val.x), torch.from_numpy(splits.val.y)))


def make_cases(settings: BenchSettings) -> list[Case]:
    train, val = load_mnist5k()
    shape = tuple(train.x.shape[1:])

    # (i) crossbar head on avgpool_8x8 features, fixed and scaled to [0, 1] as train-ann does
    spec = make_spec("crossbar", "avgpool_8x8", shape, 10, [])
    crossbar = MODELS["crossbar"].build(spec)
    with torch.no_grad():
        f_train = crossbar.frontend(to_float(train.x))
        crossbar.scaler.fit(f_train)
        f_val = crossbar.frontend(to_float(val.x))
        feats = (TensorData(crossbar.scaler(f_train).contiguous(), train.y),
                 TensorData(crossbar.scaler(f_val).contiguous(), val.y))

    def build_head() -> nn.Module:
        torch.manual_seed(settings.seed)
        return MODELS["crossbar"].build(spec).head  # nn.Sequential(Linear(64, 10))

    # (ii) mnist_cnn on the images (uint8; both loops turn them into float / 255)
    cnn_spec = make_spec("mnist_cnn", None, shape, 10, [])
    train_float = to_float(train.x)

    def build_cnn() -> nn.Module:
        torch.manual_seed(settings.seed)
        model = MODELS["mnist_cnn"].build(cnn_spec)
        model.normalize.fit(train_float)  # as train-ann does, before training
        return model

    return [
        Case("crossbar_head", "Linear(64,10) on avgpool_8x8 features (float [N,64])", "crossbar",
             build_head, *feats, settings.head_epochs, settings.head_warmup_epochs),
        Case("mnist_cnn", "mnist_cnn on uint8 images [N,1,28,28]", "mnist_cnn",
             build_cnn, train, val, settings.cnn_epochs, settings.cnn_warmup_epochs),
    ]


def train_config(epochs: int, model: str) -> TrainConfig:
    """train-ann's defaults for the loop (TrainAnnParams, and the model's default learning rate
    where train-ann takes it from the registry), with compile off and the memory batcher."""
    defaults = TrainAnnParams()
    shared = {f.name: getattr(defaults, f.name) for f in fields(TrainConfig)
              if getattr(defaults, f.name, None) is not None}
    if getattr(defaults, "lr", None) is None:  # lr: None means "the model's default"
        shared["lr"] = getattr(MODELS[model], "default_lr", TrainConfig.lr)
    shared.update(epochs=epochs, compile="off", loader="memory")
    return TrainConfig(**shared)


# --------------------------------------------------------------------------- the two loops


def run_cimtool_fit(model: nn.Module, case: Case, epochs: int, workdir: Path) -> dict[str, Any]:
    """cimtool's fit(), end to end (val evaluation and a checkpoint every epoch included)."""
    cfg = train_config(epochs, case.model)
    checkpoint = workdir / "bench.ckpt"  # must not exist, or fit() resumes from it
    for stale in (checkpoint, checkpoint.with_name(checkpoint.name + ".tmp")):
        stale.unlink(missing_ok=True)
    t0 = time.perf_counter()
    result = fit(model, case.train, case.val, cfg, CPU, checkpoint, case.name,
                 Reporter(quiet=True))
    wall = time.perf_counter() - t0
    checkpoint.unlink(missing_ok=True)
    train_wall = sum(t["wall_s"] for t in result.timing)
    n = len(case.train) * epochs
    return {"wall_s": wall, "samples_per_s": n / wall,
            "train_only_wall_s": train_wall, "train_only_samples_per_s": n / train_wall,
            "val_acc": result.best_val_acc}


def run_hand_loop(model: nn.Module, case: Case, epochs: int, workdir: Path) -> dict[str, Any]:
    """The minimal loop: shuffled index batches, AdamW, CrossEntropyLoss, nothing else."""
    del workdir
    cfg = train_config(epochs, case.model)  # same batch size, peak lr and weight decay as fit()
    torch.manual_seed(cfg.seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=scaled_lr(cfg.lr, cfg.batch_size),
                                  weight_decay=cfg.weight_decay)
    criterion = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    x = case.train.x.float().div(255.0) if case.train.x.dtype == torch.uint8 else case.train.x
    y = case.train.y
    n = len(y)
    for _ in range(epochs):
        perm = torch.randperm(n)
        for start in range(0, n, cfg.batch_size):
            idx = perm[start: start + cfg.batch_size]
            loss = criterion(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    wall = time.perf_counter() - t0
    _, val_acc = evaluate(model, case.val, CPU)  # untimed: only to show it learned too
    return {"wall_s": wall, "samples_per_s": n * epochs / wall, "val_acc": val_acc}


def compare_case(case: Case, settings: BenchSettings, workdir: Path,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Warm both up once, then alternate them ``repeats`` times; medians of samples/s."""
    impls = {"cimtool_fit": run_cimtool_fit, "hand_loop": run_hand_loop}
    for run in impls.values():
        run(case.build(), case, case.warmup_epochs, workdir)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in impls}
    order = list(impls)
    for r in range(settings.repeats):
        for name in order if r % 2 == 0 else order[::-1]:  # ABBA: cancels slow drift
            out = impls[name](case.build(), case, case.epochs, workdir)
            runs[name].append(out)
            log(f"  {case.name} run {r + 1}/{settings.repeats} {name}: "
                f"{out['samples_per_s']:,.0f} samples/s ({out['wall_s']:.2f} s)")

    def med(name: str, key: str) -> float:
        return statistics.median(o[key] for o in runs[name])

    fit_e2e = med("cimtool_fit", "samples_per_s")
    fit_train = med("cimtool_fit", "train_only_samples_per_s")
    hand = med("hand_loop", "samples_per_s")
    steps = -(-len(case.train) // train_config(1, case.model).batch_size) * case.epochs
    return {
        "description": case.description,
        "n_train": len(case.train), "n_val": len(case.val), "epochs": case.epochs,
        "batch_size": train_config(1, case.model).batch_size, "steps_per_run": steps,
        "repeats": settings.repeats,
        "cimtool_fit_samples_per_s": fit_e2e,
        "cimtool_fit_train_only_samples_per_s": fit_train,
        "hand_loop_samples_per_s": hand,
        "ratio_end_to_end": fit_e2e / hand,
        "ratio_train_only": fit_train / hand,
        "cimtool_fit_step_us": 1e6 * med("cimtool_fit", "train_only_wall_s") / steps,
        "hand_loop_step_us": 1e6 * med("hand_loop", "wall_s") / steps,
        # what fit() spends outside its timed epochs: setup, val evaluation, checkpoints
        "cimtool_fit_non_training_ms_per_epoch": 1e3 * (
            med("cimtool_fit", "wall_s") - med("cimtool_fit", "train_only_wall_s")) / case.epochs,
        "val_acc": {name: med(name, "val_acc") for name in impls},
        "runs": runs,
    }


# --------------------------------------------------------------------------- VGG8 eager vs compiled


@contextlib.contextmanager
def fresh_inductor_cache(directory: str) -> Iterator[None]:
    """Compile against an empty inductor cache, so the compile time is a cold one."""
    try:
        from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    except ImportError:  # older torch: the environment variable alone
        temporary_cache_dir = None
    if temporary_cache_dir is not None:
        with temporary_cache_dir(directory):
            yield
        return
    old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = directory
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = old


def time_vgg8_steps(compiled: bool, settings: BenchSettings) -> dict[str, Any]:
    spec = make_spec("vgg8", None, (3, 32, 32), 10, [])
    torch.manual_seed(settings.seed)
    model = MODELS["vgg8"].build(spec).train()
    x = torch.rand(settings.vgg_batch, 3, 32, 32)
    y = torch.randint(0, 10, (settings.vgg_batch,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    step_model = torch.compile(model) if compiled else model  # as fit() does with compile=on

    def step() -> float:
        t0 = time.perf_counter()
        loss = criterion(step_model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - t0

    warmup = [step() for _ in range(settings.vgg_warmup_steps)]
    timed = [step() for _ in range(settings.vgg_steps)]
    median = statistics.median(timed)
    return {"warmup_step_s": warmup, "step_s": timed, "median_step_s": median,
            "samples_per_s": settings.vgg_batch / median,
            # the first step(s) minus steady-state steps: the cost of compiling (or of
            # first-touch allocation, for eager)
            "first_steps_overhead_s": sum(warmup) - median * len(warmup)}


def bench_vgg8(settings: BenchSettings, workdir: Path,
               log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {"batch_size": settings.vgg_batch, "input_shape": [3, 32, 32],
                           "warmup_steps": settings.vgg_warmup_steps,
                           "timed_steps": settings.vgg_steps,
                           "compile_backend": "inductor (torch.compile defaults)",
                           "compiled_part": "model forward/backward; AdamW step eager (as fit)",
                           "inductor_cache": "fresh (cold compile)"}
    eager = time_vgg8_steps(False, settings)
    out["eager"] = eager
    log(f"  vgg8 eager: {eager['median_step_s']:.3f} s/step")
    try:
        with fresh_inductor_cache(str(workdir / "inductor-cache")):
            compiled = time_vgg8_steps(True, settings)
    except Exception as exc:  # noqa: BLE001 - report, never crash the benchmark
        out["compiled"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:500]}",
                           "traceback": traceback.format_exc()[-4000:]}
        out["speedup"] = None
        out["compile_s"] = None
        log(f"  vgg8 torch.compile failed: {out['compiled']['error']}")
    else:
        out["compiled"] = compiled
        out["compile_s"] = compiled["first_steps_overhead_s"]
        out["speedup"] = eager["median_step_s"] / compiled["median_step_s"]
        log(f"  vgg8 compiled: {compiled['median_step_s']:.3f} s/step, "
            f"compile {out['compile_s']:.1f} s")
    finally:
        with contextlib.suppress(Exception):
            torch._dynamo.reset()
    return out


# --------------------------------------------------------------------------- environment and output


def environment() -> dict[str, Any]:
    import cimtool

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    env = {
        "torch": torch.__version__,
        "cimtool": getattr(cimtool, "__version__", None),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cuda_available": torch.cuda.is_available(),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }
    with contextlib.suppress(AttributeError):
        env["cpus_usable"] = len(os.sched_getaffinity(0))
    return env


def cpu_busy_fraction(interval_s: float = 1.0) -> float | None:
    """Share of all CPUs busy over ``interval_s`` (Linux /proc/stat), this process idle meanwhile:
    other work on a 2-core machine makes these figures meaningless (torch's threads spin)."""
    def snapshot() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    try:
        total0, idle0 = snapshot()
        time.sleep(interval_s)
        total1, idle1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    return round(1.0 - (idle1 - idle0) / max(1, total1 - total0), 3)


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def print_table(results: dict[str, Any]) -> None:
    rows: list[tuple[str, ...]] = []
    for name, c in results["fit_vs_hand"].items():
        rows += [
            (name, "hand-written loop", f"{c['hand_loop_samples_per_s']:,.0f} samples/s",
             f"{c['hand_loop_step_us']:,.0f} us/step", ""),
            (name, "cimtool fit, end to end", f"{c['cimtool_fit_samples_per_s']:,.0f} samples/s",
             f"{c['cimtool_fit_non_training_ms_per_epoch']:.1f} ms/epoch eval+ckpt",
             f"ratio {c['ratio_end_to_end']:.2f}"),
            (name, "cimtool fit, training only",
             f"{c['cimtool_fit_train_only_samples_per_s']:,.0f} samples/s",
             f"{c['cimtool_fit_step_us']:,.0f} us/step", f"ratio {c['ratio_train_only']:.2f}"),
        ]
    vgg = results.get("vgg8")
    if vgg:
        e = vgg["eager"]
        rows.append(("vgg8 b128", "eager", f"{e['median_step_s']:.3f} s/step",
                     f"{e['samples_per_s']:.1f} samples/s", ""))
        c = vgg["compiled"]
        if "error" in c:
            rows.append(("vgg8 b128", "torch.compile", "FAILED", c["error"][:60], ""))
        else:
            rows.append(("vgg8 b128", "torch.compile", f"{c['median_step_s']:.3f} s/step",
                         f"compile {vgg['compile_s']:.1f} s", f"speed-up {vgg['speedup']:.2f}x"))
    header = ("case", "implementation", "throughput", "detail", "vs hand / eager")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
        return
    table = Table(title=f"cimtool training benchmarks (torch {results['env']['torch']}, "
                        f"{results['env']['torch_num_threads']} threads)")
    for h in header:
        table.add_column(h, justify="left" if h in ("case", "implementation") else "right")
    for r in rows:
        table.add_row(*r)
    Console().print(table)


def run_all(settings: BenchSettings, out: Path | None = RESULTS_JSON,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every benchmark; return the results (and write them as JSON to ``out``)."""
    t_start = time.perf_counter()
    results: dict[str, Any] = {"env": environment(), "settings": settings.__dict__,
                               "load_average_start": load_average(),
                               "cpu_busy_before": cpu_busy_fraction()}
    if (results["cpu_busy_before"] or 0) > 0.2:
        log(f"WARNING: {results['cpu_busy_before']:.0%} of the CPUs were busy before the "
            "benchmark started; other processes skew these figures (badly, with few cores)")
    with tempfile.TemporaryDirectory(prefix="cimtool-bench-") as tmp:
        workdir = Path(tmp)
        results["fit_vs_hand"] = {}
        for case in make_cases(settings):
            results.setdefault("train_config", {})[case.name] = train_config(
                case.epochs, case.model).__dict__
            log(f"fit vs hand-written loop: {case.name} ({case.epochs} epochs, "
                f"{settings.repeats} repeats)")
            results["fit_vs_hand"][case.name] = compare_case(case, settings, workdir, log)
        if settings.vgg:
            log("vgg8 train step, eager vs torch.compile")
            results["vgg8"] = bench_vgg8(settings, workdir, log)
    results["load_average_end"] = load_average()
    results["cpu_busy_after"] = cpu_busy_fraction()
    results["total_wall_s"] = time.perf_counter() - t_start
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks that it runs")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--head-epochs", type=int)
    parser.add_argument("--cnn-epochs", type=int)
    parser.add_argument("--vgg-steps", type=int)
    parser.add_argument("--no-vgg", action="store_true", help="skip the VGG8 compile benchmark")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS_JSON, help="JSON results file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = BenchSettings.quick() if args.quick else BenchSettings()
    overrides = {k: v for k, v in {"repeats": args.repeats, "head_epochs": args.head_epochs,
                                   "cnn_epochs": args.cnn_epochs,
                                   "vgg_steps": args.vgg_steps}.items() if v is not None}
    if args.no_vgg:
        overrides["vgg"] = False
    settings = BenchSettings(**{**settings.__dict__, **overrides})
    results = run_all(settings, args.out, log=lambda m: print(m, file=sys.stderr, flush=True))
    print_table(results)
    print(f"total {results['total_wall_s']:.0f} s; CPUs busy before/after (other processes): "
          f"{results['cpu_busy_before']} / {results['cpu_busy_after']}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
