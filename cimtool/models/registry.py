"""Model registry: ``--model NAME`` (and ``--method`` for the crossbar model's front-end).

A model artifact stores its architecture as a JSON spec; ``build`` turns a spec back into a
module, so weights (safetensors) can be loaded without code execution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cimtool.data.optical import OpticalFrontEnd
from cimtool.models.cnn import MNIST_CNN_PLAN, VGG8_PLAN, ConvNet
from cimtool.models.frontends import FRONTENDS, N_FEATURES, FeatureScaler
from cimtool.models.lbpnet import LBPNet, LbpNetConfig
from cimtool.models.sources import KIND as USER_KIND
from cimtool.models.sources import build_user
from cimtool.nn.organic import OrganicConv2d, OrganicLinear, PulseCurve, Synapse, layer_seed


class FrontEndHead(nn.Module):
    """Off-array front-end (features scaled to [0, 1]) followed by the crossbar classifier head."""

    def __init__(self, frontend: nn.Module, hidden: list[int], num_classes: int,
                 optical: nn.Module | None = None) -> None:
        super().__init__()
        self.optical = optical or nn.Identity()  # before the front-end (docs/physics.md#optical-front-end)
        self.frontend = frontend
        self.scaler = FeatureScaler(N_FEATURES)
        dims = [N_FEATURES, *hidden, num_classes]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(nn.Linear(d_in, d_out))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.head = nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaler(self.frontend(self.optical(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def snn_parts(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[nn.Module]]:
        """(digital prefix, the layers after it in order): what a spiking conversion needs."""
        return self.features, list(self.head)


def module_layers(model: nn.Module, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Crossbar layers in module order: execution order for cimtool's own (sequential) models."""
    return crossbar_layers(model, tuple(spec.get("off_array", ())))


