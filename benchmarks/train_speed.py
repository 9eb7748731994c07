"""Training speed: sec/kimg and peak GPU memory of full training steps (all phases, lazy-reg intervals,
augmentation, G_ema), KD off and on, fixed seeds, warm-up excluded.

The steps are the training loop's own (``training_run.build_training_run`` and ``training_step``) on random
images of the dataset's size, so the numbers are what train.py achieves minus data loading and ticks.

    python benchmarks/train_speed.py --cfg=paper256 --res=256 --kd=both --results            # GPU
    python benchmarks/train_speed.py --res=32 --cbase=4096 --cmax=128 --batch=16 --kd=both    # CPU
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import click
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from stylegan2_ada_kd.training.config import PRESETS, network_kwargs, optimizer_kwargs, resolve_preset  # noqa: E402
from stylegan2_ada_kd.training.record import steps_record  # noqa: E402
from stylegan2_ada_kd.training.run import TrainingRun, build_training_run, training_step  # noqa: E402

WARMUP_STEPS = 16  # one full lazy-regularisation cycle, cuDNN autotuning and the teacher's first call
PROMPTS = ['a photo', 'a painting', 'a sketch', 'a close-up photo']


def build_run(cfg, res, cbase, cmax, fp32, batch, device, loss_kwargs, augment_kwargs=None, augment_p=0.0):
    """The training loop's G, D, G_ema, augment pipe, loss and phases (``--cfg`` preset at ``res``, one
    process); ``loss_kwargs`` gets the preset's ``r1_gamma`` unless it sets one."""
    spec, G_kwargs, D_kwargs = network_kwargs(cfg, 1, res, cbase=cbase, cmax=cmax, fp32=fp32)
    record = steps_record(
        G_kwargs=G_kwargs,
        D_kwargs=D_kwargs,
        G_opt_kwargs=optimizer_kwargs(spec),
        D_opt_kwargs=optimizer_kwargs(spec),
        loss_kwargs={'r1_gamma': spec.gamma, **loss_kwargs},
        batch_size=batch,
        batch_gpu=batch,
        ema_kimg=spec.ema,
        ema_rampup=spec.ramp,
        augment_kwargs=augment_kwargs,
        augment_p=augment_p,
    )
    return build_training_run(record, device, dict(c_dim=0, img_resolution=res, img_channels=3))


def loss_config(kd, teacher):
    """The StyleGAN2 loss, or KD-DLGAN's with ``teacher`` and four generic prompts."""
    if not kd:
        return dict(class_name='stylegan2_ada_kd.training.loss.StyleGAN2Loss')
    return dict(class_name='stylegan2_ada_kd.kd.loss.KDLoss', teacher=teacher, prompts=PROMPTS)


def timed_steps(run: TrainingRun, batch_gpu, rounds, warmup=WARMUP_STEPS, seed=0):
    """``steps -> None``: run that many training steps (the loop's own, every phase due, G_ema, counters)
    on random reals ``[batch_gpu, 3, res, res]`` per round, after ``warmup`` untimed ones."""
    res, device = run.G.img_resolution, run.device
    gen = torch.Generator(device=device).manual_seed(seed)
    labels = lambda n: torch.zeros([n, 0], device=device)

    def steps(count):
        for _ in range(count):
            reals = [
                torch.rand([batch_gpu, 3, res, res], device=device, generator=gen) * 2 - 1
                for _ in range(rounds)
            ]
            training_step(run, reals, [labels(batch_gpu)] * rounds, labels)

    steps(warmup)
    return steps


def measure(kd, cfg, res, cbase, cmax, batch, batch_gpu, steps, teacher, augment_p, fp32):
    """``{'sec_per_kimg', 'sec_per_step', 'peak_gpu_mem_gb'}`` for one configuration."""
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    if batch is None:
        spec = resolve_preset(cfg, 1, res)
        batch, batch_gpu = spec.mb, batch_gpu or max(spec.mb // spec.ref_gpus, 1)
    batch_gpu = batch_gpu or batch
    pipe = (
        dict(class_name='stylegan2_ada_kd.augment.ada.AugmentPipe', preset='bgc') if augment_p > 0 else None
    )
    run = build_run(cfg, res, cbase, cmax, fp32, batch, device, loss_config(kd, teacher), pipe, augment_p)
    run_steps = timed_steps(run, batch_gpu, batch // batch_gpu)
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run_steps(steps)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    sec = (time.perf_counter() - start) / steps
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == 'cuda' else 0.0
    return dict(
        sec_per_step=sec,
        sec_per_kimg=sec / batch * 1000,
        peak_gpu_mem_gb=mem,
        batch=batch,
        batch_gpu=batch_gpu,
    )


def environment():
    commit = subprocess.run(
        ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True
    ).stdout.strip()
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = f'CPU ({os.cpu_count()} cores)'
    versions = f'torch {torch.__version__}, CUDA {torch.version.cuda}'
    return dict(device=device, versions=versions, python=platform.python_version(), commit=commit)


def append_result(name, env, result_text):
    line = (
        f'| {name} | {env["device"]} | {env["versions"]} | {env["python"]} | `python {" ".join(sys.argv)}` | '
        f'{result_text} | {env["commit"]} |\n'
    )
    with open(os.path.join(os.path.dirname(__file__), 'RESULTS.md'), 'a') as f:
        f.write(line)


@click.command()
@click.option('--cfg', type=click.Choice(sorted(PRESETS)), default='paper256', show_default=True)
@click.option('--res', type=int, default=256, show_default=True)
@click.option('--cbase', type=int, default=None)
@click.option('--cmax', type=int, default=None)
@click.option('--batch', type=int, default=None, help='Default: the preset batch')
@click.option('--batch-gpu', type=int, default=None, help='Default: the preset per-GPU batch')
@click.option('--steps', type=int, default=32, show_default=True)
@click.option('--kd', type=click.Choice(['off', 'on', 'both']), default='both', show_default=True)
@click.option('--teacher', default='random:ViT-B-32', show_default=True)
@click.option('--p', 'augment_p', type=float, default=0.2, show_default=True, help='Fixed ADA probability')
@click.option('--fp32', is_flag=True)
@click.option('--results', is_flag=True, help='Append a row to benchmarks/RESULTS.md')
def main(cfg, res, cbase, cmax, batch, batch_gpu, steps, kd, teacher, augment_p, fp32, results):
    env = environment()
    out = dict(
        env, cfg=cfg, res=res, cbase=cbase, cmax=cmax, steps=steps, teacher=teacher, augment_p=augment_p
    )
    for mode in ['off', 'on'] if kd == 'both' else [kd]:
        r = measure(mode == 'on', cfg, res, cbase, cmax, batch, batch_gpu, steps, teacher, augment_p, fp32)
        out[f'kd_{mode}'] = r
    if kd == 'both':
        out['kd_ratio'] = out['kd_on']['sec_per_kimg'] / out['kd_off']['sec_per_kimg']
    print(json.dumps(out))
    if results:
        gpu = torch.cuda.is_available()
        mem = lambda r: f', peak GPU memory {r["peak_gpu_mem_gb"]:.2f} GB' if gpu else ''
        parts = [
            f'KD {m}: {out[f"kd_{m}"]["sec_per_kimg"]:.2f} s/kimg{mem(out[f"kd_{m}"])}'
            for m in ('off', 'on')
            if f'kd_{m}' in out
        ]
        if 'kd_ratio' in out:
            parts.append(f'ratio {out["kd_ratio"]:.3f}')
        append_result('train_speed', env, '; '.join(parts))


if __name__ == '__main__':
    main()
