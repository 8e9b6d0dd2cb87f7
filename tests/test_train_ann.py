"""End-to-end `cimtool train-ann` / `cimtool inspect`: accuracy, reproducibility, resume, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from cimtool import artifacts


def _train(cli, out, *args):
    result = cli("train-ann", "--out", out, "--quiet", "--json", *args)
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    assert payload["artifact"] == str(out) and payload["kind"] == "model"
    return payload["summary"]


def test_default_command_accuracy_time_and_layout(default_model):
    art, wall, root = default_model
    assert art.path.parent == root / "models"
    assert art.path.name.startswith("mnist5k-proj_sup_64-s0-")
    assert art.summary["test_accuracy"] >= 0.88
    assert 0 <= art.summary["val_accuracy"] <= 1
    assert wall < 180
    assert set(art.manifest["files"]) == {"weights.safetensors", "arch.json", "metrics.parquet",
                                          "timing.parquet"}
    spec = json.loads((art.path / "arch.json").read_text())
    assert spec["off_array"] == ["frontend", "scaler"]
    assert spec["crossbar_layers"][0] | {} == {
        "name": "head.0", "type": "linear", "in_features": 64, "out_features": 10,
        "bias": True, "rows": 64, "cols": 10}
    dataset = art.manifest["inputs"][0]
    assert dataset["name"] == "mnist5k" and len(dataset["split_sha256"]) == 64
    metrics = pq.read_table(art.path / "metrics.parquet").to_pandas()
    assert list(metrics.columns) == ["phase", "epoch", "train_loss", "train_acc", "val_loss",
                                     "val_acc", "lr"]
    assert set(metrics["phase"]) == {"frontend", "head"}
    head = metrics[metrics.phase == "head"]
    assert len(head) == art.params["epochs"] == 150
    assert head["val_acc"].max() == art.summary["val_accuracy"]
    assert head["train_loss"].iloc[-1] < head["train_loss"].iloc[0]
    timing = pq.read_table(art.path / "timing.parquet").to_pandas()
    assert (timing["samples_per_s"] > 0).all() and (timing["wall_s"] > 0).all()


def test_default_model_reloads_and_reproduces_test_accuracy(default_model):
    import torch

    from cimtool.data import load_dataset, make_splits
    from cimtool.models.io import load_model

    art, _, _ = default_model
    model, _ = load_model(art)
    raw = load_dataset("mnist5k")
    s = make_splits(raw.x, raw.y, 0, 0.1, 0.2)
    with torch.no_grad():
        pred = model(torch.from_numpy(s.test.x).float() / 255).argmax(1).numpy()
    assert (pred == s.test.y).mean() == pytest.approx(art.summary["test_accuracy"])
    feats = model.features(torch.from_numpy(s.test.x[:50]).float() / 255)
    assert feats.min() >= 0 and feats.max() <= 1


@pytest.mark.parametrize("args, floor", [
    (["--method", "proj_pca_64"], 0.88),
    (["--method", "avgpool_8x8"], 0.85),
    (["--dataset", "digits", "--hidden", "128"], 0.95),
])
def test_accuracy_floors(cli, tmp_path, args, floor):
    assert _train(cli, tmp_path / "m", *args)["test_accuracy"] >= floor


def test_same_seed_gives_byte_identical_payloads(cli, tmp_path):
    args = ["--epochs", "20", "--frontend-epochs", "5"]
    _train(cli, tmp_path / "a", *args)
    _train(cli, tmp_path / "b", *args)
    _train(cli, tmp_path / "c", *args, "--seed", "1")
    for name in ("weights.safetensors", "metrics.parquet", "arch.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "weights.safetensors").read_bytes() != \
        (tmp_path / "c" / "weights.safetensors").read_bytes()


def test_killed_run_resumes_to_the_same_weights(cli, tmp_path):
    args = ["--model", "mnist_cnn", "--epochs", "4", "--artifacts-root", tmp_path / "root"]
    _train(cli, tmp_path / "straight", *args)
    proc = subprocess.Popen([sys.executable, "-m", "cimtool", "train-ann", "--quiet", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpts = []
    while time.time() < deadline and not ckpts and proc.poll() is None:
        ckpts = list((tmp_path / "root").glob("models/*.partial/scratch/model.ckpt"))
        time.sleep(0.01)
    assert ckpts, "the run ended before its first checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = ckpts[0].parents[1]
    assert partial.is_dir() and not partial.with_name(partial.name[:-8]).exists()
    result = cli("train-ann", "--resume", "--quiet", "--json", *args)
    assert result.code == 0, result.err
    resumed = json.loads(result.out)["artifact"]
    assert resumed == str(partial)[: -len(".partial")]
    assert (tmp_path / "straight" / "weights.safetensors").read_bytes() == \
        (tmp_path / resumed / "weights.safetensors").read_bytes()
    assert (tmp_path / "straight" / "metrics.parquet").read_bytes() == \
        (tmp_path / resumed / "metrics.parquet").read_bytes()
    assert not partial.exists()


def test_inspect_verifies(cli, default_model):
    art, _, _ = default_model
    result = cli("inspect", art.path, "--json")
    assert result.code == 0
    payload = json.loads(result.out)
    assert payload["verified"] and payload["summary"] == art.summary
    assert cli("inspect", art.path).code == 0


def _assert_user_error(result, root, pattern):
    assert result.code == 2, (result.code, result.err)
    assert result.err.count("\n") == 1 and result.err.startswith("cimtool: error"), result.err
    assert pattern in result.err, result.err
    assert "Traceback" not in result.err
    assert not root.exists() or not any(root.rglob("*")), list(root.rglob("*"))


@pytest.mark.parametrize("args, pattern", [
    (["--dataset", "mnist"], "needs --data-dir"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent"], "no such directory"),
    (["--dataset", "cifar10", "--data-dir", "."], "data_batch_1.bin"),
    (["--method", "proj_magic_64"], "unknown --method 'proj_magic_64'"),
    (["--model", "resnet1000"], "unknown --model 'resnet1000'"),
    (["--dataset", "imagenet"], "unknown --dataset 'imagenet'"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--val-frac", "0.5", "--test-frac", "0.6"], "sum to less than 1"),
    (["--epochs", "x"], "Invalid value for '--epochs'"),
    (["--no-such-flag"], "No such option"),
    (["--seed", "-1"], "--seed must be in [0, 2**32)"),
    (["--split-seed", str(2**40)], "--split-seed must be in [0, 2**32)"),
    (["--momentum", "5"], "--momentum must be below 1"),
    (["--val-frac", "0.0001", "--test-frac", "0.0001"], "val split of mnist5k is empty"),
    (["--hidden", "1000000000000"], "cannot build --model crossbar"),
    (["--torch-device", "tpu"], "unknown --torch-device 'tpu'"),
    (["--optimizer", "sgd", "--lr", "1e30", "--grad-clip", "0", "--epochs", "2",
      "--frontend-epochs", "1", "--quiet"], "training diverged"),
])
def test_bad_arguments(cli, tmp_path, args, pattern):
    root = tmp_path / "root"
    result = cli("train-ann", "--artifacts-root", root, *args)
    _assert_user_error(result, root, pattern)


@pytest.mark.parametrize("corrupt, pattern", [
    ("magic", "wrong IDX magic number"),
    ("truncate", "truncated"),
])
def test_bad_idx_files(cli, tmp_path, mnist_idx_dir, corrupt, pattern):
    import gzip
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(mnist_idx_dir, data_dir)
    target = data_dir / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(target.read_bytes())
    raw = (b"\x00\x00\x08\x02" + raw[4:]) if corrupt == "magic" else raw[: len(raw) // 2]
    target.write_bytes(gzip.compress(raw))
    root = tmp_path / "root"
    result = cli("train-ann", "--dataset", "mnist", "--data-dir", data_dir, "--artifacts-root", root)
    _assert_user_error(result, root, pattern)


def test_mnist_idx_end_to_end(cli, tmp_path, mnist_idx_dir):
    summary = _train(cli, tmp_path / "m", "--dataset", "mnist", "--data-dir", mnist_idx_dir,
                     "--method", "avgpool_8x8")
    assert summary["n_test"] == 1000 and summary["n_train"] + summary["n_val"] == 4000
    assert summary["test_accuracy"] >= 0.85
    # default --epochs: mnist5k's 150 x 3,500 samples over 3,600 train samples = 146 epochs
    art = artifacts.load(tmp_path / "m", "model")
    assert art.params["epochs"] == 146 and art.params["frontend_epochs"] == 20
    metrics = pq.read_table(art.path / "metrics.parquet").to_pandas()
    assert len(metrics[metrics.phase == "head"]) == 146


def test_default_epochs_keep_mnist5k_sample_budget():
    from cimtool.stages.train_ann import default_epochs

    assert default_epochs(3500) == 150  # mnist5k: the recipe as tuned
    assert default_epochs(1257) == 150  # digits: never more than 150
    assert default_epochs(3600) == 146  # ceil(525,000 / 3,600)
    assert default_epochs(54000) == 10  # Fashion-MNIST / MNIST (60k - 10 % val)
    assert default_epochs(45000) == 12  # CIFAR-10


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_smoothed_cross_entropy_gradient_matches_torch(eps):
    import torch
    from torch.nn import functional as F

    from cimtool.train.loop import smoothed_cross_entropy

    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(1)) * 4
    target = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2))
    ours = logits.clone().requires_grad_()
    ref = logits.clone().requires_grad_()
    (3 * smoothed_cross_entropy(ours, target, eps)).backward()
    (3 * F.cross_entropy(ref, target, label_smoothing=eps)).backward()
    torch.testing.assert_close(ours.grad, ref.grad)


def test_clip_grad_norm_skips_only_an_exact_factor_of_one():
    import torch

    from cimtool.train.loop import clip_grad_norm

    for ratio in (0.5, 0.998, 0.9989, 0.999, 0.9991, 1.0, 1.0000001, 1.001, 3.0):
        for max_norm in (1.0, 1e-3, 7.5):
            base = [torch.randn(10, 64, generator=torch.Generator().manual_seed(3)), torch.randn(10)]
            total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(base)))
            grads = [g * (ratio * max_norm / total) for g in base]
            expected = [g.clone() for g in grads]  # the formula, always applied
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(expected)))
            torch._foreach_mul_(expected, (max_norm / (norm + 1e-6)).clamp_(max=1.0))
            clip_grad_norm(grads, max_norm)
            for got, want in zip(grads, expected, strict=True):
                assert torch.equal(got, want), (ratio, max_norm)


def test_fit_resumes_from_a_mid_run_checkpoint_to_the_same_weights(tmp_path, interrupt_at_validation):
    """The crossbar head's path: killed after epoch 3's checkpoint, resumed, same weights and
    metrics as a straight run (which, being short, checkpoints only after its last epoch)."""
    import torch
    from safetensors import safe_open

    from cimtool.train import loop
    from cimtool.train.batching import TensorData
    from cimtool.ui import Reporter

    g = torch.Generator().manual_seed(0)
    train = TensorData(torch.rand(300, 64, generator=g), torch.randint(0, 10, (300,), generator=g))
    val = TensorData(torch.rand(60, 64, generator=g), torch.randint(0, 10, (60,), generator=g))
    cfg = loop.TrainConfig(epochs=6, batch_size=32, lr=0.04, compile="off")

    def run(checkpoint):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 10))
        result = loop.fit(model, train, val, cfg, torch.device("cpu"), checkpoint, "head",
                          Reporter(quiet=True))
        return model, result

    straight, expected = run(tmp_path / "straight.ckpt")
    with safe_open(str(tmp_path / "straight.ckpt"), framework="pt") as fh:
        assert json.loads(fh.metadata()["loop"])["epoch"] == 6
    calls = interrupt_at_validation(4)  # killed in epoch 4
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed.ckpt")
    interrupt_at_validation(None)
    resumed, result = run(tmp_path / "killed.ckpt")
    assert len(calls) == 4 and result.metrics == expected.metrics
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_edited_payload_is_refused(cli, tmp_path):
    _train(cli, tmp_path / "m", "--epochs", "2", "--frontend-epochs", "1")
    metrics = tmp_path / "m" / "metrics.parquet"
    metrics.write_bytes(metrics.read_bytes()[:-1] + b"\x00")
    result = cli("inspect", tmp_path / "m")
    assert result.code == 2 and result.err.count("\n") == 1
    assert "metrics.parquet" in result.err and "altered" in result.err
    result = cli("inspect", tmp_path / "nothing-here")
    assert result.code == 2 and "no such artifact" in result.err


def test_out_exists_needs_force(cli, tmp_path):
    _train(cli, tmp_path / "m", "--epochs", "1", "--frontend-epochs", "1")
    result = cli("train-ann", "--out", tmp_path / "m", "--epochs", "1")
    assert result.code == 2 and "--force" in result.err
    _train(cli, tmp_path / "m", "--epochs", "1", "--frontend-epochs", "1", "--force")


def test_resume_with_nothing_to_resume(cli, tmp_path):
    result = cli("train-ann", "--resume", "--artifacts-root", tmp_path)
    assert result.code == 2 and "no interrupted train-ann run" in result.err


def test_help_is_fast_and_imports_no_torch():
    code = "import sys, cimtool.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    best = min(_time_help() for _ in range(3))
    assert best < 0.5, f"cimtool --help took {best:.2f} s"


def _time_help() -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cimtool", "--help"], capture_output=True)
    assert proc.returncode == 0 and b"train-ann" in proc.stdout
    return time.perf_counter() - t0


def test_dataloader_path_trains_and_is_reproducible(cli, tmp_path):
    args = ["--loader", "dataloader", "--method", "avgpool_8x8", "--epochs", "4"]
    summary = _train(cli, tmp_path / "a", *args)
    assert summary["test_accuracy"] >= 0.8
    _train(cli, tmp_path / "b", *args)
    assert (tmp_path / "a" / "weights.safetensors").read_bytes() == \
        (tmp_path / "b" / "weights.safetensors").read_bytes()


def test_ctrl_c_keeps_the_checkpoint_for_resume(cli, tmp_path, monkeypatch):
    from cimtool.stages import train_ann

    def interrupted(p, spec, raw, tensors, device, scratch, reporter, ranks):
        (scratch / "model.ckpt").write_bytes(b"epoch 1")
        raise KeyboardInterrupt

    monkeypatch.setattr(train_ann, "_train", interrupted)
    result = cli("train-ann", "--artifacts-root", tmp_path, "--quiet")
    assert result.code == 130 and "continues with --resume" in result.err
    partials = list((tmp_path / "models").glob("*.partial"))
    assert len(partials) == 1 and (partials[0] / "scratch" / "model.ckpt").is_file()


def test_inspect_checks_weight_shapes(cli, tmp_path):
    import torch
    from safetensors.torch import save_file

    _train(cli, tmp_path / "m", "--epochs", "1", "--frontend-epochs", "1")
    weights = tmp_path / "m" / "weights.safetensors"
    save_file({"head.0.weight": torch.zeros(3, 3)}, str(weights))
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    manifest["files"]["weights.safetensors"] = {"sha256": artifacts.sha256_file(weights),
                                                "bytes": weights.stat().st_size}
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    result = cli("inspect", tmp_path / "m")
    assert result.code == 2 and "tensors do not match arch.json" in result.err


def test_force_never_deletes_a_users_folder(cli, tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    result = cli("train-ann", "--out", folder, "--force", "--epochs", "1")
    assert result.code == 2 and "not a cimtool artifact" in result.err
    assert (folder / "notes.txt").read_text() == "precious"


def test_dataloader_batches_match_the_memory_batcher_from_any_epoch():
    import torch

    from cimtool.train.batching import LoaderBatcher, MemoryBatcher, TensorData

    data = TensorData(torch.arange(50, dtype=torch.float32)[:, None], torch.arange(50))
    cpu = torch.device("cpu")
    memory, reused = MemoryBatcher(data, 8, cpu), LoaderBatcher(data, 8, cpu)
    for epoch in range(3):
        expected = [yb.tolist() for _, yb in memory.epoch(torch.Generator().manual_seed(epoch))]
        got = [yb.tolist() for _, yb in reused.epoch(torch.Generator().manual_seed(epoch))]
        assert got == expected, epoch
    fresh = LoaderBatcher(data, 8, cpu)  # as after --resume: a new loader mid-run
    assert [yb.tolist() for _, yb in fresh.epoch(torch.Generator().manual_seed(2))] == expected


def test_images_too_small_for_the_model_are_refused():
    import numpy as np

    from cimtool.data.registry import RawDataset
    from cimtool.data.split import make_splits
    from cimtool.errors import CimtoolError
    from cimtool.stages.train_ann import TrainAnnParams, _check_fit

    x = np.zeros((100, 1, 6, 6), dtype=np.uint8)
    y = np.arange(100) % 10
    raw = RawDataset("tiny", x, y, 10, "test")
    splits = make_splits(x, y, 0, 0.1, 0.2)
    _check_fit(TrainAnnParams(model="mnist_cnn"), raw, splits)
    with pytest.raises(CimtoolError, match="needs images of at least 8x8"):
        _check_fit(TrainAnnParams(model="vgg8"), raw, splits)
