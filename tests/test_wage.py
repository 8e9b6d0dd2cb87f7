"""WAGE / NeuroSim V2.1 formulas on fixed inputs, and `cimtool qat --mode onchip` end to end."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cimtool import artifacts
from cimtool.devices.card import load_card
from cimtool.nn import wage


def test_get_param_a_reproduces_neurosim():
    assert wage.get_param_a(1.75) * 32 == pytest.approx(22.4666, abs=5e-4)  # A_LTP, max_level 32
    assert wage.get_param_a(1.46) * 32 == pytest.approx(27.1577, abs=5e-4)  # A_LTD
    assert wage.get_param_a(0.01) == pytest.approx(126.268958, rel=1e-6)  # first entry of the table
    assert np.isinf(wage.get_param_a(0.0))  # NL = 0: a linear device
    a = wage.get_param_a(np.array([0.5, 1.0, 2.0, 4.0, 8.0]))
    assert (np.diff(a) < 0).all()  # more nonlinear, smaller A
    # V2.1's GetParamA keeps NL's sign: A = sign(NL)·table(|NL|)
    assert wage.get_param_a(-4.88) == -wage.get_param_a(4.88)
    assert wage.nl_of_a(wage.get_param_a(-4.88)) == pytest.approx(-4.88)


def test_negative_nl_bends_the_curve_the_other_way():
    """An LTD with negative NL (NeuroSim's Ag:a-Si, -4.88) falls fastest near g_max; with positive NL
    the same depression falls fastest near g_min (one pulse along V2.1's curve, 32 pulses)."""
    def one_ltd_pulse(nl: float, w: float) -> float:
        a = torch.tensor(float(wage.get_param_a(nl)) * 32, dtype=torch.float64)
        b = wage.get_param_b(a, 32)
        origin = torch.tensor(w, dtype=torch.float64)
        return float(origin - wage.nonlinear_weight(wage.inv_nonlinear_weight(origin, a, b) - 1, a, b))

    for nl, faster_near_top in ((-4.88, True), (4.88, False)):
        near_top, near_bottom = one_ltd_pulse(nl, 0.9), one_ltd_pulse(nl, -0.9)
        assert (near_top > near_bottom) == faster_near_top, (nl, near_top, near_bottom)


def test_nonlinear_weight_round_trip_and_range():
    a = torch.tensor(22.4666, dtype=torch.float64)
    b = wage.get_param_b(a, 32)
    assert float(b) == pytest.approx(2 / (1 - np.exp(-32 / 22.4666)))
    p = torch.arange(0, 33, dtype=torch.float64)
    w = wage.nonlinear_weight(p, a, b)
    assert float(w[0]) == pytest.approx(-1) and float(w[-1]) == pytest.approx(1)
    assert torch.allclose(wage.inv_nonlinear_weight(w, a, b), p, atol=1e-9)


def test_quantizers_on_fixed_inputs():
    assert wage.S(5) == 16.0
    x = torch.tensor([-2.0, -0.97, -0.3, 0.0, 0.3, 0.97, 2.0])
    assert wage.C(x, 5).tolist() == pytest.approx([-15 / 16, -15 / 16, -0.3, 0, 0.3, 15 / 16, 15 / 16])
    assert wage.C(x, 1).tolist() == pytest.approx([-1, -0.97, -0.3, 0, 0.3, 0.97, 1])
    assert wage.Q(torch.tensor([0.3, -0.3, 0.6]), 3).tolist() == [0.25, -0.25, 0.5]
    assert wage.Q(x, 1).tolist() == [-1, -1, -1, 0, 1, 1, 1]
    assert wage.QW(torch.tensor([0.99]), 3).tolist() == [0.75]
    assert float(wage.shift(torch.tensor(0.3))) == 0.25 and float(wage.shift(torch.tensor(0.4))) == 0.5
    e = wage.QE(torch.tensor([0.003, -0.0015, 0.0]), 8)
    assert e.tolist() == [98 / 128, -49 / 128, 0.0]  # ÷ shift(0.003) = 2^-8: 0.768, -0.384 → Q(·, 8)


def test_zero_gradient_is_a_zero_update_not_an_assert():
    gen = torch.Generator().manual_seed(0)
    a = torch.full((4,), 22.4666)
    zero = torch.zeros(4)
    update = wage.QG(torch.zeros(4), 5, zero, 5, 1.0, a, a, 32, 32, gen)
    assert torch.equal(update, torch.zeros(4))
    assert torch.equal(wage.QE(zero, 8), zero)


def test_stochastic_rounding_is_unbiased():
    gen = torch.Generator().manual_seed(0)
    x = torch.full((200_000,), 0.3)
    r = wage.SR(x, gen)
    assert set(r.unique().tolist()) == {0.0, 1.0} and float(r.mean()) == pytest.approx(0.3, abs=0.005)


def test_qg_moves_along_the_ltp_curve():
    """origin 0, gradient −1 (lr 1, N 32): 16 LTP pulses along the NL-1.75 curve."""
    gen = torch.Generator().manual_seed(1)
    n = 100_000
    a_ltp = torch.full((n,), 22.4666, dtype=torch.float64)
    a_ltd = torch.full((n,), 27.1577, dtype=torch.float64)
    origin = torch.zeros(n, dtype=torch.float64)
    minus_one = torch.full((n,), -1.0, dtype=torch.float64)
    update = wage.QG(origin, 8, minus_one, 5, 1.0, a_ltp, a_ltd, 32, 32, gen)
    b = wage.get_param_b(a_ltp[:1], 32)
    p0 = wage.inv_nonlinear_weight(origin[:1], a_ltp[:1], b)
    moved = float(wage.C(wage.nonlinear_weight(p0 + 16, a_ltp[:1], b), 8)) - 0.0
    assert 0 < moved < 1  # LTP raises the weight, by less than 16 linear steps (16·2/32 = 1) near the top
    assert set((update * wage.S(5)).unique().tolist()) <= {-1.0, 0.0}  # SR of −moved ∈ (−1, 0)
    assert float(-update.mean()) * wage.S(5) == pytest.approx(moved, abs=0.01)
    linear = wage.QG(origin, 8, torch.full((n,), -1.0, dtype=torch.float64), 5, 1.0,
                     torch.full((n,), float("inf"), dtype=torch.float64), a_ltd, 32, 32, gen)
    assert float(-linear.mean()) * wage.S(5) == pytest.approx(1.0 - 1 / 128, abs=0.01)  # C(1, 8) = 127/128


def test_write_noise_only_on_updated_cells():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(10_000)
    grad = torch.zeros(10_000)
    grad[:5000] = 0.1
    out = wage.W(x, grad, 8, 0.035, gen)
    assert torch.equal(out[5000:], torch.zeros(5000))
    assert float(out[:5000].std()) == pytest.approx(0.07, rel=0.05)  # N(0, 2σ)


@pytest.fixture(scope="module")
def onchip(default_model, tmp_path_factory):
    from cimtool.cli import main

    out = tmp_path_factory.mktemp("onchip") / "q"
    with pytest.raises(SystemExit) as info:
        main(["qat", "--mode", "onchip", "--device", "ag_asi", "--model", str(default_model[0].path),
              "--out", str(out), "--quiet"])
    assert info.value.code in (0, None)
    return artifacts.load(out, "qmodel")


def test_onchip_with_ag_asi_reaches_080(onchip):
    s = onchip.summary
    assert s["onchip_accuracy"] >= 0.80  # the chip as trained (7-bit WAGE weights)
    assert s["test_accuracy"] >= 0.80  # those weights mapped onto the card's levels
    assert s["linear_device_accuracy"] >= 0.80  # reported beside it
    dist = pq.read_table(onchip.file("dist.parquet")).to_pandas()
    assert set(dist["kind"]) == {"weight", "delta"} and dist["epoch"].max() == 30
    assert all(len(c) == 40 for c in dist["counts"])
    metrics = pq.read_table(onchip.file("metrics.parquet")).to_pandas()
    assert len(metrics) == 30 and (metrics["phase"] == "onchip").all()


def test_onchip_needs_the_update_curve(cli, default_model, tmp_path):
    text = (load_card.__globals__["PRESET_DIR"] / "rram_seed003.toml").read_text()
    card = tmp_path / "no_update.toml"
    card.write_text(text.split("[update]")[0] + "[adc]" + text.split("[adc]")[1])
    assert cli("devices", "show", card).code == 0  # a fine card otherwise
    result = cli("qat", "--mode", "onchip", "--device", card, "--model", default_model[0].path,
                 "--out", tmp_path / "out" / "q")
    assert result.code == 2 and "needs the card's [update] section" in result.err
    assert not (tmp_path / "out").exists()


# --- --recipe v21: DNN+NeuroSim V2.1 train.py's loop, step for step ---------------------------------

# train.py's settings and inner loop, with the snapshot's own modules; CPU shims: its SR draws a
# torch.cuda.FloatTensor and train.py moves paramA with .cuda(), so both resolve to the CPU here.
_V21_STEPS = r"""
import sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
torch.cuda.FloatTensor = torch.FloatTensor
torch.Tensor.cuda = lambda self, *args, **kwargs: self
from modules.quantization_cpu_np_infer import QConv2d, QLinear
from utee import wage_quantizer, wage_util

case = np.load(sys.argv[2])
class args:
    wl_weight = 5; wl_grad = 5; max_level = 32; c2cVari = 0.003; d2dVari = 0.0
    nonlinearityLTP = 1.75; nonlinearityLTD = 1.46
gamma, alpha, grad_scale = 0.9, 0.1, 1
model = torch.nn.Sequential(
    QConv2d(1, 4, 3, padding=1, wl_activate=8, wl_error=8, wl_weight=args.wl_weight, name="Conv0_"),
    torch.nn.ReLU(), torch.nn.Flatten(),
    QLinear(144, 10, wl_activate=-1, wl_error=8, wl_weight=args.wl_weight, name="FC3_"))
for name, param in model.named_parameters():
    param.data = torch.from_numpy(case[name])
for layer in (model[0], model[3]):
    layer.scale = float(case["scale"])
optimizer = torch.optim.SGD(model.parameters(), lr=1)
out = {}
paramALTP = {}
paramALTD = {}
k=0
for layer in list(model.parameters())[::-1]:
    d2dVariation = torch.normal(torch.zeros_like(layer), args.d2dVari*torch.ones_like(layer))
    NL_LTP = torch.ones_like(layer)*args.nonlinearityLTP+d2dVariation
    NL_LTD = torch.ones_like(layer)*args.nonlinearityLTD+d2dVariation
    paramALTP[k] = wage_quantizer.GetParamA(NL_LTP.cpu().numpy())*args.max_level
    paramALTD[k] = wage_quantizer.GetParamA(NL_LTD.cpu().numpy())*args.max_level
    k=k+1
velocity = {}
i=0
for layer in list(model.parameters())[::-1]:
    velocity[i] = torch.zeros_like(layer)
    i=i+1
torch.manual_seed(int(case["seed"]))
for batch_idx in range(2):
    data, target = torch.from_numpy(case[f"x{batch_idx}"]), torch.from_numpy(case[f"y{batch_idx}"])
    optimizer.zero_grad()
    output = model(data)
    loss = wage_util.SSE(output,target)

    loss.backward()
    j=0
    for name, param in list(model.named_parameters())[::-1]:
        velocity[j] = gamma * velocity[j] + alpha * param.grad.data
        param.grad.data = velocity[j]
        param.grad.data = wage_quantizer.QG(param.data,args.wl_weight,param.grad.data,args.wl_grad,grad_scale,
                    torch.from_numpy(paramALTP[j]).cuda(), torch.from_numpy(paramALTD[j]).cuda(),
                    args.max_level, args.max_level)
        j=j+1

    optimizer.step()

    for name, param in list(model.named_parameters())[::-1]:
        param.data = wage_quantizer.W(param.data,param.grad.data,args.wl_weight,args.c2cVari)

    out[f"loss{batch_idx}"] = loss.detach().numpy()
    for j, (name, param) in enumerate(list(model.named_parameters())[::-1]):
        out[f"{batch_idx}:{name}"] = param.data.numpy().copy()
        out[f"{batch_idx}:v:{name}"] = velocity[j].numpy().copy()
oldWeight = {}
k = 0
for name, param in list(model.named_parameters()):
    oldWeight[k] = param.data + param.grad.data
    out[f"old:{name}"] = oldWeight[k].numpy()
    k = k+1
for k, (name, _) in enumerate(list(model.named_parameters())[::-1]):
    out[f"a_ltp:{name}"], out[f"a_ltd:{name}"] = paramALTP[k], paramALTD[k]
np.savez(sys.argv[3], **out)
"""


def _v21_training():
    import os
    from pathlib import Path

    snapshots = os.environ.get("CIMTOOL_NEUROSIM_SNAPSHOTS")
    if not snapshots:
        pytest.skip("CIMTOOL_NEUROSIM_SNAPSHOTS is not set (the DNN+NeuroSim release snapshots)")
    path = Path(snapshots) / "DNN_NeuroSim_V2.1" / "Training_pytorch"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


def _tiny_cnn(bias: bool = False) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, bias=bias), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(144, 10, bias=bias))


