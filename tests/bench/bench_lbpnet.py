"""LBPNet training step on 2 CPU cores: eager vs compiled kernels, against mnist_cnn on the same batch.

One process, one 28×28 batch of ``--batch`` samples (256, the recipe's), the `paper_mnist_rp_cpu`
preset in training mode (offsets fixed, as that recipe trains). Each figure is the median of
``--repeats`` steps (forward, cross-entropy, backward, AdamW) after ``--warmup`` untimed ones; the
compiled figures come after their compilation, which is timed on its own. Run on an otherwise
idle machine.

    python tests/bench/bench_lbpnet.py [--batch 256] [--repeats 10] [--warmup 3]

Results: the terminal and tests/bench/results/bench_lbpnet.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cimtool.models.lbpnet import PRESETS, LBPNet  # noqa: E402
from cimtool.models.registry import MODELS, make_spec  # noqa: E402


def steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return times


def forwards(model: torch.nn.Module, x: torch.Tensor, n: int) -> list[float]:
    times = []
    with torch.no_grad():
        for _ in range(n):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return times


def lbpnet(compiled: bool) -> LBPNet:
    torch.manual_seed(0)
    model = LBPNet((1, 28, 28), 10, PRESETS["paper_mnist_rp_cpu"])
    for lbp in model.lbp_layers():
        lbp.frozen = True
    if compiled:
        model.compile_kernels()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=g) * 4 - 2
    y = torch.randint(0, 10, (args.batch,), generator=g)
    median = statistics.median
    results: dict[str, float] = {}

    cnn = MODELS["mnist_cnn"].build(make_spec("mnist_cnn", None, (1, 28, 28), 10, [])).train()
    steps(cnn, x, y, args.warmup)
    results["mnist_cnn_step_s"] = median(steps(cnn, x, y, args.repeats))

    for name, compiled in (("eager", False), ("compiled", True)):
        model = lbpnet(compiled).train()
        t0 = time.perf_counter()
        steps(model, x, y, 1)  # compiles the training kernels
        if compiled:
            model.eval()
            forwards(model, x, 1)  # and the evaluation ones
            model.train()
            results["compile_s"] = time.perf_counter() - t0
        steps(model, x, y, args.warmup)
        results[f"{name}_step_s"] = median(steps(model, x, y, args.repeats))
        model.eval()
        forwards(model, x, args.warmup)
        results[f"{name}_forward_s"] = median(forwards(model, x, args.repeats))

    results["compiled_speedup"] = results["eager_step_s"] / results["compiled_step_s"]
    results["compiled_step_over_mnist_cnn"] = results["compiled_step_s"] / results["mnist_cnn_step_s"]
    report = {"batch": args.batch, "repeats": args.repeats, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "results": results}
    for key, value in results.items():
        print(f"{key:32s} {value:.4f}")
    out = ROOT / "tests" / "bench" / "results" / "bench_lbpnet.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"→ {out}")


if __name__ == "__main__":
    main()
