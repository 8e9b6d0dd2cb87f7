"""Device cards and the differential weight → conductance mapping (docs/physics.md#differential-mapping)."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from cimtool.devices.card import (
    _FIELDS,
    PRESET_DIR,
    card_toml,
    load_card,
    loads_card,
    parse_card,
    preset_names,
    template_toml,
)
from cimtool.devices.mapping import (
    Placement,
    card_grid,
    crossbar_matrix,
    level_grid,
    map_matrix,
    nearest_level,
)
from cimtool.errors import CimtoolError


def test_presets_load_with_the_documented_values():
    assert preset_names() == ["ag_asi", "organic_ofet", "rram_seed003"]
    rram = load_card("rram_seed003")
    assert (rram.r_on, rram.r_off, rram.levels, rram.spacing) == (2.34e8, 4.18e11, 16, "log")
    assert rram.g_min == pytest.approx(2.392e-12, rel=1e-3)
    assert rram.g_max == pytest.approx(4.274e-9, rel=1e-3)
    ag = load_card("ag_asi")
    assert (ag.g_min, ag.g_max, ag.levels, ag.pulses_ltd) == (3.0769e-9, 3.8462e-8, 97, 100)
    assert (ag.nl_ltp, ag.nl_ltd, ag.c2c_sigma, ag.variation_model) == (2.4, -4.88, 0.035, "range")
    organic = load_card("organic_ofet")
    assert 1e-10 <= organic.g_min < organic.g_max <= 1e-7  # nA at ~1 V
    assert "conductance" in organic.assumed and organic.responsivity[1] == max(organic.responsivity)


def _card_text(**overrides):
    sections = {
        "conductance": {"r_on": 1e4, "r_off": 1e6, "levels": 8, "spacing": '"linear"'},
        "read": {"voltage": 0.1, "noise": 0.0},
        "variation": {"model": '"lognormal"', "d2d": 0.0, "c2c": 0.0, "stuck_off": 0.0, "stuck_on": 0.0},
        "drift": {"nu": 0.0, "nu_sigma": 0.0, "t0": 1.0},
        "array": {"wire_resistance": 0.0},
        "update": {"nl_ltp": 1.0, "nl_ltd": -1.0, "pulses_ltp": 8, "pulses_ltd": 8},
        "adc": {"bits": 6, "scheme": '"A"', "input_bits": 4},
    }
    for key, value in overrides.items():
        section, name = key.split("__")
        if value is None:
            del sections[section][name]
        else:
            sections[section][name] = value
    lines = ['name = "test"']
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def test_user_card_file_round_trip(tmp_path):
    path = tmp_path / "cell.toml"
    path.write_text(_card_text())
    card = load_card(str(path))
    assert card.g_max == pytest.approx(1e-4) and card.levels == 8


@pytest.mark.parametrize("overrides, pattern", [
    ({"conductance__r_on": 1e6}, "r_on (1e+06 ohm) must be below r_off"),
    ({"conductance__r_on": 2e6}, "must be below r_off"),
    ({"conductance__levels": 1}, "conductance.levels must be in 2..32768"),
    ({"conductance__levels": 0}, "conductance.levels must be in 2..32768"),
    ({"variation__d2d": -0.1}, "variation.d2d must be >= 0"),
    ({"read__noise": -1}, "read.noise must be >= 0"),
    ({"conductance__spacing": '"cubic"'}, "conductance.spacing must be one of log, linear"),
    ({"conductance__levels": 2.5}, "conductance.levels must be a int"),
    ({"conductance__g_min": 1e-9}, "not both"),
    ({"conductance__r_off": None}, "needs both r_on and r_off"),
    ({"read__voltage": None}, "missing field(s) read.voltage"),
    ({"read__volts": 0.2}, "read.volts is not a device-card field"),
    ({"variation__stuck_on": 1.5}, "variation.stuck_on = 1.5 is 150 %: did you mean 0.015?"),
    ({"adc__bits": 1}, "adc.bits must be at least 2"),
    ({"drift__nu": "nan"}, "drift.nu must be finite"),
])
def test_impossible_cards_name_the_field(tmp_path, overrides, pattern):
    path = tmp_path / "bad.toml"
    path.write_text(_card_text(**overrides))
    with pytest.raises(CimtoolError, match=None) as err:
        load_card(str(path))
    assert pattern in str(err.value) and str(path) in str(err.value)


def test_unknown_section_corrupt_and_missing_cards(tmp_path):
    with pytest.raises(CimtoolError, match="unknown section"):
        parse_card({"name": "x", "magic": {"a": 1}}, "card.toml")
    bad = tmp_path / "broken.toml"
    bad.write_text("[conductance\nr_on = ")
    with pytest.raises(CimtoolError, match="not a valid TOML"):
        load_card(str(bad))
    with pytest.raises(CimtoolError, match="unknown --device 'rram_magic'"):
        load_card("rram_magic")
    with pytest.raises(CimtoolError, match="no such device card file"):
        load_card(str(tmp_path / "missing.toml"))


def test_measured_16_level_rram_worked_example():
    """W=−0.30, shared_max=0.80 → level_neg 13, G≈1.575e-9 S, R≈6.35e8 Ω; W=+0.52 → level 14."""
    card = load_card("rram_seed003")
    grid = card_grid(card, 4)
    assert len(grid) == 16 and grid[0] == pytest.approx(1 / 4.18e11) and grid[-1] == pytest.approx(1 / 2.34e8)
    m = map_matrix("t", np.array([[-0.30, 0.52, 0.0, 0.80]]), grid)
    assert m.scale[0] == 0.80  # shared_max = max|W|
    assert m.level_neg[0, 0] == 13 and m.level_pos[0, 0] == 0
    # the worked example of docs/physics.md#device-cards, to the digits it gives
    assert f"{m.g_neg[0, 0]:.4g}" == "1.575e-09" and f"{1 / m.g_neg[0, 0]:.3g}" == "6.35e+08"
    assert m.g_pos[0, 0] == pytest.approx(card.g_min) and 1 / m.g_pos[0, 0] == pytest.approx(4.18e11)
    assert m.level_pos[0, 1] == 14 and m.level_neg[0, 1] == 0
    assert f"{1 / m.g_pos[0, 1]:.3g}" == "3.85e+08" and 1 / m.g_neg[0, 1] == pytest.approx(4.18e11)
    assert m.level_pos[0, 2] == m.level_neg[0, 2] == 0  # zero → g_min on both branches
    assert m.level_pos[0, 3] == 15


def test_nearest_level_is_the_argmin_and_grids_follow_the_formula():
    rng = np.random.default_rng(0)
    for spacing in ("log", "linear"):
        grid = level_grid(1e-12, 1e-8, 16, spacing)
        n = np.concatenate([rng.random(5000), [0.0, 1.0, 2.0]])
        brute = np.abs(n[:, None] - grid[None, :] / grid[-1]).argmin(axis=1)
        assert np.array_equal(nearest_level(n, grid), brute)
    k = np.arange(16) / 15
    assert np.allclose(level_grid(1e-12, 1e-8, 16, "log"), 1e-12 * (1e4) ** k, rtol=1e-12)
    assert np.allclose(level_grid(1e-12, 1e-8, 16, "linear"), 1e-12 + (1e-8 - 1e-12) * k, rtol=1e-12)


def test_scalings_and_effective_weight():
    grid = level_grid(1e-12, 1e-6, 2**12, "linear")  # fine levels, on/off 1e6
    w = np.random.default_rng(1).normal(size=(64, 10))
    w[:, 3] *= 0.1
    for scaling in ("shared_max", "per_column", "percentile"):
        m = map_matrix("t", w, grid, scaling, percentile=99.0)
        if scaling == "per_column":
            assert np.allclose(m.scale, np.abs(w).max(axis=0))
        error = np.abs(m.effective_weight() - w)
        if scaling == "percentile":  # weights above the percentile clamp to the top level
            inside = np.abs(w) <= m.scale[0]
            assert error[inside].max() < 1e-3 * m.scale[0] and (error[~inside] > 0).all()
        else:
            assert error.max() < 1e-3 * m.scale.max()
    with pytest.raises(CimtoolError, match="NaN or inf"):
        map_matrix("bad", np.array([[np.nan, 1.0]]), grid)
    zero = map_matrix("z", np.zeros((3, 2)), grid)
    assert (zero.level_pos == 0).all() and (zero.level_neg == 0).all()


def test_conv_weights_unroll_to_cin_kh_kw_rows():
    w = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)  # [Cout, Cin, kh, kw]
    m = crossbar_matrix(w)
    assert m.shape == (12, 2) and m[5, 1] == w[1, 1, 0, 1]


def test_placement_layouts_and_tiles():
    p = Placement(rows=300, cols=70, array_rows=128, array_cols=64, layout="interleaved")
    assert p.tile_grid == (3, 3)  # 32 outputs per array
    col = np.arange(70)
    pos, neg = p.physical_columns(col)
    assert (pos == 2 * col).all() and (neg == 2 * col + 1).all()
    tile_col, a_pos, a_neg = p.array_columns(col)
    assert tile_col[69] == 2 and a_pos[69] == 2 * (69 - 64) and a_neg[69] == a_pos[69] + 1
    assert p.tile_of(np.array([299]), np.array([69]))[0] == 2 * 3 + 2
    b = Placement(rows=64, cols=10, array_rows=128, array_cols=128, layout="blocked")
    pos, neg = b.physical_columns(np.arange(10))
    assert (pos == np.arange(10)).all() and (neg == np.arange(10, 20)).all()
    assert math.prod(b.tile_grid) == 1


def test_range_normalisation_removes_the_g_min_bias_on_low_on_off_devices():
    """ag_asi (on/off 12.5): with the default G_k/g_max targets every nonzero weight shrinks by
    about scale·g_min/g_max; --normalize range compares with (G_k−g_min)/(g_max−g_min) instead."""
    card = load_card("ag_asi")
    grid = card_grid(card, None)  # 97 linear levels
    w = np.random.default_rng(3).uniform(-1, 1, size=(64, 10))
    step = 1 / 96  # one level, in units of the scale
    gmax_err = np.abs(map_matrix("t", w, grid).effective_weight() - w)
    range_err = np.abs(map_matrix("t", w, grid, normalize="range").effective_weight() - w)
    assert range_err.max() <= step / 2 * np.abs(w).max() + 1e-12
    assert gmax_err.mean() > 5 * range_err.mean()


@pytest.mark.parametrize("overrides, pattern", [
    ({"conductance__levels": 40000}, "conductance.levels must be in 2..32768"),
    ({"conductance__r_on": 1e-320}, "outside float range"),
    ({"variation__stuck_off": 0.5, "variation__stuck_on": 0.5}, "stuck_off + stuck_on must be below 1"),
])
def test_more_impossible_cards(tmp_path, overrides, pattern):
    path = tmp_path / "bad.toml"
    path.write_text(_card_text(**overrides))
    with pytest.raises(CimtoolError) as err:
        load_card(str(path))
    assert pattern in str(err.value)
    escape = tmp_path / "escape.toml"
    escape.write_text(_card_text().replace('name = "test"', 'name = "x/../../esc"'))
    with pytest.raises(CimtoolError, match="name must be letters"):
        load_card(str(escape))


# --- cards that catch mistakes: defaults listed as assumed, a template, plausible values -----------

DEFAULTED = ("read.noise", "variation.model", "variation.d2d", "variation.c2c", "variation.stuck_off",
             "variation.stuck_on", "drift.nu", "drift.nu_sigma", "drift.t0", "array.wire_resistance",
             "adc.bits", "adc.scheme", "adc.input_bits")
MINIMAL = '[conductance]\nr_on = 1e4\nr_off = 1e6\nlevels = 8\nspacing = "log"\n[read]\nvoltage = 0.2\n'


def test_presets_take_no_default():
    """Every preset gives every key a default exists for: its `assumed` is the file's own list."""
    import tomllib

    for name in preset_names():
        listed = tomllib.loads((PRESET_DIR / f"{name}.toml").read_text())["assumed"]
        card = load_card(name)
        assert card.assumed == tuple(listed)
        assert loads_card(card_toml(card), "again.toml") == card


