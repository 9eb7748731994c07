"""Training speed: sec/kimg and peak GPU memory of full training steps (all phases, lazy-reg intervals,
augmentation), KD off and on, fixed seeds, warm-up excluded.

The steps are the training loop's own (`_build_phases`, `_run_phase`) on random images of the
dataset's size, so the numbers are what train.py achieves minus data loading and ticks.

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

from dnnlib import EasyDict  # noqa: E402
from stylegan2_ada_kd.networks import Discriminator, Generator  # noqa: E402
from stylegan2_ada_kd.train_config import PRESETS, network_kwargs, resolve_preset  # noqa: E402
from stylegan2_ada_kd.training_loop import _build_phases, _run_phase  # noqa: E402

WARMUP_STEPS = 16  # one full lazy-regularisation cycle, cuDNN autotuning and the teacher's first call


def build_nets(cfg, res, cbase, cmax, fp32, device):
    spec = resolve_preset(cfg, 1, res)
    G_kwargs, D_kwargs = network_kwargs(spec, cfg, fp32=fp32, nhwc=False, freezed=0)
    for kw in (G_kwargs, D_kwargs):
        kw.pop('class_name')
    if cbase:
        G_kwargs.synthesis_kwargs.channel_base = D_kwargs.channel_base = cbase
    if cmax:
        G_kwargs.synthesis_kwargs.channel_max = D_kwargs.channel_max = cmax
    G = Generator(c_dim=0, img_resolution=res, img_channels=3, **G_kwargs)
    D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, **D_kwargs)
    return spec, G.train().requires_grad_(False).to(device), D.train().requires_grad_(False).to(device)


def build_loss(kd, teacher, spec, G, D, augment_p, device):
    from stylegan2_ada_kd.augment import AugmentPipe

    pipe = None
    if augment_p > 0:
        pipe = AugmentPipe(preset='bgc').train().requires_grad_(False).to(device)
        pipe.p.copy_(torch.as_tensor(augment_p))
    kw = dict(device=device, G=G, D=D, augment_pipe=pipe, r1_gamma=spec.gamma)
    if not kd:
        from stylegan2_ada_kd.loss import StyleGAN2Loss

        return StyleGAN2Loss(**kw)
    from stylegan2_ada_kd.kd.loss import KDLoss

    return KDLoss(**kw, teacher=teacher, prompts=['a photo', 'a painting', 'a sketch', 'a close-up photo'])


def seconds_per_step(loss, G, D, spec, batch, batch_gpu, steps, device):
    """Mean wall time of one training step after WARMUP_STEPS, with the step's own phase schedule."""
    opt = EasyDict(class_name='torch.optim.Adam', lr=spec.lrate, betas=[0.0, 0.99], eps=1e-8)
    phases = _build_phases(G, D, opt, opt, 4, 16)
    rounds = batch // batch_gpu
    res = G.img_resolution
    gen = torch.Generator(device=device).manual_seed(0)

    def step(batch_idx):
        reals = [
            torch.rand([batch_gpu, 3, res, res], device=device, generator=gen) * 2 - 1 for _ in range(rounds)
        ]
        cs = [torch.zeros([batch_gpu, 0], device=device)] * rounds
        for phase in phases:
            if batch_idx % phase.interval == 0:
                zs = list(torch.randn([batch, G.z_dim], device=device, generator=gen).split(batch_gpu))
                _run_phase(phase, loss, reals, cs, zs, cs, 0)

    for i in range(WARMUP_STEPS):
        step(i)
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(kd, cfg, res, cbase, cmax, batch, batch_gpu, steps, teacher, augment_p, fp32):
    """``{'sec_per_kimg', 'sec_per_step', 'peak_gpu_mem_gb'}`` for one configuration."""
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    spec, G, D = build_nets(cfg, res, cbase, cmax, fp32, device)
    if batch is None:
        batch, batch_gpu = spec.mb, batch_gpu or max(spec.mb // spec.ref_gpus, 1)
    batch_gpu = batch_gpu or batch
    loss = build_loss(kd, teacher, spec, G, D, augment_p, device)
    sec = seconds_per_step(loss, G, D, spec, batch, batch_gpu, steps, device)
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
