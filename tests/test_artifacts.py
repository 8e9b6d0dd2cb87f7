import json
from pathlib import Path

import pytest

from cimtool import artifacts
from cimtool.errors import CimtoolError


@pytest.fixture(autouse=True)
def toy_kind(monkeypatch):
    """A kind without required files, for testing the store itself."""
    monkeypatch.setitem(artifacts.SCHEMAS, "toy", 1)


def _make(out, params=None, payload=b"hello"):
    with artifacts.ArtifactWriter(out, "toy", params or {"a": 1}) as w:
        w.path("data.bin").write_bytes(payload)
        return w.commit(inputs=[], summary={"test_accuracy": 0.5})


def test_roundtrip_records_hashes_and_params(tmp_path):
    path = _make(tmp_path / "art")
    art = artifacts.load(path, "toy")
    m = art.manifest
    assert m["schema"] == "cimtool.toy/1" and m["kind"] == "toy"
    assert m["params"] == {"a": 1}
    assert m["files"]["data.bin"] == {"sha256": artifacts.sha256_file(path / "data.bin"), "bytes": 5}
    assert set(m["libraries"]) >= {"python", "torch", "numpy"}
    assert not (tmp_path / "art.partial").exists()
    assert art.as_input("model")["manifest_sha256"] == artifacts.sha256_file(path / "manifest.json")


def test_altered_payload_is_refused(tmp_path):
    path = _make(tmp_path / "art")
    (path / "data.bin").write_bytes(b"hellO")
    with pytest.raises(CimtoolError, match="sha256 differs"):
        artifacts.load(path)
    (path / "data.bin").write_bytes(b"hello!")
    with pytest.raises(CimtoolError, match="size differs"):
        artifacts.load(path)
    (path / "data.bin").unlink()
    with pytest.raises(CimtoolError, match="missing"):
        artifacts.load(path)


@pytest.mark.parametrize("schema, message", [
    ("cimtool.toy/2", "newer than this cimtool"),
    ("cimtool.toy/1\n", "unrecognised schema"),
    ("cimtool.toy/" + "9" * 5000, "unrecognised schema"),
    ("cimtool.spaceship/1", "unknown artifact kind"),
    ("something-else", "unrecognised schema"),
])
def test_bad_schema_is_refused(tmp_path, schema, message):
    path = _make(tmp_path / "art")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema"] = schema
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CimtoolError, match=message):
        artifacts.load(path)


def test_not_an_artifact(tmp_path):
    with pytest.raises(CimtoolError, match="no such artifact"):
        artifacts.load(tmp_path / "nope")
    with pytest.raises(CimtoolError, match="no manifest.json"):
        artifacts.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CimtoolError, match="corrupt manifest"):
        artifacts.load(tmp_path)


def test_wrong_kind_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(artifacts.SCHEMAS, "other", 1)
    with artifacts.ArtifactWriter(tmp_path / "o", "other", {}) as w:
        w.commit([], {})
    with pytest.raises(CimtoolError, match="expected a 'toy' artifact"):
        artifacts.load(tmp_path / "o", "toy")


