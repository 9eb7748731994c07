"""The declaration of a metric kind: one :class:`MetricKind` per formula (FID, KID, precision/recall, ...),
declared in its own module's ``KINDS`` tuple and listed once in :data:`metrics.registry.MODULES`.

A kind says which names it answers to (registered names, and optionally the counted names
``<kind><N>k_full`` / ``<kind><N>k_train``), what it needs (detector, reals, counts: its :class:`MetricSpec`
per name), how to compute a metric from a :class:`metrics.context.MetricContext`, which way is better, and
whether it may share generated-image features with kinds of the same tag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from metrics.context import MetricContext

# Which reals a metric compares against (MetricSpec.reals).
REALS = {
    'full': 'all reals (no mirror)',  # every image of the dataset path: no subset, holdout or xflip
    'legacy': 'up to the cap of reals, xflip kept',  # every image with the dataset's xflip (fid50k, ...)
    'train': 'the training set as trained',  # the subset, held-out split and mirroring kept
}


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """One metric name: its kind, generated count, which reals and how many, and a one-line summary."""

    kind: str  # The MetricKind.name, e.g. 'fid'.
    num_gen: int  # Generated images (or PPL samples).
    reals: str | None  # A key of REALS, or None (no reals).
    max_reals: int | None  # Cap on real items; None = all.
    doc: str  # One line for --help and error messages.


@dataclasses.dataclass(frozen=True)
class MetricKind:
    """One kind of metric: its names, what it needs, its computation and its direction."""

    name: str  # Kind name, e.g. 'fid'; the MetricSpec.kind of its metrics and the prefix of counted names.
    compute: Callable[[MetricContext], dict[str, float]]  # Context -> {result name: value}; all ranks call.
    names: Mapping[str, MetricSpec] = dataclasses.field(default_factory=dict)  # Registered names -> spec.
    counted: str | None = None  # Title of '<name><N>k_{full,train}' names (e.g. 'FID'); None = not counted.
    counted_max_reals: int | None = None  # Real-item cap of the counted names; None = all.
    detector: str | None = None  # 'inception' (--detector) or 'vgg16' (--vgg16); None = loads none.
    classifier: bool = False  # Needs the Inception's softmax layer (NVIDIA's file; fid-helper's has none).
    higher_is_better: bool = False  # Direction of the best-snapshot pointer (IS, precision/recall: True).
    shares: str | None = None  # Kinds with one tag extract generated features once per count (feature_share).
    ref_stats: bool = False  # Whether a --ref-stats .npz (mu, sigma) may replace the reals.

    def counted_spec(self, num_gen: int, reals: str) -> MetricSpec:
        """The spec of the counted name ``<name><num_gen // 1000>k_<reals>`` (reals: 'full' or 'train')."""
        doc = f'{self.counted}, {num_gen} generated vs {REALS[reals]}'
        return MetricSpec(self.name, num_gen, reals, self.counted_max_reals, doc)
