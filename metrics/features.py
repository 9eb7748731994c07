"""Detector features of real and generated images, sharded over processes, plus the on-disk cache of the
real-image statistics.

Work is cut into global batches of ``batch_size`` items; process ``rank`` of ``world`` handles batches
``rank, rank + world, ...`` and the results are gathered in batch order, so every process ends with the same
arrays and the values do not depend on the number of processes.

Generated images are deterministic: batch ``b`` draws its latents, labels and noise from seeds derived from
``(seed, b)``, so re-evaluating a network gives the same numbers (the global RNGs are left untouched).

Real statistics are cached under ``make_cache_dir_path('gan-metrics')`` in an ``.npz`` whose name carries a
hash of the dataset content (file names, sizes and sampled bytes; CRC-32s for zips), the served items
(mirroring, item cap), the detector identity and the kind of statistics.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import time
import zipfile
from collections.abc import Iterator
from typing import Callable

import numpy as np
import torch

import dnnlib
from torch_utils import distributed
from torch_utils.misc import unit_to_uint8

CACHE_VERSION = 1
_SAMPLE_BYTES = 1024  # Bytes read at the start, middle and end of each image file for the content hash.
GEN_CHUNK = 8  # Images generated per generator call.


def format_time(seconds: float) -> str:
    """Human-readable duration: ``'12s'``, ``'1m 02s'``, ``'3h 04m 05s'``, ``'2d 03h 04m'``."""
    s = int(round(seconds))
    if s < 60:
        return f'{s}s'
    if s < 3600:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 86400:
        return f'{s // 3600}h {s // 60 % 60:02d}m {s % 60:02d}s'
    return f'{s // 86400}d {s // 3600 % 24:02d}h {s // 60 % 60:02d}m'


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """Generator output float ``[N, C, H, W]`` in about [-1, 1] -> uint8 ``[N, 3, H, W]`` (C = 1 repeated)."""
    out = unit_to_uint8(images)
    return out.repeat(1, 3, 1, 1) if out.shape[1] == 1 else out


def _file_sample_digest(path: str) -> tuple[int, str]:
    """(size, sha1 of the first, middle and last ``_SAMPLE_BYTES``) of a file."""
    size = os.path.getsize(path)
    h = hashlib.sha1()
    with open(path, 'rb') as f:
        for offset in sorted({0, max(0, size // 2 - _SAMPLE_BYTES // 2), max(0, size - _SAMPLE_BYTES)}):
            f.seek(offset)
            h.update(f.read(_SAMPLE_BYTES))
    return size, h.hexdigest()


def dataset_fingerprint(path: str, names: list) -> str:
    """Content hash (hex) of the images ``names`` of a folder or zip dataset at ``path``.

    A zip contributes each member's name, size and CRC-32 from its central directory (exact, no reading of
    the data); a folder each file's name, size and a sample of its bytes (start, middle and end). Renaming
    or moving the dataset keeps the hash; changing, adding or removing an image changes it.
    """
    path = os.path.abspath(os.path.expanduser(path))
    h = hashlib.sha256()
    if os.path.isfile(path):
        with zipfile.ZipFile(path) as zf:
            for name in names:
                info = zf.getinfo(name)
                h.update(f'{name}\0{info.file_size}\0{info.CRC}\n'.encode())
    else:
        for name in names:
            size, sample = _file_sample_digest(os.path.join(path, *name.split('/')))
            h.update(f'{name}\0{size}\0{sample}\n'.encode())
    return h.hexdigest()


def item_indices(num_items: int, max_items: int | None, seed: int = 0) -> np.ndarray:
    """Dataset indices to use: all of them, or a seeded random ``max_items`` of them in ascending order."""
    if max_items is None or num_items <= max_items:
        return np.arange(num_items, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(num_items, size=max_items, replace=False))


class _Progress:
    """Prints ``label: done/total (pct%) elapsed`` on rank 0 at every 10% step (when enabled)."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.start = time.time()
        self.next_step = 1

    def update(self, done: int) -> None:
        """Report ``done`` items processed by all ranks (estimated from this rank's count)."""
        if not self.enabled or self.total <= 0:
            return
        done = min(done, self.total)
        if done * 10 >= self.next_step * self.total:
            self.next_step = done * 10 // self.total + 1
            pct = 100 * done // self.total
            print(
                f'{self.label}: {done}/{self.total} ({pct}%) {format_time(time.time() - self.start)}',
                flush=True,
            )


