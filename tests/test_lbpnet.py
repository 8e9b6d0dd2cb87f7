"""LBPNet (--model lbpnet): the seed preset's size and the paper's cost metric exactly, a hard path
whose LBP and RP outputs are 0/1, the recipe's schedules, resume, reproducibility, the hardware
flow, and bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from cimtool import artifacts
from cimtool.errors import CimtoolError
from cimtool.models.lbpnet import (
    PRESETS,
    LBPNet,
    LbpNetConfig,
    cost_summary,
    paper_cost,
    reference_parameters,
    with_overrides,
)


def _model(name: str = "paper_mnist_rp", seed: int = 0) -> LBPNet:
    torch.manual_seed(seed)
    return LBPNet((1, 28, 28), 10, PRESETS[name])


def test_preset_size_and_cost_are_the_seeds():
    """31,629 parameters as the reference counts them (ours: 29,085, without the 1×1 fusion convs
    the reference builds beside RP and never uses); the paper's LBP + RP count at 28×28."""
    for name, adds, rp_bytes, gops in (("paper_mnist_rp", 261_072, 2_544, 0.000366912),
                                       ("paper_mnist_rp_k8", 571_536, 5_088, 0.000677376)):
        model = _model(name)
        assert sum(p.numel() for p in model.parameters()) == 29_085
        assert reference_parameters(model) == 31_629
        cost = cost_summary(paper_cost(model.cfg, 28, 28))
        assert (cost["comparisons"], cost["additions"], cost["multiplications"]) == (105_840, adds, 0)
        assert cost["lbp_bytes"] == 384 and cost["rp_bytes"] == rp_bytes
        assert cost["size_bytes"] == 384 + rp_bytes  # 5,472 B for k = 8
        assert cost["gops"] == pytest.approx(gops, abs=1e-12)
    assert round(cost_summary(paper_cost(LbpNetConfig(), 28, 28))["gops"], 6) == 0.000367


def test_the_hard_path_is_binary_and_mac_free_in_its_lbp_and_rp():
    """LBP bits and RP outputs are exactly 0/1, in eval and in training's forward pass; the RP
    routing is fixed (k distinct bits per output) and the same for the same seed."""
    model = _model()
    x = torch.randn(8, 1, 28, 28)
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
             for block in model.stages for m in (block.lbp, block.fuse)]
    for mode in ("eval", "train"):
        seen.clear()
        getattr(model, mode)()
        model(x).sum().backward() if mode == "train" else model(x)
        assert len(seen) == 6
        for out in seen:
            assert set(torch.unique(out).tolist()) <= {0.0, 1.0}, mode
    for h in hooks:
        h.remove()
    routing = model.stages[1].fuse.routing
    assert routing.shape == (40, 4) and all(len(set(row.tolist())) == 4 for row in routing)
    assert torch.equal(routing, _model(seed=5).stages[1].fuse.routing)  # the preset's seed, not torch's
    grads = [model.stages[0].lbp.offsets_raw.grad, model.stages[0].fuse.gate_logits.grad]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # straight-through gradients


def test_training_forward_equals_eval_forward_on_the_same_statistics():
    """The straight-through construction leaves the forward values exact (no a + b − b rounding):
    with BN in eval mode, a training-mode forward with gradients gives the eval output bit for bit."""
    model = _model()
    x = torch.randn(16, 1, 28, 28)
    model.eval()
    expected = model(x).detach()
    for m in model.modules():
        if isinstance(m, (torch.nn.Dropout,)):
            m.eval()
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    assert torch.equal(model(x), expected)


