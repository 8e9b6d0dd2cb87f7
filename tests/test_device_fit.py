"""`cimtool devices fit`: NeuroSim's curve recovered from synthetic trains of known NL, noise and
pulse count; the measured gong_et_al curve; the fitted card through our own update rule; bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cimtool import artifacts
from cimtool.cli import main
from cimtool.devices import fit as F
from cimtool.devices.card import PRESET_DIR, load_card
from cimtool.nn import wage

GONG = Path(__file__).resolve().parents[2] / "shared" / "data" / "device_curves" / "gong_et_al.csv"


@pytest.mark.parametrize("nl_ltp, nl_ltd", [(0.5, -0.5), (-0.5, 0.5), (2.4, -4.88), (5.0, 5.0)])
@pytest.mark.parametrize("c2c, levels", [(0.01, 128), (0.02, 64)])
def test_fit_recovers_neurosim_curves(nl_ltp, nl_ltd, c2c, levels):
    """Trains of NeuroSim's model (100 pulses each way, C2C scatter, readings rounded to `levels`):
    NL within 0.1 or 5 %, σ within 10 %, the pulse count exactly."""
    table = F.simulate_train(nl_ltp, nl_ltd, 100, 100, c2c, levels, cycles=1, seed=0)
    result = F.fit_device(table, "synthetic")
    fit, noise = result.fits["device"], result.noises["device"]
    for direction, nl in (("ltp", nl_ltp), ("ltd", nl_ltd)):
        assert abs(fit.nl(direction) - nl) <= max(0.1, 0.05 * abs(nl)), (direction, fit.nl(direction))
        assert fit.pulses[direction] == 100
    assert noise.c2c / (fit.hi - fit.lo) == pytest.approx(c2c, rel=0.10)


def test_fitted_curve_is_the_onchip_update_rule():
    """The fitted card's curve is the one `qat --mode onchip` moves along: wage.nonlinear_weight with
    A = get_param_a(NL)·N gives the fitted points (to the NL label's rounding)."""
    table = F.simulate_train(2.4, -4.88, 64, 64, 0.005, None, cycles=1, seed=1)
    result = F.fit_device(table, "synthetic")
    fit = result.fits["device"]
    for seg in result.segs:
        n = fit.pulses[seg.direction]
        a = torch.tensor(float(wage.get_param_a(fit.nl(seg.direction))) * n, dtype=torch.float64)
        state = seg.pulse if seg.direction == "ltp" else n - seg.pulse
        w = wage.nonlinear_weight(torch.tensor(state, dtype=torch.float64), a, wage.get_param_b(a, n)).numpy()
        ours = fit.lo + (fit.hi - fit.lo) * (w + 1) / 2
        np.testing.assert_allclose(ours, fit.predict(seg), atol=1e-6 * (fit.hi - fit.lo))


def test_several_devices_and_cycles_give_a_spread(tmp_path):
    parts = []
    for i, offset in enumerate((0.0, 0.1, -0.1)):
        t = F.simulate_train(1.0, -2.0, 60, 60, 0.01, None, cycles=2, seed=i)
        parts.append(t.assign(device=f"d{i}", conductance=1e-6 * (2.5 + offset + t["conductance"])))
    data = tmp_path / "long.parquet"
    pd.concat(parts).to_parquet(data, index=False)
    out = _fit(tmp_path, data)
    rows = pd.read_parquet(out / "fit.parquet").set_index("quantity")
    assert rows.loc["d2d_sigma", "value"] == pytest.approx(0.05, rel=0.35)  # offsets 0, ±0.1 of a range of 2
    assert rows.loc["nl_ltp", "value"] == pytest.approx(1.0, abs=0.15)
    card = load_card(str(out / "card.toml"))
    assert "variation.d2d" not in card.assumed and card.variation_model == "range"


def _fit(tmp_path: Path, data: Path, *extra: str, out: str = "fit") -> Path:
    with pytest.raises(SystemExit) as done:
        main(["devices", "fit", str(data), "--out", str(tmp_path / out), "--json", "--quiet", *extra])
    assert done.value.code == 0
    return tmp_path / out


@pytest.fixture(scope="module")
def gong(tmp_path_factory) -> tuple[Path, dict]:
    if not GONG.is_file():
        pytest.skip("the measured curve (../shared/data/device_curves) is absent")
    out = tmp_path_factory.mktemp("gong") / "fit"
    with pytest.raises(SystemExit) as done:
        main(["devices", "fit", str(GONG), "--g-min", "1e-6", "--g-max", "1e-5", "--out", str(out), "--json"])
    assert done.value.code == 0
    return out, artifacts.load(out, "device").summary


def test_gong_et_al(gong, tmp_path):
    """The measured curve: RMS of the fit within 10 % of the point-to-point noise; a card every
    --device option loads; byte-identical on a rerun."""
    out, summary = gong
    assert summary["rms_over_point_to_point"] <= 1.10
    assert summary["nl_ltd"] < -2  # depression falls fastest near g_max
    card = load_card(str(out / "card.toml"))
    assert (card.g_min, card.g_max) == (1e-6, 1e-5) and card.has_update_curve
    assert "drift" in card.assumed and "adc" in card.assumed
    points = pd.read_parquet(out / "points.parquet")
    assert len(points) == 2000 and (out / "fit.png").stat().st_size > 10_000
    again = _fit(tmp_path, GONG, "--g-min", "1e-6", "--g-max", "1e-5", out="again")
    for name in ("card.toml", "fit.parquet", "points.parquet"):
        assert (out / name).read_bytes() == (again / name).read_bytes()


def test_retention_gives_drift(tmp_path):
    table = F.simulate_train(1.0, -1.0, 40, 40, 0.01, None, cycles=1, seed=0)
    data = tmp_path / "pulses.csv"
    table.assign(conductance=1e-6 * (2 + table["conductance"])).to_csv(data, index=False)
    t = np.logspace(0, 4, 30)
    rng = np.random.default_rng(0)
    retention = tmp_path / "retention.csv"
    pd.DataFrame({"time": t, "conductance": 2e-6 * t ** -0.03 * np.exp(rng.normal(0, 0.002, 30))}).to_csv(
        retention, index=False)
    out = _fit(tmp_path, data, "--retention", str(retention))
    card = load_card(str(out / "card.toml"))
    assert card.drift_nu == pytest.approx(0.03, abs=0.003) and card.drift_t0 == 1.0
    assert "drift" not in card.assumed and "drift.nu_sigma" in card.assumed


def _bad(tmp_path: Path, data: Path, *extra: str, capsys) -> str:
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as done:
        main(["devices", "fit", str(data), "--out", str(out), *extra])
    assert done.value.code == 2
    assert not out.exists() and not list(tmp_path.glob("bad*"))
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_bad_input(tmp_path, capsys):
    good = F.simulate_train(1.0, -1.0, 40, 40, 0.01, None, cycles=1, seed=0)
    cases = {}
    (tmp_path / "empty.csv").write_text("")
    cases["empty.csv"] = ((), "empty")
    good[good["direction"] == "ltp"].assign(conductance=lambda d: d["conductance"] + 2).to_csv(
        tmp_path / "one.csv", index=False)
    cases["one.csv"] = ((), "only ltp")
    rng = np.random.default_rng(0)
    pd.DataFrame(rng.uniform(1e-6, 2e-6, size=(200, 2))).to_csv(tmp_path / "garbage.csv", header=False,
                                                                index=False)
    cases["garbage.csv"] = ((), "not a pulse response")
    nan = good.assign(conductance=good["conductance"] + 2)
    nan.loc[5, "conductance"] = math.nan
    nan.to_csv(tmp_path / "nan.csv", index=False)
    cases["nan.csv"] = ((), "line 7: conductance is missing, NaN")
    good.to_csv(tmp_path / "negative.csv", index=False)
    cases["negative.csv"] = ((), "not positive")
    short = good.assign(conductance=good["conductance"] + 2)
    short[short["pulse"] <= 6].to_csv(tmp_path / "short.csv", index=False)
    cases["short.csv"] = ((), "at least 8")
    for name, (extra, expected) in cases.items():
        assert expected in _bad(tmp_path, tmp_path / name, *extra, capsys=capsys), name
    assert "go together" in _bad(tmp_path, tmp_path / "nan.csv", "--g-min", "1e-6", capsys=capsys)


def test_gong_card_trains_the_default_model_onchip(gong, default_model, tmp_path, capsys):
    """`qat --mode onchip --device <fitted gong card>`: the default model trained along the measured
    device's curve, with its 9.6 % cycle-to-cycle scatter, to >= 0.85 test accuracy."""
    card = gong[0] / "card.toml"
    with pytest.raises(SystemExit) as done:
        main(["qat", "--mode", "onchip", "--device", str(card), "--epochs", "60", "--model",
              str(default_model[0].path), "--out", str(tmp_path / "q"), "--json", "--quiet"])
    assert done.value.code == 0
    s = json.loads(capsys.readouterr().out)["summary"]
    assert s["onchip_accuracy"] >= 0.85 and s["test_accuracy"] >= 0.85, s


def test_pulse_curve_moves_whole_pulses_along_the_card_curve():
    from cimtool.nn.organic import PulseCurve

    curve = PulseCurve(1.5, -2.0, 50, 40)
    gen = torch.Generator().manual_seed(0)
    u = torch.tensor([0.25, 0.6, 0.85])  # device states: N pulses span [0, 1]
    w = 2 * u - 1  # NeuroSim's curve runs over [−1, 1]
    for up, n, nl in ((True, 50, 1.5), (False, 40, -2.0)):
        a = torch.tensor(float(wage.get_param_a(nl)) * n, dtype=torch.float64)
        b = wage.get_param_b(a, n)
        k = 3 if up else -3
        expected = wage.nonlinear_weight(wage.inv_nonlinear_weight(w.double(), a, b) + k, a, b)
        moved, written = curve.move(u, torch.full_like(u, k / n), gen)  # exactly three pulses
        np.testing.assert_allclose(moved.double(), (expected.clamp(-1, 1) + 1) / 2, atol=1e-6)
        assert written.all()
    moved, written = curve.move(u, torch.zeros_like(u), gen)
    assert torch.equal(moved, u) and not written.any()  # no step, no pulse


def test_organic_cnn_trains_with_a_fitted_cards_pulses(tmp_path, capsys):
    """`train-ann --model organic_cnn --organic-update pulses --device <fitted card>` on digits."""
    table = F.simulate_train(1.5, -2.0, 50, 50, 0.01, None, cycles=2, seed=0)
    data = tmp_path / "organic.csv"
    table.assign(conductance=1e-9 * (5.5 + 4.5 * table["conductance"])).to_csv(data, index=False)
    card = _fit(tmp_path, data, "--base", "organic_ofet") / "card.toml"
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["train-ann", "--dataset", "digits", "--model", "organic_cnn", "--front-end", "optical",
              "--device", str(card), "--organic-update", "pulses", "--epochs", "10", "--out",
              str(tmp_path / "m"), "--json", "--quiet"])
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out)["summary"]["test_accuracy"] > 0.8
    update = json.loads((tmp_path / "m" / "arch.json").read_text())["organic"]["update"]
    assert update["pulses_ltp"] == load_card(str(card)).pulses_ltp
    text = card.read_text()
    (tmp_path / "no_update.toml").write_text(text.split("[update]")[0] + "[adc]" + text.split("[adc]")[1])
    with pytest.raises(SystemExit) as done:  # a card without [update]
        main(["train-ann", "--dataset", "digits", "--model", "organic_cnn", "--device",
              str(tmp_path / "no_update.toml"), "--organic-update", "pulses", "--out", str(tmp_path / "n")])
    assert done.value.code == 2 and "[update]" in capsys.readouterr().err


