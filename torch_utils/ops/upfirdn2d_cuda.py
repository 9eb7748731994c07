"""CUDA path of :func:`torch_utils.ops.upfirdn2d.upfirdn2d`: autograd over the compiled kernel.

The kernel (``upfirdn2d.cu``) runs one 2-D filter pass per call; a 1-D (separable) filter becomes an
x pass with a ``[1, taps]`` filter followed by a y pass with a ``[taps, 1]`` filter, each with gain
``sqrt(gain)``, exactly like the reference. The gradient of a pass w.r.t. its input is another pass
with the reversed taps, up and down swapped and the padding mirrored, computed by the same autograd
Function, so gradients of any order run on the kernel. Gradients w.r.t. the filter are not provided:
a filter that requires grad is sent to the reference path by :func:`dispatch`.

Importing this module compiles nothing.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from torch_utils import custom_ops
from torch_utils.ops.upfirdn2d import IntPair, _padding4, _pair

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Geometry of one pass: (up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1).
Geometry = tuple[int, int, int, int, int, int, int, int]


def backward_geometry(in_hw: tuple[int, int], taps_hw: tuple[int, int], geom: Geometry) -> Geometry:
    """Geometry of the pass that maps an output gradient of ``geom`` back to its ``in_hw`` input.

    Per axis with input size ``n``, taps ``k``, factors ``u``/``d``, padding ``p0``/``p1`` and output
    size ``m = (n*u + p0 + p1 - k) // d + 1``: up ``d``, down ``u``, padding ``k - 1 - p0`` in front and
    ``(n - 1)*u - m*d + 1 + p0`` behind, so that the result has ``n`` samples again.
    """
    upx, upy, downx, downy, px0, px1, py0, py1 = geom
    (h, w), (kh, kw) = in_hw, taps_hw
    ow = (w * upx + px0 + px1 - kw) // downx + 1
    oh = (h * upy + py0 + py1 - kh) // downy + 1
    bx0, by0 = kw - 1 - px0, kh - 1 - py0
    bx1 = (w - 1) * upx - ow * downx + 1 + px0
    by1 = (h - 1) * upy - oh * downy + 1 + py0
    return downx, downy, upx, upy, bx0, bx1, by0, by1


class _UpFirDn2dPass(torch.autograd.Function):
    """One kernel pass; its backward is another pass, so it is differentiable to any order."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        f: torch.Tensor,
        geom: Geometry,
        flip: bool,
        gain: float,
        plugin: ModuleType,
    ) -> torch.Tensor:
        ctx.save_for_backward(f)
        ctx.meta = (tuple(x.shape[2:]), geom, flip, gain, plugin)
        return plugin.upfirdn2d(x, f, *geom, flip, gain)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple:
        (f,) = ctx.saved_tensors
        in_hw, geom, flip, gain, plugin = ctx.meta
        dx = None
        if ctx.needs_input_grad[0]:
            bgeom = backward_geometry(in_hw, tuple(f.shape), geom)
            dx = _UpFirDn2dPass.apply(dy, f, bgeom, not flip, gain, plugin)
        return dx, None, None, None, None, None


def upfirdn2d_cuda(
    x: torch.Tensor,  # [N, C, H, W] (float16/bfloat16/float32/float64) on the plugin's device.
    f: torch.Tensor | None,  # Filter [taps] (separable) or [taps_y, taps_x], not requiring grad; or None.
    plugin: ModuleType,  # The loaded upfirdn2d extension (or an object with the same upfirdn2d function).
    up: IntPair = 1,  # As in upfirdn2d.
    down: IntPair = 1,  # As in upfirdn2d.
    padding: IntPair = 0,  # As in upfirdn2d.
    flip_filter: bool = False,  # As in upfirdn2d.
    gain: float = 1,  # As in upfirdn2d.
) -> torch.Tensor:
    """:func:`~torch_utils.ops.upfirdn2d.upfirdn2d` on the compiled kernel (same arguments and result).

    Returns ``[N, C, H_out, W_out]`` of ``x``'s dtype (accumulated in float32, float64 for float64).
    """
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _padding4(padding)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if f is None:
        f = torch.ones([1, 1], dtype=acc, device=x.device)
    f = f.detach().to(device=x.device, dtype=acc)
    if f.ndim == 2:
        geom = (upx, upy, downx, downy, px0, px1, py0, py1)
        return _UpFirDn2dPass.apply(x, f, geom, bool(flip_filter), float(gain), plugin)
    g = float(gain) ** 0.5
    x = _UpFirDn2dPass.apply(x, f.reshape(1, -1), (upx, 1, downx, 1, px0, px1, 0, 0), flip_filter, g, plugin)
    return _UpFirDn2dPass.apply(
        x, f.reshape(-1, 1), (1, upy, 1, downy, 0, 0, py0, py1), flip_filter, g, plugin
    )


def dispatch(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntPair,
    down: IntPair,
    padding: IntPair,
    flip_filter: bool,
    gain: float,
    impl: str,
) -> torch.Tensor | None:
    """Run ``upfirdn2d`` on the CUDA plugin when ``impl``/``SG2KD_OPS`` and the inputs allow it.

    Returns ``None`` when the reference path should run instead: CPU tensors, ``SG2KD_OPS=ref``, an
    unavailable plugin under ``auto``, empty tensors, other dtypes, or a filter that requires grad.
    Raises when ``impl='cuda'`` (or ``SG2KD_OPS=cuda``) cannot be honoured because the build failed.
    """
    plugin = custom_ops.plugin_for('upfirdn2d', x, impl)
    if plugin is None or x.dtype not in SUPPORTED_DTYPES or x.numel() == 0:
        return None
    if f is not None and (f.requires_grad or f.ndim not in (1, 2) or f.numel() == 0):
        return None
    return upfirdn2d_cuda(x, f, plugin, up, down, padding, flip_filter, gain)
