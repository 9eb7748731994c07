"""DiffAugment (Zhao et al. 2020, arXiv 2006.10738): op semantics and magnitudes, determinism, policy
parsing, the module, and first/second-order gradients (R1 through the augmentation)."""

import math

import pytest
import torch

from stylegan2_ada_kd.augment.diffaugment import (
    POLICIES,
    DiffAugment,
    parse_policy,
    rand_brightness,
    rand_contrast,
    rand_cutout,
    rand_saturation,
    rand_translation,
)

OPS = [rand_brightness, rand_saturation, rand_contrast, rand_translation, rand_cutout]


def _images(n=4, c=3, h=16, w=16, dtype=torch.float32, seed=123, low=-1.0, high=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand([n, c, h, w], generator=gen, dtype=torch.float64) * (high - low) + low).to(dtype)


def _shift(img, dy, dx):
    """Reference integer shift with zero fill of one [C, H, W] image: out[i, j] = img[i - dy, j - dx]."""
    _, h, w = img.shape
    out = torch.zeros_like(img)
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


# ------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('size', [8, 16, 32])
@pytest.mark.parametrize('channels', [1, 3])
def test_shapes_and_dtypes(channels, size, dtype):
    x = _images(3, channels, size, size, dtype=dtype)
    for op in OPS:
        y = op(x)
        assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()
    y = DiffAugment()(x)
    assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()


@pytest.mark.parametrize('hw', [(2, 2), (2, 5), (7, 7), (8, 12), (13, 6)])
def test_odd_and_tiny_sizes(hw):
    x = _images(5, 3, *hw)
    y = DiffAugment()(x)
    assert y.shape == x.shape


def test_rejects_bad_input():
    with pytest.raises(ValueError, match=r'\[N, C, H, W\]'):
        rand_brightness(torch.zeros([3, 8, 8]))
    with pytest.raises(ValueError, match='float'):
        rand_cutout(torch.zeros([1, 3, 8, 8], dtype=torch.int64))
    with pytest.raises(ValueError, match='2x2'):
        DiffAugment()(torch.zeros([1, 3, 1, 8]))
    with pytest.raises(ValueError, match='ratio'):
        rand_translation(torch.zeros([1, 3, 8, 8]), ratio=-0.1)


# ------------------------------------------------------------------------------------------ colour


def test_brightness_is_uniform_shift_per_image():
    torch.manual_seed(0)
    x = torch.zeros([512, 3, 4, 4]) + torch.linspace(-0.8, 0.8, 512)[:, None, None, None]
    y = rand_brightness(x)
    delta = y - x
    per_image = delta[:, :1, :1, :1]
    assert torch.allclose(delta, per_image.expand_as(delta), atol=1e-6)  # One constant shift per image.
    shift = per_image.flatten()
    assert shift.min() >= -0.5 and shift.max() <= 0.5
    assert abs(float(shift.std()) - 1 / math.sqrt(12)) < 0.03  # ~5 standard errors for n = 512.
    assert abs(float(shift.mean())) < 0.04


def test_saturation_leaves_grey_images_and_single_channel_alone():
    torch.manual_seed(1)
    grey = _images(16, 1, 8, 8).expand(16, 3, 8, 8).contiguous()
    assert torch.allclose(rand_saturation(grey), grey, atol=1e-6)
    mono = _images(16, 1, 8, 8)
    assert torch.allclose(rand_saturation(mono), mono, atol=1e-6)


def test_saturation_scales_deviation_from_channel_mean_by_u02():
    torch.manual_seed(2)
    x = _images(256, 3, 4, 4)
    mean = x.mean(1, keepdim=True)
    y = rand_saturation(x)
    assert torch.allclose(y.mean(1, keepdim=True), mean, atol=1e-5)
    factor = ((y - mean) * (x - mean)).sum([1, 2, 3]) / (x - mean).square().sum([1, 2, 3])
    assert torch.allclose((y - mean), (x - mean) * factor[:, None, None, None], atol=1e-5)
    assert factor.min() >= 0 and factor.max() <= 2 and factor.max() - factor.min() > 1.8