def test_recipe_schedules_groups_and_freezing():
    from cimtool.train.recipe import LbpRecipe

    model = _model()
    recipe = LbpRecipe(model, PRESETS["paper_mnist_rp"].recipe)
    groups = {g["name"]: g for g in recipe.param_groups(1e-4)}
    assert (groups["offsets"]["lr_mult"], groups["offsets"]["weight_decay"]) == (5.0, 0.0)
    assert (groups["gates"]["lr_mult"], groups["head"]["lr_mult"], groups["head"]["weight_decay"]) == (
        3.0, 0.7, 1e-4)
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))
    recipe.begin_epoch(1, 300)
    lbp, rp = model.lbp_layers()[0], model.rp_layers()[0]
    assert float(lbp.alpha.detach()) == pytest.approx(1.5) and float(rp.tau) == pytest.approx(3.0)
    assert lbp.frozen and rp.frozen and recipe.lr_scale == 1.0
    recipe.begin_epoch(9, 300)  # epoch index 8: offsets learn, gates still frozen (until 12)
    assert not lbp.frozen and rp.frozen
    recipe.begin_epoch(300, 300)
    assert float(lbp.alpha.detach()) == pytest.approx(0.10) and float(rp.tau) == pytest.approx(0.90)
    assert recipe.hard and recipe.lr_scale == 0.1 and not rp.frozen
    short = PRESETS["paper_mnist_rp"].recipe.scaled(30)
    assert (short.hard_start_epoch, short.freeze_offsets_epochs, short.warmup_epochs) == (26, 1, 0.5)


