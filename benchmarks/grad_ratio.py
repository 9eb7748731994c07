"""How strongly KD pulls on D at initialisation: ``Loss/kd/grad_ratio`` (``||g_kd|| / ||g_adv||`` on D's
trunk, see :meth:`KDLoss.tick_diagnostics`) for the KD settings of interest, on freshly built networks.

Networks come from train.py's ``--cfg=auto`` preset for the dataset's resolution with ``--cbase`` /
``--cmax``, one process (``--batch`` is the batch D scores per step); reals are dataset images, fakes G's
outputs. Every setting is measured on the same ``--repeats`` (G, D, batch) draws, and the table gives
the mean and standard deviation over them, per term and for both terms together. Example (the README's
numbers)::

    python -m benchmarks.grad_ratio --data=demo --cbase=4096 --cmax=128 --batch=32 \\
        --teacher=random:ViT-B-32 --repeats=4

(from the repository root). A measuring tool of the KD plugin, not part of it: the per-tick stat itself is
computed by KDLoss (``kd/loss.py``).
"""

from __future__ import annotations

import contextlib
import copy
import io

import click
import numpy as np
import torch

from dnnlib.util import construct_class_by_name
from stylegan2_ada_kd.augment.options import augment_kwargs
from stylegan2_ada_kd.kd.loss import KDLoss
from stylegan2_ada_kd.kd.prompts import GENERIC_PROMPTS
from stylegan2_ada_kd.kd.teacher import load_teacher
from stylegan2_ada_kd.kd.variants import resolve_kd_settings
from stylegan2_ada_kd.training.config import network_kwargs
from torch_utils.misc import uint8_to_unit

# label -> KDLoss settings; the per-term columns give AGKD alone and CGKD alone.
SETTINGS: dict[str, dict] = {
    'paper, cross terms on (p=1)': dict(variant='paper', cross_p=1.0),
    'paper, p=0.7 (expected)': dict(variant='paper', cross_p=0.7),
    'paper, cross terms off (p=0)': dict(variant='paper', cross_p=0.0),
    'official (x10, CGKD summed)': dict(variant='official', **resolve_kd_settings('official')),
}
COLUMNS = ('grad_ratio', 'grad_ratio_agkd', 'grad_ratio_cgkd')


def dataset_kwargs(data: str) -> dict:
    """Dataset kwargs of the ``--data`` folder or zip (``demo`` = the built-in demo set)."""
    if data == 'demo':
        from stylegan2_ada_kd.data.demo import demo_dataset_path

        data = demo_dataset_path()
    return dict(class_name='stylegan2_ada_kd.data.dataset.ImageFolderDataset', path=data)


def build_networks(dataset: torch.utils.data.Dataset, cbase: int, cmax: int, batch: int) -> tuple:
    """G and D (fp32, train mode, frozen as the loop leaves them between phases) of the ``auto`` preset."""
    res = dataset.resolution
    spec, G_kwargs, D_kwargs = network_kwargs('auto', 1, res, cbase=cbase, cmax=cmax, fp32=True)
    D_kwargs.epilogue_kwargs.mbstd_group_size = min(spec.mbstd, batch)
    common = dict(c_dim=dataset.label_dim, img_resolution=res, img_channels=dataset.num_channels)
    G = construct_class_by_name(**G_kwargs, **common).train().requires_grad_(False)
    D = construct_class_by_name(**D_kwargs, **common).train().requires_grad_(False)
    return G, D


