"""Crossbar layers of any PyTorch model, from its torch.fx graph (docs/physics.md#networkcsv-from-a-graph).

- :func:`crossbar_nodes`: every Conv2d and Linear call of the traced graph, in execution order,
  with its input size and NeuroSim's followed-by-pool flag; refuses an op it cannot map.
- :func:`unmapped_nodes`: the graph nodes that have no crossbar mapping (what the refusal names).
- :func:`network_rows`: those layers as NeuroSim ``NetWork.csv`` rows.

Unlike :func:`cimtool.models.registry.crossbar_layers` (module order, which is execution order only
for a sequential model), the graph sees residual adds, concatenations and functional ops.
"""

from __future__ import annotations

import contextlib
import io
import math
import operator
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn import functional as F

from cimtool.errors import CimtoolError

# Ops computed digitally around the arrays, with nothing to store in a crossbar: a graph made of
# these and of Conv2d/Linear maps completely. Anything else is refused by name (see _unmapped).
POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
POOL_FUNCTIONS = (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d)
HANDLED_MODULES = (*POOL_MODULES, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Dropout,
                   nn.Identity, nn.Flatten)
HANDLED_FUNCTIONS = (*POOL_FUNCTIONS, operator.add, operator.iadd, torch.add, torch.cat, torch.concat,
                     torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.relu, F.relu,
                     F.relu6, F.hardtanh, F.batch_norm, F.dropout, operator.getitem, getattr)
# mean: a global average pool written as a reduction (LBPNet's features)
HANDLED_METHODS = ("add", "add_", "flatten", "view", "reshape", "transpose", "permute", "relu", "relu_",
                   "size", "contiguous", "mean")
# Products whose both operands are activations: no fixed weights to program into a crossbar
ACTIVATION_PRODUCTS = (torch.matmul, operator.matmul, torch.bmm, torch.mm, torch.einsum)


@dataclass(frozen=True)
class LayerInfo:
    """One Conv2d or Linear call of the graph. A linear layer has kernel 1×1, stride 1 and
    ``in_channels`` = in_features; its input size is the positions it is applied at: 1×1 for one
    vector (NeuroSim's ``1,1,IN,1,1,OUT,0,1``), T×1 for a sequence, H×W for a channels-last map."""

    name: str  # the module's qualified name (a module called twice gives two layers)
    type: str  # "conv2d" or "linear", as in registry.crossbar_layers
    node: str  # the graph node's name
    height: int  # input H×W, unpadded (a linear layer: its positions)
    width: int
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    pooled: bool  # NeuroSim's followedByPool: a pooling op takes this layer's output


@dataclass(frozen=True)
class Unmapped:
    """A graph node with no crossbar mapping, and the innermost module it runs in ("" at top level)."""

    node: str
    op: str
    module: str
    why: str

    def refusal(self) -> str:
        where = f" in module {self.module}" if self.module else " in the model's own forward"
        out = (f"compute {self.module} digitally (--digital {self.module})" if self.module else
               "move it into a module and compute that digitally (--digital NAME)")
        return f"graph node '{self.node}' ({self.op}{where}) {self.why}: {out}"


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class _Tracer(fx.Tracer):
    """Keeps crossbar layers (their subclasses too: organic synapses) and digital modules whole."""

    def __init__(self, digital: tuple[str, ...]) -> None:
        super().__init__()
        self.digital = digital

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (isinstance(m, nn.Conv2d | nn.Linear) or _within(qualname, self.digital)
                or super().is_leaf_module(m, qualname))