def test_contrast_keeps_image_mean_and_scales_by_u_half_three_halves():
    torch.manual_seed(3)
    x = _images(256, 3, 8, 8)
    mean = x.mean([1, 2, 3], keepdim=True)
    y = rand_contrast(x)
    assert torch.allclose(y.mean([1, 2, 3], keepdim=True), mean, atol=1e-6)
    factor = ((y - mean) * (x - mean)).sum([1, 2, 3]) / (x - mean).square().sum([1, 2, 3])
    assert torch.allclose((y - mean), (x - mean) * factor[:, None, None, None], atol=1e-5)
    assert factor.min() >= 0.5 and factor.max() <= 1.5 and factor.max() - factor.min() > 0.9


# ------------------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize('size', [16, 32])
def test_translation_moves_one_hot_pixel_by_bounded_integer(size):
    torch.manual_seed(4)
    n, c, r = 512, 1, size // 2
    x = torch.zeros([n, c, size, size])
    x[:, :, r, r] = 1
    y = rand_translation(x)
    assert torch.equal(y.flatten(1).sum(1), torch.ones(n))  # Exactly one pixel survives, values 0/1.
    pos = y.flatten(1).argmax(1)
    dy, dx = pos // size - r, pos % size - r
    s = size // 8
    assert dy.abs().max() <= s and dx.abs().max() <= s
    assert set(dy.tolist()) == set(range(-s, s + 1)) and set(dx.tolist()) == set(range(-s, s + 1))


