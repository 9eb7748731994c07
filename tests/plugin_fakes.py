"""Stand-ins for the compiled plugins that run on CPU tensors, so that the autograd plumbing of the CUDA
paths and the plugins' self-check can be tested without a GPU: ``Fake*`` written with the reference ops,
``Emulated*`` on the CPU emulation of the kernels' own code (the opt-in ``emulation`` fixture)."""

import math

import torch

from torch_utils.ops import bias_act_cuda
from torch_utils.ops.bias_act import bias_act
from torch_utils.ops.upfirdn2d import upfirdn2d

ACT_NAMES = list(bias_act_cuda.ACT_IDS)


class FakeUpFirDn2dPlugin:
    """Same contract as the compiled ``upfirdn2d`` (one 2-D filter pass), computed by the reference."""

    def upfirdn2d(self, x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain):
        assert f.ndim == 2 and f.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
        return upfirdn2d(x, f, [upx, upy], [downx, downy], [px0, px1, py0, py1], flip, gain, impl='ref')


class FakeBiasActPlugin:
    """Same contract as the compiled ``bias_act`` (modes 0, 1, 2), computed with the reference ops."""

    def bias_act(self, x, b, ref, g1, g2, dim, act_id, mode, ref_is_y, alpha, gain, clamp):
        name = ACT_NAMES[act_id]
        b = b if b.numel() else None
        if mode == 0:
            return bias_act(x, b, dim, name, alpha, gain, None if clamp < 0 else clamp, impl='ref')
        if mode == 1 and ref_is_y:
            slope = {'linear': 1.0, 'relu': 0.0, 'lrelu': alpha}[name]
            d = torch.where(ref > 0, torch.ones_like(ref), torch.full_like(ref, slope))
            return g1 * d * gain * ((ref.abs() < clamp) if clamp >= 0 else 1)
        z = ref if b is None else ref + b.reshape([-1 if i == dim else 1 for i in range(ref.ndim)])
        cfg = bias_act_cuda._Cfg(self, dim, name, alpha, gain, clamp, False)
        d = bias_act_cuda._ref_derivative(z, cfg, mode).detach()
        return g1 * d if mode == 1 else g1 * g2 * d


class EmulatedUpFirDn2dPlugin:
    """The compiled ``upfirdn2d`` contract on the CPU emulation of the kernel (``emulation`` fixture), with
    the 32 x 32 output tiles the kernel uses for large images; output rounded to the input's dtype."""

    def __init__(self, emulation):
        self.emulation = emulation

    def upfirdn2d(self, x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain):
        geometry, pad = [upx, upy, downx, downy], [px0, px1, py0, py1]
        y = self.emulation.ufd(x.double().contiguous(), f, geometry, pad, flip, gain, 32, 32, 256, False)
        return y.to(x.dtype)


class EmulatedBiasActPlugin:
    """The compiled ``bias_act`` contract on the CPU emulation of the kernel's arithmetic (``emulation``
    fixture); inputs read in float64, output rounded to the input's dtype."""

    def __init__(self, emulation):
        self.emulation = emulation

    def bias_act(self, x, b, ref, g1, g2, dim, act_id, mode, ref_is_y, alpha, gain, clamp):
        like = x if mode == 0 else ref
        flat = [t.double().contiguous().flatten() for t in (x, b, ref, g1, g2)]
        bias_step = math.prod(like.shape[dim + 1 :])
        out = self.emulation.ba(*flat, bias_step, act_id, mode, ref_is_y, alpha, gain, clamp)
        return out.reshape(like.shape).to(like.dtype)
