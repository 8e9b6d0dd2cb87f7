from __future__ import annotations

import gzip
import json
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
