"""CUDA plugins vs the reference ops: outputs and first/second-order gradients (needs a CUDA GPU).

Skipped without CUDA. The plugins are built (once, into the cache) on first use; a failed build fails
these tests, since they call the ops with ``impl='cuda'``. The reference is evaluated in float64 so that
TF32 convolutions or float16 arithmetic in the reference do not blur the comparison.
"""

import math
import time
import types

import pytest
import torch
from conftest import TINY_D, TINY_G

from torch_utils import custom_ops
from torch_utils.ops import self_check
from torch_utils.ops.bias_act import activation_funcs, bias_act
from torch_utils.ops.upfirdn2d import setup_filter, upfirdn2d

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

DEV = 'cuda'
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _close(actual, expected, dtype, scale=None):
    assert actual.shape == expected.shape and actual.dtype == dtype, (
        actual.shape,
        expected.shape,
        actual.dtype,
    )
    scale = scale if scale is not None else max(1.0, expected.abs().max().item())
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= TOL[dtype] * scale * 4, f'max error {err:.3g} (scale {scale:.3g}, {dtype})'


@pytest.fixture(scope='module', autouse=True)
def _plugins_built():
    report = custom_ops.active_impl(DEV)
    assert report['ops'] == {'upfirdn2d': 'cuda', 'bias_act': 'cuda'} or report['mode'] == 'ref', report


FILTERS = {
    'none': None,
    'fir4_2d': setup_filter([1, 3, 3, 1]),
    'fir12_sep': setup_filter([1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1]),
    'rand_3x5': torch.randn(3, 5, generator=torch.Generator().manual_seed(1)),
}
GEOMETRIES = [
    dict(up=1, down=1, padding=0),
    dict(up=2, down=1, padding=[2, 1, 2, 1]),
    dict(up=1, down=2, padding=1),
    dict(up=[2, 1], down=[1, 2], padding=[1, 2, 0, -1]),
    dict(up=4, down=1, padding=3),
    dict(up=1, down=4, padding=[0, 3, 2, 1]),
    dict(up=3, down=2, padding=[-2, 4, 3, -1]),
]
SHAPES = [(2, 3, 8, 8), (1, 5, 17, 9), (3, 2, 64, 64), (1, 1, 1, 1)]


def _out_ok(shape, f, g):
    try:
        upfirdn2d(torch.zeros(shape), f, **g, impl='ref')
        return True
    except RuntimeError:
        return False


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize('fname', list(FILTERS))
@pytest.mark.parametrize('gi', range(len(GEOMETRIES)))
@pytest.mark.parametrize('flip', [False, True])
def test_upfirdn2d_forward_and_grad(dtype, fname, gi, flip):
    f, g = FILTERS[fname], dict(GEOMETRIES[gi], flip_filter=flip, gain=1.7)
    for shape in SHAPES:
        if not _out_ok(shape, f, g):
            continue
        x = torch.randn(shape, device=DEV).to(dtype).requires_grad_(True)
        y = upfirdn2d(x, f, **g, impl='cuda')
        x64 = x.detach().double().requires_grad_(True)
        y64 = upfirdn2d(x64, f, **g, impl='ref')
        _close(y, y64, dtype)
        dy = torch.randn_like(y)
        (gx,) = torch.autograd.grad(y, x, dy)
        (gx64,) = torch.autograd.grad(y64, x64, dy.double())
        _close(gx, gx64, dtype)