def _collect(
    batches: Iterator[tuple[int, torch.Tensor]],
    detect: Callable[[torch.Tensor], torch.Tensor],
    moments: bool,
    progress: _Progress,
) -> object:
    """Run ``detect`` over this rank's batches; gather ``(batch, features)`` pieces or moment sums."""
    world = distributed.world_size()
    parts, n, total, gram, done = [], 0, None, None, 0
    for b, images in batches:
        feats = detect(images).cpu().numpy()
        done += len(feats)
        progress.update(done * world)
        if moments:
            x = feats.astype(np.float64)
            total = x.sum(axis=0) if total is None else total + x.sum(axis=0)
            gram = x.T @ x if gram is None else gram + x.T @ x
            n += len(x)
        else:
            parts.append((b, feats))
    gathered = distributed.gather_objects((n, total, gram) if moments else parts)
    if moments:
        return gathered
    return [p for rank_parts in gathered for p in rank_parts]


def _finish_features(parts: list) -> np.ndarray:
    """Concatenate gathered ``(batch, [n, F])`` pieces in batch order -> ``[N, F]`` float32."""
    parts = sorted(parts, key=lambda p: p[0])
    return np.concatenate([p[1] for p in parts]).astype(np.float32)


def _finish_moments(gathered: list) -> dict[str, np.ndarray]:
    """Combine per-rank ``(n, sum, X^T X)`` into ``mu [F]``, ``sigma [F, F]`` (float64) and ``num``."""
    pieces = [g for g in gathered if g[0] > 0]
    n = sum(p[0] for p in pieces)
    if n < 2:
        raise ValueError(f'FID statistics need at least 2 images; got {n}')
    mu = sum(p[1] for p in pieces) / n
    sigma = (sum(p[2] for p in pieces) - n * np.outer(mu, mu)) / (n - 1)
    return {'mu': mu, 'sigma': sigma, 'num': np.array(n)}


def extract(
    batches: Iterator[tuple[int, torch.Tensor]],
    detect: Callable[[torch.Tensor], torch.Tensor],
    kind: str,
    total: int,
    label: str,
    progress: bool,
) -> dict[str, np.ndarray]:
    """Features of this rank's ``(global batch index, uint8 [n, 3, H, W])`` batches, gathered over ranks.

    ``kind='features'`` -> ``{'features': [N, F] float32}`` in global batch order; ``kind='mean_cov'`` ->
    ``{'mu', 'sigma', 'num'}`` from float64 running sums (no feature matrix is kept).
    """
    show = progress and (not distributed.is_initialized() or torch.distributed.get_rank() == 0)
    result = _collect(batches, detect, kind == 'mean_cov', _Progress(label, total, show))
    if kind == 'mean_cov':
        return _finish_moments(result)
    return {'features': _finish_features(result)}


def moments(feats: np.ndarray) -> dict[str, np.ndarray]:
    """``mu``/``sigma``/``num`` of a ``[N, F]`` feature matrix by the same float64 formula as
    ``extract(kind='mean_cov')`` (used when FID reuses features already extracted for KID)."""
    x = np.asarray(feats, dtype=np.float64)
    return _finish_moments([(len(x), x.sum(axis=0), x.T @ x)])


