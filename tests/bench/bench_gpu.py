"""VGG8 train-step time on CUDA at batch 128: fp32 eager, bf16 eager, bf16 compiled (GPU only).

    python tests/bench/bench_gpu.py     # prints a table, writes tests/bench/results/bench_gpu.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from cimtool.models.registry import build, make_spec
from cimtool.train.loop import autocast


def time_steps(model, bf16: bool, steps: int = 20, warmup: int = 3) -> tuple[float, float]:
    """(first-call seconds, median step ms) of forward+backward+AdamW at batch 128."""
    device = torch.device("cuda")
    x = torch.rand(128, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctx = autocast(device) if bf16 else torch.autocast("cuda", enabled=False)

    def step():
        with ctx:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return first, statistics.median(times)


def main() -> None:
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device, nothing to measure")
        sys.exit(0)
    spec = make_spec("vgg8", None, (3, 32, 32), 10, [])
    rows = {}
    for name, bf16, compiled in [("fp32 eager", False, False), ("bf16 eager", True, False),
                                 ("bf16 compiled", True, True)]:
        torch.manual_seed(0)
        model = build(spec).cuda()
        runner = torch.compile(model) if compiled else model
        first, ms = time_steps(runner, bf16)
        rows[name] = {"first_call_s": first, "median_step_ms": ms, "samples_per_s": 128 / ms * 1e3}
        print(f"{name:14s} first call {first:7.2f} s   median step {ms:7.2f} ms   "
              f"{128 / ms * 1e3:9.0f} samples/s")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_gpu.json").write_text(json.dumps(
        {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "vgg8_batch128": rows},
        indent=2))


if __name__ == "__main__":
    main()
