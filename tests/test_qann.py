"""The trained quantized-ANN twin (`calibrate-threshold --train-epochs`): LSQ's forward and
gradients on fixed inputs, the exact SNN it converts to, byte-identical reruns, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from cimtool import artifacts
from cimtool.cli import main
from cimtool.nn.qann import LevelQuantizer, PooledQuantizer, QuantizedTwin
from cimtool.nn.snn import quantize


def test_level_quantizer_is_the_neurons_activation_with_lsq_gradients():
    x = torch.tensor([[-0.7, 0.2, 0.74, 1.3, 9.0]], requires_grad=True)
    q = LevelQuantizer(0.5, 0, 3)
    y = q(x)
    assert y.tolist() == (0.5 * quantize(x.detach() / 0.5, 0, 3)).tolist()  # the ST-BIF twin's value
    y.sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 1.0, 1.0, 0.0]]  # straight through inside the levels only
    inside = [0.0, round(0.4) - 0.4, math.floor(1.48 + 0.5) - 1.48, math.floor(2.6 + 0.5) - 2.6, 3.0]
    g = 1 / math.sqrt(5 * 3)  # LSQ: 1/sqrt(N·p_max)
    assert float(q.theta.grad) == pytest.approx(g * sum(inside))  # x = -0.7 sits at n_min = 0: adds 0


@pytest.mark.parametrize("p_max", [15, 4095, 32767])
def test_threshold_gradient_keeps_its_precision_at_many_levels(p_max):
    """LSQ's θ gradient against a float64 sum, all inputs inside the levels, where the result is
    small (a form that subtracts two sums |q| times larger than it was off by 84 % at 4095)."""
    torch.manual_seed(1)
    theta, shape = 0.01, (64, 8, 16, 16)
    x = (torch.rand(shape) * 0.5 + 0.25) * p_max * theta
    grad = torch.randn(shape)
    q = LevelQuantizer(theta, 0, p_max)
    q(x).backward(grad)
    v = x / q.theta.detach()  # the forward's float32 v and levels; the reference sums in float64
    level = torch.floor(v.clamp(0, p_max) + 0.5)
    inside = (v > 0) & (v < p_max)  # strictly: the straight-through region
    exact = float((grad.double() * torch.where(inside, level - v, level).double()).sum())
    g = 1 / math.sqrt(8 * 16 * 16 * p_max)
    assert float(q.theta.grad) == pytest.approx(g * exact, rel=1e-4)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 3))

    def snn_parts(self):
        return (lambda x: x), list(self.body)

    def forward(self, x):
        return self.body(x)


def test_twin_swaps_the_relus_and_puts_them_back():
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.randn(16, 4)
    before = model(x)
    twin = QuantizedTwin(model, [0.25, 1.0], 0, 3)
    assert isinstance(model.body[1], LevelQuantizer)
    hidden = model.body[0](x)
    expected = model.body[2](0.25 * quantize(hidden / 0.25, 0, 3))
    assert torch.allclose(twin(x), expected)
    released, thetas = twin.release()
    assert isinstance(released.body[1], nn.ReLU) and thetas == [0.25]
    assert torch.equal(released(x), before)


class _Pooled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten())

    def snn_parts(self):
        return (lambda x: x), list(self.body)

    def forward(self, x):
        return self.body(x)


def test_a_neuron_layer_before_a_max_pool_is_quantized_after_it():
    """Same values as quantize-then-pool; where each window's levels differ, the same gradients
    (x inside and outside the levels: 0 − 0.4 and 15 + 0.4 clip)."""
    torch.manual_seed(0)
    theta, p_max = 0.5, 15
    levels = torch.stack([torch.randperm(16).float() for _ in range(6)]).reshape(2, 3, 4, 4)
    x = (theta * (levels + 0.8 * torch.rand(levels.shape) - 0.4)).requires_grad_()
    upstream = torch.randn(2, 12)
    model = _Pooled()
    relu, pool = model.body[0], model.body[1]
    twin = QuantizedTwin(model, [theta], 0, p_max)
    assert isinstance(model.body[1], PooledQuantizer) and isinstance(model.body[0], nn.Identity)
    (twin(x) * upstream).sum().backward()

    reference = LevelQuantizer(theta, 0, p_max)
    x_ref = x.detach().clone().requires_grad_()
    y_ref = nn.functional.max_pool2d(reference(x_ref), 2).flatten(1)
    (y_ref * upstream).sum().backward()
    assert torch.equal(twin(x), y_ref)
    assert torch.equal(x.grad, x_ref.grad) and x.grad.count_nonzero() > 0
    assert float(twin.quantizers[0].theta.grad) == pytest.approx(float(reference.theta.grad), rel=1e-5)
    released, _ = twin.release()
    assert released.body[0] is relu and released.body[1] is pool


@pytest.fixture(scope="module")
def digits_cnn(tmp_path_factory):
    out = tmp_path_factory.mktemp("qann") / "cnn"
    with pytest.raises(SystemExit) as done:
        main(["train-ann", "--dataset", "digits", "--model", "mnist_cnn", "--epochs", "8", "--out", str(out),
              "--quiet"])
    assert done.value.code == 0
    return out


def _calibrate(out, model, *extra: str, capsys) -> dict:
    with pytest.raises(SystemExit) as done:
        main(["calibrate-threshold", "--model", str(model), "--levels", "4", "--percentiles", "99.9",
              "--ratios", "0.8,1.0", "--timesteps", "8", "--out", str(out), "--json", "--quiet", *extra])
    assert done.value.code == 0
    return json.loads(capsys.readouterr().out)["summary"]


def test_trained_twin_converts_exactly_and_beats_converted_only(digits_cnn, tmp_path, capsys):
    converted = _calibrate(tmp_path / "converted", digits_cnn, capsys=capsys)
    trained = _calibrate(tmp_path / "trained", digits_cnn, "--train-epochs", "4", capsys=capsys)
    assert trained["converted_test_accuracy"] == converted["test_accuracy"]
    assert trained["test_accuracy"] > converted["test_accuracy"]  # 4 levels: training the twin pays
    assert trained["equivalence_agreement"] == 1.0 and trained["equivalence_agreement_test"] == 1.0
    assert trained["thresholds"] != converted["thresholds"]  # learned, not the calibrated ones
    art = artifacts.load(tmp_path / "trained", "snn")
    info = json.loads(art.file("snn.json").read_text())
    assert info["weights"] == "weights.safetensors" and info["trained"]["epochs"] == 4
    # the SNN artifact opens with the twin's weights (what sweep and profile get)
    from cimtool.nn.snn_spec import open_snn

    opened = open_snn(tmp_path / "trained")
    from safetensors.torch import load_file

    stored = load_file(str(art.file("weights.safetensors")))
    assert all(torch.equal(v, stored[k]) for k, v in opened.model.state_dict().items())
    # the report's accuracy-vs-levels section: float, converted only, trained twin
    with pytest.raises(SystemExit) as done:
        main(["report", str(tmp_path / "converted"), str(tmp_path / "trained"), "--out", str(tmp_path / "r"),
              "--quiet"])
    assert done.value.code == 0
    capsys.readouterr()
    md = (tmp_path / "r" / "report.md").read_text()
    section = md.split("Spiking networks: accuracy vs levels")[1].split("\n## ")[0]
    assert f"| 4 | {trained['ann_test_accuracy']:.4f} | {converted['test_accuracy']:.4f} | " \
           f"{trained['test_accuracy']:.4f} |" in section and "levels-" in section
    again = _calibrate(tmp_path / "again", digits_cnn, "--train-epochs", "4", capsys=capsys)
    assert again["thresholds"] == trained["thresholds"]
    for name in ("snn.json", "weights.safetensors", "twin_metrics.parquet", "thresholds.parquet"):
        assert (tmp_path / "trained" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_bad_input(default_model, digits_cnn, tmp_path, capsys):
    cases = [([str(default_model[0].path), "--train-epochs", "1"], "no ReLU"),
             ([str(digits_cnn), "--levels", "1"], "--levels"),
             ([str(digits_cnn), "--neuron", "if", "--bounds", "symmetric", "--train-epochs", "1"],
              "negative"),
             ([str(digits_cnn), "--train-epochs", "-1"], "--train-epochs")]
    for args, expected in cases:
        out = tmp_path / "bad"
        with pytest.raises(SystemExit) as done:
            main(["calibrate-threshold", "--model", *args, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert done.value.code == 2 and expected in err and len(err.splitlines()) == 1, (args, err)
        assert not out.exists() and not list(tmp_path.glob("bad*"))


def test_bptt_forward_is_the_spiking_network(digits_cnn):
    """The differentiable run (profile's spiking training step) computes what the spiking network
    does at fixed T: the output layer's total input, θ·(V + count − 1/2) of the inference run."""
    from dataclasses import replace

    from cimtool.models.io import model_splits, open_model
    from cimtool.nn.snn import SpikingNetwork
    from cimtool.nn.snn_spec import default_spec
    from cimtool.nn.snn_train import spiking_logits

    source, model, arch = open_model(digits_cnn)
    data = model_splits(source, None)
    spec = default_spec(model, arch, data["train"])
    fixed = replace(spec.config, stop="fixed", timesteps=8)
    net = SpikingNetwork(model, spec.thetas, fixed, spec.input_range)
    x = data["test"].x[:64]
    run = net.run(x, 8)
    total = net.thetas[-1] * (run.v + run.count - 0.5)
    logits = spiking_logits(net, x, 8)
    assert torch.allclose(logits, total, atol=1e-4)
    logits.sum().backward()  # a gradient reaches the first layer through every step
    assert float(net.model.features[0].weight.grad.abs().sum()) > 0