def _shard(num_items: int, batch_size: int) -> list:
    """Global batch indices of this process: ``rank, rank + world, ...``."""
    rank = torch.distributed.get_rank() if distributed.is_initialized() else 0
    return list(range(rank, (num_items + batch_size - 1) // batch_size, distributed.world_size()))


def real_batches(
    dataset: torch.utils.data.Dataset, indices: np.ndarray, batch_size: int, num_workers: int = 0
) -> Iterator[tuple[int, torch.Tensor]]:
    """This rank's batches of dataset items ``indices``: ``(global batch, uint8 [n, 3, H, W])``."""
    mine = _shard(len(indices), batch_size)
    flat = [int(i) for b in mine for i in indices[b * batch_size : (b + 1) * batch_size]]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, flat), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    for b, (images, _labels) in zip(mine, loader):
        yield b, images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def _batch_rng(seed: int, b: int) -> np.random.Generator:
    """Independent random stream of generated batch ``b``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(b)])


def latent_batches(
    G: torch.nn.Module,
    labels: np.ndarray | None,
    num: int,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, int]]:
    """This rank's ``(global batch, z [n, z_dim], c [n, c_dim], noise seed)`` for ``num`` samples.

    ``labels``: ``[L, c_dim]`` label pool to draw from uniformly (None or empty for unconditional G).
    """
    for b in _shard(num, batch_size):
        n = min(batch_size, num - b * batch_size)
        rng = _batch_rng(seed, b)
        z = torch.from_numpy(rng.standard_normal([n, G.z_dim])).to(device, torch.float32)
        if G.c_dim > 0:
            c = torch.from_numpy(labels[rng.integers(len(labels), size=n)]).to(device, torch.float32)
        else:
            c = torch.zeros([n, 0], device=device)
        yield b, z, c, int(rng.integers(1 << 62))


def generated_batches(
    G: torch.nn.Module,
    labels: np.ndarray | None,
    num: int,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> Iterator[tuple[int, torch.Tensor]]:
    """This rank's ``(global batch, uint8 [n, 3, H, W])`` images of ``G(z, c)``, z ~ N(0, I), no truncation.

    Uses a private eval copy of ``G`` on ``device``; per-pixel noise is random but seeded per batch.
    """
    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)
    fork_devices = [device] if device.type == 'cuda' else []
    for b, z, c, noise_seed in latent_batches(G, labels, num, batch_size, seed, device):
        with torch.no_grad(), torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(noise_seed)
            images = [
                G(zz, cc, noise_mode='random') for zz, cc in zip(z.split(GEN_CHUNK), c.split(GEN_CHUNK))
            ]
        yield b, to_uint8_rgb(torch.cat(images))


def _safe(text: str) -> str:
    """File-name-safe version of ``text``."""
    return re.sub(r'[^A-Za-z0-9._-]+', '_', text)[:60]


def stats_cache_path(
    dataset: object, dataset_path: str, detector_name: str, kind: str, max_items: int | None
) -> str:
    """Cache file of a dataset's real statistics (see the module docstring for what the key covers)."""
    names = list(dataset.files)
    key = dict(
        version=CACHE_VERSION,
        content=dataset_fingerprint(dataset_path, names),
        num_items=len(dataset),
        num_images=len(names),
        resolution=int(dataset.resolution),
        max_items=max_items,
        detector=detector_name,
        kind=kind,
    )
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    name = f'{_safe(dataset.name)}-{_safe(detector_name)}-{kind}-{digest}.npz'
    return dnnlib.util.make_cache_dir_path('gan-metrics', name)


def load_npz(path: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _try_cache(path: str | None) -> dict[str, np.ndarray] | None:
    """Rank 0 reads the cache file and tells the others whether it could; every rank returns the arrays."""
    rank = torch.distributed.get_rank() if distributed.is_initialized() else 0
    stats = None
    if rank == 0 and path is not None and os.path.isfile(path):
        try:
            stats = load_npz(path)
        except (OSError, ValueError) as err:
            print(f'Ignoring unreadable statistics cache {path} ({err}); recomputing.', flush=True)
    if not distributed.gather_objects(stats is not None)[0]:
        return None
    return stats if rank == 0 else load_npz(path)


def real_stats(
    dataset: torch.utils.data.Dataset,  # An ImageFolderDataset (items uint8 [C, H, W]).
    dataset_path: str,  # The path the dataset was opened from (part of the cache key).
    detector: Callable[[torch.Tensor], torch.Tensor],  # uint8 [n, 3, H, W] -> float32 [n, F].
    detector_name: str,  # Identifies the detector in the cache key.
    *,
    kind: str,  # 'mean_cov' (mu, sigma, num) or 'features' (features [N, F]).
    max_items: int | None,  # Item cap (a seeded subset when the dataset is larger); None = all.
    batch_size: int,  # Images per detector batch.
    cache: bool = True,  # Read and write make_cache_dir_path('gan-metrics', ...); rank 0 writes.
    progress: bool = True,  # Print progress (rank 0).
    num_workers: int = 0,  # DataLoader worker processes.
) -> dict[str, np.ndarray]:
    """Real-image statistics of up to ``max_items`` dataset items, from the disk cache when possible.

    The cache file is written atomically by rank 0.
    """
    path = stats_cache_path(dataset, dataset_path, detector_name, kind, max_items) if cache else None
    stats = _try_cache(path)
    if stats is not None:
        return stats
    indices = item_indices(len(dataset), max_items)
    batches = real_batches(dataset, indices, batch_size, num_workers)
    stats = extract(batches, detector, kind, len(indices), f'{dataset.name} reals', progress)
    stats['detector'] = np.array(detector_name)
    rank = torch.distributed.get_rank() if distributed.is_initialized() else 0
    if path is not None and rank == 0:
        dnnlib.util.atomic_write(path, lambda handle: np.savez(handle, **stats))
        if progress:
            print(f'Cached real statistics in {path}', flush=True)
    return stats
