"""StyleGAN2 losses: non-saturating logistic loss, lazy R1 and path-length regularisation.

Goodfellow et al. 2014 (non-saturating G loss); Mescheder et al. 2018, Eq. 9 (R1); Karras et al.
2020 (StyleGAN2), Sec. 3.2 (path-length regularisation, Eq. 4) and Sec. 3.1 (lazy regularisation).

:class:`StyleGAN2Loss` implements the loss contract :class:`stylegan2_ada_kd.training.contracts.Loss`. Plugins
subclass it and extend :meth:`d_main_terms` / :meth:`g_main_terms`, which see D's logits, features
(``Discriminator(return_features=True)``) and the augmented images; :meth:`d_main_terms` also gets the
step's image count ``cur_nimg`` (for per-step draws such as KD-DLGAN's cross terms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stylegan2_ada_kd.training.contracts import Loss
from torch_utils import distributed, training_stats
from torch_utils.misc import assert_shape

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')
SIGNS_STAT = 'Loss/signs/{kind}'  # Signs of D's raw logits for kind 'real' / 'fake'.
REAL_SIGNS_STAT = SIGNS_STAT.format(kind='real')  # What ADA's overfitting heuristic r_t reads.


# ---------------------------------------------------------------- loss terms (pure functions)


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's logistic loss per sample ``softplus(D(G(z))) + softplus(-D(x))``: ``[N, 1]`` each -> ``[N, 1]``."""
    return F.softplus(fake_logits) + F.softplus(-real_logits)


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's non-saturating loss per sample ``softplus(-D(G(z)))``: ``[N, 1]`` -> ``[N, 1]``."""
    return F.softplus(-fake_logits)


