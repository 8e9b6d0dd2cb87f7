"""Crossbar benchmarks, measured in one run on CPU.

1. map a 1024×1024 layer onto rram_seed003 4-bit levels (target ≤ 1 s), against the mapping's
   formula evaluated literally (brute-force argmin over all levels) as the reference;
2. export that layer's 1M-line device CSV (target ≤ 3 s);
3. 10 Monte Carlo trials of the mnist5k test split through the default model's 64→10 array with
   every non-ideality on (target ≤ 2 s).

    python tests/bench/bench_crossbar.py [--repeats 5]

Results: a table on the terminal and tests/bench/results/bench_crossbar.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cimtool.devices.card import load_card  # noqa: E402
from cimtool.devices.mapping import Placement, card_grid, map_matrix  # noqa: E402
from cimtool.stages.export_weightmap import weightmap_table, write_csv  # noqa: E402
from cimtool.stages.map_weights import MappedModel, cell_table  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_mapping(repeats: int) -> dict:
    card = load_card("rram_seed003")
    grid = card_grid(card, 4)
    w = np.random.default_rng(0).normal(size=(1024, 1024))

    def reference():  # k = argmin_k |n − G_k/g_max| over all levels (docs/physics.md#differential-mapping)
        scale = np.abs(w).max()
        norm = grid / grid[-1]
        pos = np.abs(np.maximum(w, 0)[..., None] / scale - norm).argmin(-1)
        neg = np.abs(np.maximum(-w, 0)[..., None] / scale - norm).argmin(-1)
        return pos, neg

    lm = map_matrix("fc", w, grid)
    ref_pos, ref_neg = reference()
    assert np.array_equal(lm.level_pos, ref_pos) and np.array_equal(lm.level_neg, ref_neg)
    mapped = MappedModel(card, {"fc": lm}, {"fc": Placement(1024, 1024, 128, 128, "interleaved")},
                         {"fc": "linear"})
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "weightmap.csv"
        results = {
            "map_1024x1024_s": _median_time(lambda: map_matrix("fc", w, grid), repeats),
            "reference_argmin_s": _median_time(reference, max(1, repeats // 2)),
            "cmap_table_s": _median_time(lambda: cell_table(mapped), repeats),
            "export_csv_1M_lines_s": _median_time(
                lambda: write_csv(weightmap_table(mapped, "fc", False), csv_path), repeats),
            "csv_bytes": csv_path.stat().st_size,
        }
    results["speedup_vs_reference"] = results["reference_argmin_s"] / results["map_1024x1024_s"]
    return results


def bench_monte_carlo(repeats: int) -> dict:
    from cimtool.cli import main
    from cimtool.models.io import model_splits, open_model
    from cimtool.nn.array import EFFECTS, ArrayConfig
    from cimtool.nn.network import ArrayNetwork, map_model

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        try:
            main(["train-ann", "--out", str(out), "--quiet"])
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        artifact, model, spec = open_model(out)
        data = model_splits(artifact)
    card = load_card("rram_seed003")
    maps = map_model(model, spec, card_grid(card, 4))
    placements = {n: Placement(*m.shape, 128, 128, "interleaved") for n, m in maps.items()}
    net = ArrayNetwork(model, maps, placements, card,
                       ArrayConfig(effects=EFFECTS, adc_bits=card.adc_bits, scheme=card.adc_scheme,
                                   input_bits=card.input_bits))
    net.calibrate(data["train"])
    accs: list[float] = []
    wall = _median_time(lambda: accs.extend(net.trials(data["test"], 10, seed=0)), repeats)
    return {"mc_10_trials_s": wall, "test_samples": len(data["test"]),
            "accuracy_mean": float(np.mean(accs[:10])), "accuracy_std": float(np.std(accs[:10]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {**bench_mapping(args.repeats), **bench_monte_carlo(args.repeats)}
    targets = {"map_1024x1024_s": 1.0, "export_csv_1M_lines_s": 3.0, "mc_10_trials_s": 2.0}

    from rich.console import Console
    from rich.table import Table

    table = Table(title="crossbar benchmarks (CPU, medians)")
    for column in ("measure", "value", "target"):
        table.add_column(column)
    for key, value in results.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        target = f"≤ {targets[key]} s" + (" ✓" if value <= targets[key] else " ✗") if key in targets else ""
        table.add_row(key, shown, target)
    Console().print(table)
    results["env"] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "platform": platform.platform(), "python": platform.python_version()}
    out = ROOT / "tests" / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_crossbar.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
