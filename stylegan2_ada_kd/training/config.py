"""Turns train.py's options into the training loop's kwargs: the reference presets (``--cfg``), the
``auto`` formulas, overrides, validation and the run-directory description string; the options of the
plugin families are resolved by their own modules (:mod:`stylegan2_ada_kd.plugins`)."""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Collection
from typing import Any

import click

from dnnlib import EasyDict
from stylegan2_ada_kd import plugins
from stylegan2_ada_kd.training import resume
from stylegan2_ada_kd.training.record import RunRecord


@dataclasses.dataclass(frozen=True)
class Preset:
    """One ``--cfg`` row (StyleGAN2-ADA, Appendix D.2 / its train.py table); -1 means 'auto formula'."""

    ref_gpus: int
    kimg: int
    mb: int
    mbstd: int
    fmaps: float
    lrate: float
    gamma: float
    ema: float
    ramp: float | None
    map: int


PRESETS = {
    'auto': Preset(-1, 25000, -1, -1, -1, -1, -1, -1, 0.05, 2),
    'stylegan2': Preset(8, 25000, 32, 4, 1, 0.002, 10, 10, None, 8),
    'paper256': Preset(8, 25000, 64, 8, 0.5, 0.0025, 1, 20, None, 8),
    'paper512': Preset(8, 25000, 64, 8, 1, 0.0025, 0.5, 20, None, 8),
    'paper1024': Preset(8, 25000, 32, 4, 1, 0.002, 2, 10, None, 8),
    'cifar': Preset(2, 100000, 64, 32, 1, 0.0025, 0.01, 500, 0.05, 2),
}


