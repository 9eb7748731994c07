"""The GPU-verification scripts in their CPU dry mode (tiny bundle, every command's files checked), the size
budget of the bundle, and fp16 TorchScript copies that load for fp32 compute (detector and KD teacher)."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, SUBPROCESS_TIMEOUT

from torch_utils import torchscript


def _bash(script, *args, **env):
    res = subprocess.run(
        ['bash', str(REPO / 'scripts' / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, **env),
        timeout=SUBPROCESS_TIMEOUT,
    )
    return res.returncode, res.stdout + res.stderr


@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    dest = tmp_path_factory.mktemp('bundle') / 'gpu'
    rc, out = _bash('gpu_prepare.sh', DRY='1', DEST=str(dest))
    assert rc == 0, out
    return dest


def _check(dest):
    cmd = [sys.executable, 'scripts/gpu_bundle.py', 'check', f'--dest={dest}']
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=SUBPROCESS_TIMEOUT)


def test_dry_bundle_has_every_file_and_a_manifest(bundle, tmp_path):
    names = sorted(os.listdir(bundle))
    assert names == ['efficientnet-fp16.pt', 'inception-fp16.pt', 'manifest.json', 'obama64.zip']
    res = _check(bundle)
    assert res.returncode == 0 and 'match manifest.json' in res.stdout
    changed = tmp_path / 'gpu'
    shutil.copytree(bundle, changed)
    (changed / 'obama64.zip').write_bytes(b'changed')
    res = _check(changed)
    assert res.returncode != 0 and 'obama64.zip' in res.stderr


def test_bundle_over_budget_fails(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            'scripts/gpu_bundle.py',
            'prepare',
            f'--dest={tmp_path / "g"}',
            '--dry',
            '--max-mib=0.1',
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert res.returncode != 0 and 'exceeds the 0.1 MiB budget' in res.stderr


@pytest.mark.parametrize('stage, steps', [('1', 6), ('2', 2)])
def test_verify_dry_run_plans_every_step(bundle, tmp_path, stage, steps):
    out_dir = tmp_path / 'out'
    rc, out = _bash(
        'gpu_verify.sh', stage, DRY='1', GPU_BUNDLE=str(bundle), OUT=str(out_dir), WORK=str(tmp_path)
    )
    assert rc == 0, out
    table = (out_dir / f'table{stage}.md').read_text()
    assert table.count('| planned |') == steps
    assert 'missing' not in (out_dir / f'stage{stage}.log').read_text()
    assert len(os.listdir(out_dir)) <= 8


def test_verify_dry_run_names_a_missing_file(bundle, tmp_path):
    broken = tmp_path / 'gpu'
    broken.mkdir()
    for name in os.listdir(bundle):
        if name != 'efficientnet-fp16.pt':
            (broken / name).write_bytes((bundle / name).read_bytes())
    rc, out = _bash('gpu_verify.sh', '1', DRY='1', GPU_BUNDLE=str(broken), OUT=str(tmp_path / 'o'))
    assert rc != 0 and 'efficientnet-fp16.pt' in out


def test_verify_rejects_an_unknown_stage():
    rc, out = _bash('gpu_verify.sh', '3')
    assert rc == 2 and 'usage' in out


def test_half_copy_is_half_the_size_and_computes_in_fp32(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3))
    full = tmp_path / 'full.pt'
    with torchscript.quiet_jit():
        torch.jit.save(torch.jit.script(net), str(full))
    size = torchscript.save_half_copy(full, tmp_path / 'half.pt')
    assert size < 0.6 * os.path.getsize(full)
    ref, half = torchscript.load(full), torchscript.load(tmp_path / 'half.pt')
    assert {p.dtype for p in half.parameters()} == {torch.float32}
    x = torch.randn([2, 3, 16, 16])
    torch.testing.assert_close(half(x), ref(x), rtol=0, atol=5e-3)
    assert not torch.equal(half(x), ref(x))  # the weights were rounded to fp16


def test_fp16_bundle_files_load_as_detector_and_teacher(bundle):
    from metrics import detectors
    from stylegan2_ada_kd.kd.teacher import load_teacher

    det = detectors.load_detector(detectors.INCEPTION, str(bundle / 'inception-fp16.pt'))
    feats = det(torch.randint(0, 255, [2, 3, 32, 32], dtype=torch.uint8))
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32
    teacher = load_teacher(f'torchscript:{bundle / "efficientnet-fp16.pt"}')
    assert teacher.input_size == 32 and teacher.embed_dim == 64
    detectors.clear_cache()
