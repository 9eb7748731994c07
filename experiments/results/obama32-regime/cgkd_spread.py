"""How much CGKD's teacher rows C(t) vary across images: the anchors' mean pairwise cosine and the row spread
of the training reals (unaugmented and with DiffAugment), with the anchors built by KDLoss itself (16
k-means anchors, paper variant). Runs on the code before the centring (no ``center``) and after it.

    python experiments/results/obama32-regime/cgkd_spread.py --data=$EXP/obama32.zip \\
        --teacher=torchscript:$EXP/efficientnet64.pt
"""

import os
import sys

import click
import numpy as np
import torch
import torch.nn.functional as F

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..'))  # the repository
from dnnlib.util import construct_class_by_name  # noqa: E402
from stylegan2_ada_kd.augment.diffaugment import DiffAugment  # noqa: E402
from stylegan2_ada_kd.kd import loss as kd_loss  # noqa: E402

try:
    from benchmarks.grad_ratio import build_networks, dataset_kwargs
except ImportError:  # code before 3cabc30 (the "before" column): the tool lived in the KD package
    from stylegan2_ada_kd.kd.grad_ratio import build_networks, dataset_kwargs


@click.command()
@click.option('--data', required=True, help='Dataset zip')
@click.option('--teacher', required=True, help='--kd-teacher of an image-only teacher')
@click.option('--anchors', default=16, show_default=True)
def main(data: str, teacher: str, anchors: int) -> None:
    """Print the anchors' mean pairwise cosine and three spreads of the rows (see the module docstring)."""
    kwargs = dataset_kwargs(data)
    dataset = construct_class_by_name(**kwargs)
    G, D = build_networks(dataset, 2048, 64, 16)
    loss = kd_loss.KDLoss(
        torch.device('cpu'), G, D, None, teacher=teacher, anchor_dataset=kwargs, num_anchors=anchors
    )
    A, center = loss.anchors, getattr(loss, 'anchor_center', None)
    print(f'centred form: {center is not None}')
    iu = torch.triu_indices(anchors, anchors, 1)
    cos = F.normalize(A, dim=1) @ F.normalize(A, dim=1).t()
    print(f'anchors: mean pairwise cosine {float(cos[iu[0], iu[1]].mean()):.4f}')
    reals = torch.from_numpy(np.stack([dataset[i][0] for i in range(len(dataset))])).float() / 127.5 - 1
    torch.manual_seed(0)
    for name, x in [('unaugmented', reals), ('diffaug', DiffAugment()(reals))]:
        with torch.no_grad():
            t = F.normalize(loss.teacher.encode_image(x, variant='paper'), dim=1)
        rows = kd_loss.correlation(t, A) if center is None else kd_loss.correlation(t, A, center)
        across = float(rows.std(0, unbiased=False).mean())  # per anchor, std over images; mean over anchors
        within = float(rows.std(1, unbiased=False).mean())  # per image, std within its row; mean over images
        print(f'{name:12s} row spread across images {across:.4f}  within-row std {within:.4f}')


if __name__ == '__main__':
    main()
