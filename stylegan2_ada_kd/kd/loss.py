"""KD-DLGAN losses (Cui et al., "KD-DLGAN: Data Limited Image Generation via Knowledge Distillation",
CVPR 2023) as a subclass of the StyleGAN2 loss.

AGKD (aggregated generative KD, Sec. 3.2) and CGKD (correlated generative KD, Sec. 3.3) are added to
D's main phase only, on the same augmented real and fake batches D saw; the optional diversity term
(Sec. 3.3's pairwise diverse loss, offered here as a G-side extension) is added to G's main phase.
Two formulations: ``variant='paper'`` (L1 on unit vectors, cross terms with probability p, bicubic +
CLIP normalisation, head C -> max(C, E) -> E with lrelu, prompts "a photo of a {class}") and
``variant='official'`` (the released BigGAN code: Euclidean distances of raw embeddings averaged over the
batch, cross terms always, squared correlation error *summed* over the batch, weights 10, nearest
upsampling, a linear head C -> 1024 -> E, prompts "a {class}").

With an image-only teacher CGKD correlates in the space centred on the mean real embedding (kd/anchors.py,
:func:`correlation`). Each D step reports ``Loss/kd/agkd``, ``Loss/kd/cgkd`` and ``Loss/kd/cgkd_row_spread``
(:func:`row_spread`). Once per tick :meth:`KDLoss.tick_diagnostics` reports ``Loss/kd/grad_ratio``: how
much larger the weighted KD gradient on D's trunk is than the adversarial one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stylegan2_ada_kd.data.dataset import open_dataset
from stylegan2_ada_kd.kd.anchors import real_image_anchors
from stylegan2_ada_kd.kd.heads import HEAD_NAME, attach_kd_head
from stylegan2_ada_kd.kd.teacher import DEFAULT_TEACHER, load_teacher, random_warning
from stylegan2_ada_kd.kd.variants import (
    DEFAULT_WEIGHTS,
    KD_TERMS,
    PAPER_CROSS_P,
    check_cross_p,
    check_terms,
    uses_anchors,
)
from stylegan2_ada_kd.training.loss import DOutput, StyleGAN2Loss, d_logistic_loss
from torch_utils import training_stats

# ---------------------------------------------------------------- loss terms (pure functions)


def agkd_paper(
    s_r: torch.Tensor, s_f: torch.Tensor, t_r: torch.Tensor, t_f: torch.Tensor, cross: float
) -> torch.Tensor:
    """AGKD, KD-DLGAN Sec. 3.2 (default formulation): L1 between unit-norm student and teacher embeddings.

    ``|s_r - t_r|_1 + |s_f - t_f|_1 + cross * (|s_r - t_f|_1 + |s_f - t_r|_1)`` per sample, with all inputs
    ``[N, E]`` and ``s``/``t`` already L2-normalised. ``cross`` is the draw ``[q < p]`` (0 or 1; a bool
    works), or ``p`` for the expected loss. Returns ``[N]``.
    """
    loss = (s_r - t_r).abs().sum(1) + (s_f - t_f).abs().sum(1)
    if cross:
        loss = loss + float(cross) * ((s_r - t_f).abs().sum(1) + (s_f - t_r).abs().sum(1))
    return loss


def agkd_official(h_r: torch.Tensor, h_f: torch.Tensor, t_r: torch.Tensor, t_f: torch.Tensor) -> torch.Tensor:
    """AGKD as in the released code (KD-DLGAN Sec. 3.2): Euclidean distances of raw ``[N, E]`` embeddings,
    cross terms always on. Returns ``[N]`` (the released code averages it over the batch)."""
    dist = lambda a, b: (a - b).norm(dim=1)
    return dist(h_r, t_r) + dist(h_f, t_f) + dist(h_r, t_f) + dist(h_f, t_r)


def correlation(u: torch.Tensor, anchors: torch.Tensor, center: torch.Tensor | None = None) -> torch.Tensor:
    """Correlation rows ``[N, K]`` of embeddings ``u`` ``[N, E]`` (any scale) with anchors ``[K, E]``,
    each row L2-normalised, so C is invariant to the scale of u; entries in ``[-1, 1]``.

    ``center=None`` (prompt text anchors of a CLIP teacher): the paper's ``C(u) = n(u A^T)`` (KD-DLGAN
    Sec. 3.3). With the mean real embedding ``center`` ``[E]`` of an image-only teacher's anchors
    (kd/anchors.py): ``C_mu(u) = n((n(u) - mu) A^T)``, the same map for the student head's output and the
    teacher's target. The head regresses the teacher's uncentred embedding (AGKD), so centring both sides
    here, rather than the head's target, keeps ``s = t`` the minimum of AGKD and CGKD alike; ``n(u)`` first
    puts ``u`` on the unit sphere where ``mu`` lives (raw embeddings of the official variant included).
    """
    if center is not None:
        u = F.normalize(u, dim=1) - center
    return F.normalize(u @ anchors.t(), dim=1)


def _correlation_gaps(
    h_r: torch.Tensor,
    h_f: torch.Tensor,
    t_r: torch.Tensor,
    t_f: torch.Tensor,
    anchors: torch.Tensor,
    center: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``C(h_r) - C(t_r)`` and ``C(h_f) - C(t_f)``, each ``[N, K]`` (:func:`correlation`)."""
    corr = lambda u: correlation(u, anchors, center)
    return corr(h_r) - corr(t_r), corr(h_f) - corr(t_f)


