"""Reliability: bad --out paths, runs that share an --out, killed runs, and small domain fixes
(ST-BIF on level boundaries, a device card with a BOM, a moved data folder).

The contract for bad input: one line saying what and where, exit code 2, no traceback, no
half-written artifact, nothing of an existing artifact lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from cimtool import artifacts
from cimtool.errors import CimtoolError

REPO = Path(__file__).resolve().parents[1]


def _one_line_error(result, *needles: str) -> None:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cimtool: error:"), result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file (and symlink) under ``folder``: what must not change."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = b"-> " + os.readlink(path).encode()
        elif path.is_file():
            found[rel] = path.read_bytes()
        else:
            found[rel] = b"<dir>"
    return found


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A one-epoch crossbar model on the embedded digits (a second or two, in-process)."""
    from cimtool.cli import main

    out = tmp_path_factory.mktemp("tiny") / "m"
    with pytest.raises(SystemExit) as exc:
        main(["train-ann", "--dataset", "digits", "--method", "avgpool_8x8", "--epochs", "1",
              "--frontend-epochs", "1", "--out", str(out), "--quiet", "--json"])
    assert exc.value.code == 0
    return out


# --- A.1 resolve_out -----------------------------------------------------------------------------

def _bad_outs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "a_file").write_text("not a directory")
    return {
        "loop": (tmp_path / "loop_a", "symlink loop"),
        "dangling": (tmp_path / "dangling", "dangling symlink"),
        "parent is a file": (tmp_path / "a_file" / "out", "is not a directory"),
        "ancestor is a file": (tmp_path / "a_file" / "deeper" / "out", "is not a directory"),
        "through a loop": (tmp_path / "loop_a" / "out", "symlink loop"),
    }


@pytest.mark.parametrize("case", ["loop", "dangling", "parent is a file", "ancestor is a file",
                                  "through a loop"])
def test_resolve_out_refuses_unusable_paths(tmp_path, case):
    out, message = _bad_outs(tmp_path)[case]
    with pytest.raises(CimtoolError, match=message) as exc:
        artifacts.resolve_out(out)
    assert str(out) in str(exc.value) and "\n" not in str(exc.value)


def test_resolve_out_refuses_an_unwritable_parent(tmp_path, monkeypatch):
    # root may write anywhere, so the permission check itself is replaced
    monkeypatch.setattr(artifacts.os, "access", lambda path, mode: Path(path) != tmp_path / "ro")
    (tmp_path / "ro").mkdir()
    with pytest.raises(CimtoolError, match="is not writable") as exc:
        artifacts.resolve_out(tmp_path / "ro" / "deeper" / "out")
    assert str(tmp_path / "ro") in str(exc.value)


def test_resolve_out_follows_a_symlink_to_an_artifact(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert artifacts.resolve_out(tmp_path / "link") == (tmp_path / "real").resolve()
    assert artifacts.resolve_out(tmp_path / "new" / "out") == (tmp_path / "new" / "out").resolve()
    with pytest.raises(CimtoolError, match="not a usable"):
        artifacts.resolve_out(tmp_path / "x.partial")


def test_force_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path):
    with artifacts.ArtifactWriter(tmp_path / "real", "sweep", {"v": 1}) as w:
        w.commit([], {})
    (tmp_path / "link").symlink_to("real")
    with artifacts.ArtifactWriter(tmp_path / "link", "sweep", {"v": 2}, force=True) as w:
        w.commit([], {})
    manifest = json.loads((tmp_path / "link" / artifacts.MANIFEST).read_text())
    assert (tmp_path / "link").is_symlink() and manifest["params"] == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


@pytest.mark.parametrize("case", ["loop", "dangling", "parent is a file"])
def test_cli_refuses_a_bad_out_before_any_work(cli, tiny_model, tmp_path, case):
    out, message = _bad_outs(tmp_path)[case]
    before = _tree(tmp_path)
    result = cli("map-weights", "--model", tiny_model, "--out", out, "--quiet")
    _one_line_error(result, str(out), message)
    assert _tree(tmp_path) == before


