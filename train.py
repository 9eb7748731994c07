"""Train a StyleGAN2-ADA generator; plugins add their options.

Examples:

\b
    # Short CPU demo on the built-in dataset (a few kimg at 32x32):
    python train.py --outdir=runs --data=demo --kimg=2 --tick=0.5 --snap=2 --cbase=2048 --cmax=64 --workers=0

\b
    # FFHQ-style training with ADA on one GPU:
    python train.py --outdir=runs --data=ffhq256.zip --cfg=paper256 --mirror=1

\b
    # Continue a run exactly where its last snapshot stopped:
    python train.py --outdir=runs --data=ffhq256.zip --cfg=paper256 --mirror=1 \\
        --resume=runs/00000-ffhq256-mirror-paper256/network-snapshot-000200.pkl

\b
    # Time-limited sessions: the same command each time continues the newest run with these options:
    python train.py --outdir=runs --data=ffhq256.zip --cfg=paper256 --mirror=1 --resume=auto

\b
    # Fine-tune a trained model on 100 images (weights only; every session the same command):
    python train.py --outdir=runs --data=obama.zip --cfg=paper256 --aug=diffaug \\
        --init-from=runs/00000-ffhq256-mirror-paper256 --resume=auto
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import click

from dnnlib.util import BOOL
from stylegan2_ada_kd import plugins
from stylegan2_ada_kd.checkpoint.locate import PRETRAINED
from stylegan2_ada_kd.training.config import PRESETS, build_training_kwargs, check_holdout
from stylegan2_ada_kd.training.resume import RunComplete
from torch_utils.distributed import launched_by_torchrun


@click.command(help=__doc__, context_settings=dict(terminal_width=100, max_content_width=100))
@click.option('--outdir', help='Parent directory of the run directory', metavar='DIR', required=True)
@click.option(
    '--gpus',
    help='Number of processes (one per GPU; CPU processes when no GPU) [default: 1; torchrun: WORLD_SIZE]',
    type=click.IntRange(min=1),
    metavar='INT',
)
@click.option(
    '--snap',
    help='Snapshot interval in ticks (of --tick kimg each)',
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    metavar='INT',
)
@click.option(
    '--grid',
    help="Columns x rows of the snapshot image grids, 'auto' (about 7680x4320 pixels) or 'none' (no grids)",
    default='auto',
    show_default=True,
    metavar='COLSxROWS',
)
@click.option(
    '--metrics',
    help="Comma-separated metrics evaluated at snapshots, or 'none'",
    default='none',
    show_default=True,
    metavar='LIST',
)
@click.option('--seed', help='Random seed', type=int, default=0, show_default=True, metavar='INT')
@click.option('-n', '--dry-run', help='Print the resolved options and exit', is_flag=True)
@click.option('--data', help='Dataset folder or zip', metavar='PATH', required=True)
@click.option(
    '--cond',
    help='Train a class-conditional model',
    type=BOOL,
    default=False,
    show_default=True,
    metavar='BOOL',
)
@click.option(
    '--subset', help='Train on this many images chosen with --seed', type=click.IntRange(min=1), metavar='INT'
)
@click.option(
    '--holdout',
    help='Keep this many images (chosen with --seed) out of training to measure D overfitting (0 = off)',
    type=click.IntRange(min=0),
    callback=check_holdout,
    default=0,
    show_default=True,
    metavar='INT',
)
@click.option(
    '--mirror',
    help='Add x-flipped copies of the images',
    type=BOOL,
    default=False,
    show_default=True,
    metavar='BOOL',
)
@click.option(
    '--cfg',
    help='Hyperparameter preset',
    type=click.Choice(sorted(PRESETS)),
    default='auto',
    show_default=True,
)
@click.option('--gamma', help='Override the R1 weight', type=click.FloatRange(min=0), metavar='FLOAT')
@click.option(
    '--kimg',
    help='Override the training length in kimg',
    type=click.FloatRange(min=0, min_open=True),
    metavar='KIMG',
)
@click.option(
    '--tick',
    help='Progress interval in kimg',
    type=click.FloatRange(min=0, min_open=True),
    default=4,
    show_default=True,
    metavar='KIMG',
)
@click.option('--batch', help='Override the total batch size', type=click.IntRange(min=1), metavar='INT')
@click.option(
    '--batch-gpu',
    help='Batch per process and accumulation round (default: batch / gpus)',
    type=click.IntRange(min=1),
    metavar='INT',
)
@plugins.add_options
@click.option(
    '--resume',
    help="Our snapshot or run directory (exact resume; a directory: its newest snapshot), 'auto' (the newest "
    'snapshot of the newest run in --outdir with the same options, else a fresh start), or a pickle '
    f'path/URL/name ({", ".join(PRETRAINED)}) to warm-start from',
    metavar='PKL|DIR|auto',
)
@click.option(
    '--init-from',
    help='Start a new run from the weights of our snapshot, a run directory (its newest snapshot) or a '
    'pickle path/URL/name (G, D, G_ema tensors whose names and shapes fit; kimg, augment p, optimizers '
    'and RNG start fresh); with --resume=auto, only when there is no run to continue',
    metavar='PKL|DIR',
)
@click.option(
    '--cbase',
    help='Override the channel base (channels at res r: min(cbase / r, cmax))',
    type=click.IntRange(min=1),
    metavar='INT',
)
@click.option('--cmax', help='Override the maximum channels', type=click.IntRange(min=1), metavar='INT')
@click.option(
    '--map-depth', help='Override the number of mapping layers', type=click.IntRange(min=1), metavar='INT'
)
@click.option(
    '--glr', help='Override the G learning rate', type=click.FloatRange(min=0, min_open=True), metavar='FLOAT'
)
@click.option(
    '--dlr', help='Override the D learning rate', type=click.FloatRange(min=0, min_open=True), metavar='FLOAT'
)
@click.option(
    '--mbstd-group',
    help='Override the minibatch-stddev group size of D',
    type=click.IntRange(min=1),
    metavar='INT',
)
@click.option(
    '--freezed',
    help='Freeze the first N layers of D',
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar='INT',
)
@click.option(
    '--fp32',
    help='Disable mixed precision and activation clamping',
    type=BOOL,
    default=False,
    show_default=True,
    metavar='BOOL',
)
@click.option(
    '--nhwc',
    help='Use channels_last for the fp16 layers',
    type=BOOL,
    default=False,
    show_default=True,
    metavar='BOOL',
)
@click.option(
    '--nobench',
    help='Disable cuDNN benchmarking',
    type=BOOL,
    default=False,
    show_default=True,
    metavar='BOOL',
)
@click.option(
    '--allow-tf32',
    help='Allow TF32 matmul and convolutions',
    type=BOOL,
    default=False,
    show_default=True,
    metavar='BOOL',
)
@click.option(
    '--workers',
    help='DataLoader worker processes',
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    metavar='INT',
)
@click.option('--desc', help='Extra text appended to the run directory name', metavar='STR')
def main(**opts: object) -> None:
    """Resolve the options, then train (or print them with --dry-run)."""
    # Under torchrun every process resolves the options; only rank 0 prints them (errors show on all).
    quiet = launched_by_torchrun() and os.environ['RANK'] != '0'
    try:
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            c = build_training_kwargs(opts, plugins.given_options(click.get_current_context()))
            print(json.dumps(c, indent=2, default=str))
            print(f'\nRun directory: {c.run_dir}')
    except RunComplete as done:  # the same command, once more after the run ended: nothing to train
        if not quiet:
            print(done)
            if not opts['dry_run']:
                _evaluate_owed(done.snapshot, done.dataset_kwargs)
        return
    if opts['dry_run']:
        if not quiet:
            print('Dry run; exiting.')
        return
    from stylegan2_ada_kd.checkpoint import SnapshotWriteError
    from stylegan2_ada_kd.training.loop import training_loop
    from stylegan2_ada_kd.training.memory import StepOutOfMemory
    from torch_utils.launcher import launch

    try:
        launch(c, training_loop)
    except (StepOutOfMemory, SnapshotWriteError) as err:  # one process: what to do, without a traceback
        raise click.ClickException(str(err)) from err


def _evaluate_owed(snapshot: str, dataset_kwargs: dict) -> None:
    """The evaluation of a finished run's last snapshot, if the run was stopped during it (one process)."""
    import torch

    from metrics import evaluation
    from stylegan2_ada_kd.checkpoint import load_network_pkl

    if evaluation.owed_metrics(snapshot):
        device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
        G = load_network_pkl(snapshot)['G_ema'].to(device)
        evaluation.evaluate_owed(snapshot, G, dataset_kwargs, rank=0, device=device)


if __name__ == '__main__':
    main()
