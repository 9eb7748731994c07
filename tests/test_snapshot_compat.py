"""Snapshots written by an earlier version of this code still load and resume exactly.

The snapshot is written by the code of a pinned commit (``git archive`` of it, run from a temporary folder),
then resumed by the current code and compared tick by tick with an uninterrupted run of the current code.
Skipped where git or the pinned commit is not available (a source tarball, a shallow clone).
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
from conftest import REPO, SUBPROCESS_TIMEOUT, make_image_folder

# The last commit before the checkpoint code moved into its own package (issue 12).
PINNED = '4fb4739'
# Where the pinned commit keeps the loader (today's tree has it in stylegan2_ada_kd.checkpoint).
OLD_IMPORT_LOADER = 'from stylegan2_ada_kd.legacy import load_network_pkl'
TINY = ['--cbase=256', '--cmax=16', '--workers=0', '--metrics=none', '--batch=4', '--tick=0.008', '--snap=1']
NEW = ['--grid=4x2']  # small image grids for the current code's runs (the pinned commit has no --grid)


def _git(*args, **kwargs):
    return subprocess.run(['git', '-C', str(REPO), *args], capture_output=True, timeout=60, **kwargs)


@pytest.fixture(scope='module')
def old_tree(tmp_path_factory):
    """The files of the pinned commit, unpacked into a temporary folder."""
    if shutil.which('git') is None or _git('cat-file', '-e', f'{PINNED}^{{commit}}').returncode != 0:
        pytest.skip(f'commit {PINNED} is not in this checkout (no git history)')
    dest = tmp_path_factory.mktemp('old-tree')
    archive = dest / 'tree.tar'
    assert _git('archive', f'--output={archive}', PINNED).returncode == 0
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter='data')
    return dest


def _train(script_dir, cwd, outdir, data, *args):
    env = dict(os.environ, PYTHONPATH=str(script_dir))  # the old tree's packages win over the installed ones
    cmd = [sys.executable, str(script_dir / 'train.py'), f'--outdir={outdir}', f'--data={data}', *TINY, *args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=SUBPROCESS_TIMEOUT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return sorted(outdir.iterdir())[-1], res.stdout


@pytest.fixture(scope='module')
def old_snapshot(old_tree, tmp_path_factory):
    """``(data folder, snapshot written by the pinned commit after 12 images)``."""
    root = tmp_path_factory.mktemp('old-run')
    data = make_image_folder(root / 'data', seed=0)
    old_run, _ = _train(old_tree, old_tree, root / 'runs', data, '--seed=3', '--kimg=0.012')
    return data, old_run / 'network-snapshot-000000.pkl'


def _stats(run_dir):
    return [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]


def test_old_snapshot_resumes_exactly(old_snapshot, tmp_path):
    data, snap = old_snapshot
    full, _ = _train(REPO, tmp_path, tmp_path / 'full', data, '--seed=3', '--kimg=0.028', *NEW)
    resumed, out = _train(
        REPO, tmp_path, tmp_path / 'resumed', data, '--seed=3', '--kimg=0.028', f'--resume={snap}', *NEW
    )
    assert 'Resuming exactly' in out
    by_kimg = {round(s['Progress/kimg']['mean'], 3): s for s in _stats(full)}
    resumed_stats = _stats(resumed)
    assert [round(s['Progress/kimg']['mean'], 3) for s in resumed_stats] == [0.020, 0.028]
    for s in resumed_stats:
        ref = by_kimg[round(s['Progress/kimg']['mean'], 3)]
        for key in ('Loss/G/loss', 'Loss/D/loss', 'Loss/scores/real', 'Progress/augment'):
            assert s[key]['mean'] == pytest.approx(ref[key]['mean'], rel=1e-5, abs=1e-7), key


def test_old_snapshot_loads_and_generates_the_same_images(old_tree, old_snapshot, tmp_path):
    _, snap = old_snapshot
    body = (
        'G = load_network_pkl(open(sys.argv[1], "rb"))["G_ema"]; '
        'z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(0)); '
        'torch.save(G(z, None, noise_mode="const"), sys.argv[2])'
    )
    outputs = []
    for tree, name, import_loader in (
        (old_tree, 'old.pt', OLD_IMPORT_LOADER),
        (REPO, 'new.pt', 'from stylegan2_ada_kd.checkpoint import load_network_pkl'),
    ):
        env = dict(os.environ, PYTHONPATH=str(tree))
        script = f'import sys, torch; {import_loader}; {body}'
        cmd = [sys.executable, '-c', script, str(snap), str(tmp_path / name)]
        res = subprocess.run(
            cmd, capture_output=True, text=True, cwd=tree, env=env, timeout=SUBPROCESS_TIMEOUT
        )
        assert res.returncode == 0, res.stderr[-3000:]
        outputs.append(tmp_path / name)
    import torch

    old, new = (torch.load(p) for p in outputs)
    assert torch.equal(old, new)
