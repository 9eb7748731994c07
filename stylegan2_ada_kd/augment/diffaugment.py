"""Differentiable Augmentation (DiffAugment) for data-efficient GAN training.

Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training" (NeurIPS 2020,
arXiv 2006.10738), Sec. 3: the same random, differentiable transformations are applied to every image the
discriminator sees, real and generated, in both the D and the G updates, so that gradients flow through the
augmentation into G. The policies and their magnitudes (for images in ``[-1, 1]``) follow Sec. 3 / App.:

    * ``color``: brightness (add ``U(-0.5, 0.5)`` per image), saturation (scale each pixel's deviation from
      its channel mean by ``U(0, 2)``), contrast (scale the deviation from the image mean by ``U(0.5, 1.5)``);
    * ``translation``: shift by a random integer of up to ``ratio = 1/8`` of the image size in each axis,
      filling with zeros;
    * ``cutout``: zero a random ``ratio = 1/2``-sized rectangle (a square for square images) whose centre
      pixel is uniform over the image; the rectangle is clipped at the image border.

Conventions: images are ``[N, C, H, W]`` floats (float16/32/64, any ``C``, ``H, W >= 2``); every random
parameter is drawn per sample, on the images' device, from torch's global RNG (in float32 or int64, so the
draws do not depend on the image dtype); the image paths use only elementwise arithmetic, means, zero
padding and ``gather``, so autograd differentiates them w.r.t. the images to any order (R1 through the
augmentation needs the second order); everything is vectorised over the batch.

:class:`DiffAugment` is the module the training loop plugs in as ``augment_pipe``; unlike ADA's
``AugmentPipe`` it applies every op to every image and has no probability ``p``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------------------------------ helpers


def _check_images(x: torch.Tensor, where: str) -> None:
    """Raise ValueError unless ``x`` is a ``[N, C, H, W]`` floating-point tensor with ``H, W >= 2``."""
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f'{where}: expected [N, C, H, W] float images; got {x.dtype} {list(x.shape)}')
    if x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f'{where}: images must be at least 2x2; got {list(x.shape)}')


def _check_ratio(ratio: float, where: str) -> None:
    """Raise ValueError unless ``0 <= ratio <= 1``."""
    if not 0 <= ratio <= 1:
        raise ValueError(f'{where}: ratio must lie in [0, 1]; got {ratio}')


def _uniform(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``[N, 1, 1, 1]`` per-sample draws from ``U(low, high)`` (float32 RNG, cast to ``x.dtype``)."""
    u = torch.rand([x.shape[0], 1, 1, 1], dtype=torch.float32, device=x.device)
    return (u * (high - low) + low).to(x.dtype)


def _scaled_size(size: int, ratio: float) -> int:
    """``round(size * ratio)`` with halves rounded up (``int(size * ratio + 0.5)``)."""
    return int(size * ratio + 0.5)


# ------------------------------------------------------------------------------------------ colour


def rand_brightness(x: torch.Tensor) -> torch.Tensor:
    """Random brightness (DiffAugment Sec. 3, ``color``): add ``b ~ U(-0.5, 0.5)``, one per image.

    ``x``: ``[N, C, H, W]`` floats in about ``[-1, 1]``. Returns ``[N, C, H, W]``, same dtype.
    """
    _check_images(x, 'rand_brightness')
    return x + _uniform(x, -0.5, 0.5)


def rand_saturation(x: torch.Tensor) -> torch.Tensor:
    """Random saturation (DiffAugment Sec. 3, ``color``): ``m + (x - m) * s`` with ``m`` the per-pixel mean
    over the channels and ``s ~ U(0, 2)`` per image. Grey pixels (and ``C == 1`` images) are unchanged.

    ``x``: ``[N, C, H, W]`` floats in about ``[-1, 1]``. Returns ``[N, C, H, W]``, same dtype.
    """
    _check_images(x, 'rand_saturation')
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _uniform(x, 0.0, 2.0) + mean


def rand_contrast(x: torch.Tensor) -> torch.Tensor:
    """Random contrast (DiffAugment Sec. 3, ``color``): ``m + (x - m) * k`` with ``m`` the mean of the whole
    image (all channels and pixels) and ``k ~ U(0.5, 1.5)`` per image; the image mean is preserved.

    ``x``: ``[N, C, H, W]`` floats in about ``[-1, 1]``. Returns ``[N, C, H, W]``, same dtype.
    """
    _check_images(x, 'rand_contrast')
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean


# ------------------------------------------------------------------------------------------ geometry


