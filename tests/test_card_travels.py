"""The card travels with the model: map-weights, qat, export-weightmap and sweep default to the card
the model was trained or mapped with and say so; an explicit --device is honoured with a note; a
qmodel's or cmap's recorded card is used even after its file moved; --device takes a device
artifact (`cimtool devices fit`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cimtool import artifacts
from cimtool.devices import fit as F
from cimtool.devices.card import PRESET_DIR, load_card
from cimtool.devices.cmap import recorded_card, resolve_card
from cimtool.errors import CimtoolError


def _ok(result):
    assert result.code == 0, result.err
    return json.loads(result.out)


def _my_card(folder: Path) -> Path:
    """organic_ofet with its own name and range: a user's card file, unlike every preset."""
    text = (PRESET_DIR / "organic_ofet.toml").read_text()
    text = text.replace('name = "organic_ofet"', 'name = "mycard"').replace("g_max = 1e-8", "g_max = 2e-8")
    path = folder / "mycard.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def organic(tmp_path_factory):
    """An organic_cnn trained (one epoch on digits) with a user's card file, and that file."""
    from cimtool.cli import main

    folder = tmp_path_factory.mktemp("organic")
    card = _my_card(folder)
    with pytest.raises(SystemExit) as done:
        main(["train-ann", "--dataset", "digits", "--model", "organic_cnn", "--front-end", "optical",
              "--device", str(card), "--epochs", "1", "--out", str(folder / "m"), "--quiet"])
    assert done.value.code == 0
    return folder / "m", card


def test_map_weights_defaults_to_the_card_the_model_was_trained_with(organic, cli, tmp_path):
    model, card = organic
    result = cli("map-weights", "--model", model, "--out", tmp_path / "c", "--json")
    _ok(result)
    cmap = artifacts.load(tmp_path / "c", "cmap")
    assert cmap.params["card"]["name"] == "mycard" and cmap.params["card"]["g_max"] == 2e-8
    assert cmap.params["mapping"]["device"] == str(card)
    assert cmap.summary["device"] == "mycard"
    assert f"card: 'mycard', the card {model} was trained with" in " ".join(result.err.split())


def test_an_explicit_device_is_honoured_with_a_note(organic, cli, tmp_path):
    model, _ = organic
    result = cli("map-weights", "--model", model, "--device", "ag_asi", "--out", tmp_path / "c", "--json")
    _ok(result)
    assert artifacts.load(tmp_path / "c", "cmap").params["card"]["name"] == "ag_asi"
    err = " ".join(result.err.split())
    assert f"note: --device ag_asi: {model} was trained with 'mycard'" in err
    assert "using 'ag_asi' as asked" in err


def test_export_weightmap_maps_onto_the_models_card(organic, cli, tmp_path):
    model, _ = organic
    summary = _ok(cli("export-weightmap", "--model", model, "--artifacts-root", tmp_path / "root",
                      "--out", tmp_path / "w", "--json"))["summary"]
    assert summary["device"] == "mycard" and summary["g_max"] == 2e-8


def test_the_recorded_card_outlives_its_file(organic, cli, tmp_path):
    """The model and the qmodel made from it record the card's content, so map-weights maps onto it
    after the card file moved."""
    model, card = organic
    assert artifacts.load(model, "model").params["card"]["g_max"] == 2e-8
    _ok(cli("qat", "--mode", "ptq", "--model", model, "--trials", "1", "--out", tmp_path / "q", "--json"))
    qmodel = artifacts.load(tmp_path / "q", "qmodel")
    assert qmodel.params["card"]["name"] == "mycard" and qmodel.params["mapping"]["device"] == str(card)
    moved = tmp_path / "moved.toml"
    shutil.move(card, moved)
    try:
        for source, out in ((tmp_path / "q", tmp_path / "c"), (model, tmp_path / "c2")):
            result = cli("map-weights", "--model", source, "--out", out, "--json")
            _ok(result)
            cmap = artifacts.load(out, "cmap")
            assert cmap.params["card"]["name"] == "mycard" and cmap.params["card"]["g_max"] == 2e-8
            assert "model was trained for the mapping" not in result.err  # the same mapping, device included
    finally:
        shutil.move(moved, card)


def test_without_a_recorded_card_the_default_is_said(default_model, tmp_path):
    art, _, _ = default_model
    lines = []
    name, card = resolve_card(None, [art], lines.append)
    assert (name, card.name) == ("rram_seed003", "rram_seed003")
    assert lines == [f"card: rram_seed003 (the default: {art.path} records no card; --device to change)"]


def test_inputs_with_different_cards_need_a_device(organic, tmp_path, cli):
    """The sweep's rule: two models trained with different cards, and no --device."""
    model, _ = organic
    _ok(cli("map-weights", "--model", model, "--device", "ag_asi", "--out", tmp_path / "c", "--json"))
    inputs = [artifacts.load(model), artifacts.load(tmp_path / "c")]
    with pytest.raises(CimtoolError, match="record different device cards.*give --device"):
        resolve_card(None, inputs, print)
    assert resolve_card("ag_asi", inputs, lambda line: None)[1].name == "ag_asi"


def test_a_trace_has_its_models_card(organic, tmp_path):
    """run-neurosim's default: the card of the trace's model (or of --cmap)."""
    from cimtool.stages import neurosim_trace as stage
    from cimtool.ui import Reporter

    model, card = organic
    trace = stage.run(stage.TraceParams(model=str(model)), tmp_path / "t", tmp_path, False,
                      Reporter(quiet=True))
    name, recorded = recorded_card(trace)
    assert (name, recorded.name, recorded.g_max) == (str(card), "mycard", 2e-8)


def test_sweep_defaults_to_the_models_card(tmp_path, cli):
    card = _my_card(tmp_path)
    _ok(cli("train-ann", "--dataset", "digits", "--front-end", "optical", "--device", card, "--epochs", "1",
            "--out", tmp_path / "m", "--json", "--quiet"))
    result = cli("sweep", "--model", tmp_path / "m", "--scheme", "A", "--adc-bits", "4", "--weight-bits", "4",
                 "--timesteps", "1", "--trials", "1", "--out", tmp_path / "s", "--json")
    summary = _ok(result)["summary"]
    assert summary["device"] == "mycard"
    assert artifacts.load(tmp_path / "s", "sweep").params["device"] == str(card)


def test_device_takes_a_device_artifact(organic, cli, tmp_path):
    """`--device <folder devices fit wrote>` is that folder's card.toml."""
    table = F.simulate_train(1.5, -2.0, 40, 40, 0.01, None, cycles=1, seed=0)
    data = tmp_path / "pulses.csv"
    table.assign(conductance=1e-9 * (5.5 + 4.5 * table["conductance"])).to_csv(data, index=False)
    _ok(cli("devices", "fit", data, "--name", "fitted", "--out", tmp_path / "dev", "--json"))
    assert load_card(str(tmp_path / "dev")) == load_card(str(tmp_path / "dev" / "card.toml"))
    model, _ = organic
    _ok(cli("map-weights", "--model", model, "--device", tmp_path / "dev", "--out", tmp_path / "c", "--json"))
    assert artifacts.load(tmp_path / "c", "cmap").params["card"]["name"] == "fitted"
    (tmp_path / "plain").mkdir()
    bad = cli("map-weights", "--model", model, "--device", tmp_path / "plain", "--out", tmp_path / "c2")
    assert bad.code == 2 and "neither a .toml device card nor a device artifact" in bad.err
    assert not (tmp_path / "c2").exists()