def test_fit_with_the_recipe_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Killed in the hard phase (BN recalibration, guard state), resumed: same weights and metrics."""
    from cimtool.train import loop
    from cimtool.train.batching import TensorData
    from cimtool.train.recipe import LbpRecipe
    from cimtool.ui import Reporter

    g = torch.Generator().manual_seed(0)
    train = TensorData((torch.rand(96, 1, 12, 12, generator=g) * 255).to(torch.uint8),
                       torch.randint(0, 10, (96,), generator=g))
    val = TensorData(train.x[:32], train.y[:32])
    cfg = PRESETS["paper_mnist_rp"]
    cfg = replace(cfg, recipe=replace(cfg.recipe.scaled(6), bn_recal_batches=2))
    config = loop.TrainConfig(epochs=6, batch_size=32, lr=1e-3, compile="off")

    def run(checkpoint):
        torch.manual_seed(0)
        model = LBPNet((1, 12, 12), 10, cfg)
        result = loop.fit(model, train, val, config, torch.device("cpu"), checkpoint, "model",
                          Reporter(quiet=True), LbpRecipe(model, cfg.recipe))
        return model, result

    straight, expected = run(tmp_path / "straight.ckpt")
    assert [m["hard"] for m in expected.metrics] == [False] * 5 + [True]
    evaluate, calls = loop.evaluate, []

    def killed_in_epoch_6(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "CHECKPOINT_EVERY_S", 0.0)
    monkeypatch.setattr(loop, "evaluate", killed_in_epoch_6)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed.ckpt")
    monkeypatch.setattr(loop, "evaluate", evaluate)
    resumed, result = run(tmp_path / "killed.ckpt")
    assert result.metrics == expected.metrics
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_overrides_and_bad_configs():
    cfg = with_overrides(PRESETS["paper_mnist_rp"],
                         ["rp.n_bits_per_out=8", "blocks.channels_per_stage=8,16,32"])
    assert cfg.rp.n_bits_per_out == 8 and cfg.blocks.channels_per_stage == (8, 16, 32)
    assert LbpNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # arch.json round trip
    for bad, message in (("lbp.num_points=10", "num_points must be in"),
                         ("blocks.channels_per_stage=39,40", "must list 3"),
                         ("rp.n_bits_per_out=0", "n_bits_per_out must be in"),
                         ("rp.n_bits=4", "known field"),
                         ("lbp.window=x", "not a int")):
        with pytest.raises(CimtoolError, match=message):
            with_overrides(PRESETS["paper_mnist_rp"], [bad])


@pytest.mark.parametrize("args, message", [
    (["--preset", "paper_cifar"], "unknown --preset 'paper_cifar'"),
    (["--lbp-set", "lbp.num_points=10"], "num_points must be in [1, window² − 1 = 8]"),
    (["--lbp-set", "blocks.channels_per_stage=39,40"], "must list 3 positive channel counts"),
    (["--lbp-set", "rp.n_bits_per_out=0"], "n_bits_per_out must be in [1, num_patterns·num_points = 16]"),
])
def test_bad_lbpnet_input_is_one_line_and_writes_nothing(cli, tmp_path, args, message):
    result = cli("train-ann", "--model", "lbpnet", *args, "--artifacts-root", tmp_path, "--quiet")
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and message in lines[0], result.err
    assert not any(tmp_path.iterdir())
    result = cli("train-ann", "--preset", "paper_mnist_rp_k8", "--artifacts-root", tmp_path, "--quiet")
    assert result.code == 2 and "apply to --model lbpnet" in result.err


@pytest.fixture(scope="module")
def lbp_model(tmp_path_factory):
    from cimtool.cli import main

    out = tmp_path_factory.mktemp("lbp") / "m"
    with pytest.raises(SystemExit) as info:
        main(["train-ann", "--model", "lbpnet", "--epochs", "4", "--out", str(out), "--quiet"])
    assert info.value.code in (0, None)
    return artifacts.load(out, "model")


def test_trained_artifact_reports_the_cost_and_is_reproducible(lbp_model, cli, tmp_path):
    s = lbp_model.summary
    assert s["n_parameters"] == 29_085 and s["n_parameters_reference"] == 31_629
    assert (s["lbp_cost"]["comparisons"], s["lbp_cost"]["additions"]) == (105_840, 261_072)
    # dense MACs: the three 1×1 shortcuts and the head
    assert s["dense_macs"] == 39 * 784 + 39 * 40 * 196 + 40 * 80 * 49 + 80 * 256 + 256 * 10
    assert s["test_accuracy"] > 0.5  # 4 epochs on mnist5k's 3,500 samples
    arch = json.loads(lbp_model.file("arch.json").read_text())
    assert [layer["name"] for layer in arch["crossbar_layers"]] == ["head.0", "head.3"]
    assert arch["lbpnet"]["recipe"]["epochs"] == 4
    rows = __import__("pandas").read_parquet(lbp_model.file("cost.parquet"))
    assert list(rows["comparisons"]) == [12_544 + 30_576, 12_544 + 31_360, 3_136 + 15_680]
    out = tmp_path / "again"
    assert cli("train-ann", "--model", "lbpnet", "--epochs", "4", "--out", out, "--quiet").code == 0
    for name in ("weights.safetensors", "metrics.parquet", "arch.json", "cost.parquet"):
        assert (out / name).read_bytes() == lbp_model.file(name).read_bytes(), name


def test_lbpnet_goes_through_the_hardware_flow(lbp_model, cli, tmp_path):
    """The head's Linear layers are crossbar layers: map-weights, export-weightmap, qat and
    neurosim-trace take an LBPNet; its stages stay digital."""
    root = tmp_path
    assert cli("map-weights", "--model", lbp_model.path, "--out", root / "cmap", "--evaluate", "--trials",
               "1", "--quiet").code == 0
    cmap = artifacts.load(root / "cmap", "cmap")
    assert set(__import__("pandas").read_parquet(cmap.file("cmap.parquet"))["layer"]) == {"head.0", "head.3"}
    assert cli("export-weightmap", "--cmap", root / "cmap", "--out", root / "wm", "--quiet").code == 0
    assert cli("qat", "--model", lbp_model.path, "--mode", "ptq", "--trials", "1", "--out", root / "q",
               "--quiet").code == 0
    assert cli("neurosim-trace", "--model", lbp_model.path, "--out", root / "t", "--quiet").code == 0
    network = (root / "t" / "NetWork.csv").read_text().splitlines()
    assert network == ["1,1,80,1,1,256,0,1", "1,1,256,1,1,10,0,1"]
    weights = np.loadtxt(root / "t" / "weight1.csv", delimiter=",")
    assert weights.shape == (80, 256)
