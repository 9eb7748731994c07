"""Perceptual path length in W at the path endpoints (``ppl2_wend``; Karras et al. 2019, 2020).

For each sample: ``z0, z1 ~ N(0, I)`` and one label ``c``; ``w0, w1 = mapping(z0, c), mapping(z1, c)``;
the two images are synthesised from ``lerp(w0, w1, t)`` and ``lerp(w0, w1, t + eps)`` with ``t = 0``
(endpoints) and ``eps = 1e-4``, sharing one noise draw (the ``noise_const`` buffers are re-drawn per batch
from a seeded generator). Their distance is the squared difference of LPIPS-normalised VGG16 features
divided by ``eps^2``, computed on the full image (no crop) after box-downsampling to 256 when larger. The
PPL is the mean after discarding samples outside the 1st-99th percentile (:func:`scores.ppl_from_distances`).
Lower is better.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Callable

import numpy as np
import torch

from metrics import detectors, features, scores
from metrics.context import MetricContext, label_pool
from metrics.kinds import MetricKind, MetricSpec

LPIPS_MAX_RES = 256


def lpips_input(images: torch.Tensor) -> torch.Tensor:
    """Synthesis output ``[N, C, R, R]`` in [-1, 1] -> float ``[N, 3, r, r]`` in 0..255 with ``r <= 256``."""
    x = (images.to(torch.float32) + 1) * 127.5
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if x.shape[2] > LPIPS_MAX_RES:
        factor = x.shape[2] // LPIPS_MAX_RES
        x = torch.nn.functional.avg_pool2d(x, kernel_size=factor, stride=factor)
    return x


def _randomize_noise(G: torch.nn.Module, seed: int) -> None:
    """Refill every ``noise_const`` buffer of ``G`` with N(0, 1) values from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    for name, buf in G.named_buffers():
        if name.endswith('noise_const'):
            buf.copy_(torch.randn(buf.shape, generator=gen))


def _distance_batches(
    G: torch.nn.Module,
    lpips: Callable[[torch.Tensor], torch.Tensor],
    labels: np.ndarray | None,
    num: int,
    batch_size: int,
    seed: int,
    epsilon: float,
    device: torch.device,
) -> Iterator[tuple[int, torch.Tensor]]:
    """This rank's ``(global batch, distances [n, 1])``."""
    for b, z0, c, noise_seed in features.latent_batches(G, labels, num, batch_size, seed, device):
        z1 = torch.from_numpy(
            np.random.default_rng([seed & 0xFFFFFFFF, b, 1]).standard_normal(list(z0.shape))
        )
        with torch.no_grad():
            ws = G.mapping(torch.cat([z0, z1.to(z0)]), torch.cat([c, c]))
            w0, w1 = ws.chunk(2)
            _randomize_noise(G, noise_seed)
            ends = torch.cat([w0, torch.lerp(w0, w1, epsilon)])
            images = G.synthesis(ends, noise_mode='const', force_fp32=True)
            feats = lpips(lpips_input(images)).to(torch.float64)
            f0, f1 = feats.chunk(2)
        yield b, ((f0 - f1).square().sum(dim=1, keepdim=True) / epsilon**2).to(torch.float32)


def compute_ppl(
    G: torch.nn.Module,  # A Generator with mapping and synthesis; not modified (a copy runs).
    lpips: Callable[[torch.Tensor], torch.Tensor],  # Images -> LPIPS features (see below).
    *,
    labels: np.ndarray | None,  # [L, c_dim] label pool; None for an unconditional G.
    num_samples: int,  # Number of path samples (pairs of images).
    batch_size: int,  # Path samples per batch.
    seed: int,  # Makes the value reproducible.
    device: torch.device,  # Where G and lpips run.
    epsilon: float = 1e-4,  # Step along the path in W between the two images of a sample.
    progress: bool = True,  # Print progress (rank 0).
) -> float:
    """PPL in W at the endpoints of ``G`` (a Generator with ``mapping`` and ``synthesis``).

    ``lpips`` maps float ``[N, 3, r, r]`` images in 0..255 to ``[N, F]`` features whose squared L2 distance
    is the LPIPS distance (e.g. :meth:`detectors.Detector.lpips` of VGG16). Batches are sharded over
    processes and gathered. Returns the perceptual path length (float >= 0).
    """
    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)
    batches = _distance_batches(G, lpips, labels, num_samples, batch_size, seed, epsilon, device)
    dist = features.extract(batches, lambda d: d, 'features', num_samples, 'ppl samples', progress)
    return scores.ppl_from_distances(dist['features'][:, 0])


def _ppl(ctx: MetricContext) -> dict[str, float]:
    value = compute_ppl(
        ctx.G,
        ctx.detector().lpips,
        labels=label_pool(ctx, None),
        num_samples=ctx.num_gen,
        batch_size=max(2, ctx.batch_size // 2),
        seed=ctx.seed,
        device=ctx.device,
        progress=ctx.progress,
    )
    return {ctx.name: value}


KINDS = (
    MetricKind(
        'ppl',
        _ppl,
        names={
            'ppl2_wend': MetricSpec(
                'ppl', 50000, None, None, 'perceptual path length, W, endpoints, full image'
            )
        },
        detector=detectors.VGG16,
    ),
)