def cgkd_paper(
    s_r: torch.Tensor,
    s_f: torch.Tensor,
    t_r: torch.Tensor,
    t_f: torch.Tensor,
    anchors: torch.Tensor,
    center: torch.Tensor | None = None,
) -> torch.Tensor:
    """CGKD, KD-DLGAN Sec. 3.3: ``|C(s_r) - C(t_r)|_1 + |C(s_f) - C(t_f)|_1`` summed over the K anchors.

    Inputs ``[N, E]``, anchors ``[K, E]``, ``center`` ``[E]`` or None (see :func:`correlation`); returns
    ``[N]``.
    """
    gap_r, gap_f = _correlation_gaps(s_r, s_f, t_r, t_f, anchors, center)
    return gap_r.abs().sum(1) + gap_f.abs().sum(1)


def cgkd_official(
    h_r: torch.Tensor,
    h_f: torch.Tensor,
    t_r: torch.Tensor,
    t_f: torch.Tensor,
    anchors: torch.Tensor,
    center: torch.Tensor | None = None,
) -> torch.Tensor:
    """CGKD as in the released code (KD-DLGAN Sec. 3.3): squared error of the row-normalised correlations
    of raw embeddings, summed over K. Inputs ``[N, E]``, anchors ``[K, E]``, ``center`` ``[E]`` or None (see
    :func:`correlation`); returns ``[N]`` (the released code sums it over the batch too: see
    :meth:`KDLoss.kd_terms_of`)."""
    gap_r, gap_f = _correlation_gaps(h_r, h_f, t_r, t_f, anchors, center)
    return gap_r.square().sum(1) + gap_f.square().sum(1)


def row_spread(corr: torch.Tensor) -> torch.Tensor:
    """How much correlation rows ``[N, K]`` vary across images (0-d, >= 0; 0 for N = 1).

    The standard deviation over the N images (population, divisor N) of each anchor's entry, averaged over
    the K anchors. Reported as ``Loss/kd/cgkd_row_spread`` on the teacher's rows of the real batch: near 0
    when every image has nearly the same row, so CGKD's target carries little per-image information.
    """
    return corr.std(0, unbiased=False).mean()


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


# ---------------------------------------------------------------- the cross draw, diagnostics


def cross_terms_on(seed: int, cur_nimg: int, p: float) -> bool:
    """AGKD's ``[q < p]``, q ~ U(0, 1) (KD-DLGAN Sec. 3.2), for the D step that starts at ``cur_nimg``.

    q is a function of ``(seed, cur_nimg)`` alone (a NumPy SeedSequence; the global RNGs are not touched),
    so every accumulation round and every process of one step draw the same q, and a resumed run, which
    reaches the same ``cur_nimg`` with the same seed, draws the same sequence.
    """
    if p >= 1:
        return True
    if p <= 0:
        return False
    q = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(cur_nimg)]).random()
    return bool(q < p)


