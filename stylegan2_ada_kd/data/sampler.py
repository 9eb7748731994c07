"""An endless, rank-sharded, resumable sampler of dataset indices for the training loop."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

_SAMPLER_CONFIG = ('num_items', 'rank', 'num_replicas', 'shuffle', 'seed', 'window_size')


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless dataset indices for one rank of ``num_replicas``, reproducible from ``seed``.

    One global sequence is cut into passes; each pass is a permutation of ``range(len(dataset))``, so every
    index is visited exactly once per pass. Pass 0 is a seeded random permutation (or ``0..n-1`` with
    ``shuffle=False``); each later pass re-orders the previous one by a windowed jitter shuffle: position
    ``i`` gets the sort key ``i + u``, ``u ~ U[0, window_size * n)``, so items drift by up to about
    ``window_size * n`` places per pass and the order keeps changing without ever repeating a pass exactly.
    Global step ``g`` belongs to rank ``g % num_replicas``, so ranks see disjoint, interleaved items.

    Resume: ``start_position`` is the number of indices this rank has already consumed; the sampler then
    continues the very same sequence (skipping passes costs one vectorised numpy shuffle per pass).
    ``state_dict()`` / ``load_state_dict()`` wrap the same number. With a DataLoader the sampler runs ahead
    of the batches actually used (prefetching), so prefer deriving ``start_position`` from the training
    progress (images consumed by this rank), as the training loop does.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        rank: int = 0,
        num_replicas: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        window_size: float = 0.5,
        start_position: int = 0,
    ) -> None:
        if len(dataset) < 1:
            raise ValueError('InfiniteSampler needs a non-empty dataset')
        if not 0 <= rank < num_replicas:
            raise ValueError(f'rank={rank} must be in [0, num_replicas={num_replicas})')
        if not 0 <= window_size <= 1:
            raise ValueError(f'window_size={window_size} must be a fraction of the dataset in [0, 1]')
        if start_position < 0:
            raise ValueError(f'start_position={start_position} must be >= 0')
        super().__init__()
        self.num_items = len(dataset)
        self.rank, self.num_replicas = int(rank), int(num_replicas)
        self.shuffle, self.seed, self.window_size = bool(shuffle), int(seed), float(window_size)
        self.start_position = int(start_position)
        self.position = self.start_position

    def _passes(self) -> Iterator[np.ndarray]:
        """The order of pass 0, 1, 2, ...: each an int64 permutation ``[n]``."""
        n = self.num_items
        rnd = np.random.RandomState(self.seed % (1 << 32))
        order = rnd.permutation(n) if self.shuffle else np.arange(n)
        window = self.window_size * n
        while True:
            yield order
            if self.shuffle and window > 0:
                keys = np.arange(n) + rnd.uniform(0, window, size=n)
                order = order[np.argsort(keys, kind='stable')]

    def __iter__(self) -> Iterator[int]:
        """Yield this rank's indices forever, starting after ``start_position`` consumed ones."""
        self.position = self.start_position
        step = self.start_position * self.num_replicas + self.rank
        passes, pass_idx, order = self._passes(), -1, None
        while True:
            target, pos = divmod(step, self.num_items)
            while pass_idx < target:
                order, pass_idx = next(passes), pass_idx + 1
            self.position += 1
            yield int(order[pos])
            step += self.num_replicas

    def state_dict(self) -> dict:
        """``{'position': indices yielded so far by the latest iterator (incl. start), ...config}``."""
        return dict(position=self.position, **{k: getattr(self, k) for k in _SAMPLER_CONFIG})

    def load_state_dict(self, state: dict) -> None:
        """Make the next ``iter()`` continue after ``state['position']``; the configuration must match."""
        mine = self.state_dict()
        diff = [k for k in _SAMPLER_CONFIG if k in state and state[k] != mine[k]]
        if diff:
            raise ValueError(
                f'sampler state does not match this sampler ({", ".join(diff)} differ): '
                + ', '.join(f'{k}={state[k]!r} vs {mine[k]!r}' for k in diff)
            )
        self.start_position = self.position = int(state['position'])
