"""Hardware-aware training steps vs a float step, measured in one run on CPU.

The MNIST CNN (mnist_cnn: conv16 pool conv32 pool fc128 fc10) on mnist5k images at batch 256:
a float AdamW step, a `qat` step (device-level forward + STE), a `noise` step (+ conductance noise
in the forward) and an `onchip` step (momentum → QG pulses on the ag_asi LTP/LTD curves → write
noise). Targets: qat/noise ≤ 1.5× float, onchip ≤ 3× float. Rounds alternate the four variants;
figures are medians.

    python tests/bench/bench_qat.py [--steps 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cimtool.data import load_dataset  # noqa: E402
from cimtool.devices.card import load_card  # noqa: E402
from cimtool.devices.mapping import card_grid  # noqa: E402
from cimtool.models.registry import build, make_spec  # noqa: E402
from cimtool.nn.quant import DeviceWeight, NoiseSpec, attach  # noqa: E402
from cimtool.train.onchip import OnchipConfig, OnchipTrainer  # noqa: E402


def _sgd_stepper(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    torch.manual_seed(0)
    raw = load_dataset("mnist5k")
    x = torch.from_numpy(raw.x[: args.batch_size]).float() / 255
    y = torch.from_numpy(raw.y[: args.batch_size])
    spec = make_spec("mnist_cnn", None, tuple(raw.x.shape[1:]), 10, [])
    base = build(spec)
    layers = [layer["name"] for layer in spec["crossbar_layers"]]
    rram, ag = load_card("rram_seed003"), load_card("ag_asi")
    grid = card_grid(rram, 4)

    variants = {}
    variants["float"] = _sgd_stepper(copy.deepcopy(base))
    qat = copy.deepcopy(base)
    attach(qat, layers, lambda: DeviceWeight(grid))
    variants["qat"] = _sgd_stepper(qat)
    noise = copy.deepcopy(base)
    attach(noise, layers, lambda: DeviceWeight(grid, noise=NoiseSpec.from_card(rram)))
    variants["noise"] = _sgd_stepper(noise)
    onchip = copy.deepcopy(base)
    alphas = {n: float(onchip.get_submodule(n).weight.detach().abs().max()) for n in layers}
    config = OnchipConfig(nl_ltp=ag.nl_ltp, nl_ltd=ag.nl_ltd, pulses_ltp=ag.pulses_ltp,
                          pulses_ltd=ag.pulses_ltd, c2c=ag.c2c_sigma)
    trainer = OnchipTrainer(onchip, layers, alphas, config)
    variants["onchip"] = trainer.step

    times: dict[str, list[float]] = {k: [] for k in variants}
    for step in variants.values():  # warm-up
        for _ in range(3):
            step(x, y)
    for _ in range(args.rounds):
        for name, step in variants.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(x, y)
            times[name].append((time.perf_counter() - t0) / args.steps)
    medians = {k: statistics.median(v) for k, v in times.items()}
    targets = {"qat": 1.5, "noise": 1.5, "onchip": 3.0}
    results = {"batch_size": args.batch_size, "threads": torch.get_num_threads(),
               "step_ms": {k: v * 1e3 for k, v in medians.items()},
               "ratio_to_float": {k: medians[k] / medians["float"] for k in medians},
               "targets": targets, "torch": torch.__version__, "platform": platform.platform()}

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mnist_cnn training step, batch {args.batch_size}, CPU (median of {args.rounds})")
    for column in ("variant", "ms/step", "× float", "target"):
        table.add_column(column)
    for name, value in medians.items():
        ratio = value / medians["float"]
        target = f"≤ {targets[name]}×" + (" ✓" if ratio <= targets[name] else " ✗") if name in targets else ""
        table.add_row(name, f"{value * 1e3:.1f}", f"{ratio:.2f}", target)
    Console().print(table)
    out = ROOT / "tests" / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_qat.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
