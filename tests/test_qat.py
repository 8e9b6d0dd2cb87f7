"""`cimtool qat --mode ptq|qat|noise`: device-level forward pass, STE, and the accuracy it buys."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cimtool import artifacts
from cimtool.devices.card import load_card
from cimtool.devices.mapping import card_grid, crossbar_matrix, level_grid, map_matrix
from cimtool.nn.quant import DeviceWeight, NoiseSpec


@pytest.mark.parametrize("scaling", ["shared_max", "per_column", "percentile"])
@pytest.mark.parametrize("normalize", ["gmax", "range"])
@pytest.mark.parametrize("shape", [(10, 64), (8, 3, 3, 3)])
def test_device_weight_equals_the_mapping(scaling, normalize, shape):
    grid = level_grid(1e-9, 2e-8, 16, "log")
    w = torch.randn(*shape, dtype=torch.float64)
    q = DeviceWeight(grid, scaling, 95.0, normalize)(w)
    lm = map_matrix("t", crossbar_matrix(w.numpy()), grid, scaling, 95.0, normalize)
    expected = lm.effective_weight().T.reshape(shape)
    assert np.allclose(q.detach().numpy(), expected, rtol=0, atol=1e-12)


def test_straight_through_gradient_and_noise_only_in_training():
    grid = card_grid(load_card("rram_seed003"), 4)
    w = torch.randn(10, 64, requires_grad=True)
    x = torch.randn(32, 64)
    dw = DeviceWeight(grid)
    q = dw(w)
    (x @ q.T).square().sum().backward()
    q_detached = q.detach().requires_grad_(True)
    (x @ q_detached.T).square().sum().backward()
    assert torch.allclose(w.grad, q_detached.grad)  # d/dW = d/dW_q (STE)
    noisy = DeviceWeight(grid, noise=NoiseSpec(0.1, 0.02, "lognormal"))
    noisy.train()
    assert not torch.equal(noisy(w), noisy(w))
    noisy.eval()
    assert torch.equal(noisy(w), dw(w))


@pytest.fixture(scope="module")
def qmodels(default_model, tmp_path_factory):
    from cimtool.cli import main

    art, _, _ = default_model
    root = tmp_path_factory.mktemp("qat")
    out = {}
    for mode in ("ptq", "qat", "noise"):
        with pytest.raises(SystemExit) as info:
            main(["qat", "--mode", mode, "--model", str(art.path), "--weight-bits", "4",
                  "--out", str(root / mode), "--quiet"])
        assert info.value.code in (0, None)
        out[mode] = artifacts.load(root / mode, "qmodel")
    return out


def test_ptq_equals_the_mapped_ideal_array(qmodels, default_model):
    s = qmodels["ptq"].summary
    assert s["float_accuracy"] == pytest.approx(default_model[0].summary["test_accuracy"])
    assert s["ptq_accuracy"] == s["test_accuracy"] == pytest.approx(0.878, abs=0.002)  # map-weights' figure
    assert pq.read_table(qmodels["ptq"].file("metrics.parquet")).num_rows == 0


def test_qat_recovers_the_ptq_drop(qmodels):
    s = qmodels["qat"].summary
    drop = s["float_accuracy"] - s["ptq_accuracy"]
    assert drop > 0.01
    within_a_point = s["float_accuracy"] - s["test_accuracy"] <= 0.01
    assert within_a_point or s["test_accuracy"] - s["ptq_accuracy"] >= drop / 2
    metrics = pq.read_table(qmodels["qat"].file("metrics.parquet")).to_pandas()
    assert len(metrics) == 30 and set(metrics["phase"]) == {"qat"}


def test_noise_aware_model_beats_the_plain_one_on_the_simulated_array(qmodels):
    s = qmodels["noise"].summary
    assert s["trials"] >= 10
    assert s["nonideal_mean"] > s["nonideal_plain_mean"] + (s["nonideal_std"] + s["nonideal_plain_std"]) / 2
    table = pq.read_table(qmodels["noise"].file("evaluation.parquet")).to_pandas()
    ours = table[(table["model"] == "noise") & (table["condition"] == "nonideal_array")]
    assert len(ours) == 10 and ours["accuracy"].mean() == pytest.approx(s["nonideal_mean"])


def test_qmodel_is_reproducible_and_maps(qmodels, cli, tmp_path):
    art = qmodels["qat"]
    source = art.manifest["inputs"][0]["path"]
    result = cli("qat", "--mode", "qat", "--model", source, "--weight-bits", "4", "--out", tmp_path / "again",
                 "--quiet")
    assert result.code == 0, result.err
    for name in ("weights.safetensors", "metrics.parquet", "evaluation.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == art.file(name).read_bytes(), name
    mapped = cli("map-weights", "--model", art.path, "--weight-bits", "4", "--evaluate", "--trials", "2",
                 "--out", tmp_path / "cmap", "--json", "--quiet")
    assert mapped.code == 0, mapped.err
    ideal = json.loads(mapped.out)["summary"]["accuracy_mapped_ideal"]
    assert ideal == pytest.approx(art.summary["test_accuracy"])


@pytest.mark.parametrize("args, pattern", [
    (["--mode", "magic"], "unknown --mode 'magic'"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--noise-scale", "-1"], "--noise-scale must be >= 0"),
    (["--weight-bits", "0"], "--weight-bits must be in 1..15"),
    (["--device", "unobtainium"], "unknown --device 'unobtainium'"),
    (["--mode", "onchip", "--recipe", "v22"], "unknown --recipe 'v22' (choose from: cimtool, v21, v21_init)"),
    (["--mode", "qat", "--recipe", "v21", "--record-every", "2"],
     "--record-every, --recipe: options of --mode onchip, not of --mode qat"),
    (["--mode", "onchip", "--lr-decay-epochs", "200,0"], "--lr-decay-epochs must be at least 1"),
])
def test_bad_input(cli, default_model, tmp_path, args, pattern):
    result = cli("qat", "--model", default_model[0].path, "--out", tmp_path / "out" / "q", *args)
    assert result.code == 2 and result.err.count("\n") == 1 and pattern in result.err, result.err
    assert not (tmp_path / "out").exists()
