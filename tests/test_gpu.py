"""CUDA paths (bf16 autocast, torch.compile on GPU). Skipped cleanly on machines without CUDA."""

import json

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_autocast_is_bf16_on_cuda():
    from cimtool.train.loop import autocast

    layer = torch.nn.Linear(8, 4).cuda()
    with autocast(torch.device("cuda")):
        out = layer(torch.rand(2, 8, device="cuda"))
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("args, floor", [
    (["--model", "mnist_cnn", "--epochs", "4"], 0.95),
    (["--model", "organic_cnn", "--front-end", "optical", "--epochs", "4"], 0.9),
    ([], 0.88),
])
def test_train_ann_on_cuda_compiled(cli, tmp_path, args, floor):
    result = cli("train-ann", "--torch-device", "cuda", "--out", tmp_path / "m", "--quiet", "--json", *args)
    assert result.code == 0, result.err
    summary = json.loads(result.out)["summary"]
    assert summary["compiled"] is True and summary["torch_device"] == "cuda"
    assert summary["test_accuracy"] >= floor
