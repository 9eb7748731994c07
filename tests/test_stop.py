"""SIGTERM / SIGUSR1 stop training after the current step with a snapshot; --resume=auto then continues it
exactly, ticks and snapshots where the uninterrupted run has them."""

import os
import signal

import pytest
import torch
from click.testing import CliRunner
from conftest import make_image_folder

import train
from torch_utils.stop import StopRequest

TINY = ['--cbase=256', '--cmax=16', '--workers=0', '--grid=none', '--batch=4', '--metrics=none']
TICKS = ['--tick=0.008', '--snap=1', '--kimg=0.032']  # 2 steps of 4 images per tick, 8 steps


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_sets_the_request_instead_of_ending_the_process(sig):
    before = signal.getsignal(sig)
    with StopRequest(torch.device('cpu')) as stop:
        assert not stop.requested()
        os.kill(os.getpid(), sig)
        assert stop.requested() and stop.signal == signal.Signals(sig).name
    assert signal.getsignal(sig) is before


def _train(args):
    res = CliRunner().invoke(train.main, [str(a) for a in args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def _weights(path):
    nets = torch.load(path, weights_only=True)['networks']
    return {f'{net}.{k}': v for net in ('G', 'D', 'G_ema') for k, v in nets[net]['state_dict'].items()}


def test_a_stopped_run_continues_exactly(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / 'data')
    _train([f'--outdir={tmp_path / "whole"}', f'--data={data}', *TINY, *TICKS])
    (whole,) = (tmp_path / 'whole').iterdir()

    calls = []

    def third_call_stops(self):  # as if SIGTERM came during the 3rd step that ends no tick (the 6th step)
        calls.append(1)
        if len(calls) == 3:
            self.signal = 'SIGTERM'
        return self.signal is not None

    args = [f'--outdir={tmp_path / "cut"}', f'--data={data}', *TINY, *TICKS, '--resume=auto']
    with monkeypatch.context() as patch:
        patch.setattr(StopRequest, 'requested', third_call_stops)
        out = _train(args)
    assert 'SIGTERM received: stopping at 0.024 kimg with a snapshot.' in out
    (first,) = (tmp_path / 'cut').iterdir()
    assert 'network-snapshot-000000.024.pkl' in os.listdir(first)
    out = _train(args)
    assert f'continuing {first / "network-snapshot-000000.024.pkl"}' in out and 'Resuming exactly' in out
    second = sorted((tmp_path / 'cut').iterdir())[-1]
    snaps = lambda d: sorted(n for n in os.listdir(d) if n.startswith('network-snapshot-0'))
    assert snaps(second) == [n for n in snaps(whole) if n > 'network-snapshot-000000.024']  # 0.028, 0.032
    a, b = (
        _weights(whole / 'network-snapshot-000000.032.pkl'),
        _weights(second / 'network-snapshot-000000.032.pkl'),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize('gpus', [1, 2])
def test_sigterm_to_a_training_process(tmp_path, gpus):
    """The real signal, to a train.py process (with --gpus=2 the launching one, which passes it on): it exits
    normally with a stop snapshot, long before --kimg."""
    import subprocess
    import sys

    from conftest import REPO, SUBPROCESS_TIMEOUT

    data = make_image_folder(tmp_path / 'data')
    cmd = [sys.executable, str(REPO / 'train.py'), f'--outdir={tmp_path / "runs"}', f'--data={data}', *TINY]
    proc = subprocess.Popen(
        [*cmd, '--tick=0.016', '--snap=1000', '--kimg=2', f'--gpus={gpus}', f'--batch={4 * gpus}'],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith('tick 1 '):
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.communicate(timeout=SUBPROCESS_TIMEOUT)[0].splitlines(keepends=True)
    out = ''.join(lines)
    assert proc.returncode == 0, out
    assert 'SIGTERM received: stopping at' in out and 'continues exactly' in out
    (run_dir,) = (tmp_path / 'runs').iterdir()
    stops = [n for n in os.listdir(run_dir) if n.startswith('network-snapshot-0')]
    assert len(stops) == 2 and all(float(n[17:-4]) < 1 for n in stops), stops  # tick 0's and the stop's


def test_a_finished_run_trained_further_is_the_longer_run_with_its_ticks_shifted(tmp_path):
    data = make_image_folder(tmp_path / 'data')
    common = [f'--data={data}', *TINY, '--tick=0.008', '--snap=1']
    _train([f'--outdir={tmp_path / "long"}', *common, '--kimg=0.032'])
    (long,) = (tmp_path / 'long').iterdir()
    _train([f'--outdir={tmp_path / "grown"}', *common, '--kimg=0.014'])  # ends at 0.016: the step past 0.014
    out = _train([f'--outdir={tmp_path / "grown"}', *common, '--kimg=0.032', '--resume=auto'])
    assert 'Resuming exactly' in out
    grown = sorted((tmp_path / 'grown').iterdir())[-1]
    snaps = lambda d: sorted(n[17:-4] for n in os.listdir(d) if n.startswith('network-snapshot-0'))
    assert snaps(long) == ['000000.004', '000000.012', '000000.020', '000000.028', '000000.032']
    assert snaps(grown) == ['000000.024', '000000.032']  # its ticks count from 0.016, where it stopped
    a, b = (_weights(d / 'network-snapshot-000000.032.pkl') for d in (long, grown))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