def graph_layers(model: nn.Module, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Crossbar layers in execution order, from the fx graph: any model, residual or not; an op no
    crossbar maps is refused in one line naming it (``graph.crossbar_nodes``)."""
    from cimtool.models.graph import crossbar_nodes

    by_name = {layer["name"]: layer for layer in module_layers(model, spec)}
    called = dict.fromkeys(n.name for n in crossbar_nodes(model, tuple(spec["input_shape"]),
                                                          tuple(spec.get("off_array", ()))))
    return [by_name[name] for name in called]  # a module called twice stores one weight


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    build: Callable[[dict[str, Any]], nn.Module]
    off_array: tuple[str, ...]  # module prefixes computed digitally, not on the crossbar
    default_lr: float  # peak AdamW learning rate per 256 samples that trains it well
    uses_method: bool = False
    min_size: int = 1  # smallest image side the architecture accepts (its max-pools halve it)
    # its crossbar layers as arch.json records them (load_model checks the rebuilt model against them)
    layers: Callable[[nn.Module, dict[str, Any]], list[dict[str, Any]]] = module_layers
    trainable: bool = True  # train-ann builds it from --model NAME (a user model is imported instead)


def _optical(spec: dict[str, Any]) -> nn.Module | None:
    cfg = spec.get("optical")
    if not cfg:
        return None
    return OpticalFrontEnd(spec["input_shape"][0], tuple(cfg["responsivity"]), cfg["max_photons"],
                           cfg.get("dark_current", 0.0), cfg.get("full_well"))


def _build_organic(spec: dict[str, Any]) -> nn.Module:
    """mnist_cnn's layout with organic synapse layers (docs/physics.md#organic-synapse-layers)."""
    syn = spec["organic"]
    # inference needs neither g_min (it cancels in the pair) nor the variation (drawn in training only)
    synapse = Synapse(syn.get("g_min", 0.0), syn["g_max"], syn["read_voltage"], syn["c2c"],
                      syn.get("variation_model", "lognormal"))
    net = ConvNet(tuple(spec["input_shape"]), MNIST_CNN_PLAN, [128], spec["num_classes"], _optical(spec),
                  conv=lambda cin, cout: OrganicConv2d(cin, cout, 3, synapse),
                  linear=lambda d_in, d_out: OrganicLinear(d_in, d_out, synapse))
    u = syn.get("update")  # --organic-update pulses: steps reach the synapses as pulses on the curve
    for i, layer in enumerate(m for m in net.modules() if isinstance(m, (OrganicConv2d, OrganicLinear))):
        layer.index, layer.seed = i, layer_seed(syn.get("seed", 0), i)
        if u:
            layer.curve = PulseCurve(u["nl_ltp"], u["nl_ltd"], u["pulses_ltp"], u["pulses_ltd"])
    return net


def _build_crossbar(spec: dict[str, Any]) -> nn.Module:
    frontend = FRONTENDS[spec["method"]].build(tuple(spec["input_shape"]))
    return FrontEndHead(frontend, list(spec["hidden"]), spec["num_classes"], _optical(spec))


MODELS: dict[str, ModelEntry] = {
    m.name: m
    for m in [
        ModelEntry("crossbar", "off-array front-end (--method) + 64-row crossbar head "
                   "(64→10, --hidden N for an MLP)", _build_crossbar,
                   off_array=("frontend", "scaler"), default_lr=4e-2, uses_method=True),
        ModelEntry("vgg8", "DNN+NeuroSim VGG8: conv128 conv128 pool conv256 conv256 pool "
                   "conv512 conv512 pool fc1024 fc10",
                   lambda s: ConvNet(tuple(s["input_shape"]), VGG8_PLAN, [1024], s["num_classes"],
                                     _optical(s)),
                   off_array=("normalize",), default_lr=2e-3, min_size=8),
        ModelEntry("mnist_cnn", "small CNN: conv16 pool conv32 pool fc128 fc10",
                   lambda s: ConvNet(tuple(s["input_shape"]), MNIST_CNN_PLAN, [128],
                                     s["num_classes"], _optical(s)),
                   off_array=("normalize",), default_lr=2e-3, min_size=4),
        ModelEntry("lbpnet", "LBPNet: learnable local binary patterns + random-projection fusion "
                   "(MAC-free stages, digital) → crossbar MLP head (--preset)",
                   lambda s: LBPNet(tuple(s["input_shape"]), s["num_classes"],
                                    LbpNetConfig.from_dict(s["lbpnet"]), _optical(s)),
                   off_array=("normalize", "stages"), default_lr=1e-3, min_size=4),
        ModelEntry("organic_cnn", "mnist_cnn with organic optoelectronic synapse layers: "
                   "differential pairs, nA read-out currents, C2C noise, renormalised read-out, "
                   "hard-clamped conductances "
                   "(--device)", _build_organic, off_array=("normalize",), default_lr=2e-3, min_size=4),
        ModelEntry(USER_KIND, "your own network (cimtool import-model --model FILE.py:FUNCTION): the "
                   "source its spec records, checked by hash; off-array: its --digital modules",
                   build_user, off_array=(), default_lr=2e-3, layers=graph_layers, trainable=False),
    ]
}


def build(spec: dict[str, Any]) -> nn.Module:
    return MODELS[spec["model"]].build(spec)


def crossbar_layers(model: nn.Module, off_array: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every Linear/Conv2d outside the off-array part, with its crossbar shape (rows × cols)."""
    layers = []
    for name, module in model.named_modules():
        if any(name == p or name.startswith(p + ".") for p in off_array):
            continue
        if isinstance(module, nn.Linear):
            layers.append({"name": name, "type": "linear", "in_features": module.in_features,
                           "out_features": module.out_features, "bias": module.bias is not None,
                           "rows": module.in_features, "cols": module.out_features})
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            layers.append({"name": name, "type": "conv2d", "in_channels": module.in_channels,
                           "out_channels": module.out_channels, "kernel_size": [kh, kw],
                           "stride": list(module.stride), "padding": list(module.padding),
                           "bias": module.bias is not None,
                           "rows": module.in_channels * kh * kw, "cols": module.out_channels})
    return layers


def make_spec(model_name: str, method: str | None, input_shape: tuple[int, int, int],
              num_classes: int, hidden: list[int], optical: dict[str, Any] | None = None,
              organic: dict[str, Any] | None = None, lbpnet: dict[str, Any] | None = None) -> dict[str, Any]:
    entry = MODELS[model_name]
    spec: dict[str, Any] = {"model": model_name, "input_shape": list(input_shape),
                            "num_classes": num_classes}
    if optical:
        spec["optical"] = optical
    if organic:
        spec["organic"] = organic
    if lbpnet:
        spec["lbpnet"] = lbpnet
    if entry.uses_method:
        spec.update(method=method, hidden=hidden, frontend_out_features=N_FEATURES)
    model = build(spec)
    spec["off_array"] = list(entry.off_array) + (["optical"] if optical else [])
    spec["crossbar_layers"] = crossbar_layers(model, entry.off_array)
    spec["bias_note"] = "biases are added digitally after the array readout"
    return spec