def test_a_minimal_card_loads_with_every_default_assumed(tmp_path):
    path = tmp_path / "my_cell.toml"
    path.write_text(MINIMAL)
    card = load_card(str(path))
    assert card.name == "my_cell" and card.source == str(path)  # the file names the card
    assert (card.g_max, card.g_min, card.levels, card.spacing) == (1e-4, 1e-6, 8, "log")
    assert (card.read_voltage, card.read_noise, card.variation_model) == (0.2, 0.0, "lognormal")
    assert (card.d2d_sigma, card.c2c_sigma, card.stuck_off, card.stuck_on) == (0.0, 0.0, 0.0, 0.0)
    assert (card.drift_nu, card.drift_nu_sigma, card.drift_t0) == (0.0, 0.0, 1.0)
    assert (card.wire_resistance, card.adc_bits, card.adc_scheme, card.input_bits) == (0.0, 5, "A", 8)
    assert not card.has_update_curve and card.responsivity is None
    assert card.assumed == DEFAULTED
    # a card's own entries come first; a section it lists covers that section's defaults
    path.write_text('assumed = ["read.voltage", "variation"]\n' + MINIMAL + "[adc]\nbits = 6\n")
    card = load_card(str(path))
    assert card.assumed == ("read.voltage", "variation", "read.noise", "drift.nu", "drift.nu_sigma",
                            "drift.t0", "array.wire_resistance", "adc.scheme", "adc.input_bits")
    assert card.adc_bits == 6


