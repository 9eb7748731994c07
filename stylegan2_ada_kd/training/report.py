"""What the training loop shows and writes besides snapshots: the setup summary, the tick line and tick
statistics, the image grids and the op implementations in use (metrics: :mod:`metrics.evaluation`)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from stylegan2_ada_kd.training.contracts import Augmentation, Loss
from torch_utils import distributed, module_summary, run_io


@torch.no_grad()
def generate_grid(
    G_ema: torch.nn.Module, grid_z: torch.Tensor, grid_c: torch.Tensor, batch_gpu: int
) -> torch.Tensor:
    """Images ``[gw * gh, C, H, W]`` of the fixed snapshot latents (const noise)."""
    chunks = [
        G_ema(z, c, noise_mode='const').cpu()
        for z, c in zip(grid_z.split(batch_gpu), grid_c.split(batch_gpu))
    ]
    return torch.cat(chunks)


def tick_line(progress: Any, stats: dict, augment: str | None) -> str:
    """The console status line of one tick; ``augment`` is :func:`augment_status`."""
    fields = [
        f'tick {progress.cur_tick:<5d}',
        f'kimg {progress.cur_nimg / 1e3:<8.1f}',
        f'time {stats["Timing/total_sec"]["mean"]:<8.0f}',
        f'sec/tick {stats["Timing/sec_per_tick"]["mean"]:<7.1f}',
        f'sec/kimg {stats["Timing/sec_per_kimg"]["mean"]:<7.2f}',
        f'maintenance {stats["Timing/maintenance_sec"]["mean"]:<6.1f}',
        f'cpumem {stats["Resources/cpu_mem_gb"]["mean"]:<6.2f}',
        f'gpumem {stats["Resources/peak_gpu_mem_gb"]["mean"]:<6.2f}',
    ]
    if augment is not None:
        fields.append(f'augment {augment}')
    return ' '.join(fields)


def augment_status(augment_pipe: Augmentation | None) -> str | None:
    """What the tick line shows after 'augment': the pipe's :meth:`Augmentation.tick_status` (the
    probability p, or DiffAugment's policy); None without augmentation."""
    return None if augment_pipe is None else augment_pipe.tick_status()


def tick_stats(progress: Any, timing: dict, augment_p: float | None, device: torch.device) -> dict:
    """Progress/Timing/Resources entries of one tick as ``{name: {'num', 'mean', 'std'}}``;
    ``Progress/augment`` only when the augmentation has a probability (``augment_p`` not None)."""
    values = {
        'Progress/tick': progress.cur_tick,
        'Progress/kimg': progress.cur_nimg / 1e3,
        'Progress/augment': augment_p,
        'Timing/total_sec': timing['total'],
        'Timing/sec_per_tick': timing['tick'],
        'Timing/sec_per_kimg': timing['tick'] / max(timing['kimg'], 1e-8),
        'Timing/maintenance_sec': timing['maintenance'],
        'Timing/total_hours': timing['total'] / 3600,
        'Timing/total_days': timing['total'] / 86400,
        'Resources/cpu_mem_gb': cpu_mem_gb(),
        'Resources/peak_gpu_mem_gb': (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else 0.0
        ),
    }
    return {k: {'num': 1, 'mean': float(v), 'std': 0.0} for k, v in values.items() if v is not None}


def cpu_mem_gb() -> float:
    """Resident memory of this process in GB (Linux /proc; 0 elsewhere)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**30
    except (OSError, ValueError, IndexError):
        return 0.0


def report_ops(run_dir: str, rank: int, device: torch.device) -> None:
    """Decide the op implementations once (rank 0 builds/loads the CUDA plugins first), log them and
    record them in ``custom_ops.json`` beside training_options.json."""
    from torch_utils import custom_ops

    if rank != 0:
        distributed.barrier()
    info = custom_ops.active_impl(device)
    if rank == 0:
        distributed.barrier()
        ops = info['ops']
        print(
            f'Custom ops: upfirdn2d={ops["upfirdn2d"]}, bias_act={ops["bias_act"]} (SG2KD_OPS={info["mode"]})'
        )
        with open(os.path.join(run_dir, 'custom_ops.json'), 'w') as f:
            json.dump(info, f, indent=2)


def print_setup(
    dataset: torch.utils.data.Dataset,
    G: torch.nn.Module,
    D: torch.nn.Module,
    augment_pipe: torch.nn.Module | None,
    loss: Loss,
    batch_gpu: int,
    device: torch.device,
) -> None:
    """What is being trained, for log.txt: the data, the networks (sizes, and a layer table of one forward
    pass of ``batch_gpu`` samples on ``device``), the augmentation and the loss."""
    count = lambda module: sum(p.numel() for p in module.parameters())
    shape = 'x'.join(str(v) for v in dataset.image_shape)
    num = len(dataset.files)
    mirrored = f' ({len(dataset)} with x-flips)' if len(dataset) != num else ''
    print(f'Dataset: {dataset.name}: {num} images{mirrored}, {shape}, label dim {dataset.label_dim}')
    heads = list(getattr(D, 'heads', {}))
    print(
        f'Networks: G {count(G):,} parameters, D {count(D):,}'
        + (f' (heads: {", ".join(heads)})' if heads else '')
    )
    z = torch.zeros([batch_gpu, G.z_dim], device=device)
    c = torch.zeros([batch_gpu, G.c_dim], device=device)
    print(module_summary.format_table('\nGenerator', module_summary.summarize(G, [z, c])))
    img = torch.zeros([batch_gpu, *dataset.image_shape], device=device)
    print(module_summary.format_table('\nDiscriminator', module_summary.summarize(D, [img, c])) + '\n')
    print(f'Augmentation: {augment_pipe if augment_pipe is not None else "none"}'.replace('\n', ' '))
    print(f'Loss: {loss.describe()}')


def init_grid(
    run_dir: str,
    dataset: torch.utils.data.Dataset,
    G_ema: torch.nn.Module,
    device: torch.device,
    fresh: bool,
    batch_gpu: int,
    size: list[int] | None = None,
) -> dict:
    """Write reals.png (and fakes_init.png on a fresh start) as ``size`` = [columns, rows] grids (None =
    about 7680x4320 pixels); return the grid's ``size`` and its fixed latents ``z`` and labels ``c``."""
    gw, gh = size or run_io.grid_size(dataset.resolution)
    labels = np.stack([dataset.get_label(i) for i in range(len(dataset))])
    indices = run_io.choose_grid_indices(labels, gw, gh)
    reals = np.stack([dataset[int(i)][0] for i in indices])
    run_io.save_image_grid(reals, os.path.join(run_dir, 'reals.png'), (0, 255), (gw, gh))
    gen = torch.Generator().manual_seed(123)
    grid = dict(
        size=(gw, gh),
        z=torch.randn([gw * gh, G_ema.z_dim], generator=gen).to(device),
        c=torch.from_numpy(labels[indices]).to(device),
    )
    if fresh:
        images = generate_grid(G_ema, grid['z'], grid['c'], batch_gpu)
        run_io.save_image_grid(images, os.path.join(run_dir, 'fakes_init.png'), (-1, 1), (gw, gh))
    return grid
