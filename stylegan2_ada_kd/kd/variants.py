"""The KD-DLGAN terms and formulations every KD module shares, their checks and their default settings
(KD-DLGAN, Sec. 3.2-3.3; the released code for ``'official'``). Torch-free, so train.py's options import it
cheaply."""

from __future__ import annotations

from collections.abc import Sequence

KD_TERMS = ('aggregated', 'correlated')  # AGKD (Sec. 3.2) and CGKD (Sec. 3.3).
VARIANTS = ('paper', 'official')  # The paper's formulas, or the released code's.
PAPER_CROSS_P = 0.7  # Default probability of AGKD's cross terms (paper variant).
DEFAULT_WEIGHTS = {'paper': 1.0, 'official': 10.0}  # lambda_A = lambda_C per variant.


def check_variant(variant: str) -> str:
    """``variant`` if it is one of :data:`VARIANTS`, else a ValueError naming ``--kd-variant``."""
    if variant not in VARIANTS:
        raise ValueError(f'--kd-variant must be one of {VARIANTS}; got {variant!r}')
    return variant


def check_terms(terms: Sequence[str]) -> tuple[str, ...]:
    """``terms`` as a tuple if it is a non-empty selection of :data:`KD_TERMS`, else a ValueError."""
    unknown = [term for term in terms if term not in KD_TERMS]
    if unknown or not terms:
        raise ValueError(f'unknown or empty KD terms {unknown}; use a comma list of {list(KD_TERMS)}')
    return tuple(terms)


def uses_anchors(terms: Sequence[str], div_weight: float) -> bool:
    """Whether a KD loss needs the anchor matrix A: CGKD (Sec. 3.3) and the G-side diversity term use it,
    AGKD (Sec. 3.2) alone does not."""
    return 'correlated' in terms or div_weight > 0


def check_cross_p(variant: str, cross_p: float) -> None:
    """A ValueError naming ``--kd-p`` unless ``cross_p`` is in [0, 1], and 1 for the official variant (its
    cross terms are always on: another value is refused, never silently replaced)."""
    check_variant(variant)
    if variant == 'official' and cross_p != 1:
        raise ValueError(
            f'--kd-p={cross_p:g} does not apply to --kd-variant=official, whose AGKD cross terms are always '
            'on (p = 1); drop --kd-p, or use --kd-variant=paper'
        )
    if not 0 <= cross_p <= 1:
        raise ValueError(f'--kd-p must be in [0, 1]; got {cross_p}')


def resolve_kd_settings(
    variant: str,
    agkd_weight: float | None = None,
    cgkd_weight: float | None = None,
    cross_p: float | None = None,
) -> dict[str, float]:
    """The ``agkd_weight``, ``cgkd_weight`` and ``cross_p`` that run, with every None resolved: the one place
    of these defaults (the KD family resolves them into the run record; KDLoss takes them as they are).

    Weights default to :data:`DEFAULT_WEIGHTS` (1 paper, 10 official); ``cross_p`` to 0.7 (paper) or 1
    (official), checked by :func:`check_cross_p`.
    """
    check_variant(variant)
    if cross_p is None:
        cross_p = 1.0 if variant == 'official' else PAPER_CROSS_P
    check_cross_p(variant, cross_p)
    weight = DEFAULT_WEIGHTS[variant]
    return dict(
        agkd_weight=float(weight if agkd_weight is None else agkd_weight),
        cgkd_weight=float(weight if cgkd_weight is None else cgkd_weight),
        cross_p=float(cross_p),
    )
