"""Improved precision and recall (Kynkaanniemi et al. 2019) on VGG16 fc2 features, k = 3: ``pr50k3_full``
(up to 200k reals, no mirror) and the legacy ``pr50k3`` (50k reals, xflip kept). Results
``<name>_precision`` and ``<name>_recall`` in [0, 1], higher is better."""

from __future__ import annotations

from metrics import detectors, scores
from metrics.context import MetricContext, generated_features, real_features
from metrics.kinds import MetricKind, MetricSpec


def _pr(ctx: MetricContext) -> dict[str, float]:
    det = ctx.detector()
    real, labels = real_features(ctx, det, det.name, 'features')
    fake = generated_features(ctx, det, 'features', labels)
    precision, recall = scores.precision_recall(real['features'], fake['features'], k=3, device=ctx.device)
    return {f'{ctx.name}_precision': precision, f'{ctx.name}_recall': recall}


KINDS = (
    MetricKind(
        'pr',
        _pr,
        names={
            'pr50k3_full': MetricSpec(
                'pr', 50000, 'full', 200000, 'precision/recall (VGG16, k=3), up to 200k reals'
            ),
            'pr50k3': MetricSpec(
                'pr', 50000, 'legacy', 50000, 'legacy precision/recall vs 50k reals (xflip kept)'
            ),
        },
        detector=detectors.VGG16,
        higher_is_better=True,
    ),
)
