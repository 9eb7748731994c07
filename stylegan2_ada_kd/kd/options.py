"""train.py's ``--kd*`` options -> KDLoss kwargs, validated before training (KD-DLGAN, Sec. 3-4).

The teacher is loaded here, at option-parsing time, so a missing weight file or an offline machine
stops the run before anything is created; in a single-process run the loss reuses the same
(cached) teacher.
"""

from __future__ import annotations

from typing import Any, Optional

import click

from dnnlib import EasyDict
from stylegan2_ada_kd.kd.loss import KD_TERMS
from stylegan2_ada_kd.kd.prompts import resolve_prompts
from stylegan2_ada_kd.kd.teacher import TeacherError, load_teacher


def parse_kd_terms(text: Optional[str]) -> tuple[str, ...]:
    """``'aggregated,correlated'`` -> a tuple of terms; ``None``/``'none'`` -> empty."""
    if text is None or text == 'none':
        return ()
    terms = tuple(t.strip() for t in text.split(',') if t.strip())
    unknown = [t for t in terms if t not in KD_TERMS]
    if unknown or not terms:
        raise click.UsageError(f'--kd={text}: unknown terms {unknown}; use a comma list of {list(KD_TERMS)}')
    return terms


def apply_kd_options(c: EasyDict, opts: dict, dataset: Any) -> Optional[dict]:
    """Turn the StyleGAN2 loss in ``c`` into a KDLoss when ``--kd`` is given; returns a summary or None."""
    terms = parse_kd_terms(opts.get('kd'))
    if not terms:
        for key in ('kd_prompts', 'kd_teacher_weights'):
            if opts.get(key):
                raise click.UsageError(f'--{key.replace("_", "-")} needs --kd')
        return None
    try:
        teacher = load_teacher(opts['kd_teacher'], opts.get('kd_teacher_weights'))
    except TeacherError as err:
        raise click.UsageError(str(err)) from err
    prompts = None
    if teacher.has_text:
        try:
            prompts = resolve_prompts(
                conditional=bool(opts['cond']),
                class_names=dataset.class_names,
                dataset_prompts=dataset.prompts,
                prompts_file=opts.get('kd_prompts'),
            )
        except ValueError as err:
            raise click.UsageError(str(err)) from err
    elif opts.get('kd_prompts'):
        raise click.UsageError(f'--kd-prompts needs a CLIP teacher; {opts["kd_teacher"]} has no text encoder')
    base = {k: v for k, v in c.loss_kwargs.items() if k != 'class_name'}
    c.loss_kwargs = EasyDict(
        class_name='stylegan2_ada_kd.kd.loss.KDLoss',
        kd_terms=list(terms),
        teacher=opts['kd_teacher'],
        teacher_weights=opts.get('kd_teacher_weights'),
        variant=opts['kd_variant'],
        agkd_weight=opts.get('kd_agkd_weight'),
        cgkd_weight=opts.get('kd_cgkd_weight'),
        cross_p=opts['kd_p'],
        div_weight=opts['kd_div_weight'],
        prompts=prompts,
        num_anchors=opts['kd_anchors'],
        anchor_dataset=None if teacher.has_text else dict(c.training_set_kwargs),
        teacher_embed_dim=teacher.embed_dim,
        **base,
    )
    return dict(teacher=opts['kd_teacher'], embed_dim=teacher.embed_dim, is_random=teacher.is_random)
