"""One NeuroSim estimate of a layer record: its command line, the checks before and after, a cache.

- :func:`network_rows`: ``NetWork.csv`` read and checked against the record's layer count, so a
  malformed record is refused before NeuroSim runs on it.
- :func:`argv`: the command line each release reads (V1.4+: subArray and parallelRead after WBITS
  ABITS; V2.1: the epoch first, and per layer weightOld and the input activity).
- :func:`check_physical`: figures no chip can have are refused, not passed off as results.
- :func:`estimate`: run a built NeuroSim with a chip's settings on a record, parse it, and keep the
  figures in a cache keyed by everything that decides them (binary, settings, argument list and
  the record's bytes): ``sweep --cost neurosim`` asks for the same chip again on every rerun.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cimtool.errors import CimtoolError
from cimtool.neurosim.build import NeuroSimSettings, Version, auto_subarray, setting_env
from cimtool.neurosim.record import NETWORK, V21_EPOCH
from cimtool.neurosim.results import Parsed, parse_stdout, run
from cimtool.ui import plural

HEADLINE = ("chip_area_um2", "latency_ns", "dynamic_energy_pj", "leakage_energy_pj", "tops_per_w", "tops",
            "fps", "tops_per_mm2")
CACHE_FORMAT = 2  # bump when what an estimate keeps changes


def network_rows(path: Path, n_layers: int) -> list[list[float]]:
    """NetWork.csv's rows (IFM H, W, Cin, kH, kW, Cout, pool, stride), one per layer of the record."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        cells = [c.strip() for c in line.split(",") if c.strip()]
        try:
            values = [float(c) for c in cells]
        except ValueError:
            values = []
        if len(values) != 8 or any(v < 0 or v != int(v) for v in values):
            raise CimtoolError(f"{path}:{n}: not a NetWork.csv row (8 non-negative integers: IFM H, W, Cin, "
                               f"kH, kW, Cout, pool, stride), got '{line.strip()}'")
        rows.append(values)
    if len(rows) != n_layers:
        raise CimtoolError(f"{path}: {len(rows)} rows for the trace's {plural(n_layers, 'layer')}")
    return rows


def argv(binary: str, weight_bits: int, input_bits: int, layers: list[dict], version: Version, subarray: int,
         path=lambda name: name, epoch: int = V21_EPOCH) -> list[str]:
    """NeuroSim's argument list for a record (``path`` turns a record file name into an argument;
    ``layers``: the record's rows, with ``layer`` and, for V2.1, ``activity_sample``; ``epoch``: the
    training epoch V2.1 names its breakdown file after)."""
    args = [binary] + ([str(epoch)] if version.key == "v21" else [])  # V2.1: the epoch first
    args += [path(NETWORK), str(weight_bits), str(input_bits)]
    if version.subarray_on_argv:  # V1.4+: subArray, then parallelRead (all rows: as its inference.py)
        args += [str(subarray), str(subarray)]
    for layer in layers:
        k = layer["layer"]
        if version.key == "v21":
            args += [path(f"weight{k}.csv"), path(f"weightOld{k}.csv"), path(f"input{k}.csv"),
                     repr(layer["activity_sample"])]
        else:
            args += [path(f"weight{k}.csv"), path(f"input{k}.csv")]
    return args


def check_physical(parsed: Parsed, stdout: str) -> None:
    """Refuse figures no chip can have (negative energy or area, zero latency, non-finite values):
    NeuroSim prints such numbers, with exit code 0, for records it misreads."""
    bad = []
    for metric in HEADLINE:
        value = parsed.chip_value(metric)
        if value is not None and (not math.isfinite(value) or value < 0
                                  or (value == 0 and metric in ("chip_area_um2", "latency_ns"))):
            bad.append(f"{metric} {value:g}")
    if bad:
        last = " | ".join(stdout.strip().splitlines()[-3:])
        raise CimtoolError(f"NeuroSim returned physically impossible figures ({', '.join(bad)}): the "
                           "trace and its NetWork.csv disagree, or the settings are inconsistent; its last "
                           f"lines: {last}")


def check_complete(parsed: Parsed, stdout: str) -> None:
    missing = [m for m in ("chip_area_um2", "latency_ns", "tops_per_w") if parsed.chip_value(m) is None]
    if missing:
        last = stdout.strip().splitlines()[-1] if stdout.strip() else "-"
        raise CimtoolError(f"NeuroSim's output has no {', '.join(missing)}: not a DNN_NeuroSim run? "
                           f"(its last line: {last})")


def fitting(network: list[list[float]], weight_bits: int, cell_bits: int) -> int | None:
    """The subarray ``--subarray auto`` would choose, or None (for error hints)."""
    try:
        return auto_subarray(network, weight_bits, cell_bits)
    except CimtoolError:
        return None


@dataclass(frozen=True)
class Estimate:
    figures: dict[str, float | None]  # HEADLINE metrics as NeuroSim printed them
    stdout: str
    cached: bool


def _cache_key(binary: Path, args: list[str], env: dict[str, str], files: list[Path]) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, str(binary), binary.stat().st_mtime_ns, args,
                                        sorted(env.items())]).encode())
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def estimate(binary: Path, version: Version, directory: Path, weight_bits: int, input_bits: int,
             layers: list[dict], settings: NeuroSimSettings, timeout: float, cache: Path | None) -> Estimate:
    """NeuroSim's chip figures for the record in ``directory`` on the chip ``settings`` describe (a
    binary from :func:`cimtool.neurosim.build.build`), from ``cache`` when it ran before."""
    network = network_rows(directory / NETWORK, len(layers))
    args = argv(str(binary), weight_bits, input_bits, layers, version, settings.numRowSubArray,
                lambda name: str((directory / name).resolve()))
    env = setting_env(settings, version.patched)
    files = [directory / a for a in argv("", weight_bits, input_bits, layers, version, 0)[1:]
             if a.endswith(".csv")]  # NetWork.csv and the layer files (not V2.1's activity numbers)
    key = _cache_key(binary, argv("main", weight_bits, input_bits, layers, version, settings.numRowSubArray),
                     env, files)
    stored = cache / f"{key}.json" if cache else None
    if stored and stored.is_file():
        kept = json.loads(stored.read_text())
        return Estimate(kept["figures"], kept["stdout"], True)
    with tempfile.TemporaryDirectory(prefix="cimtool-neurosim-") as work:
        (Path(work) / "NeuroSim_Results_Each_Epoch").mkdir()
        stdout = run(args, work, timeout, lambda _line: None, settings.numRowSubArray,
                     fitting(network, weight_bits, settings.cellBit), env)
    parsed = parse_stdout(stdout)
    check_complete(parsed, stdout)
    check_physical(parsed, stdout)
    figures = {m: parsed.chip_value(m) for m in HEADLINE}
    if stored:
        stored.parent.mkdir(parents=True, exist_ok=True)
        partial = stored.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"figures": figures, "stdout": stdout}))
        os.replace(partial, stored)  # atomic: a concurrent sweep sees all of it or none
    return Estimate(figures, stdout, False)
