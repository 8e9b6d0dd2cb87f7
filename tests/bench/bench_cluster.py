"""Sweeps on Ray and training under torchrun, against one process.

1. **Sweep executors**, the `cimtool sweep` command as a user runs it (a subprocess: start-up and,
   for Ray, starting a local cluster included), same model and grid:
   - `local`, one thread (``cimtool --threads 1``): one single-threaded worker without Ray;
   - `ray`, 1 worker and 2 workers of one thread each, on one local Ray cluster the script starts
     (``ray start --head``) and both join (target: 2 workers ≥ 1.6× faster than 1);
   - `ray`, 2 workers on a cluster the command starts itself (no ``--address``).
   Every run's `sweep.parquet` must be byte-identical. Figures: the command's wall time, the
   units' wall time (the summary's ``units_wall_s``: from the first unit sent to the last result,
   worker start-up included) and configuration evaluations per second per core on the units (one
   evaluation = one configuration scored on val on ``--trials`` chips), for the default model (the
   README's main job) and for `mnist_cnn`; and the fixed cost of the command (a one-configuration
   sweep, local and on Ray).
2. **torchrun**: `train-ann --model mnist_cnn` on mnist5k, one process vs `torchrun
   --nproc_per_node 2` (one thread each): test accuracy and the median samples/s of the epochs.

    python tests/bench/bench_cluster.py [--epochs N] [--cnn-epochs N] [--skip-train]

Run it on an otherwise idle machine. Results: the terminal and tests/bench/results/bench_cluster.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
RAY_PORT = 6390


def cimtool(*args: str, prefix: tuple[str, ...] = (),
            launcher: list[str] | None = None) -> tuple[float, dict]:
    command = (launcher or [sys.executable, "-m"]) + ["cimtool", *prefix, *args, "--json", "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stderr}")
    return wall, json.loads(proc.stdout)


def sweep_executors(model: str, work: Path, label: str, grid: list[str], address: str) -> dict:
    """local with one thread; Ray (1 and 2 workers) on the running cluster at ``address``; Ray with
    2 workers on a local cluster of its own (started and stopped by the command)."""
    runs = {"local_1thread": (("--threads", "1"), ["--executor", "local"]),
            "ray_1worker": ((), ["--executor", "ray", "--address", address, "--workers", "1"]),
            "ray_2workers": ((), ["--executor", "ray", "--address", address, "--workers", "2"]),
            "ray_2workers_own_cluster": ((), ["--executor", "ray", "--workers", "2"])}
    figures, parquet = {}, None
    for name, (prefix, extra) in runs.items():
        out = work / f"{label}-{name}"
        wall, payload = cimtool("sweep", "--model", model, *grid, "--out", str(out), *extra, prefix=prefix)
        s = payload["summary"]
        data = (out / "sweep.parquet").read_bytes()
        assert parquet is None or data == parquet, f"{name}: sweep.parquet differs"
        parquet = data
        cores = 2 if "2workers" in name else 1
        figures[name] = {"wall_s": wall, "units_wall_s": s["units_wall_s"], "units": s["units"],
                         "configs": s["n_configs"], "trials": s["trials"], "executor": s["executor"],
                         "configs_per_s_per_core": s["n_configs"] / s["units_wall_s"] / cores}
        print(f"{label} {name:26s} command {wall:6.1f} s  units {s['units_wall_s']:6.1f} s  "
              f"{s['n_configs'] / s['units_wall_s'] / cores:6.1f} configurations/s/core", flush=True)
    for key in ("wall_s", "units_wall_s"):
        figures[f"speedup_ray_2_vs_1_{key}"] = figures["ray_1worker"][key] / figures["ray_2workers"][key]
    print(f"{label}: ray 2 workers vs 1 on one cluster: command {figures['speedup_ray_2_vs_1_wall_s']:.2f}x, "
          f"units {figures['speedup_ray_2_vs_1_units_wall_s']:.2f}x", flush=True)
    return figures


def fixed_cost(model: str, work: Path) -> dict:
    """Start-up of the sweep command: a one-configuration sweep, local and on a fresh local Ray cluster."""
    one = ["--weight-bits", "4", "--adc-bits", "5", "--scheme", "B", "--timesteps", "1"]
    local, _ = cimtool("sweep", "--model", model, *one, "--out", str(work / "one-local"),
                       prefix=("--threads", "1"))
    ray, _ = cimtool("sweep", "--model", model, *one, "--out", str(work / "one-ray"), "--executor", "ray",
                     "--workers", "1")
    print(f"one-configuration sweep: local {local:.1f} s, ray {ray:.1f} s (start-up and one unit)",
          flush=True)
    return {"one_config_local_s": local, "one_config_ray_s": ray}


def torchrun_pair(work: Path, epochs: str | None) -> dict:
    args = ["train-ann", "--model", "mnist_cnn", *(["--epochs", epochs] if epochs else [])]
    figures = {}
    for name, launcher in (("1_process", None),
                           ("torchrun_2", [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m"])):
        wall, payload = cimtool(*args, "--out", str(work / f"cnn-{name}"), launcher=launcher)
        s = payload["summary"]
        timing = pq.read_table(work / f"cnn-{name}" / "timing.parquet").to_pylist()
        rates = sorted(t["samples_per_s"] for t in timing)
        figures[name] = {"wall_s": wall, "test_accuracy": s["test_accuracy"],
                         "val_accuracy": s["val_accuracy"],
                         "epochs": len(timing), "median_samples_per_s": rates[len(rates) // 2]}
        print(f"mnist_cnn {name:10s} test {s['test_accuracy']:.4f}  {rates[len(rates) // 2]:7.0f} samples/s  "
              f"{wall:6.1f} s", flush=True)
    figures["accuracy_gap_points"] = 100 * (figures["torchrun_2"]["test_accuracy"] -
                                            figures["1_process"]["test_accuracy"])
    figures["samples_per_s_ratio"] = (figures["torchrun_2"]["median_samples_per_s"] /
                                      figures["1_process"]["median_samples_per_s"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cnn-epochs", default="5", help="epochs of the mnist_cnn swept (its accuracy does "
                                                          "not matter here)")
    parser.add_argument("--epochs", default=None, help="torchrun comparison epochs (default: train-ann's)")
    parser.add_argument("--cnn-grid", nargs="*", default=["--weight-bits", "4,8", "--adc-bits", "5,8",
                                                          "--timesteps", "1,4"],
                        help="sweep options for mnist_cnn (default: 8 units of 2 T each; its default grid "
                             "takes over 15 minutes per run on one core)")
    parser.add_argument("--skip-train", action="store_true", help="sweeps only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    results: dict = {"platform": platform.platform(), "cores": os.cpu_count()}
    try:
        cimtool("train-ann", "--out", str(work / "default"))
        results["fixed"] = fixed_cost(str(work / "default"), work)
        subprocess.run([RAY, "start", "--head", f"--port={RAY_PORT}", f"--num-cpus={os.cpu_count()}",
                        "--include-dashboard=false", "--disable-usage-stats"],
                       check=True, capture_output=True)
        address = "auto"  # the cluster just started (it holds its authentication token)
        results["sweep_default_model"] = sweep_executors(str(work / "default"), work, "default", [], address)
        cimtool("train-ann", "--model", "mnist_cnn", "--epochs", args.cnn_epochs, "--out", str(work / "cnn"))
        results["sweep_mnist_cnn"] = sweep_executors(str(work / "cnn"), work, "mnist_cnn", args.cnn_grid,
                                                     address)
        subprocess.run([RAY, "stop"], capture_output=True)
        if not args.skip_train:
            results["torchrun_mnist_cnn"] = torchrun_pair(work, args.epochs)
    finally:
        subprocess.run([RAY, "stop"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "tests" / "bench" / "results" / "bench_cluster.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"→ {out}")


if __name__ == "__main__":
    main()
