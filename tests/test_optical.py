"""The optical sensor front-end (docs/physics.md#optical-front-end): gamma, shot noise, responsivity."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cimtool
from cimtool.data.optical import OpticalFrontEnd, inverse_srgb


def test_inverse_gamma_is_iec_61966_2_1():
    c = torch.tensor([0.0, 0.02, 0.04045, 0.05, 0.5, 1.0], dtype=torch.float64)
    expected = [0.0, 0.02 / 12.92, 0.04045 / 12.92, ((0.05 + 0.055) / 1.055) ** 2.4,
                ((0.5 + 0.055) / 1.055) ** 2.4, 1.0]
    assert inverse_srgb(c).tolist() == pytest.approx(expected, rel=1e-12)
    assert float(inverse_srgb(torch.tensor(0.5))) == pytest.approx(0.21404, abs=1e-5)


def test_carrier_counts_are_poisson_and_responsivity_weights_channels():
    torch.manual_seed(0)
    sensor = OpticalFrontEnd(3, (0.5, 1.0, 0.25), max_photons=50)
    x = torch.full((4000, 3, 4, 4), 0.5)
    counts = sensor(x) * 50  # carriers per pixel
    photons = float(inverse_srgb(torch.tensor(0.5))) * 50
    for ch, resp in enumerate((0.5, 1.0, 0.25)):
        c = counts[:, ch].flatten()
        assert float(c.mean()) == pytest.approx(photons * resp, rel=0.01)
        assert float(c.var()) == pytest.approx(float(c.mean()), rel=0.03)  # Poisson: variance = mean
        assert torch.allclose(c, c.round(), atol=1e-3)  # whole photons
    assert sensor.responsivity.flatten().tolist() == [0.5, 1.0, 0.25]
    gray = OpticalFrontEnd(1, (0.5, 1.0, 0.25), max_photons=50)
    assert gray.responsivity.flatten().tolist() == pytest.approx([1.75 / 3])


def test_lower_responsivity_lowers_that_bands_snr_by_sqrt_ratio():
    # shot noise on the carriers: SNR = sqrt(N_ph · l · rho). The ratio of two sample SNRs over n
    # Poisson draws has a relative standard error of about sqrt(2 / (2n)) = 0.4 % at n = 64,000 per
    # band; 2 % is five of them.
    torch.manual_seed(0)
    sensor = OpticalFrontEnd(3, (0.2, 1.0, 0.4), max_photons=100)
    y = sensor(torch.ones(4000, 3, 4, 4))
    snr = [float(y[:, c].mean() / y[:, c].std()) for c in range(3)]
    assert snr[1] == pytest.approx(10.0, rel=0.02)  # sqrt(100 carriers)
    assert snr[0] / snr[1] == pytest.approx(0.2 ** 0.5, rel=0.02)
    assert snr[2] / snr[1] == pytest.approx(0.4 ** 0.5, rel=0.02)


def test_dark_current_adds_poisson_carriers_and_full_well_clips():
    torch.manual_seed(0)
    x = torch.ones(4000, 1, 4, 4)
    dark = OpticalFrontEnd(1, (1.0, 1.0, 1.0), max_photons=20, dark_current=5.0)(x) * 20
    assert float(dark.mean()) == pytest.approx(25.0, rel=0.01)  # 20 signal + 5 dark carriers
    assert float(dark.var()) == pytest.approx(25.0, rel=0.03)  # both Poisson: variances add
    full = OpticalFrontEnd(1, (1.0, 1.0, 1.0), max_photons=20, full_well=15)(x) * 20
    assert float(full.max()) == 15.0 and float((full == 15).float().mean()) > 0.8


def _card(tmp_path, name, responsivity):
    text = (Path(cimtool.__file__).parent / "devices/presets/organic_ofet.toml").read_text()
    text = text.replace('name = "organic_ofet"', f'name = "{name}"').replace(
        "responsivity = [0.55, 1.0, 0.40]", f"responsivity = {list(responsivity)}")
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_responsivity_changes_the_result_and_noisy_accuracy_is_mean_std(cli, tmp_path):
    runs = {}
    for name, resp in (("flat", (1, 1, 1)), ("organic", (0.2, 1, 0.4))):
        result = cli("train-ann", "--dataset", "digits", "--model", "mnist_cnn", "--front-end", "optical",
                     "--device", _card(tmp_path, name, resp), "--max-photons", "3", "--epochs", "2",
                     "--out", tmp_path / name, "--json", "--quiet")
        assert result.code == 0, result.err
        runs[name] = json.loads(result.out)["summary"]
    flat, organic = runs["flat"], runs["organic"]
    assert flat["test_accuracy_draws"] != organic["test_accuracy_draws"]
    for s in (flat, organic):  # photon noise redrawn at every evaluation: mean ± std of seeded draws
        assert len(s["test_accuracy_draws"]) == 5 and s["eval_seed"] == 0
        assert s["test_accuracy"] == pytest.approx(sum(s["test_accuracy_draws"]) / 5)
        assert s["test_accuracy_std"] > 0
    again = cli("train-ann", "--dataset", "digits", "--model", "mnist_cnn", "--front-end", "optical",
                "--device", _card(tmp_path, "flat", (1, 1, 1)), "--max-photons", "3", "--epochs", "2",
                "--out", tmp_path / "again", "--json", "--quiet")
    assert json.loads(again.out)["summary"]["test_accuracy_draws"] == flat["test_accuracy_draws"]
    plain = cli("train-ann", "--dataset", "digits", "--model", "mnist_cnn", "--epochs", "1",
                "--out", tmp_path / "plain", "--json", "--quiet")
    summary = json.loads(plain.out)["summary"]  # deterministic: one number
    assert "test_accuracy_std" not in summary and 0 < summary["test_accuracy"] <= 1


@pytest.mark.parametrize("responsivity", [(0, 1, 0.4), (-0.2, 1, 0.4)])
def test_non_positive_responsivity_is_refused(cli, tmp_path, responsivity):
    card = _card(tmp_path, "bad", responsivity)
    result = cli("train-ann", "--artifacts-root", tmp_path / "root", "--front-end", "optical",
                 "--device", card)
    assert result.code == 2 and "optical.responsivity must be three positive numbers" in result.err
    assert result.err.count("\n") == 1 and not (tmp_path / "root").exists()


def test_accuracy_falls_as_photons_fall(cli, tmp_path):
    accs = {}
    for photons in (10000, 1, 0.1):
        result = cli("train-ann", "--front-end", "optical", "--max-photons", photons,
                     "--method", "avgpool_8x8", "--epochs", "40", "--out", tmp_path / str(photons),
                     "--json", "--quiet")
        assert result.code == 0, result.err
        accs[photons] = json.loads(result.out)["summary"]["test_accuracy"]
    assert accs[10000] > accs[1] + 0.02 > accs[0.1] + 0.04, accs


@pytest.mark.parametrize("args, pattern", [
    (["--front-end", "optical", "--max-photons", "0"], "--max-photons must be a finite number > 0"),
    (["--front-end", "laser"], "unknown --front-end 'laser'"),
    (["--front-end", "optical", "--device", "rram_seed003"], "needs a card with [optical] responsivity"),
    (["--max-photons", "100"], "--max-photons applies to --front-end optical"),
    (["--device", "ag_asi"], "--device applies to --front-end optical and --model organic_cnn"),
    (["--front-end", "optical", "--max-photons", "100", "--dark-current", "101"],
     "--dark-current must be in [0, --max-photons = 100] carriers per pixel (the signal range), got 101"),
    (["--front-end", "optical", "--dark-current", "-1"], "--dark-current must be in [0"),
    (["--front-end", "optical", "--full-well", "0.5"], "--full-well must be a finite number >= 1 carrier"),
    (["--dark-current", "2"], "--dark-current and --full-well apply to --front-end optical"),
])
def test_optical_bad_input(cli, tmp_path, args, pattern):
    result = cli("train-ann", "--artifacts-root", tmp_path / "root", *args)
    assert result.code == 2 and pattern in result.err and result.err.count("\n") == 1, result.err
    assert not (tmp_path / "root").exists()


def test_organic_layers_compute_the_renormalised_current_and_clamp():
    from torch.nn import functional as F

    from cimtool.nn.organic import OrganicConv2d, OrganicLinear, Synapse, constrain

    torch.manual_seed(0)
    conv = OrganicConv2d(2, 3, 3, Synapse(1e-10, 1e-8, 1.0, 0.05)).eval()
    x = torch.rand(4, 2, 6, 6)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-5)
    lin = OrganicLinear(5, 2, Synapse(1e-10, 1e-8, 0.5, 0.05))
    z = torch.rand(3, 5)
    lin.eval()
    assert torch.allclose(lin(z), F.linear(z, lin.weight, lin.bias), atol=1e-6)
    lin.train()
    assert not torch.allclose(lin(z), lin(z))  # C2C variability while training
    with torch.no_grad():
        lin.weight.mul_(10)
    constrain(torch.nn.Sequential(lin))
    assert lin.weight.abs().max() <= 1.0


def test_organic_cnn_trains_and_stays_in_the_conductance_range(cli, tmp_path):
    from safetensors.torch import load_file

    result = cli("train-ann", "--dataset", "digits", "--model", "organic_cnn", "--front-end", "optical",
                 "--epochs", "10", "--out", tmp_path / "m", "--json", "--quiet")
    assert result.code == 0, result.err
    summary = json.loads(result.out)["summary"]
    assert summary["test_accuracy"] > 0.8
    state = load_file(str(tmp_path / "m" / "weights.safetensors"))
    weights = [v for k, v in state.items() if k.endswith(".weight") and "normalize" not in k]
    assert weights and all(float(w.abs().max()) <= 1.0 for w in weights)
    spec = json.loads((tmp_path / "m" / "arch.json").read_text())
    assert spec["organic"]["device"] == "organic_ofet" and spec["optical"]["device"] == "organic_ofet"
    mapped = cli("map-weights", "--model", tmp_path / "m", "--device", "organic_ofet", "--evaluate",
                 "--trials", "2", "--out", tmp_path / "c", "--json", "--quiet")
    assert mapped.code == 0, mapped.err
    scored = json.loads(mapped.out)["summary"]  # photon noise redrawn: the float accuracy is mean ± std
    assert len(scored["accuracy_float_draws"]) == 5 and scored["eval_seed"] == 0
    assert scored["accuracy_float_draws"] == summary["test_accuracy_draws"]  # same seed, same draws
    assert scored["accuracy_float"] == pytest.approx(sum(scored["accuracy_float_draws"]) / 5)
    assert scored["accuracy_float_std"] == pytest.approx(float(np.std(scored["accuracy_float_draws"])))
