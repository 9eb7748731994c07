"""Projection of an image into the latent space of a trained generator (Karras et al., "Analyzing and
Improving the Image Quality of StyleGAN", CVPR 2020, Sec. 5 and Appendix D).

The latent ``w`` (one vector broadcast to every layer, or one per layer in W+) and the per-layer noise maps
``n_i`` of ``G.synthesis`` are optimised with Adam so that the image matches a target under a perceptual
distance (LPIPS on VGG16 features, :func:`vgg16_lpips_features`), with

* ``w`` starting at the mean ``mu_w`` of many mapped ``z`` and Gaussian noise of scale
  ``sigma_w * 0.05 * max(0, 1 - t / 0.75)^2`` added to it at step ``t`` in [0, 1] (``sigma_w`` = the root
  mean squared distance of the mapped ``w`` from ``mu_w``): broad exploration early, none late;
* the learning rate ramped up linearly over the first 5% of the steps and down to zero with a cosine over
  the last 25%;
* the noise regulariser ``L_reg = sum_i sum_j L_{i,j}`` (:func:`noise_regularization`) times
  ``noise_weight``, and every ``n_i`` renormalised to zero mean and unit variance after each step, so that
  the noise maps cannot carry the image.

The distance is a callable passed in (``features``), so the optimisation runs without VGG16 in tests.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterator

import torch

from metrics.ppl import lpips_input
from torch_utils.misc import assert_shape

Features = Callable[[torch.Tensor], torch.Tensor]  # Images [N, C, R, R] in [-1, 1] -> features [N, F].
SPACES = ('w', 'w+')  # One w broadcast to every layer, or one w per layer.
NOISE_REG_MIN_RES = 8  # L_{i,j}: each noise map is halved down to 8x8 (smaller maps: one scale only).


@dataclasses.dataclass(frozen=True)
class ProjectionStep:
    """One optimisation step of :func:`project`."""

    step: int  # 0-based step index.
    ws: torch.Tensor  # [1, num_ws, w_dim] float32, detached: the latent after this step's update.
    image: torch.Tensor  # [1, C, R, R] float32 in about [-1, 1], detached: the image this step scored.
    distance: float  # Feature distance of ``image`` to the target (>= 0).
    loss: float  # distance + pixel term + noise_weight * L_reg of this step.


def vgg16_lpips_features(vgg16: torch.nn.Module) -> Features:
    """Differentiable LPIPS features from NVIDIA's ``vgg16.pt`` (``metrics.detectors`` loads it).

    The returned callable maps synthesis images ``[N, C, R, R]`` in [-1, 1] (1, 3 or 4 channels; alpha is
    ignored, gray repeated) to float32 ``[N, F]`` whose squared L2 distance between rows is LPIPS; images
    over 256 pixels are box-downsampled to 256 first, as the PPL metric does.
    """

    def features(images: torch.Tensor) -> torch.Tensor:
        x = lpips_input(images[:, :3]).contiguous(memory_format=torch.channels_last)
        return vgg16(x, resize_images=False, return_lpips=True).reshape(len(images), -1).float()

    return features


def w_statistics(
    G: torch.nn.Module,  # Generator with ``mapping``.
    c: torch.Tensor,  # [1, c_dim] label of every sample ([1, 0] for an unconditional G).
    num_samples: int,  # Number of z ~ N(0, I) mapped.
    generator: torch.Generator,  # CPU random generator of the z draws.
) -> tuple[torch.Tensor, float]:
    """``(mu_w [1, 1, w_dim], sigma_w)``: mean of ``num_samples`` mapped ``z`` and the root mean squared
    Euclidean distance of those ``w`` from it (the scale of the w noise)."""
    device = c.device
    z = torch.randn([num_samples, G.z_dim], generator=generator).to(device)
    with torch.no_grad():
        w = G.mapping(z, c.expand(num_samples, -1))[:, :1]  # [N, 1, w_dim]
    mu_w = w.mean(dim=0, keepdim=True)
    sigma_w = (w - mu_w).square().sum(dim=2).mean().sqrt().item()
    return mu_w, sigma_w


def noise_maps(G: torch.nn.Module) -> list[torch.Tensor]:
    """The ``[r, r]`` constant noise buffers (``noise_const``) of ``G.synthesis``, coarse to fine."""
    return [buf for name, buf in G.synthesis.named_buffers() if name.endswith('noise_const')]


def noise_regularization(noises: list[torch.Tensor]) -> torch.Tensor:
    """``L_reg = sum_i sum_j L_{i,j}`` (StyleGAN2 Appendix D): for each noise map ``n_i`` ``[r, r]`` and each
    level ``j`` of its pyramid (halved by 2x2 averages down to 8x8), the squared mean product of the map with
    itself shifted by one pixel, along x plus along y (shifts wrap around). Scalar >= 0; 0 for noise with no
    spatial autocorrelation at any scale."""
    total = torch.zeros([], device=noises[0].device if noises else None)
    for n in noises:
        level = n[None, None]  # [1, 1, r, r]
        for _ in range(max(1, int(math.log2(n.shape[-1] / NOISE_REG_MIN_RES)) + 1)):
            total = total + (level * level.roll(1, dims=3)).mean().square()
            total = total + (level * level.roll(1, dims=2)).mean().square()
            level = torch.nn.functional.avg_pool2d(level, 2)
    return total


@torch.no_grad()
def normalize_noise_(noises: list[torch.Tensor]) -> None:
    """Renormalise every noise map in place to zero mean and unit (population) variance."""
    for n in noises:
        n.sub_(n.mean())
        n.mul_(n.square().mean().rsqrt())


def learning_rate(t: float, lr: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """Learning rate at progress ``t`` in [0, 1]: linear warm-up over the first ``rampup`` fraction, cosine
    decay to zero over the last ``rampdown`` fraction, ``lr`` in between."""
    warmup = min(1.0, t / rampup)
    cooldown = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / rampdown))
    return lr * warmup * cooldown


def w_noise_scale(t: float, sigma_w: float, initial: float = 0.05, ramp: float = 0.75) -> float:
    """Standard deviation of the noise added to ``w`` at progress ``t`` in [0, 1]:
    ``sigma_w * initial * max(0, 1 - t / ramp)^2`` (zero from ``t = ramp`` on)."""
    return sigma_w * initial * max(0.0, 1.0 - t / ramp) ** 2


def project(
    G: torch.nn.Module,  # Generator with mapping and synthesis (G_ema); not modified (a copy is optimised).
    target: torch.Tensor,  # [1, img_channels, R, R] float image in [-1, 1] at G's resolution.
    *,
    features: Features,  # Images -> features; the squared L2 distance of rows is the distance.
    num_steps: int = 1000,  # Optimisation steps (>= 1).
    c: torch.Tensor | None = None,  # [1, c_dim] label; None for an unconditional G.
    space: str = 'w',  # 'w': one w for every layer; 'w+': one w per layer.
    lr: float = 0.1,  # Peak Adam learning rate.
    noise_weight: float = 1e5,  # Weight of the noise regulariser L_reg.
    pixel_weight: float = 0.0,  # Weight of the mean squared pixel difference (images in [-1, 1]); 0 = off.
    w_avg_samples: int = 10000,  # Mapped z for mu_w and sigma_w.
    seed: int = 0,  # Seeds the z draws, the initial noise maps and the w noise.
) -> Iterator[ProjectionStep]:
    """Optimise a latent so that ``G.synthesis`` reproduces ``target``; yield a :class:`ProjectionStep`
    after every step (the last one holds the result).

    Runs on ``target``'s device (``G`` is copied there). The noise maps are optimised on the copy only:
    rendering the returned ``ws`` with ``G`` and ``noise_mode='const'`` (what ``generate.py --projected-w``
    does) uses ``G``'s own noise maps.
    """
    if space not in SPACES:
        raise ValueError(f'space must be one of {SPACES}; got {space!r}')
    device = target.device
    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)
    assert_shape(target, [1, G.img_channels, G.img_resolution, G.img_resolution], 'target')
    c = torch.zeros([1, G.c_dim], device=device) if c is None else c.to(device)
    generator = torch.Generator().manual_seed(seed)
    mu_w, sigma_w = w_statistics(G, c, w_avg_samples, generator)
    w_opt = mu_w.repeat(1, 1 if space == 'w' else G.num_ws, 1).requires_grad_(True)  # [1, 1 or num_ws, w_dim]
    noises = noise_maps(G)
    for n in noises:
        n.copy_(torch.randn(n.shape, generator=generator)).requires_grad_(True)
    target_features = features(target).detach()
    optimizer = torch.optim.Adam([w_opt, *noises], betas=(0.9, 0.999), lr=lr)
    for step in range(num_steps):
        t = step / num_steps
        for group in optimizer.param_groups:
            group['lr'] = learning_rate(t, lr)
        w_noise = torch.randn(w_opt.shape, generator=generator).to(device) * w_noise_scale(t, sigma_w)
        ws = (w_opt + w_noise).expand(1, G.num_ws, -1)  # [1, num_ws, w_dim]
        image = G.synthesis(ws, noise_mode='const', force_fp32=True)
        distance = (features(image) - target_features).square().sum()
        loss = distance + noise_weight * noise_regularization(noises)
        if pixel_weight:
            loss = loss + pixel_weight * (image - target).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        normalize_noise_(noises)
        yield ProjectionStep(
            step=step,
            ws=w_opt.detach().expand(1, G.num_ws, -1).clone(),
            image=image.detach(),
            distance=distance.item(),
            loss=loss.item(),
        )
