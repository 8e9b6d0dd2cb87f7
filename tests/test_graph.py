"""The graph walk (cimtool/models/graph.py): crossbar layers and NetWork.csv rows of any traced model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cimtool.errors import CimtoolError
from cimtool.models.graph import crossbar_nodes, network_rows, unmapped_nodes
from cimtool.models.lbpnet import preset
from cimtool.models.registry import MODELS, build, make_spec
from cimtool.neurosim.record import followed_by_pool, layer_inputs
from cimtool.neurosim.trace import network_csv, network_row

SNAPSHOTS = os.environ.get("CIMTOOL_NEUROSIM_SNAPSHOTS")


def _torchvision():
    try:
        import torchvision
    except Exception as e:  # a CUDA build of torchvision over the CPU torch fails at import, not only absent
        pytest.skip(f"torchvision cannot be imported ({type(e).__name__})")
    return torchvision


def _neurosim_record(name: str) -> list[list[int]]:
    if not SNAPSHOTS:
        pytest.skip("CIMTOOL_NEUROSIM_SNAPSHOTS is not set (the DNN+NeuroSim release snapshots)")
    path = Path(SNAPSHOTS) / "DNN_NeuroSim_V1.4" / "Inference_pytorch" / "NeuroSIM" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return [[int(v) for v in line.split(",")] for line in path.read_text().split()]


# --- ImageNet ResNet-18, written as torchvision's (and V1.4's models/ResNet.py) --------------------

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        identity = x
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.downsample is not None:  # after conv2, as both sources run it
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_resnet18_gives_neurosim_v14_network():
    rows = network_rows(crossbar_nodes(ResNet18(), (3, 224, 224)))
    assert rows == _neurosim_record("NetWork_ResNet18.csv")


def test_torchvision_resnet18_gives_neurosim_v14_network():
    model = _torchvision().models.resnet18(num_classes=1000)
    layers = crossbar_nodes(model, (3, 224, 224))
    assert network_rows(layers) == _neurosim_record("NetWork_ResNet18.csv")
    names = [layer.name for layer in layers[5:8]]
    assert names == ["layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0"]


def test_vgg8_gives_neurosim_v14_network():
    model = build(make_spec("vgg8", None, (3, 32, 32), 10, []))
    rows = network_rows(crossbar_nodes(model, (3, 32, 32), MODELS["vgg8"].off_array))
    assert rows == _neurosim_record("NetWork_VGG8.csv")


# --- the graph path agrees with the sequential record path on cimtool's own models -----------------

SHAPES = {"crossbar": (1, 28, 28), "vgg8": (3, 32, 32), "mnist_cnn": (1, 28, 28), "lbpnet": (1, 28, 28),
          "organic_cnn": (1, 28, 28)}
EXTRA = {"organic_cnn": {"organic": {"g_max": 1e-6, "read_voltage": 0.1, "c2c": 0.0}},
         "lbpnet": {"lbpnet": preset("paper_mnist_rp_cpu").to_dict()}}


def _sequential_network(model, spec, shape) -> str:
    """NetWork.csv as write_record builds it: module order, input sizes from forward hooks."""
    inputs = layer_inputs(model, spec, torch.zeros(1, *shape))
    layers = spec["crossbar_layers"]
    pooled = followed_by_pool(model, [layer["name"] for layer in layers])
    rows = []
    for layer in layers:
        batch = inputs[layer["name"]][0]
        height, width = batch.shape[2:] if layer["type"] == "conv2d" else (1, 1)
        rows.append(network_row(layer, height, width, pooled[layer["name"]]))
    return network_csv(rows)


@pytest.mark.parametrize("name", sorted(n for n, e in MODELS.items() if e.trainable))  # make_spec builds them
def test_builtin_models_give_the_sequential_network(name):
    shape = SHAPES[name]
    method = "avgpool_8x8" if MODELS[name].uses_method else None
    spec = make_spec(name, method, shape, 10, [32], **EXTRA.get(name, {}))
    model = build(spec).eval()
    layers = crossbar_nodes(model, shape, MODELS[name].off_array)
    assert [layer.name for layer in layers] == [layer["name"] for layer in spec["crossbar_layers"]]
    assert network_csv(network_rows(layers)) == _sequential_network(model, spec, shape)


# --- depthwise convs and concatenations ----------------------------------------------------------

class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expand, 3×3 depthwise, 1×1 project, residual add."""

    def __init__(self, c: int, t: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(c, c * t, 1, bias=False)
        self.depthwise = nn.Conv2d(c * t, c * t, 3, 2, 1, groups=c * t, bias=False)
        self.project = nn.Conv2d(c * t, c, 1, bias=False)
        self.skip = nn.Conv2d(c, c, 1, 2, bias=False)

    def forward(self, x):
        y = F.relu6(self.depthwise(F.relu6(self.expand(x))))
        return self.project(y) + self.skip(x)


class DenseBlock(nn.Module):
    def __init__(self, c: int, growth: int, n: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c + i * growth, growth, 3, padding=1) for i in range(n))

    def forward(self, x):
        features = [x]
        for conv in self.convs:
            features.append(F.relu(conv(torch.cat(features, 1))))
        return torch.cat(features, 1)


