"""`cimtool report` and the pipelines: mnist_snn_cim.sh end to end in smoke mode, resumed, reported."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cimtool import artifacts

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "pipelines"


def _run_pipeline(script: str, out: Path, cache: Path, **env) -> tuple[subprocess.CompletedProcess, float]:
    environment = {**os.environ, "OUT": str(out), "CIMTOOL_CACHE": str(cache), **env,
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(PIPELINES / script)], capture_output=True, text=True, env=environment,
                          timeout=900)
    return proc, time.perf_counter() - t0


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    if shutil.which("bash") is None:
        pytest.skip("the pipelines are bash scripts")
    from cimtool.neurosim.build import bundled_source

    if bundled_source() is None or shutil.which("make") is None:
        pytest.skip("the pipeline runs NeuroSim: needs hwcomponents-neurosim and make/g++")
    base = tmp_path_factory.mktemp("pipeline")
    out, cache = base / "run", base / "cache"
    first, first_s = _run_pipeline("mnist_snn_cim.sh", out, cache, QUICK="1")
    assert first.returncode == 0, first.stderr[-3000:]
    return out, cache, first, first_s


def test_pipeline_smoke_run(pipeline):
    out, _, first, first_s = pipeline
    for stage in ("model", "qmodel", "snn", "sweep", "cmap", "weightmap", "trace", "neurosim", "report"):
        artifacts.load(out / stage)  # every stage wrote a verified artifact
    assert first_s < 600, f"QUICK run took {first_s:.0f} s"
    assert "[run ] report" in first.stderr


def test_rerun_skips_every_stage(pipeline):
    out, cache, first, first_s = pipeline
    again, again_s = _run_pipeline("mnist_snn_cim.sh", out, cache, QUICK="1")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("[skip]") == 9 and "[run ]" not in again.stderr
    assert again_s <= 0.10 * first_s, f"rerun {again_s:.1f} s vs first {first_s:.1f} s"


def test_changed_upstream_reruns_downstream(pipeline, tmp_path):
    """A stage whose input artifact changed does not verify: it runs again."""
    out, cache, _, _ = pipeline
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    for stage in ("snn", "sweep", "cmap", "weightmap", "trace", "neurosim", "report"):  # upstream first
        _repoint_inputs(copy / stage, out, copy)
    settled, _ = _run_pipeline("mnist_snn_cim.sh", copy, cache, QUICK="1")
    assert settled.stderr.count("[skip]") == 9, settled.stderr[-2000:]
    manifest = json.loads((copy / "sweep" / "manifest.json").read_text())
    manifest["summary"]["note"] = "edited"  # the sweep still verifies, but it is not the report's input
    (copy / "sweep" / "manifest.json").write_text(json.dumps(manifest))
    again, _ = _run_pipeline("mnist_snn_cim.sh", copy, cache, QUICK="1")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("[skip]") == 8 and "[run ] report" in again.stderr


def _repoint_inputs(artifact_dir: Path, old: Path, new: Path) -> None:
    """Rewrite input paths of a copied artifact (and keep hashes consistent), as if made there."""
    manifest_path = artifact_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest.get("inputs", []):
        if entry.get("path", "").startswith(str(old)):
            entry["path"] = str(new) + entry["path"][len(str(old)):]
            entry["manifest_sha256"] = artifacts.sha256_file(Path(entry["path"]) / "manifest.json")
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def test_report_accuracy_table_matches_manifests(pipeline):
    out, _, _, _ = pipeline
    report = artifacts.load(out / "report", "report")
    table = pd.read_parquet(report.file("accuracy.parquet"))
    assert set(table["stage"]) >= {"model", "qmodel", "snn", "cmap", "sweep"}
    html_text = report.file("report.html").read_text()
    for row in table.itertuples():
        source = artifacts.load(out / row.artifact)
        value = source.summary
        for part in row.key.removeprefix("summary.").split("."):
            value = value[part]
        assert row.accuracy == value, (row.artifact, row.key)
        assert row.manifest_sha256 == source.manifest_sha256()
        assert f"<td>{row.accuracy:.4f}</td>" in html_text
    sources = pd.read_parquet(report.file("sources.parquet"))
    assert len(sources) == 7


def test_report_names_chip_geometry_card_and_snn_curve(pipeline):
    """Every accuracy row names its device, bits and effects; the report says whether map-weights and
    NeuroSim describe the same arrays; the card and the SNN's accuracy vs T are shown."""
    out, _, _, _ = pipeline
    report = artifacts.load(out / "report", "report")
    table = pd.read_parquet(report.file("accuracy.parquet"))
    assert table["chip"].str.len().min() > 0
    cmap, neurosim = artifacts.load(out / "cmap"), artifacts.load(out / "neurosim")
    device = cmap.summary["device"]
    assert all(chip.startswith(f"{device}, w4, ") for chip in table.loc[table["stage"] == "cmap", "chip"])
    md = report.file("report.md").read_text()
    mapped = (cmap.params["mapping"]["array_rows"], cmap.params["mapping"]["array_cols"])
    s = neurosim.summary
    costed = (s.get("array_rows", s["subarray"]), s.get("array_cols", s["subarray_cols"]))
    if mapped == costed:
        assert f"Accuracy and NeuroSim figures are for the same {mapped[0]}×{mapped[1]} arrays." in md
    else:
        assert "Accuracy and NeuroSim figures are for different arrays" in md
        assert f"cmap {mapped[0]}×{mapped[1]}" in md and f"neurosim {costed[0]}×{costed[1]}" in md
    assert "\n## Device cards\n" in md and f"'{device}'" in md
    curve = pd.read_parquet(artifacts.load(out / "snn").file("accuracy_vs_t.parquet"))
    section = md.split("\n## Spiking networks: accuracy vs T (val)\n")[1].split("\n## ")[0]
    for steps, accuracy in zip(curve["timesteps"], curve["val_accuracy"], strict=True):
        assert f"| {steps} | {accuracy:.4f} |" in section
    assert "snn-accuracy-vs-t.png" in section