def rand_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Random integer translation with zero fill (DiffAugment Sec. 3, ``translation``).

    Each image moves by ``(dy, dx)``, drawn uniformly from the integers in ``[-sy, sy] x [-sx, sx]`` with
    ``sy = round(H * ratio)`` and ``sx = round(W * ratio)`` (halves up): ``out[..., i, j] = x[..., i - dy,
    j - dx]`` where that lies inside the image, 0 elsewhere. Built from zero padding and two ``gather``s
    (exact, no interpolation, differentiable to any order).

    ``x``: ``[N, C, H, W]`` floats. ``ratio``: maximum shift as a fraction of the size, in ``[0, 1]``.
    Returns ``[N, C, H, W]``, same dtype.
    """
    _check_images(x, 'rand_translation')
    _check_ratio(ratio, 'rand_translation')
    n, c, h, w = x.shape
    sy, sx = _scaled_size(h, ratio), _scaled_size(w, ratio)
    dy = torch.randint(-sy, sy + 1, [n, 1], device=x.device)
    dx = torch.randint(-sx, sx + 1, [n, 1], device=x.device)
    padded = F.pad(x, [sx, sx, sy, sy])  # [N, C, H + 2 sy, W + 2 sx], zero border.
    rows = torch.arange(h, device=x.device)[None, :] - dy + sy  # [N, H], rows of `padded` to read.
    cols = torch.arange(w, device=x.device)[None, :] - dx + sx  # [N, W], columns of `padded` to read.
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * sx))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Random cutout (DiffAugment Sec. 3, ``cutout``; DeVries & Taylor 2017): zero one rectangle per image.

    The rectangle is ``ch x cw = round(H * ratio) x round(W * ratio)`` (halves up) and covers rows
    ``[cy - ch // 2, cy - ch // 2 + ch)`` and the like for columns, with the centre pixel ``(cy, cx)``
    uniform over the image; the part outside the image is dropped (clipped). All channels are zeroed and
    every other pixel is returned unchanged (the image is multiplied by a 0/1 mask).

    ``x``: ``[N, C, H, W]`` floats. ``ratio``: rectangle size as a fraction of the image size, in ``[0, 1]``.
    Returns ``[N, C, H, W]``, same dtype.
    """
    _check_images(x, 'rand_cutout')
    _check_ratio(ratio, 'rand_cutout')
    n, _, h, w = x.shape
    ch, cw = _scaled_size(h, ratio), _scaled_size(w, ratio)
    top = torch.randint(0, h, [n, 1], device=x.device) - ch // 2
    left = torch.randint(0, w, [n, 1], device=x.device) - cw // 2
    rows = torch.arange(h, device=x.device)[None, :]  # [1, H]
    cols = torch.arange(w, device=x.device)[None, :]  # [1, W]
    in_rows = (rows >= top) & (rows < top + ch)  # [N, H]
    in_cols = (cols >= left) & (cols < left + cw)  # [N, W]
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # [N, H, W]
    return x * keep[:, None].to(x.dtype)


# ------------------------------------------------------------------------------------------ policies

# Policy name -> ops applied in this order (DiffAugment Sec. 3).
POLICIES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    'color': (rand_brightness, rand_saturation, rand_contrast),
    'translation': (rand_translation,),
    'cutout': (rand_cutout,),
}
DEFAULT_POLICY = 'color,translation,cutout'  # All three, in the paper's order (Sec. 3).


def parse_policy(text: str) -> tuple[str, ...]:
    """Parse a ``--diffaug`` value such as :data:`DEFAULT_POLICY` into a tuple of policy names.

    Names are separated by commas (surrounding whitespace is ignored) and kept in the given order; a name
    may repeat (the op is then applied again). Raises ValueError for an empty string, an empty item or a
    name not in :data:`POLICIES`, listing the valid names (TypeError if ``text`` is not a string).
    """
    valid = ', '.join(sorted(POLICIES))
    if not isinstance(text, str):
        raise TypeError(f'--diffaug: expected a comma-separated string of policy names; got {text!r}')
    if not text.strip():
        raise ValueError(f'--diffaug: empty policy; give comma-separated names from: {valid}')
    names = tuple(item.strip() for item in text.split(','))
    for name in names:
        if name not in POLICIES:
            what = 'an empty name' if not name else f'unknown policy {name!r}'
            raise ValueError(
                f"--diffaug={text!r}: {what}; valid names: {valid} (comma-separated, e.g. '{DEFAULT_POLICY}')"
            )
    return names


class DiffAugment(torch.nn.Module):
    """DiffAugment (Zhao et al. 2020, arXiv 2006.10738) as a drop-in ``augment_pipe`` for the loss.

    Applies every op of every policy to every image, in the order the policy string lists them (the
    default is colour, then translation, then cutout), with fresh per-sample random draws on each call.
    ``init_kwargs`` rebuilds the module: ``DiffAugment(**m.init_kwargs)``. It has no probability (it
    always augments), so it has no state: pair it with no ADA controller (``augment_p=None``). Snapshots
    written before the dummy ``p`` buffer was dropped still load (:meth:`_load_from_state_dict`).
    """

    def __init__(self, policy: str = DEFAULT_POLICY) -> None:
        """``policy``: comma-separated names from :data:`POLICIES` (see :func:`parse_policy`)."""
        super().__init__()
        self.policy: tuple[str, ...] = parse_policy(policy)
        self.init_kwargs = {'policy': policy}

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        """Drop the constant ``p`` (1.0) that older versions stored, then load as usual."""
        state_dict.pop(prefix + 'p', None)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def tick_status(self) -> str:
        """Shown after 'augment' on the training tick line instead of a probability."""
        return f'diffaug({",".join(self.policy)})'

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment ``[N, C, H, W]`` float images (about ``[-1, 1]``) into ``[N, C, H, W]`` of the same dtype.

        Differentiable w.r.t. ``images`` to any order; the random draws are not.
        """
        _check_images(images, 'DiffAugment')
        for name in self.policy:
            for op in POLICIES[name]:
                images = op(images)
        return images

    def extra_repr(self) -> str:
        """The policy, for ``print(module)``."""
        return f"policy='{','.join(self.policy)}'"
