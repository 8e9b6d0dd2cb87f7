"""The organic optoelectronic sensor front-end (seed 000): gamma, shot noise, responsivity."""

import json

import pytest
import torch

from cimtool.data.optical import OpticalFrontEnd, inverse_srgb


def test_inverse_gamma_is_iec_61966_2_1():
    c = torch.tensor([0.0, 0.02, 0.04045, 0.05, 0.5, 1.0], dtype=torch.float64)
    expected = [0.0, 0.02 / 12.92, 0.04045 / 12.92, ((0.05 + 0.055) / 1.055) ** 2.4,
                ((0.5 + 0.055) / 1.055) ** 2.4, 1.0]
    assert inverse_srgb(c).tolist() == pytest.approx(expected, rel=1e-12)
    assert float(inverse_srgb(torch.tensor(0.5))) == pytest.approx(0.21404, abs=1e-5)


def test_photon_counts_are_poisson_and_responsivity_weights_channels():
    torch.manual_seed(0)
    sensor = OpticalFrontEnd(3, (0.5, 1.0, 0.25), max_photons=50)
    x = torch.full((4000, 3, 4, 4), 0.5)
    counts = sensor(x) / sensor.responsivity * 50  # photons per pixel
    mean = float(inverse_srgb(torch.tensor(0.5))) * 50
    for ch in range(3):
        c = counts[:, ch].flatten()
        assert float(c.mean()) == pytest.approx(mean, rel=0.01)
        assert float(c.var()) == pytest.approx(float(c.mean()), rel=0.03)  # Poisson: variance = mean
        assert torch.allclose(c, c.round(), atol=1e-3)  # whole photons
    assert sensor.responsivity.flatten().tolist() == [0.5, 1.0, 0.25]
    gray = OpticalFrontEnd(1, (0.5, 1.0, 0.25), max_photons=50)
    assert gray.responsivity.flatten().tolist() == pytest.approx([1.75 / 3])


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
    (["--max-photons", "100"], "apply to --front-end optical"),
])
def test_optical_bad_input(cli, tmp_path, args, pattern):
    result = cli("train-ann", "--artifacts-root", tmp_path / "root", *args)
    assert result.code == 2 and pattern in result.err and result.err.count("\n") == 1, result.err
    assert not (tmp_path / "root").exists()
