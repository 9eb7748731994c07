"""Quality metrics of generators: the metric kinds, one module each, listed once in ``registry``.

Modules: ``metric_main`` (entry points: ``--metrics`` parsing and validation, ``calc_metric``), ``registry``
(the kinds and the lookups over their names), ``kinds`` (the declaration of a kind and of a metric name),
``context`` (what a computation gets; reals, labels, cached and shared features), ``fid_kid`` (FID, KID),
``clean`` (FID and KID by the clean-fid protocol), ``precision_recall``, ``inception_score``, ``ppl``
(perceptual path length), ``report`` (metric-<name>.jsonl lines and the best-snapshot pointer),
``evaluation`` (compute and report, for training and calc_metrics.py; the evaluation a stopped run owes),
``detectors`` (Inception, VGG16), ``features`` (sharded extraction, deterministic generation, the
real-statistics cache), ``scores`` (the formulas on features), ``neighbours`` (nearest training images of
samples against the distances between real images, for nearest.py).
"""
