"""ADA augmentation's image-space filter: the 4-band filter bank (checked against an independent numpy
construction from sym2), per-band gains and their normalisation, and the imgfilter op in the pipe."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_augment import _pipe

from stylegan2_ada_kd.augment import ops

# ---------------------------------------------------------------- filtering and corruptions


def _bank_1d(radius=21):
    """The 4 zero-phase band filters (low to high) built independently in numpy from sym2: the half-band
    pair lo2/hi2 (autocorrelations / 2 of the low-pass and its quadrature mirror), cascaded by zero
    insertion as the ADA paper's octave filter bank. Returns [4, 2 * radius + 1] taps."""
    h = np.array(ops.SYM2_LOWPASS)
    lo2 = np.convolve(h, h[::-1]) / 2
    g = h * (-1.0) ** np.arange(4)
    hi2 = np.convolve(g, g[::-1]) / 2
    np.testing.assert_allclose(lo2 + hi2, np.eye(7)[3], atol=1e-15)  # a complementary pair

    def up(f, factor):
        out = np.zeros((len(f) - 1) * factor + 1)
        out[::factor] = f
        return out

    def centred(f):
        pad = radius - (len(f) - 1) // 2
        return np.pad(f, pad)

    l1 = lo2
    l2 = np.convolve(l1, up(lo2, 2))
    l3 = np.convolve(l2, up(lo2, 4))
    assert (len(l3) - 1) // 2 == radius
    delta = np.eye(2 * radius + 1)[radius]
    return np.stack([centred(l3), centred(l2) - centred(l3), centred(l1) - centred(l2), delta - centred(l1)])


