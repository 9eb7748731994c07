"""Fused bias, activation, gain and clamp: ``y = clamp(act(x + b) * gain, -clamp, clamp)``.

Reference implementation in plain PyTorch (differentiable to any order). The CUDA plugin
(``bias_act_cuda``) replaces it for CUDA tensors when built (``impl`` argument).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    """An activation function with its default slope parameter and default output gain."""

    fn: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float = 0.0
    def_gain: float = 1.0


# Default gains of sqrt(2) keep the signal variance of He-initialised layers (StyleGAN2, Sec. B).
activation_funcs: dict[str, Activation] = {
    'linear': Activation(lambda x, alpha: x),
    'relu': Activation(lambda x, alpha: F.relu(x), def_gain=math.sqrt(2)),
    'lrelu': Activation(lambda x, alpha: F.leaky_relu(x, alpha), def_alpha=0.2, def_gain=math.sqrt(2)),
    'tanh': Activation(lambda x, alpha: torch.tanh(x)),
    'sigmoid': Activation(lambda x, alpha: torch.sigmoid(x)),
    'elu': Activation(lambda x, alpha: F.elu(x)),
    'selu': Activation(lambda x, alpha: F.selu(x)),
    'softplus': Activation(lambda x, alpha: F.softplus(x)),
    'swish': Activation(lambda x, alpha: x * torch.sigmoid(x), def_gain=math.sqrt(2)),
}


def get_activation(name: str) -> Activation:
    """Look up an activation by name, with an error that lists the valid names."""
    try:
        return activation_funcs[name]
    except KeyError:
        raise ValueError(f'unknown activation {name!r}; choose one of {sorted(activation_funcs)}') from None


def bias_act(
    x: torch.Tensor,  # Input of any shape, e.g. [N, C, H, W] or [N, C].
    b: torch.Tensor | None = None,  # Bias [x.shape[dim]]; None = no bias.
    dim: int = 1,  # Axis of x that b runs along.
    act: str = 'linear',  # One of linear relu lrelu tanh sigmoid elu selu softplus swish.
    alpha: float | None = None,  # Slope parameter (lrelu's negative slope); None = the activation's default.
    gain: float | None = None,  # Output scale; None = the activation's default (sqrt(2): relu, lrelu, swish).
    clamp: float | None = None,  # Clamp the output to [-clamp, clamp]; None or negative = off.
    impl: str = 'auto',  # 'auto' (follow SG2KD_OPS), 'ref' (this code) or 'cuda' (require the plugin).
) -> torch.Tensor:
    """Add a bias, apply an activation, scale and clamp.

    ``impl='auto'`` follows ``SG2KD_OPS``: the CUDA plugin for CUDA tensors when it builds; see
    ``custom_ops``. Returns a tensor with the shape and dtype of ``x``.
    """
    spec = get_activation(act)
    alpha = spec.def_alpha if alpha is None else float(alpha)
    gain = spec.def_gain if gain is None else float(gain)
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
        raise ValueError(f'bias of shape {list(b.shape)} does not match dim {dim} of {list(x.shape)}')
    if impl != 'ref':
        from torch_utils.ops import bias_act_cuda  # lazy: avoids an import cycle; compiles nothing

        y = bias_act_cuda.dispatch(x, b, dim, act, alpha, gain, clamp, impl)
        if y is not None:
            return y
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.fn(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
