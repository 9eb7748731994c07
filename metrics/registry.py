"""The one registry of metric kinds, and the lookups over it: names -> specs, help lines, directions,
feature sharing.

Every module in :data:`MODULES` declares ``KINDS``, a tuple of :class:`metrics.kinds.MetricKind`. A new kind
of metric is its module plus one line here; nothing else names it. Modules are imported on first lookup.
"""

from __future__ import annotations

import functools
import importlib
import re

from metrics.kinds import MetricKind, MetricSpec

# The registry: one dotted module name per group of kinds, in the order of their names in --help.
MODULES = (
    'metrics.fid_kid',
    'metrics.clean',
    'metrics.precision_recall',
    'metrics.inception_score',
    'metrics.ppl',
)

_COUNTED = re.compile(r'^([a-z]+)([1-9][0-9]*)k_(full|train)$')


@functools.cache
def _load(modules: tuple[str, ...]) -> dict[str, MetricKind]:
    """The kinds of ``modules`` by kind name, checked for clashes (imported once per tuple)."""
    kinds, names = {}, {}
    for module in modules:
        for kind in importlib.import_module(module).KINDS:
            if kind.name in kinds:
                raise ValueError(f'{module}: metric kind {kind.name!r} is declared twice')
            for name, spec in kind.names.items():
                if name in names or spec.kind != kind.name:
                    raise ValueError(f'{module}: metric {name!r} clashes or has the wrong kind {spec.kind!r}')
                names[name] = spec
            kinds[kind.name] = kind
    return kinds


def kinds() -> dict[str, MetricKind]:
    """Every registered kind by name, in registry order."""
    return _load(MODULES)


def metric_spec(name: str) -> MetricSpec | None:
    """The spec of a registered name or of a counted ``<kind><N>k_{full,train}`` name; None if neither."""
    for kind in kinds().values():
        if name in kind.names:
            return kind.names[name]
    match = _COUNTED.match(name)
    kind = kinds().get(match.group(1)) if match else None
    if kind is None or kind.counted is None:
        return None
    return kind.counted_spec(int(match.group(2)) * 1000, match.group(3))


def is_valid_metric(name: str) -> bool:
    """Whether ``name`` is a registered metric or a counted name of a counted kind."""
    return metric_spec(name) is not None


def list_valid_metrics() -> list[str]:
    """Names of all registered metrics, in registry order."""
    return [name for kind in kinds().values() for name in kind.names]


def family_help() -> str:
    """The help line of the counted names, e.g. ``'{fid,kid}<N>k_{full,train} for any N ...'``."""
    counted = ','.join(kind.name for kind in kinds().values() if kind.counted)
    return f'{{{counted}}}<N>k_{{full,train}} for any N thousand generated images (e.g. fid1k_train)'


def describe_metrics() -> str:
    """One line per registered metric (name and summary) and one for the counted names."""
    lines = [f'  {name:<12} {spec.doc}' for kind in kinds().values() for name, spec in kind.names.items()]
    return '\n'.join([*lines, f'  {family_help()}'])


def lower_is_better(name: str) -> bool:
    """Direction of metric ``name`` for the best-snapshot pointer (unknown names: lower is better)."""
    spec = metric_spec(name)
    return spec is None or not kinds()[spec.kind].higher_is_better


def feature_share(metrics: list[str]) -> dict | None:
    """A fresh dict for ``calc_metric``'s ``shared`` when two or more of ``metrics`` have kinds of one
    ``shares`` tag and the same generated count (their generated-image features are then extracted once),
    else None."""
    specs = [spec for spec in map(metric_spec, metrics) if spec is not None]
    keys = [(kinds()[s.kind].shares, s.num_gen) for s in specs if kinds()[s.kind].shares is not None]
    return {} if len(keys) > len(set(keys)) else None
