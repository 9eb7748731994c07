"""Real-image anchors for CGKD with teachers that have no text tower (KD-DLGAN Sec. 3.3, generalised).

CGKD correlates each image embedding with K anchor rows A. With CLIP the rows are text embeddings of the
prompts; an image-only teacher (e.g. ``torchscript:``) has no text tower, so here A is K k-means centroids
of the teacher's L2-normalised embeddings of the training images: directions that span what the teacher
sees in the real data. They are computed once and cached beside the run.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


class AnchorError(ValueError):
    """Anchors that cannot be computed; the message says what to change."""


def _kmeans_pp_init(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: ``k`` rows of ``x`` ``[M, E]``, each drawn with probability ~ squared distance."""
    m = x.shape[0]
    first = int(torch.randint(m, (1,), generator=gen))
    centers = [x[first]]
    d2 = (x - x[first]).square().sum(1)
    for _ in range(1, k):
        weights = d2.clamp_min(0).double().cpu()
        if float(weights.sum()) <= 0:  # All remaining points coincide with a center: pick uniformly.
            weights = torch.ones(m, dtype=torch.float64)
        idx = int(torch.multinomial(weights, 1, generator=gen))
        centers.append(x[idx])
        d2 = torch.minimum(d2, (x - x[idx]).square().sum(1))
    return torch.stack(centers)


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iters: int = 50) -> torch.Tensor:
    """Cluster ``x`` ``[M, E]`` into ``k`` centroids ``[k, E]`` float32 (k-means++ init, Lloyd steps).

    Runs on ``x``'s device; the result depends only on ``x``, ``k`` and ``seed`` (random draws come from a CPU
    generator, centroid updates are dense matmuls, not atomics). Stops early when assignments settle. An
    empty cluster is re-seeded with the point farthest from its centroid. ``k > M`` -> AnchorError.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise AnchorError(f'kmeans: expected a non-empty [M, E] matrix, got {list(x.shape)}')
    m = int(x.shape[0])
    if not 1 <= int(k) <= m:
        raise AnchorError(
            f'kmeans: cannot make k={k} clusters from {m} embeddings (need 1 <= k <= {m}); lower the number '
            'of anchors K or embed more images (max_images)'
        )
    x = x.detach().to(torch.float32)
    gen = torch.Generator(device='cpu').manual_seed(int(seed))
    centers = _kmeans_pp_init(x, int(k), gen)
    assign = None
    for _ in range(int(iters)):
        dist = torch.cdist(x, centers)  # [M, K]
        new_assign = dist.argmin(1)
        if assign is not None and torch.equal(new_assign, assign):
            break
        assign = new_assign
        onehot = F.one_hot(assign, int(k)).to(x.dtype)  # [M, K]
        counts = onehot.sum(0)  # [K]
        sums = onehot.t() @ x  # [K, E]
        centers = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centers)
        for j in (counts == 0).nonzero().flatten().tolist():
            far = int(dist.gather(1, assign[:, None]).squeeze(1).argmax())
            centers[j] = x[far]
            dist[far] = 0  # Do not reuse the same point for another empty cluster.
    return centers


def _cache_key(
    teacher: Any, variant: str, dataset_len: int, k: int, seed: int, max_images: int | None
) -> tuple:
    """What the cached anchors depend on: teacher spec and weights, the teacher's preprocessing (the
    KD variant), dataset length, k, seed, image cap."""
    return (
        str(teacher.spec),
        getattr(teacher, 'weights', None),
        str(variant),
        int(dataset_len),
        int(k),
        int(seed),
        max_images,
    )


def _load_cached(cache_path: str, key: tuple) -> torch.Tensor | None:
    """Cached anchors when ``cache_path`` holds them for ``key``; None when absent, stale or unreadable."""
    if not os.path.isfile(cache_path):
        return None
    try:
        data = torch.load(cache_path, map_location='cpu', weights_only=True)
    except Exception:
        return None
    if not isinstance(data, dict) or tuple(data.get('key', ())) != key:
        return None
    anchors = data.get('anchors')
    return anchors if isinstance(anchors, torch.Tensor) and anchors.ndim == 2 else None


def _save_cached(cache_path: str, key: tuple, anchors: torch.Tensor) -> None:
    """Write ``{'key': key, 'anchors': [K, E]}`` atomically (temp file + ``os.replace``)."""
    folder = os.path.dirname(os.path.abspath(cache_path))
    os.makedirs(folder, exist_ok=True)
    tmp = f'{cache_path}.tmp{os.getpid()}'
    torch.save({'key': key, 'anchors': anchors.detach().cpu()}, tmp)
    os.replace(tmp, cache_path)


def _embed_dataset(teacher: Any, dataset: Any, indices: list[int], batch: int, variant: str) -> torch.Tensor:
    """Teacher embeddings ``[len(indices), E]`` float32 of dataset items (``uint8 [C, H, W]``, label),
    with the ``variant``'s teacher preprocessing."""
    device = teacher.mean.device
    chunks = []
    for start in range(0, len(indices), batch):
        images = [np.asarray(dataset[i][0]) for i in indices[start : start + batch]]
        x = torch.from_numpy(np.stack(images)).to(device).to(torch.float32) / 127.5 - 1  # [B, C, H, W]
        with torch.no_grad():
            chunks.append(teacher.encode_image(x, variant=variant).to(torch.float32))
    return torch.cat(chunks)


def real_image_anchors(
    teacher: Any,
    dataset: Any,
    k: int,
    cache_path: str | None,
    batch: int = 64,
    device: str | torch.device = 'cpu',
    max_images: int | None = None,
    seed: int = 0,
    variant: str = 'paper',
) -> torch.Tensor:
    """K unit-norm anchors ``[K, E]`` float32 on ``device``: k-means of the training images' embeddings.

    ``dataset[i]`` is ``(uint8 [C, H, W] array, label)``; images are mapped to ``[-1, 1]`` and embedded by
    ``teacher`` with the preprocessing of ``variant`` (as in training; on the teacher's device, no grad).
    Embeddings are L2-normalised, clustered with :func:`kmeans` and the centroids re-normalised. With
    ``max_images`` a seeded random subset is used. The result is cached in ``cache_path`` with a key of
    (teacher spec, weights, variant, dataset length, k, seed, max_images); a different key recomputes and
    overwrites it. ``cache_path=None`` disables the cache.
    """
    n_total = len(dataset)
    key = _cache_key(teacher, variant, n_total, k, seed, max_images)
    cached = _load_cached(cache_path, key) if cache_path else None
    if cached is not None:
        return cached.to(device=device, dtype=torch.float32)
    if n_total == 0:
        raise AnchorError('real_image_anchors: the dataset is empty; anchors need training images')
    indices = list(range(n_total))
    if max_images is not None and max_images < n_total:
        gen = torch.Generator(device='cpu').manual_seed(int(seed))
        indices = sorted(torch.randperm(n_total, generator=gen)[: max(int(max_images), 1)].tolist())
    emb = _embed_dataset(teacher, dataset, indices, max(int(batch), 1), variant)
    emb = F.normalize(emb.to(device), dim=1)
    anchors = F.normalize(kmeans(emb, k, seed=seed), dim=1)
    if cache_path:
        _save_cached(cache_path, key, anchors)
    return anchors