def test_translation_is_an_exact_shift_with_zero_fill():
    torch.manual_seed(5)
    x = _images(64, 3, 16, 16, low=0.1, high=1.0)  # No zeros in the content.
    y = rand_translation(x)
    for img, out in zip(x, y):
        matches = [
            (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(out, _shift(img, dy, dx))
        ]
        assert len(matches) == 1, matches


def test_translation_non_square_uses_per_axis_limits():
    torch.manual_seed(6)
    x = torch.zeros([512, 1, 8, 32])
    x[:, :, 4, 16] = 1
    pos = rand_translation(x).flatten(1).argmax(1)
    assert set((pos // 32 - 4).tolist()) == {-1, 0, 1}
    assert set((pos % 32 - 16).tolist()) == set(range(-4, 5))


@pytest.mark.parametrize('hw', [(16, 16), (9, 12)])
def test_cutout_zeroes_exactly_one_clipped_rectangle(hw):
    torch.manual_seed(7)
    h, w = hw
    ch, cw = int(h / 2 + 0.5), int(w / 2 + 0.5)
    x = _images(256, 3, h, w, low=0.1, high=1.0)  # No zeros in the content.
    y = rand_cutout(x)
    clipped = 0
    for img, out in zip(x, y):
        zero = out == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # All channels alike.
        z = zero[0]
        rows, cols = z.any(1).nonzero()[:, 0], z.any(0).nonzero()[:, 0]
        assert len(rows) > 0 and len(cols) > 0
        assert torch.equal(rows, torch.arange(rows[0], rows[-1] + 1))  # Contiguous rows and columns...
        assert torch.equal(cols, torch.arange(cols[0], cols[-1] + 1))
        assert torch.equal(z, z.any(1)[:, None] & z.any(0)[None, :])  # ...forming a full rectangle.
        touches_h = rows[0] == 0 or rows[-1] == h - 1
        touches_w = cols[0] == 0 or cols[-1] == w - 1
        assert len(rows) == ch or (len(rows) < ch and touches_h)
        assert len(cols) == cw or (len(cols) < cw and touches_w)
        clipped += int(len(rows) < ch or len(cols) < cw)
        assert torch.equal(out[~zero], img[~zero])  # The rest is unchanged.
    assert 0 < clipped < len(x)  # Both clipped and unclipped rectangles occur.


# ------------------------------------------------------------------------------------------ determinism


def test_deterministic_under_seed_and_seeds_differ():
    x = _images(8, 3, 16, 16)
    aug = DiffAugment()
    torch.manual_seed(10)
    a = aug(x)
    torch.manual_seed(10)
    b = aug(x)
    torch.manual_seed(11)
    c = aug(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_draws_do_not_depend_on_dtype():
    x = _images(8, 3, 16, 16)
    torch.manual_seed(12)
    a = DiffAugment()(x)
    torch.manual_seed(12)
    b = DiffAugment()(x.double())
    assert torch.allclose(a.double(), b, atol=1e-5)


# ------------------------------------------------------------------------------------------ policies


def test_parse_policy():
    assert parse_policy('color,translation,cutout') == ('color', 'translation', 'cutout')
    assert parse_policy(' cutout , color ') == ('cutout', 'color')
    assert parse_policy('translation') == ('translation',)
    assert set(POLICIES) == {'color', 'translation', 'cutout'}


@pytest.mark.parametrize('bad', ['', '  ', 'colour', 'color,,cutout', 'color,flip', 'Color'])
def test_parse_policy_errors(bad):
    with pytest.raises(ValueError, match='--diffaug') as info:
        parse_policy(bad)
    if bad.strip():
        assert 'color, cutout, translation' in str(info.value)
    with pytest.raises(ValueError, match='--diffaug'):
        DiffAugment(bad)


def test_module_rebuild_no_p_and_policy_order():
    m = DiffAugment('translation,color')
    assert m.policy == ('translation', 'color')
    rebuilt = DiffAugment(**m.init_kwargs)
    assert rebuilt.policy == m.policy and rebuilt.init_kwargs == {'policy': 'translation,color'}
    assert not hasattr(m, 'p') and m.state_dict() == {}  # no probability: nothing to write or report
    assert list(m.parameters()) == []
    assert 'translation,color' in repr(m)
    x = _images(4, 3, 16, 16)
    torch.manual_seed(13)
    y = m(x)
    torch.manual_seed(13)
    expected = x
    for op in (rand_translation, rand_brightness, rand_saturation, rand_contrast):
        expected = op(expected)
    assert torch.equal(y, expected)


def test_state_of_older_versions_with_a_p_buffer_loads():
    """Snapshots written before the dummy p buffer was dropped hold {'p': 1.0}; strict loads accept it."""
    from stylegan2_ada_kd.checkpoint.classes import NetworkPickleError, load_state_strict

    old = {'p': torch.ones([])}
    m = DiffAugment()
    m.load_state_dict(old, strict=True)
    load_state_strict(m, old, 'old snapshot', m.init_kwargs)
    assert list(old) == ['p']  # the caller's dict is left as it was
    with pytest.raises(NetworkPickleError, match='1 unexpected key'):
        load_state_strict(m, {'q': torch.ones([])}, 'bad snapshot', m.init_kwargs)


def test_default_policy_is_color_translation_cutout():
    assert DiffAugment().policy == ('color', 'translation', 'cutout')


# ------------------------------------------------------------------------------------------ gradients


def test_first_order_gradient_reaches_input():
    x = _images(4, 3, 16, 16).requires_grad_(True)
    torch.manual_seed(20)
    y = DiffAugment()(x)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradgradcheck_composition_float64():
    aug = DiffAugment()

    def fn(x):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(21)  # Same draws on every call.
            return torch.tanh(aug(x))

    x = _images(1, 3, 6, 6, dtype=torch.float64, low=0.1).requires_grad_(True)
    assert int((fn(x) == 0).sum()) == 3 * (6 + 9)  # Seed 21 shifts one column out and cuts a 3x3 out.
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_r1_second_order_through_augmentation():
    torch.manual_seed(22)
    conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
    conv2 = torch.nn.Conv2d(4, 1, 3, padding=1)
    D = lambda img: conv2(torch.nn.functional.softplus(conv1(img))).mean([1, 2, 3])
    x = _images(4, 3, 16, 16).requires_grad_(True)
    logits = D(DiffAugment()(x))
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    penalty = grad.square().sum([1, 2, 3]).mean()
    penalty.backward()
    for param in (conv1.weight, conv2.weight):
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0
