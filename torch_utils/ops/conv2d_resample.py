"""2-D convolution with integrated FIR upsampling or downsampling.

Semantics (what the result equals, independent of how it is computed):

* ``up > 1``: zero-insert ``x`` by ``up``, then filter with ``f`` (gain ``up**2``) and convolve with
  ``w`` as one composite filter, padded by ``upsample2d``'s centring pad plus ``padding``.
* ``down > 1``: filter with ``f`` using ``downsample2d``'s centring pad plus ``padding``, then
  convolve with ``w`` at stride ``down``.
* otherwise: a plain convolution with ``padding``.

``flip_weight=True`` correlates with ``w`` (what ``torch.nn.functional.conv2d`` does);
``False`` convolves (flips ``w``). Everything is built from differentiable PyTorch ops, so second
order gradients (R1, path length) work on any torch version.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torch_utils.ops.upfirdn2d import filter_size, upfirdn2d


def _transpose_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """``[O, I/g, k, k]`` conv weight -> ``[I, O/g, k, k]`` transposed-conv weight."""
    out_ch, in_per_group, kh, kw = w.shape
    w = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
    return w.reshape(groups * in_per_group, out_ch // groups, kh, kw)


def conv2d_resample(
    x: torch.Tensor,  # Input [N, I, H, W].
    w: torch.Tensor,  # Weight [O, I/groups, kh, kw], same dtype as x.
    f: torch.Tensor | None = None,  # FIR filter from setup_filter (needed when up or down > 1).
    up: int = 1,  # Integer upsampling factor (not together with down).
    down: int = 1,  # Integer downsampling factor.
    padding: int = 0,  # Zero padding of the convolution.
    groups: int = 1,  # Grouped convolution.
    flip_weight: bool = True,  # True correlates (torch convention), False convolves.
    flip_filter: bool = False,  # Passed on to upfirdn2d.
) -> torch.Tensor:
    """Convolve ``[N, I, H, W]`` images with ``[O, I/groups, k, k]`` weights, resampling by 2^n.

    Returns ``[N, O, H * up // down, W * up // down]`` for 'same'-padded kernels.
    """
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f'expected 4-D x and w; got {list(x.shape)} and {list(w.shape)}')
    if up > 1 and down > 1:
        raise ValueError('conv2d_resample: up and down cannot both be > 1')
    kh, kw = w.shape[2], w.shape[3]
    fw, fh = filter_size(f)

    if up > 1:
        # Composite left/right pad on the zero-inserted signal (see module docstring).
        lx, rx = (fw + up - 1) // 2 + padding, (fw - up) // 2 + padding
        ly, ry = (fh + up - 1) // 2 + padding, (fh - up) // 2 + padding
        if kh == 1 and kw == 1:  # cheaper: 1x1 conv at low resolution, then upsample
            x = F.conv2d(x, w, groups=groups)
            return upfirdn2d(x, f, up=up, padding=[lx, rx, ly, ry], gain=up**2, flip_filter=flip_filter)
        # A strided transposed conv is zero insertion followed by a full convolution; it needs the
        # convolution kernel, i.e. the flipped correlation kernel.
        wt = w if not flip_weight else w.flip([2, 3])
        x = F.conv_transpose2d(x, _transpose_weight(wt, groups), stride=up, groups=groups)
        pad = [lx - (kw - 1), rx - kw + up, ly - (kh - 1), ry - kh + up]
        return upfirdn2d(x, f, padding=pad, gain=up**2, flip_filter=flip_filter)

    if not flip_weight:
        w = w.flip([2, 3])
    if down > 1:
        pad = [
            (fw - down + 1) // 2 + padding,
            (fw - down) // 2 + padding,
            (fh - down + 1) // 2 + padding,
            (fh - down) // 2 + padding,
        ]
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return F.conv2d(x, w, stride=down, groups=groups)
    return F.conv2d(x, w, padding=padding, groups=groups)
