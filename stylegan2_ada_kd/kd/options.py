"""train.py's ``--kd*`` options -> KDLoss kwargs, validated before training (KD-DLGAN, Sec. 3-4).

Every KD default is resolved here (weights, cross-term probability, prompts), so what ``--dry-run`` and
``training_options.json`` show is what the loss runs. ``--kd-*`` options without ``--kd`` are errors. The
teacher is loaded here, at option-parsing time, so a missing weight file or an offline machine stops the
run before anything is created; the loss then takes that same teacher from the per-process cache (moved
to the training device, not loaded again).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import click
from click.core import ParameterSource

from dnnlib import EasyDict
from stylegan2_ada_kd.kd.loss import KD_TERMS, resolve_kd_settings
from stylegan2_ada_kd.kd.prompts import CLASS_TEMPLATES, resolve_prompts
from stylegan2_ada_kd.kd.teacher import Teacher, TeacherError, load_teacher


def parse_kd_terms(text: str | None) -> tuple[str, ...]:
    """``'aggregated,correlated'`` -> a tuple of terms; ``None``/``'none'`` -> empty."""
    if text is None or text == 'none':
        return ()
    terms = tuple(t.strip() for t in text.split(',') if t.strip())
    unknown = [t for t in terms if t not in KD_TERMS]
    if unknown or not terms:
        raise click.UsageError(f'--kd={text}: unknown terms {unknown}; use a comma list of {list(KD_TERMS)}')
    return terms


def given_kd_options(ctx: click.Context) -> set[str]:
    """Names (``kd_prompts``, ...) of the ``--kd-*`` options set on the command line or environment."""
    defaults = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)
    return {
        name
        for name in ctx.params
        if name.startswith('kd_') and ctx.get_parameter_source(name) not in defaults
    }


def _flag(name: str) -> str:
    """``'kd_teacher_weights'`` -> ``'--kd-teacher-weights'``."""
    return '--' + name.replace('_', '-')


def _load(opts: dict) -> Teacher:
    """The teacher of ``--kd-teacher`` / ``--kd-teacher-weights`` (CPU), or a UsageError."""
    try:
        return load_teacher(opts['kd_teacher'], opts.get('kd_teacher_weights'))
    except TeacherError as err:
        raise click.UsageError(str(err)) from err


def _prompts(opts: dict, dataset: Any, teacher: Teacher) -> list[str] | None:
    """CGKD's prompts for a CLIP teacher (class template per ``--kd-variant``); None for image-only ones."""
    if not teacher.has_text:
        if opts.get('kd_prompts'):
            raise click.UsageError(
                f'--kd-prompts needs a CLIP teacher; {opts["kd_teacher"]} has no text encoder'
            )
        return None
    try:
        return resolve_prompts(
            conditional=bool(opts['cond']),
            class_names=dataset.class_names,
            dataset_prompts=dataset.prompts,
            prompts_file=opts.get('kd_prompts'),
            class_template=CLASS_TEMPLATES[opts['kd_variant']],
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from err


def apply_kd_options(c: EasyDict, opts: dict, dataset: Any, given: Collection[str] = ()) -> bool:
    """Turn the StyleGAN2 loss in ``c`` into a KDLoss when ``--kd`` is given; returns whether it did.

    ``given``: the ``--kd-*`` option names set by the user (:func:`given_kd_options`); any of them without
    ``--kd`` is a UsageError naming it. All KD defaults are resolved into ``c.loss_kwargs``.
    """
    terms = parse_kd_terms(opts.get('kd'))
    if not terms:
        stray = sorted(name for name in given if name.startswith('kd_'))
        if stray:
            names = ', '.join(_flag(name) for name in stray)
            raise click.UsageError(f'{names}: KD options need --kd=aggregated,correlated (or one of them)')
        return False
    try:
        settings = resolve_kd_settings(
            opts['kd_variant'], opts.get('kd_agkd_weight'), opts.get('kd_cgkd_weight'), opts.get('kd_p')
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    teacher = _load(opts)
    base = {k: v for k, v in c.loss_kwargs.items() if k != 'class_name'}
    c.loss_kwargs = EasyDict(
        class_name='stylegan2_ada_kd.kd.loss.KDLoss',
        kd_terms=list(terms),
        teacher=opts['kd_teacher'],
        teacher_weights=opts.get('kd_teacher_weights'),
        variant=opts['kd_variant'],
        **settings,
        seed=opts['seed'],
        div_weight=opts['kd_div_weight'],
        prompts=_prompts(opts, dataset, teacher),
        num_anchors=opts['kd_anchors'],
        anchor_dataset=None if teacher.has_text else dict(c.training_set_kwargs),
        teacher_embed_dim=teacher.embed_dim,
        **base,
    )
    return True
