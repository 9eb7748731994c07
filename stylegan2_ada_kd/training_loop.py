"""The StyleGAN2-ADA training loop (Karras et al. 2020, "Training GANs with limited data", Sec. 3-4
and Appendix B/C): lazy-regularised phases, G EMA, the adaptive augmentation heuristic, ticks,
snapshots and exact resume.

Everything is built from ``*_kwargs`` dicts that carry a dotted ``class_name``; the loop names no
loss or augmentation class.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from dnnlib.util import construct_class_by_name
from stylegan2_ada_kd import checkpoint, loop_report
from torch_utils import distributed, run_io, training_stats


@dataclass
class Phase:
    """One optimisation phase: which module steps, with which optimizer, how often, at what gain."""

    name: str
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int
    start_event: torch.cuda.Event | None = None
    end_event: torch.cuda.Event | None = None


@dataclass
class Progress:
    """Counters that exact resume restores."""

    cur_nimg: int = 0
    cur_tick: int = 0
    batch_idx: int = 0
    tick_start_nimg: int = 0


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
        class_name='stylegan2_ada_kd.sampler.InfiniteSampler',
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


def _build_phases(
    G: torch.nn.Module, D: torch.nn.Module, G_opt_kwargs: dict, D_opt_kwargs: dict, G_reg: int, D_reg: int
) -> list[Phase]:
    """Main and regularisation phases sharing one optimizer per network (lazy reg., SG2 Sec. 3.1)."""
    phases = []
    for name, module, opt_kwargs, interval in [('G', G, G_opt_kwargs, G_reg), ('D', D, D_opt_kwargs, D_reg)]:
        params = list(module.parameters())
        if not interval:
            opt = construct_class_by_name(params, **opt_kwargs)
            phases.append(Phase(f'{name}both', module, opt, 1))
            continue
        ratio = interval / (interval + 1)
        kw = dict(opt_kwargs, lr=opt_kwargs['lr'] * ratio)
        kw['betas'] = [b**ratio for b in opt_kwargs.get('betas', (0.9, 0.999))]
        opt = construct_class_by_name(params, **kw)
        phases += [Phase(f'{name}main', module, opt, 1), Phase(f'{name}reg', module, opt, interval)]
    for phase in phases:
        _check_optimizer_covers(phase)
    if torch.cuda.is_available():
        for phase in phases:
            phase.start_event = torch.cuda.Event(enable_timing=True)
            phase.end_event = torch.cuda.Event(enable_timing=True)
    return phases


def _check_optimizer_covers(phase: Phase) -> None:
    """Every parameter of the phase's module must be in its optimizer (a head attached after the optimizer
    was built would silently never train)."""
    held = {id(p) for group in phase.opt.param_groups for p in group['params']}
    missing = [name for name, p in phase.module.named_parameters() if id(p) not in held]
    if missing:
        raise RuntimeError(
            f'{phase.name}: parameters {missing[:5]} are not in the optimizer; modules attached to the '
            'networks (plugin heads) must exist before the optimizers are built'
        )


def _run_phase(phase: Phase, loss, reals, real_cs, gen_zs, gen_cs, cur_nimg: int) -> None:  # noqa: ANN001
    """Zero grads, accumulate over the batch_gpu chunks, average across ranks, guard NaN, step."""
    if phase.start_event is not None:
        phase.start_event.record(torch.cuda.current_stream())
    phase.opt.zero_grad(set_to_none=True)
    phase.module.requires_grad_(True)
    for real, real_c, gen_z, gen_c in zip(reals, real_cs, gen_zs, gen_cs):
        loss.accumulate_gradients(
            phase.name, real, real_c, gen_z, gen_c, gain=phase.interval, cur_nimg=cur_nimg
        )
    phase.module.requires_grad_(False)
    params = [p for p in phase.module.parameters() if p.grad is not None]
    distributed.sync_gradients(params)
    phase.opt.step()
    if phase.end_event is not None:
        phase.end_event.record(torch.cuda.current_stream())


def _loss_diagnostics(
    loss: object,
    real: torch.Tensor,
    real_c: torch.Tensor,
    z_dim: int,
    dataset: torch.utils.data.Dataset,
    device: torch.device,
) -> dict:
    """Once-per-tick diagnostics of the loss, if it has ``tick_diagnostics(real, real_c, gen_z, gen_c)``
    (returning ``{name: {'num', 'mean', 'std'}}``), on the last step's first real chunk and fresh latents.

    Runs under forked RNG states, so training draws the same random numbers with or without it.
    """
    diagnose = getattr(loss, 'tick_diagnostics', None)
    if not callable(diagnose):
        return {}
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
        gen_z = torch.randn([len(real), z_dim], device=device)
        out = diagnose(real, real_c, gen_z, _sample_labels(dataset, len(real), device))
    np.random.set_state(np_state)
    return out


@torch.no_grad()
def _update_ema(G: torch.nn.Module, G_ema: torch.nn.Module, beta: float) -> None:
    """Parameters: ``ema = lerp(p, ema, beta)``; buffers are copied."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b.detach())


