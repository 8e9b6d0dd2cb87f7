"""NeuroSim releases side by side: chip figures and run time (after the build) of real records.

Records:
- ``default``: the README's main job (`cimtool train-ann`, defaults: a 64→10 crossbar head),
  `neurosim-trace` at 8/8 bits (V2.1: ``--format v21``);
- ``mnist_cnn``: ``--model`` (a trained mnist_cnn model artifact), traced the same way;
- ``vgg8``: DNN+NeuroSim's own VGG8 on a CIFAR-shaped input (3×32×32; CIFAR-10 is not needed for a
  PPA estimate: seeded He-initialised weights, uniform random inputs), written with the same
  record writer; its NetWork.csv equals the one NeuroSim ships.

Chips: ``card`` (rram_seed003 through cimtool's settings, subarray auto) and ``release`` (the
release's own Param.cpp; V1.4: SRAM, cellBit 1, 5-bit ADC). V2.1 estimates training on the CNNs
(forward, activation gradient, weight gradient, weight update per epoch); it cannot estimate the
FC-only default model at all (run-neurosim refuses it in one line, recorded here).

    python tests/bench/bench_neurosim_versions.py --model <mnist_cnn model> [--snapshots DIR]

Results: a table on the terminal and tests/bench/results/bench_neurosim_versions.json.
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cimtool.neurosim import build as nsb  # noqa: E402

FIGURES = ("chip_area_um2", "latency_ns", "dynamic_energy_pj", "tops_per_w", "forward_energy_pj",
           "activation_gradient_energy_pj", "weight_gradient_energy_pj", "weight_update_energy_pj")


def cimtool(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "cimtool", *map(str, args), "--json", "--quiet"],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"cimtool {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def vgg8_trace(directory: Path, fmt: str) -> Path:
    """A trace artifact of VGG8 on a CIFAR-shaped batch, through neurosim-trace's own code path."""
    import torch

    from cimtool import artifacts
    from cimtool.models.registry import build, make_spec
    from cimtool.neurosim.record import write_record
    from cimtool.params import TraceParams

    spec = make_spec("vgg8", None, (3, 32, 32), 10, [])
    torch.manual_seed(0)
    model = build(spec).eval()
    p = TraceParams(format=fmt)
    with artifacts.ArtifactWriter(directory / f"vgg8-{fmt}", "trace", {"format": fmt, "weight_bits": 8,
                                                                       "input_bits": 8}) as trace:
        write_record(model, spec, torch.rand(p.batch_size, 3, 32, 32), p, trace.partial)
        return trace.commit([], {"format": fmt})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained mnist_cnn model artifact")
    fallback = str(ROOT.parent / "shared" / "third_party" / "neurosim")
    parser.add_argument("--snapshots", default=os.environ.get("CIMTOOL_NEUROSIM_SNAPSHOTS", fallback))
    parser.add_argument("--skip", default="", help="comma-separated record names to leave out")
    args = parser.parse_args()
    snaps = Path(args.snapshots)
    releases = {"V1.3": None, "V1.4": snaps / "DNN_NeuroSim_V1.4" / "Inference_pytorch",
                "V2.1": snaps / "DNN_NeuroSim_V2.1" / "Training_pytorch"}
    work = Path(tempfile.mkdtemp(prefix="bench-ns-"))
    rows = []
    try:
        cache = work / "cache"
        for source in releases.values():  # build each once, outside the timings
            found, _ = nsb.locate(str(source) if source else None)
            nsb.build(found, cache, lambda _m: None, nsb.source_version(found).patched)
        root = work / "root"
        default = cimtool("train-ann", "--artifacts-root", root)["artifact"]
        traces = {}
        for fmt in ("v13", "v21"):
            traces["default", fmt] = cimtool("neurosim-trace", "--model", default, "--format", fmt,
                                             "--artifacts-root", root)["artifact"]
            traces["mnist_cnn", fmt] = cimtool("neurosim-trace", "--model", args.model, "--format", fmt,
                                               "--artifacts-root", root)["artifact"]
            traces["vgg8", fmt] = str(vgg8_trace(work, fmt))
        plan = []
        for record in ("default", "mnist_cnn", "vgg8"):
            if record in args.skip.split(","):
                continue
            plan += [(record, "V1.3", "card"), (record, "V1.4", "release"), (record, "V1.4", "card"),
                     (record, "V2.1", "card")]
        for record, release, chip in plan:
            fmt = "v21" if release == "V2.1" else "v13"
            extra = ["--neurosim", releases[release]] if releases[release] else []
            if release == "V2.1" and record == "default":
                rows.append({"record": record, "release": release, "chip": chip, "refused": "no conv layer"})
                continue
            t0 = time.perf_counter()
            out = cimtool("run-neurosim", "--trace", traces[record, fmt], "--chip", chip, "--cache-dir",
                          cache, "--artifacts-root", root, *extra)
            wall = time.perf_counter() - t0
            s = out["summary"]
            row = {"record": record, "release": release, "chip": chip, "run_s": wall,
                   "subarray": f"{s['subarray']}x{s.get('subarray_cols', s['subarray'])}",
                   **{k: s.get(k) for k in FIGURES}}
            rows.append(row)
            print(f"{record:10s} {release} {chip:8s} {row['subarray']:>7s} {wall:6.1f} s  area "
                  f"{s['chip_area_um2']:.3e} um2  latency {s['latency_ns']:.3e} ns  energy "
                  f"{s['dynamic_energy_pj']:.3e} pJ  {s['tops_per_w']:.3g} TOPS/W", flush=True)
        result = {"rows": rows, "model": args.model, "platform": platform.platform(),
                  "python": platform.python_version(), "cpus": os.cpu_count()}
        out_path = ROOT / "tests" / "bench" / "results" / "bench_neurosim_versions.json"
        out_path.parent.mkdir(exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