def test_depthwise_conv_rows_hold_cin_per_group():
    model = nn.Sequential(InvertedResidual(8, 6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    layers = crossbar_nodes(model, (8, 16, 16))
    assert [layer.name for layer in layers] == ["0.expand", "0.depthwise", "0.project", "0.skip", "3"]
    assert layers[1].groups == 48
    assert network_rows(layers) == [[16, 16, 8, 1, 1, 48, 0, 1], [16, 16, 1, 3, 3, 48, 0, 2],
                                    [8, 8, 48, 1, 1, 8, 0, 1], [16, 16, 8, 1, 1, 8, 1, 2],
                                    [1, 1, 8, 1, 1, 10, 0, 1]]


def test_concatenated_inputs_count_every_channel():
    model = nn.Sequential(DenseBlock(4, 3, 3), nn.MaxPool2d(2), nn.Conv2d(13, 5, 1))
    rows = network_rows(crossbar_nodes(model, (4, 8, 8)))
    assert [row[2] for row in rows] == [4, 7, 10, 13]
    assert [row[6] for row in rows] == [0, 0, 1, 0]  # the pool takes the concatenation: the last conv


def test_torchvision_mobilenet_v2_walks():
    model = _torchvision().models.mobilenet_v2()
    rows = network_rows(crossbar_nodes(model, (3, 224, 224)))
    n = sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())
    assert len(rows) == n == 53
    assert rows[0] == [224, 224, 3, 3, 3, 32, 0, 2]
    assert rows[1] == [112, 112, 1, 3, 3, 32, 0, 1]  # features.1's depthwise conv: Cin/groups = 1
    assert rows[4] == [112, 112, 1, 3, 3, 96, 0, 2]  # features.2's depthwise conv, stride 2
    assert rows[-2:] == [[7, 7, 320, 1, 1, 1280, 1, 1], [1, 1, 1280, 1, 1, 1000, 0, 1]]


def test_torchvision_densenet121_walks():
    model = _torchvision().models.densenet121()
    layers = crossbar_nodes(model, (3, 224, 224))
    assert len(layers) == sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules()) == 121
    rows = dict(zip((layer.name for layer in layers), network_rows(layers), strict=True))
    assert rows["features.conv0"] == [224, 224, 3, 7, 7, 64, 1, 2]
    assert rows["features.denseblock1.denselayer2.conv1"] == [56, 56, 96, 1, 1, 128, 0, 1]  # 64 + 32
    assert rows["features.denseblock1.denselayer6.conv2"] == [56, 56, 128, 3, 3, 32, 0, 1]
    assert rows["features.transition1.conv"] == [56, 56, 256, 1, 1, 128, 1, 1]
    assert rows["features.denseblock4.denselayer16.conv2"][6] == 1  # norm5, relu, global pool
    assert rows["classifier"] == [1, 1, 1024, 1, 1, 1000, 0, 1]


# --- refusals ------------------------------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        scores = self.q(x) @ self.k(x).transpose(-2, -1)  # both operands are activations
        return self.out(torch.softmax(scores, dim=-1) @ self.v(x))


def test_attention_matmul_is_refused_in_one_line():
    model = nn.Sequential(nn.Linear(8, 16), Attention(16))
    with pytest.raises(CimtoolError) as e:
        crossbar_nodes(model, (4, 8))
    message = str(e.value)
    assert "\n" not in message
    assert "graph node 'matmul'" in message and "--digital 1" in message, message
    assert {u.node for u in unmapped_nodes(model, (4, 8))} >= {"matmul", "softmax"}
    layers = crossbar_nodes(model, (4, 8), digital=("1",))
    assert [layer.name for layer in layers] == ["0"]
    assert network_rows(layers) == [[4, 1, 8, 1, 1, 16, 0, 1]]  # 4 positions: a 1×1 conv over them


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # control flow on a value: torch.fx cannot trace it
            return self.fc(x)
        return x


def test_walk_leaves_each_module_training_flag_as_it_was():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(), nn.Linear(4, 2)).train()
    model[1].eval()
    crossbar_nodes(model, (4,))
    assert [m.training for m in model.modules()] == [True, True, False, True, True]


def test_untraceable_module_is_named():
    model = nn.Sequential(nn.Linear(4, 4), Branchy())
    with pytest.raises(CimtoolError, match=r"torch.fx cannot trace module 1 .*--digital 1\)$"):
        crossbar_nodes(model, (4,))
    assert [layer.name for layer in crossbar_nodes(model, (4,), digital=("1",))] == ["0"]


def test_input_the_model_cannot_take_is_refused_in_one_line():
    with pytest.raises(CimtoolError, match=r"^input \(3, 8, 8\) cannot run through the model: .*channels"):
        crossbar_nodes(nn.Sequential(nn.Conv2d(1, 2, 3)), (3, 8, 8))