def ema_beta(batch_size: int, cur_nimg: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """EMA decay per step from a half-life of ``ema_kimg`` thousand images, optionally ramped up."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


def training_loop(
    run_dir: str = '.',  # Output directory (rank 0 writes here).
    training_set_kwargs: dict | None = None,  # Dataset: class_name + options.
    data_loader_kwargs: dict | None = None,  # torch DataLoader options (num_workers, pin_memory, ...).
    G_kwargs: dict | None = None,  # Generator: class_name + options.
    D_kwargs: dict | None = None,  # Discriminator: class_name + options.
    G_opt_kwargs: dict | None = None,  # G optimizer: class_name + options.
    D_opt_kwargs: dict | None = None,  # D optimizer: class_name + options.
    augment_kwargs: dict | None = None,  # Augmentation module: class_name + options; None = none.
    ada_kwargs: dict | None = None,  # ADA controller: class_name + options; None = fixed p.
    loss_kwargs: dict | None = None,  # Loss: class_name + options.
    random_seed: int = 0,  # Global seed; each rank uses seed * num_gpus + rank.
    num_gpus: int = 1,  # Number of processes.
    rank: int = 0,  # This process's rank.
    device: torch.device | None = None,  # This process's device; None = cuda if available.
    batch_size: int = 4,  # Total batch over all processes and accumulation rounds.
    batch_gpu: int = 4,  # Batch per process per round.
    ema_kimg: float = 10,  # G_ema half-life in kimg.
    ema_rampup: float | None = None,  # EMA rampup ratio; None = off.
    G_reg_interval: int | None = 4,  # Path-length regularisation interval in steps; None = not lazy.
    D_reg_interval: int | None = 16,  # R1 interval in steps; None = not lazy.
    augment_p: float = 0,  # Initial augmentation probability.
    total_kimg: float = 25000,  # Training length in kimg.
    kimg_per_tick: float = 4,  # Progress interval in kimg.
    image_snapshot_ticks: int | None = 50,  # Image grid interval in ticks; None = never.
    network_snapshot_ticks: int | None = 50,  # Snapshot interval in ticks; None = only at the end.
    resume_pkl: str | None = None,  # Snapshot to continue exactly, or a pickle to warm-start from.
    cudnn_benchmark: bool = True,  # torch.backends.cudnn.benchmark.
    allow_tf32: bool = False,  # TF32 matmul/convolution on Ampere+.
    metrics: list | None = None,  # Metric names evaluated at each snapshot (calc by metrics.metric_main).
    overfit_kwargs: dict | None = None,  # D-overfitting monitor (held-out reals): class_name + options.
    abort_fn: Callable[[], bool] | None = None,  # Called each tick; True stops training after a snapshot.
) -> None:
    """Train G and D until ``total_kimg``; see the module docstring. Options are listed in the signature."""
    device = device or torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    rounds = accumulation_rounds(batch_size, batch_gpu, num_gpus)
    _setup_torch(device, random_seed * num_gpus + rank, cudnn_benchmark, allow_tf32)
    loop_report.report_ops(run_dir, rank, device)
    start_time = time.time()
    dataset = construct_class_by_name(**training_set_kwargs)
    common = dict(
        c_dim=dataset.label_dim, img_resolution=dataset.resolution, img_channels=dataset.num_channels
    )
    G = construct_class_by_name(**G_kwargs, **common).train().requires_grad_(False).to(device)
    D = construct_class_by_name(**D_kwargs, **common).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = None
    if augment_kwargs is not None:
        augment_pipe = construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(augment_p))
    ada = (
        construct_class_by_name(**ada_kwargs, batch_size=batch_size) if ada_kwargs and augment_pipe else None
    )
    # The loss may add trainable modules to G or D (a plugin head through D.attach_head), so it is built
    # before the optimizers and the broadcast below; _build_phases checks that every parameter is covered.
    loss = construct_class_by_name(device=device, G=G, D=D, augment_pipe=augment_pipe, **loss_kwargs)
    phases = _build_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval)
    progress = Progress()
    nets = dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe)
    resumed = None
    if resume_pkl:
        resumed = checkpoint.load_for_training(resume_pkl, nets, phases, loss, ada, progress, rank)
    for module in (G, D, augment_pipe):
        if module is not None:
            distributed.broadcast_module(module)
    distributed.broadcast_module(G_ema)
    data_kw = dict(data_loader_kwargs or {})
    data_kw['pin_memory'] = data_kw.get('pin_memory', False) and device.type == 'cuda'
    data_iter = _data_iterator(
        dataset, rank, random_seed, progress.batch_idx * batch_gpu * rounds, batch_gpu, **data_kw
    )

    grid = monitor = None
    if rank == 0:
        loop_report.print_setup(dataset, G, D, augment_pipe, loss)
        if overfit_kwargs:
            monitor = construct_class_by_name(
                **overfit_kwargs,
                dataset_kwargs=training_set_kwargs,
                training_set=dataset,
                z_dim=G.z_dim,
                device=device,
                batch=batch_gpu,
                seed=random_seed,
            )
        grid = loop_report.init_grid(run_dir, dataset, G, device, progress.cur_nimg == 0, G_ema, batch_gpu)
    tick_stats = training_stats.Collector()
    ada_stats = training_stats.Collector(['Loss/signs/real'])
    writer = run_io.StatsWriter(run_dir, start_time) if rank == 0 else None
    if resumed is not None:
        checkpoint.restore_rng(resumed, rank, device)
    print(f'Training for {total_kimg} kimg...\n' if rank == 0 else '', end='')

    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    while True:
        reals, real_cs = _next_batch(data_iter, device, rounds)
        for phase in phases:
            if progress.batch_idx % phase.interval != 0:
                continue
            gen_zs = torch.randn([batch_gpu * rounds, G.z_dim], device=device).split(batch_gpu)
            gen_cs = _sample_labels(dataset, batch_gpu * rounds, device).split(batch_gpu)
            _run_phase(phase, loss, reals, real_cs, gen_zs, gen_cs, progress.cur_nimg)
        _update_ema(G, G_ema, ema_beta(batch_size, progress.cur_nimg, ema_kimg, ema_rampup))
        progress.cur_nimg += batch_size
        progress.batch_idx += 1
        if ada is not None and progress.batch_idx % ada.interval == 0:
            ada.update(augment_pipe, ada_stats.collect(device))

        done = progress.cur_nimg >= total_kimg * 1000
        tick_due = (
            progress.cur_tick == 0 or progress.cur_nimg >= progress.tick_start_nimg + kimg_per_tick * 1000
        )
        if not (done or tick_due):  # tick 0 ends after the first step, for early feedback
            continue
        tick_end_time = time.time()
        p_now = float(augment_pipe.p) if augment_pipe is not None else None
        timing = dict(
            total=tick_end_time - start_time,
            tick=tick_end_time - tick_start_time,
            kimg=(progress.cur_nimg - progress.tick_start_nimg) / 1e3,
            maintenance=maintenance_time,
        )
        stats = loop_report.tick_stats(progress, timing, p_now, device)
        if monitor is not None:
            stats.update(monitor.stats(G, D))
        if rank == 0:
            stats.update(_loss_diagnostics(loss, reals[0], real_cs[0], G.z_dim, dataset, device))
        if rank == 0:
            print(loop_report.tick_line(progress, stats, loop_report.augment_status(augment_pipe)))
        aborted = bool(abort_fn and abort_fn())
        done = done or aborted
        collected = tick_stats.collect(device)
        _add_phase_timing(phases, collected)
        tick = progress.cur_tick
        progress.cur_tick += 1  # the snapshot stores the state in which the next tick starts
        progress.tick_start_nimg = progress.cur_nimg
        if rank == 0 and image_snapshot_ticks and (done or tick % image_snapshot_ticks == 0):
            images = loop_report.generate_grid(G_ema, grid['z'], grid['c'], batch_gpu)
            kimg = progress.cur_nimg // 1000
            run_io.save_image_grid(
                images, os.path.join(run_dir, f'fakes{kimg:06d}.png'), (-1, 1), grid['size']
            )
        if done or (network_snapshot_ticks and tick % network_snapshot_ticks == 0):
            if ada is not None:  # pending signs go into the snapshot, so resume is exact
                ada.absorb(ada_stats.collect(device))
            snapshot_pkl = checkpoint.write_snapshot(
                run_dir, nets, phases, loss, ada, progress, training_set_kwargs, rank, device
            )
            stats.update(
                loop_report.evaluate_metrics(
                    metrics, G_ema, training_set_kwargs, run_dir, snapshot_pkl, rank, device
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
    ada_stats.close()
    if rank == 0:
        print('\nExiting...')


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
        reals.append(img.to(device).to(torch.float32) / 127.5 - 1)
        real_cs.append(c.to(device))
    return reals, real_cs


def _sample_labels(dataset: torch.utils.data.Dataset, n: int, device: torch.device) -> torch.Tensor:
    """``[n, label_dim]`` labels drawn from the training set's label distribution."""
    if dataset.label_dim == 0:
        return torch.zeros([n, 0], device=device)
    idx = np.random.randint(len(dataset), size=n)
    return torch.from_numpy(np.stack([dataset.get_label(int(i)) for i in idx])).to(device)
