"""The StyleGAN2 loss extras of train.py: ``--lecam`` / ``--lecam-decay`` -> ``loss_kwargs`` (LeCam
regularisation, Tseng et al. 2021, Eq. 3; see :func:`stylegan2_ada_kd.training.loss.lecam_penalty`).

With ``--lecam=0`` (off) nothing is added, so the loss runs its defaults (``lecam_weight=0``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from dnnlib import EasyDict
from stylegan2_ada_kd.plugins import Family, NamePart, ParsedOptions


def _resolve(c: EasyDict, parsed: ParsedOptions) -> None:
    """Add ``lecam_weight`` and ``lecam_decay`` to the loss kwargs when ``--lecam`` is on."""
    if parsed.values['lecam']:
        c.loss_kwargs.update(lecam_weight=parsed.values['lecam'], lecam_decay=parsed.values['lecam_decay'])


def _name_parts(values: Mapping[str, Any]) -> list[NamePart]:
    """``-lecam<weight>`` when LeCam is on."""
    return [(110, f'lecam{values["lecam"]:g}')] if values['lecam'] else []


FAMILY = Family(
    name='loss',
    options=(
        click.option(
            '--lecam',
            help='LeCam regularisation weight (0 = off)',
            type=click.FloatRange(min=0),
            default=0,
            show_default=True,
            metavar='FLOAT',
        ),
        click.option(
            '--lecam-decay',
            help="Decay of LeCam's EMAs of D's outputs",
            type=click.FloatRange(0, 1),
            default=0.99,
            show_default=True,
            metavar='FLOAT',
        ),
    ),
    resolve=_resolve,
    name_parts=_name_parts,
)
