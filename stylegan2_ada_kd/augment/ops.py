"""Pure building blocks of the ADA augmentation pipeline (Karras et al. 2020, arXiv 2006.06676, App. B).

Everything here is a stateless function of its arguments (only :func:`add_noise` draws from torch's
global RNG): wavelet tables, 3x3 geometric and 4x4 colour matrices, reflection padding, the exact
pixel-blit warp, the wavelet-resampled general warp, the colour transform, the separable
frequency-band filter and the corruptions. :mod:`stylegan2_ada_kd.augment.ada` draws the
random parameters and decides which sample gets what.

Conventions:
    * images are ``[N, C, H, W]`` floats, nominally in ``[-1, 1]``;
    * geometric matrices are ``[N, 3, 3]`` and *inverse*: they map an output pixel position to the input
      position it is read from. Positions are in pixels, relative to the image centre ``((W-1)/2, (H-1)/2)``,
      x to the right and y down;
    * colour matrices are ``[N, 4, 4]`` and act on homogeneous RGB column vectors ``(r, g, b, 1)``.

All image paths are built from indexing, elementwise arithmetic and ``conv2d``, so autograd differentiates
them w.r.t. the images to any order (R1 through the augmentation needs the second order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from torch_utils.ops import upfirdn2d

# --------------------------------------------------------------------------------- wavelet tables

# Daubechies' symlet of order 6 ("sym6", 12 taps): the least-asymmetric orthonormal low-pass with six
# vanishing moments (Daubechies, "Ten Lectures on Wavelets", 1992, Sec. 8.1), in the decomposition-filter
# order of the published tables (PyWavelets ``sym6.dec_lo``). The digits come from our own spectral
# factorisation of the Daubechies polynomial at 50-digit precision (they agree with the published
# 16-digit tables to 1.6e-12); tests/test_augment.py re-checks the orthonormality conditions.
SYM6_LOWPASS: tuple[float, ...] = (
    0.015404109327044824,
    0.0034907120842221626,
    -0.11799011114852002,
    -0.04831174258569806,
    0.49105594192797375,
    0.787641141028651,
    0.3379294217281658,
    -0.07263752278637658,
    -0.02106029251237085,
    0.04472490177078139,
    0.0017677118642540077,
    -0.00780070832503238,
)

# sym2 equals Daubechies' db2 (4 taps), which has the closed form (1 -+ sqrt3, 3 -+ sqrt3) / (4 sqrt2).
_R3 = math.sqrt(3.0)
SYM2_LOWPASS: tuple[float, ...] = tuple(
    v / (4 * math.sqrt(2.0)) for v in (1 - _R3, 3 - _R3, 3 + _R3, 1 + _R3)
)

# Zero-phase half-band kernel of the band filter: the autocorrelation of sym2 scaled to unit DC gain, which
# is exactly [-1, 0, 9, 16, 9, 0, -1] / 32 (the test checks this); its response A(w) has A(w) + A(w + pi) = 1.
HALFBAND_KERNEL: tuple[float, ...] = tuple(v / 32 for v in (-1.0, 0.0, 9.0, 16.0, 9.0, 0.0, -1.0))

# Assumed share of natural-image power in the four bands (low to high) used to normalise the band gains.
BAND_POWER: tuple[float, ...] = (10 / 13, 1 / 13, 1 / 13, 1 / 13)


# ---------------------------------------------------------------------------- matrix builders


def _batch_eye(n: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """``[n, size, size]`` identity matrices with ``like``'s dtype and device."""
    return torch.eye(size, dtype=like.dtype, device=like.device).repeat(n, 1, 1)


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` translations by ``(tx, ty)`` pixels; ``tx``, ``ty``: ``[N]``."""
    m = _batch_eye(tx.shape[0], 3, tx)
    m[:, 0, 2] = tx
    m[:, 1, 2] = ty
    return m


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` axis-aligned scalings by ``(sx, sy)`` about the centre; ``sx``, ``sy``: ``[N]``."""
    m = _batch_eye(sx.shape[0], 3, sx)
    m[:, 0, 0] = sx
    m[:, 1, 1] = sy
    return m


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` rotations by ``theta`` radians (``[N]``) about the centre; exact identity at 0."""
    m = _batch_eye(theta.shape[0], 3, theta)
    c, s = theta.cos(), theta.sin()
    m[:, 0, 0], m[:, 0, 1] = c, -s
    m[:, 1, 0], m[:, 1, 1] = s, c
    return m


