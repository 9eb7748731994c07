"""CUDA path of :func:`torch_utils.ops.bias_act.bias_act`: autograd over the compiled kernel.

Three autograd Functions, one per kernel mode (see ``bias_act.h``):

* ``_BiasAct``: ``y = clamp(act(x + b) * gain)``. Saves ``y`` for linear/relu/lrelu (their derivative
  is a function of y's sign, and y is usually kept alive by the next layer anyway), ``x`` and ``b``
  otherwise; linear without clamp saves nothing.
* ``_BiasActGrad``: ``dx = dy * y'(z)``; differentiable: w.r.t. ``dy`` it is itself, w.r.t. ``x`` it is
  ``_BiasActGrad2`` (zero for linear/relu/lrelu, whose y' is piecewise constant).
* ``_BiasActGrad2``: ``g1 * g2 * y''(z)``; w.r.t. ``g1``/``g2`` it is itself; its derivative w.r.t. ``x``
  (third order, needed by nothing in training) falls back to autograd through the reference ops.

``db`` is always the sum of ``dx`` over every axis but ``dim``. Importing this module compiles nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from torch_utils import custom_ops
from torch_utils.ops.bias_act import activation_funcs, bias_act

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
ACT_IDS = {name: i for i, name in enumerate(('linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu',
                                             'softplus', 'swish'))}  # fmt: skip


@dataclass(frozen=True)
class _Cfg:
    plugin: ModuleType
    dim: int
    act: str
    alpha: float
    gain: float
    clamp: float  # < 0: no clamp
    ref_is_y: bool  # the derivative is computed from the output y instead of the input x


def _empty(t: torch.Tensor) -> torch.Tensor:
    return t.new_empty(0)


def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` with ``ref``'s strides (the kernel walks all tensors in one memory order)."""
    return t if t.stride() == ref.stride() else torch.empty_like(ref).copy_(t)


def _reduce(dx: torch.Tensor, dim: int) -> torch.Tensor:
    dims = [i for i in range(dx.ndim) if i != dim]
    return dx.sum(dims) if dims else dx


def _kernel(cfg: _Cfg, mode: int, x: Any, b: Any, ref: Any, g1: Any, g2: Any) -> torch.Tensor:
    """Call the plugin; ``None`` arguments are passed as empty tensors."""
    like = x if mode == 0 else ref
    args = [_empty(like) if t is None else t for t in (x, b, ref, g1, g2)]
    return cfg.plugin.bias_act(
        *args, cfg.dim, ACT_IDS[cfg.act], mode, cfg.ref_is_y, cfg.alpha, cfg.gain, cfg.clamp
    )


def _ref_derivative(z: torch.Tensor, cfg: _Cfg, order: int) -> torch.Tensor:
    """``order``-th derivative of ``clamp(act(z) * gain)`` through the reference ops (differentiable)."""
    clamp = None if cfg.clamp < 0 else cfg.clamp
    with torch.enable_grad():
        zz = z if z.requires_grad else z.detach().requires_grad_(True)
        d = bias_act(zz, None, 0, cfg.act, cfg.alpha, cfg.gain, clamp, impl='ref')
        for _ in range(order):
            if not d.requires_grad:
                return torch.zeros_like(z)
            (d,) = torch.autograd.grad(d, zz, torch.ones_like(d), create_graph=True)
    return d


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, b: torch.Tensor | None, cfg: _Cfg) -> torch.Tensor:
        y = _kernel(cfg, 0, x, b, None, None, None)
        ctx.cfg, ctx.has_b = cfg, b is not None
        if cfg.act == 'linear' and cfg.clamp < 0:
            ctx.save_for_backward()
        elif cfg.ref_is_y:
            ctx.save_for_backward(y)
        else:
            ctx.save_for_backward(x, b)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple:
        cfg, saved = ctx.cfg, ctx.saved_tensors
        if not saved:
            dx = dy * cfg.gain
        else:
            ref, b = (saved[0], None) if cfg.ref_is_y else saved
            dx = _BiasActGrad.apply(_like(dy, ref), ref, b, cfg)
        db = _reduce(dx, cfg.dim) if ctx.has_b and ctx.needs_input_grad[1] else None
        return dx, db, None


