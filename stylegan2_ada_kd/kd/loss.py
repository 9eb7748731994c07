"""KD-DLGAN losses (Cui et al., "KD-DLGAN: Data Limited Image Generation via Knowledge Distillation",
CVPR 2023) as a subclass of the StyleGAN2 loss.

AGKD (aggregated generative KD, Sec. 3.2) and CGKD (correlated generative KD, Sec. 3.3) are added to
D's main phase only, on the same augmented real and fake batches D saw; the optional diversity term
(Sec. 3.3's pairwise diverse loss, offered here as a G-side extension) is added to G's main phase.
Two formulations: ``variant='paper'`` (L1 on unit vectors, cross terms with probability p, bicubic +
CLIP normalisation) and ``variant='official'`` (the released BigGAN code: Euclidean distances of raw
embeddings, cross terms always, squared correlation error, weights 10, nearest upsampling).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from dnnlib.util import construct_class_by_name
from stylegan2_ada_kd.kd.anchors import real_image_anchors
from stylegan2_ada_kd.kd.heads import HEAD_NAME, attach_kd_head
from stylegan2_ada_kd.kd.teacher import load_teacher, random_warning
from stylegan2_ada_kd.loss import DOutput, StyleGAN2Loss
from torch_utils import training_stats

KD_TERMS = ('aggregated', 'correlated')
VARIANTS = ('paper', 'official')


# ---------------------------------------------------------------- loss terms (pure functions)


def agkd_paper(
    s_r: torch.Tensor, s_f: torch.Tensor, t_r: torch.Tensor, t_f: torch.Tensor, cross: bool
) -> torch.Tensor:
    """AGKD, KD-DLGAN Sec. 3.2 (default formulation): L1 between unit-norm student and teacher embeddings.

    ``|s_r - t_r|_1 + |s_f - t_f|_1 (+ |s_r - t_f|_1 + |s_f - t_r|_1 when cross)`` per sample, with all
    inputs ``[N, E]`` and ``s``/``t`` already L2-normalised. Returns ``[N]``.
    """
    loss = (s_r - t_r).abs().sum(1) + (s_f - t_f).abs().sum(1)
    if cross:
        loss = loss + (s_r - t_f).abs().sum(1) + (s_f - t_r).abs().sum(1)
    return loss


def agkd_official(h_r: torch.Tensor, h_f: torch.Tensor, t_r: torch.Tensor, t_f: torch.Tensor) -> torch.Tensor:
    """AGKD as in the released code (KD-DLGAN Sec. 3.2): Euclidean distances of raw ``[N, E]`` embeddings,
    cross terms always on. Returns ``[N]``."""
    dist = lambda a, b: (a - b).norm(dim=1)
    return dist(h_r, t_r) + dist(h_f, t_f) + dist(h_r, t_f) + dist(h_f, t_r)


def correlation(u: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Image-text correlation rows ``C(u) = n(u A^T)`` (KD-DLGAN Sec. 3.3): ``[N, E] x [K, E] -> [N, K]``,
    each row L2-normalised (so C is invariant to the scale of u)."""
    return F.normalize(u @ anchors.t(), dim=1)


def cgkd_paper(
    s_r: torch.Tensor, s_f: torch.Tensor, t_r: torch.Tensor, t_f: torch.Tensor, anchors: torch.Tensor
) -> torch.Tensor:
    """CGKD, KD-DLGAN Sec. 3.3: ``|C(s_r) - C(t_r)|_1 + |C(s_f) - C(t_f)|_1`` summed over the K prompts.

    Inputs ``[N, E]``, anchors ``[K, E]``; returns ``[N]``.
    """
    return (correlation(s_r, anchors) - correlation(t_r, anchors)).abs().sum(1) + (
        correlation(s_f, anchors) - correlation(t_f, anchors)
    ).abs().sum(1)


def cgkd_official(
    h_r: torch.Tensor, h_f: torch.Tensor, t_r: torch.Tensor, t_f: torch.Tensor, anchors: torch.Tensor
) -> torch.Tensor:
    """CGKD as in the released code (KD-DLGAN Sec. 3.3): summed squared error of the row-normalised
    correlations of raw embeddings. Inputs ``[N, E]``, anchors ``[K, E]``; returns ``[N]``."""
    return (correlation(h_r, anchors) - correlation(t_r, anchors)).square().sum(1) + (
        correlation(h_f, anchors) - correlation(t_f, anchors)
    ).square().sum(1)


