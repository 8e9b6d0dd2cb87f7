"""`cimtool map-weights` / `cimtool export-weightmap` on the default model, end to end."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cimtool import artifacts
from cimtool.devices.card import load_card
from tests.conftest import run_subprocess

HEADER = ["row", "col_pos", "col_neg", "level_pos", "level_neg", "G_pos", "G_neg"]


def _ok(result):
    assert result.code == 0, result.err
    return json.loads(result.out)


def _new_files(root, before):
    return sorted(set(root.rglob("*")) - before)


def test_design_card_command_verbatim(default_model, tmp_path):
    """`cimtool export-weightmap --method proj_sup_64 --weight-bits 4` after `cimtool train-ann`."""
    art, _, _ = default_model
    shutil.copytree(art.path, tmp_path / "artifacts" / "models" / art.path.name)
    proc = run_subprocess_in(tmp_path, "export-weightmap", "--method", "proj_sup_64", "--weight-bits", "4")
    assert proc.returncode == 0, proc.stderr
    (export,) = (tmp_path / "artifacts" / "exports").iterdir()
    weights = pd.read_csv(export / "weightmap-head.0.csv")
    assert list(weights.columns) == HEADER
    assert (export / "weightmap-head.0.csv").read_text().splitlines()[0] == ",".join(HEADER)
    assert len(weights) == 640  # 64 rows × 10 outputs
    assert weights["level_pos"].between(0, 15).all() and weights["level_neg"].between(0, 15).all()
    card = load_card("rram_seed003")
    for g in ("G_pos", "G_neg"):
        assert weights[g].between(card.g_min * (1 - 1e-12), card.g_max * (1 + 1e-12)).all()
    assert ((weights["level_pos"] == 0) | (weights["level_neg"] == 0)).all()  # one branch per sign
    assert (weights["col_pos"] % 2 == 0).all() and (weights["col_neg"] == weights["col_pos"] + 1).all()
    columns = pd.read_csv(export / "columns-head.0.csv")
    assert columns["output"].tolist() == list(range(10))
    assert columns["col_pos"].tolist() == [2 * j for j in range(10)]
    assert columns["col_neg"].tolist() == [2 * j + 1 for j in range(10)]
    assert set(columns["layout"]) == {"interleaved"}
    manifest = artifacts.load(export, "weightmap").manifest
    assert manifest["inputs"][0]["manifest_sha256"] == art.manifest_sha256()
    assert "the model mapped here (it has no cmap under artifacts/cmaps)" in " ".join(proc.stderr.split())
    assert (f"model {art.path.name} on 'rram_seed003', w4 (16 levels), interleaved columns (mapped here): "
            "weightmap-head.0.csv (640 lines)") in proc.stdout


def run_subprocess_in(cwd, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "cimtool", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_export_without_a_model_says_what_to_run(tmp_path):
    proc = run_subprocess_in(tmp_path, "export-weightmap", "--method", "proj_pca_64", "--weight-bits", "4")
    assert proc.returncode == 2
    assert "run: cimtool train-ann --method proj_pca_64" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "artifacts").exists()


def test_blocked_layout_and_resistance(cli, default_model, tmp_path):
    art, _, _ = default_model
    _ok(cli("export-weightmap", "--model", art.path, "--layout", "blocked", "--with-resistance",
            "--out", tmp_path / "x", "--json", "--quiet"))
    weights = pd.read_csv(tmp_path / "x" / "weightmap-head.0.csv")
    assert list(weights.columns) == HEADER + ["R_pos", "R_neg"]
    assert np.allclose(weights["R_pos"] * weights["G_pos"], 1.0)
    j = np.tile(np.arange(10), 64)
    assert (weights["col_pos"] == j).all() and (weights["col_neg"] == 10 + j).all()
    columns = pd.read_csv(tmp_path / "x" / "columns-head.0.csv")
    assert columns["col_neg"].tolist() == list(range(10, 20)) and set(columns["layout"]) == {"blocked"}


@pytest.fixture(scope="module")
def cmap(default_model, tmp_path_factory):
    """map-weights --evaluate --program on the default model (4-bit rram_seed003, 10 trials)."""
    from cimtool.cli import main

    art, _, _ = default_model
    out = tmp_path_factory.mktemp("cmap") / "c"
    args = ["map-weights", "--model", str(art.path), "--weight-bits", "4", "--evaluate", "--program",
            "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    return artifacts.load(out, "cmap"), args, time.perf_counter() - t0


def test_map_weights_reports_float_ideal_and_nonideal(cmap, default_model):
    art, _, wall = cmap
    s = art.summary
    float_acc = default_model[0].summary["test_accuracy"]
    assert s["accuracy_float"] == pytest.approx(float_acc)
    assert s["trials"] == 10 and s["split"] == "test"
    assert float_acc - 0.05 <= s["accuracy_mapped_ideal"] <= float_acc + 0.01
    assert s["accuracy_nonideal_mean"] <= s["accuracy_mapped_ideal"] + 0.01
    assert s["accuracy_nonideal_mean"] > 0.8 and 0 < s["accuracy_nonideal_std"] < 0.05
    rows = pq.read_table(art.file("evaluation.parquet")).to_pandas()
    nonideal = rows[rows["condition"] == "mapped_nonideal"]["accuracy"]
    assert len(nonideal) == 10 and nonideal.mean() == pytest.approx(s["accuracy_nonideal_mean"])
    assert wall < 30


def test_cmap_table_and_programmed_column(cmap):
    art, _, _ = cmap
    cells = pq.read_table(art.file("cmap.parquet")).to_pandas()
    assert list(cells.columns) == ["layer", "tile", "row", "col", "slice", "level_pos", "level_neg", "G_pos",
                                   "G_neg", "R_pos", "R_neg", "G_pos_programmed", "G_neg_programmed"]
    assert len(cells) == 640 and (cells["layer"] == "head.0").all() and (cells["tile"] == 0).all()
    assert np.allclose(cells["R_pos"], 1 / cells["G_pos"])
    ratio = cells["G_pos_programmed"] / cells["G_pos"]
    assert 0.03 < np.log(ratio[(ratio > 0.5) & (ratio < 2)]).std() < 0.1  # D2D ⊕ C2C ≈ 5.8 %
    layers = pq.read_table(art.file("layers.parquet")).to_pylist()
    assert layers[0]["rows"] == 64 and layers[0]["cols"] == 10 and layers[0]["n_levels"] == 16


def test_same_seed_byte_identical_and_targets_independent_of_program(cmap, cli, tmp_path):
    art, args, _ = cmap
    again = [*args[:args.index("--out")], "--out", str(tmp_path / "again")]
    cli(*again)
    for name in ("cmap.parquet", "evaluation.parquet", "layers.parquet", "scales.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == art.file(name).read_bytes(), name
    other = [a for a in again if a not in ("--program", "--evaluate")]
    other[other.index(str(tmp_path / "again"))] = str(tmp_path / "plain")
    assert cli(*other, "--seed", "7").code == 0
    plain = pq.read_table(tmp_path / "plain" / "cmap.parquet").to_pandas()
    programmed = pq.read_table(art.file("cmap.parquet")).to_pandas()
    assert plain["G_pos"].equals(programmed["G_pos"])  # targets intact


def test_export_from_cmap_equals_export_from_model(cmap, cli, default_model, tmp_path):
    art, _, _ = cmap
    _ok(cli("export-weightmap", "--cmap", art.path, "--out", tmp_path / "a", "--json", "--quiet"))
    _ok(cli("export-weightmap", "--model", default_model[0].path, "--weight-bits", "4",
            "--out", tmp_path / "b", "--json", "--quiet"))
    for name in ("weightmap-head.0.csv", "columns-head.0.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    result = cli("export-weightmap", "--cmap", art.path, "--weight-bits", "2", "--out", tmp_path / "c")
    assert result.code == 2 and "was mapped with --weight-bits 4" in result.err


def _accuracies(model, spec, data, bits, adc_bits, trials=10):
    from cimtool.devices.mapping import Placement, card_grid
    from cimtool.nn.array import EFFECTS, ArrayConfig
    from cimtool.nn.network import ArrayNetwork, map_model

    card = load_card("rram_seed003")
    maps = map_model(model, spec, card_grid(card, bits))
    placements = {n: Placement(*m.shape, 128, 128, "interleaved") for n, m in maps.items()}
    net = ArrayNetwork(model, maps, placements, card,
                       ArrayConfig(effects=EFFECTS, adc_bits=adc_bits, scheme="B", input_bits=8))
    net.calibrate(data["train"])
    t0 = time.perf_counter()
    accs = np.array(net.trials(data["test"], trials, seed=0))
    return accs.mean(), accs.std(), time.perf_counter() - t0


def test_more_bits_never_hurt_and_two_bits_clearly_do(default_model):
    """Weight bits and ADC bits must act: 2 < 4 ≤ 8 beyond the Monte Carlo error."""
    from cimtool.models.io import model_splits, open_model

    art, model, spec = open_model(default_model[0].path)
    data = model_splits(art)
    for knob in ("weight", "adc"):
        results = {b: _accuracies(model, spec, data, bits=b if knob == "weight" else 4,
                                  adc_bits=b if knob == "adc" else 8) for b in (2, 4, 8)}
        (m2, s2, _), (m4, s4, wall4), (m8, s8, _) = (results[b] for b in (2, 4, 8))
        assert m2 + 3 * (s2 + s4) < m4, (knob, results)
        assert m4 <= m8 + 2 * (s4 + s8) / np.sqrt(10) + 0.005, (knob, results)
        assert wall4 < 2.0  # 10 trials of the full test split with every non-ideality


def _rewrite(src, dst, edit):
    """Copy a model artifact, change a payload with ``edit(dir)``, and re-hash the manifest."""
    shutil.copytree(src, dst)
    edit(dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name] = {"sha256": artifacts.sha256_file(dst / name),
                                   "bytes": (dst / name).stat().st_size}
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def _nan_weights(folder):
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "weights.safetensors"))
    state["head.0.weight"][0, 0] = float("nan")
    save_file(state, str(folder / "weights.safetensors"), metadata={"format": "pt"})


def _huge_hidden(folder):
    """An arch.json asking for two 1,000,000-wide hidden layers (4 TB of weights if built)."""
    spec = json.loads((folder / "arch.json").read_text())
    spec["hidden"] = [1_000_000, 1_000_000]
    (folder / "arch.json").write_text(json.dumps(spec))


def _no_crossbar(folder):
    spec = json.loads((folder / "arch.json").read_text())
    spec["crossbar_layers"] = []
    (folder / "arch.json").write_text(json.dumps(spec))


MAPPING_ERRORS = [
    (["--weight-bits", "0"], "--weight-bits must be in 1..15"),
    (["--layout", "diagonal"], "unknown --layout 'diagonal'"),
    (["--array-cols", "3"], "--array-cols must be an even number"),
    (["--device", "unobtainium"], "unknown --device 'unobtainium'"),
    (["--scaling", "magic"], "unknown --scaling 'magic'"),
    (["BADCARD"], "conductance.r_on (1e+06 ohm) must be below r_off"),
    (["NAN"], "contains NaN or inf"),
    (["NOXBAR"], "'crossbar_layers' does not match the architecture"),
    (["HUGE"], "tensors do not match arch.json (missing ['head.2.bias'"),
]
SIMULATION_ERRORS = [
    (["--evaluate", "--trials", "0"], "--trials must be in 1..10000"),
    (["--evaluate", "--effects", "d2d,gremlins"], "unknown --effects gremlins"),
    (["--evaluate", "--adc-bits", "1"], "--adc-bits must be in 2..24"),
    (["--evaluate", "--scheme", "C"], "unknown --scheme 'C'"),
    (["--evaluate", "--encoding", "bitserial", "--input-bits", "0"], "--input-bits must be in 1..16"),
    (["--evaluate", "--split", "holdout"], "unknown --split 'holdout'"),
]


@pytest.mark.parametrize("command, args, pattern",
                         [(c, a, p) for c in ("map-weights", "export-weightmap") for a, p in MAPPING_ERRORS]
                         + [("map-weights", a, p) for a, p in SIMULATION_ERRORS])
def test_bad_input_is_one_line_exit_2_nothing_written(cli, default_model, tmp_path, command, args, pattern):
    model = default_model[0].path
    if args == ["BADCARD"]:
        card = tmp_path / "bad.toml"
        text = (load_card.__globals__["PRESET_DIR"] / "rram_seed003.toml").read_text()
        card.write_text(text.replace("r_on = 2.34e8", "r_on = 1e6").replace("r_off = 4.18e11", "r_off = 1e6"))
        args = ["--device", str(card)]
    elif args == ["NAN"]:
        model, args = _rewrite(model, tmp_path / "nan", _nan_weights), []
    elif args == ["HUGE"]:
        model, args = _rewrite(model, tmp_path / "huge", _huge_hidden), []
    elif args == ["NOXBAR"]:
        model, args = _rewrite(model, tmp_path / "noxbar", _no_crossbar), []
    out = tmp_path / "out" / "artifact"
    result = cli(command, "--model", model, "--out", out, *args)
    assert result.code == 2, (result.code, result.err)
    assert result.err.count("\n") == 1 and result.err.startswith("cimtool: error"), result.err
    assert pattern in result.err and "Traceback" not in result.err
    assert not (tmp_path / "out").exists()


def test_inspect_checks_cmap_content(cli, cmap):
    art, _, _ = cmap
    result = cli("inspect", art.path, "--json")
    assert result.code == 0 and json.loads(result.out)["verified"]


def test_devices_commands(cli):
    listed = _ok(cli("devices", "list", "--json"))
    assert [d["name"] for d in listed["devices"]] == ["ag_asi", "organic_ofet", "rram_seed003"]
    shown = _ok(cli("devices", "show", "rram_seed003", "--json"))["device"]
    assert shown["conductance"]["levels"] == 16 and shown["conductance"]["g_max"] == pytest.approx(1 / 2.34e8)
    text = cli("devices", "show", "organic_ofet")
    assert text.code == 0 and "assumed" in text.out
    assert cli("devices", "show", "nope").code == 2


def test_help_lists_the_new_commands():
    proc = run_subprocess("--help")
    for command in ("map-weights", "export-weightmap", "devices"):
        assert command in proc.stdout


def test_conv_model_maps_and_simulates(cli, tmp_path):
    """A CNN (signed, normalised input → two reads; conv unrolled to Cin·kh·kw rows)."""
    _ok(cli("train-ann", "--dataset", "digits", "--model", "mnist_cnn", "--epochs", "8",
            "--out", tmp_path / "cnn", "--json", "--quiet"))
    s = _ok(cli("map-weights", "--model", tmp_path / "cnn", "--weight-bits", "8", "--evaluate",
                "--trials", "3", "--out", tmp_path / "cm", "--json", "--quiet"))["summary"]
    assert s["layers"] == ["features.0", "features.3", "classifier.0", "classifier.2"]
    assert s["accuracy_float"] > 0.85
    assert abs(s["accuracy_mapped_ideal"] - s["accuracy_float"]) <= 0.02
    assert s["accuracy_nonideal_mean"] > s["accuracy_float"] - 0.1
    layers = pq.read_table(tmp_path / "cm" / "layers.parquet").to_pylist()
    assert [(r["rows"], r["cols"]) for r in layers][:2] == [(9, 16), (144, 32)]
    assert layers[1]["tile_rows"] == 2  # 144 rows on 128-row arrays


def test_cmap_rows_in_any_order_and_damaged_cmaps(cmap, cli, tmp_path):
    import pyarrow as pa

    art, _, _ = cmap

    def shuffle(folder):
        table = pq.read_table(folder / "cmap.parquet")
        perm = np.random.default_rng(0).permutation(table.num_rows)
        pq.write_table(table.take(pa.array(perm)), folder / "cmap.parquet")

    shuffled = _rewrite(art.path, tmp_path / "shuffled", shuffle)
    _ok(cli("export-weightmap", "--cmap", shuffled, "--out", tmp_path / "a", "--json", "--quiet"))
    _ok(cli("export-weightmap", "--cmap", art.path, "--out", tmp_path / "b", "--json", "--quiet"))
    name = "weightmap-head.0.csv"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    def drop_level(folder):
        table = pq.read_table(folder / "cmap.parquet")
        pq.write_table(table.drop_columns(["level_pos"]), folder / "cmap.parquet")

    def duplicate_row(folder):
        table = pq.read_table(folder / "cmap.parquet")
        pq.write_table(pa.concat_tables([table.slice(1), table.slice(0, 1), table.slice(0, 1)]),
                       folder / "cmap.parquet")

    def not_parquet(folder):
        (folder / "layers.parquet").write_bytes(b"PAR1 but not really")

    for edit, pattern in ((drop_level, "missing column(s) level_pos"),
                          (duplicate_row, "does not hold each of its 64x10 cells once"),
                          (not_parquet, "not a readable Parquet table")):
        damaged = _rewrite(art.path, tmp_path / edit.__name__, edit)
        result = cli("export-weightmap", "--cmap", damaged, "--out", tmp_path / "out" / edit.__name__)
        assert result.code == 2 and pattern in result.err and result.err.count("\n") == 1, result.err
    assert not (tmp_path / "out").exists()


def test_export_takes_the_newest_cmap_of_the_model(cli, default_model, tmp_path, monkeypatch):
    """After `map-weights --device mycard.toml`, the README's `export-weightmap --method proj_sup_64
    --weight-bits 4` exports that map (not a new one onto rram_seed003) and says so; options no
    cmap of the model was mapped with are refused, nothing written."""
    monkeypatch.setenv("COLUMNS", "1000")  # log lines unwrapped
    art = default_model[0]
    root = tmp_path / "artifacts"
    shutil.copytree(art.path, root / "models" / art.path.name)
    preset = (load_card.__globals__["PRESET_DIR"] / "rram_seed003.toml").read_text()
    card = tmp_path / "mycard.toml"
    card.write_text(preset.replace('name = "rram_seed003"', 'name = "mycard"')
                    .replace("levels = 16", "levels = 32").replace("r_on = 2.34e8", "r_on = 1e8"))

    def run(*args):
        return cli(*args, "--method", "proj_sup_64", "--artifacts-root", root)

    w4 = _ok(run("map-weights", "--device", card, "--weight-bits", "4", "--json", "--quiet"))["artifact"]
    result = run("export-weightmap", "--weight-bits", "4")
    assert result.code == 0, result.err
    assert f"export-weightmap: the newest cmap of the model mapped with --weight-bits 4: {w4} (" in result.err
    assert (f"model {art.path.name} on 'mycard', w4 (16 levels), interleaved columns "
            f"(cmap {Path(w4).name}): weightmap-head.0.csv (640 lines)") in result.out
    (export,) = (root / "exports").iterdir()
    weights = pd.read_csv(export / "weightmap-head.0.csv")
    cells = pq.read_table(Path(w4) / "cmap.parquet").to_pandas()
    assert weights["G_pos"].tolist() == cells["G_pos"].tolist() and weights["G_pos"].max() == 1e-8
    exported = artifacts.load(export, "weightmap")
    assert exported.manifest["inputs"][0]["kind"] == "cmap" and exported.manifest["inputs"][0]["path"] == w4
    assert exported.summary["device"] == "mycard" and exported.summary["model"] == str(root / "models" /
                                                                                         art.path.name)

    # the card compared by content: another spelling of its path agrees, an edited card does not
    (tmp_path / "x").mkdir()
    spelled = tmp_path / "x" / ".." / "mycard.toml"
    again = run("export-weightmap", "--device", spelled, "--out", tmp_path / "a")
    assert again.code == 0 and f": {w4} (--cmap exports another)" in again.err, again.err
    edited = tmp_path / "edited" / "mycard.toml"
    edited.parent.mkdir()
    edited.write_text(card.read_text().replace("r_on = 1e8", "r_on = 2e8"))
    for args, pattern in ((["--weight-bits", "2"], "was mapped with --weight-bits 4"),
                          (["--device", "rram_seed003"], f"was mapped with --device {card}"),
                          (["--device", edited], "(another version of the card 'mycard')")):
        refused = run("export-weightmap", *args, "--out", tmp_path / "out" / "x", "--quiet")
        assert refused.code == 2 and refused.err.count("\n") == 1, refused.err
        assert refused.err.startswith("cimtool: error: no cmap of ") and pattern in refused.err, refused.err
        assert f"run map-weights {' '.join(map(str, args))} first" in refused.err
    assert not (tmp_path / "out").exists() and len(list((root / "exports").iterdir())) == 1

    # two cmaps: the newest that agrees
    w3 = _ok(run("map-weights", "--device", card, "--weight-bits", "3", "--json", "--quiet"))["artifact"]
    newest = run("export-weightmap", "--out", tmp_path / "b")
    assert newest.code == 0 and f"the newest cmap of the model: {w3} (" in newest.err
    assert "w3 (8 levels)" in newest.out
    older = run("export-weightmap", "--weight-bits", "4", "--out", tmp_path / "c")
    assert older.code == 0 and f": {w4} (" in older.err, older.err
    assert (tmp_path / "c" / "weightmap-head.0.csv").read_bytes() == \
        (export / "weightmap-head.0.csv").read_bytes()


def test_identical_chips_have_a_std_of_exactly_zero(cli, default_model, tmp_path, monkeypatch):
    """Ten chips of one accuracy: the summary's mean is that accuracy and its std exactly 0 (numpy
    gives a mean of 0.8990000000000002 and a std of 2.2e-16 for ten times 0.899)."""
    from cimtool.nn.network import ArrayNetwork

    monkeypatch.setattr(ArrayNetwork, "trials", lambda self, data, n, *args, **kwargs: [0.899] * n)
    s = _ok(cli("map-weights", "--model", default_model[0].path, "--evaluate", "--trials", "10",
                "--out", tmp_path / "m", "--json", "--quiet"))["summary"]
    assert s["accuracy_nonideal_mean"] == 0.899 and s["accuracy_nonideal_std"] == 0.0
