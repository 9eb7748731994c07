"""Train a StyleGAN2-ADA generator, optionally with KD-DLGAN knowledge distillation.

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
"""

from __future__ import annotations

import json
import os

import click

from dnnlib.util import BOOL
from stylegan2_ada_kd.train_config import AUGPIPES, PRESETS, build_training_kwargs, next_run_dir


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
    help='Snapshot interval in ticks (4 kimg each)',
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    metavar='INT',
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
@click.option(
    '--aug', help='Augmentation mode [default: ada]', type=click.Choice(['noaug', 'ada', 'fixed', 'diffaug'])
)
@click.option(
    '--diffaug',
    help='DiffAugment policy for --aug=diffaug [default: color,translation,cutout]',
    metavar='LIST',
)
@click.option(
    '--lecam',
    help='LeCam regularisation weight (0 = off)',
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    metavar='FLOAT',
)
@click.option(
    '--lecam-decay',
    help="Decay of LeCam's EMAs of D's outputs",
    type=click.FloatRange(0, 1),
    default=0.99,
    show_default=True,
    metavar='FLOAT',
)
@click.option(
    '--kd',
    help="KD-DLGAN terms: 'aggregated', 'correlated', both (comma list) or 'none'; every --kd-* needs it",
    metavar='LIST',
)
@click.option(
    '--kd-teacher',
    help='Teacher: MODEL:PRETRAINED (open_clip), torchscript:PATH, or random:MODEL (smoke tests only)',
    default='ViT-B-32:openai',
    show_default=True,
    metavar='SPEC',
)
@click.option(
    '--kd-teacher-weights', help='Local teacher weights file (OpenAI or open_clip format)', metavar='PATH'
)
@click.option(
    '--kd-variant',
    help="'paper' formulas, or 'official' (the released code's distances, weights, head and prompts)",
    type=click.Choice(['paper', 'official']),
    default='paper',
    show_default=True,
)
@click.option(
    '--kd-agkd-weight',
    help='AGKD weight lambda_A [default: 1, official: 10]',
    type=click.FloatRange(min=0),
    metavar='FLOAT',
)
@click.option(
    '--kd-cgkd-weight',
    help='CGKD weight lambda_C [default: 1, official: 10; official sums CGKD over the batch per process '
    'and round (--batch-gpu), as the released code does, so its effective weight grows with that batch]',
    type=click.FloatRange(min=0),
    metavar='FLOAT',
)
@click.option(
    '--kd-p',
    help="Probability of AGKD's cross terms, drawn once per D step [default: 0.7; not with "
    '--kd-variant=official, whose cross terms are always on]',
    type=click.FloatRange(0, 1),
    metavar='FLOAT',
)
@click.option('--kd-prompts', help='CGKD prompts file (one per line)', metavar='FILE')
@click.option(
    '--kd-div-weight',
    help='Weight of the G-side diversity term (extension; 0 = off)',
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    metavar='FLOAT',
)
@click.option(
    '--kd-anchors',
    help='CGKD anchors for a teacher without text: k-means prototypes of real embeddings',
    type=click.IntRange(min=2),
    default=16,
    show_default=True,
    metavar='INT',
)
@click.option(
    '--p', help='Augmentation probability for --aug=fixed', type=click.FloatRange(0, 1), metavar='FLOAT'
)
@click.option(
    '--target',
    help='ADA target for the sign of D(real) [default: 0.6]',
    type=click.FloatRange(0, 1),
    metavar='FLOAT',
)
@click.option('--augpipe', help='Enabled augmentations [default: bgc]', type=click.Choice(AUGPIPES))
@click.option(
    '--resume',
    help='Our snapshot (exact resume), or a pickle path/URL/name to warm-start from',
    metavar='PKL',
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
    opts['aug_given'] = opts['aug'] is not None
    opts['aug'] = opts['aug'] or 'ada'
    c, desc, dataset = build_training_kwargs(opts)
    from stylegan2_ada_kd.kd.options import apply_kd_options, given_kd_options

    if apply_kd_options(c, opts, dataset, given_kd_options(click.get_current_context())):
        desc += '-kd'
    c.run_dir = next_run_dir(opts['outdir'], desc)
    if c.loss_kwargs.get('anchor_dataset') is not None:
        c.loss_kwargs.anchor_cache = os.path.join(c.run_dir, 'kd_anchors.pt')
    print(json.dumps(c, indent=2, default=str))
    print(f'\nRun directory: {c.run_dir}')
    if opts['dry_run']:
        print('Dry run; exiting.')
        return
    from stylegan2_ada_kd.training_loop import training_loop
    from torch_utils.launcher import launch

    launch(c, training_loop)


if __name__ == '__main__':
    main()
