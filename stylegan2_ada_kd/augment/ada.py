"""Adaptive discriminator augmentation (ADA): the augmentation pipeline and the ``p`` controller.

Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data" (arXiv 2006.06676):
Sec. 2-3 (non-leaking augmentations applied with probability ``p`` to every image D sees), Sec. 3.1 and
Eq. 1 (the overfitting heuristic ``r_t = E[sign(D(x_real))]`` and the adjustment of ``p``) and
Appendix B (the 18 transformations, their parameter distributions and the wavelet-based resampling).

:class:`AugmentPipe` draws, per sample, which transformations apply (each with probability
``multiplier * p``) and their parameters, composes the geometric ones into one inverse 3x3 matrix and
the colour ones into one 4x4 matrix, and hands them to the pure functions of
:mod:`stylegan2_ada_kd.augment.ops`. Its constructor kwargs use the names of the official
implementation's pickles, so ``AugmentPipe(**official_init_kwargs)`` works; :class:`AdaptiveP` is the
controller that moves ``pipe.p`` towards the target ``r_t``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from stylegan2_ada_kd.augment.ops import (
    SYM6_LOWPASS,
    add_noise,
    apply_band_gains,
    apply_color_matrix,
    apply_geometric,
    cutout_mask,
    luma_flip3d,
    luma_rotate3d,
    luma_saturate3d,
    normalize_band_gains,
    rotate2d,
    rotate90_2d,
    scale2d,
    scale3d,
    translate2d,
    translate3d,
    wavelet_filter,
)
from stylegan2_ada_kd.training.loss import REAL_SIGNS_STAT

# Constructor kwargs and their defaults (signature order); official pickles store these names.
DEFAULT_KWARGS: dict[str, Any] = dict(
    xflip=0.0,
    rotate90=0.0,
    xint=0.0,
    xint_max=0.125,
    scale=0.0,
    rotate=0.0,
    aniso=0.0,
    xfrac=0.0,
    scale_std=0.2,
    rotate_max=1.0,
    aniso_std=0.2,
    xfrac_std=0.125,
    brightness=0.0,
    contrast=0.0,
    lumaflip=0.0,
    hue=0.0,
    saturation=0.0,
    brightness_std=0.2,
    contrast_std=0.5,
    hue_max=1.0,
    saturation_std=1.0,
    imgfilter=0.0,
    imgfilter_bands=[1.0, 1.0, 1.0, 1.0],  # probability multipliers of the 4 bands, low to high
    imgfilter_std=1.0,
    noise=0.0,
    cutout=0.0,
    noise_std=0.1,
    cutout_size=0.5,
)

_GROUPS: dict[str, dict[str, float]] = {
    'b': dict(xflip=1, rotate90=1, xint=1),
    'g': dict(scale=1, rotate=1, aniso=1, xfrac=1),
    'c': dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
    'f': dict(imgfilter=1),
    'n': dict(noise=1),
    'cutout': dict(cutout=1),
}


def _merge(*groups: str) -> dict[str, float]:
    """Union of the multiplier groups named in ``_GROUPS``."""
    out: dict[str, float] = {}
    for group in groups:
        out.update(_GROUPS[group])
    return out


# The augmentation presets of the paper (``--augpipe``): the multipliers each one sets to 1.
AUGPIPE_SPECS: dict[str, dict[str, float]] = {
    'blit': _merge('b'),
    'geom': _merge('g'),
    'color': _merge('c'),
    'filter': _merge('f'),
    'noise': _merge('n'),
    'cutout': _merge('cutout'),
    'bg': _merge('b', 'g'),
    'bgc': _merge('b', 'g', 'c'),
    'bgcf': _merge('b', 'g', 'c', 'f'),
    'bgcfn': _merge('b', 'g', 'c', 'f', 'n'),
    'bgcfnc': _merge('b', 'g', 'c', 'f', 'n', 'cutout'),
}
DEFAULT_AUGPIPE = 'bgc'  # The preset of --aug=ada/fixed when --augpipe is not given.
DEFAULT_TARGET = 0.6  # ADA's target for the mean sign of D(real) (ADA Sec. 3.1).


def _plain_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor kwargs as JSON-able Python floats (numpy scalars from old pickles included)."""
    out = {}
    for name, value in kwargs.items():
        if name == 'imgfilter_bands':
            out[name] = [float(v) for v in value]
            if len(out[name]) != 4:
                raise ValueError(f'imgfilter_bands needs 4 entries (low to high); got {value!r}')
        else:
            out[name] = float(value)
            if not math.isfinite(out[name]) or out[name] < 0:
                raise ValueError(f'AugmentPipe: {name} must be a finite number >= 0; got {value!r}')
    return out


