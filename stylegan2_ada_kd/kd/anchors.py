"""Real-image anchors for CGKD with teachers that have no text tower (KD-DLGAN Sec. 3.3, generalised).

CGKD correlates each image embedding with K anchor rows A. With CLIP the rows are text embeddings of the
prompts, and the paper's ``C(u) = n(u A^T)`` applies unchanged. An image-only teacher (e.g. ``torchscript:``)
has no text tower, so here A is K prototypes of the teacher's embeddings of the training images, and both
A and the correlation are taken relative to the mean real embedding mu:

    e_i = n(T(x_i))                       (unit-norm teacher embeddings of the training reals)
    mu  = mean_i e_i                      ([E]; the centre)
    A   = n(kmeans(n(e_i - mu), K))       ([K, E]; unit-norm centroids of the centred directions)
    C_mu(u) = n((n(u) - mu) A^T)          ([N, K]; see kd.loss.correlation)

Why centred: the embeddings of one small dataset share a large common component (every 100-shot Obama
image is a frontal face; EfficientNet's pooled ReLU6 features are non-negative besides). Prototypes of the
uncentred cloud all point along it (mean pairwise cosine 0.78 for EfficientNet-Lite0 at input 64 on
100-shot Obama), so ``n(t A^T)`` is nearly the same flat row (about 1/sqrt(K) in every entry) for every
image and CGKD has little to transfer. Subtracting mu removes the common component: the prototypes become
directions of variation within the data, and a row says which of them an image leans towards (entries of
both signs). Rows are L2-normalised, so only the direction of ``n(u) - mu`` matters; hence k-means runs on
the directions ``n(e_i - mu)``. mu is computed once with A, from the same images and the same teacher
preprocessing, and cached with it. The student side uses the same ``C_mu``: see kd.loss.correlation.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from dnnlib.util import atomic_write
from torch_utils.misc import uint8_to_unit

# The form of the anchors, first field of the cache key. Caches written before the centring (a tuple key,
# no mean embedding) or with another form are recomputed, with a log line saying so.
ANCHOR_FORM = 'centred-kmeans-v2'
_KEY_FIELDS = ('form', 'teacher', 'weights', 'variant', 'dataset_len', 'k', 'seed', 'max_images')


class AnchorError(ValueError):
    """Anchors that cannot be computed; the message says what to change."""


class ImageAnchors(NamedTuple):
    """CGKD anchors of an image-only teacher (see the module docstring)."""

    anchors: torch.Tensor  # [K, E] float32, unit rows: k-means prototypes of the centred embeddings (A).
    center: torch.Tensor  # [E] float32: the mean unit-norm teacher embedding of the training reals (mu).


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
) -> dict[str, Any]:
    """What the cached anchors depend on: the anchor form, teacher spec and weights, the teacher's
    preprocessing (the KD variant), dataset length, k, seed, image cap (named as in :data:`_KEY_FIELDS`)."""
    values = (ANCHOR_FORM, str(teacher.spec), getattr(teacher, 'weights', None), str(variant))
    return dict(zip(_KEY_FIELDS, (*values, int(dataset_len), int(k), int(seed), max_images)))


def _stale_reason(data: Any, key: dict[str, Any]) -> str | None:
    """Why the loaded cache ``data`` does not hold the anchors of ``key`` (None: it does)."""
    if not isinstance(data, dict):
        return 'it is not an anchor cache'
    old = data.get('key')
    if not isinstance(old, dict):
        return 'it holds uncentred anchors of an earlier version (no mean embedding)'
    changed = [f'{name}={old.get(name)!r} (now {key[name]!r})' for name in key if old.get(name) != key[name]]
    if changed:
        return 'it was computed for ' + ', '.join(changed)
    anchors, center = data.get('anchors'), data.get('center')
    if not isinstance(anchors, torch.Tensor) or not isinstance(center, torch.Tensor):
        return 'it lacks the anchors or the mean embedding'
    if anchors.ndim != 2 or center.shape != anchors.shape[1:]:
        return f'its shapes {list(anchors.shape)} / {list(center.shape)} do not fit [K, E] / [E]'
    return None


def _load_cached(cache_path: str, key: dict[str, Any]) -> ImageAnchors | None:
    """The cached anchors when ``cache_path`` holds them for ``key``; None when absent, stale or unreadable
    (a file that is there but not used is announced on stdout, which the run's log.txt records)."""
    if not os.path.isfile(cache_path):
        return None
    try:
        data = torch.load(cache_path, map_location='cpu', weights_only=True)
        reason = _stale_reason(data, key)
    except Exception as err:
        reason = f'it cannot be read ({type(err).__name__})'
    if reason is None:
        return ImageAnchors(data['anchors'], data['center'])
    print(f'KD anchors: not reusing {cache_path}: {reason}; recomputing it')
    return None


def _save_cached(cache_path: str, key: dict[str, Any], found: ImageAnchors) -> None:
    """Write ``{'key': key, 'anchors': [K, E], 'center': [E]}`` through :func:`atomic_write`."""
    state = {'key': key, 'anchors': found.anchors.detach().cpu(), 'center': found.center.detach().cpu()}
    atomic_write(cache_path, lambda handle: torch.save(state, handle))


def _embed_dataset(teacher: Any, dataset: Any, indices: list[int], batch: int, variant: str) -> torch.Tensor:
    """Teacher embeddings ``[len(indices), E]`` float32 of dataset items (``uint8 [C, H, W]``, label),
    with the ``variant``'s teacher preprocessing."""
    device = teacher.mean.device
    chunks = []
    for start in range(0, len(indices), batch):
        images = [np.asarray(dataset[i][0]) for i in indices[start : start + batch]]
        x = uint8_to_unit(torch.from_numpy(np.stack(images)).to(device))  # [B, C, H, W]
        with torch.no_grad():
            chunks.append(teacher.encode_image(x, variant=variant).to(torch.float32))
    return torch.cat(chunks)


def centred_anchors(emb: torch.Tensor, k: int, seed: int = 0) -> ImageAnchors:
    """Anchors of embeddings ``emb`` ``[M, E]`` (any scale): ``mu`` = mean of the unit rows ``n(emb)``, and
    ``A`` = unit k-means centroids (:func:`kmeans`, ``seed``) of the centred directions ``n(n(emb) - mu)``."""
    unit = F.normalize(emb.to(torch.float32), dim=1)
    center = unit.mean(0)
    return ImageAnchors(F.normalize(kmeans(F.normalize(unit - center, dim=1), k, seed=seed), dim=1), center)


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
) -> ImageAnchors:
    """The anchors ``A`` ``[K, E]`` and centre ``mu`` ``[E]`` (float32, on ``device``) of the training images.

    ``dataset[i]`` is ``(uint8 [C, H, W] array, label)``; images are mapped to ``[-1, 1]`` and embedded by
    ``teacher`` with the preprocessing of ``variant`` (as in training; on the teacher's device, no grad),
    then reduced by :func:`centred_anchors`. With ``max_images`` a seeded random subset is used. The result
    is cached in ``cache_path`` with a key of (anchor form, teacher spec, weights, variant, dataset length,
    k, seed, max_images); a file with another key (an older form included) is recomputed and overwritten,
    with a line on stdout that says so. ``cache_path=None`` disables the cache.
    """
    n_total = len(dataset)
    key = _cache_key(teacher, variant, n_total, k, seed, max_images)
    found = _load_cached(cache_path, key) if cache_path else None
    if found is None:
        if n_total == 0:
            raise AnchorError('real_image_anchors: the dataset is empty; anchors need training images')
        indices = list(range(n_total))
        if max_images is not None and max_images < n_total:
            gen = torch.Generator(device='cpu').manual_seed(int(seed))
            indices = sorted(torch.randperm(n_total, generator=gen)[: max(int(max_images), 1)].tolist())
        emb = _embed_dataset(teacher, dataset, indices, max(int(batch), 1), variant)
        found = centred_anchors(emb.to(device), k, seed=seed)
        if cache_path:
            _save_cached(cache_path, key, found)
    return ImageAnchors(*(v.to(device=device, dtype=torch.float32) for v in found))
