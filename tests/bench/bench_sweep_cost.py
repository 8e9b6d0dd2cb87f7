"""`sweep --cost neurosim` vs `sweep --cost model` on the same model and grid (target:
≤ 3× the model-cost sweep, plus one NeuroSim build).

Each sweep is the `cimtool sweep` command as a user runs it (a subprocess: start-up included). The
NeuroSim build is timed on its own, into a fresh cache; then the NeuroSim sweep runs on that build
with no estimate cached (every point a real NeuroSim run), and once more with every point cached.
The model-cost sweep and the uncached NeuroSim sweep alternate ``--repeats`` times (medians).

    python tests/bench/bench_sweep_cost.py [--model M] [--neurosim DIR] [--repeats 3] [-- SWEEP OPTIONS]

Without ``--model``, the README's main job (`cimtool train-ann`, defaults) trains one first. Grid:
sweep's default (360 configurations) unless options follow ``--``. Run it on an otherwise idle
machine. Results: the terminal and tests/bench/results/bench_sweep_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cimtool.neurosim.build import build, locate, source_version  # noqa: E402


def cimtool(*args: str, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cimtool", *args, "--quiet"], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"cimtool {' '.join(args)} failed:\n{proc.stderr}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--neurosim")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("sweep", nargs="*", help="sweep options (after --)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        model = args.model
        if model is None:
            cimtool("train-ann", "--artifacts-root", str(work / "root"))
            model = str(next((work / "root" / "models").iterdir()))
        cache = work / "cache"
        found, origin = locate(args.neurosim)
        version = source_version(found)
        t0 = time.perf_counter()
        build(found, cache, lambda _m: None, version.patched)
        build_s = time.perf_counter() - t0
        common = ["sweep", "--model", model, *args.sweep]
        ns = [*common, "--cost", "neurosim", "--cache-dir", str(cache)]
        if args.neurosim:
            ns += ["--neurosim", args.neurosim]
        times: dict[str, list[float]] = {"model": [], "neurosim": []}
        for i in range(args.repeats):
            times["model"].append(cimtool(*common, "--out", str(work / f"model{i}")))
            shutil.rmtree(cache / "estimates", ignore_errors=True)  # every point a NeuroSim run
            times["neurosim"].append(cimtool(*ns, "--out", str(work / f"ns{i}")))
        cached_s = cimtool(*ns, "--out", str(work / "cached"))
        summary = json.loads((work / "ns0" / "manifest.json").read_text())["summary"]
        med = {k: statistics.median(v) for k, v in times.items()}
        result = {
            "model": model, "grid": args.sweep or "default", "neurosim": f"{version.name} ({origin})",
            "configurations": summary["n_configs"], "neurosim_runs": summary["neurosim_runs"],
            "build_s": build_s, "model_sweep_s": med["model"], "neurosim_sweep_s": med["neurosim"],
            "neurosim_sweep_cached_s": cached_s, "ratio": med["neurosim"] / med["model"],
            "ratio_with_build": (med["neurosim"] + build_s) / med["model"], "runs": times,
            "recommended": summary["recommended"], "threads": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
        }
        print(f"{summary['n_configs']} configurations, {summary['neurosim_runs']} NeuroSim runs "
              f"({result['neurosim']})")
        print(f"  build (once per source)        {build_s:8.2f} s")
        print(f"  sweep --cost model             {med['model']:8.2f} s")
        print(f"  sweep --cost neurosim          {med['neurosim']:8.2f} s   ratio {result['ratio']:.2f} "
              "(target ≤ 3)")
        print(f"  sweep --cost neurosim, cached  {cached_s:8.2f} s")
        out = ROOT / "tests" / "bench" / "results" / "bench_sweep_cost.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