def _traced(model: nn.Module, input_shape: tuple[int, ...], digital: tuple[str, ...]) -> fx.GraphModule:
    """The model's graph, each node's output shape in ``node.meta['tensor_meta']`` (batch of 1)."""
    from torch.fx.passes.shape_prop import ShapeProp

    tracer = _Tracer(digital)
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises many types; the user needs the module, not the type
        where = next(reversed(tracer.module_stack), "")
        first = _first_line(e).split(". ")[0]  # fx adds paragraphs of advice
        if where:
            raise CimtoolError(f"torch.fx cannot trace module {where} ({first}): "
                               f"compute it digitally (--digital {where})") from None
        raise CimtoolError(f"torch.fx cannot trace the model's own forward: {first}") from None
    gm = fx.GraphModule(tracer.root, graph)
    training = {m: m.training for m in model.modules()}  # given back as they were, module by module
    model.eval()  # BatchNorm on a batch of 1, and no dropout draws
    try:
        # fake tensors: shapes without allocating a single activation (nor copying the weights);
        # ShapeProp prints a traceback of a failing node before raising: the error says enough
        from torch._subclasses.fake_tensor import FakeTensorMode

        with contextlib.redirect_stderr(io.StringIO()):
            try:
                ShapeProp(gm, fake_mode=FakeTensorMode()).propagate(torch.zeros(1, *input_shape))
            except Exception:  # an op that needs real values (LBPNet's offsets, a digital module): run it
                with torch.no_grad():
                    ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    except Exception as e:  # ShapeProp wraps the op's own error, which says what went wrong
        raise CimtoolError(f"input {tuple(input_shape)} cannot run through the model: "
                           f"{_first_line(e.__cause__ or e)}") from None
    finally:
        for m, flag in training.items():
            m.training = flag
    return gm


def _op(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_method":
        return f".{node.target}()"
    return getattr(node.target, "__name__", str(node.target))


def _kind(node: fx.Node, gm: fx.GraphModule, digital: tuple[str, ...]) -> str:
    """'crossbar', 'pool', 'handled' or the reason the node is not mapped."""
    if node.op in ("placeholder", "output", "get_attr"):  # torch.fx's ops: graph input, result, constant
        return "handled"
    if node.op == "call_module":
        if _within(node.target, digital):
            return "handled"
        module = gm.get_submodule(node.target)
        if isinstance(module, nn.Conv2d | nn.Linear):
            return "crossbar"
        if isinstance(module, POOL_MODULES):
            return "pool"
        return "handled" if isinstance(module, HANDLED_MODULES) else "is not an op cimtool maps"
    if node.op == "call_method":
        if node.target in ("matmul", "bmm"):
            return "multiplies two activations (attention-style; no fixed weights to store)"
        return "handled" if node.target in HANDLED_METHODS else "is not an op cimtool maps"
    if node.target in ACTIVATION_PRODUCTS:
        return "multiplies two activations (attention-style; no fixed weights to store)"
    if node.target in POOL_FUNCTIONS:
        return "pool"
    return "handled" if node.target in HANDLED_FUNCTIONS else "is not an op cimtool maps"


def _module_of(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack), "")


def _unmapped(gm: fx.GraphModule, digital: tuple[str, ...]) -> list[Unmapped]:
    out = []
    for node in gm.graph.nodes:
        kind = _kind(node, gm, digital)
        if kind not in ("crossbar", "pool", "handled"):
            owner = node.target if node.op == "call_module" else _module_of(node)
            out.append(Unmapped(node.name, _op(node, gm), owner, kind))
    return out


def unmapped_nodes(model: nn.Module, input_shape: tuple[int, ...],
                   digital: tuple[str, ...] = ()) -> list[Unmapped]:
    """The graph nodes of ``model`` (input ``input_shape`` without the batch) that no crossbar maps,
    ``digital`` module prefixes left out (computed off the arrays)."""
    return _unmapped(_traced(model, tuple(input_shape), tuple(digital)), tuple(digital))


def _pooled(gm: fx.GraphModule, crossbar: list[fx.Node], digital: tuple[str, ...]) -> set[fx.Node]:
    """The layers NeuroSim marks followedByPool: for each pooling op, the last crossbar layer
    executed among those whose output reaches it without passing another crossbar layer. Where a
    residual add joins several (ResNet-18's last block and its skip), only the last executed one
    is marked, as in V1.4's NetWork_ResNet18.csv; in a sequential model it is the layer before."""
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    is_crossbar = set(crossbar)
    marked = set()
    for pool in (n for n in gm.graph.nodes if _kind(n, gm, digital) == "pool"):
        reached, seen, stack = [], set(), list(pool.all_input_nodes)
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if node in is_crossbar:
                reached.append(node)
            else:
                stack.extend(node.all_input_nodes)
        if reached:
            marked.add(max(reached, key=order.__getitem__))
    return marked


