"""Stopping on request: SIGTERM or SIGUSR1 (a cluster's preemption or time-limit notice, ``kill``) asks the
training loop to stop after its current step with a snapshot, instead of dying and losing the steps since the
last one; a process that spawned the training processes passes the signal on to them (:func:`forwarded`).
Every process must stop at the same step, so with several processes the request is reduced over them every
few steps (one tiny all-reduce)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
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
        self._calls = 0  # requested() calls so far (the same count on every process).
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

    def requested(self) -> bool:
        """Whether any process has received a stop signal. With several processes every process must call it
        at the same steps; only every :data:`STRIDE`-th call reduces the flag over them (the others answer
        False), so the all-reduce and its device sync stay off most steps."""
        if distributed.world_size() == 1:
            return self.signal is not None
        self._calls += 1
        if self._calls % STRIDE:
            return False
        flag = torch.tensor([float(self.signal is not None)], device=self.device)
        return bool(distributed.mean_over_processes(flag).item() > 0)


@contextlib.contextmanager
def forwarded(pids: Callable[[], list[int]]) -> Iterator[None]:
    """While open, pass SIGTERM and SIGUSR1 received here on to the processes ``pids()`` (the training
    processes this one spawned and waits for), so that ``kill PID`` of the launching process stops them with
    a snapshot rather than leaving them orphaned (main thread only, as :class:`StopRequest`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
