"""torch_utils.launcher.launch_processes, the one process launcher of train.py and calc_metrics.py: the
in-process path and the torchrun checks (the spawned and torchrun paths run in test_train and
test_metrics_pipeline)."""

import pytest
import torch

from torch_utils import distributed, launcher

TORCHRUN_ENV = dict(RANK='0', WORLD_SIZE='2', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1', MASTER_PORT='29500')


def _record(rank: int, device: torch.device, calls: list, tag: str) -> None:
    calls.append((rank, device.type, tag, distributed.is_initialized()))


def test_one_process_runs_here_without_a_group(monkeypatch):
    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    calls = []
    launcher.launch_processes(_record, 1, (calls, 'a'), prepare=lambda: calls.append('prepared'))
    assert calls == ['prepared', (0, 'cpu', 'a', False)]
    assert not launcher.spawns(1) and launcher.spawns(2)


def test_torchrun_needs_the_world_size_it_started(monkeypatch):
    for key, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(key, value)
    calls = []
    with pytest.raises(ValueError, match='3 process.*torchrun started 2'):
        launcher.launch_processes(_record, 3, (calls, 'a'), prepare=lambda: calls.append('prepared'))
    assert calls == []  # nothing prepared, no group joined
    assert not launcher.spawns(2)  # torchrun started the processes


def test_a_workers_error_reaches_the_caller(monkeypatch):
    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)

    def fail(rank: int, device: torch.device) -> None:
        raise RuntimeError('worker failed')

    with pytest.raises(RuntimeError, match='worker failed'):
        launcher.launch_processes(fail, 1)
    assert not distributed.is_initialized()
