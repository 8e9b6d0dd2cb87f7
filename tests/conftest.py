from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cimtool import artifacts
from cimtool.cli import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run `cimtool ARGS` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def interrupt_at_validation(monkeypatch):
    """``arm(n)``: a training checkpoint after every epoch and Ctrl-C at the n-th validation (in
    epoch n, after epoch n − 1's checkpoint); returns the list that counts the validations.
    ``arm(None)`` lets training run uninterrupted again."""
    from cimtool.train import loop

    evaluate = loop.evaluate

    def arm(n: int | None) -> list[int]:
        calls: list[int] = []
        if n is None:
            monkeypatch.setattr(loop, "evaluate", evaluate)
            return calls

        def interrupted(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return evaluate(*args, **kwargs)

        monkeypatch.setattr(loop, "CHECKPOINT_EVERY_S", 0.0)
        monkeypatch.setattr(loop, "evaluate", interrupted)
        return calls

    return arm


def run_subprocess(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cimtool", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    """Write an IDX file of unsigned bytes (gzipped if the name ends in .gz)."""
    magic = magic if magic is not None else (0x0800 | array.ndim)
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(data)


@pytest.fixture(scope="session")
def mnist_idx_dir(tmp_path_factory) -> Path:
    """Real MNIST digits (the mnist5k images) written as the four official IDX files (gzipped)."""
    from cimtool.data import load_dataset

    raw = load_dataset("mnist5k")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(raw.y))
    train, test = order[:4000], order[4000:]
    folder = tmp_path_factory.mktemp("mnist_idx")
    write_idx(folder / "train-images-idx3-ubyte.gz", raw.x[train, 0])
    write_idx(folder / "train-labels-idx1-ubyte.gz", raw.y[train].astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", raw.x[test, 0])
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", raw.y[test].astype(np.uint8))
    return folder


@pytest.fixture(scope="session")
def default_model(tmp_path_factory):
    """The README's main command: default settings (mnist5k, proj_sup_64), as a subprocess."""
    root = tmp_path_factory.mktemp("root")
    t0 = time.perf_counter()
    proc = run_subprocess("train-ann", "--artifacts-root", root, "--json", "--quiet")
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    return artifacts.load(payload["artifact"], "model"), wall, root


# --- NeuroSim: the default model's trace and a real V1.3 run (shared by the NeuroSim tests) ---

@pytest.fixture(scope="session")
def default_trace(default_model, tmp_path_factory):
    from cimtool.stages import neurosim_trace as stage
    from cimtool.ui import Reporter

    art, _, root = default_model
    out = tmp_path_factory.mktemp("trace") / "trace"
    return stage.run(stage.TraceParams(model=str(art.path)), out, root, False, Reporter(quiet=True))


@pytest.fixture(scope="session")
def neurosim_cache(tmp_path_factory):
    if _ns_build().bundled_source() is None and not _ns_build().os.environ.get(_ns_build().ENV):
        pytest.skip("no NeuroSim source: "
                    "pip install --no-deps --ignore-requires-python hwcomponents-neurosim")
    if shutil.which("make") is None or shutil.which("g++") is None:
        pytest.skip("building NeuroSim needs make and g++")
    return tmp_path_factory.mktemp("neurosim-cache")


@pytest.fixture(scope="session")
def neurosim_run(default_trace, neurosim_cache, tmp_path_factory):
    from cimtool.cli import main

    out = tmp_path_factory.mktemp("ns") / "run"
    try:  # the default model (64→10, 8-bit weights on 4-bit cells = 20 columns) fits 16x16 subarrays
        main(["run-neurosim", "--trace", str(default_trace.path), "--subarray", "16", "--cache-dir",
              str(neurosim_cache), "--out", str(out), "--quiet"])
    except SystemExit as exc:
        assert exc.code == 0
    return artifacts.load(out, "neurosim")


def _ns_build():
    from cimtool.neurosim import build

    return build
