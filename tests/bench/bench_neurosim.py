"""NeuroSim trace benchmarks, measured in one run on CPU.

1. A whole VGG8 layer record (CIFAR-shaped input, 8/8 bits, random weights, a batch of 16 for
   the activity average): cimtool's `write_record` plus hashing every file as an artifact commit
   does; target ≤ 1.5 s.
2. The 128→128 3×3 conv input file on 32×32 (sample 0): DNN_NeuroSim V1.3's reference hook
   functions (`stretch_input` + `write_matrix_activation_conv`) vs cimtool's; target ≥ 20×.
3. The 8192×1024 FC weight file: reference `write_matrix_weight` vs cimtool's.

The reference functions are imported from an installed `hwcomponents-neurosim` (skipped without it).

    python tests/bench/bench_neurosim.py

Results: a table on the terminal and tests/bench/results/bench_neurosim.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cimtool.artifacts import sha256_file  # noqa: E402
from cimtool.models.registry import build, make_spec  # noqa: E402
from cimtool.neurosim.record import write_record  # noqa: E402
from cimtool.neurosim.trace import bits_csv, quantize_weights, stretch, weight_csv  # noqa: E402
from cimtool.params import TraceParams  # noqa: E402
from tests.neurosim_reference import reference_hook  # noqa: E402


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rows = []
    model = build(make_spec("vgg8", None, (3, 32, 32), 10, [])).eval()
    spec = make_spec("vgg8", None, (3, 32, 32), 10, [])
    x = torch.rand(16, 3, 32, 32)
    with tempfile.TemporaryDirectory() as tmp:
        def record() -> None:
            write_record(model, spec, x, TraceParams(), Path(tmp))
            for path in Path(tmp).iterdir():
                sha256_file(path)

        record()  # warm-up
        wall = min(_timed(record) for _ in range(3))
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    rows.append({"what": "VGG8 layer record (8/8 bits, batch 16) + sha256", "cimtool_s": wall,
                 "bytes": size, "target": "≤ 1.5 s", "met": wall <= 1.5})

    hook = reference_hook()
    if hook is None:
        print("hwcomponents-neurosim is not installed: the reference comparisons are skipped")
    else:
        from utee.wage_quantizer import Q

        rng = np.random.default_rng(0)
        act = rng.uniform(0, 0.999, (1, 128, 32, 32)).astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            ref = _timed(lambda: hook.write_matrix_activation_conv(
                hook.stretch_input(act, 3, (1, 1), (1, 1)), None, 8, f"{tmp}/ref.csv"))
            ours = min(_timed(lambda: Path(f"{tmp}/ours.csv").write_bytes(
                bits_csv(stretch(act[0].astype(np.float64), 3, (1, 1), (1, 1)), 8))) for _ in range(3))
            same = Path(f"{tmp}/ref.csv").read_bytes() == Path(f"{tmp}/ours.csv").read_bytes()
        rows.append({"what": "128→128 3x3 conv input file, 32x32", "reference_s": ref, "cimtool_s": ours,
                     "speedup": ref / ours, "identical": same, "target": "≥ 20x", "met": ref / ours >= 20})
        w = torch.empty(1024, 8192).uniform_(-0.99, 0.99)
        with tempfile.TemporaryDirectory() as tmp:
            ref = _timed(lambda: hook.write_matrix_weight(Q(w, 8).numpy(), f"{tmp}/ref.csv"))
            ours = min(_timed(lambda: Path(f"{tmp}/ours.csv").write_bytes(
                weight_csv(quantize_weights(w.numpy().astype(np.float64), 8), 8))) for _ in range(3))
            same = Path(f"{tmp}/ref.csv").read_bytes() == Path(f"{tmp}/ours.csv").read_bytes()
        rows.append({"what": "8192x1024 FC weight file", "reference_s": ref, "cimtool_s": ours,
                     "speedup": ref / ours, "identical": same})
    for r in rows:
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    out = ROOT / "tests" / "bench" / "results" / "bench_neurosim.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
