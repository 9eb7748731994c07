"""FID and KID on Inception pool3 features (the StyleGAN2-ADA protocol: the detector resizes to 299 itself,
see :mod:`metrics.detectors`), and the two computations other Inception protocols reuse with their own
detector view (:mod:`metrics.clean`).

Names: ``fid50k_full``, ``kid50k_full``, the legacy ``fid50k``/``kid50k`` (xflip kept), ``fid5k_full``,
``fid10k_full``, ``fid5k_train``, ``kid5k_train`` and the counted ``{fid,kid}<N>k_{full,train}``. FID and
KID of one network with the same count share one generation (``shares='inception'``).
"""

from __future__ import annotations

import time

import numpy as np

from metrics import detectors, scores
from metrics.context import (
    Detect,
    MetricContext,
    generated_features,
    label_pool,
    load_ref_stats,
    real_features,
)
from metrics.kinds import MetricKind, MetricSpec

# tr((S1 S2)^(1/2)) from symmetric eigendecompositions (scores.fid_from_stats): the same value as
# scipy.linalg.sqrtm(S1 @ S2) to rounding (relative 1e-15 full rank, 1e-8 rank-deficient), about 6x faster.
FID_METHOD = 'eigh'


def fid_with_progress(name: str, real: dict, fake: dict, show: bool) -> float:
    """FID from ``{'mu', 'sigma'}`` of the reals and the generated images; ``show`` prints the slow step.

    The matrix square root of the ``F x F`` covariance product (F = 2048 for Inception) is the one silent
    step after feature extraction (seconds, or minutes with :func:`scipy.linalg.sqrtm` on a slow CPU), so
    its start and its duration are printed like the other progress lines.
    """
    dim = int(np.shape(real['sigma'])[0])
    if show:
        print(
            f'{name}: FID matrix square root of the {dim}x{dim} covariance product '
            f'({FID_METHOD}; can take a minute on a CPU)...',
            flush=True,
        )
    start = time.time()
    value = scores.fid_from_stats(real['mu'], real['sigma'], fake['mu'], fake['sigma'], method=FID_METHOD)
    if show:
        print(f'{name}: FID matrix square root done in {time.time() - start:.1f} s', flush=True)
    return value


def frechet_distance(ctx: MetricContext, detect: Detect, view_name: str) -> dict[str, float]:
    """``{ctx.name: FID}`` of the generated images against the spec's reals (or ``ctx.ref_stats``) in the
    features of the detector view ``detect`` named ``view_name``."""
    if ctx.ref_stats:
        fake = generated_features(ctx, detect, 'mean_cov', label_pool(ctx, None), view_name)
        real = load_ref_stats(ctx.ref_stats, fake['mu'].shape[0], view_name)
    else:
        real, labels = real_features(ctx, detect, view_name, 'mean_cov')
        fake = generated_features(ctx, detect, 'mean_cov', labels, view_name)
    return {ctx.name: fid_with_progress(ctx.name, real, fake, ctx.show_progress)}


def kernel_distance(ctx: MetricContext, detect: Detect, view_name: str) -> dict[str, float]:
    """``{ctx.name: KID}`` of the generated images against the spec's reals in the features of the detector
    view ``detect`` named ``view_name`` (subsets seeded by ``ctx.seed``)."""
    real, labels = real_features(ctx, detect, view_name, 'features')
    fake = generated_features(ctx, detect, 'features', labels, view_name)
    return {ctx.name: scores.kid_from_features(real['features'], fake['features'], seed=ctx.seed)}


def _fid(ctx: MetricContext) -> dict[str, float]:
    det = ctx.detector()
    return frechet_distance(ctx, det, det.name)


def _kid(ctx: MetricContext) -> dict[str, float]:
    det = ctx.detector()
    return kernel_distance(ctx, det, det.name)


_INCEPTION = dict(detector=detectors.INCEPTION, shares='inception')
KINDS = (
    MetricKind(
        'fid',
        _fid,
        names={
            'fid50k_full': MetricSpec(
                'fid', 50000, 'full', None, 'FID, 50k generated vs all reals (no mirror)'
            ),
            'fid50k': MetricSpec(
                'fid', 50000, 'legacy', 50000, 'legacy FID, 50k generated vs 50k reals (xflip kept)'
            ),
            'fid5k_full': MetricSpec(
                'fid', 5000, 'full', None, 'cheap FID for monitoring: 5k generated vs all reals'
            ),
            'fid10k_full': MetricSpec('fid', 10000, 'full', None, 'FID, 10k generated vs all reals'),
            'fid5k_train': MetricSpec(
                'fid', 5000, 'train', None, 'FID, 5k generated vs the training set as trained'
            ),
        },
        counted='FID',
        ref_stats=True,
        **_INCEPTION,
    ),
    MetricKind(
        'kid',
        _kid,
        names={
            'kid50k_full': MetricSpec('kid', 50000, 'full', 1000000, 'KID, 50k generated vs up to 1M reals'),
            'kid50k': MetricSpec('kid', 50000, 'legacy', 50000, 'legacy KID vs 50k reals (xflip kept)'),
            'kid5k_train': MetricSpec(
                'kid', 5000, 'train', 1000000, 'KID, 5k generated vs the training set as trained'
            ),
        },
        counted='KID',
        counted_max_reals=1000000,
        **_INCEPTION,
    ),
)
