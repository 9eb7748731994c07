"""Nearest training images of generated ones: does a generator trained on a few images copy them?

Images are embedded in one of three spaces, each with a distance: ``inception`` (the FID detector's pool3
features, L2), ``lpips`` (VGG16 LPIPS features, NVIDIA's ``vgg16.pt``: squared L2 is the LPIPS distance)
and ``pixel`` (root mean square difference of the pixels in [0, 1]). A distance alone says little, so it is
set against the scale of distances between *different* real images (Webster et al. 2019 and the few-shot
GAN papers show nearest neighbours for the same reason): the held-out reals' distances to their nearest
training image when the run kept some out (``--holdout``), else each training image's distance to its
nearest other training image. A generated image much closer to a training image than real images are to
each other is a near copy.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from metrics import detectors

SPACES = ('inception', 'lpips', 'pixel')


def embed(
    images: torch.Tensor,  # uint8 [N, 3, H, W].
    space: str,  # One of SPACES.
    detector: detectors.Detector | None,  # Inception for 'inception', VGG16 for 'lpips'; None for 'pixel'.
) -> torch.Tensor:
    """float32 ``[N, F]`` on the CPU whose row distances (:func:`distances`) are those of ``space``."""
    if space == 'pixel':
        x = images.to(torch.float32).flatten(1) / 255
        return x / x.shape[1] ** 0.5  # L2 of the rows = RMS pixel difference
    if space == 'inception':
        return detector(images).cpu()
    if space == 'lpips':
        return detector.lpips(images.to(torch.float32)).cpu()
    raise ValueError(f'space must be one of {", ".join(SPACES)}; got {space!r}')


def distances(a: torch.Tensor, b: torch.Tensor, space: str) -> torch.Tensor:
    """``[N, M]`` distances between the rows of ``a [N, F]`` and ``b [M, F]`` (:func:`embed` outputs)."""
    d = torch.cdist(a.double(), b.double())
    return d.square() if space == 'lpips' else d


@dataclasses.dataclass
class Neighbours:
    """The ``k`` nearest references of each query, nearest first."""

    index: np.ndarray  # int [N, k]: rows of the reference set.
    distance: np.ndarray  # float [N, k].


def nearest(
    query: torch.Tensor, ref: torch.Tensor, space: str, k: int, exclude: np.ndarray | None = None
) -> Neighbours:
    """The ``k`` rows of ``ref [M, F]`` nearest to each row of ``query [N, F]``.

    ``exclude``: bool ``[N, M]``, pairs that may not be neighbours (an image and its own mirrored copy when
    the training set is measured against itself). Raises ``ValueError`` when fewer than ``k`` remain.
    """
    d = distances(query, ref, space)
    if exclude is not None:
        d = d.masked_fill(torch.from_numpy(exclude), float('inf'))
    if k > ref.shape[0] or (exclude is not None and k > int((~exclude).sum(1).min())):
        raise ValueError(f'{k} neighbours asked, but only {ref.shape[0]} reference images (some excluded)')
    dist, idx = d.topk(k, dim=1, largest=False)
    return Neighbours(idx.numpy(), dist.numpy())


def real_scale(
    train: torch.Tensor,  # [M, F] embedded training images (each image once, not mirrored).
    ref: torch.Tensor,  # [M, F] = train, or [2M, F] = train, then its mirrored copies: what samples meet.
    space: str,
    held_out: torch.Tensor | None = None,  # [H, F] embedded held-out reals, if the run kept some out.
) -> tuple[str, np.ndarray]:
    """The distances between different real images that a generated image's distance is set against, to the
    same references the samples are measured against: ``('held-out', [H])`` the held-out reals' nearest
    distances, else ``('train-loo', [M])`` each training image's distance to its nearest *other* one (its
    own mirrored copy excluded too)."""
    if held_out is not None and len(held_out):
        return 'held-out', nearest(held_out, ref, space, 1).distance[:, 0]
    m = len(train)
    own = np.arange(len(ref))[None, :] % m == np.arange(m)[:, None]  # an image and its mirrored copy
    return 'train-loo', nearest(train, ref, space, 1, own).distance[:, 0]


def summary(first: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    """Statistics of the generated images' nearest distances ``first [N]`` against the real ``scale``:
    medians, their ratio, and the fraction of generated images closer to a training image than the 5th
    percentile (and than the minimum) of the real distances."""
    return dict(
        generated_median=float(np.median(first)),
        real_median=float(np.median(scale)),
        ratio=float(np.median(first) / max(float(np.median(scale)), 1e-12)),
        below_real_p05=float(np.mean(first < np.percentile(scale, 5))),
        below_real_min=float(np.mean(first < scale.min())),
    )