def measure(
    data: str = 'demo',  # Dataset folder or zip, or 'demo'.
    cbase: int = 4096,  # --cbase.
    cmax: int = 128,  # --cmax.
    batch: int = 32,  # Images per batch (reals and fakes each).
    teacher: str = 'random:ViT-B-32',  # --kd-teacher.
    teacher_weights: str | None = None,  # --kd-teacher-weights.
    aug: str = 'noaug',  # 'noaug' (also ADA at initialisation, p = 0) or 'diffaug'.
    repeats: int = 4,  # Independent (G, D, batch) draws.
    seed: int = 0,  # Seed of the first draw.
) -> dict[str, dict[str, list[float]]]:
    """``{setting label: {'grad_ratio' | 'grad_ratio_agkd' | 'grad_ratio_cgkd': [one value per repeat]}}``."""
    data_kwargs = dataset_kwargs(data)
    dataset = construct_class_by_name(**data_kwargs)
    torch.manual_seed(seed)  # a 'random:' teacher is then the same in every measurement
    has_text = load_teacher(teacher, teacher_weights).has_text  # built (and announced) once, before any draw
    anchors = dict(prompts=list(GENERIC_PROMPTS)) if has_text else dict(anchor_dataset=data_kwargs)
    augment = augment_kwargs(aug, {})['augment_kwargs']
    out: dict[str, dict[str, list[float]]] = {label: {} for label in SETTINGS}
    for rep in range(repeats):
        torch.manual_seed(seed + rep)
        G, D = build_networks(dataset, cbase, cmax, batch)
        idx = np.random.RandomState(seed + rep).choice(len(dataset), batch, replace=len(dataset) < batch)
        real = uint8_to_unit(torch.from_numpy(np.stack([dataset[int(i)][0] for i in idx])))
        c = torch.zeros([batch, dataset.label_dim])
        z = torch.randn([batch, G.z_dim])
        pipe = None if augment is None else construct_class_by_name(**augment).train().requires_grad_(False)
        for label, settings in SETTINGS.items():
            torch.manual_seed(seed + rep)  # the same head initialisation for every paper setting
            with contextlib.redirect_stdout(io.StringIO()):  # the random-teacher banner: once is enough
                kw = dict(teacher=teacher, teacher_weights=teacher_weights, **anchors, **settings)
                loss = KDLoss(torch.device('cpu'), G, copy.deepcopy(D), pipe, **kw)
            torch.manual_seed(seed + rep + 1000)  # the same G noise and augmentation for every setting
            for name, stat in loss.tick_diagnostics(real, c, z, c).items():
                out[label].setdefault(name.split('/')[-1], []).append(stat['mean'])
    return out


def format_table(results: dict[str, dict[str, list[float]]]) -> str:
    """A text table: one row per setting, mean +- std (over the repeats) of the three ratios."""
    lines = [f'{"setting":32s}' + ''.join(f'{col:>22s}' for col in COLUMNS)]
    for label, stats in results.items():
        cells = [f'{np.mean(stats[col]):11.1f} +- {np.std(stats[col]):6.1f}' for col in COLUMNS]
        lines.append(f'{label:32s}' + ''.join(f'{cell:>22s}' for cell in cells))
    return '\n'.join(lines)


@click.command(help=__doc__, context_settings=dict(terminal_width=100, max_content_width=100))
@click.option('--data', default='demo', show_default=True, metavar='PATH', help='Dataset folder or zip')
@click.option('--cbase', type=click.IntRange(min=1), default=4096, show_default=True, metavar='INT')
@click.option('--cmax', type=click.IntRange(min=1), default=128, show_default=True, metavar='INT')
@click.option('--batch', type=click.IntRange(min=2), default=32, show_default=True, metavar='INT')
@click.option('--teacher', default='random:ViT-B-32', show_default=True, metavar='SPEC', help='--kd-teacher')
@click.option('--teacher-weights', metavar='PATH', help='--kd-teacher-weights')
@click.option('--aug', type=click.Choice(['noaug', 'diffaug']), default='noaug', show_default=True)
@click.option('--repeats', type=click.IntRange(min=1), default=4, show_default=True, metavar='INT')
@click.option('--seed', type=int, default=0, show_default=True, metavar='INT')
def main(**opts: object) -> None:
    """Print the table of gradient ratios at initialisation."""
    print(format_table(measure(**opts)))


if __name__ == '__main__':
    main()
