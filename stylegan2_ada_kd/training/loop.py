"""The StyleGAN2-ADA training loop (Karras et al. 2020, "Training GANs with limited data", Sec. 3-4
and Appendix B/C): lazy-regularised phases, G EMA, the adaptive augmentation heuristic, ticks,
snapshots and exact resume.

Everything is built from ``*_kwargs`` dicts that carry a dotted ``class_name``; the loop names no
loss or augmentation class. The networks, augmentation, loss and phases and each training step come from
the public run API (:mod:`stylegan2_ada_kd.training.run`); the loop adds data, ticks, grids and snapshots.
It calls the loss and the overfitting monitor through their contracts
(:mod:`stylegan2_ada_kd.training.contracts`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np
import torch

from dnnlib.util import construct_class_by_name
from metrics import evaluation
from stylegan2_ada_kd import checkpoint
from stylegan2_ada_kd.data.dataset import open_dataset
from stylegan2_ada_kd.training import memory, report
from stylegan2_ada_kd.training.contracts import Loss, TickReporter, TickStats
from stylegan2_ada_kd.training.record import RunRecord
from stylegan2_ada_kd.training.run import Phase, build_training_run, training_step
from torch_utils import distributed, run_io, training_stats
from torch_utils.misc import uint8_to_unit
from torch_utils.stop import StopRequest


def accumulation_rounds(batch_size: int, batch_gpu: int, num_gpus: int) -> int:
    """Gradient-accumulation rounds per step: ``batch_size / (batch_gpu * num_gpus)``, at least 1.

    Raises ``ValueError`` when the batch does not split exactly, or when ``num_gpus`` is not the number
    of processes actually running (a step must never run zero rounds and train nothing).
    """
    if num_gpus != distributed.world_size():
        raise ValueError(f'num_gpus={num_gpus}, but {distributed.world_size()} processes are running')
    rounds, rest = divmod(batch_size, batch_gpu * num_gpus)
    if rounds < 1 or rest:
        raise ValueError(
            f'batch_size={batch_size} is not a positive multiple of '
            f'batch_gpu={batch_gpu} x num_gpus={num_gpus}'
        )
    return rounds


def _setup_torch(device: torch.device, seed: int, cudnn_benchmark: bool, allow_tf32: bool) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


def _data_iterator(dataset: torch.utils.data.Dataset, rank: int, seed: int, start: int, batch_gpu: int, **kw):  # noqa: ANN202
    """Endless ``(images uint8 [B, C, H, W], labels [B, L])`` batches for this rank, from sample ``start``."""
    sampler = construct_class_by_name(
        class_name='stylegan2_ada_kd.data.sampler.InfiniteSampler',
        dataset=dataset,
        rank=rank,
        num_replicas=distributed.world_size(),
        seed=seed,
        start_position=start,
    )
    # Own generator: creating the loader must not consume the global RNG (exact resume).
    loader = torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=batch_gpu, generator=torch.Generator(), **kw
    )
    return iter(loader)


def _loss_diagnostics(
    loss: Loss,
    real: torch.Tensor,
    real_c: torch.Tensor,
    z_dim: int,
    dataset: torch.utils.data.Dataset,
    device: torch.device,
) -> TickStats:
    """The loss's :meth:`Loss.tick_diagnostics` on the last step's first real chunk and fresh latents.

    Runs under forked RNG states, so training draws the same random numbers with or without it.
    """
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
        gen_z = torch.randn([len(real), z_dim], device=device)
        out = loss.tick_diagnostics(real, real_c, gen_z, _sample_labels(dataset, len(real), device))
    np.random.set_state(np_state)
    return out


def training_loop(
    record: RunRecord | Mapping[str, Any],  # The run's options (training_options.json); see RunRecord.
    rank: int = 0,  # This process's rank.
    device: torch.device | None = None,  # This process's device; None = cuda if available.
    abort_fn: Callable[[], bool] | None = None,  # Called each tick; True stops training after a snapshot.
) -> None:
    """Train G and D until ``record.total_kimg``; see the module docstring.

    Snapshots and grids are named by whole kimg as in the reference (``network-snapshot-000200.pkl``), or by
    kimg with three decimals (``network-snapshot-000000.256.pkl``) when their interval is below 1 kimg or the
    whole-kimg name is already taken, so that no output replaces another (:func:`run_io.output_path`).
    """
    r = record if isinstance(record, RunRecord) else RunRecord.from_dict(record)
    device = device or torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    rounds = accumulation_rounds(r.batch_size, r.batch_gpu, r.num_gpus)
    _setup_torch(device, r.random_seed * r.num_gpus + rank, r.cudnn_benchmark, r.allow_tf32)
    report.report_ops(r.run_dir, rank, device)
    start_time = time.time()
    dataset = open_dataset(r.training_set_kwargs)
    common = dict(
        c_dim=dataset.label_dim, img_resolution=dataset.resolution, img_channels=dataset.num_channels
    )
    run = build_training_run(r, device, common, rank)
    G, D, G_ema, progress = run.G, run.D, run.G_ema, run.progress
    sample_labels = lambda n: _sample_labels(dataset, n, device)
    if memory.probes(device, r.num_gpus):
        r, rounds = _fit_batch_gpu(r, run, dataset.image_shape, sample_labels)
    data_kw = dict(r.data_loader_kwargs or {})
    data_kw['pin_memory'] = data_kw.get('pin_memory', False) and device.type == 'cuda'
    data_iter = _data_iterator(
        dataset, rank, r.random_seed, progress.batch_idx * r.batch_gpu * rounds, r.batch_gpu, **data_kw
    )

    grid = None
    monitor: TickReporter | None = None
    if rank == 0:
        report.print_setup(dataset, G, D, run.augment_pipe, run.loss, r.batch_gpu, device)
        if r.overfit_kwargs:
            monitor = construct_class_by_name(
                **r.overfit_kwargs,
                training_set=dataset,
                z_dim=G.z_dim,
                device=device,
                batch=r.batch_gpu,
                seed=r.random_seed,
            )
        if r.image_snapshot_ticks:
            fresh = progress.cur_nimg == 0
            grid = report.init_grid(r.run_dir, dataset, G_ema, device, fresh, r.batch_gpu, r.grid_size)
    tick_stats = training_stats.Collector()
    writer = run_io.StatsWriter(r.run_dir, start_time) if rank == 0 else None
    if run.resumed is not None:  # first what the snapshot's run left unevaluated, then the RNG as it was
        if progress.tick_start_nimg == progress.cur_nimg:  # a snapshot at a tick's end, not a stop's
            evaluation.evaluate_owed(r.resume_pkl, G_ema, r.training_set_kwargs, rank=rank, device=device)
        checkpoint.restore_rng(run.resumed, rank, device)
    print(f'Training for {r.total_kimg} kimg...\n' if rank == 0 else '', end='')

    with StopRequest(device) as stop:
        tick_start_time = time.time()
        maintenance_time = tick_start_time - start_time
        while True:
            reals, real_cs = _next_batch(data_iter, device, rounds)
            training_step(run, reals, real_cs, sample_labels)
            done = progress.cur_nimg >= r.total_kimg * 1000
            tick_due = (
                progress.cur_tick == 0
                or progress.cur_nimg >= progress.tick_start_nimg + r.kimg_per_tick * 1000
            )
            if not (done or tick_due):  # tick 0 ends after the first step, for early feedback
                if stop.requested():  # between tick ends only: ticks end where they would have
                    _stop_snapshot(run, r, stop.signal, rank)
                    break
                continue
            tick_end_time = time.time()
            timing = dict(
                total=tick_end_time - start_time,
                tick=tick_end_time - tick_start_time,
                kimg=(progress.cur_nimg - progress.tick_start_nimg) / 1e3,
                maintenance=maintenance_time,
            )
            stats = report.tick_stats(progress, timing, run.augment_probability(), device)
            if monitor is not None:
                stats.update(monitor.stats(G, D))
            if rank == 0:
                stats.update(_loss_diagnostics(run.loss, reals[0], real_cs[0], G.z_dim, dataset, device))
                print(report.tick_line(progress, stats, report.augment_status(run.augment_pipe)))
            aborted = bool(abort_fn and abort_fn())
            done = done or aborted
            collected = tick_stats.collect(device)
            _add_phase_timing(run.phases, collected)
            tick = progress.cur_tick
            progress.cur_tick += 1  # the snapshot stores the state in which the next tick starts
            progress.tick_start_nimg = progress.cur_nimg
            if grid is not None and (done or tick % r.image_snapshot_ticks == 0):
                images = report.generate_grid(G_ema, grid['z'], grid['c'], r.batch_gpu)
                fine = r.kimg_per_tick * r.image_snapshot_ticks < 1
                path = run_io.output_path(r.run_dir, 'fakes', '.png', progress.cur_nimg, fine)
                run_io.save_image_grid(images, path, (-1, 1), grid['size'])
            if done or (r.network_snapshot_ticks and tick % r.network_snapshot_ticks == 0):
                fine = r.kimg_per_tick * (r.network_snapshot_ticks or 1e9) < 1
                snapshot_pkl = _write_snapshot(run, r, fine, rank)
                stats.update(
                    evaluation.evaluate_and_report(
                        r.metrics,
                        G_ema,
                        r.training_set_kwargs,
                        rank=rank,
                        device=device,
                        run_dir=r.run_dir,
                        snapshot_pkl=snapshot_pkl,
                        keep_best=True,
                    )
                )
            if writer is not None:
                writer.write(dict(collected, **stats), progress.cur_nimg)
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            tick_start_time = time.time()
            maintenance_time = tick_start_time - tick_end_time
            if done:
                break
    if writer is not None:
        writer.close()
    tick_stats.close()
    run.close()
    if rank == 0:
        print('\nExiting...')


def _write_snapshot(run: Any, r: RunRecord, fine: bool, rank: int) -> str | None:
    """A snapshot of the run as it is now, named by its kimg (``fine``: with three decimals); its path on rank
    0. The ADA controller's pending signs go into it first, so resume is exact."""
    if run.ada is not None:
        run.ada.absorb(run.ada_stats.collect(run.device))
    path = run_io.output_path(r.run_dir, 'network-snapshot-', '.pkl', run.progress.cur_nimg, fine)
    return checkpoint.write_snapshot(
        path if rank == 0 else None,
        run.nets,
        run.phases,
        run.loss,
        run.ada,
        run.progress,
        r.training_set_kwargs,
        rank,
        run.device,
    )