# --- A.2 check_not_input -------------------------------------------------------------------------

def test_check_not_input(tmp_path):
    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    (tmp_path / "alias").symlink_to(model)
    for out, problem in [(model, "is the input artifact"), (tmp_path / "alias", "is the input artifact"),
                         (tmp_path / "models" / ".." / "models" / "m", "is the input artifact"),
                         (model / "sub", "lies inside the input artifact"),
                         (tmp_path / "models", "contains the input artifact")]:
        with pytest.raises(CimtoolError, match=problem):
            artifacts.check_not_input(out, [model])
    artifacts.check_not_input(tmp_path / "models" / "m2", [model])  # a sibling is fine


@pytest.mark.parametrize("spelling", ["same", "symlink", "inside"])
def test_map_weights_never_replaces_its_input_model(cli, tiny_model, tmp_path, spelling):
    """`map-weights --model M --out M --force` used to replace the model by its own cmap."""
    out = {"same": tiny_model, "symlink": tmp_path / "alias", "inside": tiny_model / "cmap"}[spelling]
    if spelling == "symlink":
        out.symlink_to(tiny_model)
    before = _tree(tiny_model.parent)
    result = cli("map-weights", "--model", tiny_model, "--out", out, "--force", "--quiet")
    _one_line_error(result, str(out), str(tiny_model))
    assert _tree(tiny_model.parent) == before  # no partial, no lock, the model untouched
    artifacts.load(tiny_model, "model")


# --- A.3 one run per --out, killed runs ------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cimtool import artifacts
    out, keep = Path(sys.argv[1]), sys.argv[2] == "keep"
    with artifacts.ArtifactWriter(out, "sweep", {"holder": 1}, keep_on_interrupt=keep) as w:
        w.path("half.txt").write_text("half")
        if keep:
            (w.scratch / "model.ckpt").write_text("epoch 1")
        print("ready", flush=True)
        time.sleep(120)
""")


def _holder(out: Path, keep: bool = False) -> subprocess.Popen:
    """Another process in the middle of writing ``out``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), "keep" if keep else "no"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read()
    return proc


def _stop(proc: subprocess.Popen, sig: int) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=30)


def test_a_second_run_on_the_same_out_names_the_first_and_destroys_nothing(cli, tiny_model, tmp_path):
    out = tmp_path / "cmap"
    proc = _holder(out)
    try:
        before = _tree(tmp_path)
        result = cli("map-weights", "--model", tiny_model, "--out", out, "--quiet")
        _one_line_error(result, str(out), f"PID {proc.pid}")
        assert _tree(tmp_path) == before  # the first run's partial and lock are intact
        with pytest.raises(CimtoolError, match=f"PID {proc.pid}"):
            with artifacts.ArtifactWriter(out, "sweep", {}, force=True):
                pass
        assert _tree(tmp_path) == before
    finally:
        _stop(proc, signal.SIGKILL)
    # SIGKILL: the partial and the lock file stay behind; the next run takes both over
    assert (tmp_path / "cmap.partial" / "half.txt").is_file()
    result = cli("map-weights", "--model", tiny_model, "--out", out, "--quiet")
    assert result.code == 0, result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmap"]
    artifacts.load(out, "cmap")


@pytest.mark.parametrize("keep", [False, True])
def test_sigterm_cleans_up_unless_there_is_a_checkpoint_to_resume(tmp_path, keep):
    out = tmp_path / "run"
    proc = _holder(out, keep)
    _stop(proc, signal.SIGTERM)
    assert proc.returncode != 0
    assert not (tmp_path / "run.lock").exists() and not out.exists()
    if keep:  # --resume can continue it
        assert (tmp_path / "run.partial" / "scratch" / "model.ckpt").is_file()
        assert artifacts.find_resumable(tmp_path, artifacts.sha256_json({"holder": 1})) == \
            tmp_path / "run.partial"
    else:
        assert list(tmp_path.iterdir()) == []