def crossbar_nodes(model: nn.Module, input_shape: tuple[int, ...],
                   digital: tuple[str, ...] = ()) -> list[LayerInfo]:
    """Every Conv2d and Linear call of ``model`` on an input of ``input_shape`` (C, H, W without
    the batch), in execution order, with its input size and NeuroSim's followed-by-pool flag.

    The model is traced with torch.fx and its shapes propagated on fake tensors (nothing the size
    of an activation is allocated). Modules under the ``digital`` prefixes are computed off the
    arrays: not entered, not counted. An op that no crossbar maps (a product of two activations,
    a custom op) is refused in one line naming the graph node (:func:`unmapped_nodes` lists all)."""
    digital = tuple(digital)
    gm = _traced(model, tuple(input_shape), digital)
    unmapped = _unmapped(gm, digital)
    if unmapped:
        more = f" (and {len(unmapped) - 1} more node(s))" if len(unmapped) > 1 else ""
        raise CimtoolError(unmapped[0].refusal() + more)
    crossbar = [n for n in gm.graph.nodes if _kind(n, gm, digital) == "crossbar"]
    pooled = _pooled(gm, crossbar, digital)
    layers = []
    for node in crossbar:
        module = gm.get_submodule(node.target)
        shape = tuple(node.all_input_nodes[0].meta["tensor_meta"].shape)
        if isinstance(module, nn.Linear):
            positions = shape[1:-1]  # between the batch and the features
            height, width = (positions + (1, 1))[:2] if len(positions) <= 2 else (math.prod(positions), 1)
            layers.append(LayerInfo(node.target, "linear", node.name, height, width, module.in_features,
                                    module.out_features, (1, 1), (1, 1), (0, 0), (1, 1), 1, node in pooled))
            continue
        height, width = shape[-2:]
        if isinstance(module.padding, str):  # 'same'/'valid': the padding torch applies
            padding = tuple(d * (k - 1) // 2 if module.padding == "same" else 0
                            for d, k in zip(module.dilation, module.kernel_size, strict=True))
        else:
            padding = tuple(module.padding)
        layers.append(LayerInfo(node.target, "conv2d", node.name, int(height), int(width),
                                module.in_channels, module.out_channels, tuple(module.kernel_size),
                                tuple(module.stride), padding, tuple(module.dilation), module.groups,
                                node in pooled))
    return layers


def network_rows(layers: list[LayerInfo]) -> list[list[int]]:
    """NeuroSim ``NetWork.csv`` rows ``H,W,Cin,kh,kw,Cout,followedByPool,stride`` of ``layers``
    (``cimtool.neurosim.trace.network_row``, the rule the records use).

    NeuroSim has no groups column: a grouped (depthwise) conv's row has ``Cin/groups``, the rows of
    its weight matrix ``reshape(Cout, −1)`` (the weight file the records write), so the row prices
    the cells the layer stores; NeuroSim then feeds every column the same input, one read per
    window where the groups need ``groups`` reads (docs/physics.md#networkcsv-from-a-graph).
    Dilation has no column either: the kernel's own size is written."""
    from cimtool.neurosim.trace import network_row

    rows = []
    for layer in layers:
        if layer.stride[0] != layer.stride[1]:
            raise CimtoolError(f"layer {layer.name}: NetWork.csv has one stride, got {layer.stride}")
        if layer.type == "linear" and layer.height * layer.width == 1:
            spec = {"type": "linear", "in_features": layer.in_channels, "out_features": layer.out_channels}
        else:  # a linear layer applied at several positions is a 1×1 conv over them
            spec = {"type": "conv2d", "in_channels": layer.in_channels // layer.groups,
                    "kernel_size": list(layer.kernel_size), "out_channels": layer.out_channels,
                    "stride": list(layer.stride)}
        rows.append(network_row(spec, layer.height, layer.width, layer.pooled))
    return rows
