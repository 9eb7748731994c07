"""Text prompts for CGKD, the correlated generative KD term (docs/kd-dlgan.md, "Prompts"; KD-DLGAN Sec. 3.3).

The prompt set gives the K rows of the text-embedding matrix A. Where it comes from, first match wins:

1. ``--kd-prompts=FILE``: one prompt per line; blank lines and lines starting with ``#`` are ignored;
2. class-conditional data: one prompt per class from a template, names from dataset.json ``class_names``:
   ``'a photo of a {name}'`` (paper variant) or ``'a {name}'`` (the released code, official variant);
3. dataset.json ``prompts`` (written by ``dataset_tool.py --prompts``);
4. :data:`GENERIC_PROMPTS`, which span lighting, colour, pose, background and framing.

Duplicates are dropped (first occurrence kept) and K >= 2 is required: with one prompt the row-normalised
correlation is a constant and CGKD teaches nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

PROMPTS_OPTION = '--kd-prompts'
CLASS_TEMPLATE = 'a photo of a {}'
CLASS_TEMPLATES = {'paper': CLASS_TEMPLATE, 'official': 'a {}'}  # per --kd-variant

GENERIC_PROMPTS: tuple[str, ...] = (
    'a brightly lit photo',
    'a dimly lit photo',
    'a photo taken in soft natural light',
    'a photo with harsh shadows',
    'a colourful photo',
    'a black and white photo',
    'a photo with warm tones',
    'a photo with cool blue tones',
    'a photo of the subject seen from the front',
    'a photo of the subject seen from the side',
    'a close-up photo',
    'a photo taken from far away',
    'a photo with a plain background',
    'a photo with a cluttered background',
    'a photo taken outdoors',
    'a photo taken indoors',
    'a blurry photo',
    'a sharp, detailed photo',
)


class PromptError(ValueError):
    """A prompt set that cannot be used; the message names the source and how to fix it."""


def read_prompts_file(path: str) -> list[str]:
    """Prompts of a ``--kd-prompts`` file: stripped lines, skipping blank lines and ``#`` comment lines.

    A ``#`` inside a prompt is kept (only lines that start with ``#`` are comments). UTF-8 text.
    """
    full = os.path.expanduser(str(path))
    try:
        with open(full, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise PromptError(
            f'{PROMPTS_OPTION}={path}: cannot read the file ({type(err).__name__}: {err}); pass a UTF-8 text '
            'file with one prompt per line'
        ) from err
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith('#')]


def _dedupe(prompts: Sequence[str]) -> list[str]:
    """Prompts with whitespace runs (newlines too) collapsed to one space, duplicates removed in order."""
    seen: dict[str, None] = {}
    for prompt in prompts:
        seen.setdefault(' '.join(str(prompt).split()), None)
    return list(seen)


def _class_prompts(class_names: Sequence | None, template: str = CLASS_TEMPLATE) -> list[str]:
    """One ``template.format(name)`` per class; PromptError when names are missing or empty."""
    if not class_names:
        raise PromptError(
            'class-conditional training with KD needs one text prompt per class, but the dataset has no '
            'class names. Add a "class_names" list (index -> name) to dataset.json beside "labels", e.g. '
            'rebuild it with dataset_tool.py --labels=subfolders (folder names become class names), or pass '
            f'{PROMPTS_OPTION}=FILE with one prompt per line.'
        )
    bad = [i for i, name in enumerate(class_names) if not str(name).strip()]
    if bad:
        raise PromptError(
            f'dataset.json class_names has empty names at indices {bad[:10]}; give every class a name or '
            f'pass {PROMPTS_OPTION}=FILE'
        )
    return [template.format(str(name).strip().replace('_', ' ')) for name in class_names]


def resolve_prompts(
    *,
    conditional: bool,
    class_names: Sequence[str] | None,
    dataset_prompts: Sequence[str] | None,
    prompts_file: str | None,
    class_template: str = CLASS_TEMPLATE,
) -> list[str]:
    """The K >= 2 prompts for CGKD (KD-DLGAN Sec. 3.3), from the first source that applies.

    Order: ``prompts_file`` (``--kd-prompts``), then for ``conditional`` data one
    ``class_template.format(name)`` (see :data:`CLASS_TEMPLATES`) per entry of ``class_names`` (underscores
    read as spaces; missing names -> PromptError), then
    ``dataset_prompts`` (dataset.json ``prompts``), then :data:`GENERIC_PROMPTS`. Returns a list of K
    distinct stripped strings in source order; fewer than 2 -> PromptError naming the source.
    """
    if prompts_file:
        source = f'{PROMPTS_OPTION}={prompts_file}'
        prompts = read_prompts_file(prompts_file)
    elif conditional:
        source = 'dataset.json class_names'
        prompts = _class_prompts(class_names, class_template)
    elif dataset_prompts:
        source = 'dataset.json prompts'
        prompts = [str(p) for p in dataset_prompts if str(p).strip()]
    else:
        source = 'the built-in generic prompts'
        prompts = list(GENERIC_PROMPTS)
    prompts = _dedupe(prompts)
    if len(prompts) < 2:
        raise PromptError(
            f'{source} gives {len(prompts)} distinct prompt(s) {prompts}, but CGKD needs at least 2 '
            '(with one prompt the normalised image-text correlation is constant). Add prompts there, or pass '
            f'{PROMPTS_OPTION}=FILE with two or more lines.'
        )
    return prompts