def resolve_preset(cfg: str, gpus: int, res: int) -> Preset:
    """The preset with the ``auto`` formulas evaluated for ``gpus`` processes and resolution ``res``."""
    spec = PRESETS[cfg]
    if cfg != 'auto':
        return spec
    mb = max(min(gpus * min(4096 // res, 32), 64), gpus)
    return dataclasses.replace(
        spec,
        ref_gpus=gpus,
        mb=mb,
        mbstd=min(mb // gpus, 4),
        fmaps=1 if res >= 512 else 0.5,
        lrate=0.002 if res >= 1024 else 0.0025,
        gamma=0.0002 * res**2 / mb,
        ema=mb * 10 / 32,
    )


def network_kwargs(
    cfg: str,  # --cfg: a key of PRESETS.
    gpus: int,  # Processes (the 'auto' formulas depend on it).
    resolution: int,  # Image side in pixels (the 'auto' formulas depend on it).
    cbase: int | None = None,  # --cbase: channel_base of G and D; None (or 0) = the preset's.
    cmax: int | None = None,  # --cmax: channel_max of G and D; None (or 0) = 512.
    fp32: bool = False,  # --fp32: no fp16 layers and no conv clamp.
    nhwc: bool = False,  # --nhwc: channels-last fp16 layers.
    freezed: int = 0,  # --freezed: D layers frozen.
    map_depth: int | None = None,  # --map: mapping layers; None (or 0) = the preset's.
    mbstd_group: int | None = None,  # --mbstd-group: minibatch-stddev group size; None (or 0) = the preset's.
) -> tuple[Preset, EasyDict, EasyDict]:
    """The resolved preset (:func:`resolve_preset`, ``map`` and ``mbstd`` replaced by ``map_depth`` and
    ``mbstd_group``) and its G and D kwargs (with class_name), the overrides applied: what train.py builds for
    these options."""
    spec = resolve_preset(cfg, gpus, resolution)
    if map_depth:
        spec = dataclasses.replace(spec, map=map_depth)
    if mbstd_group:
        spec = dataclasses.replace(spec, mbstd=mbstd_group)
    base = dict(
        channel_base=cbase or int(spec.fmaps * 32768),
        channel_max=cmax or 512,
        num_fp16_res=0 if fp32 else 4,
        conv_clamp=None if fp32 else 256,
    )
    G = EasyDict(
        class_name='stylegan2_ada_kd.networks.Generator',
        z_dim=512,
        w_dim=512,
        mapping_kwargs=EasyDict(num_layers=spec.map),
        synthesis_kwargs=EasyDict(base, fp16_channels_last=True) if nhwc else EasyDict(base),
    )
    D = EasyDict(
        class_name='stylegan2_ada_kd.networks.Discriminator',
        block_kwargs=EasyDict(freeze_layers=freezed) if freezed else EasyDict(),
        mapping_kwargs=EasyDict(),
        epilogue_kwargs=EasyDict(mbstd_group_size=spec.mbstd),
        **base,
    )
    if nhwc:
        D.block_kwargs.fp16_channels_last = True
    if cfg == 'cifar':
        D.architecture = 'orig'
    return spec, G, D


def check_batch(batch: int, batch_gpu: int, gpus: int, mbstd: int) -> None:
    """Reject batch sizes that cannot be split into processes, rounds and minibatch-stddev groups."""
    if batch % gpus:
        raise click.UsageError(f'--batch={batch} must be a multiple of --gpus={gpus}')
    if batch_gpu < 1 or batch % (batch_gpu * gpus):
        raise click.UsageError(
            f'--batch={batch} must be a multiple of --batch-gpu={batch_gpu} times --gpus={gpus}'
        )
    group = min(mbstd, batch_gpu)
    if batch_gpu % group:
        raise click.UsageError(
            f'--batch-gpu={batch_gpu} is not a multiple of the minibatch-stddev group size {mbstd}; '
            f'choose a --batch-gpu divisible by {mbstd}'
        )


def next_run_dir(outdir: str, desc: str) -> str:
    """``<outdir>/<NNNNN>-<desc>`` with NNNNN one above the largest numbered entry already there."""
    ids = []
    if os.path.isdir(outdir):
        for name in os.listdir(outdir):
            m = re.match(r'^(\d+)', name)
            if m:
                ids.append(int(m.group(1)))
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')


def run_desc(opts: dict, dataset_name: str, cfg_desc: str, family_parts: list[tuple[int, str]]) -> str:
    """The run-directory description, in the reference's order of suffixes: the core's parts at
    positions 0 and 200, the families' ``family_parts`` between and after them (see ``plugins.NamePart``)."""
    first = [dataset_name]
    if opts['cond']:
        first.append('cond')
    if opts['subset'] is not None:
        first.append(f'subset{opts["subset"]}')
    if opts['holdout']:
        first.append(f'holdout{opts["holdout"]}')
    if opts['mirror']:
        first.append('mirror')
    first.append(cfg_desc)
    first += [f'{key}{opts[key]:g}' for key in ('gamma', 'kimg', 'batch') if opts[key] is not None]
    later = resume.name_parts(opts['resume'], opts['init_from'])
    if opts['freezed']:
        later.append(f'freezed{opts["freezed"]}')
    later += [f'{key}{opts[key]}' for key in ('cbase', 'cmax') if opts[key]]
    later += [f'{key}{opts[key]:g}' for key in ('glr', 'dlr') if opts[key]]
    later += [f'mbstd{opts["mbstd_group"]}'] if opts['mbstd_group'] else []
    if opts['desc']:
        later.append(opts['desc'])
    parts = [(0, text) for text in first] + [(200, text) for text in later] + family_parts
    return '-'.join(text for _, text in sorted(parts, key=lambda part: part[0]))


def _load_dataset(
    data: str, cond: bool, subset: int | None, mirror: bool, seed: int, holdout: int = 0
) -> tuple[EasyDict, Any]:
    """Dataset kwargs, and the dataset itself (every file validated now, before training)."""
    from stylegan2_ada_kd.data.dataset import DatasetError, ImageFolderDataset

    if data == 'demo':
        from stylegan2_ada_kd.data.demo import demo_dataset_path

        data = demo_dataset_path()
    kwargs = EasyDict(
        class_name='stylegan2_ada_kd.data.dataset.ImageFolderDataset',
        path=data,
        use_labels=cond,
        max_size=subset,
        xflip=mirror,
        random_seed=seed,
    )
    if holdout:
        kwargs.holdout = holdout
    try:
        dataset = ImageFolderDataset(**{k: v for k, v in kwargs.items() if k != 'class_name'})
    except (DatasetError, OSError) as err:
        raise click.UsageError(f'--data={data}: {err}') from err
    if cond and not dataset.has_labels:
        raise click.UsageError(f'--cond=1 needs labels, but {data} has no labels in dataset.json')
    if subset is not None and subset > len(dataset) // (2 if mirror else 1):
        held = f' besides the {holdout} of --holdout' if holdout else ''
        raise click.UsageError(
            f'--subset={subset} is larger than the dataset ({len(dataset.files)} images{held})'
        )
    kwargs.resolution = dataset.resolution
    return kwargs, dataset


def check_holdout(ctx: click.Context | None, param: click.Parameter | None, value: int) -> int:
    """``--holdout``'s click callback: 0 (off) or at least 2 images (the rest is checked by the dataset)."""
    if value == 1:
        raise click.BadParameter('hold out at least 2 images (or 0 to turn it off)')
    return value


def _overfit_kwargs(dataset: Any) -> EasyDict | None:
    """Kwargs of the D-overfitting monitor (None without ``--holdout``), with the held-out file names (the
    monitor checks that the dataset still holds these out)."""
    if not dataset.holdout_files:
        return None
    monitor = 'stylegan2_ada_kd.training.overfit.OverfitMonitor'
    return EasyDict(class_name=monitor, holdout_files=dataset.holdout_files)


def optimizer_kwargs(spec: Preset, lr: float | None = None) -> EasyDict:
    """The G or D optimizer kwargs of a resolved preset (Adam, betas 0 / 0.99); ``lr`` (``--glr``,
    ``--dlr``) replaces the preset's learning rate."""
    return EasyDict(class_name='torch.optim.Adam', lr=lr or spec.lrate, betas=[0.0, 0.99], eps=1e-8)


def parse_grid(text: str, resolution: int) -> list[int] | None:
    """``--grid``: ``'COLSxROWS'`` -> ``[cols, rows]``; ``'auto'`` -> about a 7680x4320 canvas of
    ``resolution``-pixel images (7-32 columns, 4-32 rows); ``'none'`` -> None (no image grids)."""
    if text == 'none':
        return None
    if text == 'auto':
        from torch_utils.run_io import grid_size

        return list(grid_size(resolution))
    m = re.fullmatch(r'(\d+)x(\d+)', text.strip())
    if not m or min(int(m.group(1)), int(m.group(2))) < 1:
        raise click.UsageError(
            f"--grid={text}: use COLSxROWS with both at least 1 (e.g. 8x4), 'auto' or 'none'"
        )
    return [int(m.group(1)), int(m.group(2))]


def _core_kwargs(opts: dict, gpus: int, set_kwargs: EasyDict, dataset: Any) -> EasyDict:
    """The training_loop kwargs of the core options (networks, optimizers, StyleGAN2 loss, schedule)."""
    spec, G_kwargs, D_kwargs = network_kwargs(
        opts['cfg'],
        gpus,
        dataset.resolution,
        **{
            key: opts[key] for key in ('cbase', 'cmax', 'fp32', 'nhwc', 'freezed', 'map_depth', 'mbstd_group')
        },
    )
    batch = opts['batch'] if opts['batch'] is not None else spec.mb
    batch_gpu = opts['batch_gpu'] or (
        batch // gpus if opts['batch'] is not None else max(spec.mb // spec.ref_gpus, 1)
    )
    check_batch(batch, batch_gpu, gpus, spec.mbstd)
    loss = EasyDict(class_name='stylegan2_ada_kd.training.loss.StyleGAN2Loss', r1_gamma=spec.gamma)
    if opts['gamma'] is not None:
        loss.r1_gamma = opts['gamma']
    if opts['cfg'] == 'cifar':
        loss.update(pl_weight=0, style_mixing_prob=0)
    workers = cap_workers(opts['workers'])
    grid = parse_grid(opts['grid'], dataset.resolution)
    return EasyDict(
        training_set_kwargs=set_kwargs,
        data_loader_kwargs=EasyDict(
            pin_memory=True, num_workers=workers, prefetch_factor=2 if workers else None
        ),
        G_kwargs=G_kwargs,
        D_kwargs=D_kwargs,
        G_opt_kwargs=optimizer_kwargs(spec, opts['glr']),
        D_opt_kwargs=optimizer_kwargs(spec, opts['dlr']),
        loss_kwargs=loss,
        total_kimg=opts['kimg'] if opts['kimg'] is not None else spec.kimg,
        batch_size=batch,
        batch_gpu=batch_gpu,
        ema_kimg=spec.ema,
        ema_rampup=spec.ramp,
        random_seed=opts['seed'],
        num_gpus=gpus,
        kimg_per_tick=opts['tick'],
        image_snapshot_ticks=opts['snap'] if grid is not None else None,
        grid_size=grid,
        network_snapshot_ticks=opts['snap'],
        metrics=_parse_metrics(opts['metrics']),
        overfit_kwargs=_overfit_kwargs(dataset),
        cudnn_benchmark=not opts['nobench'],
        allow_tf32=opts['allow_tf32'],
    )


def cap_workers(workers: int) -> int:
    """``--workers`` capped at the CPU cores this process may use (more only make torch's DataLoader warn
    and the processes compete); the cap is printed once."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    if workers > cores:
        print(
            f'--workers={workers}: this machine gives the process {cores} CPU core(s); using {cores} workers.'
        )
        return cores
    return workers


def check_outdir(outdir: str) -> None:
    """Fail before anything else when no run directory can be created in ``outdir``: one line naming
    ``--outdir``. Creates nothing (a probe directory is made and removed in the nearest existing folder)."""
    folder = os.path.abspath(outdir)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise click.UsageError(
            f'--outdir={outdir}: {folder} is a file, not a folder; choose another --outdir'
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix='.outdir-check-', dir=folder))
    except OSError as err:
        raise click.UsageError(
            f'--outdir={outdir}: cannot create folders in {folder} ({err.strerror}); choose a writable one'
        ) from err


def build_training_kwargs(opts: dict, given: Collection[str] = ()) -> EasyDict:
    """Resolve train.py's options (a dict of click values; ``given``: the names the user set) into the run
    record (:class:`~stylegan2_ada_kd.training.record.RunRecord` as a dict), ``run_dir`` included (the
    directory is not created).

    The core options come first; then every plugin family (:mod:`stylegan2_ada_kd.plugins`) adds its run
    name parts, and, once the run directory is known, validates its options and fills its kwargs.
    """
    check_outdir(opts['outdir'])
    gpus = process_count(opts['gpus'])
    set_kwargs, dataset = _load_dataset(
        opts['data'], opts['cond'], opts['subset'], opts['mirror'], opts['seed'], opts['holdout']
    )
    c = _core_kwargs(opts, gpus, set_kwargs, dataset)
    cfg_desc = f'auto{gpus}' if opts['cfg'] == 'auto' else opts['cfg']
    desc = run_desc(opts, dataset.name, cfg_desc, plugins.name_parts(opts))
    run_dir = next_run_dir(opts['outdir'], desc)
    plugins.resolve(c, plugins.ParsedOptions(opts, frozenset(given), dataset, run_dir))
    c.run_dir = run_dir
    resume.apply_resume(c, opts['resume'], opts['init_from'], opts['outdir'], dataset)
    return EasyDict(RunRecord.from_dict(c).to_dict())


def process_count(gpus: int | None) -> int:
    """The number of training processes: ``--gpus``, or torchrun's WORLD_SIZE when torchrun started us.

    Under torchrun every process parses the options, so the presets (batch per process, run-directory
    name ``autoN``) must be resolved for the processes that actually run; a ``--gpus`` that disagrees
    with torchrun's ``--nproc_per_node`` x ``--nnodes`` is an error rather than a run that trains nothing.
    """
    from torch_utils.distributed import torchrun_world_size

    world = torchrun_world_size()
    if world is None:
        return gpus or 1
    if gpus is not None and gpus != world:
        raise click.UsageError(
            f'--gpus={gpus}, but torchrun started {world} processes (WORLD_SIZE={world}); '
            f'drop --gpus under torchrun, or pass --gpus={world}'
        )
    return world


def _parse_metrics(text: str | None) -> list:
    """``--metrics`` as metric names ('none' = empty) by metric_main.parse_metric_list, each computable in
    training (its detector at hand: metric_main.check_training_metrics); errors are usage errors. 'none'
    returns before the metrics package (and scipy) is imported."""
    if text is None or text == 'none':
        return []
    from metrics import metric_main

    try:
        names = metric_main.parse_metric_list(text)
        metric_main.check_training_metrics(names)
    except ValueError as err:
        raise click.UsageError(f'--metrics: {err}') from err
    return names
