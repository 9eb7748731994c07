"""Time one training step (all four phases, lazy-reg intervals respected) with KD on vs off.

Both runs use the same G, D, batch and augmentation; only the loss class differs. The teacher may be
random-init (``random:ViT-B-32``): its cost does not depend on its weights.

    python benchmarks/kd_overhead.py --res=32 --cbase=4096 --cmax=128 --batch=16 --steps=8
    python benchmarks/kd_overhead.py --res=256 --cfg=paper256 --batch=64 --batch-gpu=16 --steps=40   # GPU

Prints a JSON line with sec/step for both and their ratio; ``--results`` appends a row to RESULTS.md.
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


def build(cfg, res, cbase, cmax, device):
    spec = resolve_preset(cfg, 1, res)
    G_kwargs, D_kwargs = network_kwargs(spec, cfg, fp32=False, nhwc=False, freezed=0)
    for kw in (G_kwargs, D_kwargs):
        kw.pop('class_name')
    if cbase:
        G_kwargs.synthesis_kwargs.channel_base = D_kwargs.channel_base = cbase
    if cmax:
        G_kwargs.synthesis_kwargs.channel_max = D_kwargs.channel_max = cmax
    G = (
        Generator(c_dim=0, img_resolution=res, img_channels=3, **G_kwargs)
        .train()
        .requires_grad_(False)
        .to(device)
    )
    D = (
        Discriminator(c_dim=0, img_resolution=res, img_channels=3, **D_kwargs)
        .train()
        .requires_grad_(False)
        .to(device)
    )
    return spec, G, D


def time_steps(loss, G, D, spec, batch, batch_gpu, steps, device):
    opt = EasyDict(class_name='torch.optim.Adam', lr=spec.lrate, betas=[0.0, 0.99], eps=1e-8)
    phases = _build_phases(G, D, opt, opt, 4, 16)
    rounds = batch // batch_gpu
    res = G.img_resolution

    def step(batch_idx):
        reals = [torch.rand([batch_gpu, 3, res, res], device=device) * 2 - 1 for _ in range(rounds)]
        cs = [torch.zeros([batch_gpu, 0], device=device)] * rounds
        for phase in phases:
            if batch_idx % phase.interval == 0:
                zs = list(torch.randn([batch, G.z_dim], device=device).split(batch_gpu))
                _run_phase(phase, loss, reals, cs, zs, cs, 0)

    warmup = 16  # covers one full lazy-regularisation cycle, cudnn autotuning and the teacher's first call
    for i in range(warmup):
        step(i)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


@click.command()
@click.option('--cfg', type=click.Choice(sorted(PRESETS)), default='auto')
@click.option('--res', type=int, default=32)
@click.option('--cbase', type=int, default=None)
@click.option('--cmax', type=int, default=None)
@click.option('--batch', type=int, default=16)
@click.option('--batch-gpu', type=int, default=None)
@click.option('--steps', type=int, default=16)
@click.option('--teacher', default='random:ViT-B-32')
@click.option('--results', is_flag=True, help='Append a row to benchmarks/RESULTS.md')
def main(cfg, res, cbase, cmax, batch, batch_gpu, steps, teacher, results):
    from stylegan2_ada_kd.kd.loss import KDLoss
    from stylegan2_ada_kd.loss import StyleGAN2Loss

    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    torch.backends.cudnn.benchmark = True
    batch_gpu = batch_gpu or batch
    out = {}
    for name in ('off', 'on'):
        torch.manual_seed(0)
        spec, G, D = build(cfg, res, cbase, cmax, device)
        kw = dict(device=device, G=G, D=D, augment_pipe=None, r1_gamma=spec.gamma)
        if name == 'on':
            loss = KDLoss(**kw, teacher=teacher, prompts=['a photo', 'a drawing', 'a painting'])
        else:
            loss = StyleGAN2Loss(**kw)
        out[f'sec_per_step_kd_{name}'] = time_steps(loss, G, D, spec, batch, batch_gpu, steps, device)
    out['ratio'] = out['sec_per_step_kd_on'] / out['sec_per_step_kd_off']
    commit = subprocess.run(
        ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True
    ).stdout.strip()
    device_name = torch.cuda.get_device_name() if device.type == 'cuda' else f'CPU ({os.cpu_count()} cores)'
    out.update(
        device=device_name,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        commit=commit,
        cfg=cfg,
        res=res,
        cbase=cbase,
        cmax=cmax,
        batch=batch,
        batch_gpu=batch_gpu,
        teacher=teacher,
    )
    print(json.dumps(out))
    if results:
        line = (
            f'| kd_overhead | {device_name} | torch {torch.__version__} | {platform.python_version()} | '
            f'`{" ".join(sys.argv)}` | off {out["sec_per_step_kd_off"]:.3f} s/step, on '
            f'{out["sec_per_step_kd_on"]:.3f} s/step, ratio {out["ratio"]:.3f} | {commit} |\n'
        )
        with open(os.path.join(os.path.dirname(__file__), 'RESULTS.md'), 'a') as f:
            f.write(line)


if __name__ == '__main__':
    main()
