"""`sweep --cost neurosim`: NeuroSim's chip energy per configuration ranks the recommendation.

One NeuroSim build serves every point (Param.cpp settings read at start-up, shown equal to a
dedicated build in test_neurosim_versions); here: every figure is the stdout it came from, every
configuration's energy is T × one step's, the recommendation is the cheapest by NeuroSim, a rerun
takes every point from the cache, and what cannot be swept this way is refused in one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cimtool import artifacts
from cimtool.neurosim.build import neurosim_geometry
from cimtool.neurosim.results import parse_stdout
from cimtool.neurosim.runner import HEADLINE, network_rows
from tests.test_neurosim_versions import _one_line, _snapshot

GRID = ("--weight-bits", "2,4,8", "--adc-bits", "3,6", "--timesteps", "1,4", "--trials", "1")


@pytest.fixture(scope="module")
def neurosim_sweep(default_model, neurosim_cache, tmp_path_factory):
    from cimtool.cli import main

    art, _, root = default_model
    base = tmp_path_factory.mktemp("sweep-ns")

    def sweep(name: str) -> artifacts.Artifact:
        try:
            main(["sweep", "--model", str(art.path), "--cost", "neurosim", *GRID, "--cache-dir",
                  str(neurosim_cache), "--out", str(base / name), "--quiet"])
        except SystemExit as exc:
            assert exc.code == 0
        return artifacts.load(base / name, "sweep")

    return sweep("first"), sweep("again")


def test_every_neurosim_figure_is_its_stdout(neurosim_sweep):
    first, _ = neurosim_sweep
    points = pd.read_parquet(first.file("neurosim.parquet"))
    assert len(points) == 3 * 2 and set(points.subarray) <= {8, 16, 32, 64, 128}
    for pt in points.to_dict("records"):
        stdout = (first.path / "neurosim" / pt["record"] / f"adc{pt['adc_bits']}.stdout.txt").read_text()
        parsed = parse_stdout(stdout)
        for metric in HEADLINE:
            assert pt[metric] == parsed.chip_value(metric), metric
        assert pt["cell_bits"] == min(pt["weight_bits"], 4)  # rram_seed003: 16 levels, cellBit ≤ WBITS
        # the default 128x128 arrays do not fit the 64→10 head's floorplan: the nearest geometry, said
        network = network_rows(first.path / "neurosim" / pt["record"] / "NetWork.csv", 1)
        subarray, note = neurosim_geometry(network, pt["weight_bits"], pt["cell_bits"], 128, 128)
        assert (pt["subarray"], pt["geometry_note"]) == (subarray, note) and "128x128" in note
    # ...and the accuracy is simulated on that geometry too: one chip
    table = pd.read_parquet(first.file("sweep.parquet")).merge(points, on=["weight_bits", "adc_bits"])
    assert (table.array_rows == table.subarray).all() and (table.array_cols == table.subarray).all()
    assert (table.neurosim_subarray == table.subarray).all()
    # levelOutput = 2^ADC bits: more ADC bits cost NeuroSim more energy on the same record
    for _, same in points.groupby("weight_bits"):
        assert same.sort_values("adc_bits").dynamic_energy_pj.is_monotonic_increasing
    record = first.path / "neurosim" / points.record[0]
    bits = np.loadtxt(record / "input1.csv", delimiter=",")
    assert bits.shape == (64,) and set(np.unique(bits)) <= {0.0, 1.0}  # ABITS 1: one spike bit per input


def test_the_recommendation_is_the_cheapest_by_neurosim(neurosim_sweep):
    first, _ = neurosim_sweep
    table = pd.read_parquet(first.file("sweep.parquet"))
    points = pd.read_parquet(first.file("neurosim.parquet"))
    merged = table.merge(points, on=["weight_bits", "adc_bits"])
    assert len(merged) == len(table) == 3 * 2 * 2 * 2
    steps = merged.dynamic_energy_pj + merged.leakage_energy_pj
    assert np.array_equal(merged.neurosim_energy_pj, merged.timesteps * steps)
    assert np.array_equal(merged.neurosim_latency_ns, merged.timesteps * merged.latency_ns)
    s = first.summary
    assert s["cost"] == "neurosim" and s["energy_key"] == "neurosim_energy_pj"
    cheapest = table[table.within_tolerance].neurosim_energy_pj.min()  # the sweep's tolerance rule
    assert s["recommended"]["neurosim_energy_pj"] == pytest.approx(cheapest)  # the summary rounds
    assert s["energy_saving"] == pytest.approx(1 - cheapest / s["best"]["neurosim_energy_pj"])


def test_a_rerun_takes_every_point_from_the_cache(neurosim_sweep):
    first, again = neurosim_sweep
    assert first.summary["neurosim_cached"] == 0 and again.summary["neurosim_cached"] == 6
    a, b = (pd.read_parquet(x.file("neurosim.parquet")).drop(columns="cached") for x in (first, again))
    pd.testing.assert_frame_equal(a, b)
    assert first.file("sweep.parquet").read_bytes() == again.file("sweep.parquet").read_bytes()


def test_what_cannot_be_swept_by_neurosim_is_one_line(default_model, tmp_path, cli):
    art, _, _ = default_model
    out = tmp_path / "out"
    _one_line(cli("sweep", "--model", art.path, "--cost", "spice", "--out", out, "--quiet"), "--cost")
    _one_line(cli("sweep", "--model", art.path, "--cost", "neurosim", "--neurosim-timeout", "0", "--out", out,
                  "--quiet"), "--neurosim-timeout")
    assert not out.exists()
    v21 = _snapshot("V2.1", "Training_pytorch")
    _one_line(cli("sweep", "--model", art.path, "--cost", "neurosim", "--neurosim", v21, "--out", out,
                  "--quiet"), "training estimator", "V1.3 or V1.4")
    assert not out.exists()


def test_the_swept_arrays_are_neurosim_s_subarray(default_model, neurosim_cache, tmp_path, cli):
    """8x8 arrays, which NeuroSim takes for the 64→10 head at 8 bits (its auto rule would pick 16):
    NeuroSim runs on them, with no note."""
    art, _, _ = default_model
    out = tmp_path / "on8"
    result = cli("sweep", "--model", art.path, "--cost", "neurosim", "--weight-bits", "8", "--adc-bits", "3",
                 "--timesteps", "1", "--trials", "1", "--scheme", "B", "--array-rows", "8", "--array-cols",
                 "8", "--cache-dir", neurosim_cache, "--out", out, "--quiet")
    assert result.code == 0, result.err
    points = pd.read_parquet(artifacts.load(out, "sweep").file("neurosim.parquet"))
    assert points[["subarray", "geometry_note"]].to_dict("records") == [{"subarray": 8, "geometry_note": ""}]

