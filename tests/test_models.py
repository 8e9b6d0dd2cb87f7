import math

import numpy as np
import pytest
import torch

from cimtool.models.frontends import FRONTENDS, FeatureScaler, LinearProjection, Pool8x8
from cimtool.models.registry import build, make_spec
from cimtool.train.schedule import scaled_lr, warmup_cosine


@pytest.mark.parametrize("method", sorted(FRONTENDS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
def test_frontends_give_64_features(method, shape):
    spec = make_spec("crossbar", method, shape, 10, [])
    model = build(spec)
    x = torch.rand(5, *shape)
    assert model.features(x).shape == (5, 64)
    assert model(x).shape == (5, 10)
    assert [layer["name"] for layer in spec["crossbar_layers"]] == ["head.0"]
    assert spec["crossbar_layers"][0]["rows"] == 64 and spec["crossbar_layers"][0]["cols"] == 10


def test_avgpool_is_the_block_mean():
    x = torch.rand(2, 1, 32, 32)
    expected = x.view(2, 1, 8, 4, 8, 4).mean(dim=(3, 5)).flatten(1)
    torch.testing.assert_close(Pool8x8("avgpool")(x), expected)
    # colour images are pooled as BT.601 luma
    rgb = torch.rand(1, 3, 8, 8)
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    torch.testing.assert_close(Pool8x8("avgpool")(rgb), luma.flatten(1))


def test_pca_matches_numpy_principal_components():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(300, 1, 10, 10)) * np.linspace(3, 0.1, 100).reshape(1, 1, 10, 10),
                     dtype=torch.float32)
    proj = LinearProjection(100, 64)
    proj.fit_pca(x)
    flat = x.flatten(1).double().numpy()
    centred = flat - flat.mean(0)
    eigval = np.sort(np.linalg.eigvalsh(np.cov(centred, rowvar=False)))[::-1][:64]
    with torch.no_grad():
        z = proj(x).double()
    np.testing.assert_allclose(z.var(0, unbiased=True).numpy(), eigval, rtol=1e-3)
    w = proj.proj.weight.detach().double()
    torch.testing.assert_close(w @ w.T, torch.eye(64, dtype=torch.float64), atol=1e-5, rtol=0)
    np.testing.assert_allclose(z.mean(0).numpy(), 0, atol=1e-4)


def test_scaler_maps_train_range_to_unit_interval():
    feats = torch.randn(1000, 64, generator=torch.Generator().manual_seed(0)) * 5 + 3  # seeded: not flaky
    scaler = FeatureScaler()
    scaler.fit(feats)
    out = scaler(feats)
    assert out.min() == 0 and out.max() == 1
    assert (out.quantile(0.5, dim=0) - 0.5).abs().max() < 0.1


def test_vgg8_matches_the_neurosim_network():
    spec = make_spec("vgg8", None, (3, 32, 32), 10, [])
    layers = spec["crossbar_layers"]
    assert [(layer["type"], layer["rows"], layer["cols"]) for layer in layers] == [
        ("conv2d", 27, 128), ("conv2d", 1152, 128), ("conv2d", 1152, 256),
        ("conv2d", 2304, 256), ("conv2d", 2304, 512), ("conv2d", 4608, 512),
        ("linear", 8192, 1024), ("linear", 1024, 10),
    ]
    assert build(spec)(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    mnist = make_spec("vgg8", None, (1, 28, 28), 10, [])
    assert mnist["crossbar_layers"][-2]["rows"] == 512 * 3 * 3


def test_lr_schedule_and_linear_scaling():
    assert scaled_lr(0.04, 128) == pytest.approx(0.02)
    peak, total, warm = 1.0, 100, 10
    lrs = [warmup_cosine(s, total, warm, peak) for s in range(total)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert warmup_cosine(total, total, warm, peak) == pytest.approx(0.0)


def test_random_crop_flip_is_a_shifted_window_of_the_padded_image():
    from torch.nn import functional as F

    from cimtool.train.augment import random_crop_flip

    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (2, 2, 2, 2))
    flips = 0
    for k in range(len(x)):
        windows = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                   if torch.equal(out[k], (lambda w: w.flip(-1) if f else w)(
                       padded[k, :, dy:dy + 8, dx:dx + 8]))]
        assert windows, k
        flips += windows[0][2]
    assert 16 < flips < 48  # about half are flipped
    again = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(out, again)


def test_mac_count_and_the_cpu_compile_decision():
    from cimtool.models.macs import count_macs
    from cimtool.train.loop import should_compile

    cnn = build(make_spec("mnist_cnn", None, (1, 28, 28), 10, []))
    # conv16: 28·28·16·9, conv32: 14·14·32·16·9, fc: 1568·128, fc: 128·10
    assert count_macs(cnn, torch.rand(1, 1, 28, 28)) == 28 * 28 * 16 * 9 + 14 * 14 * 32 * 144 \
        + 1568 * 128 + 1280
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # on CPU, auto compiles only a model's own kernels (LBPNet), for long runs; never a whole model
    assert should_compile("auto", cpu, 3600.0) and not should_compile("auto", cpu, 60.0)
    assert not should_compile("auto", cpu, None)
    assert should_compile("auto", cuda, None) and should_compile("on", cpu, None)
    assert not should_compile("off", cuda, 1e9)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_smoothed_cross_entropy_matches_torch(eps):
    from torch.nn import functional as F

    from cimtool.train.loop import smoothed_cross_entropy

    logits, target = torch.randn(64, 10), torch.randint(0, 10, (64,))
    torch.testing.assert_close(smoothed_cross_entropy(logits, target, eps),
                               F.cross_entropy(logits, target, label_smoothing=eps))


def test_clip_grad_norm_matches_torch():
    from cimtool.train.loop import clip_grad_norm

    for scale in (0.01, 10.0):  # below and above the limit
        grads = [torch.randn(20, 5) * scale, torch.randn(5) * scale]
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        clip_grad_norm(grads, 1.0)
        for p, g in zip(params, grads, strict=True):
            torch.testing.assert_close(g, p.grad)