def r1_penalty(real_logits: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """Squared gradient norm ``||dD(x)/dx||^2`` per sample (Mescheder et al. 2018, Eq. 9): ``[N]``.

    ``real_img`` ``[N, C, H, W]`` must require grad and ``real_logits`` ``[N, 1]`` depend on it; the
    graph is kept so the penalty can be backpropagated to D's weights.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)
    return grad.square().sum(dim=[1, 2, 3])


def path_lengths(
    img: torch.Tensor,  # Images [N, C, H, W] generated from ws.
    ws: torch.Tensor,  # Latents [N, num_ws, w_dim] that require grad.
) -> torch.Tensor:
    """Jacobian-vector norms ``||J_w^T y||_2`` with ``y ~ N(0, I) / sqrt(H W)`` (StyleGAN2, Eq. 4).

    Returns ``[N]`` lengths, differentiable w.r.t. G's weights.
    """
    y = torch.randn_like(img) / np.sqrt(img.shape[2] * img.shape[3])
    (grad,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()


def path_length_penalty(
    lengths: torch.Tensor,  # Path lengths [N] from path_lengths(), differentiable.
    pl_mean: torch.Tensor,  # 0-d running mean (no gradient).
    pl_decay: float,  # Weight of this batch's mean, in [0, 1].
    batch_mean: torch.Tensor | None = None,  # 0-d mean path length of the batch; None = lengths.mean().
) -> tuple[torch.Tensor, torch.Tensor]:
    """Path-length penalty ``(|J^T y| - a)^2`` per sample (StyleGAN2, Eq. 4) and the updated mean ``a``.

    ``a = pl_mean + pl_decay * (batch_mean - pl_mean)`` is the running mean updated with this batch;
    it stays in the autograd graph, so the penalty's gradient includes the term through ``a`` (as in
    the reference trainer). Store ``a.detach()`` as the next step's ``pl_mean``. ``batch_mean`` is
    differentiable. Returns ``([N] penalty, 0-d updated mean)``.
    """
    pl_mean_new = pl_mean.lerp(lengths.mean() if batch_mean is None else batch_mean, pl_decay)
    return (lengths - pl_mean_new).square(), pl_mean_new


def lecam_penalty(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, ema_real: torch.Tensor, ema_fake: torch.Tensor
) -> torch.Tensor:
    """LeCam regulariser (Tseng et al., CVPR 2021, Eq. 3): ``(D(x) - a_F)^2 + (D(G(z)) - a_R)^2``.

    ``a_R``/``a_F`` are EMAs of D's mean real/fake outputs (0-d); logits ``[N, 1]``; returns ``[N]``.
    """
    return (real_logits - ema_fake).square().squeeze(1) + (fake_logits - ema_real).square().squeeze(1)


def style_mix(ws: torch.Tensor, ws_other: torch.Tensor, prob: float) -> torch.Tensor:
    """With probability ``prob`` replace the ws after a random cutoff in ``[1, num_ws)`` by ``ws_other``.

    One cutoff is drawn per call: ``[N, num_ws, w_dim]`` x2 -> ``[N, num_ws, w_dim]``.
    """
    num_ws = ws.shape[1]
    if prob <= 0 or num_ws < 2 or torch.rand([]).item() >= prob:
        return ws
    cutoff = int(torch.randint(1, num_ws, []).item())
    return torch.cat([ws[:, :cutoff], ws_other[:, cutoff:]], dim=1)


# ---------------------------------------------------------------- the loss class


@dataclass
class DOutput:
    """What D returned for one batch: logits ``[N, 1]``, features ``{'fc': [N, C], heads...}`` and
    the (augmented) images ``[N, C, H, W]`` that D actually saw."""

    logits: torch.Tensor
    features: dict
    img: torch.Tensor


class StyleGAN2Loss(Loss):
    """Non-saturating logistic GAN loss with lazy R1 and path-length regularisation (StyleGAN2-ADA)."""

    def __init__(
        self,
        device: torch.device,  # Device of G and D.
        G: torch.nn.Module,  # Generator (training copy).
        D: torch.nn.Module,  # Discriminator.
        augment_pipe: torch.nn.Module | None = None,  # Applied to every image D sees; None = off.
        r1_gamma: float = 10,  # R1 weight gamma; the penalty is gamma / 2 * ||grad||^2.
        style_mixing_prob: float = 0.9,  # Probability of style mixing per G batch.
        pl_weight: float = 2,  # Path-length penalty weight; 0 = off.
        pl_batch_shrink: int = 2,  # Path-length batch = batch_gpu // pl_batch_shrink.
        pl_decay: float = 0.01,  # Decay of the running mean path length.
        lecam_weight: float = 0.0,  # LeCam regularisation weight (Tseng et al. 2021); 0 = off.
        lecam_decay: float = 0.99,  # Decay of LeCam's EMAs of D's real and fake outputs.
    ) -> None:
        self.device = device
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.pl_weight = pl_weight
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_mean = torch.zeros([], device=device)
        self.lecam_weight = lecam_weight
        self.lecam_decay = lecam_decay
        self.lecam_ema = torch.zeros([2], device=device)  # [a_R, a_F]

    def describe(self) -> str:
        """One line for log.txt: the loss class and its weights (subclasses append their terms)."""
        text = (
            f'{type(self).__name__}: r1_gamma={self.r1_gamma:g}, pl_weight={self.pl_weight:g}, '
            f'style_mixing={self.style_mixing_prob:g}'
        )
        if self.lecam_weight > 0:
            text += f', lecam={self.lecam_weight:g} (decay {self.lecam_decay:g})'
        return text

    # ------------------------------------------------------------ state for exact resume

    def state_dict(self) -> dict:
        """Loss state to checkpoint (running mean path length)."""
        return {
            'pl_mean': self.pl_mean.detach().cpu().clone(),
            'lecam_ema': self.lecam_ema.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        self.pl_mean = state['pl_mean'].to(self.device).clone()
        self.lecam_ema = state.get('lecam_ema', torch.zeros([2])).to(self.device).clone()

    # ------------------------------------------------------------ network calls

    def run_G(
        self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate ``[N, C, H, W]`` images and their ``[N, num_ws, w_dim]`` ws from ``z [N, z_dim]``, ``c``.

        ``update_emas``: let the mapping update its running mean ``w_avg`` (train mode only).
        """
        ws = self.G.mapping(z, c, skip_w_avg_update=not update_emas)
        if self.style_mixing_prob > 0:
            ws_other = self.G.mapping(torch.randn_like(z), c, skip_w_avg_update=True)
            ws = style_mix(ws, ws_other, self.style_mixing_prob)
        return self.G.synthesis(ws), ws

    def augment(self, img: torch.Tensor) -> torch.Tensor:
        """Apply the augmentation that D sees to ``[N, C, H, W]`` images (identity when off)."""
        return self.augment_pipe(img) if self.augment_pipe is not None else img

    def run_D(self, img: torch.Tensor, c: torch.Tensor) -> DOutput:
        """Augment ``[N, C, H, W]`` images and score them, keeping D's features for plugins."""
        img_aug = self.augment(img)
        logits, features = self.D(img_aug, c, return_features=True)
        return DOutput(logits=logits, features=features, img=img_aug)

    # ------------------------------------------------------------ extension points

    def g_main_terms(self, fake: DOutput, gen_c: torch.Tensor) -> torch.Tensor:
        """G's main loss per sample ``[N, 1]`` (or ``[N]``); plugins add their G-side terms here."""
        loss = g_nonsaturating_loss(fake.logits)
        training_stats.report('Loss/G/loss', loss)
        return loss

    def d_main_terms(
        self,
        real: DOutput,  # D's view of the reals.
        fake: DOutput,  # D's view of the fakes.
        real_c: torch.Tensor,  # [N, c_dim] real labels.
        gen_c: torch.Tensor,  # [N, c_dim] labels of the fakes.
        cur_nimg: int,  # Images shown before this step (for per-step draws and schedules in plugins).
    ) -> torch.Tensor:
        """D's main loss per sample ``[N, 1]`` (or ``[N]``); plugins add their D-side terms here."""
        loss = d_logistic_loss(real.logits, fake.logits)
        training_stats.report('Loss/D/loss', loss)
        if self.lecam_weight > 0:
            # Batch means over all processes, so every process keeps the same EMAs (and the snapshot, written
            # by rank 0, holds the state of all of them).
            means = distributed.mean_over_processes(torch.stack([real.logits.mean(), fake.logits.mean()]))
            self.lecam_ema = means.lerp(self.lecam_ema, self.lecam_decay)
            penalty = lecam_penalty(real.logits, fake.logits, self.lecam_ema[0], self.lecam_ema[1])
            training_stats.report('Loss/D/lecam', penalty)
            loss = loss + self.lecam_weight * penalty.unsqueeze(1)
        return loss

    # ------------------------------------------------------------ phases

    def accumulate_gradients(
        self,
        phase: str,  # One of PHASES.
        real_img: torch.Tensor,  # [N, C, H, W] float32 reals in [-1, 1].
        real_c: torch.Tensor,  # [N, c_dim] real labels.
        gen_z: torch.Tensor,  # [N, z_dim] latents.
        gen_c: torch.Tensor,  # [N, c_dim] labels for the fakes.
        gain: float,  # Loss multiplier (the reg interval for lazy regularisation phases).
        cur_nimg: int,  # Images shown before this step (passed on to d_main_terms).
    ) -> None:
        """Compute the loss of ``phase`` on one chunk and backpropagate ``loss * gain``."""
        if phase not in PHASES:
            raise ValueError(f'unknown phase {phase!r}; expected one of {PHASES}')
        assert_shape(real_img, [gen_z.shape[0], None, None, None], 'real_img')
        if phase in ('Gmain', 'Gboth'):
            self._g_main(gen_z, gen_c, gain)
        if phase in ('Greg', 'Gboth') and self.pl_weight > 0:
            self._g_pl(gen_z, gen_c, gain)
        do_main = phase in ('Dmain', 'Dboth')
        do_r1 = phase in ('Dreg', 'Dboth') and self.r1_gamma > 0
        if do_main or do_r1:
            self._d_phase(real_img, real_c, gen_z, gen_c, gain, cur_nimg, do_main, do_r1)

    def _g_main(self, gen_z: torch.Tensor, gen_c: torch.Tensor, gain: float) -> None:
        img, _ws = self.run_G(gen_z, gen_c)
        fake = self.run_D(img, gen_c)
        _report_scores('fake', fake.logits)
        self.g_main_terms(fake, gen_c).mean().mul(gain).backward()

    def _g_pl(self, gen_z: torch.Tensor, gen_c: torch.Tensor, gain: float) -> None:
        n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
        img, ws = self.run_G(gen_z[:n], gen_c[:n])
        lengths = path_lengths(img, ws)
        # The value is the mean over all processes (so pl_mean is the same everywhere and the snapshot holds
        # it), the gradient that of this process's mean, as in a single-process run.
        local = lengths.mean()
        batch_mean = local + (distributed.mean_over_processes(local) - local.detach())
        penalty, pl_mean_new = path_length_penalty(lengths, self.pl_mean, self.pl_decay, batch_mean)
        self.pl_mean = pl_mean_new.detach()
        training_stats.report('Loss/pl_penalty', penalty)
        loss = penalty * self.pl_weight
        training_stats.report('Loss/G/reg', loss)
        # img[:, 0, 0, 0] * 0 keeps every synthesis output in the graph (all ranks step the same params).
        (img[:, 0, 0, 0] * 0 + loss).mean().mul(gain).backward()

    def _d_phase(
        self,
        real_img: torch.Tensor,
        real_c: torch.Tensor,
        gen_z: torch.Tensor,
        gen_c: torch.Tensor,
        gain: float,
        cur_nimg: int,
        do_main: bool,
        do_r1: bool,
    ) -> None:
        """D's main loss and/or R1 on one chunk. D scores the (augmented) reals once, and that pass
        reports :data:`REAL_SIGNS_STAT` in every D phase (the ADA heuristic reads it, as in the reference)."""
        loss = torch.zeros([], device=real_img.device)
        fake = None
        if do_main:
            with torch.no_grad():
                gen_img, _ws = self.run_G(gen_z, gen_c)
            fake = self.run_D(gen_img, gen_c)
            _report_scores('fake', fake.logits)
        real_img = real_img.detach().requires_grad_(do_r1)
        real = self.run_D(real_img, real_c)
        _report_scores('real', real.logits)
        if fake is not None:
            loss = loss + self.d_main_terms(real, fake, real_c, gen_c, cur_nimg).mean()
        if do_r1:
            penalty = r1_penalty(real.logits, real_img)
            training_stats.report('Loss/r1_penalty', penalty)
            reg = penalty * (self.r1_gamma / 2)
            training_stats.report('Loss/D/reg', reg)
            # real.logits * 0 keeps D's output layer in the graph of a pure R1 step (all ranks alike).
            loss = loss + (real.logits.squeeze(1) * 0 + reg).mean()
        loss.mul(gain).backward()


def _report_scores(kind: str, logits: torch.Tensor) -> None:
    """Report D's raw scores and their signs (the ADA overfitting heuristic r_t reads the real signs)."""
    training_stats.report(f'Loss/scores/{kind}', logits)
    training_stats.report(SIGNS_STAT.format(kind=kind), logits.sign())