def test_dead_runs_partials_are_removed_by_the_next_run_next_to_them(tmp_path):
    dead = _holder(tmp_path / "dead")
    resumable = _holder(tmp_path / "resumable", keep=True)
    alive = _holder(tmp_path / "alive")
    try:
        for proc in (dead, resumable):
            _stop(proc, signal.SIGKILL)
        with artifacts.ArtifactWriter(tmp_path / "next", "sweep", {}) as w:
            assert w.removed_partials == [tmp_path / "dead.partial"]
            w.commit([], {})
        names = sorted(p.name for p in tmp_path.iterdir())
        # the dead run's partial is gone; a checkpoint to resume and a live run's partial are kept
        assert "dead.partial" not in names and "next" in names
        assert {"resumable.partial", "alive.partial", "alive.lock"} <= set(names)
        assert artifacts.find_resumable(tmp_path, artifacts.sha256_json({"holder": 1})) == \
            tmp_path / "resumable.partial"
    finally:
        _stop(alive, signal.SIGKILL)


def test_ctrl_c_before_the_first_checkpoint_leaves_nothing(tmp_path):
    out = tmp_path / "models" / "run"
    with pytest.raises(KeyboardInterrupt):
        with artifacts.ArtifactWriter(out, "model", {"p": 1}, keep_on_interrupt=True) as w:
            w.path("half").write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []  # not even the parent it created


def test_a_body_without_commit_leaves_nothing(tmp_path):
    with artifacts.ArtifactWriter(tmp_path / "run", "sweep", {}) as w:
        w.path("half").write_text("half")
    assert list(tmp_path.iterdir()) == []


def test_the_lock_is_reentrant_and_released(tmp_path):
    out = tmp_path / "deep" / "run"
    with artifacts.OutputLock(out) as lock:  # as a stage helper would, before its work
        assert lock.path == tmp_path / "deep" / "run.lock"
        assert lock.path.read_text().split()[0] == str(os.getpid())
        with artifacts.ArtifactWriter(out, "sweep", {}) as w:
            w.commit([], {})
        assert lock.path.exists()
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["run"]
    with artifacts.OutputLock(tmp_path / "gone" / "x"):
        pass
    assert not (tmp_path / "gone").exists()  # parents it created, removed again


