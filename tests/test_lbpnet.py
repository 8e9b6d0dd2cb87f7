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
    """Every LBP comparison and every RP output is exactly 0/1, in eval and in training's forward
    pass; an LBP point's output is the popcount of its comparisons over the input channels; the RP
    routing is fixed (k distinct points per output) and the same for the same seed."""
    model = _model()
    x = torch.randn(8, 1, 28, 28)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, out: seen.append((m, i[0].detach(), out.detach())))
             for block in model.stages for m in (block.lbp, block.fuse)]
    for mode in ("eval", "train"):
        seen.clear()
        getattr(model, mode)()
        model(x).sum().backward() if mode == "train" else model(x)
        assert len(seen) == 6
        for module, inputs, out in seen:
            if module in model.lbp_layers():
                bits = module.bits(inputs)  # [B, P·N, C_in, H, W]
                assert bits.shape[1:3] == (16, inputs.shape[1])
                assert set(torch.unique(bits).tolist()) <= {0.0, 1.0}, mode
                assert torch.equal(out, bits.sum(2)), mode
                assert set(torch.unique(out).tolist()) > {0.0, 1.0} or inputs.shape[1] == 1
            else:
                assert set(torch.unique(out).tolist()) == {0.0, 1.0}, mode
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


def test_fit_with_the_recipe_resumes_to_the_same_weights(tmp_path, interrupt_at_validation):
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
    interrupt_at_validation(6)  # killed in epoch 6
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed.ckpt")
    interrupt_at_validation(None)
    resumed, result = run(tmp_path / "killed.ckpt")
    assert result.metrics == expected.metrics
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_overrides_and_bad_configs():
    cfg = with_overrides(PRESETS["paper_mnist_rp"],
                         ["rp.n_bits_per_out=8", "blocks.channels_per_stage=8,16,32",
                          "recipe.groups.offsets=1,0"])
    assert cfg.rp.n_bits_per_out == 8 and cfg.blocks.channels_per_stage == (8, 16, 32)
    assert cfg.recipe.groups["offsets"] == (1.0, 0.0) and cfg.recipe.groups["gates"] == (3.0, 0.0)
    assert LbpNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # arch.json round trip
    for bad, message in (("lbp.num_points=10", "num_points must be in"),
                         ("blocks.channels_per_stage=39,40", "must list 3"),
                         ("rp.n_bits_per_out=0", "n_bits_per_out must be in"),
                         ("rp.n_bits=4", "known field"),
                         ("lbp.offset_init=spiral", "gaussian or ring"),
                         ("recipe.groups.offsets=1", "expected lr_mult,wd_mult"),
                         ("recipe.groups=1,0", "known field"),
                         ("lbp.window=x", "not a int")):
        with pytest.raises(CimtoolError, match=message):
            with_overrides(PRESETS["paper_mnist_rp"], [bad])


@pytest.mark.parametrize("args, message", [
    (["--preset", "paper_cifar"], "unknown --preset 'paper_cifar'"),
    (["--lbp-set", "lbp.num_points=10"], "num_points must be in [1, window² − 1 = 8]"),
    (["--lbp-set", "blocks.channels_per_stage=39,40"], "must list 3 positive channel counts"),
    (["--lbp-set", "rp.n_bits_per_out=0"], "n_bits_per_out must be in [1, num_patterns·num_points = 16]"),
    (["--batch-size", "128"], "--batch-size does not apply to --model lbpnet: its preset's recipe sets it "
                              "(256); use --lbp-set recipe.batch_size=128"),
    (["--warmup-epochs", "3"], "--warmup-epochs does not apply to --model lbpnet: its preset's recipe sets "
                               "it (5.0)"),
])
def test_bad_lbpnet_input_is_one_line_and_writes_nothing(cli, tmp_path, args, message):
    result = cli("train-ann", "--model", "lbpnet", *args, "--artifacts-root", tmp_path, "--quiet")
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and message in lines[0], result.err
    assert not any(tmp_path.iterdir())
    result = cli("train-ann", "--preset", "paper_mnist_rp_k8", "--artifacts-root", tmp_path, "--quiet")
    assert result.code == 2 and "apply to --model lbpnet" in result.err


# 2 epochs of the CPU preset on mnist5k, BN re-estimated from 8 batches (not 200) to keep it short
LBP_TRAIN = ("--model", "lbpnet", "--preset", "paper_mnist_rp_cpu", "--epochs", "2",
             "--lbp-set", "recipe.bn_recal_batches=8")


@pytest.fixture(scope="module")
def lbp_model(tmp_path_factory):
    from cimtool.cli import main

    out = tmp_path_factory.mktemp("lbp") / "m"
    with pytest.raises(SystemExit) as info:
        main(["train-ann", *LBP_TRAIN, "--out", str(out), "--quiet"])
    assert info.value.code in (0, None)
    return artifacts.load(out, "model")


