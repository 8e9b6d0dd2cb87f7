"""The quantized-ANN twin of a spiking network, trained (docs/physics.md#trained-thresholds).

Every ReLU of the spiking part becomes the activation the ST-BIF neuron computes once silent,

    y = θ · clamp(floor(x/θ + 1/2), n_min, p_max)

with a learnable threshold θ per layer: LSQ (Esser, McKinley, Bablani, Appuswamy, Modha, "Learned
step size quantization", ICLR 2020), the form SpikeZIP-TF's MyQuan trains. Gradients are
straight-through for x inside the levels (0 outside), and for θ

    ∂y/∂θ = floor(v + 1/2) − v inside, n_min or p_max at the bounds   (v = x/θ),

scaled by g = 1/√(N·p_max) (N: activations per sample of the layer; LSQ's step-size gradient
scale). Since the forward pass is the twin's, the trained network converts to an SNN whose spike
counts equal it exactly (``cimtool.nn.snn``).

A neuron layer followed by a max-pool is quantized after the pool: the quantizer never decreases,
so max-pool then quantize has the same values as quantize then max-pool, on a quarter of the
activations. Each window's gradient then goes to its largest input, as in the ANN, where
quantize-then-pool would send it to the first of the window's equal levels. With float-only
backward passes this keeps the twin's training step near the ANN's (tests/bench/bench_twin.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cimtool.errors import CimtoolError


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ a·b, read in ``b``'s memory order: no copy where ``a`` shares its layout (max-pools and
    mkldnn convolutions hand on channels-last activations, which ``reshape(-1)`` would copy)."""
    order = sorted(range(b.dim()), key=b.stride, reverse=True)
    return torch.dot(a.permute(order).reshape(-1), b.permute(order).reshape(-1))


class _Quantize(torch.autograd.Function):
    """The quantizer and its LSQ gradients in one node, in float ops only (on CPU, ops on bool masks
    cost 5–40× a float pass: where(mask, grad, 0) ~0.5 ms vs 0.04 ms on 400k activations)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, theta: torch.Tensor, n_min: int, p_max: int, g: float) -> torch.Tensor:
        v = x / theta
        # the bounds are whole numbers: clamp, then round, is round, then clamp
        q = torch.clamp(v, n_min, p_max).add_(0.5).floor_()
        ctx.save_for_backward(v, q)
        ctx.bounds = (n_min, p_max, g)
        return q * theta

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        v, q = ctx.saved_tensors
        n_min, p_max, g = ctx.bounds
        if grad.stride() != v.stride():  # one copy into the saved layout, not one in each sum below
            grad = torch.empty_like(v).copy_(grad)
        # straight through strictly inside the levels, 0 outside (one fused float pass)
        grad_x = torch.ops.aten.hardtanh_backward(grad, v, n_min, p_max)
        # LSQ: Σ grad·(q − v) inside + Σ grad·q outside (the bound), scaled by g; summed apart, as
        # Σ grad·q − Σ grad_x·v cancels catastrophically at many levels (|q| ≫ |q − v|)
        grad_theta = (_dot(grad_x, q - v) + _dot(grad - grad_x, q)) * g
        return grad_x, grad_theta.reshape(()), None, None, None


class LevelQuantizer(nn.Module):
    """θ·clamp(floor(x/θ + 1/2), n_min, p_max), θ learnable (LSQ), straight-through to x."""

    def __init__(self, theta: float, n_min: int, p_max: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(float(theta)))
        self.n_min, self.p_max = n_min, p_max

    def forward(self, x: torch.Tensor, features: int | None = None) -> torch.Tensor:
        """``features``: N of LSQ's gradient scale, if not ``x``'s activations per sample."""
        g = 1.0 / math.sqrt((features or x[0].numel()) * max(self.p_max, -self.n_min, 1))
        return _Quantize.apply(x, self.theta, self.n_min, self.p_max, g)


class PooledQuantizer(nn.Module):
    """A max-pool, then the quantizer of the neuron layer before it: the values of quantize-then-pool
    (the quantizer is monotone) at a quarter of the cost; LSQ's N stays the layer's own."""

    def __init__(self, pool: nn.MaxPool2d, quantizer: LevelQuantizer) -> None:
        super().__init__()
        self.pool, self.quantizer = pool, quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.pool(x), features=x[0].numel())


def trainable_relus(model: nn.Module) -> list[nn.ReLU]:
    """The ReLUs of the spiking part, in neuron-layer order; a one-line error if there are none."""
    _, body = model.snn_parts()
    relus = [m for m in body if isinstance(m, nn.ReLU)]
    if not relus:
        raise CimtoolError("the model has no ReLU in its spiking part: there is no activation to train a "
                           "threshold for (train the twin of a model with hidden layers)")
    return relus


def _parents(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    return {id(child): (parent, name)
            for parent in model.modules() for name, child in parent.named_children()}


def _next_pool(parent: nn.Module, name: str) -> nn.MaxPool2d | None:
    """The max-pool right after child ``name`` of a Sequential, if there is one."""
    if isinstance(parent, nn.Sequential) and name.isdigit() and int(name) + 1 < len(parent):
        after = parent[int(name) + 1]
        return after if isinstance(after, nn.MaxPool2d) else None
    return None


class QuantizedTwin(nn.Module):
    """``model`` with each ReLU of its spiking part replaced by a :class:`LevelQuantizer`, in order
    (the neuron layers' order; a ReLU followed by a max-pool becomes a :class:`PooledQuantizer` in
    the pool's place); :meth:`release` puts the model back and returns the thresholds."""

    def __init__(self, model: nn.Module, thetas: list[float], n_min: int, p_max: int,
                 need_relus: bool = True) -> None:
        super().__init__()
        _, body = model.snn_parts()
        relus = trainable_relus(model) if need_relus else [m for m in body if isinstance(m, nn.ReLU)]
        if len(thetas) < len(relus):
            raise CimtoolError(f"{len(relus)} ReLU layers but {len(thetas)} thresholds")
        self.model = model
        # registered where the ReLUs were (inside ``model``), so each θ is one parameter of the model
        self.quantizers = [LevelQuantizer(t, n_min, p_max) for t in thetas[:len(relus)]]
        parents = _parents(model)
        self._originals: list[tuple[nn.Module, str, nn.Module]] = []  # what release() puts back
        for relu, quantizer in zip(relus, self.quantizers, strict=True):
            parent, name = parents[id(relu)]
            pool = _next_pool(parent, name)
            self._originals.append((parent, name, relu))
            if pool is None:
                setattr(parent, name, quantizer)
                continue
            after = str(int(name) + 1)
            self._originals.append((parent, after, pool))
            setattr(parent, name, nn.Identity())
            setattr(parent, after, PooledQuantizer(pool, quantizer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def thetas(self) -> list[float]:
        return [float(q.theta.detach()) for q in self.quantizers]

    def release(self) -> tuple[nn.Module, list[float]]:
        """The model with its ReLUs back (its weights trained) and the trained thresholds."""
        for parent, name, module in self._originals:
            setattr(parent, name, module)
        return self.model, self.thetas()