def test_a_stale_lock_file_is_taken_over(tmp_path):
    (tmp_path / "run.lock").write_text("999999999 some-host\n")  # nobody holds its flock
    with artifacts.ArtifactWriter(tmp_path / "run", "sweep", {}) as w:
        w.commit([], {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_train_ann_resume_still_works_with_the_lock(cli, tmp_path, monkeypatch):
    """Ctrl-C after a checkpoint keeps the partial; --resume continues it (under a fresh lock)."""
    from cimtool.stages import train_ann

    args = ["--dataset", "digits", "--method", "avgpool_8x8", "--epochs", "1", "--frontend-epochs", "1",
            "--artifacts-root", tmp_path, "--quiet"]
    real_train = train_ann._train

    def interrupted(p, spec, raw, tensors, device, scratch, reporter, ranks):
        (scratch / "model.ckpt").write_bytes(b"epoch 1")
        raise KeyboardInterrupt

    monkeypatch.setattr(train_ann, "_train", interrupted)
    assert cli("train-ann", *args).code == 130
    (partial,) = (tmp_path / "models").glob("*.partial")
    assert not list((tmp_path / "models").glob("*.lock"))
    monkeypatch.setattr(train_ann, "_train", real_train)
    result = cli("train-ann", "--resume", "--json", *args)
    assert result.code == 0, result.err
    assert json.loads(result.out)["artifact"] == str(partial)[: -len(".partial")]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [partial.name[: -len(".partial")]]


# --- B. layering ---------------------------------------------------------------------------------

def test_nn_does_not_import_train_and_help_loads_no_torch():
    code = ("import sys, cimtool.nn.snn, cimtool.nn.network; "
            "sys.exit(sorted(m for m in sys.modules if m.startswith('cimtool.train')) != [])")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
    code = "import sys, cimtool.data.tensors, cimtool.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
    from cimtool.data import tensors
    from cimtool.train import batching

    assert batching.TensorData is tensors.TensorData and batching.to_float is tensors.to_float


def test_post_step_hooks_are_generic():
    from cimtool.train.loop import post_step_hooks

    calls = []

    class Projected(nn.Linear):
        def after_step(self) -> None:
            calls.append(self)

    model = nn.Sequential(Projected(2, 2), nn.ReLU(), nn.Linear(2, 2), Projected(2, 1))
    hooks = post_step_hooks(model)
    assert len(hooks) == 2
    for hook in hooks:
        hook()
    assert calls == [model[0], model[3]]


# --- C.1 ST-BIF on level boundaries --------------------------------------------------------------

@pytest.mark.parametrize("neuron,bounds", [("stbif", "asymmetric"), ("stbif", "symmetric"),
                                           ("if", "asymmetric")])
@pytest.mark.parametrize("theta", [0.3, 0.1, 0.7, 1 / 3, 1.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stbif_counts_on_level_boundaries_equal_the_quantized_ann(neuron, bounds, theta, dtype):
    """Inputs exactly on a level boundary (x = (k − 1/2)·θ, as rounded) and on the levels: the spike
    count equals the quantized ANN's clamp(floor(x/θ + 1/2)) for every one of them. Accumulating
    x·(1/θ) missed some by one spike."""
    from cimtool.nn.snn import SnnConfig, quantize, scan

    cfg = SnnConfig(neuron=neuron, bounds=bounds, levels=16, timesteps=64)
    k = torch.arange(cfg.n_min - 2, cfg.p_max + 3, dtype=torch.float64)
    x = torch.cat([(k - 0.5) * theta, k * theta]).to(dtype)
    expected = quantize(x / theta, cfg.n_min, cfg.p_max)
    if neuron == "if":
        expected = expected.clamp(min=0)
    for summed in (False, True):
        _, count, _ = scan(x[None].clone(), theta, cfg, 64, True, summed=summed)
        assert torch.equal(count, expected), (summed, x[count != expected], count[count != expected])


@pytest.mark.parametrize("bounds", ["asymmetric", "symmetric"])
@pytest.mark.parametrize("stop", ["silent", "fixed"])
def test_spiking_network_equals_quantized_ann_on_boundaries(bounds, stop):
    from cimtool.nn.snn import SnnConfig, SpikingNetwork

    n = 40

    class Identity(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(n, n, bias=False), nn.ReLU(), nn.Linear(n, n, bias=False))
            with torch.no_grad():
                for layer in (self.body[0], self.body[2]):
                    layer.weight.copy_(torch.eye(n))

        def snn_parts(self):
            return (lambda x: x), list(self.body)

    cfg = SnnConfig(levels=16, bounds=bounds, timesteps=64, stop=stop)
    net = SpikingNetwork(Identity(), [0.3, 0.6], cfg, input_range=1.0)
    k = torch.arange(n, dtype=torch.float32) - n // 2
    x = torch.stack([(k - 0.5) * 0.3, k * 0.3, (k - 0.5) * 0.6])  # on the boundaries of both layers
    assert torch.equal(net.run(x).count, net.one_pass(x).count)


# --- C.2 a device card with a UTF-8 byte-order mark ----------------------------------------------

def test_device_card_with_a_bom(cli, tmp_path):
    from cimtool.devices.card import PRESET_DIR, load_card

    text = (PRESET_DIR / "rram_seed003.toml").read_text(encoding="utf-8")
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    card = load_card(str(path))
    assert card.to_dict() == load_card("rram_seed003").to_dict()
    result = cli("devices", "show", path)
    assert result.code == 0, result.err
    path.write_bytes(b"\xef\xbb\xbf" + b"name = [")  # still a one-line error when broken
    _one_line_error(cli("devices", "show", path), str(path), "not a valid TOML device card")


# --- C.3 a moved data folder -----------------------------------------------------------------------

def test_moved_data_folder_names_where_it_came_from(tmp_path):
    from cimtool.data.registry import load_dataset, load_recorded_dataset

    model = tmp_path / "models" / "m"
    moved = tmp_path / "was-here"
    params = {"dataset": "mnist", "data_dir": str(moved), "allow_pickle": False}
    with pytest.raises(CimtoolError) as exc:
        load_recorded_dataset(params, model)
    message = str(exc.value)
    assert "\n" not in message and not message.startswith("--data-dir")
    assert str(moved) in message and str(model / "manifest.json") in message
    assert "no such directory" in message and "pass --data-dir" in message
    # the user's own --data-dir is still called that
    with pytest.raises(CimtoolError, match=f"^--data-dir {tmp_path / 'nope'}: no such directory"):
        load_recorded_dataset(params, model, tmp_path / "nope")
    # a folder that exists but lost its files: the same origin, and the hint
    moved.mkdir()
    with pytest.raises(CimtoolError, match="recorded in .* missing train-images.*pass --data-dir"):
        load_recorded_dataset(params, model)
    with pytest.raises(CimtoolError, match=f"^--data-dir {moved}: missing train-images"):
        load_dataset("mnist", moved)


def test_default_data_folder_is_not_called_data_dir(tmp_path, monkeypatch):
    from cimtool.data import mnist_idx
    from cimtool.data.registry import load_dataset

    monkeypatch.setattr(mnist_idx, "FASHION_MNIST_DIR", tmp_path)  # exists, but empty
    with pytest.raises(CimtoolError) as exc:
        load_dataset("fashion-mnist")
    message = str(exc.value)
    assert not message.startswith("--data-dir")
    assert f"{tmp_path} (the default folder of --dataset fashion-mnist)" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_cli_moved_data_folder(cli, tmp_path, mnist_idx_dir):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(mnist_idx_dir, data)
    result = cli("train-ann", "--dataset", "mnist", "--data-dir", data, "--method", "avgpool_8x8",
                 "--epochs", "1", "--frontend-epochs", "1", "--out", tmp_path / "m", "--quiet")
    assert result.code == 0, result.err
    data.rename(tmp_path / "moved")
    before = _tree(tmp_path)
    result = cli("map-weights", "--model", tmp_path / "m", "--evaluate", "--out", tmp_path / "c", "--quiet")
    _one_line_error(result, str(data), "manifest.json", "pass --data-dir")
    assert not result.err.startswith("cimtool: error: --data-dir")
    assert _tree(tmp_path) == before
    result = cli("map-weights", "--model", tmp_path / "m", "--evaluate", "--data-dir", tmp_path / "moved",
                 "--out", tmp_path / "c", "--quiet")
    assert result.code == 0, result.err



# --- contradictory or costly options, a directory for a card -------------------------------------------

def test_devices_show_a_directory(cli, tmp_path):
    _one_line_error(cli("devices", "show", tmp_path), str(tmp_path),
                    "is a directory, neither a .toml device card nor a device artifact")


def test_sweep_refuses_method_with_model(cli, tiny_model, tmp_path):
    out = tmp_path / "sweep"
    _one_line_error(cli("sweep", "--model", tiny_model, "--method", "nonsense", "--out", out),
                    "--method", "with --model it has no effect")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_rate_coding_with_a_huge_t_says_what_it_costs(cli, tiny_model, tmp_path):
    out = tmp_path / "snn"
    before = _tree(tiny_model)
    result = cli("calibrate-threshold", "--model", tiny_model, "--spike-encoding", "rate", "--timesteps",
                 "100000", "--out", out)
    _one_line_error(result, "--timesteps 100000", "3125x the work of T = 32", "at most 4096")
    assert not out.exists() and _tree(tiny_model) == before
