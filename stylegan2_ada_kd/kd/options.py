"""The KD family of train.py: the ``--kd*`` options -> KDLoss kwargs, validated before training (KD-DLGAN,
Sec. 3-4).

Every KD default is resolved here (weights, cross-term probability, prompts, the anchor cache in the run
directory), so what ``--dry-run`` and ``training_options.json`` show is what the loss runs. Anchor options
(prompts, k-means prototypes) are resolved only when CGKD or the diversity term uses them, never for AGKD
alone. ``--kd-*`` options without ``--kd`` are errors. The teacher is loaded here, at option-parsing time,
so a missing weight file or an offline machine stops the run before anything is created; the loss then
takes that same teacher from the per-process cache (moved to the training device, not loaded again). The
run directory gets the suffix ``-kd``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import click

from dnnlib import EasyDict
from stylegan2_ada_kd.kd.prompts import CLASS_TEMPLATES, resolve_prompts
from stylegan2_ada_kd.kd.teacher import DEFAULT_TEACHER, SPEC_FORMS, TeacherError, load_teacher
from stylegan2_ada_kd.kd.variants import VARIANTS, check_terms, resolve_kd_settings, uses_anchors
from stylegan2_ada_kd.plugins import Family, NamePart, ParsedOptions

ANCHOR_OPTIONS = ('kd_prompts', 'kd_anchors')  # Options of the anchors only (CGKD, diversity term).


def parse_kd_terms(
    ctx: click.Context | None, param: click.Parameter | None, text: str | None
) -> tuple[str, ...]:
    """``--kd``'s click callback, so the option is parsed once: ``'aggregated,correlated'`` -> a tuple of
    terms; ``None``/``'none'`` -> empty."""
    if text is None or text == 'none':
        return ()
    try:
        return check_terms([t.strip() for t in text.split(',') if t.strip()])
    except ValueError as err:
        raise click.UsageError(f'--kd={text}: {err}') from err


def _flag(name: str) -> str:
    """``'kd_teacher_weights'`` -> ``'--kd-teacher-weights'``."""
    return '--' + name.replace('_', '-')


def _load(values: Mapping[str, Any]) -> Any:
    """The teacher of ``--kd-teacher`` / ``--kd-teacher-weights`` (CPU), or a UsageError."""
    try:
        return load_teacher(values['kd_teacher'], values['kd_teacher_weights'])
    except TeacherError as err:
        raise click.UsageError(str(err)) from err


def _prompts(values: Mapping[str, Any], dataset: Any, has_text: bool) -> list[str] | None:
    """CGKD's prompts for a CLIP teacher (class template per ``--kd-variant``); None for image-only ones."""
    if not has_text:
        if values['kd_prompts']:
            raise click.UsageError(
                f'--kd-prompts needs a CLIP teacher; {values["kd_teacher"]} has no text encoder'
            )
        return None
    try:
        return resolve_prompts(
            conditional=bool(values['cond']),
            class_names=dataset.class_names,
            dataset_prompts=dataset.prompts,
            prompts_file=values['kd_prompts'],
            class_template=CLASS_TEMPLATES[values['kd_variant']],
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from err


def _check_anchor_options(terms: Sequence[str], parsed: ParsedOptions) -> None:
    """A UsageError naming ``--kd-prompts`` / ``--kd-anchors`` when given but nothing uses anchors."""
    if uses_anchors(terms, parsed.values['kd_div_weight']):
        return
    stray = [name for name in ANCHOR_OPTIONS if name in parsed.given]
    if stray:
        names = ', '.join(_flag(name) for name in stray)
        raise click.UsageError(
            f'{names}: anchors are used only by CGKD (--kd=...,correlated) or --kd-div-weight > 0, not by '
            f'--kd={",".join(terms)}'
        )


def _anchor_kwargs(c: EasyDict, parsed: ParsedOptions, has_text: bool) -> dict[str, Any]:
    """KDLoss's anchor options: the prompts of a CLIP teacher, or for an image-only teacher K, the training
    set and the cache file in the run directory for the k-means prototypes."""
    prompts = _prompts(parsed.values, parsed.dataset, has_text)
    if has_text:
        return dict(prompts=prompts)
    return dict(
        num_anchors=parsed.values['kd_anchors'],
        anchor_dataset=dict(c.training_set_kwargs),
        anchor_cache=os.path.join(parsed.run_dir, 'kd_anchors.pt'),
    )


def _resolve(c: EasyDict, parsed: ParsedOptions) -> None:
    """Turn the StyleGAN2 loss in ``c`` into a KDLoss with every KD default resolved, when ``--kd`` is given.

    Any ``--kd-*`` option the user set without ``--kd`` is a UsageError naming it. The anchor options
    (prompts; K, training set and cache file of the k-means prototypes) are added only when something uses
    the anchors (:func:`uses_anchors`), so AGKD alone neither resolves nor shows them.
    """
    values = parsed.values
    terms = values['kd']
    if not terms:
        stray = sorted(name for name in parsed.given if name.startswith('kd_'))
        if stray:
            names = ', '.join(_flag(name) for name in stray)
            raise click.UsageError(f'{names}: KD options need --kd=aggregated,correlated (or one of them)')
        return
    try:
        settings = resolve_kd_settings(
            values['kd_variant'], values['kd_agkd_weight'], values['kd_cgkd_weight'], values['kd_p']
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    _check_anchor_options(terms, parsed)
    teacher = _load(values)
    base = {k: v for k, v in c.loss_kwargs.items() if k != 'class_name'}
    c.loss_kwargs = EasyDict(
        class_name='stylegan2_ada_kd.kd.loss.KDLoss',
        kd_terms=list(terms),
        teacher=values['kd_teacher'],
        teacher_weights=values['kd_teacher_weights'],
        variant=values['kd_variant'],
        **settings,
        seed=values['seed'],
        div_weight=values['kd_div_weight'],
        teacher_embed_dim=teacher.embed_dim,
        **base,
    )
    if uses_anchors(terms, values['kd_div_weight']):
        c.loss_kwargs.update(_anchor_kwargs(c, parsed, teacher.has_text))


def _name_parts(values: Mapping[str, Any]) -> list[NamePart]:
    """``-kd`` (after ``--desc``) when KD is on."""
    return [(300, 'kd')] if values['kd'] else []


FAMILY = Family(
    name='kd',
    options=(
        click.option(
            '--kd',
            help="KD-DLGAN terms: 'aggregated', 'correlated', both (comma list) or 'none'; "
            'every --kd-* needs it',
            metavar='LIST',
            callback=parse_kd_terms,
        ),
        click.option(
            '--kd-teacher',
            help=f'Teacher: {SPEC_FORMS}',
            default=DEFAULT_TEACHER,
            show_default=True,
            metavar='SPEC',
        ),
        click.option(
            '--kd-teacher-weights',
            help='Local teacher weights file (OpenAI or open_clip format)',
            metavar='PATH',
        ),
        click.option(
            '--kd-variant',
            help="'paper' formulas, or 'official' (the released code's distances, weights, head and prompts)",
            type=click.Choice(VARIANTS),
            default='paper',
            show_default=True,
        ),
        click.option(
            '--kd-agkd-weight',
            help='AGKD weight lambda_A [default: 1, official: 10]',
            type=click.FloatRange(min=0),
            metavar='FLOAT',
        ),
        click.option(
            '--kd-cgkd-weight',
            help='CGKD weight lambda_C [default: 1, official: 10; official sums CGKD over the batch per '
            'process and round (--batch-gpu), as the released code does, so its effective weight grows with '
            'that batch]',
            type=click.FloatRange(min=0),
            metavar='FLOAT',
        ),
        click.option(
            '--kd-p',
            help="Probability of AGKD's cross terms, drawn once per D step [default: 0.7; not with "
            '--kd-variant=official, whose cross terms are always on]',
            type=click.FloatRange(0, 1),
            metavar='FLOAT',
        ),
        click.option('--kd-prompts', help='CGKD prompts file (one per line)', metavar='FILE'),
        click.option(
            '--kd-div-weight',
            help='Weight of the G-side diversity term (extension; 0 = off)',
            type=click.FloatRange(min=0),
            default=0,
            show_default=True,
            metavar='FLOAT',
        ),
        click.option(
            '--kd-anchors',
            help='CGKD anchors for a teacher without text: k-means prototypes of real embeddings',
            type=click.IntRange(min=2),
            default=16,
            show_default=True,
            metavar='INT',
        ),
    ),
    resolve=_resolve,
    name_parts=_name_parts,
)
