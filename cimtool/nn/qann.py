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
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cimtool.errors import CimtoolError


class _Quantize(torch.autograd.Function):
    """The quantizer and its LSQ gradients in one node: five passes over the activations forward,
    six backward (an autograd graph of the same formula takes about twice as many)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, theta: torch.Tensor, n_min: int, p_max: int, g: float) -> torch.Tensor:
        v = x / theta
        # the bounds are whole numbers: clamp, then round, is round, then clamp
        q = torch.floor(torch.clamp(v, n_min, p_max).add_(0.5))
        ctx.save_for_backward(v, q)
        ctx.bounds = (n_min, p_max, g)
        return q * theta

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        v, q = ctx.saved_tensors
        n_min, p_max, g = ctx.bounds
        inside = torch.clamp(v, n_min, p_max) == v
        grad_x = torch.where(inside, grad, 0.0)
        # LSQ: ∂y/∂θ = round(v) − v inside, the bound (= q) outside; scaled by g
        grad_theta = torch.dot(grad.reshape(-1), torch.where(inside, q - v, q).reshape(-1)) * g
        return grad_x, grad_theta.reshape(()), None, None, None


class LevelQuantizer(nn.Module):
    """θ·clamp(floor(x/θ + 1/2), n_min, p_max), θ learnable (LSQ), straight-through to x."""

    def __init__(self, theta: float, n_min: int, p_max: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(float(theta)))
        self.n_min, self.p_max = n_min, p_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = 1.0 / math.sqrt(x[0].numel() * max(self.p_max, -self.n_min, 1))
        return _Quantize.apply(x, self.theta, self.n_min, self.p_max, g)


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


class QuantizedTwin(nn.Module):
    """``model`` with each ReLU of its spiking part replaced by a :class:`LevelQuantizer`, in order
    (the neuron layers' order); :meth:`release` puts the ReLUs back and returns the thresholds."""

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
        self._sites = [parents[id(relu)] for relu in relus]
        self._relus = relus
        for (parent, name), quantizer in zip(self._sites, self.quantizers, strict=True):
            setattr(parent, name, quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def thetas(self) -> list[float]:
        return [float(q.theta.detach()) for q in self.quantizers]

    def release(self) -> tuple[nn.Module, list[float]]:
        """The model with its ReLUs back (its weights trained) and the trained thresholds."""
        for (parent, name), relu in zip(self._sites, self._relus, strict=True):
            setattr(parent, name, relu)
        return self.model, self.thetas()
