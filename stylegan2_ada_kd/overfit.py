"""Discriminator overfitting diagnostics (Karras et al. 2020, "Training GANs with limited data", Sec. 2).

Once D memorises its training set, its outputs on real images it has *not* trained on drift from those on
the training reals towards those on the fakes. With ``--holdout=N``, N images are kept out of training and
:class:`OverfitMonitor` reports once per tick the mean raw logit of D on a fixed sample of training reals,
on the held-out reals and on fakes of fixed latents, all without augmentation, plus the normalised gap::

    Overfit/gap = (D_train - D_holdout) / (D_train - D_fake)

0 means D scores held-out reals like training reals; 1 means it scores them like fakes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dnnlib.util import construct_class_by_name

MAX_IMAGES = 256  # Images per group (training reals, held-out reals, fakes): enough for a stable mean.


class OverfitMonitor:
    """Mean D logits on training reals, held-out reals and fakes, for ``stats.jsonl`` once per tick.

    The held-out split is opened from ``dataset_kwargs`` with ``split='holdout'`` and without x-flips, and
    checked against ``holdout_files``; the training-reals sample is drawn from ``training_set``. Each group
    has at most the held-out count and :data:`MAX_IMAGES` images.
    """

    def __init__(
        self,
        dataset_kwargs: dict,  # The training set's kwargs (with class_name and holdout > 0).
        holdout_files: list,  # The held-out file names recorded in training_options.json.
        num_images: int,  # Images per group (capped, see above).
        training_set: Any,  # The training dataset the loop uses.
        z_dim: int,  # G's latent size.
        device: torch.device,  # Where D and G run.
        batch: int,  # Images per D/G call (batch_gpu; a multiple of D's minibatch-std group).
        seed: int = 0,  # Seed of the training sample and of the fakes' latents.
    ) -> None:
        kwargs = dict(dataset_kwargs, split='holdout', xflip=False, max_size=None)
        held = construct_class_by_name(**kwargs)
        if held.files != list(holdout_files):
            raise ValueError(
                'the held-out images of this dataset differ from holdout_files in the options '
                '(the dataset changed since they were chosen); start a new run or restore the dataset'
            )
        count = min(int(num_images), len(held), MAX_IMAGES)
        rnd = np.random.RandomState(seed)
        num_train = len(training_set.files)  # without mirrored copies
        train_idx = np.sort(rnd.choice(num_train, size=min(count, num_train), replace=False))
        self.device, self.batch = device, int(batch)
        self.real = {
            'train': _stack([training_set[int(i)] for i in train_idx], device),
            'holdout': _stack([held[i] for i in range(count)], device),
        }
        gen = torch.Generator().manual_seed(seed)
        self.fake_z = torch.randn([count, z_dim], generator=gen)
        self.fake_c = self.real['train'][1][torch.arange(count) % len(train_idx)].cpu()

    @torch.no_grad()
    def stats(self, G: torch.nn.Module, D: torch.nn.Module) -> dict:
        """``{'Overfit/D_train' | 'D_holdout' | 'D_fake' | 'gap': {'num', 'mean', 'std'}}`` for this tick.

        ``G`` makes the fakes (the generator D currently trains against; const noise), ``D`` scores all.
        """
        z, c = self.fake_z.to(self.device), self.fake_c.to(self.device)
        chunks = zip(z.split(self.batch), c.split(self.batch))
        fakes = torch.cat([G(zz, cc, noise_mode='const') for zz, cc in chunks])
        logits = {name: self._logits(D, img, lab) for name, (img, lab) in self.real.items()}
        logits['fake'] = self._logits(D, fakes, c)
        out = {
            f'Overfit/D_{name}': {'num': len(v), 'mean': float(v.mean()), 'std': float(v.std(unbiased=False))}
            for name, v in logits.items()
        }
        means = {name: float(v.mean()) for name, v in logits.items()}
        spread = means['train'] - means['fake']
        gap = (means['train'] - means['holdout']) / spread if abs(spread) > 1e-8 else float('nan')
        out['Overfit/gap'] = {'num': 1, 'mean': gap, 'std': 0.0}
        return out

    def _logits(self, D: torch.nn.Module, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """D's raw logits ``[N]`` for images ``[N, C, H, W]`` in [-1, 1], in chunks of ``batch`` images.

        The last chunk is padded with repeats to a full chunk (minibatch-std groups need whole groups) and
        the padding's outputs are dropped.
        """
        out = []
        for start in range(0, len(img), self.batch):
            chunk, lab = img[start : start + self.batch], c[start : start + self.batch]
            n = len(chunk)
            pad = torch.arange(self.batch) % n
            out.append(D(chunk[pad], lab[pad]).flatten()[:n].float())
        return torch.cat(out).cpu()


def _stack(items: list, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Dataset items -> images float32 ``[N, C, H, W]`` in [-1, 1] and labels ``[N, L]`` on ``device``."""
    img = torch.from_numpy(np.stack([image for image, _ in items])).to(device).to(torch.float32) / 127.5 - 1
    return img, torch.from_numpy(np.stack([label for _, label in items])).to(device)