def pairwise_diversity(corr: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between the correlation rows ``[N, K]`` of different samples (0-d).

    KD-DLGAN Sec. 3.3 (pairwise diverse loss), used here on G's side: lower means more diverse fakes.
    """
    n = corr.shape[0]
    if n < 2:
        return corr.sum() * 0
    rows = F.normalize(corr, dim=1)
    sim = rows @ rows.t()
    return (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))


# ---------------------------------------------------------------- the loss class


class KDLoss(StyleGAN2Loss):
    """StyleGAN2 loss + lambda_A * AGKD + lambda_C * CGKD on D (+ optional diversity term on G)."""

    def __init__(
        self,
        device: torch.device,  # Device of G and D.
        G: torch.nn.Module,  # Generator.
        D: torch.nn.Module,  # Discriminator (a KD head is attached to it).
        augment_pipe: Optional[torch.nn.Module] = None,  # What D sees; the teacher sees the same images.
        kd_terms: Sequence[str] = KD_TERMS,  # Any of 'aggregated', 'correlated'.
        teacher: str = 'ViT-B-32:openai',  # Teacher spec (see kd.teacher.load_teacher).
        teacher_weights: Optional[str] = None,  # Local weights file for the teacher.
        variant: str = 'paper',  # 'paper' or 'official' formulation.
        agkd_weight: Optional[float] = None,  # lambda_A; None = 1 (paper) or 10 (official).
        cgkd_weight: Optional[float] = None,  # lambda_C; None = 1 (paper) or 10 (official).
        cross_p: float = 0.7,  # Probability of AGKD's cross terms (paper variant).
        div_weight: float = 0.0,  # Weight of the G-side diversity term; 0 = off.
        prompts: Optional[Sequence[str]] = None,  # CGKD prompts (K >= 2) for a CLIP teacher.
        num_anchors: int = 16,  # K for a teacher without text: k-means prototypes of real embeddings.
        anchor_dataset: Optional[dict] = None,  # Dataset kwargs (class_name, ...) for those prototypes.
        anchor_cache: Optional[str] = None,  # File caching the prototypes (beside the run).
        teacher_embed_dim: Optional[int] = None,  # Recorded in training_options.json; checked on load.
        **base_options,  # StyleGAN2Loss options (r1_gamma, pl_weight, ...); unknown names raise TypeError.
    ) -> None:
        super().__init__(device, G, D, augment_pipe, **base_options)
        unknown = set(kd_terms) - set(KD_TERMS)
        if unknown or not kd_terms:
            raise ValueError(f'--kd: unknown or empty terms {sorted(unknown)}; choose from {KD_TERMS}')
        if variant not in VARIANTS:
            raise ValueError(f'--kd-variant must be one of {VARIANTS}; got {variant!r}')
        self.kd_terms = tuple(kd_terms)
        self.variant = variant
        default_weight = 10.0 if variant == 'official' else 1.0
        self.agkd_weight = default_weight if agkd_weight is None else agkd_weight
        self.cgkd_weight = default_weight if cgkd_weight is None else cgkd_weight
        self.cross_p = 1.0 if variant == 'official' else cross_p
        self.div_weight = div_weight
        self.teacher = load_teacher(teacher, teacher_weights, device=device)
        if self.teacher.is_random:  # repeated here so that the run's log.txt carries it
            print(random_warning(teacher))
        if teacher_embed_dim is not None and teacher_embed_dim != self.teacher.embed_dim:
            raise ValueError(
                f'teacher {teacher} embeds to {self.teacher.embed_dim}, expected {teacher_embed_dim}'
            )
        self.head = attach_kd_head(D, self.teacher.embed_dim)
        self._teacher_timer = training_stats.Timer('Timing/kd_teacher_sec')
        self.anchors = None
        if 'correlated' in self.kd_terms or div_weight > 0:
            self.anchors = self._anchors(prompts, num_anchors, anchor_dataset, anchor_cache)

    def describe(self) -> str:
        """The base loss line plus the KD terms, weights, teacher and CGKD anchors."""
        terms = []
        if 'aggregated' in self.kd_terms:
            terms.append(f'{self.agkd_weight:g} * AGKD')
        if 'correlated' in self.kd_terms:
            terms.append(f'{self.cgkd_weight:g} * CGKD')
        text = f'{super().describe()}; KD-DLGAN ({self.variant} variant): {" + ".join(terms)}'
        if 'aggregated' in self.kd_terms and self.variant == 'paper':
            text += f', cross-term p={self.cross_p:g}'
        if self.div_weight > 0:
            text += f', G diversity {self.div_weight:g}'
        text += f'; teacher {self.teacher.spec} ({self.teacher.embed_dim}-d'
        text += ', random weights)' if self.teacher.is_random else ')'
        if self.anchors is not None:
            kind = 'prompt text embeddings' if self.teacher.has_text else 'k-means prototypes of real images'
            text += f'; CGKD anchors: {self.anchors.shape[0]} {kind}'
        return text

    def _anchors(
        self, prompts: Optional[Sequence[str]], k: int, dataset_kwargs: Optional[dict], cache: Optional[str]
    ) -> torch.Tensor:
        """The ``[K, E]`` matrix A of CGKD: text embeddings of the prompts (CLIP), or k-means
        prototypes of the real images' teacher embeddings (teachers without text)."""
        if self.teacher.has_text:
            if not prompts or len(prompts) < 2:
                raise ValueError('CGKD needs at least 2 prompts (K >= 2); see --kd-prompts')
            anchors = self.teacher.encode_text(list(prompts))
        else:
            if dataset_kwargs is None:
                raise ValueError('CGKD with a teacher without text needs anchor_dataset (the training set)')
            dataset = construct_class_by_name(**dataset_kwargs)
            anchors = real_image_anchors(self.teacher, dataset, k, cache, device=self.device)
        if anchors.shape[0] < 2:
            raise ValueError(f'CGKD needs K >= 2 anchors; got {anchors.shape[0]}')
        anchors = anchors.to(self.device, torch.float32)
        return F.normalize(anchors, dim=1) if self.variant == 'paper' else anchors

    def _teacher(self, img: torch.Tensor) -> torch.Tensor:
        """Teacher embedding ``[N, E]`` float32 of the images D saw (no gradient); its time is reported as
        ``Timing/kd_teacher_sec`` (GPU time on CUDA)."""
        with self._teacher_timer.time(img.device), torch.no_grad():
            return self.teacher.encode_image(img.detach(), variant=self.variant)

    def d_main_terms(
        self, real: DOutput, fake: DOutput, real_c: torch.Tensor, gen_c: torch.Tensor
    ) -> torch.Tensor:
        """Adversarial loss + lambda_A * AGKD + lambda_C * CGKD per sample ``[N, 1]``."""
        loss = super().d_main_terms(real, fake, real_c, gen_c)
        t_r, t_f = self._teacher(torch.cat([real.img, fake.img])).split([len(real.img), len(fake.img)])
        h_r, h_f = real.features[HEAD_NAME].float(), fake.features[HEAD_NAME].float()
        if self.variant == 'paper':
            h_r, h_f, t_r, t_f = (F.normalize(v, dim=1) for v in (h_r, h_f, t_r, t_f))
        kd = torch.zeros_like(loss[:, 0])
        if 'aggregated' in self.kd_terms:
            if self.variant == 'paper':
                cross = bool(torch.rand([]).item() < self.cross_p)  # q ~ U(0, 1), once per step
                agkd = agkd_paper(h_r, h_f, t_r, t_f, cross)
            else:
                agkd = agkd_official(h_r, h_f, t_r, t_f)
            training_stats.report('Loss/kd/agkd', agkd)
            kd = kd + self.agkd_weight * agkd
        if 'correlated' in self.kd_terms:
            cgkd_fn = cgkd_paper if self.variant == 'paper' else cgkd_official
            cgkd = cgkd_fn(h_r, h_f, t_r, t_f, self.anchors)
            training_stats.report('Loss/kd/cgkd', cgkd)
            kd = kd + self.cgkd_weight * cgkd
        return loss + kd.unsqueeze(1)

    def g_main_terms(self, fake: DOutput, gen_c: torch.Tensor) -> torch.Tensor:
        """G's adversarial loss (+ div_weight * pairwise diversity of the teacher's correlation rows)."""
        loss = super().g_main_terms(fake, gen_c)
        if self.div_weight == 0:
            return loss
        t_f = self.teacher.encode_image(fake.img, variant=self.variant)  # gradient flows to G's images
        div = pairwise_diversity(correlation(t_f, self.anchors))
        training_stats.report('Loss/kd/div', div)
        return loss + self.div_weight * div