def test_band_split_partitions_the_signal_along_each_axis():
    x = torch.randn(2, 3, 16, 16)
    for axis in ('x', 'y'):
        bands = ops.split_bands(x, axis)
        torch.testing.assert_close(sum(bands), x, atol=1e-5, rtol=0)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]).remainder(2).float() * 2 - 1
    high = ops.split_bands(checker.expand(1, 1, 16, 16), 'y')
    torch.testing.assert_close(high[3][0, 0], checker, atol=1e-5, rtol=0)  # Nyquist: all in the top band
    const = torch.full([1, 1, 16, 16], 0.5)
    torch.testing.assert_close(ops.split_bands(const)[0], const, atol=1e-6, rtol=0)
    # Band responses at DC, pi/2 and pi of the independently built bank: each band passes its octave.
    bank = _bank_1d()
    k = np.arange(-21, 22)
    response = lambda w: (bank * np.cos(w * k)).sum(1)
    np.testing.assert_allclose(response(0.0), [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(response(math.pi), [0, 0, 0, 1], atol=1e-12)
    assert response(0.05).argmax() == 0 and response(3 * math.pi / 4).argmax() == 3


def test_filter_1d_is_the_composite_of_the_band_bank():
    # The impulse response of filter_1d along x is sum_i gains_i * bank_i, for any gains.
    bank = _bank_1d()
    gains = torch.tensor([[0.5, 2.0, 0.7, 1.3], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    impulse = torch.zeros(2, 1, 1, 64, dtype=torch.float64)
    impulse[..., 32] = 1
    got = ops.filter_1d(impulse, gains, 'x')[:, 0, 0, 32 - 21 : 32 + 22]
    want = gains.numpy() @ bank
    np.testing.assert_allclose(got.numpy(), want, atol=1e-14)
    full = ops.filter_1d(impulse, gains, 'x')[:, 0, 0]
    assert not full[:, :11].any() and not full[:, 54:].any()  # 43 taps: radius 3 * (1 + 2 + 4)
    assert full[0, 11] != 0 and torch.equal(full[1], impulse[1, 0, 0])  # unit gains: the identity


@pytest.mark.parametrize('size', [32, 8])
def test_image_filter_is_the_same_1d_filter_along_x_and_y(size):
    # Independent formulation: one mirror padding by the filter radius, then the composite 1-D kernel as a
    # row and as a column convolution (the ADA paper's separable filter). Also for images smaller than
    # the 43-tap kernel (then the padding mirrors more than once).
    bank = torch.from_numpy(_bank_1d())
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    gains = torch.exp2(torch.randn(2, 4, dtype=torch.float64))
    kernel = gains @ bank  # [2, 43]
    padded = ops.reflect_pad(x, (21, 21, 21, 21))
    want = []
    for n in range(2):
        k = kernel[n].expand(3, 1, 43)
        row = F.conv2d(padded[n : n + 1], k[:, :, None, :], groups=3)
        want.append(F.conv2d(row, k[:, :, :, None], groups=3))
    torch.testing.assert_close(ops.apply_band_gains(x, gains), torch.cat(want), atol=1e-12, rtol=0)


def test_uniform_band_gain_scales_the_image_by_its_square():
    # The filter is G(wx) G(wy) with G = g in every band, so the image is scaled by g^2 (the reference
    # behaviour); the DC response is gains[:, 0]^2 whatever the other bands do.
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    g = torch.tensor([0.5, 1.7, 3.0], dtype=torch.float64)
    y = ops.apply_band_gains(x, g[:, None].expand(3, 4))
    torch.testing.assert_close(y, g[:, None, None, None] ** 2 * x, atol=1e-12, rtol=0)
    const = torch.full([1, 2, 16, 16], 0.4, dtype=torch.float64)
    gains = torch.tensor([[0.6, 2.0, 3.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(ops.apply_band_gains(const, gains), 0.36 * const, atol=1e-12, rtol=0)


def test_equal_band_gains_normalise_to_the_derived_factor():
    # Each band i amplified by b_i is renormalised by sqrt(1 + w_i (b_i^2 - 1)), w = [10, 1, 1, 1] / 13, and
    # the four band transformations compose by product. All bands drawn equal to g then give in every
    # band F(g) = g / (sqrt(1 + 10/13 (g^2 - 1)) * (1 + 1/13 (g^2 - 1))^(3/2)); for g = 1/2:
    # 1 + 10/13 * (-3/4) = 11/26 and 1 + 1/13 * (-3/4) = 49/52, so F = 0.5 / sqrt(11/26 * (49/52)^3)
    # = 0.840371 (not the identity), and the separable filter scales the image by F^2 = 0.706224.
    f_half = 0.5 / math.sqrt(11 / 26 * (49 / 52) ** 3)
    assert f_half == pytest.approx(0.840371, abs=1e-6) and f_half**2 == pytest.approx(0.706224, abs=1e-6)
    g = torch.tensor([[0.5] * 4, [2.0] * 4, [1.0] * 4], dtype=torch.float64)
    f_two = 2 / (math.sqrt(1 + 30 / 13) * (1 + 3 / 13) ** 1.5)
    want = torch.tensor([f_half, f_two, 1.0], dtype=torch.float64)[:, None].expand(3, 4)
    torch.testing.assert_close(ops.normalize_band_gains(g), want, atol=1e-14, rtol=0)
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    y = ops.apply_band_gains(x, ops.normalize_band_gains(g[:1]))
    torch.testing.assert_close(y, f_half**2 * x, atol=1e-12, rtol=0)


def test_band_normalisation_is_a_product_of_power_preserving_single_band_steps():
    w = torch.tensor(ops.BAND_POWER, dtype=torch.float64)
    b = torch.exp2(torch.randn(64, 4, dtype=torch.float64))
    want = torch.ones_like(b)
    for i in range(4):
        t = torch.ones_like(b)
        t[:, i] = b[:, i]
        t = t / (w * t.square()).sum(1, keepdim=True).sqrt()  # one band: expected power kept exactly
        torch.testing.assert_close((w * t.square()).sum(1), torch.ones(64, dtype=torch.float64))
        want = want * t
    torch.testing.assert_close(ops.normalize_band_gains(b), want, atol=1e-14, rtol=1e-14)


def test_imgfilter_draws_each_band_with_its_own_probability():
    n = 8000
    pipe = _pipe(imgfilter=1, imgfilter_bands=[1, 0, 0.5, 1])
    hit, gains = pipe.sample_band_gains(n, 0.5, torch.device('cpu'))
    rates = hit.double().mean(0)
    torch.testing.assert_close(
        rates, torch.tensor([0.5, 0, 0.25, 0.5], dtype=torch.float64), atol=0.03, rtol=0
    )
    torch.testing.assert_close(gains[~hit.any(1)], torch.ones_like(gains[~hit.any(1)]))
    # Where only band 0 is hit, gains = (b, 1, 1, 1) / sqrt(...), so gains_0 / gains_3 = b ~ 2^N(0, 1).
    only0 = hit[:, 0] & ~hit[:, 1:].any(1)
    log2_b = torch.log2(gains[only0, 0] / gains[only0, 3])
    assert abs(float(log2_b.std()) - 1.0) < 0.1 and abs(float(log2_b.mean())) < 0.1
    assert (
        _pipe(imgfilter=1, imgfilter_bands=[0, 0, 0, 0]).sample_band_gains(8, 1.0, torch.device('cpu'))
        is None
    )


def test_imgfilter_in_the_pipe_applies_the_drawn_separable_filter():
    # With only imgfilter on, the pipe draws nothing else, so re-seeding replays its gains; a constant image
    # is scaled by the DC response gains_0^2, and unfiltered samples come back bit-exact.
    pipe = _pipe(0.5, preset='filter')
    x = torch.full([256, 3, 8, 8], 0.5)
    torch.manual_seed(7)
    hit, gains = pipe.sample_band_gains(256, 0.5, torch.device('cpu'))
    torch.manual_seed(7)
    y = pipe(x)
    dc = gains[:, 0].float().square()[:, None, None, None]
    torch.testing.assert_close(y, dc * x, atol=1e-5, rtol=1e-5)
    assert torch.equal(y[~hit.any(1)], x[~hit.any(1)])
    assert 0 < int((~hit.any(1)).sum()) < 64  # P(no band hit) = 0.5^4
