"""Options declared once (cimtool/options.py, cimtool/params.py): the command line is derived
from the params dataclasses, shared options are declared once, checks have one wording."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import pytest

from cimtool import options
from cimtool import params as P
from cimtool.checks import check_choice, check_choices, check_range
from cimtool.errors import CimtoolError


def test_one_field_is_one_option(monkeypatch):
    """The CONTRIBUTING.md example: a field added to a params class is an option of its command."""
    from cimtool import cli

    @dataclass(frozen=True)
    class Extended(P.MapParams):
        read_temperature: float = options.option(300.0, panel=P.SIM, help="Read temperature (K).")

    names = [p.name for p in cli._parameters(Extended)]
    assert "read_temperature" in names and names.count("seed") == 1
    built = options.build(Extended, {"read_temperature": 350.0, "device": "ag_asi", "effects": "d2d,read"})
    assert built.read_temperature == 350.0 and built.mapping.device == "ag_asi"
    assert built.effects == ("d2d", "read")  # parsed as declared


def test_every_stage_command_has_its_params_and_the_output_options():
    from cimtool import cli

    for name, _, cls, _ in cli.STAGES:
        params = [p.name for p in cli._parameters(cls)]
        fields = [f.name for f, _, _ in options.walk(cls)]
        assert set(fields) <= set(params), name
        assert len(params) == len(set(params)), f"{name}: an option declared twice"


def test_defaults_on_the_command_line_build_the_dataclass_defaults():
    """Building a params class from its command-line defaults gives the class's own defaults: the
    manifest of a run with no options is what it was."""
    from cimtool import cli

    for name, _, cls, _ in cli.STAGES:
        values = {p.name: p.default for p in cli._parameters(cls)
                  if p.default is not inspect.Parameter.empty and not p.name.endswith("__old")}
        required = {f.name: "x" for f, _, spec in options.walk(cls) if spec.required}
        built = options.build(cls, {**values, **required})
        expected = options.build(cls, required)
        assert dataclasses.asdict(built) == dataclasses.asdict(expected), name


def test_shared_options_are_declared_once():
    help_of = {}
    for cls in (P.MapParams, P.QatParams, P.SweepParams, P.ProfileParams, P.CalibrateParams):
        for f, _, spec in options.walk(cls):
            if f.name == "calibration_samples":
                help_of[cls.__name__] = spec.help
    assert len(set(help_of.values())) == 1 and len(help_of) == 5


def test_a_parse_error_names_its_option():
    with pytest.raises(CimtoolError, match=r"^--adc-bits: '4,x' is not a comma-separated list of integers$"):
        options.build(P.SweepParams, {"adc_bits": "4,x"})
    with pytest.raises(CimtoolError, match=r"^--percentiles: 120 is outside \(0, 100\]$"):
        options.build(P.CalibrateParams, {"percentiles": "99,120"})


def test_checks_have_one_wording():
    with pytest.raises(CimtoolError, match=r"^unknown --scheme 'C' \(choose from: A, B\)$"):
        check_choice("--scheme", "C", ("A", "B"))
    with pytest.raises(CimtoolError, match=r"^unknown --effects gremlins, trolls \(choose from: a, b\)$"):
        check_choices("--effects", ("a", "trolls", "gremlins"), ("a", "b"))
    with pytest.raises(CimtoolError, match=r"^--adc-bits must be in 2..24, got 30$"):
        check_range("--adc-bits", 30, 2, 24)
    with pytest.raises(CimtoolError, match=r"^--epochs must be at least 1, got 0$"):
        check_range("--epochs", 0, 1)
    with pytest.raises(CimtoolError, match=r"^--noise-scale must be >= 0, got -1$"):
        check_range("--noise-scale", -1.0, 0)
    with pytest.raises(CimtoolError, match=r"^--drift-time must be > 0 seconds, got 0$"):
        check_range("--drift-time", 0.0, 0, lo_open=True, note="seconds")
    check_range("--x", 5, 1, 5)


def test_light_vocabularies_match_the_domain_registries():
    from cimtool.devices import mapping
    from cimtool.devices.mapping_options import NORMALIZATION_NAMES, SCALING_NAMES
    from cimtool.nn import snn
    from cimtool.nn.snn_config import NEURON_RESETS

    assert SCALING_NAMES == tuple(mapping.SCALINGS) and NORMALIZATION_NAMES == tuple(mapping.NORMALIZATIONS)
    assert {n: k.resets for n, k in snn.NEURONS.items()} == NEURON_RESETS


def test_old_spellings_still_work_with_a_note(cli, tmp_path):
    """--encoding became --dac-encoding (map-weights) and --spike-encoding (calibrate-threshold)."""
    from cimtool import cli as cli_module

    names = {p.name for p in cli_module._parameters(P.MapParams)}
    assert {"encoding", "encoding__old"} <= names
    values = {"encoding__old": "bitserial", "encoding": "analog"}
    notes = cli_module._deprecated(P.MapParams, values)
    assert values == {"encoding": "bitserial"} and "--encoding is now --dac-encoding" in notes[0]


def test_check_range_prints_integers_whole_and_refuses_nan():
    with pytest.raises(CimtoolError, match=r"^--trials must be in 1..10000, got 2000000$"):
        check_range("--trials", 2_000_000, 1, 10_000)
    with pytest.raises(CimtoolError, match=r"^--noise-scale must be a number, got nan$"):
        check_range("--noise-scale", float("nan"), 0)


def test_version_is_the_package_version(cli):
    from importlib import metadata

    result = cli("--version")
    assert result.code == 0 and result.out == f"cimtool {metadata.version('cimtool')}\n"


def _commands(command, path=()):
    """(argv prefix, click command) of every command and sub-command of the CLI."""
    yield list(path), command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


def test_help_shows_bracketed_words_literally(cli):
    """Rich markup would swallow '[ray]' in "pip install 'cimtool[ray]'" or '[optical]' (a card's
    section): every --help shows each bracketed word of its declared help texts."""
    import re

    import typer

    from cimtool import cli as cli_module

    seen = set()
    for path, command in _commands(typer.main.get_command(cli_module.app)):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        words = {w for text in texts for w in re.findall(r"\[[^\[\]\s]+\]", text.replace("\\[", "["))}
        result = cli(*path, "--help")
        assert result.code == 0, (path, result.err)
        missing = [w for w in words if w not in result.out]
        assert not missing, (path, missing)
        seen |= words
    assert {"[ray]", "[optical]"} <= seen  # the guard sees them