def grad_norm_ratios(
    adv: torch.Tensor, terms: dict[str, torch.Tensor], params: Sequence[torch.Tensor]
) -> dict[str, float]:
    """``||grad(sum(terms))|| / ||grad(adv)||`` w.r.t. ``params`` as ``'grad_ratio'``, and one
    ``'grad_ratio_<name>'`` per term (0-d losses). Uses ``torch.autograd.grad``, so no ``.grad`` changes;
    NaN when the adversarial gradient is zero."""

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        out = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g.to(torch.float64) for p, g in zip(params, out)]

    norm = lambda gs: float(torch.sqrt(sum(g.square().sum() for g in gs)))
    adv_norm = norm(grads(adv))
    ratio = lambda value: value / adv_norm if adv_norm > 0 else float('nan')
    per_term = {name: grads(loss) for name, loss in terms.items()}
    total = [sum(gs) for gs in zip(*per_term.values())]
    out = {'grad_ratio': ratio(norm(total))}
    out.update({f'grad_ratio_{name}': ratio(norm(gs)) for name, gs in per_term.items()})
    return out


# ---------------------------------------------------------------- the loss class


class KDLoss(StyleGAN2Loss):
    """StyleGAN2 loss + lambda_A * AGKD + lambda_C * CGKD on D (+ optional diversity term on G).

    The constructor attaches the KD head to D. The training loop builds the loss before the optimizers
    and before D is broadcast across processes, so the head is in D's optimizer and starts equal on every
    rank (the loop checks the first; a head attached later would never train).
    """

    def __init__(
        self,
        device: torch.device,  # Device of G and D.
        G: torch.nn.Module,  # Generator.
        D: torch.nn.Module,  # Discriminator (a KD head is attached to it).
        augment_pipe: torch.nn.Module | None = None,  # What D sees; the teacher sees the same images.
        kd_terms: Sequence[str] = KD_TERMS,  # Any of 'aggregated', 'correlated'.
        teacher: str = DEFAULT_TEACHER,  # Teacher spec (see kd.teacher.load_teacher).
        teacher_weights: str | None = None,  # Local weights file for the teacher.
        variant: str = 'paper',  # 'paper' or 'official' formulation.
        agkd_weight: float = DEFAULT_WEIGHTS['paper'],  # lambda_A; per variant: variants.resolve_kd_settings.
        cgkd_weight: float = DEFAULT_WEIGHTS['paper'],  # lambda_C; the same.
        cross_p: float = PAPER_CROSS_P,  # P(AGKD cross terms) per D step; 1 for the official variant.
        seed: int = 0,  # Run seed: the cross-term draw of a step is a function of (seed, cur_nimg).
        div_weight: float = 0.0,  # Weight of the G-side diversity term; 0 = off.
        prompts: Sequence[str] | None = None,  # CGKD prompts (K >= 2) for a CLIP teacher.
        num_anchors: int = 16,  # K for a teacher without text: k-means prototypes of real embeddings.
        anchor_dataset: dict | None = None,  # Dataset kwargs (class_name, ...) for those prototypes.
        anchor_cache: str | None = None,  # File caching the prototypes (beside the run).
        teacher_embed_dim: int | None = None,  # Recorded in training_options.json; checked on load.
        **base_options,  # StyleGAN2Loss options (r1_gamma, pl_weight, ...); unknown names raise TypeError.
    ) -> None:
        super().__init__(device, G, D, augment_pipe, **base_options)
        self.kd_terms = check_terms(kd_terms)
        check_cross_p(variant, cross_p)
        self.variant = variant
        self.agkd_weight = float(agkd_weight)
        self.cgkd_weight = float(cgkd_weight)
        self.cross_p = float(cross_p)
        self.seed = int(seed)
        self.div_weight = div_weight
        self.teacher = load_teacher(teacher, teacher_weights, device=device)
        if self.teacher.is_random:  # repeated here so that the run's log.txt carries it
            print(random_warning(teacher))
        if teacher_embed_dim is not None and teacher_embed_dim != self.teacher.embed_dim:
            raise ValueError(
                f'teacher {teacher} embeds to {self.teacher.embed_dim}, expected {teacher_embed_dim}'
            )
        attach_kd_head(D, self.teacher.embed_dim, variant)  # before the loop builds D's optimizer
        self._teacher_timer = training_stats.Timer('Timing/kd_teacher_sec')
        self.anchors = None  # [K, E] A, when CGKD or the diversity term uses it
        self.anchor_center = None  # [E] mu of an image-only teacher's anchors; None for prompt anchors
        if uses_anchors(self.kd_terms, div_weight):
            self.anchors, self.anchor_center = self._anchors(
                prompts, num_anchors, anchor_dataset, anchor_cache
            )

    def describe(self) -> str:
        """The base loss line plus the KD terms, weights, teacher and anchors: 'CGKD anchors' with CGKD,
        'diversity anchors' when only the G-side diversity term uses them, nothing for AGKD alone."""
        terms = []
        if 'aggregated' in self.kd_terms:
            terms.append(f'{self.agkd_weight:g} * AGKD')
        if 'correlated' in self.kd_terms:
            sums = ' (summed over the batch)' if self.variant == 'official' else ''
            terms.append(f'{self.cgkd_weight:g} * CGKD{sums}')
        text = f'{super().describe()}; KD-DLGAN ({self.variant} variant): {" + ".join(terms)}'
        if 'aggregated' in self.kd_terms and self.variant == 'paper':
            text += f', cross-term p={self.cross_p:g}'
        if self.div_weight > 0:
            text += f', G diversity {self.div_weight:g}'
        text += f'; teacher {self.teacher.spec} ({self.teacher.embed_dim}-d'
        text += ', random weights)' if self.teacher.is_random else ')'
        if self.anchors is not None:
            kind = 'prompt text embeddings'
            if self.anchor_center is not None:
                kind = 'k-means prototypes of real images, centred on their mean embedding'
            user = 'CGKD' if 'correlated' in self.kd_terms else 'diversity'
            text += f'; {user} anchors: {self.anchors.shape[0]} {kind}'
        return text

    def _anchors(
        self, prompts: Sequence[str] | None, k: int, dataset_kwargs: dict | None, cache: str | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CGKD's anchor matrix A ``[K, E]`` and centre: text embeddings of the prompts and None (CLIP, the
        paper's form), or unit k-means prototypes of the real images' centred teacher embeddings and their
        mean ``mu`` ``[E]`` (teachers without text; kd/anchors.py)."""
        center = None
        if self.teacher.has_text:
            if not prompts or len(prompts) < 2:
                raise ValueError('CGKD needs at least 2 prompts (K >= 2); see --kd-prompts')
            anchors = self.teacher.encode_text(list(prompts))
        else:
            if dataset_kwargs is None:
                raise ValueError('CGKD with a teacher without text needs anchor_dataset (the training set)')
            dataset = open_dataset(dataset_kwargs)
            anchors, center = real_image_anchors(
                self.teacher, dataset, k, cache, device=self.device, variant=self.variant
            )
        if anchors.shape[0] < 2:
            raise ValueError(f'CGKD needs K >= 2 anchors; got {anchors.shape[0]}')
        anchors = anchors.to(self.device, torch.float32)
        if center is not None:
            center = center.to(self.device, torch.float32)
        return (F.normalize(anchors, dim=1) if self.variant == 'paper' else anchors), center

    def _teacher(self, img: torch.Tensor, timed: bool = True) -> torch.Tensor:
        """Teacher embedding ``[N, E]`` float32 of the images D saw (no gradient); with ``timed`` its time
        is reported as ``Timing/kd_teacher_sec`` (GPU time on CUDA)."""
        with torch.no_grad():
            if not timed:
                return self.teacher.encode_image(img.detach(), variant=self.variant)
            with self._teacher_timer.time(img.device):
                return self.teacher.encode_image(img.detach(), variant=self.variant)

    def kd_terms_of(
        self, real: DOutput, fake: DOutput, cross: float, in_step: bool = True
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The enabled KD terms ``{'agkd' | 'cgkd': (value [N], weighted [N])}`` of one real/fake pair of
        batches (KD-DLGAN Sec. 3.2-3.3). ``cross``: weight of AGKD's cross terms (paper variant).
        ``in_step``: D's main phase; reports ``Loss/kd/agkd`` / ``cgkd`` (the unweighted per-sample values),
        ``Loss/kd/cgkd_row_spread`` (:func:`row_spread` of the teacher's rows of the reals) and the teacher's
        time; False (diagnostics): reports nothing.

        ``weighted`` is what D's per-sample loss gets, so that its batch mean is the loss that runs:
        ``lambda_A * AGKD`` and ``lambda_C * CGKD`` (paper and official AGKD: batch means), and for the
        official CGKD ``lambda_C * N * CGKD``, whose batch mean is the released code's sum over the batch.
        """
        t_r, t_f = self._teacher(torch.cat([real.img, fake.img]), in_step).split(
            [len(real.img), len(fake.img)]
        )
        h_r, h_f = real.features[HEAD_NAME].float(), fake.features[HEAD_NAME].float()
        if self.variant == 'paper':
            h_r, h_f, t_r, t_f = (F.normalize(v, dim=1) for v in (h_r, h_f, t_r, t_f))
        out = {}
        if 'aggregated' in self.kd_terms:
            if self.variant == 'paper':
                agkd = agkd_paper(h_r, h_f, t_r, t_f, cross)
            else:
                agkd = agkd_official(h_r, h_f, t_r, t_f)
            out['agkd'] = (agkd, self.agkd_weight * agkd)
        if 'correlated' in self.kd_terms:
            cgkd_fn = cgkd_paper if self.variant == 'paper' else cgkd_official
            cgkd = cgkd_fn(h_r, h_f, t_r, t_f, self.anchors, self.anchor_center)
            batch_sum = len(cgkd) if self.variant == 'official' else 1
            out['cgkd'] = (cgkd, self.cgkd_weight * batch_sum * cgkd)
            if in_step:
                spread = row_spread(correlation(t_r, self.anchors, self.anchor_center))
                training_stats.report('Loss/kd/cgkd_row_spread', spread)
        if in_step:
            for name, (value, _weighted) in out.items():
                training_stats.report(f'Loss/kd/{name}', value)
        return out

    def d_main_terms(
        self, real: DOutput, fake: DOutput, real_c: torch.Tensor, gen_c: torch.Tensor, cur_nimg: int
    ) -> torch.Tensor:
        """Adversarial loss + lambda_A * AGKD + lambda_C * CGKD per sample ``[N, 1]`` (the KD stats are
        reported by :meth:`kd_terms_of`); ``cur_nimg`` (images before this step) sets the cross draw."""
        loss = super().d_main_terms(real, fake, real_c, gen_c, cur_nimg)
        cross = cross_terms_on(self.seed, cur_nimg, self.cross_p)  # q ~ U(0, 1), once per D step
        kd = torch.zeros_like(loss[:, 0])
        for _value, weighted in self.kd_terms_of(real, fake, cross).values():
            kd = kd + weighted
        return loss + kd.unsqueeze(1)

    def tick_diagnostics(
        self, real_img: torch.Tensor, real_c: torch.Tensor, gen_z: torch.Tensor, gen_c: torch.Tensor
    ) -> dict[str, dict]:
        """How strongly KD pulls on D, once per tick: ``Loss/kd/grad_ratio`` = ``||g_kd|| / ||g_adv||``.

        On one batch (reals ``[N, C, H, W]`` in ``[-1, 1]``, labels ``[N, c_dim]``, latents ``[N, z_dim]``),
        augmented as Dmain does: ``g_adv`` is the gradient of D's mean logistic loss and ``g_kd`` that of the
        weighted KD terms (AGKD's cross terms at their expected weight p), both w.r.t. D's trunk (every
        parameter outside ``D.heads``). Also ``Loss/kd/grad_ratio_agkd`` / ``_cgkd`` per term. Uses
        ``torch.autograd.grad``: no ``.grad``, loss state, G's ``w_avg`` or stat report is touched.
        """
        params = list(self.D.parameters())
        flags = [p.requires_grad for p in params]
        trunk = [p for name, p in self.D.named_parameters() if not name.startswith('heads.')]
        try:
            self.D.requires_grad_(False)
            for p in trunk:
                p.requires_grad_(True)
            with torch.no_grad():
                gen_img, _ws = self.run_G(gen_z, gen_c, update_emas=False)
            fake, real = self.run_D(gen_img, gen_c), self.run_D(real_img.detach(), real_c)
            adv = d_logistic_loss(real.logits, fake.logits).mean()
            terms = self.kd_terms_of(real, fake, self.cross_p, in_step=False)
            ratios = grad_norm_ratios(adv, {name: w.mean() for name, (_v, w) in terms.items()}, trunk)
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
        return {f'Loss/kd/{name}': {'num': 1, 'mean': value, 'std': 0.0} for name, value in ratios.items()}

    def g_main_terms(self, fake: DOutput, gen_c: torch.Tensor) -> torch.Tensor:
        """G's adversarial loss (+ div_weight * pairwise diversity of the teacher's correlation rows)."""
        loss = super().g_main_terms(fake, gen_c)
        if self.div_weight == 0:
            return loss
        t_f = self.teacher.encode_image(fake.img, variant=self.variant)  # gradient flows to G's images
        div = pairwise_diversity(correlation(t_f, self.anchors, self.anchor_center))
        training_stats.report('Loss/kd/div', div)
        return loss + self.div_weight * div