def test_trained_artifact_reports_the_cost_and_is_reproducible(lbp_model, cli, tmp_path):
    s = lbp_model.summary
    assert s["n_parameters"] == 29_085 and s["n_parameters_reference"] == 31_629
    assert (s["lbp_cost"]["comparisons"], s["lbp_cost"]["additions"]) == (105_840, 261_072)
    # dense MACs: the three 1×1 shortcuts and the head
    assert s["dense_macs"] == 39 * 784 + 39 * 40 * 196 + 40 * 80 * 49 + 80 * 256 + 256 * 10
    assert s["test_accuracy"] > 0.5  # 2 epochs on mnist5k's 3,500 samples
    arch = json.loads(lbp_model.file("arch.json").read_text())
    assert [layer["name"] for layer in arch["crossbar_layers"]] == ["head.0", "head.3"]
    assert arch["lbpnet"]["recipe"]["epochs"] == 2
    rows = __import__("pandas").read_parquet(lbp_model.file("cost.parquet")).set_index("layer")
    assert list(rows.index) == ["stages.0", "stages.1", "stages.2", "head.0", "head.3", "total"]
    assert list(rows["comparisons"][:3]) == [12_544 + 30_576, 12_544 + 31_360, 3_136 + 15_680]
    assert list(rows["dense_macs"]) == [39 * 784, 39 * 40 * 196, 40 * 80 * 49, 80 * 256, 256 * 10,
                                        s["dense_macs"]]
    assert rows.loc["total", "additions"] == 261_072 and rows.loc["total", "size_bytes"] == 2_928
    out = tmp_path / "again"
    assert cli("train-ann", *LBP_TRAIN, "--out", out, "--quiet").code == 0
    for name in ("weights.safetensors", "metrics.parquet", "arch.json", "cost.parquet"):
        assert (out / name).read_bytes() == lbp_model.file(name).read_bytes(), name


def test_profile_reports_lbpnet_cost_beside_its_timings(lbp_model, cli, tmp_path):
    """profile times the LBPNet itself, skips the spiking modes it has no twin for, and writes the
    paper's cost table with the dense MACs and mnist_cnn's beside it."""
    import pandas as pd

    result = cli("profile", "--model", lbp_model.path, "--batch-sizes", "4", "--repeats", "1", "--warmup",
                 "0", "--modes", "ann_eager,snn", "--out", tmp_path / "p")
    assert result.code == 0, result.err
    art = artifacts.load(tmp_path / "p", "profile")
    s = art.summary
    assert s["lbp_cost"]["gops"] == pytest.approx(0.000366912) and s["mnist_cnn_macs"] == 1_218_048
    rows = pd.read_parquet(art.file("profile.parquet"))
    eager = rows[rows["mode"] == "ann_eager"]
    assert eager["latency_ms"].notna().all() and len(eager) == 2  # forward, forward_backward
    assert rows[rows["mode"] == "snn"]["note"].str.contains("no spiking twin").all()
    assert pd.read_parquet(art.file("cost.parquet")).equals(pd.read_parquet(lbp_model.file("cost.parquet")))
    assert "105,840 comparisons" in result.out.replace("\n", " ")
    refused = cli("profile", "--model", lbp_model.path, "--timesteps", "8", "--out", tmp_path / "t")
    assert refused.code == 2 and "has no spiking twin" in refused.err and not (tmp_path / "t").exists()


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


def test_lbp_backward_is_the_sigmoid_surrogate_of_every_comparison():
    """The hand-written backward of the channel popcount equals autograd of Σ_c sigmoid(d / α) at the
    same whole-pixel offsets (input and α); an offset's gradient is that surrogate × the image's
    central difference at its sample."""
    from torch.nn import functional as F

    from cimtool.models.lbpnet import EAGER, _ChannelLBP, lbp_counts

    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    rounded = ((1, 0), (0, -1), (1, 0), (-1, 1), (0, 0))
    offsets = torch.tensor(rounded, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    out = _ChannelLBP.apply(x, offsets, alpha, rounded, 1, EAGER)
    assert torch.equal(out, lbp_counts(x.detach(), rounded, 1))
    out.backward(g)

    xs, a = x.detach().clone().requires_grad_(), alpha.detach().clone().requires_grad_()
    padded = F.pad(xs, (2,) * 4, mode="replicate")

    def at(dx, dy):
        return padded[:, :, 2 + dy:8 + dy, 2 + dx:9 + dx]

    soft = torch.stack([torch.sigmoid((at(dx, dy) - xs) / a).sum(1) for dx, dy in rounded], 1)
    soft.backward(g)
    assert torch.allclose(x.grad, xs.grad) and torch.allclose(alpha.grad, a.grad)
    with torch.no_grad():
        for q, (dx, dy) in enumerate(rounded):
            s = torch.sigmoid((at(dx, dy) - xs) / a)
            slope = s * (1 - s) / a
            expected = [(g[:, q] * (slope * (at(dx + 1, dy) - at(dx - 1, dy)) / 2).sum(1)).sum(),
                        (g[:, q] * (slope * (at(dx, dy + 1) - at(dx, dy - 1)) / 2).sum(1)).sum()]
            assert torch.allclose(offsets.grad[q], torch.stack(expected)), q


def test_compiled_kernels_give_the_eager_values():
    """compile_kernels() (fit's --compile on, or auto on long runs): the same hard outputs exactly, the
    same gradients to float rounding."""
    import shutil

    if not (shutil.which("g++") or shutil.which("c++")):
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    x = torch.randn(4, 1, 12, 12)
    grads = []
    for compiled in (False, True):
        model = _model()
        model.train()
        if compiled:
            model.compile_kernels()
        out = model(x)
        out.square().sum().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                     if p.grad is not None}))
    (eager_out, eager_grads), (comp_out, comp_grads) = grads
    assert torch.allclose(eager_out, comp_out, atol=1e-5)
    assert eager_grads.keys() == comp_grads.keys() and "stages.1.lbp.offsets_raw" in eager_grads
    for name, g in eager_grads.items():
        assert torch.allclose(g, comp_grads[name], rtol=1e-4, atol=1e-6), name


def test_ring_offsets_read_every_neighbour():
    """paper_mnist_rp_cpu starts its offsets on the ring: every stage reads the 8 neighbours and no
    point rounds onto its pivot (the seed's Gaussian start wastes some on it)."""
    ring = {(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)}
    for lbp in _model("paper_mnist_rp_cpu").lbp_layers():
        assert set(lbp.rounded_offsets()) == ring
    assert any((0, 0) in lbp.rounded_offsets() for lbp in _model().lbp_layers())
