"""Stopping on request: SIGTERM or SIGUSR1 (a cluster's preemption or time-limit notice, ``kill``) asks the
training loop to stop after its current step with a snapshot, instead of dying and losing the steps since the
last one. Every process must stop at the same step, so with several processes the request is reduced over
them every few steps (one tiny all-reduce)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import torch

from torch_utils import distributed

STRIDE = 4  # With several processes, the steps between two collective asks.
SIGNALS = tuple(
    getattr(signal, name) for name in ('SIGTERM', 'SIGUSR1') if hasattr(signal, name)
)  # no USR1 on Windows


class StopRequest:
    """While open, SIGTERM and SIGUSR1 set a flag instead of ending the process (main thread only: signal
    handlers cannot be installed elsewhere, so elsewhere this never fires). Use as a context manager; the
    previous handlers come back on exit."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.signal: str | None = None  # Name of the first signal received.
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = self.signal or signal.Signals(signum).name

    def requested(self, step: int) -> bool:
        """Whether any process has received a stop signal, asked after training step ``step``. With several
        processes it is collective (every process calls it at the same steps) and asked every
        :data:`STRIDE` steps only, so the all-reduce and its device sync stay off most steps."""
        if distributed.world_size() == 1:
            return self.signal is not None
        if step % STRIDE:
            return False
        flag = torch.tensor([float(self.signal is not None)], device=self.device)
        return bool(distributed.mean_over_processes(flag).item() > 0)
