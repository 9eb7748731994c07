"""--resume is checked before anything is created: one message naming the file and what to do."""

import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import REPO, SUBPROCESS_TIMEOUT, make_image_folder

import train

TINY = ['--cbase=256', '--cmax=16', '--workers=0', '--metrics=none', '--batch=4', '--grid=4x2']


class _RunsCode:
    """Pickles to a call of os.system: what a malicious 'network pickle' does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A dataset and a finished tiny run with one snapshot."""
    root = tmp_path_factory.mktemp('resume')
    (root / 'data').mkdir()
    data = make_image_folder(root / 'data')
    cmd = [sys.executable, str(REPO / 'train.py'), f'--outdir={root / "runs"}', f'--data={data}', *TINY]
    res = subprocess.run(
        cmd + ['--kimg=0.004', '--snap=1'],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = next((root / 'runs').iterdir())
    return data, run_dir, run_dir / 'network-snapshot-000000.pkl'


def _check(data, tmp_path, resume, *extra):
    """train.py --dry-run with --resume; returns its output after asserting it failed and created nothing."""
    outdir = tmp_path / 'out'
    res = CliRunner().invoke(
        train.main, [f'--outdir={outdir}', f'--data={data}', *TINY, f'--resume={resume}', '--dry-run', *extra]
    )
    assert res.exit_code == 2, res.output + repr(res.exception)  # a UsageError, not a traceback
    assert not outdir.exists()
    assert 'weights_only' not in res.output  # never advise disabling the safe loader
    print(res.output)
    return res.output


def test_missing_file(setup, tmp_path):
    data, _, _ = setup
    out = _check(data, tmp_path, tmp_path / 'nope.pkl')
    assert 'nope.pkl' in out and 'no such file' in out


def test_directory_without_snapshots(setup, tmp_path):
    data, _, _ = setup
    (tmp_path / 'empty').mkdir()
    out = _check(data, tmp_path, tmp_path / 'empty')
    assert 'empty is a directory without network-snapshot-*.pkl' in out and 'newest run' not in out
    for name in ('00000-a', '00001-a', '00002-a'):  # an --outdir: its newest run with a snapshot is named
        (tmp_path / 'empty' / name).mkdir()
    (tmp_path / 'empty' / '00001-a' / 'network-snapshot-000004.pkl').write_bytes(b'')
    out = _check(data, tmp_path, tmp_path / 'empty')
    assert f'(the newest run in it: --resume={tmp_path / "empty" / "00001-a"})' in out


def test_text_file(setup, tmp_path):
    data, _, _ = setup
    path = tmp_path / 'notes.pkl'
    path.write_text('not a network\n')
    out = _check(data, tmp_path, path)
    assert 'notes.pkl' in out and 'not a readable network pickle' in out


@pytest.mark.parametrize(
    'name, write',
    [
        ('evil.pkl', lambda path, obj: path.write_bytes(pickle.dumps({'G': obj}))),  # plain pickle
        (
            'evil-snapshot.pkl',
            lambda path, obj: torch.save({'format': 'stylegan2-ada-kd/snapshot-v1', 'x': obj}, path),
        ),
    ],
)
def test_pickles_that_run_code_are_refused_unexecuted(setup, tmp_path, name, write):
    data, _, _ = setup
    marker = tmp_path / 'pwned'
    path = tmp_path / name
    write(path, _RunsCode(marker))
    out = _check(data, tmp_path, path)
    assert name in out and 'refusing to load global' in out and 'system' in out
    assert not marker.exists()


def test_truncated_snapshot(setup, tmp_path):
    data, _, snap = setup
    path = tmp_path / 'cut.pkl'
    raw = snap.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    out = _check(data, tmp_path, path)
    assert 'cut.pkl' in out and 'truncated' in out


def test_snapshot_with_other_network_options_gives_a_readable_diff(setup, tmp_path):
    data, _, snap = setup
    out = _check(data, tmp_path, snap, '--cbase=512', '--cmax=32')
    assert 'channel_base' in out and 'this run 512, snapshot 256' in out


def test_good_snapshot_and_copy_pass_the_check(setup, tmp_path):
    data, _, snap = setup
    copy = tmp_path / 'copy.pkl'
    shutil.copy(snap, copy)
    res = CliRunner().invoke(
        train.main, [f'--outdir={tmp_path / "o"}', f'--data={data}', *TINY, f'--resume={copy}', '--dry-run']
    )
    assert res.exit_code == 0, res.output
    assert '"resume_pkl"' in res.output


def test_resume_removes_temp_files_a_killed_run_left(setup, tmp_path):
    """A kill -9 during a snapshot write leaves a hidden temp file; resuming from that run removes it."""
    from dnnlib import util

    data, run_dir, snap = setup
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    stale = run_dir / f'.network-snapshot-000004.pkl.{util._host_tag()}-{proc.pid}.x1y2z3w4.tmp'
    stale.write_bytes(b'half a snapshot')
    cmd = [sys.executable, str(REPO / 'train.py'), f'--outdir={tmp_path}', f'--data={data}', *TINY]
    res = subprocess.run(
        cmd + ['--kimg=0.008', f'--resume={snap}'], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert not stale.exists() and snap.exists()
    assert 'Removed 1 temporary file(s)' in res.stdout and stale.name in res.stdout


def test_a_snapshot_that_cannot_be_written_ends_the_run_with_what_to_do(tmp_path, monkeypatch):
    """Disk full at the second snapshot: one message, nothing half-written, --resume=auto continues."""
    import errno

    from stylegan2_ada_kd.checkpoint import training_state

    data = make_image_folder(tmp_path / 'data')
    args = [
        f'--outdir={tmp_path / "runs"}',
        f'--data={data}',
        *TINY,
        '--tick=0.004',
        '--snap=1',
        '--kimg=0.012',
    ]
    real_save, calls = training_state.save_network_snapshot, []

    def full_disk(path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, 'No space left on device')
        real_save(path, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(training_state, 'save_network_snapshot', full_disk)
        res = CliRunner().invoke(train.main, [*args, '--resume=auto'])
    assert res.exit_code == 1, res.output
    assert (
        'network-snapshot-000000.008.pkl (No space left on device); nothing of it was written' in res.output
    )
    assert '--resume=auto' in res.output and 'Traceback' not in res.output
    (run_dir,) = (tmp_path / 'runs').iterdir()
    assert sorted(p.name for p in run_dir.glob('*.pkl')) == ['network-snapshot-000000.004.pkl']
    res = CliRunner().invoke(train.main, [*args, '--resume=auto'])
    assert res.exit_code == 0 and 'Resuming exactly' in res.output, res.output
