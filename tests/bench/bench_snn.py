"""Spiking-network benchmarks against their targets, measured in one run on CPU.

For VGG8 (CIFAR-shaped input, the DNN+NeuroSim reference network) and mnist_cnn, random weights,
T = 8, ST-BIF neurons, rate-coded input, fixed-length runs (every layer computes all T steps):

1. the spiking simulation of B samples vs the same ANN on T·B rows (equal GEMM work);
   target ≤ 1.2× (SpikingJelly's multi-step IF measured 1.34–1.45× on these CPUs);
2. the one-pass quantized twin vs the spiking simulation; target ≥ 5× faster.

Timings are medians of interleaved repeats (ANN, SNN and one-pass alternate, so load changes hit
all three alike). torch uses 2 threads, as on CI. Run it on an otherwise idle machine: the
simulation is ~60 short parallel ops per run on mnist_cnn (the ANN ~10), and while other processes
hold the cores each parallel op waits for a descheduled OpenMP thread, so CPU contention inflates
SNN/ANN several-fold, not just both timings.

    python tests/bench/bench_snn.py [--repeats 15]

Results: a table on the terminal and tests/bench/results/bench_snn.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cimtool.models.registry import build, make_spec  # noqa: E402
from cimtool.nn.snn import SnnConfig, SpikingNetwork, neuron_count  # noqa: E402

CASES = [("vgg8", (3, 32, 32), 4), ("mnist_cnn", (1, 28, 28), 32)]  # model, input, batch B
T = 8


def bench_case(name: str, shape: tuple[int, int, int], batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build(make_spec(name, None, shape, 10, [])).eval()
    cfg = SnnConfig(encoding="rate", timesteps=T, stop="fixed")
    net = SpikingNetwork(model, [0.1] * neuron_count(model), cfg, input_range=1.0)
    x = torch.rand(batch, *shape)
    x_folded = torch.rand(T * batch, *shape)
    gen = torch.Generator().manual_seed(0)
    fns = {"ann_TxB": lambda: model(x_folded), "snn": lambda: net.run(x, T, gen),
           "one_pass": lambda: net.one_pass(x, T, gen)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()  # warm-up
        for _ in range(repeats):
            for key, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "batch": batch, "timesteps": T, **{f"{k}_ms": 1e3 * v for k, v in med.items()},
            "snn_over_ann": med["snn"] / med["ann_TxB"], "one_pass_speedup": med["snn"] / med["one_pass"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [bench_case(*case, args.repeats) for case in CASES]
    print(f"{'model':10} {'B':>3} {'ANN T·B ms':>11} {'SNN ms':>8} {'1-pass ms':>10} {'SNN/ANN':>8} "
          f"{'1-pass x':>9}")
    for r in rows:
        print(f"{r['model']:10} {r['batch']:>3} {r['ann_TxB_ms']:>11.1f} {r['snn_ms']:>8.1f} "
              f"{r['one_pass_ms']:>10.1f} {r['snn_over_ann']:>8.2f} {r['one_pass_speedup']:>9.1f}")
    vgg = rows[0]
    ratios = [f"{r['model']} SNN/ANN {r['snn_over_ann']:.2f} ≤ 1.2: {r['snn_over_ann'] <= 1.2}" for r in rows]
    print(f"targets: {'; '.join(ratios)}; "
          f"VGG8 one-pass {vgg['one_pass_speedup']:.1f}x ≥ 5: {vgg['one_pass_speedup'] >= 5}")
    out = ROOT / "tests" / "bench" / "results" / "bench_snn.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = platform.processor() or platform.machine()
    payload = {"machine": machine, "torch": torch.__version__, "rows": rows}
    out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
