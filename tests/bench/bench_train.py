"""Training-speed benchmarks for cimtool (CPU-friendly; 2-3 minutes on 2 cores, ~2 more with
Fashion-MNIST).

1. ``fit`` vs a minimal hand-written PyTorch loop, same model, same data, same epochs:
   (i) the default crossbar head (Linear(64, 10)) on avgpool_8x8 features of mnist5k, and
   (ii) ``mnist_cnn`` on mnist5k images; then, when Fashion-MNIST is installed (``FASHION_DIR``,
   the four IDX files), the same two at full size: the head on the 54,000 train features for
   train-ann's default epochs there (10), and ``mnist_cnn`` for 1 epoch. cimtool's figure is
   reported twice: end-to-end wall time of ``fit`` (what a user waits for: it also evaluates on
   val every epoch and writes checkpoints) and the training-only figure ``fit`` records itself
   (``FitResult.timing``).
2. ``cimtool train-ann`` with the default model on Fashion-MNIST, end to end in a subprocess
   (import, data loading, projection and head training, test): wall time and test accuracy.
3. Train step (forward + backward + AdamW) at batch 128, eager vs ``torch.compile`` (inductor),
   with the compile time reported separately: VGG8 on CIFAR-shaped random data and ``mnist_cnn``
   on MNIST-shaped random data (what ``--compile on`` does on a CPU).

Run:  python tests/bench/bench_train.py          (or: nox -s bench)
      python tests/bench/bench_train.py --quick  (seconds; checks that it runs)
      python tests/bench/bench_train.py --no-vgg --cases fashion_crossbar_head,train_ann

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from torch import nn

from cimtool.data import load_dataset, make_splits
from cimtool.models.registry import MODELS, make_spec
from cimtool.stages.train_ann import TrainAnnParams, default_epochs
from cimtool.train.batching import TensorData, to_float
from cimtool.train.loop import TrainConfig, evaluate, fit
from cimtool.train.schedule import scaled_lr
from cimtool.ui import Reporter

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results" / "bench_train.json"
CPU = torch.device("cpu")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # Fashion-MNIST IDX files, loaded as --dataset mnist


@dataclass(frozen=True)
class BenchSettings:
    repeats: int = 5  # timed runs per implementation (alternated); the median is reported
    head_epochs: int = 150  # train-ann's default --epochs; ~3-5 s per fit() on 2 cores
    head_warmup_epochs: int = 5
    cnn_epochs: int = 3
    cnn_warmup_epochs: int = 1
    vgg_batch: int = 128
    vgg_warmup_steps: int = 2
    vgg_steps: int = 5
    vgg: bool = True
    seed: int = 0
    fashion_dir: str | None = FASHION_DIR  # its cases run when the folder exists
    fashion_repeats: int = 3  # full-size runs are long: fewer repeats (still alternated)
    fashion_head_epochs: int | None = None  # None: train-ann's default for its train size (10)
    fashion_cnn_epochs: int = 1
    fashion_train_limit: int | None = None  # first N train samples only (--quick)
    train_ann: bool = True  # end-to-end `cimtool train-ann` on Fashion-MNIST (a subprocess)
    cases: tuple[str, ...] | None = None  # only these cases (names as in the results); None: all

    @classmethod
    def quick(cls) -> BenchSettings:
        return cls(repeats=1, head_epochs=5, head_warmup_epochs=1, cnn_epochs=1,
                   cnn_warmup_epochs=1, vgg_batch=8, vgg_warmup_steps=1, vgg_steps=1,
                   fashion_repeats=1, fashion_head_epochs=1, fashion_train_limit=2048,
                   train_ann=False)

    def wants(self, name: str) -> bool:
        return self.cases is None or name in self.cases


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
    warmup_epochs: int  # 0: no warm-up run (the process is already warm from earlier cases)
    repeats: int


def load_mnist5k() -> tuple[TensorData, TensorData]:
    """mnist5k train/val splits as train-ann makes them (split seed 0, val 0.1, test 0.2)."""
    raw = load_dataset("mnist5k")
    splits = make_splits(raw.x, raw.y, 0, 0.1, 0.2)
    return (TensorData(torch.from_numpy(splits.train.x), torch.from_numpy(splits.train.y)),
            TensorData(torch.from_numpy(splits.val.x), torch.from_numpy(splits.val.y)))


def load_fashion(folder: str, limit: int | None) -> tuple[TensorData, TensorData]:
    """Fashion-MNIST train/val splits as `train-ann --dataset mnist --data-dir FOLDER` makes them
    (official test set kept apart, val 0.1 of the 60,000: 54,000 train, 6,000 val)."""
    raw = load_dataset("mnist", Path(folder))
    splits = make_splits(raw.x, raw.y, 0, 0.1, 0.2, raw.test)
    n = len(splits.train) if limit is None else limit
    return (TensorData(torch.from_numpy(splits.train.x[:n]), torch.from_numpy(splits.train.y[:n])),
            TensorData(torch.from_numpy(splits.val.x), torch.from_numpy(splits.val.y)))


def make_cases(settings: BenchSettings) -> list[Case]:
    """mnist5k, then Fashion-MNIST at full size where it is installed."""
    cases = []
    if settings.wants("crossbar_head") or settings.wants("mnist_cnn"):
        train, val = load_mnist5k()
        cases += _cases(settings, "", train, val, settings.head_epochs, settings.head_warmup_epochs,
                        settings.cnn_epochs, settings.cnn_warmup_epochs, settings.repeats)
    fashion = settings.fashion_dir
    if fashion and Path(fashion).is_dir() and (settings.wants("fashion_crossbar_head")
                                               or settings.wants("fashion_mnist_cnn")):
        train, val = load_fashion(fashion, settings.fashion_train_limit)
        head_epochs = settings.fashion_head_epochs or default_epochs(len(train))
        cases += _cases(settings, "fashion_", train, val, head_epochs, 0,
                        settings.fashion_cnn_epochs, 0, settings.fashion_repeats)
    return [case for case in cases if settings.wants(case.name)]


def _cases(settings: BenchSettings, prefix: str, train: TensorData, val: TensorData,
           head_epochs: int, head_warmup: int, cnn_epochs: int, cnn_warmup: int,
           repeats: int) -> list[Case]:
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
        Case(f"{prefix}crossbar_head", "Linear(64,10) on avgpool_8x8 features (float [N,64])",
             "crossbar", build_head, *feats, head_epochs, head_warmup, repeats),
        Case(f"{prefix}mnist_cnn", "mnist_cnn on uint8 images [N,1,28,28]", "mnist_cnn",
             build_cnn, train, val, cnn_epochs, cnn_warmup, repeats),
    ]


RECIPE_FIELDS = ("batch_size", "lr", "optimizer", "weight_decay", "momentum", "warmup_epochs",
                 "label_smoothing", "grad_clip", "seed")


def train_config(epochs: int, model: str) -> TrainConfig:
    """train-ann's default recipe for the loop (TrainAnnParams; the model's default learning rate
    where train-ann leaves it to the registry), with compile off and the memory batcher; every
    other TrainConfig field (augmentation, ...) keeps its default, which is what mnist5k gets."""
    defaults = TrainAnnParams()
    recipe = {name: getattr(defaults, name) for name in RECIPE_FIELDS
              if getattr(defaults, name, None) is not None}
    if "lr" not in recipe:  # lr None: the model's default (registry)
        recipe["lr"] = getattr(MODELS[model], "default_lr", TrainConfig.lr)
    return TrainConfig(epochs=epochs, compile="off", loader="memory", **recipe)


# --------------------------------------------------------------------------- the two loops


def run_cimtool_fit(model: nn.Module, case: Case, epochs: int, workdir: Path) -> dict[str, Any]:
    """cimtool's fit(), end to end (val evaluation and a checkpoint every epoch included)."""
    cfg = train_config(epochs, case.model)
    checkpoint = workdir / "bench.ckpt"  # must not exist, or fit() resumes from it
    for stale in (checkpoint, checkpoint.with_name(checkpoint.name + ".tmp")):
        stale.unlink(missing_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    result = fit(model, case.train, case.val, cfg, CPU, checkpoint, case.name,
                 Reporter(quiet=True))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    checkpoint.unlink(missing_ok=True)
    train_wall = sum(t["wall_s"] for t in result.timing)
    n = len(case.train) * epochs
    return {"wall_s": wall, "samples_per_s": n / wall, "samples_per_cpu_s": n / cpu,
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
    t0, c0 = time.perf_counter(), time.process_time()
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
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    _, val_acc = evaluate(model, case.val, CPU)  # untimed: only to show it learned too
    return {"wall_s": wall, "samples_per_s": n * epochs / wall,
            "samples_per_cpu_s": n * epochs / cpu, "val_acc": val_acc}


class OtherLoad:
    """CPU share taken by *other* processes during a measurement (Linux /proc/stat minus the CPU
    time of this process and its waited-for children), as a fraction of all CPUs: above ~0.1 the
    figure is suspect."""

    def __enter__(self) -> OtherLoad:
        self.share: float | None = None
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        if self._start is not None and end is not None:
            busy, own, wall = (b - a for a, b in zip(self._start, end, strict=True))
            self.share = round(max(0.0, busy - own) / max(1e-9, wall * (os.cpu_count() or 1)), 3)

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
            hz = os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, AttributeError):
            return None
        busy = (sum(values[:8]) - values[3] - values[4]) / hz  # all but idle and iowait
        t = os.times()
        return busy, t.user + t.system + t.children_user + t.children_system, time.perf_counter()


def compare_case(case: Case, settings: BenchSettings, workdir: Path,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Warm both up once, then alternate them ``case.repeats`` times; medians of samples/s, and
    the median of the per-round ratios (each round's two runs see about the same machine load)."""
    impls = {"cimtool_fit": run_cimtool_fit, "hand_loop": run_hand_loop}
    for run in impls.values():
        if case.warmup_epochs > 0:
            run(case.build(), case, case.warmup_epochs, workdir)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in impls}
    order = list(impls)
    for r in range(case.repeats):
        for name in order if r % 2 == 0 else order[::-1]:  # ABBA: cancels slow drift
            model = case.build()
            with OtherLoad() as other:
                out = impls[name](model, case, case.epochs, workdir)
            out["other_processes_cpu_share"] = other.share
            runs[name].append(out)
            log(f"  {case.name} run {r + 1}/{case.repeats} {name}: "
                f"{out['samples_per_s']:,.0f} samples/s ({out['wall_s']:.2f} s; other processes "
                f"{other.share if other.share is not None else '?'} of the CPUs)")

    def med(name: str, key: str) -> float:
        return statistics.median(o[key] for o in runs[name])

    def paired(key: str) -> float:
        return statistics.median(f[key] / h["samples_per_s"]
                                 for f, h in zip(runs["cimtool_fit"], runs["hand_loop"], strict=True))

    fit_e2e = med("cimtool_fit", "samples_per_s")
    fit_train = med("cimtool_fit", "train_only_samples_per_s")
    hand = med("hand_loop", "samples_per_s")
    steps = -(-len(case.train) // train_config(1, case.model).batch_size) * case.epochs
    return {
        "description": case.description,
        "n_train": len(case.train), "n_val": len(case.val), "epochs": case.epochs,
        "batch_size": train_config(1, case.model).batch_size, "steps_per_run": steps,
        "repeats": case.repeats,
        "cimtool_fit_samples_per_s": fit_e2e,
        "cimtool_fit_train_only_samples_per_s": fit_train,
        "hand_loop_samples_per_s": hand,
        "ratio_end_to_end": fit_e2e / hand,
        "ratio_train_only": fit_train / hand,
        "ratio_end_to_end_paired": paired("samples_per_s"),
        # CPU time instead of wall time: robust to other processes taking the CPUs, but only
        # with --threads 1 (idle OpenMP threads spin, which counts as CPU time)
        "ratio_cpu_time_end_to_end": (med("cimtool_fit", "samples_per_cpu_s")
                                      / med("hand_loop", "samples_per_cpu_s")),
        "ratio_train_only_paired": paired("train_only_samples_per_s"),
        "cimtool_fit_step_us": 1e6 * med("cimtool_fit", "train_only_wall_s") / steps,
        "hand_loop_step_us": 1e6 * med("hand_loop", "wall_s") / steps,
        # what fit() spends outside its timed epochs: setup, val evaluation, checkpoints
        "cimtool_fit_non_training_ms_per_epoch": 1e3 * (
            med("cimtool_fit", "wall_s") - med("cimtool_fit", "train_only_wall_s")) / case.epochs,
        "val_acc": {name: med(name, "val_acc") for name in impls},
        "max_other_processes_cpu_share": max(
            (o["other_processes_cpu_share"] or 0.0) for rs in runs.values() for o in rs),
        "runs": runs,
    }


# --------------------------------------------------------------------------- train-ann end to end

TRAIN_ANN_TARGETS = {"wall_s_max": 30.0, "test_accuracy_min": 0.835}  # the floor (2 cores)


def bench_train_ann(settings: BenchSettings, workdir: Path,
                    log: Callable[[str], None]) -> dict[str, Any]:
    """`cimtool train-ann` with every default (proj_sup_64 front-end, 64->10 head) on Fashion-MNIST,
    as a user runs it: a fresh process (imports, data loading, projection and head training, test
    evaluation, artifact). Same thread count as this process."""
    from cimtool import artifacts

    args = ["train-ann", "--dataset", "mnist", "--data-dir", str(settings.fashion_dir),
            "--artifacts-root", str(workdir / "train-ann"), "--json", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    with OtherLoad() as other:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "cimtool", *args], capture_output=True,
                              text=True, env=env, timeout=1800)
        wall = time.perf_counter() - t0
    out: dict[str, Any] = {"command": "cimtool " + " ".join(args[:5]), "wall_s": wall,
                           "torch_threads": torch.get_num_threads(),
                           "other_processes_cpu_share": other.share, "targets": TRAIN_ANN_TARGETS}
    if proc.returncode != 0:
        out["error"] = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        log(f"  train-ann failed: {out['error']}")
        return out
    art = artifacts.load(json.loads(proc.stdout)["artifact"], "model")
    timing = pq.read_table(art.path / "timing.parquet").to_pylist()
    out.update({
        "test_accuracy": art.summary["test_accuracy"], "val_accuracy": art.summary["val_accuracy"],
        "n_train": art.summary["n_train"],
        "params": {k: art.params[k] for k in ("model", "method", "epochs", "frontend_epochs",
                                              "batch_size")},
        "in_process_wall_s": art.summary["wall_s"],
        "head_samples_per_s": art.summary["train_samples_per_s"],
        "training_wall_s": {phase: sum(t["wall_s"] for t in timing if t["phase"] == phase)
                            for phase in dict.fromkeys(t["phase"] for t in timing)},
    })
    log(f"  train-ann: {wall:.1f} s, test accuracy {out['test_accuracy']:.4f} "
        f"(epochs {art.params['epochs']}, frontend epochs {art.params['frontend_epochs']}; other "
        f"processes {other.share if other.share is not None else '?'} of the CPUs)")
    return out


# --------------------------------------------------------------------------- eager vs compiled


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


# model → (input shape, timed steps per --vgg-steps: mnist_cnn's are ~150x shorter) of the
# eager-vs-compiled cases
COMPILE_CASES = {"vgg8": ((3, 32, 32), 1), "mnist_cnn": ((1, 28, 28), 8)}


class CompileTrainer:
    """One model + AdamW on fixed random data; ``step()`` times one train step."""

    def __init__(self, name: str, compiled: bool, settings: BenchSettings) -> None:
        torch.manual_seed(settings.seed)
        shape, _ = COMPILE_CASES[name]
        self.model = MODELS[name].build(make_spec(name, None, shape, 10, [])).train()
        self.x = torch.rand(settings.vgg_batch, *shape)
        self.y = torch.randint(0, 10, (settings.vgg_batch,))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-4)
        self.criterion = nn.CrossEntropyLoss()
        # as fit() does with compile=on: the model is compiled, the optimizer step is not
        self.step_model = torch.compile(self.model) if compiled else self.model
        self.warmup_s: list[float] = []
        self.step_s: list[float] = []

    def step(self) -> float:
        t0 = time.perf_counter()
        loss = self.criterion(self.step_model(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - t0

    def summary(self, batch: int, other_share: float | None) -> dict[str, Any]:
        median = statistics.median(self.step_s)
        return {"warmup_step_s": self.warmup_s, "step_s": self.step_s, "median_step_s": median,
                "samples_per_s": batch / median, "other_processes_cpu_share": other_share,
                # the first step(s) minus steady-state steps: the cost of compiling (or of
                # first-touch allocation, for eager)
                "first_steps_overhead_s": sum(self.warmup_s) - median * len(self.warmup_s)}


def bench_compile(name: str, settings: BenchSettings, workdir: Path,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Warm both up (the compiled one compiles), then alternate timed steps of the two, so that
    drift in the machine's speed (large on shared VMs) hits both alike."""
    steps = settings.vgg_steps * COMPILE_CASES[name][1]
    out: dict[str, Any] = {"batch_size": settings.vgg_batch, "input_shape": list(COMPILE_CASES[name][0]),
                           "warmup_steps": settings.vgg_warmup_steps,
                           "timed_steps": steps,
                           "compile_backend": "inductor (torch.compile defaults)",
                           "compiled_part": "model forward/backward; AdamW step eager (as fit)",
                           "inductor_cache": "fresh (cold compile)",
                           "timing": "eager and compiled steps alternated (ABBA)"}
    trainers = {"eager": CompileTrainer(name, False, settings)}
    trainers["eager"].warmup_s = [trainers["eager"].step()
                                  for _ in range(settings.vgg_warmup_steps)]
    try:
        with fresh_inductor_cache(str(workdir / f"inductor-cache-{name}")):
            compiled = CompileTrainer(name, True, settings)
            compiled.warmup_s = [compiled.step() for _ in range(settings.vgg_warmup_steps)]
            trainers["compiled"] = compiled
            with OtherLoad() as other:  # timed steps only: compile workers count as "other"
                for i in range(steps):
                    order = ["eager", "compiled"] if i % 2 == 0 else ["compiled", "eager"]
                    for mode in order:
                        trainers[mode].step_s.append(trainers[mode].step())
    except Exception as exc:  # noqa: BLE001 - report, never crash the benchmark
        out["compiled"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:500]}"
                                    if str(exc) else type(exc).__name__,
                           "traceback": traceback.format_exc()[-4000:]}
        out["speedup"] = out["compile_s"] = None
        log(f"  {name} torch.compile failed: {out['compiled']['error']}")
        eager = trainers["eager"]
        with OtherLoad() as other:
            while len(eager.step_s) < steps:
                eager.step_s.append(eager.step())
        out["eager"] = eager.summary(settings.vgg_batch, other.share)
    else:
        out["eager"] = trainers["eager"].summary(settings.vgg_batch, other.share)
        out["compiled"] = compiled.summary(settings.vgg_batch, other.share)
        out["compile_s"] = out["compiled"]["first_steps_overhead_s"]
        # the same, less what eager's first steps cost beyond its steady state (allocation)
        out["compile_s_net_of_eager_warmup"] = (out["compile_s"]
                                                - out["eager"]["first_steps_overhead_s"])
        out["speedup"] = out["eager"]["median_step_s"] / out["compiled"]["median_step_s"]
        log(f"  {name} compiled: {out['compiled']['median_step_s']:.3f} s/step, "
            f"compile {out['compile_s']:.1f} s")
    finally:
        with contextlib.suppress(Exception):
            torch._dynamo.reset()
    log(f"  {name} eager: {out['eager']['median_step_s']:.3f} s/step")
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
    """Compact tables (they fit 80 columns): fit vs hand-written, and each model eager vs compiled."""
    loops = [("case", "loop", "samples/s", "us/step", "ratio")]
    for name, c in results["fit_vs_hand"].items():
        loops += [
            (name, "hand-written", f"{c['hand_loop_samples_per_s']:,.0f}",
             f"{c['hand_loop_step_us']:,.0f}", "1.00"),
            ("", "fit, end to end", f"{c['cimtool_fit_samples_per_s']:,.0f}", "",
             f"{c['ratio_end_to_end']:.2f}"),
            ("", "fit, training only", f"{c['cimtool_fit_train_only_samples_per_s']:,.0f}",
             f"{c['cimtool_fit_step_us']:,.0f}", f"{c['ratio_train_only']:.2f}"),
        ]
    notes = [f"{name}: {c['epochs']} epochs x {c['n_train']} samples, median of {c['repeats']} "
             f"(median of per-round ratios: {c['ratio_end_to_end_paired']:.2f} end to end, "
             f"{c['ratio_train_only_paired']:.2f} training only; CPU-time ratio "
             f"{c['ratio_cpu_time_end_to_end']:.2f} end to end); fit spends "
             f"{c['cimtool_fit_non_training_ms_per_epoch']:.1f} ms/epoch outside training (val "
             "eval, checkpoints)" for name, c in results["fit_vs_hand"].items()]
    ta = results.get("train_ann_fashion")
    if ta:
        notes.append(f"train-ann on Fashion-MNIST: FAILED: {ta['error']}" if "error" in ta else
                     f"train-ann on Fashion-MNIST (default model, {ta['params']['epochs']} head / "
                     f"{ta['params']['frontend_epochs']} projection epochs): {ta['wall_s']:.1f} s, "
                     f"test accuracy {ta['test_accuracy']:.4f} (floor: <= "
                     f"{TRAIN_ANN_TARGETS['wall_s_max']:.0f} s, >= "
                     f"{TRAIN_ANN_TARGETS['test_accuracy_min']})")
    vgg_rows: list[tuple[str, ...]] = []
    for name in COMPILE_CASES:
        vgg = results.get("compile", {}).get(name)
        if not vgg:
            continue
        vgg_rows.append((name, "s/step", "samples/s", "first steps s", "speed-up"))
        e = vgg["eager"]
        vgg_rows.append(("eager", f"{e['median_step_s']:.3f}", f"{e['samples_per_s']:.1f}",
                         f"{sum(e['warmup_step_s']):.1f}", "1.00"))
        c = vgg["compiled"]
        if "error" in c:
            notes.append(f"{name} torch.compile FAILED: {c['error']}")
        else:
            vgg_rows.append(("torch.compile", f"{c['median_step_s']:.3f}",
                             f"{c['samples_per_s']:.1f}", f"{sum(c['warmup_step_s']):.1f}",
                             f"{vgg['speedup']:.2f}"))
            notes.append(f"{name} batch {vgg['batch_size']}: compile time {vgg['compile_s']:.1f} s "
                         f"(first {vgg['warmup_steps']} steps minus steady state); median of "
                         f"{vgg['timed_steps']} steps")
    env = results["env"]
    title = (f"torch {env['torch']}, {env['torch_num_threads']} threads, "
             f"{env['cpu_count']} CPUs, {env['machine']}")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for rows in (loops, vgg_rows):
            if rows:
                widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
                for r in rows:
                    print("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))
        print("\n".join(notes))
        return
    console = Console()
    for rows, caption in ((loops, f"fit() vs hand-written loop ({title})"),
                          (vgg_rows, "Train step, eager vs torch.compile")):
        if len(rows) < 2:  # a header alone: that part was not run
            continue
        table = Table(title=caption)
        for i, h in enumerate(rows[0]):
            table.add_column(h, justify="left" if i < (2 if rows is loops else 1) else "right")
        for r in rows[1:]:
            table.add_row(*r)
        console.print(table)
    for note in notes:
        console.print(note, highlight=False)


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
            log(f"fit vs hand-written loop: {case.name} ({case.epochs} epochs x {len(case.train)}, "
                f"{case.repeats} repeats)")
            results["fit_vs_hand"][case.name] = compare_case(case, settings, workdir, log)
        fashion = settings.fashion_dir
        if settings.train_ann and settings.wants("train_ann") and fashion and Path(fashion).is_dir():
            log("cimtool train-ann, default model, Fashion-MNIST")
            results["train_ann_fashion"] = bench_train_ann(settings, workdir, log)
        if settings.vgg:
            results["compile"] = {}
            for name in COMPILE_CASES:
                log(f"{name} train step, eager vs torch.compile")
                results["compile"][name] = bench_compile(name, settings, workdir, log)
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
    parser.add_argument("--no-vgg", action="store_true", help="skip the eager-vs-compiled benchmark")
    parser.add_argument("--fashion-dir", help=f"Fashion-MNIST IDX folder (default {FASHION_DIR})")
    parser.add_argument("--no-fashion", action="store_true", help="skip the Fashion-MNIST cases")
    parser.add_argument("--fashion-repeats", type=int)
    parser.add_argument("--cases", help="comma-separated: crossbar_head, mnist_cnn, "
                        "fashion_crossbar_head, fashion_mnist_cnn, train_ann (default: all)")
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
    if args.fashion_dir or args.no_fashion:
        overrides["fashion_dir"] = None if args.no_fashion else args.fashion_dir
    if args.fashion_repeats:
        overrides["fashion_repeats"] = args.fashion_repeats
    if args.cases:
        overrides["cases"] = tuple(args.cases.split(","))
    settings = BenchSettings(**{**settings.__dict__, **overrides})
    results = run_all(settings, args.out, log=lambda m: print(m, file=sys.stderr, flush=True))
    print_table(results)
    print(f"total {results['total_wall_s']:.0f} s; CPUs busy before/after (other processes): "
          f"{results['cpu_busy_before']} / {results['cpu_busy_after']}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
