"""training_stats: report/collect moments, filtering by name, disabling, and the block Timer."""

import math
import time

import pytest
import torch

from torch_utils import training_stats


@pytest.fixture
def collector():
    c = training_stats.Collector()
    yield c
    c.close()


def test_collect_gives_count_mean_std_and_ignores_non_finite(collector):
    training_stats.report('Loss/a', torch.tensor([1.0, 2.0, 3.0, float('nan')]))
    training_stats.report('Loss/a', 6.0)
    stats = collector.collect()
    assert stats['Loss/a']['num'] == 4 and stats['Loss/a']['mean'] == pytest.approx(3.0)
    assert stats['Loss/a']['std'] == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 4))
    assert collector.collect() == {}  # reset after collect


def test_named_collector_and_disabled_reports(collector):
    only_p = training_stats.Collector(['Progress/p'])
    try:
        training_stats.report('Progress/p', 0.5)
        training_stats.report('Loss/b', 1.0)
        training_stats.set_enabled(False)
        training_stats.report('Loss/b', 100.0)
        training_stats.set_enabled(True)
        assert set(only_p.collect()) == {'Progress/p'}
        assert collector.collect()['Loss/b']['mean'] == 1.0
    finally:
        only_p.close()


def test_timer_reports_wall_time_on_cpu(collector):
    timer = training_stats.Timer('Timing/x')
    for _ in range(2):
        with timer.time(torch.device('cpu')):
            time.sleep(0.02)
    stats = collector.collect()['Timing/x']
    assert stats['num'] == 2 and 0.015 < stats['mean'] < 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA events need a GPU')
def test_timer_reports_gpu_time_after_the_events_complete(collector):
    timer = training_stats.Timer('Timing/gpu')
    x = torch.randn(2048, 2048, device='cuda')
    with timer.time(x.device):
        for _ in range(20):
            x = x @ x.t() / 2048
    torch.cuda.synchronize()
    with timer.time(x.device):  # the next use reports the completed pair
        pass
    stats = collector.collect()['Timing/gpu']
    assert stats['num'] == 1 and stats['mean'] > 0
