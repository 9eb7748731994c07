"""Discriminator overfitting diagnostics (Karras et al. 2020, "Training GANs with limited data", Sec. 2).

Once D memorises its training set, its outputs on real images it has *not* trained on drift from those on
the training reals towards those on the fakes. With ``--holdout=N``, N images are kept out of training and
:class:`OverfitMonitor` reports once per tick the mean raw logit of D on a fixed sample of training reals,
on the held-out reals and on fakes of fixed latents, all without augmentation, plus the normalised gap::

    Overfit/gap = (D_train - D_holdout) / (D_train - D_fake)

0 means D scores held-out reals like training reals; 1 means it scores them like fakes. The gap does not
change when D's logits are scaled or shifted as a whole, but it does under any other monotone change of
them (saturation, say), it moves with the fakes (the denominator) and it is a ratio of means of 20-odd
logits, so one tick of it is noisy. Hence also::

    Overfit/auc = P(D(x_train) > D(x_holdout)) + P(D(x_train) = D(x_holdout)) / 2

the ROC AUC of D's raw logits separating every training image (positives) from every held-out one
(negatives), :func:`roc_auc`: 0.5 = D cannot tell them apart, 1 = it ranks every training image above
every held-out one. It depends on the order of the logits only (no fakes, no scale), so no monotone
squashing of D's outputs, by KD or anything else, changes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from stylegan2_ada_kd.training.contracts import TickStats
from torch_utils.misc import uint8_to_unit

MAX_IMAGES = 256  # Images per group of the mean logits and the gap (training reals, held-out reals, fakes).
# Images per side of the AUC: every training and held-out image of a few-shot set (no x-flips); a larger
# set is sampled with the seed. Cost, measured on 2 CPU cores at 32x32 with stage 2's networks (cbase 4096,
# cmax 128, batch 32, --holdout=20 of 100): the 80 training images add 0.35 s per tick (the whole monitor
# 0.75 s), about 1% of that run's 32-s tick of 1 kimg; the held-out logits of the means are reused.
MAX_AUC_IMAGES = 1024


class OverfitMonitor:
    """Mean D logits on training reals, held-out reals and fakes, and the train/held-out AUC, once per tick.

    The held-out images are ``training_set.holdout_split()`` (no x-flips, no second opening), checked against
    ``holdout_files``; the training reals come from ``training_set``. For the means each
    group has at most the held-out count and :data:`MAX_IMAGES` images (the training ones a seeded
    sample); the AUC takes all training and all held-out images, at most :data:`MAX_AUC_IMAGES` each.
    Images stay on the CPU as uint8 and go to ``device`` one chunk at a time. The training loop builds the
    monitor on rank 0 only, so the stats are computed and written once per tick. It implements the
    monitor contract :class:`stylegan2_ada_kd.training.contracts.TickReporter`.
    """

    def __init__(
        self,
        holdout_files: list,  # The held-out file names recorded in training_options.json.
        training_set: Any,  # The training dataset the loop uses (opened with holdout > 0).
        z_dim: int,  # G's latent size.
        device: torch.device,  # Where D and G run.
        batch: int,  # Images per D/G call (batch_gpu; a multiple of D's minibatch-std group).
        seed: int = 0,  # Seed of the training samples and of the fakes' latents.
    ) -> None:
        held = training_set.holdout_split()
        if held.files != list(holdout_files):
            raise ValueError(
                'the held-out images of this dataset differ from holdout_files in the options '
                '(the dataset changed since they were chosen); start a new run or restore the dataset'
            )
        count = min(len(held), MAX_IMAGES)
        rnd = np.random.RandomState(seed)
        num_train = len(training_set.files)  # without mirrored copies
        train_idx = np.sort(rnd.choice(num_train, size=min(count, num_train), replace=False))
        auc_idx = np.sort(rnd.choice(num_train, size=min(num_train, MAX_AUC_IMAGES), replace=False))
        self.device, self.batch = device, int(batch)
        self.real = {
            'train': _stack([training_set[int(i)] for i in train_idx]),
            'holdout': _stack([held[i] for i in range(count)]),
        }
        self.auc_train = _stack([training_set[int(i)] for i in auc_idx])
        num_held = min(len(held), MAX_AUC_IMAGES)  # the same as the means' held-out group unless capped
        self.auc_holdout = _stack([held[i] for i in range(num_held)]) if num_held != count else None
        gen = torch.Generator().manual_seed(seed)
        self.fake_z = torch.randn([count, z_dim], generator=gen)
        self.fake_c = self.real['train'][1][torch.arange(count) % len(train_idx)]

    @torch.no_grad()
    def stats(self, G: torch.nn.Module, D: torch.nn.Module) -> TickStats:
        """``{'Overfit/D_train' | 'D_holdout' | 'D_fake' | 'gap' | 'auc': {'num', 'mean', 'std'}}``.

        ``G`` makes the fakes (the generator D currently trains against; const noise; in eval mode, so that
        measuring leaves G's running mean ``w_avg`` alone), ``D`` scores all. ``Overfit/auc`` has ``num`` =
        training x held-out pairs compared.
        """
        z, c = self.fake_z.to(self.device), self.fake_c.to(self.device)
        chunks = zip(z.split(self.batch), c.split(self.batch))
        was_training = G.training
        G.eval()
        fakes = torch.cat([G(zz, cc, noise_mode='const') for zz, cc in chunks])
        G.train(was_training)
        logits = {name: self._logits(D, img, lab) for name, (img, lab) in self.real.items()}
        logits['fake'] = self._logits(D, fakes, c)
        out = {
            f'Overfit/D_{name}': {'num': len(v), 'mean': float(v.mean()), 'std': float(v.std(unbiased=False))}
            for name, v in logits.items()
        }
        gap = normalised_gap(logits['train'], logits['holdout'], logits['fake'])
        out['Overfit/gap'] = {'num': 1, 'mean': gap, 'std': 0.0}
        pos = self._logits(D, *self.auc_train)
        neg = logits['holdout'] if self.auc_holdout is None else self._logits(D, *self.auc_holdout)
        out['Overfit/auc'] = {'num': len(pos) * len(neg), 'mean': roc_auc(pos, neg), 'std': 0.0}
        return out

    def _logits(self, D: torch.nn.Module, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """D's raw logits ``[N]`` for images ``[N, C, H, W]``: uint8 in [0, 255] (reals, moved to the device
        and mapped to [-1, 1] one chunk at a time) or float in [-1, 1] (fakes), in chunks of ``batch``.

        The last chunk is padded with repeats to a full chunk (minibatch-std groups need whole groups) and
        the padding's outputs are dropped.
        """
        out = []
        for start in range(0, len(img), self.batch):
            chunk, lab = img[start : start + self.batch], c[start : start + self.batch]
            n = len(chunk)
            pad = torch.arange(self.batch) % n
            chunk, lab = chunk[pad].to(self.device), lab[pad].to(self.device)
            if chunk.dtype == torch.uint8:
                chunk = uint8_to_unit(chunk)
            out.append(D(chunk, lab).flatten()[:n].float())
        return torch.cat(out).cpu()


def normalised_gap(train: torch.Tensor, holdout: torch.Tensor, fake: torch.Tensor) -> float:
    """``(mean(train) - mean(holdout)) / (mean(train) - mean(fake))`` of D's logits ``[N]`` per group.

    0 = held-out reals scored like training reals, 1 = like fakes; NaN when training reals and fakes
    have the same mean (|difference| <= 1e-8).
    """
    mean_train, mean_holdout, mean_fake = (float(v.mean()) for v in (train, holdout, fake))
    spread = mean_train - mean_fake
    return (mean_train - mean_holdout) / spread if abs(spread) > 1e-8 else float('nan')


def roc_auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Exact ROC AUC in [0, 1] of scores ``pos`` ``[P]`` (positives) against ``neg`` ``[Q]`` (negatives).

    The Mann-Whitney U over all ``P * Q`` pairs divided by ``P * Q``: a pair counts 1 when the positive
    scores higher and 1/2 when they tie. 0.5 = no separation. NaN when a score is NaN.
    """
    if bool(pos.isnan().any() or neg.isnan().any()):
        return float('nan')
    pos, neg = pos.double()[:, None], neg.double()[None, :]
    return float((pos > neg).double().mean() + 0.5 * (pos == neg).double().mean())


def _stack(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Dataset items -> uint8 images ``[N, C, H, W]`` in [0, 255] and labels ``[N, L]``, on the CPU."""
    img = torch.from_numpy(np.stack([image for image, _ in items]))
    return img, torch.from_numpy(np.stack([label for _, label in items]))
