"""The augmentation family of train.py: ``--aug`` and its settings -> ``augment_kwargs``, ``ada_kwargs`` and
``augment_p``.

Each ``--aug`` value is one :class:`AugmentMode` row of :data:`MODES`: the pipe it builds, whether that pipe
has a probability ``p`` (the ``augment_pipe.p`` buffer the training loop writes from ``augment_p``, ADA
adapts and the stats report as ``Progress/augment``), the ADA controller, the options it takes and the
classes its snapshots hold. A new augmentation is its module plus one row here (and one option line if it
brings an option of its own).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable

import click

from dnnlib import EasyDict
from stylegan2_ada_kd.augment.ada import AUGPIPE_SPECS, DEFAULT_AUGPIPE, DEFAULT_TARGET
from stylegan2_ada_kd.augment.diffaugment import DEFAULT_POLICY, parse_policy
from stylegan2_ada_kd.plugins import Family, NamePart, ParsedOptions

DEFAULT_MODE = 'ada'
Values = Mapping[str, Any]


# The pipes' names in snapshots (a file format: they stay when the code moves) -> where the classes are now.
_ADA_CLASSES = {'stylegan2_ada_kd.augment.AugmentPipe': f'{__package__}.ada.AugmentPipe'}


@dataclasses.dataclass(frozen=True)
class AugmentMode:
    """One ``--aug`` value."""

    name: str  # The --aug value.
    pipe: Callable[[Values], EasyDict] | None = None  # Values -> augment_kwargs; None = no augmentation.
    p: Callable[[Values], float] | None = None  # Initial p; None = the pipe has no probability.
    controller: Callable[[Values], EasyDict] | None = None  # Values -> ada_kwargs; None = p stays fixed.
    takes: tuple[str, ...] = ()  # Parameter names of the options (besides --aug) this mode accepts.
    needs: tuple[str, ...] = ()  # Of those, the ones it cannot run without.
    classes: Mapping[str, str] = dataclasses.field(default_factory=dict)  # Snapshot name -> 'module.Class'.


def _augment_pipe(values: Values) -> EasyDict:
    """ADA's pipeline with the ``--augpipe`` preset (default :data:`augment.DEFAULT_AUGPIPE`)."""
    preset = values['augpipe'] or DEFAULT_AUGPIPE
    return EasyDict(class_name='stylegan2_ada_kd.augment.ada.AugmentPipe', preset=preset)


def _adaptive_p(values: Values) -> EasyDict:
    """ADA's controller with the ``--target`` for the mean sign of D(real) (default
    :data:`augment.DEFAULT_TARGET`)."""
    target = DEFAULT_TARGET if values['target'] is None else values['target']
    return EasyDict(class_name='stylegan2_ada_kd.augment.ada.AdaptiveP', target=target)


def _diffaugment(values: Values) -> EasyDict:
    """DiffAugment with the ``--diffaug`` policy (default :data:`diffaugment.DEFAULT_POLICY`), checked now."""
    policy = values['diffaug'] or DEFAULT_POLICY
    try:
        parse_policy(policy)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    return EasyDict(class_name='stylegan2_ada_kd.augment.diffaugment.DiffAugment', policy=policy)


MODES = (
    AugmentMode('noaug', p=lambda values: 0.0),
    AugmentMode(
        'ada',
        pipe=_augment_pipe,
        p=lambda values: 0.0,
        controller=_adaptive_p,
        takes=('target', 'augpipe'),
        classes=_ADA_CLASSES,
    ),
    AugmentMode(
        'fixed',
        pipe=_augment_pipe,
        p=lambda values: values['p'],
        takes=('p', 'augpipe'),
        needs=('p',),
        classes=_ADA_CLASSES,
    ),
    AugmentMode(
        'diffaug',
        pipe=_diffaugment,
        takes=('diffaug',),
        classes={'stylegan2_ada_kd.diffaugment.DiffAugment': f'{__package__}.diffaugment.DiffAugment'},
    ),
)
_BY_NAME = {mode.name: mode for mode in MODES}
SETTINGS = tuple(dict.fromkeys(name for mode in MODES for name in mode.takes))  # Parameter names.


def augment_kwargs(aug: str, values: Values) -> dict[str, Any]:
    """``augment_kwargs``, ``ada_kwargs`` and ``augment_p`` of mode ``aug`` for the option ``values``
    (``p``, ``target``, ``augpipe``, ``diffaug``: None = not given), validated first
    (``click.UsageError``)."""
    mode = _BY_NAME[aug]
    for name in SETTINGS:
        if values.get(name) is not None and name not in mode.takes:
            modes = ' or '.join(f'--aug={m.name}' for m in MODES if name in m.takes)
            raise click.UsageError(f'--{name} can only be given with {modes}, not with --aug={aug}')
    for name in mode.needs:
        if values.get(name) is None:
            raise click.UsageError(f'--aug={aug} needs --{name}')
    values = {name: values.get(name) for name in SETTINGS}
    return dict(
        augment_kwargs=mode.pipe(values) if mode.pipe else None,
        ada_kwargs=mode.controller(values) if mode.controller else None,
        augment_p=mode.p(values) if mode.p else None,
    )


def _resolve(c: EasyDict, parsed: ParsedOptions) -> None:
    """Fill ``augment_kwargs``, ``ada_kwargs`` and ``augment_p`` (``--aug`` defaults to ada)."""
    c.update(augment_kwargs(parsed.values['aug'] or DEFAULT_MODE, parsed.values))


def _name_parts(values: Values) -> list[NamePart]:
    """``-<aug>`` when --aug is given, then ``-p<p>``, ``-target<t>`` and ``-<augpipe>``."""
    parts = [(100, values['aug'])] if values['aug'] is not None else []
    parts += [(120, f'{key}{values[key]:g}') for key in ('p', 'target') if values[key] is not None]
    return parts + ([(120, values['augpipe'])] if values['augpipe'] is not None else [])


FAMILY = Family(
    name='augmentation',
    options=(
        click.option(
            '--aug',
            help=f'Augmentation mode [default: {DEFAULT_MODE}]',
            type=click.Choice([mode.name for mode in MODES]),
        ),
        click.option(
            '--diffaug',
            help=f'DiffAugment policy for --aug=diffaug [default: {DEFAULT_POLICY}]',
            metavar='LIST',
        ),
        click.option(
            '--p',
            help='Augmentation probability for --aug=fixed',
            type=click.FloatRange(0, 1),
            metavar='FLOAT',
        ),
        click.option(
            '--target',
            help=f'ADA target for the sign of D(real) [default: {DEFAULT_TARGET}]',
            type=click.FloatRange(0, 1),
            metavar='FLOAT',
        ),
        click.option(
            '--augpipe',
            help=f'Enabled augmentations [default: {DEFAULT_AUGPIPE}]',
            type=click.Choice(list(AUGPIPE_SPECS)),
        ),
    ),
    resolve=_resolve,
    name_parts=_name_parts,
    classes={name: path for mode in MODES for name, path in mode.classes.items()},
)
