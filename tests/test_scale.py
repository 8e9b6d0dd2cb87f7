"""Real-scale plumbing: calibration samples, batched chips, the compute device, threads, bad input."""

import json

import numpy as np
import pytest
import torch

from cimtool.data.calibration import calibration_sample
from cimtool.devices.card import load_card
from cimtool.devices.mapping import Placement, card_grid
from cimtool.errors import CimtoolError
from cimtool.models.registry import build, make_spec
from cimtool.nn.array import EFFECTS, ArrayConfig
from cimtool.nn.network import ArrayNetwork, map_model
from cimtool.train.batching import TensorData


def _cnn_network(config: ArrayConfig, budget: int | None = None) -> tuple[ArrayNetwork, TensorData]:
    torch.manual_seed(0)
    spec = make_spec("mnist_cnn", None, (1, 28, 28), 10, [])
    model = build(spec).eval()
    card = load_card("rram_seed003")
    maps = map_model(model, spec, card_grid(card, 4))
    placements = {n: Placement(*m.shape, 128, 128, "interleaved") for n, m in maps.items()}
    net = ArrayNetwork(model, maps, placements, card, config, memory_budget=budget)
    gen = torch.Generator().manual_seed(1)
    data = TensorData(torch.randint(0, 256, (48, 1, 28, 28), dtype=torch.uint8, generator=gen),
                      torch.randint(0, 10, (48,), generator=gen))
    net.calibrate(data)
    return net, data


def _logits(net: ArrayNetwork, data: TensorData, seeds: list[int]) -> torch.Tensor:
    net.program([net.chip_generator(0, s) for s in seeds])
    out: list[torch.Tensor] = []
    net._logits(data, len(data), len(seeds), out.append)
    return out[0]


@pytest.mark.parametrize("scheme", ["A", "B"])
def test_chips_sharing_a_pass_give_the_same_results_as_one_by_one(scheme):
    config = ArrayConfig(effects=EFFECTS, adc_bits=6, scheme=scheme, input_bits=8)
    net, data = _cnn_network(config)
    assert net.chips_per_pass(len(data), 3) == 3  # 48 samples fit the budget many times
    together = _logits(net, data, [0, 1, 2])
    alone = torch.cat([_logits(net, data, [s]) for s in (0, 1, 2)])
    assert torch.equal(together, alone)
    first, second = together[: len(data)], together[len(data): 2 * len(data)]
    assert not torch.allclose(first, second)  # the chips differ
    small, _ = _cnn_network(config, budget=net.bytes_per_sample * len(data))  # fits once: one chip a pass
    assert small.chips_per_pass(len(data), 3) == 1 and small.batch_size(len(data)) == len(data)
    assert small.trials(data, 3, seed=4) == net.trials(data, 3, seed=4)


def test_batches_follow_the_memory_budget_and_do_not_change_ideal_results():
    net, data = _cnn_network(ArrayConfig())
    tiny, _ = _cnn_network(ArrayConfig(), budget=net.bytes_per_sample * 5)
    assert tiny.batch_size(len(data)) == 5 and net.batch_size(len(data)) == len(data)
    assert torch.equal(tiny.predict(data), net.predict(data))


def test_an_uncalibrated_array_layer_refuses_to_run():
    net, data = _cnn_network(ArrayConfig())
    layer = net.layers[0]
    layer.converters = None
    with pytest.raises(CimtoolError, match="calibrated"):
        layer(torch.zeros(1, 1, 28, 28))


def test_calibration_sample_is_stratified_seeded_and_recorded():
    y = torch.arange(10).repeat_interleave(torch.tensor([300, 500, 700, 900, 1100, 300, 500, 700, 900, 1100]))
    train = TensorData(torch.arange(len(y)).view(-1, 1), y)
    sample, record = calibration_sample(train, 700, seed=3)
    again, record2 = calibration_sample(train, 700, seed=3)
    other, record3 = calibration_sample(train, 700, seed=4)
    assert len(sample) == 700 == record["calibration_samples"]
    assert torch.equal(sample.x, again.x) and record == record2 and record != record3
    share = torch.bincount(sample.y, minlength=10).numpy() / 700
    assert np.allclose(share, torch.bincount(y).numpy() / len(y), atol=0.01)  # stratified
    whole, rec_all = calibration_sample(train, 10**6, seed=3)
    assert len(whole) == len(y) == rec_all["calibration_samples"]
    with pytest.raises(CimtoolError, match="--calibration-samples"):
        calibration_sample(train, 0, seed=3)


def test_map_weights_calibrates_on_a_recorded_sample(cli, default_model, tmp_path):
    art, _, root = default_model
    result = cli("map-weights", "--model", art.path, "--weight-bits", "4", "--evaluate", "--trials", "2",
                 "--out", tmp_path / "c", "--json", "--quiet", "--artifacts-root", root)
    assert result.code == 0, result.err
    s = json.loads(result.out)["summary"]
    assert s["calibration_samples"] == 2048 and len(s["calibration_indices_sha256"]) == 64
    assert s["torch_device"] == "cpu"
    whole = cli("map-weights", "--model", art.path, "--weight-bits", "4", "--evaluate", "--trials", "2",
                "--calibration-samples", "100000", "--out", tmp_path / "w", "--json", "--quiet")
    w = json.loads(whole.out)["summary"]
    assert w["calibration_samples"] == 3500  # the whole mnist5k train split
    # converters set on 2,048 images or on all 3,500: the same accuracy within Monte Carlo error
    assert abs(w["accuracy_nonideal_mean"] - s["accuracy_nonideal_mean"]) < 0.02
    assert abs(w["accuracy_mapped_ideal"] - s["accuracy_mapped_ideal"]) < 0.01


BAD_SCALE = [
    (["map-weights", "--evaluate", "--calibration-samples", "0"], "--calibration-samples"),
    (["qat", "--calibration-samples", "0"], "--calibration-samples"),
    (["calibrate-threshold", "--calibration-samples", "-5"], "--calibration-samples"),
    (["sweep", "--calibration-samples", "0"], "--calibration-samples"),
    (["map-weights", "--torch-device", "tpu"], "--torch-device"),
    (["sweep", "--torch-device", "gpu"], "--torch-device"),
]


@pytest.mark.parametrize("args, message", BAD_SCALE)
def test_bad_scale_options_fail_cleanly(cli, default_model, tmp_path, args, message):
    art, _, root = default_model
    out = tmp_path / "out"
    result = cli(*args, "--model", art.path, "--out", out, "--artifacts-root", root)
    assert result.code == 2
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["map-weights", "qat", "calibrate-threshold", "sweep", "profile"])
def test_cuda_without_cuda_is_one_line(cli, default_model, tmp_path, command):
    art, _, root = default_model
    out = tmp_path / "out"
    extra = ["--evaluate"] if command == "map-weights" else []
    result = cli(command, "--model", art.path, "--torch-device", "cuda", "--out", out, *extra)
    assert result.code == 2 and "no CUDA device" in result.err
    assert len(result.err.strip().splitlines()) == 1 and not out.exists()


def test_threads_option(cli, monkeypatch):
    import os

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))
    try:
        assert cli("--threads", "1", "devices", "list").code == 0
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        bad = cli("--threads", "0", "devices", "list")
        assert bad.code == 2 and "--threads" in bad.err
    finally:
        torch.set_num_threads(before)


def test_default_threads_follow_the_cpu_affinity(monkeypatch):
    from cimtool.threads import cpu_affinity, set_threads

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert set_threads(None) == cpu_affinity() == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