class AugmentPipe(torch.nn.Module):
    """The ADA augmentation pipeline (ADA App. B): 15 kinds of transformation, each applied to each image
    with probability ``min(1, multiplier * p)``, where ``p`` is the 0-d float32 buffer ``self.p`` (read with
    ``float()`` once per call, i.e. one device sync).

    Order: geometric (xflip, rotate90, xint, scale, rotate, aniso, rotate, xfrac; one inverse 3x3 matrix
    and a single resampling), colour (brightness, contrast, lumaflip, hue, saturation; one 4x4 matrix),
    image-space filtering (each of the 4 bands a transformation of its own, with probability
    ``imgfilter * imgfilter_bands[i] * p``; one separable filter), additive noise, cutout.

    Channels: geometric ops, filtering, noise and cutout work for any ``C``. Colour ops need ``C == 3``
    for lumaflip/hue/saturation; with ``C == 1`` only brightness and contrast act (the others are skipped,
    drawing no random numbers), and other channel counts raise when a colour op is enabled.

    Constructor kwargs are the multipliers and distribution parameters of the official implementation
    (see :data:`DEFAULT_KWARGS`; ``*_std`` are standard deviations of ``log2`` factors or of offsets,
    ``rotate_max``/``hue_max`` are fractions of 180 degrees, ``xint_max``/``xfrac_std``/``cutout_size``
    fractions of the image size). ``preset`` (a key of :data:`AUGPIPE_SPECS`) turns on the preset's
    multipliers (value 1) unless that multiplier is given non-zero explicitly. ``self.init_kwargs`` holds
    the resolved kwargs (no ``preset``), so ``AugmentPipe(**pipe.init_kwargs)`` rebuilds the pipe.
    """

    def __init__(
        self,
        xflip: float = 0,
        rotate90: float = 0,
        xint: float = 0,
        xint_max: float = 0.125,
        scale: float = 0,
        rotate: float = 0,
        aniso: float = 0,
        xfrac: float = 0,
        scale_std: float = 0.2,
        rotate_max: float = 1,
        aniso_std: float = 0.2,
        xfrac_std: float = 0.125,
        brightness: float = 0,
        contrast: float = 0,
        lumaflip: float = 0,
        hue: float = 0,
        saturation: float = 0,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        hue_max: float = 1,
        saturation_std: float = 1,
        imgfilter: float = 0,
        imgfilter_bands: Sequence[float] = (1, 1, 1, 1),
        imgfilter_std: float = 1,
        noise: float = 0,
        cutout: float = 0,
        noise_std: float = 0.1,
        cutout_size: float = 0.5,
        preset: str | None = None,
    ) -> None:
        super().__init__()
        given = dict(locals())
        kwargs = {name: given[name] for name in DEFAULT_KWARGS}
        if preset is not None:
            if preset not in AUGPIPE_SPECS:
                raise ValueError(
                    f'unknown augmentation preset {preset!r}; choose from {sorted(AUGPIPE_SPECS)}'
                )
            for name, value in AUGPIPE_SPECS[preset].items():
                kwargs[name] = kwargs[name] or value
        self.init_kwargs: dict[str, Any] = _plain_kwargs(kwargs)
        for name, value in self.init_kwargs.items():
            setattr(self, name, value)
        self.register_buffer('p', torch.zeros([]))
        self.register_buffer('lowpass', wavelet_filter(SYM6_LOWPASS), persistent=False)

    def _chance(self, prob: float, n: int, device: torch.device) -> torch.Tensor | None:
        """``[N]`` float64 0/1 mask of the samples hit by an op of probability ``prob`` (None if ``<= 0``)."""
        if prob <= 0:
            return None
        return (torch.rand([n], device=device) < min(prob, 1.0)).to(torch.float64)

    def sample_geometric(
        self, n: int, height: int, width: int, p: float, device: torch.device
    ) -> torch.Tensor:
        """Draw ``[N, 3, 3]`` float64 inverse geometric matrices (output -> input pixel, centred) for a batch
        of ``[N, C, height, width]`` images at probability ``p`` (ADA App. B, "pixel blitting" and "general
        geometric transformations"). Unselected ops contribute exact identities."""
        kw = dict(dtype=torch.float64, device=device)
        m = torch.eye(3, **kw).repeat(n, 1, 1)
        one = torch.ones([n], **kw)
        if (hit := self._chance(self.xflip * p, n, device)) is not None:
            m = m @ scale2d(1 - 2 * torch.randint(0, 2, [n], **kw) * hit, one)
        if (hit := self._chance(self.rotate90 * p, n, device)) is not None:
            m = m @ rotate90_2d(torch.randint(0, 4, [n], device=device) * hit.long())
        if (hit := self._chance(self.xint * p, n, device)) is not None:
            t = (torch.rand([n, 2], **kw) * 2 - 1) * self.xint_max * hit[:, None]
            m = m @ translate2d(-(t[:, 0] * width).round(), -(t[:, 1] * height).round())
        if (hit := self._chance(self.scale * p, n, device)) is not None:
            s = torch.exp2(torch.randn([n], **kw) * self.scale_std * hit)
            m = m @ scale2d(1 / s, 1 / s)
        # Two rotations, each with probability 1 - sqrt(1 - P), so that P(at least one) = P.
        p_rot = 1 - math.sqrt(max(0.0, 1 - min(self.rotate * p, 1.0)))
        m = self._maybe_rotate(m, p_rot, n, device)
        if (hit := self._chance(self.aniso * p, n, device)) is not None:
            s = torch.exp2(torch.randn([n], dtype=torch.float64, device=device) * self.aniso_std * hit)
            m = m @ scale2d(1 / s, s)
        m = self._maybe_rotate(m, p_rot, n, device)
        if (hit := self._chance(self.xfrac * p, n, device)) is not None:
            t = torch.randn([n, 2], **kw) * self.xfrac_std * hit[:, None]
            m = m @ translate2d(-t[:, 0] * width, -t[:, 1] * height)
        return m

    def _maybe_rotate(self, m: torch.Tensor, prob: float, n: int, device: torch.device) -> torch.Tensor:
        """Compose ``[N, 3, 3]`` ``m`` with rotations uniform in +-``rotate_max * 180`` deg at probability
        ``prob``."""
        if (hit := self._chance(prob, n, device)) is None:
            return m
        theta = (
            (torch.rand([n], dtype=torch.float64, device=device) * 2 - 1) * math.pi * self.rotate_max * hit
        )
        return m @ rotate2d(-theta)

    def sample_color(self, n: int, channels: int, p: float, device: torch.device) -> torch.Tensor:
        """Draw ``[N, 4, 4]`` float64 colour matrices (ADA App. B, "colour transformations"), applied in the
        order brightness, contrast, lumaflip, hue, saturation; only the first two when ``channels == 1``."""
        kw = dict(dtype=torch.float64, device=device)
        m = torch.eye(4, **kw).repeat(n, 1, 1)
        if (hit := self._chance(self.brightness * p, n, device)) is not None:
            m = translate3d(torch.randn([n], **kw) * self.brightness_std * hit) @ m
        if (hit := self._chance(self.contrast * p, n, device)) is not None:
            m = scale3d(torch.exp2(torch.randn([n], **kw) * self.contrast_std * hit)) @ m
        if channels == 1:
            return m
        if (hit := self._chance(self.lumaflip * p, n, device)) is not None:
            m = luma_flip3d(torch.randint(0, 2, [n], **kw) * hit) @ m
        if (hit := self._chance(self.hue * p, n, device)) is not None:
            m = luma_rotate3d((torch.rand([n], **kw) * 2 - 1) * math.pi * self.hue_max * hit) @ m
        if (hit := self._chance(self.saturation * p, n, device)) is not None:
            m = luma_saturate3d(torch.exp2(torch.randn([n], **kw) * self.saturation_std * hit)) @ m
        return m

    def sample_band_gains(
        self, n: int, p: float, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Draw image-filter gains (ADA App. B, "image-space filtering"; one transformation per band, as in
        the reference): band ``i`` of each sample is amplified with probability
        ``min(1, imgfilter * imgfilter_bands[i] * p)`` by ``2^N(0, imgfilter_std^2)``, and the amplitudes
        are normalised by :func:`~stylegan2_ada_kd.augment.ops.normalize_band_gains`.

        Returns ``(hit, gains)``: ``hit`` the ``[N, 4]`` bool mask of the amplified bands and ``gains``
        ``[N, 4]`` float64 normalised band amplitudes (low to high; all 1 for a sample with no band hit),
        or None if no band of any sample is hit.
        """
        if self.imgfilter <= 0:
            return None
        kw = dict(dtype=torch.float64, device=device)
        bands = torch.tensor(self.imgfilter_bands, **kw)
        log2_gains = torch.randn([n, 4], **kw) * self.imgfilter_std
        hit = torch.rand([n, 4], **kw) < (self.imgfilter * p * bands).clamp(max=1)
        if not bool(hit.any()):
            return None
        return hit, normalize_band_gains(torch.where(hit, torch.exp2(log2_gains), 1.0))

    def tick_status(self) -> str:
        """Shown after 'augment' on the training tick line: the probability ``p`` with three decimals."""
        return f'{float(self.p):.3f}'

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment ``[N, C, H, W]`` float images (about ``[-1, 1]``) into ``[N, C, H, W]`` of the same dtype.

        Returns ``images`` itself when ``p == 0`` or no op hits any sample; samples that no op hits come
        back bit-exact. Differentiable w.r.t. ``images`` to any order; the random draws are not.
        """
        if images.ndim != 4:
            raise ValueError(f'AugmentPipe expects [N, C, H, W] images; got shape {list(images.shape)}')
        p = float(self.p)
        if p <= 0:
            return images
        n, c, h, w = images.shape
        dev = images.device
        images = apply_geometric(images, self.sample_geometric(n, h, w, p, dev), self.lowpass)
        color = self.sample_color(n, c, p, dev)
        if not bool((color == torch.eye(4, dtype=color.dtype, device=dev)).all()):
            images = apply_color_matrix(images, color)
        if (drawn := self.sample_band_gains(n, p, dev)) is not None:
            idx = drawn[0].any(dim=1).nonzero()[:, 0]
            filtered = apply_band_gains(images.index_select(0, idx), drawn[1].index_select(0, idx))
            images = images.index_copy(0, idx, filtered)
        if (hit := self._chance(self.noise * p, n, dev)) is not None and bool(hit.any()):
            sigma = torch.randn([n], dtype=torch.float64, device=dev).abs() * self.noise_std * hit
            images = add_noise(images, sigma)
        if (hit := self._chance(self.cutout * p, n, dev)) is not None and bool(hit.any()):
            mask = cutout_mask(torch.rand([n, 2], dtype=torch.float64, device=dev), self.cutout_size, h, w)
            images = images * torch.where(hit[:, None, None, None] > 0, mask, 1.0).to(images.dtype)
        return images

    def extra_repr(self) -> str:
        """The non-zero multipliers, for ``print(pipe)``."""
        on = [f'{k}={v:g}' for k, v in self.init_kwargs.items() if isinstance(v, float) and v and k in _OPS]
        return ', '.join(on)


_OPS = frozenset(name for group in _GROUPS.values() for name in group)


class AdaptiveP:
    """The ADA controller (ADA Sec. 3.1): nudges ``pipe.p`` so that the overfitting heuristic
    ``r_t = E[sign(D(x_real))]`` (over the reals D saw since the last update) stays near ``target``.

    Every ``interval`` training steps the caller calls :meth:`step`, which sets
    ``p <- max(0, p + sign(r_t - target) * batch_size * interval / (kimg * 1000))``: ``p`` can move from 0
    to 1 in ``kimg`` thousand images. There is no upper clamp (the pipe clamps each probability to 1).

    Under DDP, accumulate sums that are already all-reduced across processes (:meth:`accumulate` takes a
    sum and a count; :meth:`update` takes the output of ``training_stats.Collector.collect``), so every
    process computes the same ``p``. :meth:`state_dict` / :meth:`load_state_dict` carry the pending sums
    for an exact resume. :attr:`stat` names the statistic the training loop collects for :meth:`update`.
    """

    stat = REAL_SIGNS_STAT  # The reported sign(D(x_real)) that r_t averages.

    def __init__(
        self, target: float = DEFAULT_TARGET, interval: int = 4, kimg: float = 500, *, batch_size: int
    ) -> None:
        if not (interval >= 1 and kimg > 0 and batch_size >= 1):
            raise ValueError(
                f'AdaptiveP: need interval >= 1, kimg > 0, batch_size >= 1; got {interval}, {kimg}, '
                f'{batch_size}'
            )
        self.target = float(target)
        self.interval = int(interval)
        self.kimg = float(kimg)
        self.batch_size = int(batch_size)
        self.sign_sum = 0.0
        self.count = 0
        self.last_rt: float | None = None

    @property
    def adjust_per_step(self) -> float:
        """Size of one update of ``p``: ``batch_size * interval / (kimg * 1000)``."""
        return self.batch_size * self.interval / (self.kimg * 1000)

    def accumulate(self, sign_sum: float, count: int) -> None:
        """Add ``sign_sum = sum(sign(D(x_real)))`` over ``count`` real logits (all-reduced under DDP)."""
        self.sign_sum += float(sign_sum)
        self.count += int(count)

    def accumulate_logits(self, real_logits: torch.Tensor) -> None:
        """Convenience: accumulate the signs of a local ``[N, ...]`` logits tensor (syncs with the device;
        not all-reduced, so under DDP prefer :meth:`accumulate` with reduced sums)."""
        self.accumulate(float(real_logits.detach().sign().sum()), real_logits.numel())

    def step(self, pipe: torch.nn.Module) -> float | None:
        """Update ``pipe.p`` in place from the accumulated signs and reset them. Returns ``r_t``, or None
        (and leaves ``p`` alone) when nothing was accumulated."""
        if self.count == 0:
            return None
        rt = self.sign_sum / self.count
        direction = (rt > self.target) - (rt < self.target)
        new_p = max(float(pipe.p) + direction * self.adjust_per_step, 0.0)
        with torch.no_grad():
            pipe.p.copy_(torch.as_tensor(new_p, dtype=pipe.p.dtype))
        self.sign_sum, self.count, self.last_rt = 0.0, 0, rt
        return rt

    def update(self, pipe: torch.nn.Module, stats: Mapping[str, Mapping[str, float]]) -> float | None:
        """Training-loop adapter: :meth:`absorb` the stats, then :meth:`step`."""
        self.absorb(stats)
        return self.step(pipe)

    def absorb(self, stats: Mapping[str, Mapping[str, float]]) -> None:
        """Accumulate ``stats[self.stat]`` (``{'num', 'mean', ...}`` from
        ``training_stats.Collector.collect``, already reduced over processes) without stepping, e.g. before a
        snapshot."""
        entry = stats.get(self.stat)
        if entry is not None and entry['num'] > 0:
            self.accumulate(entry['mean'] * entry['num'], round(entry['num']))

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state: the configuration (for reference) and the pending sums and last ``r_t``."""
        return dict(
            target=self.target,
            interval=self.interval,
            kimg=self.kimg,
            batch_size=self.batch_size,
            sign_sum=self.sign_sum,
            count=self.count,
            last_rt=self.last_rt,
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the pending sums and ``last_rt`` from :meth:`state_dict`; the configuration stays the one
        given to the constructor (so a resumed run may change ``target``)."""
        self.sign_sum = float(state['sign_sum'])
        self.count = int(state['count'])
        self.last_rt = None if state.get('last_rt') is None else float(state['last_rt'])