def test_failure_leaves_nothing_and_refuses_overwrite(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(RuntimeError):
        with artifacts.ArtifactWriter(out, "toy", {}) as w:
            w.path("x").write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    _make(out)
    with pytest.raises(CimtoolError, match="already exists"):
        _make(out)
    with artifacts.ArtifactWriter(out, "toy", {"b": 2}, force=True) as w:
        w.path("y").write_text("new")
        w.commit([], {})
    assert artifacts.load(out).params == {"b": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_interrupted_run_is_resumable_not_readable(tmp_path):
    out = tmp_path / "models" / "run"
    with pytest.raises(KeyboardInterrupt):
        with artifacts.ArtifactWriter(out, "toy", {"p": 1}, keep_on_interrupt=True) as w:
            (w.scratch / "ckpt").write_text("epoch 3")
            raise KeyboardInterrupt
    partial = tmp_path / "models" / "run.partial"
    assert partial.is_dir()
    with pytest.raises(CimtoolError, match="unfinished artifact"):
        artifacts.load(partial)
    found = artifacts.find_resumable(tmp_path / "models", artifacts.sha256_json({"p": 1}))
    assert found == partial
    assert artifacts.find_resumable(tmp_path / "models", artifacts.sha256_json({"p": 2})) is None
    with artifacts.ArtifactWriter(out, "toy", {"p": 1}, resume=True) as w:
        assert w.resumed and (w.scratch / "ckpt").read_text() == "epoch 3"
        w.commit([], {})
    assert "scratch/ckpt" not in artifacts.load(out).manifest["files"]


def test_force_replaces_only_artifacts(tmp_path):
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "x.txt").write_text("keep me")
    with pytest.raises(CimtoolError, match="not a cimtool artifact"):
        artifacts.check_out(precious, force=True, kind="toy")
    artifacts.check_out(tmp_path / "empty", force=True, kind="toy")
    with pytest.raises(CimtoolError, match="not a usable"):
        artifacts.check_out(tmp_path / "..", force=True, kind="toy")
    assert (precious / "x.txt").read_text() == "keep me"


def test_force_replaces_only_the_kind_the_stage_writes(cli, default_model, tmp_path):
    """devices fit --out <a model artifact> --force must not replace the model by a device artifact."""
    import shutil

    model = tmp_path / "m"
    shutil.copytree(default_model[0].path, model)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    curve = Path(__file__).resolve().parents[2] / "shared" / "data" / "device_curves" / "gong_et_al.csv"
    if not curve.is_file():
        pytest.skip("the measured curve (../shared/data/device_curves) is absent")
    result = cli("devices", "fit", curve, "--g-min", "1e-6", "--g-max", "1e-5", "--out", model, "--force")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "is a 'model' artifact; --force replaces only a 'device' artifact" in result.err
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(files=[]), "'files' must be a dict"),
    (lambda m: m.update(summary=[1]), "'summary' must be a dict"),
    (lambda m: m.update(inputs=["x"]), "every entry of 'inputs'"),
    (lambda m: m["files"].update({"../escape": {"sha256": "", "bytes": 0}}), "outside the artifact"),
    (lambda m: m["files"].update({"/etc/hostname": {"sha256": "", "bytes": 0}}), "outside the artifact"),
    (lambda m: m["files"].update({"data.bin": "abc"}), "must be an object"),
])
def test_malformed_manifest_is_a_user_error(tmp_path, edit, message):
    path = _make(tmp_path / "art")
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CimtoolError, match=message):
        artifacts.load(path)


def test_required_payload_files(tmp_path):
    path = _make(tmp_path / "art")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(schema="cimtool.model/1", kind="model")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CimtoolError, match="needs weights.safetensors"):
        artifacts.load(path)


def test_summary_floats_carry_no_arithmetic_noise(tmp_path):
    """0.1 + 0.2 is written 0.3, a mean of 0.8990000000000002 is 0.899; 12 significant digits stay
    (1/3, a conductance in siemens), and the params keep every digit (readers rebuild from them)."""
    import numpy as np

    summary = {"sum": 0.1 + 0.2, "mean": np.float64(0.899) + np.float64(2.2e-16), "third": 1 / 3,
               "nested": {"g_max": [1 / 2.34e8], "n": 3, "ok": True, "none": None}, "zero": 0.0}
    assert summary["sum"] != 0.3 and summary["mean"] != 0.899  # the noise is there to begin with
    with artifacts.ArtifactWriter(tmp_path / "art", "toy", {"x": 0.1 + 0.2}) as w:
        w.commit([], summary)
    written = (tmp_path / "art" / "manifest.json").read_text().split('"summary"')[1]
    assert '"sum": 0.3,' in written and '"mean": 0.899,' in written
    art = artifacts.load(tmp_path / "art")
    s = art.summary
    assert s["sum"] == 0.3 and s["mean"] == 0.899 and s["zero"] == 0.0 and s["third"] == 0.333333333333
    assert s["nested"] == {"g_max": [4.27350427350e-09], "n": 3, "ok": True, "none": None}
    assert abs(s["nested"]["g_max"][0] * 2.34e8 - 1) < 1e-12
    assert art.params == {"x": 0.1 + 0.2}


def test_readme_names_where_report_writes():
    """The quick start's `cimtool report` line names the folder the report stage writes to:
    <root>/<the report kind's folder>/report-<UTC time>/report.html."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (line,) = [s for s in readme.splitlines() if re.match(r"cimtool report +#", s)]
    written = artifacts.default_out(Path("artifacts"), "report", "report")
    expected = re.sub(r"\d{8}-\d{6}$", "<UTC time>", written.as_posix()) + "/report.html"
    assert line.split("→ ")[1].strip() == expected
