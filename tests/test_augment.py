"""ADA augmentation: wavelet tables, identity at p=0, each op's effect and statistics at p=1, shapes,
second-order gradients through the warp, noise and cutout, and the adaptive-p controller (the image-space
filter: test_augment_filter.py)."""

import inspect
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylegan2_ada_kd.augment import ops
from stylegan2_ada_kd.augment.ada import AUGPIPE_SPECS, DEFAULT_KWARGS, AdaptiveP, AugmentPipe


def _pipe(p=1.0, **kwargs):
    pipe = AugmentPipe(**kwargs)
    pipe.p.fill_(p)
    return pipe


def _luma_chroma(x):
    """Luma (projection on (1,1,1)/sqrt3) [N, H, W] and chroma [N, 3, H, W] of RGB images."""
    luma = x.sum(dim=1) / math.sqrt(3)
    return luma, x - luma[:, None] / math.sqrt(3)


# ---------------------------------------------------------------- wavelet tables


@pytest.mark.parametrize('name', ['SYM2_LOWPASS', 'SYM6_LOWPASS'])
def test_wavelet_lowpass_is_orthonormal(name):
    h = np.array(getattr(ops, name), dtype=np.float64)
    taps = len(h)
    assert taps == {'SYM2_LOWPASS': 4, 'SYM6_LOWPASS': 12}[name]
    assert abs(h.sum() - math.sqrt(2)) < 1e-14
    assert abs(np.square(h).sum() - 1) < 1e-14
    for shift in range(1, taps // 2):
        assert abs(np.dot(h[: taps - 2 * shift], h[2 * shift :])) < 1e-14, shift
    # Vanishing moments of the quadrature-mirror high-pass g[k] = (-1)^k h[taps-1-k]: taps / 2 of them.
    g = h[::-1] * (-1.0) ** np.arange(taps)
    k = np.arange(taps, dtype=np.float64)
    for m in range(taps // 2):
        assert abs(np.dot(g, k**m)) < 1e-9 * max(1.0, float((k**m).max())), m


def test_sym2_is_db2_and_halfband_kernel_is_its_autocorrelation():
    r3 = math.sqrt(3)
    db2 = np.array([1 + r3, 3 + r3, 3 - r3, 1 - r3]) / (4 * math.sqrt(2))
    np.testing.assert_allclose(ops.SYM2_LOWPASS, db2[::-1], atol=1e-15)
    auto = np.convolve(ops.SYM2_LOWPASS, ops.SYM2_LOWPASS[::-1]) / 2
    np.testing.assert_allclose(ops.HALFBAND_KERNEL, auto, atol=1e-15)
    assert abs(sum(ops.BAND_POWER) - 1) < 1e-12


def test_up_down_pair_is_perfect_reconstruction():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    torch.testing.assert_close(ops.warp_images(x, eye), x, atol=1e-6, rtol=0)
    shift = ops.translate2d(torch.full([2], -1.0), torch.full([2], 2.0))  # output (x, y) reads (x - 1, y + 2)
    y = ops.warp_images(x, shift)
    torch.testing.assert_close(y[..., :-2, 1:], x[..., 2:, :-1], atol=1e-6, rtol=0)


def _f64(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_warp_moves_linear_ramps_exactly():
    # Bilinear sampling and the centroid-aligned wavelet pair reproduce linear functions exactly, so any
    # affine warp of a ramp must equal the ramp evaluated at the transformed positions (away from borders).
    ar = torch.arange(24, dtype=torch.float64) - 11.5
    ramp = lambda x, y: 0.1 * x - 0.05 * y + 0.2
    img = ramp(ar[None, :], ar[:, None]).expand(1, 1, 24, 24)
    m = ops.rotate2d(_f64(0.5)) @ ops.scale2d(_f64(1.2), _f64(0.8)) @ ops.translate2d(_f64(0.3), _f64(-0.45))
    y = ops.warp_images(img, m)
    pos = ops.source_positions(m, ar, ar)[0]
    torch.testing.assert_close(
        y[0, 0, 9:-9, 9:-9], ramp(pos[..., 0], pos[..., 1])[9:-9, 9:-9], atol=1e-6, rtol=0
    )


def test_general_warp_agrees_with_the_exact_blit():
    # A rotation by 90 degrees computed in floating point is not a blit: it goes through the wavelet warp
    # and must match torch.rot90 on a smooth image.
    smooth = F.interpolate(torch.randn(1, 3, 6, 6), size=24, mode='bicubic', align_corners=False)
    m = ops.rotate2d(_f64(math.pi / 2))
    assert not ops.is_pixel_blit(m, 24, 24).any()
    y = ops.apply_geometric(smooth, m)
    err = (y - torch.rot90(smooth, 1, dims=(2, 3)))[..., 4:-4, 4:-4].abs().max()
    assert err < 0.02 * smooth.abs().max()


# ---------------------------------------------------------------- construction and identity


def test_kwargs_match_the_signature_and_round_trip():
    params = inspect.signature(AugmentPipe.__init__).parameters
    assert list(DEFAULT_KWARGS) == [name for name in params if name not in ('self', 'preset')]
    for name, default in DEFAULT_KWARGS.items():
        assert np.allclose(params[name].default, default), name
    pipe = AugmentPipe(preset='bgc', xint_max=np.float64(0.25), imgfilter_bands=[1, 0, 1, 0])
    assert json.loads(json.dumps(pipe.init_kwargs)) == pipe.init_kwargs
    assert 'preset' not in pipe.init_kwargs and pipe.init_kwargs['hue'] == 1.0
    assert AugmentPipe(**pipe.init_kwargs).init_kwargs == pipe.init_kwargs
    assert AugmentPipe(preset='blit', xflip=0.5).xflip == 0.5  # an explicit multiplier wins
    assert list(pipe.state_dict()) == ['p'] and pipe.p.dtype == torch.float32 and pipe.p.ndim == 0
    with pytest.raises(ValueError):
        AugmentPipe(preset='nope')
    with pytest.raises(ValueError):
        AugmentPipe(imgfilter_bands=[1, 1])


def test_presets():
    assert AUGPIPE_SPECS['blit'] == dict(xflip=1, rotate90=1, xint=1)
    assert AUGPIPE_SPECS['bgcfnc'] == {
        **AUGPIPE_SPECS['bgcfn'],
        **AUGPIPE_SPECS['cutout'],
    }
    assert set(AUGPIPE_SPECS['bgc']) == set(AUGPIPE_SPECS['bg']) | set(AUGPIPE_SPECS['color'])
    assert len(AUGPIPE_SPECS['bgcfnc']) == 15


@pytest.mark.parametrize('preset', sorted(AUGPIPE_SPECS))
def test_identity_at_p0(preset):
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(_pipe(0.0, preset=preset)(x), x)


def test_identity_when_all_multipliers_are_zero():
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(_pipe(1.0)(x), x)
    # lumaflip/hue/saturation do nothing to one channel.
    x1 = torch.randn(4, 1, 16, 16)
    assert torch.equal(_pipe(1.0, lumaflip=1, hue=1, saturation=1)(x1), x1)


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('size', [16, 32])
def test_output_shape_and_dtype(channels, size):
    x = torch.rand(4, channels, size, size) * 2 - 1
    y = _pipe(1.0, preset='bgcfnc')(x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()


def test_colour_ops_reject_other_channel_counts_but_the_rest_accept_them():
    x = torch.randn(2, 2, 16, 16)
    with pytest.raises(ValueError):
        _pipe(brightness=1)(x)
    assert _pipe(preset='bg')(x).shape == x.shape


# ---------------------------------------------------------------- pixel blitting


def test_xflip_flips_about_half_exactly():
    x = torch.randn(64, 3, 8, 8)
    y = _pipe(xflip=1)(x)
    same = (y == x).flatten(1).all(1)
    flipped = (y == x.flip(3)).flatten(1).all(1)
    assert (same | flipped).all()
    assert 14 <= int(flipped.sum()) <= 50


def test_rotate90_gives_exact_rotations():
    x = torch.randn(64, 3, 8, 8)
    y = _pipe(rotate90=1)(x)
    ks = []
    for i in range(64):
        match = [k for k in range(4) if torch.equal(y[i], torch.rot90(x[i], k, dims=(1, 2)))]
        assert len(match) == 1
        ks += match
    assert set(ks) == {0, 1, 2, 3}


def test_xint_gives_reflected_integer_shifts():
    x = torch.randn(32, 2, 8, 8)
    y = _pipe(xint=1, xint_max=0.25)(x)
    ar = torch.arange(8)
    shifts = set()
    for i in range(32):
        found = [
            (dx, dy)
            for dx in range(-2, 3)
            for dy in range(-2, 3)
            if torch.equal(y[i], x[i][:, ops.reflect_index(ar - dy, 8)][:, :, ops.reflect_index(ar - dx, 8)])
        ]
        assert found, i
        shifts.update(found)
    assert len(shifts) > 5


# ---------------------------------------------------------------- general geometric transformations


def test_geometric_matrix_statistics():
    n = 4000
    pipe = _pipe(scale=1)
    m = pipe.sample_geometric(n, 16, 16, 1.0, torch.device('cpu'))
    assert abs(float(torch.log2(1 / m[:, 0, 0]).std()) - 0.2) < 0.02
    m = _pipe(xfrac=1).sample_geometric(n, 16, 16, 1.0, torch.device('cpu'))
    assert abs(float((m[:, 0, 2] / 16).std()) - 0.125) < 0.01
    m = _pipe(aniso=1).sample_geometric(n, 16, 16, 1.0, torch.device('cpu'))
    assert torch.allclose(m[:, 0, 0] * m[:, 1, 1], torch.ones(n, dtype=m.dtype))
    for p in (0.3, 1.0):  # two rotation stages, P(any rotation) = p
        m = _pipe(rotate=1).sample_geometric(n, 16, 16, p, torch.device('cpu'))
        rotated = (m[:, 0, 1] != 0).float().mean()
        assert abs(float(rotated) - p) < 0.03
    theta = torch.atan2(m[:, 1, 0], m[:, 0, 0])
    assert float(theta.abs().max()) > 3.0


def test_geometric_ops_preserve_constant_and_roughly_the_mean():
    pipe = _pipe(preset='geom')
    c = torch.full([8, 3, 16, 16], 0.3)
    torch.testing.assert_close(pipe(c), c, atol=1e-5, rtol=0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing='ij')
    smooth = (0.2 + 0.3 * torch.cos(2 * xx) * torch.cos(2 * yy)).expand(8, 3, 16, 16)
    y = pipe(smooth)
    assert not torch.allclose(y, smooth, atol=1e-3)
    assert (y.mean(dim=[1, 2, 3]) - smooth.mean()).abs().max() < 0.1


def test_apply_geometric_routes_blits_exactly_and_warps_the_rest():
    x = torch.randn(3, 1, 8, 8)
    m = torch.stack(
        [
            torch.eye(3, dtype=torch.float64),
            ops.rotate90_2d(torch.tensor([1]))[0],
            ops.rotate2d(torch.tensor([0.3], dtype=torch.float64))[0],
        ]
    )
    y = ops.apply_geometric(x, m)
    assert torch.equal(y[0], x[0])
    assert torch.equal(y[1], torch.rot90(x[1], 1, dims=(1, 2)))
    assert not torch.allclose(y[2], x[2], atol=1e-2)


def test_second_order_gradient_through_the_warp():
    torch.manual_seed(1)
    conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
    conv2 = torch.nn.Conv2d(4, 1, 3, padding=1)
    d = lambda img: conv2(F.softplus(conv1(img))).mean(dim=[1, 2, 3])
    pipe = _pipe(preset='bg')
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(d(pipe(x)).sum(), x, create_graph=True)
    grad.square().sum().backward()
    for param in (conv1.weight, conv2.weight):
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0


def test_gradgradcheck_of_the_warp():
    torch.manual_seed(2)
    m = torch.stack(
        [
            ops.rotate2d(torch.tensor([0.4], dtype=torch.float64))[0]
            @ ops.scale2d(torch.tensor([1.2], dtype=torch.float64), torch.tensor([0.9], dtype=torch.float64))[
                0
            ],
            ops.translate2d(
                torch.tensor([0.3], dtype=torch.float64), torch.tensor([-0.7], dtype=torch.float64)
            )[0],
            ops.rotate90_2d(torch.tensor([3]))[0],
        ]
    )
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    fn = lambda v: ops.apply_geometric(v, m)
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


# ---------------------------------------------------------------- colour


def test_brightness_shift_statistics():
    x = torch.rand(256, 3, 8, 8) * 2 - 1
    diff = _pipe(brightness=1)(x) - x
    shift = diff.mean(dim=[1, 2, 3])
    assert (diff - shift[:, None, None, None]).abs().max() < 1e-5  # one offset per image
    assert abs(float(shift.std()) - 0.2) < 0.04 and abs(float(shift.mean())) < 0.05


def test_contrast_scale_statistics():
    x = torch.randn(256, 3, 8, 8)
    y = _pipe(contrast=1)(x)
    ratio = (y / x).flatten(1)
    assert (ratio - ratio[:, :1]).abs().max() < 1e-4  # one factor per image
    assert abs(float(torch.log2(ratio[:, 0]).std()) - 0.5) < 0.1


def test_contrast_and_brightness_on_one_channel():
    x = torch.randn(128, 1, 8, 8)
    y = _pipe(brightness=1, contrast=1)(x)
    xc, yc = x - x.mean(dim=[2, 3], keepdim=True), y - y.mean(dim=[2, 3], keepdim=True)
    gain = (yc * xc).sum(dim=[2, 3], keepdim=True) / xc.square().sum(dim=[2, 3], keepdim=True)
    torch.testing.assert_close(yc, gain * xc, atol=1e-4, rtol=1e-4)  # y = gain * x + offset per image
    assert abs(float(torch.log2(gain.flatten()).std()) - 0.5) < 0.15
    offset = (y - gain * x).mean(dim=[1, 2, 3])
    assert float(offset.std()) > 0.1


def test_saturation_keeps_luma_and_scales_chroma():
    x = torch.randn(256, 3, 4, 4)
    y = _pipe(saturation=1)(x)
    (lx, cx), (ly, cy) = _luma_chroma(x), _luma_chroma(y)
    torch.testing.assert_close(ly, lx, atol=1e-5, rtol=1e-5)
    ratio = cy.norm(dim=1) / cx.norm(dim=1)
    assert (ratio - ratio[:, :1, :1]).abs().max() < 1e-3 * ratio.max()
    assert abs(float(torch.log2(ratio[:, 0, 0]).std()) - 1.0) < 0.2


def test_hue_rotates_chroma_about_the_luma_axis():
    x = torch.randn(256, 3, 4, 4)
    y = _pipe(hue=1)(x)
    (lx, cx), (ly, cy) = _luma_chroma(x), _luma_chroma(y)
    torch.testing.assert_close(ly, lx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cy.norm(dim=1), cx.norm(dim=1), atol=1e-4, rtol=1e-4)
    cos = (cx * cy).sum(dim=1) / (cx.norm(dim=1) * cy.norm(dim=1))
    angle = torch.acos(cos[:, 0, 0].clamp(-1, 1))
    assert abs(float(angle.mean()) - math.pi / 2) < 0.25  # |theta| ~ U(0, pi)


def test_lumaflip_negates_luma_keeps_chroma():
    x = torch.randn(128, 3, 4, 4)
    y = _pipe(lumaflip=1)(x)
    (lx, cx), (ly, cy) = _luma_chroma(x), _luma_chroma(y)
    torch.testing.assert_close(cy, cx, atol=1e-5, rtol=1e-5)
    flipped = (ly + lx).abs().flatten(1).max(1).values < 1e-5
    kept = (ly - lx).abs().flatten(1).max(1).values < 1e-5
    assert (flipped ^ kept).all() and 40 <= int(flipped.sum()) <= 88


def test_noise_statistics():
    x = torch.zeros(1024, 3, 8, 8)
    y = _pipe(noise=1)(x)
    sigma = y.flatten(1).std(dim=1)
    assert abs(float(sigma.mean()) - 0.1 * math.sqrt(2 / math.pi)) < 0.01
    assert abs(float(sigma.square().mean().sqrt()) - 0.1) < 0.012


def test_cutout_zeroes_about_a_square_of_cutout_size():
    x = torch.rand(256, 3, 16, 16) + 1
    y = _pipe(cutout=1)(x)
    zero = y[:, 0] == 0
    assert torch.equal(zero[:, None].expand_as(y), y == 0)  # all channels, nothing else changed
    assert torch.equal(y[y != 0], x[y != 0])
    frac = zero.float().mean(dim=[1, 2])
    assert float(frac.max()) <= 0.25 + 1e-6
    expected = (0.5 - 2 * 0.25**2 / 2) ** 2  # E[overlap]^2 of a 0.5-wide square with a uniform centre
    assert abs(float(frac.mean()) - expected) < 0.03


# ---------------------------------------------------------------- adaptive p


class _Pipe(torch.nn.Module):
    def __init__(self, p=0.0):
        super().__init__()
        self.register_buffer('p', torch.tensor(float(p)))


def test_adaptive_p_moves_toward_the_target():
    ada = AdaptiveP(target=0.6, interval=4, kimg=1, batch_size=50)
    assert ada.adjust_per_step == pytest.approx(0.2)
    pipe = _Pipe()
    ada.accumulate(90.0, 100)  # r_t = 0.9 > target: more augmentation
    assert ada.step(pipe) == pytest.approx(0.9) and float(pipe.p) == pytest.approx(0.2)
    ada.accumulate_logits(torch.tensor([[1.0], [-2.0], [3.0], [-0.5]]))  # r_t = 0 < target
    ada.step(pipe)
    assert float(pipe.p) == pytest.approx(0.0, abs=1e-7)
    ada.accumulate(-10.0, 10)
    ada.step(pipe)
    assert float(pipe.p) == 0.0  # never below 0
    assert ada.step(pipe) is None and float(pipe.p) == 0.0  # nothing accumulated: no change
    assert ada.stat == 'Loss/signs/real'  # the stat the loss reports and the loop collects for it
    for _ in range(8):  # no upper clamp
        ada.update(pipe, {'Loss/signs/real': {'num': 64.0, 'mean': 1.0, 'std': 0.0}})
    assert float(pipe.p) == pytest.approx(1.6)


def test_adaptive_p_state_dict_round_trip():
    ada = AdaptiveP(target=0.5, batch_size=32)
    ada.accumulate(3.0, 7)
    ada.step(_Pipe())
    ada.accumulate(5.0, 9)
    state = json.loads(json.dumps(ada.state_dict()))
    other = AdaptiveP(target=0.5, batch_size=32)
    other.load_state_dict(state)
    assert other.state_dict() == ada.state_dict()
    pipe_a, pipe_b = _Pipe(0.3), _Pipe(0.3)
    assert ada.step(pipe_a) == other.step(pipe_b) and float(pipe_a.p) == float(pipe_b.p)
