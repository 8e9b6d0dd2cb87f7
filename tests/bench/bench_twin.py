"""Training the spiking network vs training its quantized-ANN twin, one run on CPU.

For VGG8 (CIFAR-shaped input) and mnist_cnn, random weights, T = 8, ST-BIF neurons (16 asymmetric
levels, θ = 0.1), one training step (forward, cross-entropy, backward) of:

- ``ann``: the float model, as ``train-ann`` trains it;
- ``twin``: its quantized-ANN twin (every ReLU the neuron's quantizer with a learnable threshold,
  ``cimtool.nn.qann``, what ``calibrate-threshold --train-epochs`` trains); target ≤ 1.2× ``ann``.
  A quantizer before a max-pool runs after it (exact: the quantizer is monotone);
- ``ann_pool_first``: for reference, the float model with each ReLU moved after its max-pool in
  the same way (not what ``train-ann`` does; it shows how much of the twin's cost that move saves);
- ``snn``: the spiking network through its T steps (BPTT with straight-through spikes,
  ``cimtool.nn.snn_train``, what ``profile`` times as the spiking network's forward+backward).

Medians of interleaved repeats; torch uses 2 threads, as on CI. Run on an otherwise idle machine.

    python tests/bench/bench_twin.py [--repeats 20]

Results: the terminal and tests/bench/results/bench_twin.json.
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
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cimtool.models.registry import build, make_spec  # noqa: E402
from cimtool.nn.qann import QuantizedTwin  # noqa: E402
from cimtool.nn.snn import SnnConfig, SpikingNetwork, neuron_count  # noqa: E402
from cimtool.nn.snn_train import spiking_logits  # noqa: E402
from cimtool.train.batching import to_float  # noqa: E402

CASES = [("vgg8", (3, 32, 32), 16), ("mnist_cnn", (1, 28, 28), 128)]  # model, input, batch B
T = 8


def bench_case(name: str, shape: tuple[int, int, int], batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build(make_spec(name, None, shape, 10, [])).train()
    cfg = SnnConfig(timesteps=T, stop="fixed")
    thetas = [0.1] * neuron_count(model)
    twin = QuantizedTwin(copy.deepcopy(model), thetas, cfg.n_min, cfg.p_max).train()
    pool_first = copy.deepcopy(model)
    layers = pool_first.features
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    net = SpikingNetwork(model, thetas, cfg, input_range=1.0)
    net.model.train()
    x = (torch.rand(batch, *shape) * 255).to(torch.uint8)  # raw images, as the stages feed them
    y = torch.randint(0, 10, (batch,))
    steps = {"ann": (model, lambda: model(to_float(x))), "twin": (twin, lambda: twin(to_float(x))),
             "ann_pool_first": (pool_first, lambda: pool_first(to_float(x))),
             "snn": (net.model, lambda: spiking_logits(net, x, T))}

    def step(key: str) -> float:
        owner, logits = steps[key]
        owner.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        F.cross_entropy(logits(), y).backward()
        return time.perf_counter() - t0

    for key in steps:
        step(key)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for key in steps:
            times[key].append(step(key))
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    out = {"model": name, "input": list(shape), "batch": batch, "timesteps": T,
           **{f"{k}_ms": v for k, v in ms.items()}, "twin_over_ann": ms["twin"] / ms["ann"],
           "twin_over_ann_pool_first": ms["twin"] / ms["ann_pool_first"],
           "snn_over_twin": ms["snn"] / ms["twin"], "snn_over_ann": ms["snn"] / ms["ann"]}
    print(f"{name:9s} B={batch:3d} T={T}: ann {ms['ann']:8.1f} ms  twin {ms['twin']:8.1f} ms "
          f"({out['twin_over_ann']:.2f}x ann, {out['twin_over_ann_pool_first']:.2f}x ann_pool_first)  "
          f"snn (BPTT) {ms['snn']:8.1f} ms "
          f"({out['snn_over_twin']:.2f}x twin)",
          flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = {"platform": platform.platform(), "threads": torch.get_num_threads(),
               "cases": [bench_case(*case, args.repeats) for case in CASES]}
    out = ROOT / "tests" / "bench" / "results" / "bench_twin.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"→ {out}")


if __name__ == "__main__":
    main()
