"""nox sessions: tests (the default CPU suite), lint (ruff), bench (tests/bench), demo (main job).

Every session installs with constraints.txt, which pins the CPU build of torch for CI.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ("-c", "constraints.txt")


def _install(session: nox.Session, extras: str = "") -> None:
    session.install(*CONSTRAINTS, "torch")  # first, so nothing else pulls a CUDA build
    session.install(*CONSTRAINTS, "-e", f".{extras}")


def _install_neurosim(session: nox.Session) -> None:
    """DNN_NeuroSim V1.3's C++ source, from the PyPI package that bundles it (its Python part needs
    3.12 and is not used: cimtool builds the bundled source with make)."""
    session.install("--no-deps", "--ignore-requires-python", "hwcomponents-neurosim==1.0.43")


@nox.session
def tests(session: nox.Session) -> None:
    """The default CPU test suite (NeuroSim, Ray and torchrun are run for real)."""
    _install(session, "[test,ray]")
    _install_neurosim(session)
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests and noxfile."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "cimtool", "tests", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks in tests/bench/ (not part of the default run); results in tests/bench/results/."""
    _install(session, "[test,ray]")
    _install_neurosim(session)
    session.run("python", "tests/bench/bench_train.py", *session.posargs)
    session.run("python", "tests/bench/bench_crossbar.py")
    session.run("python", "tests/bench/bench_qat.py")
    session.run("python", "tests/bench/bench_snn.py")
    session.run("python", "tests/bench/bench_twin.py")
    session.run("python", "tests/bench/bench_neurosim.py")
    session.run("python", "tests/bench/bench_sweep_cost.py")
    session.run("python", "tests/bench/bench_lbpnet.py")
    session.run("python", "tests/bench/bench_cluster.py")
    session.run("python", "tests/bench/bench_gpu.py")  # says so and exits without CUDA


@nox.session
def demo(session: nox.Session) -> None:
    """The main job on the embedded default data set (mnist5k): train, map onto the seed-003 RRAM
    and simulate the array, export the device team's CSV, convert to a spiking network, sweep the
    design space, and run NeuroSim on the model's layer record."""
    _install(session)
    _install_neurosim(session)
    session.run("cimtool", "train-ann", "--out", "artifacts/models/demo", "--force")
    session.run("cimtool", "inspect", "artifacts/models/demo")
    session.run("cimtool", "map-weights", "--model", "artifacts/models/demo", "--weight-bits", "4",
                "--evaluate", "--out", "artifacts/cmaps/demo", "--force")
    session.run("cimtool", "export-weightmap", "--method", "proj_sup_64", "--weight-bits", "4")
    session.run("cimtool", "calibrate-threshold", "--model", "artifacts/models/demo",
                "--out", "artifacts/snns/demo", "--force")
    session.run("cimtool", "sweep", "--model", "artifacts/snns/demo", "--out", "artifacts/sweeps/demo",
                "--force")
    session.run("cimtool", "neurosim-trace", "--model", "artifacts/models/demo", "--out",
                "artifacts/traces/demo", "--force")
    session.run("cimtool", "run-neurosim", "--trace", "artifacts/traces/demo", "--subarray", "16",
                "--out", "artifacts/neurosim/demo", "--force")
