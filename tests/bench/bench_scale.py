"""Real-scale benchmarks: mnist_cnn on full-size Fashion-MNIST, on 2 CPU cores.

1. ``pass``: one pass of the simulated arrays over the 10,000-image test split (every crossbar
   layer on arrays, converters calibrated on 2,048 train images) vs the float model's pass over
   the same images, in the same run, interleaved repeats (medians): ideal devices (target ≤ 2×)
   and every non-ideality with the card's ADC and DAC (target ≤ 5×).
2. ``evaluate``: ``cimtool map-weights --weight-bits 4 --evaluate --trials 10`` as a user runs it
   (a subprocess): wall time (target ≤ 60 s) and the float / ideal / non-ideal accuracies.
3. ``calibration``: the same with the converters calibrated on the whole train split (54,000
   images): the accuracy difference against the Monte Carlo error of 10 chips.
4. ``parallel``: two such map-weights side by side, each against one alone (target ≤ 2.2×).

The model is ``--model`` (a model artifact of mnist_cnn on fashion-mnist), or trained once with
``cimtool train-ann --dataset fashion-mnist --model mnist_cnn --epochs 5`` into
tests/bench/results/fashion_cnn (reused when it is there). Skips with a message when the
Fashion-MNIST package is missing (``apt-get install dataset-fashion-mnist``).

    python tests/bench/bench_scale.py [--model PATH] [--repeats 5] [--only pass,evaluate,...]

Results: a table on the terminal and tests/bench/results/bench_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cimtool.data.mnist_idx import FASHION_MNIST_DIR  # noqa: E402

RESULTS = ROOT / "tests" / "bench" / "results"
PARTS = ("pass", "evaluate", "calibration", "parallel")
EVALUATE = ["map-weights", "--weight-bits", "4", "--evaluate", "--trials", "10", "--quiet", "--json"]


def cimtool(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cimtool", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"cimtool failed ({proc.returncode}): {err.strip()[-2000:]}")
    return json.loads(out)


def ensure_model(path: str | None) -> Path:
    if path:
        return Path(path)
    model = RESULTS / "fashion_cnn"
    check = subprocess.run([sys.executable, "-m", "cimtool", "inspect", str(model), "--hashes-only"],
                           capture_output=True)
    if check.returncode != 0:
        print("training mnist_cnn on fashion-mnist (5 epochs) …", flush=True)
        finish(cimtool("train-ann", "--dataset", "fashion-mnist", "--model", "mnist_cnn", "--epochs", "5",
                       "--out", str(model), "--force", "--quiet", "--json"))
    return model


def bench_pass(model_path: Path, repeats: int) -> dict:
    from cimtool.data.calibration import calibration_sample
    from cimtool.devices.card import load_card
    from cimtool.devices.mapping import Placement, card_grid
    from cimtool.models.io import model_splits, open_model
    from cimtool.nn.array import EFFECTS, ArrayConfig
    from cimtool.nn.network import ArrayNetwork, map_model
    from cimtool.train.batching import to_float

    artifact, model, spec = open_model(model_path)
    data = model_splits(artifact)
    test = data["test"]
    sample, _ = calibration_sample(data["train"], 2048, 0)
    card = load_card("rram_seed003")
    maps = map_model(model, spec, card_grid(card, 4))
    placements = {n: Placement(*m.shape, 128, 128, "interleaved") for n, m in maps.items()}
    configs = {"ideal": ArrayConfig(),
               "nonideal": ArrayConfig(effects=EFFECTS, adc_bits=card.adc_bits, scheme=card.adc_scheme,
                                       input_bits=card.input_bits)}
    nets = {}
    for name, config in configs.items():
        nets[name] = ArrayNetwork(model, maps, placements, card, config)
        nets[name].calibrate(sample)
    nets["nonideal"].program([torch.Generator().manual_seed(0)])

    def float_pass() -> None:
        with torch.no_grad():
            for i in range(0, len(test), 2048):
                model(to_float(test.x[i: i + 2048])).argmax(1)

    def float_nchw_pass() -> None:  # the float pass as it was before inputs went channels-last
        with torch.no_grad():
            for i in range(0, len(test), 2048):
                model(to_float(test.x[i: i + 2048]).clone(memory_format=torch.contiguous_format)).argmax(1)

    fns = {"float": float_pass, "float_nchw": float_nchw_pass,
           **{name: net.predict for name, net in nets.items()}}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for key, fn in fns.items():
        fn(test) if key in nets else fn()  # warm-up
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn(test) if key in nets else fn()
            times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"test_images": len(test), "float_pass_s": med["float"], "ideal_pass_s": med["ideal"],
            "nonideal_pass_s": med["nonideal"], "ideal_over_float": med["ideal"] / med["float"],
            "nonideal_over_float": med["nonideal"] / med["float"],
            "float_nchw_pass_s": med["float_nchw"],
            "nonideal_over_float_nchw": med["nonideal"] / med["float_nchw"],
            "batch_ideal": nets["ideal"].batch_size(len(test)),
            "batch_nonideal": nets["nonideal"].batch_size(len(test))}


def _evaluate(model: Path, out: Path, *extra: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    result = finish(cimtool(*EVALUATE, "--model", str(model), "--out", str(out), "--force", *extra))
    return time.perf_counter() - t0, result["summary"]


def bench_evaluate(model: Path, tmp: Path) -> dict:
    wall, s = _evaluate(model, tmp / "cmap")
    return {"map_weights_evaluate_10_trials_s": wall, "accuracy_float": s["accuracy_float"],
            "accuracy_mapped_ideal": s["accuracy_mapped_ideal"],
            "accuracy_nonideal_mean": s["accuracy_nonideal_mean"],
            "accuracy_nonideal_std": s["accuracy_nonideal_std"]}


def bench_calibration(model: Path, tmp: Path) -> dict:
    runs = {}
    for label, n in (("sample_2048", "2048"), ("full_split", "60000")):
        wall, s = _evaluate(model, tmp / f"cmap_{label}", "--calibration-samples", n)
        runs[label] = {"wall_s": wall, "ideal": s["accuracy_mapped_ideal"],
                       "mean": s["accuracy_nonideal_mean"], "std": s["accuracy_nonideal_std"],
                       "samples": s["calibration_samples"]}
    diff = runs["sample_2048"]["mean"] - runs["full_split"]["mean"]
    # standard error of the difference of two means of 10 chips each
    se = ((runs["sample_2048"]["std"] ** 2 + runs["full_split"]["std"] ** 2) / 10) ** 0.5
    return {"calibration": runs, "calibration_mean_diff": diff, "calibration_diff_se": se,
            "calibration_ideal_diff": runs["sample_2048"]["ideal"] - runs["full_split"]["ideal"]}


def bench_parallel(model: Path, tmp: Path) -> dict:
    alone, _ = _evaluate(model, tmp / "alone")
    t0 = time.perf_counter()
    procs = [cimtool(*EVALUATE, "--model", str(model), "--out", str(tmp / f"side{k}"), "--force")
             for k in range(2)]
    walls = []
    for proc in procs:
        finish(proc)
        walls.append(time.perf_counter() - t0)
    return {"alone_s": alone, "side_by_side_s": walls, "side_by_side_over_alone": max(walls) / alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="mnist_cnn model artifact trained on fashion-mnist")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    args = parser.parse_args()
    if not Path(FASHION_MNIST_DIR).is_dir():
        print(f"bench_scale: {FASHION_MNIST_DIR} missing (apt-get install dataset-fashion-mnist); skipped")
        return
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    from cimtool.threads import keep_freed_memory

    keep_freed_memory()  # what the cimtool command does for itself (cimtool/threads.py)
    RESULTS.mkdir(parents=True, exist_ok=True)
    model = ensure_model(args.model)
    load = os.getloadavg()[0]
    results: dict = {"model": str(model), "load_before": load}
    with tempfile.TemporaryDirectory() as tmp:
        if "pass" in parts:
            results.update(bench_pass(model, args.repeats))
        if "evaluate" in parts:
            results.update(bench_evaluate(model, Path(tmp)))
        if "calibration" in parts:
            results.update(bench_calibration(model, Path(tmp)))
        if "parallel" in parts:
            results.update(bench_parallel(model, Path(tmp)))
    results["load_after"] = os.getloadavg()[0]
    results["env"] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "cpus": os.cpu_count(), "platform": platform.platform(),
                      "python": platform.python_version()}
    targets = {"ideal_over_float": 2.0, "nonideal_over_float": 5.0, "map_weights_evaluate_10_trials_s": 60.0,
               "side_by_side_over_alone": 2.2}

    from rich.console import Console
    from rich.table import Table

    table = Table(title="real-scale benchmarks (Fashion-MNIST, mnist_cnn, CPU, medians)")
    for column in ("measure", "value", "target"):
        table.add_column(column)
    for key, value in results.items():
        if key in ("env", "calibration"):
            continue
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        mark = ""
        if key in targets:
            mark = f"≤ {targets[key]}" + (" ✓" if value <= targets[key] else " ✗")
        table.add_row(key, shown, mark)
    Console().print(table)
    if "calibration" in results:
        Console().print(results["calibration"])
    (RESULTS / "bench_scale.json").write_text(json.dumps(results, indent=2) + "\n")
    if load > 0.5:
        print(f"warning: load average {load:.2f} before the run: the machine was not idle")


if __name__ == "__main__":
    main()