@pytest.mark.parametrize("drop, missing", [
    ("levels = 8\n", "missing field(s) conductance.levels"),
    ("voltage = 0.2\n", "missing field(s) read.voltage"),
    ("r_on = 1e4\nr_off = 1e6\n", "missing field(s) conductance.g_min/g_max (or r_on/r_off)"),
])
def test_a_card_missing_an_essential_key_points_to_the_template(tmp_path, cli, drop, missing):
    path = tmp_path / "cell.toml"
    path.write_text(MINIMAL.replace(drop, ""))
    result = cli("devices", "show", path)
    assert result.code == 2 and result.err.count("\n") == 1 and "Traceback" not in result.err
    assert f"{path}: {missing}" in result.err and "`cimtool devices new NAME` writes a template" in result.err


@pytest.mark.parametrize("key, value, message", [
    ("read.noise", 2, "read.noise = 2 is 200 %: did you mean 0.02?"),
    ("read.noise", 0.8, "read.noise = 0.8 is 80 %: did you mean 0.008?"),
    ("read.noise", 80, "read.noise = 80 is 8000 % (a fraction, 0.02 = 2 %;"),  # no fraction it could mean
    ("variation.c2c", 3, "variation.c2c = 3 is 300 %: did you mean 0.03?"),
    ("variation.d2d", 5, "variation.d2d = 5 is 500 %: did you mean 0.05?"),
    ("variation.stuck_off", 1, "variation.stuck_off = 1 is 100 %: did you mean 0.01?"),
    ("variation.stuck_on", 0.6, "variation.stuck_on = 0.6 is 60 %: did you mean 0.006?"),
])
def test_a_percentage_where_a_fraction_belongs_is_refused_with_its_likely_meaning(tmp_path, cli, key, value,
                                                                                  message):
    section, name = key.split(".")
    path = tmp_path / "typo.toml"
    path.write_text(MINIMAL + ("" if section == "read" else f"[{section}]\n") + f"{name} = {value}\n")
    result = cli("devices", "show", path)
    assert result.code == 2 and result.err.count("\n") == 1, result
    assert f"{path}: {message}" in result.err


