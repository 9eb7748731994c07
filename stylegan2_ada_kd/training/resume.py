"""Where a run's weights come from: ``--resume`` (an exact continuation of one of our snapshots, or a warm
start from any other pickle), ``--init-from`` (a new run from any network file's weights) and
``--resume=auto`` (the newest run in ``--outdir`` with the same options). Everything is checked before the
run directory exists; the run record keeps the outcome (``resume_pkl``, ``init_from``, ``init_pkl``)."""

from __future__ import annotations

import json
from typing import Any

import click

from dnnlib import EasyDict
from stylegan2_ada_kd.checkpoint.locate import PRETRAINED
from stylegan2_ada_kd.training.record import with_defaults


class RunComplete(Exception):
    """``--resume=auto`` found this run, and it has already trained for ``--kimg``: nothing to train.

    ``snapshot``: its last snapshot; ``dataset_kwargs``: this run's reals (to complete an evaluation that
    was cut short, see :func:`metrics.evaluation.evaluate_owed`).
    """

    def __init__(self, message: str, snapshot: str, dataset_kwargs: dict) -> None:
        super().__init__(message)
        self.snapshot = snapshot
        self.dataset_kwargs = dataset_kwargs


def name_parts(resume: str | None, init_from: str | None) -> list[str]:
    """The run-directory name parts for ``--resume`` and ``--init-from`` (the reference's ``resume<name>``,
    ``resumecustom``, ``noresume``; ``init<name>``, ``initcustom``); none for ``--resume=auto``."""
    parts = []
    if resume == 'noresume':
        parts.append('noresume')
    elif resume in PRETRAINED:
        parts.append(f'resume{resume}')
    elif resume not in (None, 'auto'):
        parts.append('resumecustom')
    if init_from is not None:
        parts.append(f'init{init_from}' if init_from in PRETRAINED else 'initcustom')
    return parts


def apply_resume(c: EasyDict, resume: str | None, init_from: str | None, outdir: str, dataset: Any) -> None:
    """Fill ``c.resume_pkl`` / ``c.init_from`` / ``c.init_pkl`` from ``--resume`` and ``--init-from``.

    Our snapshots resume exactly; any other pickle given to ``--resume``, and ``--init-from``, start the run
    at 0 kimg from the weights, with ADA reacting 5x faster (100 kimg for p from 0 to 1) and no EMA rampup,
    as the reference does for a pickle. ``--resume=auto --init-from=X`` continues the newest run with these
    options, or starts from X when there is none (one command for every session of a fine-tuning run).
    Files are fetched and checked now. Raises ``click.UsageError`` (naming the option and what to do) and
    :class:`RunComplete` when ``--resume=auto`` finds the run already at ``--kimg``.
    """
    if resume == 'noresume':
        resume = None
    if init_from is not None and resume is not None and resume != 'auto':
        raise click.UsageError(
            f'--resume={resume} continues a run and --init-from={init_from} starts a new one from weights; '
            'pass one of them (with --resume=auto, --init-from is used when there is no run to continue)'
        )
    if init_from is not None:
        c.init_from = init_from
        _warm_start_schedule(c)  # before --resume=auto compares options: every session records the same
    if resume is None and init_from is None:
        return
    from stylegan2_ada_kd.checkpoint import check_init, check_resume, find_auto_resume, resolve_network

    common = dict(
        c_dim=dataset.label_dim, img_resolution=dataset.resolution, img_channels=dataset.num_channels
    )
    try:
        path = None
        if resume == 'auto':
            path = find_auto_resume(outdir, lambda recorded: same_run_options(c, recorded))
            start = f'starting from --init-from={init_from}' if init_from is not None else 'starting fresh'
            print(
                f'--resume=auto: continuing {path}'
                if path
                else f'--resume=auto: no earlier run with the same options; {start}'
            )
        elif resume is not None:
            path = resolve_network(resume, '--resume')
        if path is None:
            if init_from is not None:
                c.init_pkl = resolve_network(init_from, '--init-from')
                check_init(c.init_pkl, c.G_kwargs, c.D_kwargs, common)
            return
        c.resume_pkl = path
        nimg = check_resume(path, c.G_kwargs, c.D_kwargs, common)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    if nimg is None:
        _warm_start_schedule(c)
    elif nimg >= c.total_kimg * 1000:
        _refuse_finished(resume, path, nimg, c)