def _stop_snapshot(run: Any, r: RunRecord, signal_name: str | None, rank: int) -> None:
    """On a stop request: a snapshot of the state after this step, mid-tick (the tick's counters as they are,
    so a resumed run ends this tick and every later one where this run would have), named with three
    decimals and not evaluated; no tick report (it would draw random numbers the snapshot must not miss)."""
    if rank == 0:
        print(
            f'\n{signal_name} received: stopping at {run.progress.cur_nimg / 1000:.3f} kimg with a snapshot.'
        )
    path = _write_snapshot(run, r, True, rank)
    if rank == 0:
        print(f'Wrote {path}; the same command with --resume=auto (or --resume={path}) continues exactly.')


def _fit_batch_gpu(r: RunRecord, run, image_shape, sample_labels) -> tuple[RunRecord, int]:  # noqa: ANN001
    """The record with the largest batch per round whose step fits in GPU memory
    (:func:`.memory.fit_batch_gpu`), and its accumulation rounds; the log says what it found."""
    batch_gpu, peak = memory.fit_batch_gpu(run, training_step, r.batch_gpu, tuple(image_shape), sample_labels)
    rounds = accumulation_rounds(r.batch_size, batch_gpu, r.num_gpus)
    used = memory.describe_peak(peak, run.device)
    if batch_gpu == r.batch_gpu:
        print(f'Memory: a step at batch_gpu={batch_gpu} fits ({used}).')
    else:
        print(
            f'Memory: out of GPU memory at batch_gpu={r.batch_gpu}; training at batch_gpu={batch_gpu} '
            f'({used}), '
            f'{rounds} accumulation rounds per step, as --batch-gpu={batch_gpu} would: the same batch of '
            f'{r.batch_size} and the same images.'
        )
    return dataclasses.replace(r, batch_gpu=batch_gpu), rounds


