"""Upsample, FIR-filter and downsample 2-D images in one op (``upfirdn2d``).

Signal-processing view: each image channel is upsampled by inserting ``up - 1`` zeros after every
sample, padded (or cropped, for negative padding), convolved with a finite impulse response filter
``f`` and then decimated by keeping every ``down``-th sample starting from the first. All steps are
plain PyTorch ops, so autograd differentiates it to any order. This is the reference implementation;
the CUDA plugin (``upfirdn2d_cuda``) replaces it for CUDA tensors when built (``impl`` argument).

Conventions:
    * ``up``/``down`` are an int or ``[x, y]``; ``padding`` is an int, ``[x, y]`` or
      ``[x_before, x_after, y_before, y_after]``.
    * a 2-D filter is indexed ``[y_tap, x_tap]``; a 1-D filter is applied separably along x, then y.
    * ``flip_filter=False`` is true convolution, ``True`` is correlation.
    * ``gain`` multiplies a 2-D filter by ``gain`` and each pass of a 1-D filter by ``sqrt(gain)``.
    * output size along an axis: ``(size * up + pad_before + pad_after - taps) // down + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

IntPair = Union[int, Sequence[int]]
FilterLike = Union[None, float, Sequence, np.ndarray, torch.Tensor]


def _pair(v: IntPair) -> tuple[int, int]:
    """Return ``(x, y)`` from an int or a 2-sequence."""
    if isinstance(v, int):
        return v, v
    vx, vy = v
    return int(vx), int(vy)


def _padding4(padding: IntPair) -> tuple[int, int, int, int]:
    """Return ``(x0, x1, y0, y1)`` from an int, ``[x, y]`` or a 4-sequence."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) != 4:
        raise ValueError(f'padding must be an int, [x, y] or [x0, x1, y0, y1]; got {padding}')
    return padding[0], padding[1], padding[2], padding[3]


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """Return ``(width, height)`` in taps of a 1-D or 2-D filter (``None`` counts as 1x1)."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def setup_filter(
    f: FilterLike,  # Taps: nested list, array or tensor (1-D or 2-D); None = the identity [[1]].
    device: str | torch.device = 'cpu',  # Where the result lives.
    normalize: bool = True,  # Divide by the sum of the taps of the full 2-D filter (DC gain 1).
    flip_filter: bool = False,  # Flip the taps (turns convolution into correlation).
    gain: float = 1,  # Overall gain; a 1-D filter gets sqrt(gain), because it is applied twice.
    separable: bool | None = None,  # Keep a 1-D filter 1-D; None = only when it has 8 or more taps.
) -> torch.Tensor:
    """Turn filter taps into a float32 tensor ready for :func:`upfirdn2d`.

    A 1-D filter that is not kept separable becomes its outer product with itself. Returns a ``[taps]`` or
    ``[taps_y, taps_x]`` float32 tensor.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f.reshape(1)
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f'filter must be a non-empty 1-D or 2-D array; got shape {list(f.shape)}')
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if separable and f.ndim != 1:
        raise ValueError('a separable filter must be 1-D')
    if normalize:
        f = f / f.sum()  # for a 1-D filter this normalises each of the two passes
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def _pad_or_crop(x: torch.Tensor, x0: int, x1: int, y0: int, y1: int) -> torch.Tensor:
    """Zero-pad positive amounts and crop negative amounts on the last two axes."""
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    h, w = x.shape[2], x.shape[3]
    return x[:, :, max(-y0, 0) : h - max(-y1, 0), max(-x0, 0) : w - max(-x1, 0)]


def upfirdn2d(
    x: torch.Tensor,  # Images [N, C, H, W], any float dtype.
    f: torch.Tensor | None,  # Float32 filter [taps] (separable) or [taps_y, taps_x]; None = identity.
    up: IntPair = 1,  # Integer upsampling factor, int or [x, y].
    down: IntPair = 1,  # Integer downsampling factor, int or [x, y].
    padding: IntPair = 0,  # Pad (negative: crop) after upsampling; int, [x, y] or [x0, x1, y0, y1].
    flip_filter: bool = False,  # False convolves, True correlates.
    gain: float = 1,  # Signal gain (see the module docstring).
    impl: str = 'auto',  # 'auto' (follow SG2KD_OPS), 'ref' (this code) or 'cuda' (require the plugin).
) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample a batch of images.

    ``impl='auto'`` follows ``SG2KD_OPS``: the CUDA plugin for CUDA tensors when it builds; see
    ``custom_ops``. Returns ``[N, C, H_out, W_out]`` of ``x``'s dtype.
    """
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError(f'upfirdn2d expects [N, C, H, W] input; got {getattr(x, "shape", type(x))}')
    if impl != 'ref':
        from torch_utils.ops import upfirdn2d_cuda  # lazy: avoids an import cycle; compiles nothing

        y = upfirdn2d_cuda.dispatch(x, f, up, down, padding, flip_filter, gain, impl)
        if y is not None:
            return y
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _padding4(padding)
    n, c, h, w = x.shape

    # Zero insertion: every input sample is followed by up-1 zeros.
    if upx > 1 or upy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)
    x = _pad_or_crop(x, px0, px1, py0, py1)

    # F.conv2d correlates, so a convolution needs the flipped taps.
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        weight = (f * gain).expand(c, 1, *f.shape)
        return F.conv2d(x, weight, stride=(downy, downx), groups=c)
    taps = f * gain**0.5
    x = F.conv2d(x, taps.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), stride=(1, downx), groups=c)
    return F.conv2d(x, taps.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), stride=(downy, 1), groups=c)


def filter2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    padding: IntPair = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """FIR-filter ``[N, C, H, W]`` images, padded so that the output keeps the input's centre.

    With ``padding=0`` the output has the input's size.
    """
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = filter_size(f)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntPair = 2,
    padding: IntPair = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample ``[N, C, H, W]`` images by ``up`` with FIR interpolation, keeping the DC level.

    With ``padding=0`` the output is ``[N, C, H * up_y, W * up_x]``.
    """
    upx, upy = _pair(up)
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = filter_size(f)
    pad = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=(upx, upy), padding=pad, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down: IntPair = 2,
    padding: IntPair = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Low-pass and decimate ``[N, C, H, W]`` images by ``down``.

    With ``padding=0`` and even sizes the output is ``[N, C, H // down_y, W // down_x]``.
    """
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = filter_size(f)
    pad = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=(downx, downy), padding=pad, flip_filter=flip_filter, gain=gain)