def _trainer(net, recipe: str, **overrides):
    from cimtool.train.onchip import OnchipConfig, OnchipTrainer

    # train.py's settings: 5-bit weights and gradients, 32 levels, NL 1.75 / 1.46, c2cVari 0.003
    cfg = OnchipConfig(lr=1.0, weight_bits=5, grad_bits=5, nl_ltp=1.75, nl_ltd=1.46, pulses_ltp=32,
                       pulses_ltd=32, c2c=0.003, recipe=recipe, **overrides)
    return OnchipTrainer(net, ["0", "3"], {"0": 0.5, "3": 0.5}, cfg)


def _case(seed: int = 7) -> dict[str, np.ndarray]:
    """Device weights in C's range, two mini-batches of 8 images 6×6 in [0, 0.5], and the RNG seed."""
    rng = np.random.default_rng(seed)
    case = {"0.weight": rng.uniform(-0.9, 0.9, (4, 1, 3, 3)), "3.weight": rng.uniform(-0.9, 0.9, (10, 144))}
    case = {k: v.astype(np.float32) for k, v in case.items()}
    for b in range(2):
        case[f"x{b}"] = rng.uniform(0, 0.5, (8, 1, 6, 6)).astype(np.float32)
        case[f"y{b}"] = rng.integers(0, 10, 8)
    return {**case, "seed": np.array(seed), "scale": np.array(2.0)}  # V2.1's layer scale = 1/α


