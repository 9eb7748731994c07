"""Named scalar statistics reported from anywhere in the training code.

Any module calls ``report('Loss/G/loss', tensor)``. The training code owns :class:`Collector`
objects (the loop one for the per-tick stats, the training run one for the ADA heuristic) and calls
``collect()`` to get ``{name: {'num', 'mean', 'std'}}`` summed over every report and every process; the
loop writes them to stats.jsonl / TensorBoard without knowing the names. Reports are accumulated in
float64 on the tensor's device, with no host sync per report. :class:`Timer` reports how long a block took.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator

import torch

_enabled = True


def is_enabled() -> bool:
    """Whether :func:`report` records anything now."""
    return _enabled


def set_enabled(enabled: bool) -> None:
    """Turn reporting on or off (e.g. while computing metrics)."""
    global _enabled
    _enabled = enabled


class Collector:
    """Accumulates the reports whose name is in ``names`` (None = every name) until :meth:`collect`."""

    def __init__(self, names: Iterable[str] | None = None) -> None:
        self.names = None if names is None else set(names)
        self.moments: dict[str, torch.Tensor] = {}  # name -> [count, sum, sum of squares], float64
        _collectors.append(self)

    def add(self, name: str, moments: torch.Tensor) -> None:
        """Add ``[count, sum, sum_sq]`` to stat ``name`` if this collector listens to it."""
        if self.names is not None and name not in self.names:
            return
        acc = self.moments.get(name)
        self.moments[name] = moments if acc is None else acc + moments.to(acc.device)

    def collect(self, device: str | torch.device | None = None) -> dict[str, dict[str, float]]:
        """Return ``{name: {'num', 'mean', 'std'}}`` since the last call, summed over processes when
        torch.distributed is initialised (then every process must call it), and reset.

        ``device``: where to run the all-reduce (the process's CUDA device under NCCL).
        """
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        names = _union_names(sorted(self.moments)) if distributed else sorted(self.moments)
        if not names:
            return {}
        stacked = torch.zeros([len(names), 3], dtype=torch.float64, device=device)
        for i, name in enumerate(names):
            if name in self.moments:
                stacked[i] = self.moments[name].to(stacked.device)
        if distributed:
            torch.distributed.all_reduce(stacked)
        self.moments.clear()
        out = {}
        for name, (num, total, total_sq) in zip(names, stacked.cpu().tolist()):
            mean = total / num if num else math.nan
            std = math.sqrt(max(total_sq / num - mean**2, 0.0)) if num else math.nan
            out[name] = {'num': num, 'mean': mean, 'std': std}
        return out

    def close(self) -> None:
        """Stop receiving reports."""
        if self in _collectors:
            _collectors.remove(self)


_collectors: list[Collector] = []


def report(name: str, value: torch.Tensor | float) -> torch.Tensor | float:
    """Add every element of ``value`` (any shape; non-finite elements are ignored) to stat ``name``
    in every open :class:`Collector`. Returns ``value`` unchanged, so it can wrap an expression."""
    if not _enabled or not _collectors:
        return value
    elems = torch.as_tensor(value).detach().flatten().to(torch.float64)
    elems = elems[torch.isfinite(elems)]
    moments = torch.stack([torch.ones_like(elems).sum(), elems.sum(), elems.square().sum()])
    for collector in _collectors:
        collector.add(name, moments)
    return value


def _union_names(names: list[str]) -> list[str]:
    """Sorted union of stat names over all processes (ranks may have reported different names)."""
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, names)
    return sorted(set().union(*gathered))


class Timer:
    """Reports the duration of a block, in seconds, as stat ``name`` (``with timer.time(device): ...``).

    On CUDA the time is the GPU's, between two events recorded around the block, reported once they have
    completed (checked at the next use), so timing adds no host sync; elsewhere it is wall-clock time.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._pending: list = []  # (start, end) CUDA events not reported yet, oldest first

    @contextlib.contextmanager
    def time(self, device: torch.device) -> Iterator[None]:
        """Context manager timing its block on ``device`` (CUDA events on CUDA, wall clock elsewhere)."""
        self._report_completed()
        if device.type != 'cuda':
            start = time.perf_counter()
            yield
            report(self.name, time.perf_counter() - start)
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self._pending.append((start, end))

    def _report_completed(self) -> None:
        while self._pending and self._pending[0][1].query():
            start, end = self._pending.pop(0)
            report(self.name, start.elapsed_time(end) / 1000)
