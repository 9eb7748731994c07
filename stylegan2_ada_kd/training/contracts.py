"""What the training loop requires of the objects it builds from ``*_kwargs`` and calls, declared.

:class:`Loss` is the loss contract (``loss_kwargs``; :class:`~stylegan2_ada_kd.training.loss.StyleGAN2Loss`
implements it and plugins subclass that): three required methods and two optional hooks with defaults, so
the loop calls every one of them directly. :class:`TickReporter` is the once-per-tick monitor contract
(``overfit_kwargs``; :class:`~stylegan2_ada_kd.training.overfit.OverfitMonitor`). Per-tick output of both
has the shape of :data:`TickStats`, the shape ``training_stats`` collects, so the loop merges it into the
tick's statistics without knowing any name. :class:`Augmentation` is what the loop and the loss ask of the
augmentation (``augment_kwargs``; :class:`~stylegan2_ada_kd.augment.ada.AugmentPipe`,
:class:`~stylegan2_ada_kd.augment.diffaugment.DiffAugment`).
"""

from __future__ import annotations

import abc
from typing import Protocol

import torch

TickStats = dict[str, dict]  # {stat name: {'num': count, 'mean': float, 'std': float}}, one entry per stat.


class Loss(abc.ABC):
    """The loss contract. Constructed as ``Loss(device, G, D, augment_pipe, **own_options)``.

    Required: :meth:`accumulate_gradients`, :meth:`state_dict` and :meth:`load_state_dict`. Optional hooks
    with defaults: :meth:`describe` (the class name) and :meth:`tick_diagnostics` (no stats).
    """

    @abc.abstractmethod
    def accumulate_gradients(
        self,
        phase: str,  # 'Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg' or 'Dboth'.
        real_img: torch.Tensor,  # [N, C, H, W] float32 reals in [-1, 1].
        real_c: torch.Tensor,  # [N, c_dim] real labels.
        gen_z: torch.Tensor,  # [N, z_dim] latents.
        gen_c: torch.Tensor,  # [N, c_dim] labels for the fakes.
        gain: float,  # Loss multiplier (the reg interval for lazy regularisation phases).
        cur_nimg: int,  # Images shown before this step: the same in every round and process of one step.
    ) -> None:
        """Compute the loss of ``phase`` on one batch_gpu chunk and backpropagate ``loss * gain``.

        Called once per chunk of every phase due at a step; the loop zeroes, syncs and applies gradients.
        """

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """The loss's own state (running means, EMAs) for the snapshot, as tensors on the CPU."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output, so that a resumed run continues exactly."""

    def describe(self) -> str:
        """One line for log.txt naming the loss and its settings; by default the class name."""
        return type(self).__name__

    def tick_diagnostics(
        self,
        real_img: torch.Tensor,  # [N, C, H, W] float32 reals in [-1, 1] (the last step's first chunk).
        real_c: torch.Tensor,  # [N, c_dim] their labels.
        gen_z: torch.Tensor,  # [N, z_dim] fresh latents.
        gen_c: torch.Tensor,  # [N, c_dim] labels for the fakes.
    ) -> TickStats:
        """Stats measured once per tick on rank 0 (under forked RNGs, so training draws the same numbers);
        by default none. Must leave gradients, loss state and the networks' buffers untouched."""
        return {}


class TickReporter(Protocol):
    """A once-per-tick monitor, built on rank 0 from ``class_name`` + its options and the loop's
    ``dataset_kwargs``, ``training_set``, ``z_dim``, ``device``, ``batch`` (batch_gpu) and ``seed``."""

    def stats(self, G: torch.nn.Module, D: torch.nn.Module) -> TickStats:
        """Stats of the training ``G`` and ``D`` as they are at the end of the tick; must draw no random
        numbers, so that training draws the same ones with or without the monitor."""
        ...


class Augmentation(Protocol):
    """What D sees of every image: a module built from ``augment_kwargs``. One with a probability
    (``augment_p`` not None; ADA adapts it) holds it in the 0-d buffer ``p``."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Augment ``[N, C, H, W]`` float images in about [-1, 1] into ``[N, C, H, W]`` of the same dtype."""
        ...

    def tick_status(self) -> str:
        """What the training tick line shows after 'augment': the probability, or the policy."""
        ...