def test_v21_recipe_steps_exactly_as_v21_train_py(tmp_path):
    """Two mini-batches of a tiny CNN (conv 1→4, fc 144→10, no biases) through V2.1 train.py's own
    inner loop (the snapshot's QConv2d/QLinear, SSE, QG, W; RNG seeded before the loop) and through
    ``--recipe v21`` on the same weights, data, A tables and seed: the same weights, velocity (which
    QG renormalises in place), loss and per-epoch oldWeight = param + grad."""
    import subprocess
    import sys

    checkout = _v21_training()
    case = _case()
    np.savez(tmp_path / "case.npz", **case)
    proc = subprocess.run([sys.executable, "-c", _V21_STEPS, str(checkout), str(tmp_path / "case.npz"),
                           str(tmp_path / "ref.npz")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref = np.load(tmp_path / "ref.npz")

    net = _tiny_cnn()
    with torch.no_grad():
        for name, param in net.named_parameters():
            param.copy_(torch.from_numpy(case[name]) / float(case["scale"]))  # α·w
    trainer = _trainer(net, "v21")
    for name in ("0", "3"):  # V2.1's GetParamA table (cimtool solves NL for A: equal to 1e-6)
        trainer.a_ltp[name] = torch.from_numpy(ref[f"a_ltp:{name}.weight"]).float()
        trainer.a_ltd[name] = torch.from_numpy(ref[f"a_ltd:{name}.weight"]).float()
    trainer.gen.manual_seed(int(case["seed"]))
    trainer.start_epoch(1)
    for b in range(2):
        loss, _ = trainer.step(torch.from_numpy(case[f"x{b}"]), torch.from_numpy(case[f"y{b}"]))
        assert loss == float(ref[f"loss{b}"])
        for name in ("0", "3"):
            key = f"{name}.weight"
            assert torch.equal(trainer.params[name].detach(), torch.from_numpy(ref[f"{b}:{key}"])), (b, name)
            assert torch.equal(trainer.velocity[name], torch.from_numpy(ref[f"{b}:v:{key}"])), (b, name)
    for name in ("0", "3"):
        assert torch.equal(trainer.old[name], torch.from_numpy(ref[f"old:{name}.weight"]))
    for name in ("0.weight", "3.weight"):
        changed = float((ref[f"1:{name}"] != case[name]).mean())
        assert 0 < changed < 1, name  # the steps moved some weights, not all


_V21_INIT = r"""
import sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from utee import wage_initializer
out = {}
torch.manual_seed(3)
for name, shape, bits in (("conv", (16, 8, 3, 3), 5), ("fc", (10, 64), 7), ("wide", (10, 4096), 5)):
    weight = torch.empty(shape)
    out[f"scale:{name}"] = np.array(wage_initializer.wage_init_(weight, bits, factor=1.0))
    out[name] = weight.numpy()
np.savez(sys.argv[2], **out)
"""


def test_v21_recipe_starts_from_v21s_weights_and_layer_scales(tmp_path):
    """``wage_init`` draws what V2.1's QConv2d/QLinear start from (wage_init_, factor 1.0), with the
    layer scale α = 1/scale it divides their outputs by, from the same global seed."""
    import subprocess
    import sys

    from cimtool.train.onchip import wage_init

    script = tmp_path / "init.py"
    script.write_text(_V21_INIT)
    subprocess.run([sys.executable, str(script), str(_v21_training()), str(tmp_path / "ref.npz")],
                   check=True, capture_output=True)
    ref = np.load(tmp_path / "ref.npz")
    layers = (("conv", torch.nn.Conv2d(8, 16, 3), 5), ("fc", torch.nn.Linear(64, 10), 7),
              ("wide", torch.nn.Linear(4096, 10), 5))
    torch.manual_seed(3)
    for name, module, bits in layers:
        alpha = wage_init(module, bits)
        assert alpha == 1 / float(ref[f"scale:{name}"])
        assert np.array_equal(module.weight.detach().numpy() / alpha, ref[name])  # device units


def test_default_recipe_differs_from_v21_in_the_documented_ways():
    """One step of each recipe from the same weights and batch (with biases). The default: the
    batch's summed cross-entropy, velocity α_m·∂L/∂w, biases trained, old weight = before the update,
    layer outputs as they are, velocity kept across epochs. v21: SSE, velocity renormalised
    (max|v| = 2^±½), biases 0, old weight = w + update, hidden outputs rounded to 1/128 in
    ±127/128, velocity reset every epoch."""
    from torch.nn import functional as F

    from cimtool.train.onchip import RECIPES, sse

    case = _case()
    x, y = torch.from_numpy(case["x0"]), torch.from_numpy(case["y0"])
    for recipe in RECIPES:
        torch.manual_seed(0)
        net = _tiny_cnn(bias=True)
        trainer = _trainer(net, recipe)
        trainer.start_epoch(1)
        w = {n: p.detach().clone() for n, p in trainer.params.items()}
        biases = [net[0].bias.detach().clone(), net[3].bias.detach().clone()]
        with torch.no_grad():
            logits, hidden = net(x), net[0](x)
        loss, _ = trainer.step(x, y)
        after = {n: p.detach() for n, p in trainer.params.items()}
        if recipe == "cimtool":
            assert loss == float(F.cross_entropy(logits, y)) * len(y)
            for name in after:
                assert torch.equal(trainer.velocity[name], 0.1 * trainer.params[name].grad)
                assert torch.equal(trainer.old[name], w[name])
            assert not torch.equal(net[3].bias, biases[1]) and min(float(b.abs().min()) for b in biases) > 0
            assert not torch.equal(hidden, wage.Q(hidden, 8))
        else:
            assert loss == float(sse(logits, y, "sum"))
            for name in after:
                assert 2 ** -0.5 <= float(trainer.velocity[name].abs().max()) <= 2 ** 0.5
                update = trainer.deltas[name][-1].view_as(after[name])
                assert torch.equal(trainer.old[name], after[name] + update)
            assert not net[0].bias.any() and not net[3].bias.any()
            assert torch.equal(hidden, wage.Q(hidden, 8)) and float(hidden.abs().max()) <= 127 / 128
        trainer.start_epoch(2)
        kept = all(bool(v.any()) for v in trainer.velocity.values())
        assert kept == (recipe == "cimtool")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trainer_draws_on_the_nets_device():
    trainer = _trainer(_tiny_cnn(bias=True).cuda(), "v21")
    assert trainer.gen.device.type == "cuda"
    case = _case()
    trainer.step(torch.from_numpy(case["x0"]), torch.from_numpy(case["y0"]))
    assert all(p.device.type == "cuda" for p in trainer.params.values())


def test_v21_recipe_end_to_end_is_reproducible(cli, default_model, tmp_path):
    """`qat --mode onchip --recipe v21`: QG gradient scale 1 (V2.1's --grad_scale), biases 0, and the
    same bytes from the same seed."""
    from safetensors.numpy import load_file

    from cimtool.models.io import weights_before_update

    runs = []
    for name in ("a", "b"):
        result = cli("qat", "--mode", "onchip", "--recipe", "v21", "--device", "ag_asi", "--epochs", "2",
                     "--trials", "2", "--model", default_model[0].path, "--out", tmp_path / name, "--quiet")
        assert result.code == 0, result.err
        runs.append(artifacts.load(tmp_path / name, "qmodel"))
    assert runs[0].params["recipe"] == "v21" and runs[0].params["lr"] == 1.0
    metrics = pq.read_table(runs[0].file("metrics.parquet")).to_pandas()
    assert list(metrics["lr"]) == [1.0, 1.0]
    assert not load_file(str(runs[0].file("weights.safetensors")))["head.0.bias"].any()
    assert "V2.1's oldWeight" in weights_before_update(runs[0])[1]
    for name in ("weights.safetensors", "metrics.parquet", "dist.parquet", "onchip_epochs.safetensors"):
        assert runs[0].file(name).read_bytes() == runs[1].file(name).read_bytes(), name


def test_v21_init_recipe_trains_on_v21s_layer_scale(cli, default_model, tmp_path):
    """`--recipe v21_init`: the head (fan_in 64, 7-bit weights) starts as V2.1's layer would, scale 2,
    so its realised weights are α·QW(w) = k/128 with |k| < 64."""
    from safetensors.numpy import load_file

    result = cli("qat", "--mode", "onchip", "--recipe", "v21_init", "--device", "ag_asi", "--epochs", "1",
                 "--trials", "1", "--model", default_model[0].path, "--out", tmp_path / "q", "--quiet")
    assert result.code == 0, result.err
    w = load_file(str(artifacts.load(tmp_path / "q", "qmodel").file("weights.safetensors")))["head.0.weight"]
    assert np.abs(w).max() < 0.5 and np.array_equal(w * 128, np.round(w * 128))


def test_grad_scale_is_divided_by_8_after_each_decay_epoch():
    """V2.1 train.py: ``if epoch in decreasing_lr: grad_scale /= 8`` at the start of epoch (from 0)
    200 and 250, i.e. after 200 and 250 epochs."""
    from cimtool.train.onchip import OnchipConfig, grad_scale

    cfg = OnchipConfig(lr=1.0, lr_decay_epochs=(2, 3))
    assert [grad_scale(cfg, epoch) for epoch in range(1, 6)] == [1.0, 1.0, 1 / 8, 1 / 64, 1 / 64]
    default = OnchipConfig(lr=0.25)  # decreasing_lr 200,250
    assert grad_scale(default, 200) == 0.25 and grad_scale(default, 201) == 0.25 / 8


def test_onchip_writes_draw_the_cards_variation_model():
    """A range card's writes are V2.1's W (N(0, 2σ) over [−1, 1]); a lognormal card's draw σ of ln G
    on the written cells only, G = g_min + (w + 1)/2·(g_max − g_min)."""
    from cimtool.train.onchip import OnchipConfig, OnchipTrainer

    target, update = torch.zeros(200_000), torch.ones(200_000)
    update[:1000] = 0  # cells this step does not write
    for model in ("range", "lognormal"):
        cfg = OnchipConfig(weight_bits=7, c2c=0.05, variation_model=model, g_ratio=0.1, seed=5)
        trainer = OnchipTrainer(torch.nn.Sequential(torch.nn.Linear(4, 4)), ["0"], {"0": 1.0}, cfg)
        written = trainer._written(target, update)
        assert torch.equal(written[:1000], target[:1000])
        if model == "range":
            expected = wage.W(target, update, 7, 0.05, torch.Generator().manual_seed(5))
            assert torch.equal(written, expected)
        else:
            g = 0.1 + (written[1000:] + 1) / 2 * 0.9  # back to G/g_max
            assert float(torch.log(g).std()) == pytest.approx(0.05, rel=0.01)
            assert float(torch.log(g).mean()) == pytest.approx(np.log(0.55), abs=1e-3)