def _organic_data(tmp_path: Path) -> Path:
    """One device's trains between about 1 and 10 nS: an organic synapse's range."""
    table = F.simulate_train(1.5, -2.0, 40, 40, 0.01, None, cycles=1, seed=0)
    data = tmp_path / "organic.csv"
    table.assign(conductance=1e-9 * (5.5 + 4.5 * table["conductance"])).to_csv(data, index=False)
    return data


def test_a_base_card_carries_every_field_it_does_not_fit(tmp_path):
    """A user's base card that measured its D2D spread (lognormal) and its optics: both carry over (the
    spread in the fitted card's range model), and only what the base assumed stays assumed."""
    base = load_card("organic_ofet")
    text = (PRESET_DIR / "organic_ofet.toml").read_text()
    text = text.replace('name = "organic_ofet"', 'name = "mine"').replace(
        'assumed = ["conductance", "read", "variation", "drift", "array", "update", "adc", "optical"]',
        'assumed = ["adc"]')
    (tmp_path / "mine.toml").write_text(text)
    out = _fit(tmp_path, _organic_data(tmp_path), "--base", str(tmp_path / "mine.toml"))
    card = load_card(str(out / "card.toml"))
    assert card.variation_model == "range"
    assert card.d2d_sigma == pytest.approx(0.10 * (card.g_min + card.g_max) / 2 / (card.g_max - card.g_min),
                                           abs=1e-6)
    assert card.d2d_sigma > 0.05
    assert (card.responsivity, card.max_photons) == (base.responsivity, base.max_photons)
    assert (card.read_voltage, card.read_noise, card.wire_resistance) == (1.0, 0.02, 1.0)
    assert (card.drift_nu, card.adc_bits, card.adc_scheme) == (0.02, 6, "B")
    assert card.assumed == ("adc", "conductance.spacing")
    rows = pd.read_parquet(out / "fit.parquet").set_index("quantity")
    assert "the base card mine's (its lognormal σ 0.1 of ln G at mid-range)" in rows.loc["d2d_sigma", "note"]


def test_an_all_assumed_base_stays_assumed_where_it_is_not_fitted(tmp_path):
    out = _fit(tmp_path, _organic_data(tmp_path), "--base", "organic_ofet")
    card = load_card(str(out / "card.toml"))
    assert card.assumed == ("read", "variation.d2d", "variation.stuck_off", "variation.stuck_on", "drift",
                            "array", "adc", "optical", "conductance.spacing")


def test_the_default_base_is_the_preset_nearest_the_fitted_range(tmp_path, capsys):
    assert F.nearest_preset(1e-10, 1e-8) == "organic_ofet"
    assert F.nearest_preset(1 / 4.18e11, 1 / 2.34e8) == "rram_seed003"
    assert F.nearest_preset(1e-6, 1e-5) == "ag_asi"
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["devices", "fit", str(_organic_data(tmp_path)), "--out", str(tmp_path / "fit")])
    assert done.value.code == 0
    assert "base card 'organic_ofet' (the preset nearest the fitted conductance range" in \
        " ".join(capsys.readouterr().err.split())
    card = load_card(str(tmp_path / "fit" / "card.toml"))
    assert card.responsivity == load_card("organic_ofet").responsivity and card.read_voltage == 1.0
