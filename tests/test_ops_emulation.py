"""Opt-in (``SG2KD_TEST_EMULATION=1``, fixture ``emulation`` in conftest.py): a CPU extension replaying the
CUDA kernels' code (tiles of upfirdn2d, the arithmetic of bias_act) against the reference ops."""

import pytest
import torch
from plugin_fakes import ACT_NAMES

from torch_utils.ops.bias_act import activation_funcs, bias_act
from torch_utils.ops.upfirdn2d import upfirdn2d


def test_emulation_upfirdn2d_tiles_match_reference(emulation):
    gen = torch.Generator().manual_seed(0)

    def pick(options):
        return options[int(torch.randint(len(options), [1], generator=gen))]

    checked = 0
    while checked < 150:
        ux, uy, dx, dy = (pick([1, 1, 2, 3, 4]) for _ in range(4))
        fw, fh = pick([1, 2, 3, 4, 5, 8, 12]), pick([1, 2, 3, 4, 6])
        h, w = pick(range(1, 14)), pick(range(1, 14))
        pad = [pick(range(-3, 7)) for _ in range(4)]
        if (w * ux + pad[0] + pad[1] - fw) < 0 or (h * uy + pad[2] + pad[3] - fh) < 0:
            continue
        x = torch.randn(2, 3, h, w, dtype=torch.float64, generator=gen)
        f = torch.randn(fh, fw, dtype=torch.float64, generator=gen)
        flip = bool(pick([0, 1]))
        ref = upfirdn2d(x, f, [ux, uy], [dx, dy], pad, flip, 2.5, impl='ref')
        for tw, th, nt, direct in [(1, 1, 1, 0), (4, 2, 3, 0), (32, 32, 256, 0), (8, 1, 32, 0), (0, 0, 0, 1)]:
            y = emulation.ufd(x, f, [ux, uy, dx, dy], pad, flip, 2.5, tw, th, nt, bool(direct))
            case = (ux, uy, dx, dy, fw, fh, pad, tw)
            assert y.shape == ref.shape and torch.allclose(y, ref, atol=1e-12), case
        checked += 1


@pytest.mark.parametrize('act', ACT_NAMES)
@pytest.mark.parametrize('clamp', [None, 0.7])
def test_emulation_bias_act_arithmetic_matches_autograd(emulation, act, clamp):
    spec, e = activation_funcs[act], torch.empty(0, dtype=torch.float64)
    x = torch.randn(3, 5, 4, dtype=torch.float64) * 3
    x[0, 0, 0] = 25.0  # softplus's linear branch
    b = torch.randn(5, dtype=torch.float64)
    args = (ACT_NAMES.index(act), spec.def_alpha, spec.def_gain, -1.0 if clamp is None else clamp)

    def kernel(xx, ref, g1, g2, mode, ref_is_y=False, bias=b):
        flat = [t.flatten() for t in (xx, bias, ref, g1, g2)]
        return emulation.ba(*flat, 4, args[0], mode, ref_is_y, *args[1:]).reshape(x.shape)

    xr = x.clone().requires_grad_(True)
    y = bias_act(xr, b, act=act, clamp=clamp, impl='ref')
    assert torch.allclose(kernel(x, e, e, e, 0), y, atol=1e-12)
    g1, g2 = torch.randn_like(x), torch.randn_like(x)
    (d1,) = torch.autograd.grad(y, xr, g1, create_graph=True)
    assert torch.allclose(kernel(e, x, g1, e, 1), d1, atol=1e-12)
    if act in ('linear', 'relu', 'lrelu'):
        assert torch.allclose(kernel(e, y.detach(), g1, e, 1, True, e), d1, atol=1e-12)
    d2 = torch.autograd.grad(d1, xr, g2, allow_unused=True)[0] if d1.requires_grad else None
    d2 = torch.zeros_like(x) if d2 is None else d2
    assert torch.allclose(kernel(e, x, g1, g2, 2), d2, atol=1e-10)
