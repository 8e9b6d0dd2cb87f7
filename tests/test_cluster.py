"""Beyond one process: `sweep --executor ray` on a real local Ray cluster, the sweep's unit cache
(a killed sweep reruns only what is missing), and train-ann/qat under a real torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cimtool import artifacts
from tests.conftest import run_subprocess

GRID = ("--weight-bits", "2,4,6", "--adc-bits", "3,5", "--timesteps", "1,4")  # 12 units, 24 configurations
N_UNITS = 3 * 2 * 2


def _sweep(model, out, *extra) -> subprocess.CompletedProcess:
    return run_subprocess("sweep", "--model", model, *GRID, "--out", out, "--json", "--quiet", *extra)


def _summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["summary"]


def _one_line(proc, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def local_sweep(default_model, tmp_path_factory):
    art = default_model[0]
    out = tmp_path_factory.mktemp("sweeps") / "local"
    summary = _summary(_sweep(art.path, out))
    assert summary["units"] == N_UNITS and summary["units_computed"] == N_UNITS
    return art, out


def test_ray_sweep_is_byte_identical_to_local(local_sweep, tmp_path):
    pytest.importorskip("ray")
    art, local = local_sweep
    summary = _summary(_sweep(art.path, tmp_path / "ray", "--executor", "ray", "--workers", "2"))
    assert summary["executor"].startswith("ray (a local cluster: 2 workers")
    assert (tmp_path / "ray" / "sweep.parquet").read_bytes() == (local / "sweep.parquet").read_bytes()
    assert (tmp_path / "ray" / "selection.parquet").read_bytes() == (local / "selection.parquet").read_bytes()


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process, from /proc (no procps needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after the command name, which may hold spaces
        found.append((int(entry.name), ppid, cmdline))
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants."""
    table = _processes()
    tree, queue = [pid], [pid]
    while queue:
        parent = queue.pop()
        children = [p for p, pp, _ in table if pp == parent]
        queue += children
        tree += children
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill_when(proc: subprocess.Popen, units: Path, n: int, timeout: float = 120) -> int:
    """SIGKILL the run's process group once ``n`` units are cached; returns how many there were."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        done = len(list(units.glob("*.json"))) if units.is_dir() else 0
        if done >= n:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return len(list(units.glob("*.json")))
        time.sleep(0.05)
    raise AssertionError(f"the sweep ended or stalled before {n} units ({proc.poll()})")


def test_a_killed_sweep_reruns_only_the_missing_units(local_sweep, tmp_path):
    """Killed at about half way, the same command (default --out: found again by its parameters)
    computes the rest and ends byte-identical to an uninterrupted sweep."""
    art, local = local_sweep
    root = tmp_path / "root"
    command = [sys.executable, "-m", "cimtool", "sweep", "--model", str(art.path), *GRID,
               "--artifacts-root", str(root), "--json", "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    partials = root / artifacts.KIND_DIRS["sweep"]
    while proc.poll() is None and not list(partials.glob("*.partial")):
        time.sleep(0.05)
    [partial] = partials.glob("*.partial")
    cached = _kill_when(proc, partial / "scratch" / "units", N_UNITS // 2)
    assert 0 < cached < N_UNITS

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    summary = _summary(rerun)
    assert (summary["units_cached"], summary["units_computed"]) == (cached, N_UNITS - cached)
    out = Path(json.loads(rerun.stdout)["artifact"])
    assert out == partial.with_name(partial.name.removesuffix(".partial"))
    assert (out / "sweep.parquet").read_bytes() == (local / "sweep.parquet").read_bytes()
    assert not list(partials.glob("*.partial"))

    again = _summary(_sweep(art.path, out, "--force"))  # a finished sweep keeps no cache: all computed
    assert again["units_computed"] == N_UNITS


def test_a_dead_ray_worker_is_replaced_and_the_sweep_completes(local_sweep, tmp_path):
    pytest.importorskip("ray")
    art, local = local_sweep
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "cimtool", "sweep", "--model", str(art.path), *GRID, "--out", str(out),
               "--executor", "ray", "--workers", "2", "--json", "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    units = out.with_name("ray.partial") / "scratch" / "units"
    deadline = time.monotonic() + 180
    killed = None
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        if units.is_dir() and any(units.glob("*.json")):  # the workers are up and busy
            found = [pid for pid, _, cmdline in _processes() if cmdline.startswith("ray::_Worker")]
            if found:
                killed = found[0]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=300)
    assert killed is not None, "no Ray worker process was seen"
    assert proc.returncode == 0, stderr
    assert (out / "sweep.parquet").read_bytes() == (local / "sweep.parquet").read_bytes()


@pytest.mark.parametrize("args, words", [
    (("--executor", "nonsense"), ("--executor nonsense", "local, ray")),
    (("--executor", "ray", "--address", "127.0.0.1:9"), ("--address 127.0.0.1:9", "no Ray cluster answers")),
    (("--executor", "ray", "--workers", "0"), ("--workers",)),
])
def test_what_cannot_run_is_one_line_and_writes_nothing(local_sweep, tmp_path, args, words):
    if "ray" in args:
        pytest.importorskip("ray")
    art, _ = local_sweep
    out = tmp_path / "out"
    t0 = time.perf_counter()
    _one_line(_sweep(art.path, out, *args), *words)
    assert time.perf_counter() - t0 < 60
    assert not list(tmp_path.iterdir())


def test_executor_ray_without_ray_says_how_to_install(local_sweep, tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError, as where it is absent
    art, _ = local_sweep
    result = cli("sweep", "--model", art.path, *GRID, "--out", tmp_path / "out", "--executor", "ray")
    assert result.code == 2 and "pip install 'cimtool[ray]'" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


# --- torchrun ------------------------------------------------------------------------------------

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
EPOCHS = "3"


def _torchrun(*args, procs: int = 2) -> list[str]:
    return [TORCHRUN, "--standalone", "--nproc_per_node", str(procs), "-m", "cimtool", *map(str, args)]


def _train(out, *extra) -> list[str]:
    return ["train-ann", "--model", "mnist_cnn", "--epochs", EPOCHS, "--out", out, "--json", "--quiet",
            *extra]


@pytest.fixture(scope="module")
def ddp_pair(tmp_path_factory):
    """mnist_cnn on mnist5k, 3 epochs: one process, and two under torchrun (gloo)."""
    if not Path(TORCHRUN).exists():
        pytest.skip("torchrun is not installed")
    folder = tmp_path_factory.mktemp("ddp")
    single = _summary(run_subprocess(*_train(folder / "single")))
    proc = subprocess.run(_torchrun(*_train(folder / "ddp")), capture_output=True, text=True, timeout=600)
    return folder, single, _summary(proc)


def test_torchrun_trains_as_one_process_does(ddp_pair):
    folder, single, ddp = ddp_pair
    assert ddp["processes"] == 2 and single["processes"] == 1
    assert abs(ddp["test_accuracy"] - single["test_accuracy"]) <= 0.005
    assert ddp["test_accuracy"] >= 0.85
    assert sorted(p.name for p in folder.iterdir()) == ["ddp", "single"]  # rank 1 wrote nothing


def test_torchrun_resume_after_a_kill_ends_identical(ddp_pair, tmp_path):
    folder, _, _ = ddp_pair
    out = tmp_path / "ddp"
    proc = subprocess.Popen(_torchrun(*_train(out)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    checkpoint = out.with_name("ddp.partial") / "scratch" / "model.ckpt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_tree(proc.pid)  # torchrun starts its workers in sessions of their own
    proc.wait()
    assert checkpoint.exists() and not out.exists()
    command = [a for a in _train(out, "--resume") if a != "--quiet"]
    resumed = subprocess.run(_torchrun(*command), capture_output=True, text=True, timeout=600)
    _summary(resumed)
    assert "model: resuming after epoch" in resumed.stderr
    mine, theirs = load_file(out / "weights.safetensors"), load_file(folder / "ddp" / "weights.safetensors")
    assert mine.keys() == theirs.keys() and all((mine[k] == theirs[k]).all() for k in mine)
    assert (out / "metrics.parquet").read_bytes() == (folder / "ddp" / "metrics.parquet").read_bytes()


def test_qat_under_torchrun_and_what_it_refuses(ddp_pair, tmp_path):
    folder, _, _ = ddp_pair
    model = folder / "single"
    base = ["qat", "--model", model, "--epochs", "1", "--trials", "1", "--json", "--quiet"]
    one = _summary(run_subprocess(*base, "--out", tmp_path / "one"))
    two = subprocess.run(_torchrun(*base, "--out", tmp_path / "two"), capture_output=True, text=True,
                         timeout=600)
    assert abs(_summary(two)["test_accuracy"] - one["test_accuracy"]) <= 0.005
    refused = subprocess.run(_torchrun(*base, "--mode", "onchip", "--out", tmp_path / "onchip"),
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0
    assert "cimtool: error: --mode onchip does not run under torchrun" in refused.stderr
    assert not (tmp_path / "onchip").exists() and not (tmp_path / "onchip.partial").exists()


def test_a_last_batch_smaller_than_the_processes_is_refused(tmp_path):
    import torch

    from cimtool.errors import CimtoolError
    from cimtool.train.batching import TensorData
    from cimtool.train.distributed import Ranks
    from cimtool.train.loop import TrainConfig, fit
    from cimtool.ui import Reporter

    data = TensorData(torch.zeros(129, 4), torch.zeros(129, dtype=torch.long))
    with pytest.raises(CimtoolError, match="the last batch has 1 sample"):
        fit(torch.nn.Linear(4, 2), data, data, TrainConfig(epochs=1, batch_size=128), torch.device("cpu"),
            tmp_path / "ckpt", "model", Reporter(quiet=True), ranks=Ranks(0, 2))
    assert not (tmp_path / "ckpt").exists()