@pytest.mark.parametrize('fname', list(FILTERS))
@pytest.mark.parametrize('gi', [1, 2, 3, 6])
def test_upfirdn2d_gradgradcheck_float64(fname, gi):
    f, g = FILTERS[fname], GEOMETRIES[gi]
    x = torch.randn(1, 1, 13, 14, device=DEV, dtype=torch.float64, requires_grad=True)
    assert _out_ok(x.shape, f, g)

    def fn(x):
        return upfirdn2d(x, f, **g, impl='cuda')

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_upfirdn2d_third_order_runs_on_the_kernel():
    x = torch.randn(1, 1, 6, 6, device=DEV, dtype=torch.float64, requires_grad=True)
    f = FILTERS['fir4_2d']
    third = {}
    for impl in ('cuda', 'ref'):
        y = upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], impl=impl)
        (g1,) = torch.autograd.grad((y**3).sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad((g1**2).sum(), x, create_graph=True)
        (third[impl],) = torch.autograd.grad(g2.sum(), x)
    _close(third['cuda'], third['ref'], torch.float64)


@pytest.mark.parametrize(
    'case',
    [
        dict(
            shape=(2, 3, 128, 128), f=torch.randn(64, 64), down=8, padding=0
        ),  # window too big: direct kernel
        dict(shape=(70000, 1, 4, 4), f=setup_filter([1, 3, 3, 1]), down=2, padding=1),  # > 65535 planes
        dict(shape=(2, 8, 16, 16), f=setup_filter([1, 3, 3, 1]), down=1, padding=2, channels_last=True),
        dict(shape=(2, 4, 32, 48), f=setup_filter([1, 3, 3, 1]), down=1, padding=2, strided=True),
    ],
)
def test_upfirdn2d_special_paths(case):
    x = torch.randn(case['shape'], device=DEV)
    if case.get('channels_last'):
        x = x.to(memory_format=torch.channels_last)
    if case.get('strided'):
        x = x[:, ::2, :, ::3]
    kw = dict(down=case['down'], padding=case['padding'])
    y = upfirdn2d(x, case['f'], **kw, impl='cuda')
    _close(y, upfirdn2d(x.double(), case['f'], **kw, impl='ref'), torch.float32)
    if case.get('channels_last'):
        assert y.is_contiguous(memory_format=torch.channels_last)


def _away_from_clamp(x, b, dim, act, clamp):
    """Move elements whose output lies within 2% of +-clamp to z = 0: there the clamp mask of the
    gradient depends on rounding (and float16 outputs cannot tell "clamped" from "equal to clamp")."""
    if clamp is None:
        return x
    bb = b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    v = bias_act(x.double(), b.double(), dim, act, impl='ref')
    near = (v.abs() - clamp).abs() < 0.02 * clamp
    return torch.where(near, -bb.expand_as(x), x)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize('act', list(activation_funcs))
@pytest.mark.parametrize('clamp', [None, 0.8])
def test_bias_act_forward_and_two_orders_of_grad(dtype, act, clamp):
    for shape, dim in [((4, 6), 1), ((2, 5, 7, 3), 1), ((3, 4, 5), 2), ((2, 6, 5, 4), 1)]:
        b = torch.randn(shape[dim], device=DEV).to(dtype)
        x = _away_from_clamp((torch.randn(shape, device=DEV) * 2).to(dtype), b, dim, act, clamp)
        if len(shape) == 4 and shape[1] == 6:
            x = x.to(memory_format=torch.channels_last)
        x.requires_grad_(True)
        b.requires_grad_(True)
        y = bias_act(x, b, dim, act, clamp=clamp, impl='cuda')
        x64, b64 = (t.detach().double().requires_grad_(True) for t in (x, b))
        y64 = bias_act(x64, b64, dim, act, clamp=clamp, impl='ref')
        _close(y, y64, dtype)
        dy = torch.randn_like(y)
        gx, gb = torch.autograd.grad(y, [x, b], dy, create_graph=True)
        gx64, gb64 = torch.autograd.grad(y64, [x64, b64], dy.double(), create_graph=True)
        _close(gx, gx64, dtype, scale=max(1.0, gx64.abs().max().item()))
        _close(gb, gb64, dtype, scale=max(1.0, gb64.abs().max().item() * math.sqrt(x.numel() / b.numel())))
        if dtype != torch.float32 or not gx64.requires_grad:
            continue
        w = torch.randn_like(gx)
        gg = torch.autograd.grad((gx * w).sum(), [x, b], allow_unused=True)
        gg64 = torch.autograd.grad((gx64 * w.double()).sum(), [x64, b64], allow_unused=True)
        for a, e in zip(gg, gg64):
            e = torch.zeros_like(a).double() if e is None else e
            a = torch.zeros_like(e).float() if a is None else a
            _close(a, e, torch.float32, scale=max(1.0, e.abs().max().item()))


@pytest.mark.parametrize('act', list(activation_funcs))
def test_bias_act_gradgradcheck_float64(act):
    x = torch.randn(3, 4, 2, device=DEV, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, device=DEV, dtype=torch.float64, requires_grad=True)

    def fn(x, b):
        return bias_act(x, b, 1, act, clamp=1.5, impl='cuda')

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bias_act_non_dense_and_no_bias():
    x = torch.randn(4, 8, 6, 6, device=DEV)[:, ::2, :, 1:]
    _close(
        bias_act(x, None, act='swish', impl='cuda'), bias_act(x.double(), None, act='swish'), torch.float32
    )
    b16 = torch.randn(4, device=DEV, dtype=torch.float16)  # mixed dtypes: reference path, which promotes
    assert bias_act(x, b16, act='lrelu').dtype == torch.float32


def test_env_var_switches_the_implementation(monkeypatch):
    x = torch.randn(2, 3, 8, 8, device=DEV)
    monkeypatch.setenv('SG2KD_OPS', 'ref')
    assert custom_ops.plugin_for('upfirdn2d', x) is None
    monkeypatch.setenv('SG2KD_OPS', 'auto')
    assert custom_ops.plugin_for('upfirdn2d', x) is not None
    assert custom_ops.active_impl(DEV)['ops'] == {'upfirdn2d': 'cuda', 'bias_act': 'cuda'}


def test_real_kernels_pass_their_self_check_in_milliseconds():
    report = custom_ops.active_impl(DEV)  # what training records in custom_ops.json
    assert report['mode'] == 'ref' or report['self_check'] == {'upfirdn2d': 'ok', 'bias_act': 'ok'}, report
    device = torch.device(DEV, torch.cuda.current_device())
    for op in custom_ops.PLUGINS:
        plugin = custom_ops.load_op_plugin(op, required=True)
        t0 = time.perf_counter()
        outcome = self_check.run(op, plugin, device)
        ms = (time.perf_counter() - t0) * 1e3
        assert outcome == 'ok' and ms < 500, f'{op}: {outcome} ({ms:.0f} ms)'
    kernel = custom_ops.load_op_plugin('upfirdn2d', required=True).upfirdn2d
    # The real kernel with the flip inverted: mirrors the augment pipe's asymmetric filter.
    flipped = types.SimpleNamespace(upfirdn2d=lambda x, f, *a: kernel(x, f, *a[:-2], not a[-2], a[-1]))
    assert self_check.run('upfirdn2d', flipped, device).startswith('mismatch: max abs err')


def test_networks_match_with_and_without_plugins(monkeypatch):
    from stylegan2_ada_kd.networks import Discriminator, Generator

    torch.manual_seed(0)
    G = Generator(**TINY_G).to(DEV)
    D = Discriminator(**TINY_D).to(DEV)
    z = torch.randn(4, G.z_dim, device=DEV)
    c = torch.zeros(4, 0, device=DEV)
    out = {}
    for mode in ('ref', 'auto'):
        monkeypatch.setenv('SG2KD_OPS', mode)
        img = G(z, c, noise_mode='const', force_fp32=True).detach().requires_grad_(True)
        logits = D(img, c, force_fp32=True)
        (r1,) = torch.autograd.grad(logits.sum(), img, create_graph=True)
        penalty = r1.square().sum()
        grads = torch.autograd.grad(penalty, list(D.parameters()), allow_unused=True)
        out[mode] = (img.detach(), logits.detach(), [g for g in grads if g is not None])
    torch.testing.assert_close(out['auto'][0], out['ref'][0], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(out['auto'][1], out['ref'][1], rtol=1e-3, atol=1e-3)
    for a, e in zip(out['auto'][2], out['ref'][2]):
        torch.testing.assert_close(a, e, rtol=1e-2, atol=1e-3)