def _add_phase_timing(phases: list[Phase], stats: dict) -> None:
    """Add ``Timing/<phase>`` (seconds of the last step of each phase, CUDA only)."""
    for phase in phases:
        if phase.start_event is not None:
            phase.end_event.synchronize()
            sec = phase.start_event.elapsed_time(phase.end_event) / 1e3
            stats[f'Timing/{phase.name}'] = {'num': 1, 'mean': sec, 'std': 0.0}


def _next_batch(data_iter, device: torch.device, rounds: int) -> tuple[list, list]:  # noqa: ANN001
    """Fetch ``rounds`` chunks: images float32 in [-1, 1] ``[B, C, H, W]`` and labels ``[B, L]``."""
    reals, real_cs = [], []
    for _ in range(rounds):
        img, c = next(data_iter)
        reals.append(uint8_to_unit(img.to(device)))
        real_cs.append(c.to(device))
    return reals, real_cs


def _sample_labels(dataset: torch.utils.data.Dataset, n: int, device: torch.device) -> torch.Tensor:
    """``[n, label_dim]`` labels drawn from the training set's label distribution."""
    if dataset.label_dim == 0:
        return torch.zeros([n, 0], device=device)
    idx = np.random.randint(len(dataset), size=n)
    return torch.from_numpy(np.stack([dataset.get_label(int(i)) for i in idx])).to(device)