def test_the_plausibility_limits_themselves_load(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text(MINIMAL.replace("[read]\n", "[read]\nnoise = 0.5\n")
                    + "[variation]\nd2d = 1.0\nc2c = 1\nstuck_off = 0.5\nstuck_on = 0.25\n")
    card = load_card(str(path))
    assert (card.read_noise, card.d2d_sigma, card.c2c_sigma, card.stuck_off) == (0.5, 1.0, 1.0, 0.5)


@pytest.mark.parametrize("conductance, message", [
    ("g_min = 1e4\ng_max = 1e6", "conductance.g_max = 1e+06 S is a cell below 100 ohm: is it a resistance"),
    ("g_min = 0.1\ng_max = 40.0", "conductance.g_max = 40 S is a cell below 100 ohm"),  # nS without the e-9
    ("r_on = 1e-6\nr_off = 1e-4", "conductance.r_on = 1e-06 ohm is below 100 ohm"),
])
def test_a_conductance_in_the_wrong_unit_is_refused(tmp_path, conductance, message):
    path = tmp_path / "units.toml"
    path.write_text(MINIMAL.replace("r_on = 1e4\nr_off = 1e6", conductance))
    with pytest.raises(CimtoolError) as err:
        load_card(str(path))
    assert message in str(err.value)


def test_devices_new_writes_a_commented_template_that_loads(tmp_path, cli):
    out = tmp_path / "cards" / "mycell.toml"
    result = cli("devices", "new", "mycell", "--out", out)
    assert result.code == 0, result.err
    text = out.read_text()
    assert text == template_toml("mycell")  # one function writes it: the same bytes every time
    card = load_card(str(out))
    ag = load_card("ag_asi")  # the essential keys hold NeuroSim's Ag:a-Si values, marked as stand-ins
    assert (card.name, card.g_min, card.g_max, card.levels, card.spacing, card.read_voltage) == (
        "mycell", ag.g_min, ag.g_max, ag.levels, ag.spacing, ag.read_voltage)
    assert card.assumed == ("conductance", "read.voltage", *DEFAULTED)
    assert not card.has_update_curve and card.responsivity is None
    # every key is in the template, with its unit; a defaulted key's line shows its default
    lines = {line.lstrip("# ").split(" = ")[0]: line for line in text.splitlines() if " = " in line}
    for (_, key), field in _FIELDS.items():
        assert "#" in lines[key].split(" = ", 1)[1], key
        if field.unit:
            assert f"# {field.unit}: " in lines[key], key
        if field.has_default:
            assert lines[key].startswith(f"# {key} = {json.dumps(field.default)} "), key
    assert "# S: " in lines["g_min"] and "# V: " in lines["voltage"] and "# fraction: " in lines["noise"]
    # uncommenting a line gives the value and takes it out of `assumed`; the optional parts load too
    edited = (text.replace("# noise = 0.0", "noise = 0.02").replace("# [update]", "[update]")
              .replace("# nl_ltp", "nl_ltp").replace("# nl_ltd", "nl_ltd").replace("# pulses_lt", "pulses_lt")
              .replace("# [optical]", "[optical]").replace("# responsivity", "responsivity"))
    card = loads_card(edited, "edited.toml")
    assert card.read_noise == 0.02 and "read.noise" not in card.assumed
    assert len(card.assumed) == len(DEFAULTED) + 1  # the two stand-ins, the other defaults
    assert (card.nl_ltp, card.nl_ltd, card.pulses_ltp, card.pulses_ltd) == (2.4, -4.88, 97, 100)
    assert card.responsivity == (0.55, 1.0, 0.4) and card.max_photons is None
    # an existing file is refused in one line and left as it was; --force replaces it with the same bytes
    out.write_text(text + "# my notes\n")
    again = cli("devices", "new", "mycell", "--out", out)
    assert again.code == 2 and again.err.count("\n") == 1
    assert f"{out}: exists (give --force to replace it)" in again.err
    assert out.read_text() == text + "# my notes\n"
    assert cli("devices", "new", "mycell", "--out", out, "--force").code == 0 and out.read_text() == text
    assert sorted(p.name for p in out.parent.iterdir()) == ["mycell.toml"]  # no partial file left


def test_devices_new_default_path_and_bad_names(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("devices", "new", "rram_b", "--json")
    assert result.code == 0 and json.loads(result.out) == {"card": "rram_b.toml", "name": "rram_b"}
    assert load_card(str(Path("rram_b.toml"))).name == "rram_b"
    for args in (["a/b"], ["x", "--out", tmp_path]):
        bad = cli("devices", "new", *args)
        assert bad.code == 2 and bad.err.count("\n") == 1 and "Traceback" not in bad.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rram_b.toml"]
    # a place it cannot write (a file where its folder should be): one line, exit 2, nothing left
    (tmp_path / "afile").write_text("x")
    unwritable = cli("devices", "new", "c", "--out", tmp_path / "afile" / "c.toml")
    assert unwritable.code == 2 and unwritable.err.count("\n") == 1
    assert "cannot write the card" in unwritable.err
    assert "Traceback" not in unwritable.err and (tmp_path / "afile").read_text() == "x"


def test_devices_show_prints_the_toml_keys(cli, tmp_path):
    text = cli("devices", "show", "rram_seed003")
    assert text.code == 0
    for key in ("conductance.r_on", "conductance.levels", "read.noise", "variation.c2c", "drift.nu_sigma",
                "array.wire_resistance", "update.pulses_ltp", "adc.input_bits"):
        assert key in text.out, key
    for name in ("read_noise", "c2c_sigma", "drift_nu", "adc_bits", "input_bits"):
        assert f" {name} " not in text.out, name
    row = next(line for line in text.out.splitlines() if "read.noise" in line)
    assert "0.01" in row and "fraction" in row and "assumed" in row
    row = next(line for line in text.out.splitlines() if "conductance.levels" in line)
    assert "16" in row and "assumed" not in row  # measured
    shown = json.loads(cli("devices", "show", "rram_seed003", "--json").out)["device"]
    assert shown["read"]["noise"] == 0.01 and shown["variation"]["c2c"] == 0.03
    assert shown["conductance"]["levels"] == 16 and shown["conductance"]["r_on"] == pytest.approx(2.34e8)
    assert shown["assumed"] == list(load_card("rram_seed003").assumed) and "optical" not in shown
    listed = json.loads(cli("devices", "list", "--json").out)["devices"]
    assert [d["name"] for d in listed] == preset_names() and listed[2] == shown
    path = tmp_path / "minimal.toml"
    path.write_text(MINIMAL)
    rows = cli("devices", "show", path).out.splitlines()
    for key in DEFAULTED:  # every defaulted key is marked
        assert "assumed" in next(line for line in rows if f" {key} " in line), key


def test_the_documented_defaults_are_the_code_s():
    """docs/physics.md#device-cards tabulates every default the loader applies, with that value."""
    doc = (Path(__file__).parents[1] / "docs" / "physics.md").read_text()
    section = doc.split("## Device cards", 1)[1].split("\n## ", 1)[0]
    for (s, key), field in _FIELDS.items():
        if field.has_default:
            assert f"| `{s}.{key}` | `{json.dumps(field.default)}` |" in section, (s, key)


def test_a_device_artifact_folder_is_its_card(tmp_path):
    """`--device` takes what `cimtool devices fit` writes: a folder with card.toml and a manifest."""
    folder = tmp_path / "fitted"
    folder.mkdir()
    shutil.copy(PRESET_DIR / "ag_asi.toml", folder / "card.toml")
    with pytest.raises(CimtoolError, match="neither a .toml device card nor a device artifact"):
        load_card(str(folder))  # no manifest: not an artifact
    (folder / "manifest.json").write_text("{}")
    assert load_card(str(folder)) == load_card(str(folder / "card.toml"))
    assert load_card(str(folder)).g_max == load_card("ag_asi").g_max
