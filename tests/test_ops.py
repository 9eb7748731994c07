"""Ops: hand-computed cases, reference op vectors, first and second order gradients."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import require_compat

from torch_utils.ops.bias_act import activation_funcs, bias_act
from torch_utils.ops.conv2d_resample import conv2d_resample
from torch_utils.ops.fma import fma
from torch_utils.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d


def _close(a, b, tol=1e-5):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


# ---------------------------------------------------------------- hand-computed cases


def test_setup_filter_hand():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4)
    _close(f, torch.outer(torch.tensor([1, 3, 3, 1.0]), torch.tensor([1, 3, 3, 1.0])) / 64)
    assert setup_filter(None).tolist() == [[1.0]]
    assert setup_filter([1, 2, 3, 4, 4, 3, 2, 1]).shape == (8,)  # >= 8 taps stays separable
    _close(
        setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True, gain=2),
        torch.tensor([[8.0, 6], [4, 2]]),
    )


def test_upfirdn2d_zero_insertion_and_decimation():
    x = torch.arange(1.0, 4.0).reshape(1, 1, 1, 3)
    y = upfirdn2d(x, None, up=[2, 1])
    assert y.tolist() == [[[[1.0, 0, 2, 0, 3, 0]]]]
    x = torch.arange(6.0).reshape(1, 1, 1, 6)
    assert upfirdn2d(x, None, down=[2, 1]).tolist() == [[[[0.0, 2, 4]]]]


def test_upfirdn2d_convolution_vs_correlation():
    x = torch.zeros(1, 1, 1, 5)
    x[..., 2] = 1  # impulse
    f = torch.tensor([[1.0, 2.0, 3.0]])
    conv = upfirdn2d(x, f, padding=[1, 1, 0, 0])  # true convolution: impulse response = f
    corr = upfirdn2d(x, f, padding=[1, 1, 0, 0], flip_filter=True)
    assert conv[0, 0, 0, 1:4].tolist() == [1.0, 2.0, 3.0]
    assert corr[0, 0, 0, 1:4].tolist() == [3.0, 2.0, 1.0]


def test_upfirdn2d_negative_padding_crops():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = upfirdn2d(x, None, padding=[-1, 0, 0, -2])
    assert torch.equal(y, x[:, :, 0:2, 1:4])


def test_resampling_keeps_dc_and_size():
    f = setup_filter([1, 3, 3, 1])
    x = torch.full([2, 3, 8, 8], 0.5)
    up = upsample2d(x, f)
    down = downsample2d(x, f)
    assert up.shape == (2, 3, 16, 16) and down.shape == (2, 3, 4, 4)
    _close(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 0.5))
    _close(down[:, :, 1:-1, 1:-1], torch.full_like(down[:, :, 1:-1, 1:-1], 0.5))
    assert filter2d(x, f).shape == x.shape


def test_separable_equals_2d():
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    f1 = setup_filter([1, 3, 3, 1], separable=True).double()
    f2 = setup_filter([1, 3, 3, 1]).double()
    for kw in [
        dict(up=2, padding=[2, 1, 2, 1], gain=4),
        dict(down=2, padding=1),
        dict(up=[2, 1], down=[1, 2]),
    ]:
        _close(upfirdn2d(x, f1, **kw), upfirdn2d(x, f2, **kw), 1e-12)


@pytest.mark.parametrize('act', sorted(activation_funcs))
def test_bias_act_matches_formula(act):
    x = torch.randn(2, 5, 3, 4)
    b = torch.randn(5)
    fn = dict(
        linear=lambda v: v,
        relu=F.relu,
        lrelu=lambda v: F.leaky_relu(v, 0.2),
        tanh=torch.tanh,
        sigmoid=torch.sigmoid,
        elu=F.elu,
        selu=F.selu,
        softplus=F.softplus,
        swish=lambda v: v * torch.sigmoid(v),
    )[act]
    gain = math.sqrt(2) if act in ('relu', 'lrelu', 'swish') else 1.0
    expect = fn(x + b.reshape(1, 5, 1, 1)) * gain
    _close(bias_act(x, b, act=act), expect)
    _close(bias_act(x, b, act=act, clamp=0.3), expect.clamp(-0.3, 0.3))


def test_bias_act_errors():
    with pytest.raises(ValueError, match='unknown activation'):
        bias_act(torch.zeros(2, 3), act='gelu-ish')
    with pytest.raises(ValueError, match='does not match'):
        bias_act(torch.zeros(2, 3), torch.zeros(4))


def test_fma():
    a, b, c = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 1, 1), torch.randn(2, 1, 4, 4)
    _close(fma(a, b, c), a * b + c)


def test_conv2d_resample_up_equals_explicit_pipeline():
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    for flip in (True, False):
        ww = w if flip else w.flip([2, 3])
        ref = F.conv2d(upfirdn2d(x, f, up=2, padding=[3, 2, 3, 2], gain=4), ww, groups=2)
        _close(conv2d_resample(x, w, f, up=2, padding=1, groups=2, flip_weight=flip), ref, 1e-12)
    ref = F.conv2d(upfirdn2d(x, f, padding=[2, 2, 2, 2]), w, stride=2, groups=2)
    _close(conv2d_resample(x, w, f, down=2, padding=1, groups=2), ref, 1e-12)


# ---------------------------------------------------------------- reference op vectors


def _ops():
    return torch.load(require_compat('ops.pt'), weights_only=True)


def test_compat_upfirdn2d():
    data = _ops()
    for case in data['upfirdn2d']:
        _close(upfirdn2d(case['x'], case['f'], **case['kwargs']), case['y'])
    fns = dict(upsample2d=upsample2d, downsample2d=downsample2d, filter2d=filter2d)
    for case in data['upfirdn2d_wrappers']:
        _close(fns[case['fn']](case['x'], case['f'], **case['kwargs']), case['y'])
    for case in data['setup_filter']:
        _close(setup_filter(case['f_in'], **case['kwargs']), case['f'])


def test_compat_bias_act():
    for case in _ops()['bias_act']:
        _close(bias_act(case['x'], case['b'], **case['kwargs']), case['y'])
        if 'default_gain' in case:
            spec = activation_funcs[case['kwargs']['act']]
            assert spec.def_gain == pytest.approx(case['default_gain'])
            assert spec.def_alpha == pytest.approx(case['default_alpha'])


def test_compat_conv2d_resample():
    for case in _ops()['conv2d_resample']:
        _close(conv2d_resample(case['x'], case['w'], case['f'], **case['kwargs']), case['y'])


def test_compat_modulated_conv2d():
    from stylegan2_ada_kd.networks.layers import modulated_conv2d

    for case in _ops()['modulated_conv2d']:
        args = dict(noise=case['noise'], resample_filter=case['resample_filter'])
        for fused in (True, False):  # both paths must reproduce the reference
            kwargs = dict(case['kwargs'], fused_modconv=fused)
            _close(modulated_conv2d(case['x'], case['weight'], case['styles'], **args, **kwargs), case['y'])


# ---------------------------------------------------------------- gradients (float64)


def test_gradcheck_upfirdn2d():
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    for kw in [
        dict(up=2, padding=[2, 1, 2, 1], gain=4),
        dict(down=2, padding=1),
        dict(padding=[1, -1, 2, 0]),
    ]:
        fn = lambda v, kw=kw: upfirdn2d(v, f, **kw)
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize('act', ['linear', 'lrelu', 'tanh', 'softplus', 'swish', 'elu'])
def test_gradcheck_bias_act(act):
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    fn = lambda v, bb: bias_act(v, bb, act=act, clamp=2.0)
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_gradcheck_conv2d_resample():
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    for kw in [dict(up=2, padding=1, flip_weight=False), dict(down=2, padding=1), dict(padding=1)]:
        fn = lambda v, ww, kw=kw: conv2d_resample(v, ww, f, **kw)
        assert torch.autograd.gradcheck(fn, (x, w))
        assert torch.autograd.gradgradcheck(fn, (x, w))