def rotate90_2d(k: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``[N, 3, 3]`` rotations by ``k * 90`` degrees (``k``: ``[N]`` integers), with exact 0/+-1 entries."""
    k = k.long().remainder(4)
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=dtype, device=k.device)[k]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=dtype, device=k.device)[k]
    m = _batch_eye(k.shape[0], 3, cos)
    m[:, 0, 0], m[:, 0, 1] = cos, -sin
    m[:, 1, 0], m[:, 1, 1] = sin, cos
    return m


def _luma_axis(like: torch.Tensor) -> torch.Tensor:
    """``[3]`` unit luma axis ``(1, 1, 1) / sqrt(3)``."""
    return torch.full([3], 1 / math.sqrt(3.0), dtype=like.dtype, device=like.device)


def _embed3(block: torch.Tensor) -> torch.Tensor:
    """``[N, 4, 4]`` homogeneous matrices with ``block`` (``[N, 3, 3]``) as their linear part."""
    m = _batch_eye(block.shape[0], 4, block)
    m[:, :3, :3] = block
    return m


def translate3d(t: torch.Tensor) -> torch.Tensor:
    """``[N, 4, 4]`` colour offsets adding ``t`` (``[N]``) to every channel (brightness)."""
    m = _batch_eye(t.shape[0], 4, t)
    m[:, :3, 3] = t[:, None]
    return m


def scale3d(s: torch.Tensor) -> torch.Tensor:
    """``[N, 4, 4]`` colour scalings by ``s`` (``[N]``) about 0 (contrast)."""
    eye = torch.eye(3, dtype=s.dtype, device=s.device)
    return _embed3(eye * s[:, None, None])


def luma_flip3d(i: torch.Tensor) -> torch.Tensor:
    """``[N, 4, 4]`` Householder reflections ``I - 2 v v^T i`` about the luma axis ``v``, ``i``: ``[N]`` 0/1.

    Where ``i = 1`` the luma component is negated and the chroma kept."""
    v = _luma_axis(i)
    eye = torch.eye(3, dtype=i.dtype, device=i.device)
    return _embed3(eye - 2 * torch.outer(v, v) * i[:, None, None])


def luma_rotate3d(theta: torch.Tensor) -> torch.Tensor:
    """``[N, 4, 4]`` rotations by ``theta`` (``[N]`` radians) about the luma axis (hue), via Rodrigues'
    formula ``I + sin(t) K + (1 - cos(t)) K^2`` with ``K`` the cross-product matrix of ``v``."""
    v = _luma_axis(theta)
    zero = torch.zeros([], dtype=theta.dtype, device=theta.device)
    k = torch.stack(
        [torch.stack([zero, -v[2], v[1]]), torch.stack([v[2], zero, -v[0]]), torch.stack([-v[1], v[0], zero])]
    )
    eye = torch.eye(3, dtype=theta.dtype, device=theta.device)
    sin, one_minus_cos = theta.sin()[:, None, None], (1 - theta.cos())[:, None, None]
    return _embed3(eye + sin * k + one_minus_cos * (k @ k))


def luma_saturate3d(s: torch.Tensor) -> torch.Tensor:
    """``[N, 4, 4]`` saturation changes: scale the part of the colour orthogonal to the luma axis by ``s``
    (``[N]``), written ``I + (s - 1)(I - v v^T)`` so that ``s = 1`` is the exact identity."""
    v = _luma_axis(s)
    eye = torch.eye(3, dtype=s.dtype, device=s.device)
    return _embed3(eye + (s - 1)[:, None, None] * (eye - torch.outer(v, v)))


# -------------------------------------------------------------------------------- geometry


def reflect_index(idx: torch.Tensor, size: int) -> torch.Tensor:
    """Map integer positions (any shape, any range) into ``[0, size)`` by mirror reflection without
    repeating the edge sample (``... 2 1 | 0 1 2 ... n-1 | n-2 ...``), as often as needed."""
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= size, period - idx, idx)


def reflect_pad(images: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """Mirror-pad ``[N, C, H, W]`` images by ``pad = (left, right, top, bottom)`` pixels (any amount,
    unlike ``F.pad``): ``[N, C, H + top + bottom, W + left + right]``."""
    left, right, top, bottom = (int(v) for v in pad)
    h, w = images.shape[2:]
    ix = reflect_index(torch.arange(-left, w + right, device=images.device), w)
    iy = reflect_index(torch.arange(-top, h + bottom, device=images.device), h)
    return images.index_select(3, ix).index_select(2, iy)


def source_positions(inv_matrix: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Input pixel positions read by the output positions ``xs`` (``[W']``) x ``ys`` (``[H']``), both
    centred, under ``inv_matrix`` ``[N, 3, 3]``: ``[N, H', W', 2]`` centred ``(x, y)`` positions."""
    m = inv_matrix.to(xs.dtype)
    gx = m[:, None, None, 0, 0] * xs[None, None, :] + m[:, None, None, 0, 1] * ys[None, :, None]
    gy = m[:, None, None, 1, 0] * xs[None, None, :] + m[:, None, None, 1, 1] * ys[None, :, None]
    return torch.stack([gx + m[:, None, None, 0, 2], gy + m[:, None, None, 1, 2]], dim=-1)


def _centred_grid(size: int, like: torch.Tensor) -> torch.Tensor:
    """``[size]`` pixel-centre positions relative to the image centre."""
    return torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2


def is_pixel_blit(inv_matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[N]`` bool: True where ``inv_matrix`` reads every output pixel from an exact input pixel centre
    (x-flips, 90-degree rotations of square images and integer shifts, in any combination).

    The map is affine, so this holds exactly when its linear part is integer and the first pixel lands on
    a pixel centre."""
    m = inv_matrix.to(torch.float64)
    x0, y0 = -(width - 1) / 2, -(height - 1) / 2
    px = m[:, 0, 0] * x0 + m[:, 0, 1] * y0 + m[:, 0, 2] + (width - 1) / 2
    py = m[:, 1, 0] * x0 + m[:, 1, 1] * y0 + m[:, 1, 2] + (height - 1) / 2
    linear = m[:, :2, :2].flatten(1)
    return (linear == linear.round()).all(dim=1) & (px == px.round()) & (py == py.round())


def blit_images(images: torch.Tensor, inv_matrix: torch.Tensor) -> torch.Tensor:
    """Exact integer warp: ``[N, C, H, W]`` -> same, reading pixel ``round(inv_matrix @ p)`` with mirror
    reflection outside the image. Meant for matrices where :func:`is_pixel_blit` holds
    (ADA App. B, "pixel blitting")."""
    n, c, h, w = images.shape
    probe = inv_matrix.to(torch.float64)
    pos = source_positions(probe, _centred_grid(w, probe), _centred_grid(h, probe))
    src_x = reflect_index((pos[..., 0] + (w - 1) / 2).round().long(), w)
    src_y = reflect_index((pos[..., 1] + (h - 1) / 2).round().long(), h)
    index = (src_y * w + src_x).reshape(n, 1, h * w).expand(n, c, h * w)
    return images.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)


def wavelet_filter(taps: Sequence[float], device: torch.device | str = 'cpu') -> torch.Tensor:
    """``[taps]`` float32 separable low-pass for :mod:`torch_utils.ops.upfirdn2d`, scaled to unit DC gain."""
    return upfirdn2d.setup_filter(list(taps), device=device, normalize=True, separable=True)


def bilinear_sample(
    images: torch.Tensor,  # [N, C, H, W].
    x: torch.Tensor,  # Column positions [N, H', W'] in pixel-index units (0 = first pixel centre).
    y: torch.Tensor,  # Row positions [N, H', W'] in pixel-index units.
) -> torch.Tensor:
    """Bilinear interpolation written with ``gather`` (so any autograd order works on any torch version).

    Positions outside the image read the nearest edge pixel. Returns ``[N, C, H', W']`` samples,
    differentiable w.r.t. ``images``.
    """
    n, c, h, w = images.shape
    x0f, y0f = x.floor(), y.floor()
    wx = (x - x0f).to(images.dtype)[:, None]
    wy = (y - y0f).to(images.dtype)[:, None]
    x0, y0 = x0f.long(), y0f.long()
    cols = (x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1))
    rows = (y0.clamp(0, h - 1), (y0 + 1).clamp(0, h - 1))
    flat = images.reshape(n, c, h * w)

    def tap(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        index = (row * w + col).reshape(n, 1, -1).expand(n, c, -1)
        return flat.gather(2, index).reshape(n, c, *x.shape[1:])

    top = tap(rows[0], cols[0]) * (1 - wx) + tap(rows[0], cols[1]) * wx
    bottom = tap(rows[1], cols[0]) * (1 - wx) + tap(rows[1], cols[1]) * wx
    return top * (1 - wy) + bottom * wy


_MAX_PAD_FACTOR = 4  # Mirror padding is capped at this many image sizes; farther reads clamp to the edge.


def _cover_pad(lo: float, hi: float, size: int, guard: int) -> tuple[int, int]:
    """Padding ``(before, after)`` so that positions ``[lo, hi]`` plus ``guard`` pixels lie inside."""
    before = max(0, -math.floor(lo)) + guard
    after = max(0, math.ceil(hi) - (size - 1)) + guard
    cap = _MAX_PAD_FACTOR * size
    return min(before, cap), min(after, cap)


def warp_images(
    images: torch.Tensor,  # [N, C, H, W].
    inv_matrix: torch.Tensor,  # Inverse transforms [N, 3, 3] (output -> input, centred pixels).
    lowpass: torch.Tensor | None = None,  # Separable orthonormal low-pass [taps] (see below); None = sym6.
) -> torch.Tensor:
    """General geometric warp with wavelet anti-aliasing (ADA App. B, "geometric transformations").

    The images are mirror-padded far enough to cover every position read, upsampled 2x with the
    ``lowpass`` wavelet filter (from :func:`wavelet_filter`, with an even number of taps), sampled
    bilinearly at the transformed positions of a 2x output grid, and decimated 2x with the time-reversed
    filter. For an orthonormal ``lowpass`` the up/down pair is a perfect-reconstruction pair, so the
    identity matrix reproduces the input (to rounding). Symlets are not linear-phase: the 2x grid is placed
    using the filter's DC group delay (its centroid), so that low frequencies are rotated about the true
    image centre.

    Returns ``[N, C, H, W]`` warped images, differentiable w.r.t. ``images`` to any order.
    """
    if lowpass is None:
        lowpass = wavelet_filter(SYM6_LOWPASS, images.device)
    n, c, h, w = images.shape
    taps = lowpass.shape[0]
    half = taps // 2 - 1  # filter taps before the upsampler's output sample; 2x samples eaten per side
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    f = lowpass.to(dtype)
    # 2x sample k of either grid sits at the 1x position (k + shift) / 2, shift = half - filter centroid.
    shift = half - (torch.arange(taps, dtype=dtype, device=f.device) * f).sum() / f.sum()
    hx = torch.arange(2 * w + 2 * half, dtype=dtype, device=images.device)
    hy = torch.arange(2 * h + 2 * half, dtype=dtype, device=images.device)
    pos = source_positions(
        inv_matrix, (hx - half + shift) / 2 - (w - 1) / 2, (hy - half + shift) / 2 - (h - 1) / 2
    )
    px, py = pos[..., 0] + (w - 1) / 2, pos[..., 1] + (h - 1) / 2
    x_lo, x_hi, y_lo, y_hi = torch.stack([px.min(), px.max(), py.min(), py.max()]).tolist()
    guard = taps // 4 + 1  # keeps the upsampler's zero border away from every bilinear tap
    left, right = _cover_pad(x_lo, x_hi, w, guard)
    top, bottom = _cover_pad(y_lo, y_hi, h, guard)
    padded = reflect_pad(images, (left, right, top, bottom))
    hires = upfirdn2d.upfirdn2d(padded, lowpass, up=2, padding=[half + 1, half] * 2, gain=4)
    sampled = bilinear_sample(hires, 2 * (px + left) - shift, 2 * (py + top) - shift)
    return upfirdn2d.upfirdn2d(sampled, lowpass, down=2, flip_filter=True)


def apply_geometric(
    images: torch.Tensor, inv_matrix: torch.Tensor, lowpass: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply ``inv_matrix`` (``[N, 3, 3]``) to ``[N, C, H, W]`` images with a single resampling.

    Samples whose matrix is exactly the identity pass through unchanged; samples whose matrix is a pixel
    permutation (:func:`is_pixel_blit`) are blitted exactly; the rest go through :func:`warp_images`.
    Returns ``[N, C, H, W]``.
    """
    n, _, h, w = images.shape
    eye = torch.eye(3, dtype=inv_matrix.dtype, device=inv_matrix.device)
    identity = (inv_matrix == eye).flatten(1).all(dim=1)
    blit = is_pixel_blit(inv_matrix, h, w) & ~identity
    general = ~(identity | blit)
    out = images
    for mask, fn in ((blit, blit_images), (general, lambda x, m: warp_images(x, m, lowpass))):
        idx = mask.nonzero()[:, 0]
        if idx.numel():
            out = out.index_copy(0, idx, fn(images.index_select(0, idx), inv_matrix.index_select(0, idx)))
    return out


# ------------------------------------------------------------------------------ colour, filter, noise


def apply_color_matrix(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply per-sample colour matrices ``[N, 4, 4]`` to ``[N, C, H, W]`` images (ADA App. B, "colour").

    ``C == 3``: ``rgb' = M[:3, :3] rgb + M[:3, 3]``, written as elementwise multiply-adds (no matmul, so no
    reduced-precision GEMM, and an identity matrix is exact). ``C == 1``: the channel is treated as a
    luma-only signal, ``x' = M[0, 0] x + M[0, 3]``; this is exact for brightness/contrast matrices,
    the only colour ops :class:`~stylegan2_ada_kd.augment.ada.AugmentPipe` builds for one channel.
    """
    c = images.shape[1]
    m = matrix.to(images.dtype)[:, :, :, None, None]
    if c == 1:
        return images * m[:, 0:1, 0] + m[:, 0:1, 3]
    if c != 3:
        raise ValueError(f'colour transforms need 1 or 3 channels; got {c}')
    out = m[:, :3, 3]
    for j in range(3):
        out = out + m[:, :3, j] * images[:, j : j + 1]
    return out


def _halfband(images: torch.Tensor, dilation: int, axis: str) -> torch.Tensor:
    """Zero-phase half-band low-pass (:data:`HALFBAND_KERNEL`, dilated ``dilation`` times) along one axis
    (``'x'``: width, ``'y'``: height) of ``[N, C, H, W]`` images, with mirror padding; same shape out."""
    c = images.shape[1]
    k = torch.tensor(HALFBAND_KERNEL, dtype=images.dtype, device=images.device)
    r = (k.shape[0] - 1) // 2 * dilation
    if axis == 'x':
        x = reflect_pad(images, (r, r, 0, 0))
        return F.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), dilation=(1, dilation), groups=c)
    if axis == 'y':
        x = reflect_pad(images, (0, 0, r, r))
        return F.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), dilation=(dilation, 1), groups=c)
    raise ValueError(f"axis must be 'x' or 'y'; got {axis!r}")


def _lowpasses(images: torch.Tensor, axis: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 1-D low-passes ``L1, L2, L3`` (cut-offs near pi/2, pi/4, pi/8) of images along ``axis``: a
    dyadic "a trous" cascade of the half-band filter (dilations 1, 2, 4)."""
    y1 = _halfband(images, 1, axis)
    y2 = _halfband(y1, 2, axis)
    return y1, y2, _halfband(y2, 4, axis)


def split_bands(images: torch.Tensor, axis: str = 'x') -> list[torch.Tensor]:
    """Split ``[N, C, H, W]`` images into the 4 octave bands of the 1-D filter bank along ``axis``, low to
    high (ADA App. B, "image-space filtering"): ``L3, L2 - L3, L1 - L2, x - L1`` with the low-passes of
    :func:`_lowpasses`, i.e. the bands ``[0, pi/8], [pi/8, pi/4], [pi/4, pi/2], [pi/2, pi]``. They sum to
    the input. Returns 4 tensors of shape ``[N, C, H, W]``.
    """
    y1, y2, y3 = _lowpasses(images, axis)
    return [y3, y2 - y3, y1 - y2, images - y1]


def filter_1d(images: torch.Tensor, gains: torch.Tensor, axis: str) -> torch.Tensor:
    """Apply the per-sample composite 1-D filter ``sum_i gains_i * band_i`` (``gains`` ``[N, 4]``, low to
    high) along ``axis`` of ``[N, C, H, W]`` images; same shape out. Its DC gain is ``gains[:, 0]``."""
    y1, y2, y3 = _lowpasses(images, axis)
    g = gains.to(images.dtype)[:, :, None, None, None]
    return g[:, 3] * images + (g[:, 2] - g[:, 3]) * y1 + (g[:, 1] - g[:, 2]) * y2 + (g[:, 0] - g[:, 1]) * y3


def apply_band_gains(images: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Image-space filtering (ADA App. B): the composite 1-D band filter of :func:`filter_1d` applied
    separably, along x and then along y, as in the reference. ``[N, C, H, W]`` -> same.

    The 2-D response is ``G(wx) G(wy)`` with ``G = sum_i gains_i B_i``: a uniform gain ``g`` in every band
    scales the image by ``g^2``, and the DC gain is ``gains[:, 0]^2``. Mirror padding at every stage of the
    cascade equals one mirror padding of the whole (symmetric) filter, for any image size.
    """
    return filter_1d(filter_1d(images, gains, 'x'), gains, 'y')


def normalize_band_gains(gains: torch.Tensor, power: Sequence[float] = BAND_POWER) -> torch.Tensor:
    """Normalise drawn band amplitudes ``b`` ``[N, 4]`` (1 where a band was not drawn) as the reference does.

    Each band's amplification is its own transformation: amplifying band ``i`` by ``b_i`` is followed by
    a division by ``sqrt(1 + w_i (b_i^2 - 1))``, which keeps the expected power of an image whose power is
    spread over the bands as ``w = power`` (default [10, 1, 1, 1] / 13). The four band transformations
    compose by product, so ``out_j = b_j / prod_i sqrt(1 + w_i (b_i^2 - 1))``. With one band drawn this is
    ``b / sqrt(sum_i w_i b_i^2)``; with all four equal to ``g`` it is not the identity (``g = 1/2`` gives
    0.8404 in every band).
    """
    weights = torch.as_tensor(power, dtype=gains.dtype, device=gains.device)
    per_band = 1 + weights * (gains.square() - 1)
    return gains / per_band.prod(dim=1, keepdim=True).sqrt()


def add_noise(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Add i.i.d. Gaussian noise with per-sample std ``sigma`` (``[N]``) to ``[N, C, H, W]`` images."""
    return images + sigma.to(images.dtype)[:, None, None, None] * torch.randn_like(images)


def cutout_mask(centre: torch.Tensor, size: float, height: int, width: int) -> torch.Tensor:
    """``[N, 1, H, W]`` masks, 0 inside a square of side ``size`` (fraction of the image size) centred at
    ``centre`` (``[N, 2]`` fractions ``(x, y)`` in ``[0, 1]``) and 1 elsewhere; pixels are tested at their
    centres."""
    xs = (torch.arange(width, dtype=centre.dtype, device=centre.device) + 0.5) / width
    ys = (torch.arange(height, dtype=centre.dtype, device=centre.device) + 0.5) / height
    inside_x = (xs[None, :] - centre[:, 0:1]).abs() < size / 2
    inside_y = (ys[None, :] - centre[:, 1:2]).abs() < size / 2
    cut = inside_y[:, :, None] & inside_x[:, None, :]
    return (~cut).to(centre.dtype)[:, None]