class _BiasActGrad(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, dy: torch.Tensor, ref: torch.Tensor, b: torch.Tensor | None, cfg: _Cfg
    ) -> torch.Tensor:
        ctx.cfg = cfg
        if cfg.ref_is_y:
            ctx.save_for_backward(ref)
        else:
            ctx.save_for_backward(dy, ref, b)
        return _kernel(cfg, 1, None, b, ref, dy, None)

    @staticmethod
    def backward(ctx: Any, ddx: torch.Tensor) -> tuple:
        cfg = ctx.cfg
        if cfg.ref_is_y:
            (ref,) = ctx.saved_tensors
            dy = b = None
        else:
            dy, ref, b = ctx.saved_tensors
        ddx = _like(ddx, ref)
        d_dy = _BiasActGrad.apply(ddx, ref, b, cfg) if ctx.needs_input_grad[0] else None
        d_ref = d_b = None
        if not cfg.ref_is_y and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_ref = _BiasActGrad2.apply(ddx, dy, ref, b, cfg)
            d_b = _reduce(d_ref, cfg.dim) if b is not None and ctx.needs_input_grad[2] else None
        return d_dy, d_ref, d_b, None


class _BiasActGrad2(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, g1: torch.Tensor, g2: torch.Tensor, ref: torch.Tensor, b: torch.Tensor | None, cfg: _Cfg
    ) -> torch.Tensor:
        ctx.cfg = cfg
        ctx.save_for_backward(g1, g2, ref, b)
        return _kernel(cfg, 2, None, b, ref, g1, g2)

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> tuple:
        cfg = ctx.cfg
        g1, g2, ref, b = ctx.saved_tensors
        dout = _like(dout, ref)
        need = ctx.needs_input_grad
        d_g1 = _BiasActGrad2.apply(dout, g2, ref, b, cfg) if need[0] else None
        d_g2 = _BiasActGrad2.apply(dout, g1, ref, b, cfg) if need[1] else None
        d_ref = d_b = None
        if need[2] or need[3]:  # third order: reference fallback
            z = ref if b is None else ref + b.reshape([-1 if i == cfg.dim else 1 for i in range(ref.ndim)])
            d_ref = dout * g1 * g2 * _ref_derivative(z, cfg, 3)
            d_b = _reduce(d_ref, cfg.dim) if b is not None and need[3] else None
        return d_g1, d_g2, d_ref, d_b, None


def _dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` if its memory is dense (contiguous or channels_last), else a contiguous copy."""
    if x.is_contiguous():
        return x
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x
    if x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return x
    return x.contiguous()


def bias_act_cuda(
    x: torch.Tensor,  # Any shape (float16/bfloat16/float32/float64), on the plugin's device.
    b: torch.Tensor | None,  # Bias [x.shape[dim]] of x's dtype and device; None = no bias.
    plugin: ModuleType,  # The loaded bias_act extension (or an object with the same bias_act function).
    dim: int = 1,  # Axis of x that b runs along.
    act: str = 'linear',  # Activation name, as in bias_act.
    alpha: float = 0.0,  # Resolved slope parameter.
    gain: float = 1.0,  # Resolved output scale.
    clamp: float | None = None,  # Clamp the output to [-clamp, clamp]; None or negative = off.
) -> torch.Tensor:
    """:func:`~torch_utils.ops.bias_act.bias_act` on the compiled kernel, with resolved ``alpha``/``gain``.

    Returns a tensor with ``x``'s shape and dtype (computed in float32, float64 for float64).
    """
    dim = dim % x.ndim
    clamp_v = -1.0 if clamp is None or clamp < 0 else float(clamp)
    alpha, gain = float(alpha), float(gain)
    ref_is_y = (
        act in ('linear', 'relu', 'lrelu') and gain > 0 and clamp_v != 0 and (act != 'lrelu' or alpha >= 0)
    )
    cfg = _Cfg(plugin, dim, act, alpha, gain, clamp_v, ref_is_y)
    return _BiasAct.apply(_dense(x), None if b is None else b.contiguous(), cfg)


def dispatch(
    x: torch.Tensor,
    b: torch.Tensor | None,
    dim: int,
    act: str,
    alpha: float,
    gain: float,
    clamp: float | None,
    impl: str,
) -> torch.Tensor | None:
    """Run ``bias_act`` on the CUDA plugin when ``impl``/``SG2KD_OPS`` and the inputs allow it.

    Returns ``None`` when the reference path should run instead: CPU tensors, ``SG2KD_OPS=ref``, an
    unavailable plugin under ``auto``, empty tensors, other dtypes, or a bias of another dtype/device
    (the reference then type-promotes). Raises when ``impl='cuda'`` (or ``SG2KD_OPS=cuda``) cannot be
    honoured because the build failed.
    """
    plugin = custom_ops.plugin_for('bias_act', x, impl)
    if plugin is None or x.dtype not in SUPPORTED_DTYPES or x.numel() == 0 or act not in activation_funcs:
        return None
    if b is not None and (b.dtype != x.dtype or b.device != x.device):
        return None
    return bias_act_cuda(x, b, plugin, dim, act, alpha, gain, clamp)
