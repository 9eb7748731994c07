"""Inception Score (Salimans et al. 2016) of 50k generated images, 10 splits: ``is50k``. Needs an Inception
with its 1008-way softmax (``--detector`` of NVIDIA's keyword-convention file). Results ``is50k_mean`` and
``is50k_std``, higher is better."""

from __future__ import annotations

from metrics import detectors, scores
from metrics.context import MetricContext, generated_features, label_pool
from metrics.kinds import MetricKind, MetricSpec


def _is(ctx: MetricContext) -> dict[str, float]:
    det = ctx.detector()
    det.require_classifier()  # fail before generating if the detector has no softmax layer
    probs = generated_features(ctx, det.probabilities, 'features', label_pool(ctx, None))
    mean, std = scores.inception_score(probs['features'], splits=10)
    return {f'{ctx.name}_mean': mean, f'{ctx.name}_std': std}


KINDS = (
    MetricKind(
        'is',
        _is,
        names={'is50k': MetricSpec('is', 50000, None, None, 'Inception Score of 50k generated, 10 splits')},
        detector=detectors.INCEPTION,
        classifier=True,
        higher_is_better=True,
    ),
)