def _warm_start_schedule(c: EasyDict) -> None:
    """A run from trained weights: ADA adjusts p over 100 kimg instead of 500, and G_ema has no rampup."""
    if c.ada_kwargs is not None:
        c.ada_kwargs.kimg = 100
    c.ema_rampup = None


def _refuse_finished(resume: str, path: str, nimg: int, c: EasyDict) -> None:
    """An exact resume of a snapshot that has already reached ``--kimg`` would train one more step."""
    at = f'{path} is at {nimg / 1000:g} kimg, which reaches --kimg={c.total_kimg:g}'
    if resume == 'auto':
        raise RunComplete(
            f'--resume=auto: {at}: this run is finished; pass a larger --kimg to train it further.',
            path,
            c.training_set_kwargs,
        )
    raise click.UsageError(
        f'--resume={resume}: {at}; pass a larger --kimg to continue it, or --init-from={resume} instead of '
        '--resume to start a new run from its weights (fine-tuning on another dataset, say)'
    )


# What may differ between the sessions of one run continued with --resume=auto: where it is written and
# resumed from, how long it trains, and bookkeeping that does not change the training (the overfitting
# monitor only reads D; which images are held out is in training_set_kwargs; batch_gpu splits the same batch
# of the same images into rounds, as after an out-of-memory error, see training.memory; init_pkl is where
# --init-from, which is compared, was found on this machine).
AUTO_RESUME_FREE_KEYS = (
    'batch_gpu',
    'overfit_kwargs',
    'run_dir',
    'resume_pkl',
    'init_pkl',
    'total_kimg',
    'kimg_per_tick',
    'image_snapshot_ticks',
    'network_snapshot_ticks',
    'grid_size',
    'metrics',
    'data_loader_kwargs',
)


# Classes that training_options.json names by a module path that has since moved: old -> current.
MOVED_CLASSES = {
    'stylegan2_ada_kd.dataset.ImageFolderDataset': 'stylegan2_ada_kd.data.dataset.ImageFolderDataset',
    'stylegan2_ada_kd.augment.AugmentPipe': 'stylegan2_ada_kd.augment.ada.AugmentPipe',
    'stylegan2_ada_kd.augment.AdaptiveP': 'stylegan2_ada_kd.augment.ada.AdaptiveP',
    'stylegan2_ada_kd.diffaugment.DiffAugment': 'stylegan2_ada_kd.augment.diffaugment.DiffAugment',
    'stylegan2_ada_kd.loss.StyleGAN2Loss': 'stylegan2_ada_kd.training.loss.StyleGAN2Loss',
    'stylegan2_ada_kd.overfit.OverfitMonitor': 'stylegan2_ada_kd.training.overfit.OverfitMonitor',
}


def same_run_options(c: dict, recorded: dict) -> bool:
    """Whether the resolved options ``c`` and a run's ``training_options.json`` (``recorded``) describe the
    same training, apart from :data:`AUTO_RESUME_FREE_KEYS`, paths inside each run's own directory and
    class paths that have moved (:data:`MOVED_CLASSES`)."""

    def canonical(options: dict) -> str:
        free = {k: v for k, v in with_defaults(options).items() if k not in AUTO_RESUME_FREE_KEYS}
        text = json.dumps(free, sort_keys=True, default=str)
        for old, current in MOVED_CLASSES.items():
            text = text.replace(f'"{old}"', f'"{current}"')
        own = json.dumps(str(options.get('run_dir', '')))[1:-1]
        return text.replace(own, '<run_dir>') if own else text

    return canonical(c) == canonical(recorded)