def test_report_html_is_self_contained_with_valid_images(pipeline):
    import matplotlib.image as mpimg

    out, _, _, _ = pipeline
    html_text = (out / "report" / "report.html").read_text()
    images = re.findall(r"<img [^>]*src='data:image/png;base64,([^']+)'", html_text)
    assert len(images) >= 6  # curves, heat-map, vs T, Pareto, levels, NeuroSim bars
    for data in images:
        pixels = mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0.01
    assert "src='http" not in html_text and "src=\"http" not in html_text  # nothing external
    names = {p.name for p in (out / "report" / "figures").iterdir()}
    assert {"neurosim-area.png", "neurosim-energy.png"} <= names
    assert any(n.startswith("sweep-heatmap-") for n in names) and any(n.startswith("levels-") for n in names)


def test_report_bad_input(tmp_path, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("report", empty, "--quiet")
    assert result.code == 2 and "no cimtool artifacts" in result.err
    result = cli("report", tmp_path / "missing", "--quiet")
    assert result.code == 2 and "no such" in result.err


def test_report_refuses_newer_schema(default_model, tmp_path, cli):
    art, _, _ = default_model
    copy = tmp_path / "model"
    shutil.copytree(art.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema"] = "cimtool.model/99"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = cli("report", tmp_path, "--out", tmp_path / "r", "--quiet")
    assert result.code == 2 and "newer" in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_other_pipelines_parse_and_check_their_input():
    for script in ("mnist_snn_cim.sh", "cifar_vgg8_neurosim.sh", "organic_optical.sh",
                   "fashion_snn_levels.sh"):
        assert subprocess.run(["bash", "-n", str(PIPELINES / script)]).returncode == 0
        head = (PIPELINES / script).read_text().splitlines()[1]
        assert head.startswith("# ") and len(head) > 20  # a header saying what it produces
    env = {k: v for k, v in os.environ.items() if k != "DATA_DIR"}
    proc = subprocess.run(["bash", str(PIPELINES / "cifar_vgg8_neurosim.sh")], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 2 and "DATA_DIR" in proc.stderr
