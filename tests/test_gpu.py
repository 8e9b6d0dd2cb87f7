"""CUDA paths (bf16 autocast, torch.compile on GPU). Skipped cleanly on machines without CUDA."""

import json

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_autocast_is_bf16_on_cuda():
    from cimtool.train.loop import autocast

    layer = torch.nn.Linear(8, 4).cuda()
    with autocast(torch.device("cuda")):
        out = layer(torch.rand(2, 8, device="cuda"))
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("args, floor", [
    (["--model", "mnist_cnn", "--epochs", "4"], 0.95),
    (["--model", "organic_cnn", "--front-end", "optical", "--epochs", "4"], 0.9),
    ([], 0.88),
])
def test_train_ann_on_cuda_compiled(cli, tmp_path, args, floor):
    result = cli("train-ann", "--torch-device", "cuda", "--out", tmp_path / "m", "--quiet", "--json", *args)
    assert result.code == 0, result.err
    summary = json.loads(result.out)["summary"]
    assert summary["compiled"] is True and summary["torch_device"] == "cuda"
    assert summary["test_accuracy"] >= floor


# --- every computing stage on CUDA, compared with the same stage on the CPU ---------------------

def _summary(cli, *args):
    result = cli(*args, "--quiet", "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)["summary"]


def test_array_simulator_on_cuda_matches_cpu_within_monte_carlo_error(cli, default_model, tmp_path):
    art, _, _ = default_model
    runs = {dev: _summary(cli, "map-weights", "--model", art.path, "--weight-bits", "4", "--evaluate",
                          "--trials", "10", "--torch-device", dev, "--out", tmp_path / dev)
            for dev in ("cpu", "cuda")}
    cpu, gpu = runs["cpu"], runs["cuda"]
    assert gpu["torch_device"] == "cuda" and cpu["torch_device"] == "cpu"
    assert abs(gpu["accuracy_mapped_ideal"] - cpu["accuracy_mapped_ideal"]) <= 0.002
    error = 3 * ((cpu["accuracy_nonideal_std"] ** 2 + gpu["accuracy_nonideal_std"] ** 2) / 10) ** 0.5
    assert abs(gpu["accuracy_nonideal_mean"] - cpu["accuracy_nonideal_mean"]) <= max(error, 0.005)


def test_spiking_network_and_sweep_on_cuda(cli, default_model, tmp_path):
    art, _, _ = default_model
    snn = {dev: _summary(cli, "calibrate-threshold", "--model", art.path, "--ratios", "1", "--percentiles",
                         "99.9", "--torch-device", dev, "--out", tmp_path / f"snn-{dev}")
           for dev in ("cpu", "cuda")}
    assert snn["cuda"]["torch_device"] == "cuda"
    assert abs(snn["cuda"]["test_accuracy"] - snn["cpu"]["test_accuracy"]) <= 0.003
    assert snn["cuda"]["equivalence_agreement"] >= 0.999
    sweep = _summary(cli, "sweep", "--model", tmp_path / "snn-cuda", "--scheme", "B", "--weight-bits", "4",
                     "--adc-bits", "6", "--timesteps", "8", "--trials", "2", "--torch-device", "cuda",
                     "--out", tmp_path / "sweep")
    assert sweep["torch_device"] == "cuda" and sweep["best"]["val_mean"] >= 0.8


def test_qat_evaluation_and_profile_on_cuda(cli, default_model, tmp_path):
    art, _, _ = default_model
    qat = _summary(cli, "qat", "--model", art.path, "--mode", "ptq", "--weight-bits", "4", "--trials", "3",
                   "--torch-device", "cuda", "--out", tmp_path / "q")
    assert qat["torch_device"] == "cuda" and qat["nonideal_plain_mean"] >= 0.8
    prof = _summary(cli, "profile", "--model", art.path, "--batch-sizes", "16,256", "--repeats", "3",
                    "--modes", "ann_eager,snn,one_pass", "--torch-device", "cuda", "--out", tmp_path / "p")
    assert prof["torch_device"] == "cuda" and prof["snn_device"] == "cuda"


def test_organic_updates_draw_their_random_numbers_on_cuda(cli, tmp_path):
    """Stochastic rounding, write noise and C2C on the GPU, from generators on the GPU; a resumable
    layer state; and train-ann with pulse updates on CUDA."""
    from cimtool.nn import wage
    from cimtool.nn.organic import OrganicLinear, PulseCurve, Synapse

    gen = torch.Generator("cuda").manual_seed(0)
    x = torch.full((100_000,), 0.25, device="cuda")
    assert float(wage.SR(x, gen).mean()) == pytest.approx(0.25, abs=0.01)
    assert wage.W(x, torch.ones_like(x), 8, 0.035, gen).device.type == "cuda"
    layer = OrganicLinear(8, 4, Synapse(1e-10, 1e-8, 1.0, 0.05)).cuda().train()
    layer.curve = PulseCurve(1.5, -2.0, 50, 50)
    layer(torch.rand(2, 8, device="cuda")).sum().backward()
    state = {k: v.clone() for k, v in layer.train_state().items()}
    with torch.no_grad():
        layer.weight.sub_(0.1 * layer.weight.grad.sign())
    request = layer.weight.detach().clone()
    layer.after_step()
    assert layer.generator().device.type == "cuda" and layer.devices.device.type == "cuda"
    first = layer.weight.detach().clone()
    layer.load_train_state(state)  # back to before the step: the same pulses and noise again
    with torch.no_grad():
        layer.weight.copy_(request)
    layer.after_step()
    assert torch.equal(layer.weight, first)
    result = cli("train-ann", "--torch-device", "cuda", "--model", "organic_cnn", "--front-end", "optical",
                 "--organic-update", "pulses", "--epochs", "2", "--out", tmp_path / "m", "--quiet", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)["summary"]
    assert summary["torch_device"] == "cuda" and summary["test_accuracy"] >= 0.85
