"""The public run API: build everything a training step needs in the one valid order, and run one step.

:func:`build_training_run` constructs G, D, G_ema, the augment pipe, the ADA controller, the loss and the
optimizer phases, resumes from a snapshot if asked, and broadcasts the networks across processes. The
order is fixed because the loss may attach trainable modules to the networks (a plugin head through
``D.attach_head``): it must run before the optimizers are built (or the head would never train; the
phases check it) and before the broadcast (or the head would differ between processes).
:func:`training_step` runs every phase due at the step over its accumulation rounds (lazy regularisation,
StyleGAN2 Sec. 3.1), then updates G_ema, the counters and ADA's ``p``. The training loop and the
benchmarks use both; the loop adds data loading, ticks, images and snapshots around them.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import torch

from dnnlib.util import construct_class_by_name
from stylegan2_ada_kd import checkpoint
from stylegan2_ada_kd.training import memory
from stylegan2_ada_kd.training.contracts import Loss
from stylegan2_ada_kd.training.record import RunRecord
from torch_utils import distributed, training_stats


@dataclasses.dataclass
class Phase:
    """One optimisation phase: which module steps, with which optimizer, how often, at what gain."""

    name: str
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int
    start_event: torch.cuda.Event | None = None
    end_event: torch.cuda.Event | None = None


@dataclasses.dataclass
class Progress:
    """Counters that exact resume restores."""

    cur_nimg: int = 0
    cur_tick: int = 0
    batch_idx: int = 0
    tick_start_nimg: int = 0


@dataclasses.dataclass
class TrainingRun:
    """What :func:`build_training_run` built: the modules, the phases, the counters and the step settings."""

    device: torch.device  # Where the networks and the loss live.
    G: torch.nn.Module  # Generator being trained.
    D: torch.nn.Module  # Discriminator being trained (with any plugin heads).
    G_ema: torch.nn.Module  # Moving average of G.
    augment_pipe: torch.nn.Module | None  # What D sees of every image; None = no augmentation.
    has_p: bool  # Whether the augment pipe has a probability (the buffer augment_pipe.p).
    ada: Any  # ADA controller (update/absorb/interval/stat); None = p stays fixed.
    ada_stats: training_stats.Collector | None  # The stat the ADA controller reads, per interval.
    loss: Loss  # The loss (the contract stylegan2_ada_kd.training.contracts.Loss).
    phases: list[Phase]  # Optimisation phases in step order.
    progress: Progress  # Images shown, ticks, steps.
    record: RunRecord  # The options it was built from (batch_size, ema_kimg, ema_rampup for the steps).
    resumed: dict | None = None  # Resume state of an exact resume (for checkpoint.restore_rng); else None.

    @property
    def nets(self) -> dict[str, torch.nn.Module | None]:
        """The modules that snapshots hold, by snapshot key."""
        return dict(G=self.G, D=self.D, G_ema=self.G_ema, augment_pipe=self.augment_pipe)

    def augment_probability(self) -> float | None:
        """The augmentation probability now: ``p`` of the pipe, 0 without a pipe, None for a pipe without
        a probability (DiffAugment)."""
        if self.augment_pipe is None:
            return 0.0
        return float(self.augment_pipe.p) if self.has_p else None

    def close(self) -> None:
        """Stop collecting the ADA statistic."""
        if self.ada_stats is not None:
            self.ada_stats.close()


def build_training_run(
    record: RunRecord,  # The run's options: networks, optimizers, loss, augmentation, EMA, resume.
    device: torch.device,  # This process's device.
    common: dict,  # c_dim, img_resolution, img_channels of the training set, for both networks.
    rank: int = 0,  # This process's rank.
) -> TrainingRun:
    """Build the networks, augmentation, loss and phases in the one valid order, resume, broadcast.

    Raises ``TypeError`` when ``loss_kwargs`` builds no :class:`stylegan2_ada_kd.training.contracts.Loss`.
    """
    G = construct_class_by_name(**record.G_kwargs, **common).train().requires_grad_(False).to(device)
    D = construct_class_by_name(**record.D_kwargs, **common).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = None
    if record.augment_kwargs is not None:
        augment_pipe = (
            construct_class_by_name(**record.augment_kwargs).train().requires_grad_(False).to(device)
        )
        if record.augment_p is not None:
            augment_pipe.p.copy_(torch.as_tensor(record.augment_p))
    ada = None
    if record.ada_kwargs and augment_pipe is not None:
        ada = construct_class_by_name(**record.ada_kwargs, batch_size=record.batch_size)
    # The loss may add trainable modules to G or D (a plugin head), so it comes before the optimizers.
    loss = construct_class_by_name(device=device, G=G, D=D, augment_pipe=augment_pipe, **record.loss_kwargs)
    if not isinstance(loss, Loss):
        raise TypeError(f'{type(loss).__name__} is not a {Loss.__module__}.Loss (loss_kwargs)')
    run = TrainingRun(
        device=device,
        G=G,
        D=D,
        G_ema=G_ema,
        augment_pipe=augment_pipe,
        has_p=record.augment_p is not None,
        ada=ada,
        ada_stats=training_stats.Collector([ada.stat]) if ada is not None else None,
        loss=loss,
        phases=build_phases(G, D, record),
        progress=Progress(),
        record=record,
    )
    if record.resume_pkl:
        run.resumed = checkpoint.load_for_training(
            record.resume_pkl, run.nets, run.phases, loss, ada, run.progress, rank
        )
    elif record.init_pkl:
        checkpoint.warm_start(record.init_pkl, run.nets, rank)
    for module in run.nets.values():
        if module is not None:
            distributed.broadcast_module(module)
    return run


def build_phases(G: torch.nn.Module, D: torch.nn.Module, record: RunRecord) -> list[Phase]:
    """Main and regularisation phases sharing one optimizer per network (lazy reg., SG2 Sec. 3.1).

    Raises ``RuntimeError`` when a parameter of G or D is in no optimizer (:func:`check_optimizer_covers`).
    """
    phases = []
    for name, module, opt_kwargs, interval in [
        ('G', G, record.G_opt_kwargs, record.G_reg_interval),
        ('D', D, record.D_opt_kwargs, record.D_reg_interval),
    ]:
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
        check_optimizer_covers(phase)
    if torch.cuda.is_available():
        for phase in phases:
            phase.start_event = torch.cuda.Event(enable_timing=True)
            phase.end_event = torch.cuda.Event(enable_timing=True)
    return phases


def check_optimizer_covers(phase: Phase) -> None:
    """Every parameter of the phase's module must be in its optimizer (a head attached after the optimizer
    was built would silently never train); raises ``RuntimeError`` naming the missing ones."""
    held = {id(p) for group in phase.opt.param_groups for p in group['params']}
    missing = [name for name, p in phase.module.named_parameters() if id(p) not in held]
    if missing:
        raise RuntimeError(
            f'{phase.name}: parameters {missing[:5]} are not in the optimizer; modules attached to the '
            'networks (plugin heads) must exist before the optimizers are built'
        )


def training_step(
    run: TrainingRun,
    reals: list[torch.Tensor],
    real_cs: list[torch.Tensor],
    sample_labels: Callable[[int], torch.Tensor],
) -> None:
    """One training step on this process's share of the batch, as ``len(reals)`` accumulation rounds.

    ``reals``: per round, images ``[batch_gpu, C, H, W]`` float32 in ``[-1, 1]`` on ``run.device``;
    ``real_cs``: their labels ``[batch_gpu, c_dim]``; ``sample_labels(n)``: ``[n, c_dim]`` labels for the
    fakes. Runs every phase due at ``run.progress.batch_idx`` with fresh latents, then updates G_ema,
    advances ``run.progress`` by one step of ``run.record.batch_size`` images, and every ``run.ada.interval``
    steps adapts the augment pipe's ``p``. The latents and labels come from the global RNGs. A CUDA
    out-of-memory error comes out as :class:`.memory.StepOutOfMemory`, saying what to pass instead.
    """
    batch_gpu, rounds, progress = len(reals[0]), len(reals), run.progress
    for phase in run.phases:
        if progress.batch_idx % phase.interval != 0:
            continue
        gen_zs = torch.randn([batch_gpu * rounds, run.G.z_dim], device=run.device).split(batch_gpu)
        gen_cs = sample_labels(batch_gpu * rounds).split(batch_gpu)
        try:
            _run_phase(phase, run.loss, reals, real_cs, gen_zs, gen_cs, progress.cur_nimg)
        except RuntimeError as err:
            memory.raise_with_advice(err, phase.name, batch_gpu, run.D)
    r = run.record
    _update_ema(run.G, run.G_ema, ema_beta(r.batch_size, progress.cur_nimg, r.ema_kimg, r.ema_rampup))
    progress.cur_nimg += r.batch_size
    progress.batch_idx += 1
    if run.ada is not None and progress.batch_idx % run.ada.interval == 0:
        run.ada.update(run.augment_pipe, run.ada_stats.collect(run.device))


def _run_phase(
    phase: Phase, loss: Loss, reals: list, real_cs: list, gen_zs: list, gen_cs: list, cur_nimg: int
) -> None:
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
