"""The forms a new user types: a relative --outdir with --metrics, ticks shorter than 1 kimg, --resume with a
run directory, 'auto', a pretrained name offline, an unwritable --outdir, temp files of killed runs."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import make_image_folder

import generate
import train
from dnnlib import util
from stylegan2_ada_kd.checkpoint import PRETRAINED
from stylegan2_ada_kd.training.resume import MOVED_CLASSES

TINY = ['--cbase=256', '--cmax=16', '--workers=0', '--grid=4x2', '--batch=4']
SUB_KIMG = ['--tick=0.004', '--snap=1']  # a tick of 4 images: every snapshot falls within the first kimg


@pytest.fixture(scope='module')
def data16(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('forms16'), seed=4)


def _invoke(main, args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output + (repr(res.exception) if res.exception else '')


def _train(args):
    code, out = _invoke(train.main, args)
    assert code == 0, out
    return out


def _fake_metric(monkeypatch):
    """calc_metric replaced by a value that improves at every call (FID needs detector weights)."""
    from metrics import metric_main

    calls = []

    def fake(metric, **kwargs):
        calls.append(metric)
        value = 100.0 - len(calls)
        return dict(results={metric: value}, metric=metric, total_time=0.1, total_time_str='0s', num_gpus=1)

    monkeypatch.setattr(metric_main, 'calc_metric', fake)


def test_relative_outdir_with_metrics_and_sub_kimg_ticks(data16, tmp_path, monkeypatch):
    """The README's relative --outdir with --metrics: every evaluation names its own snapshot, the best one is
    linked, and no snapshot or grid of a sub-kimg tick replaces another."""
    monkeypatch.chdir(tmp_path)
    _fake_metric(monkeypatch)
    _train(['--outdir=runs', f'--data={data16}', *TINY, *SUB_KIMG, '--kimg=0.012', '--metrics=fid1k_train'])
    (run_dir,) = (tmp_path / 'runs').iterdir()
    names = sorted(os.listdir(run_dir))
    tags = ['000000.004', '000000.008', '000000.012']
    assert [n for n in names if n.startswith('network-snapshot-0')] == [
        f'network-snapshot-{t}.pkl' for t in tags
    ]
    assert [n for n in names if n.startswith('fakes0')] == [f'fakes{t}.png' for t in tags]
    lines = [json.loads(x) for x in (run_dir / 'metric-fid1k_train.jsonl').read_text().splitlines()]
    assert [line['snapshot_pkl'] for line in lines] == [f'network-snapshot-{t}.pkl' for t in tags]
    best = json.loads((run_dir / 'best-fid1k_train.json').read_text())
    assert best['snapshot_pkl'] == 'network-snapshot-000000.012.pkl' and best['kimg'] == 0.012
    newest = run_dir / 'network-snapshot-000000.012.pkl'
    assert (run_dir / 'network-snapshot-best.pkl').read_bytes() == newest.read_bytes()
    modes = {n: (run_dir / n).stat().st_mode & 0o777 for n in names if os.path.isfile(run_dir / n)}
    assert modes['best-fid1k_train.json'] == modes['training_options.json'], modes  # not 0600
    assert not [n for n in names if n.startswith('.')]  # no temporary file left


def test_a_second_output_within_one_kimg_gets_the_finer_name(tmp_path):
    from stylegan2_ada_kd.checkpoint import newest_snapshot
    from torch_utils import run_io

    first = run_io.output_path(str(tmp_path), 'network-snapshot-', '.pkl', 8064, fine=False)
    assert os.path.basename(first) == 'network-snapshot-000008.pkl'  # the reference's name where unique
    open(first, 'wb').close()
    second = run_io.output_path(str(tmp_path), 'network-snapshot-', '.pkl', 8512, fine=False)
    assert os.path.basename(second) == 'network-snapshot-000008.512.pkl'
    open(second, 'wb').close()
    (tmp_path / 'network-snapshot-000010.pkl').write_bytes(b'')
    (tmp_path / 'network-snapshot-best.pkl').write_bytes(b'')
    assert newest_snapshot(str(tmp_path)) == str(tmp_path / 'network-snapshot-000010.pkl')
    (tmp_path / 'network-snapshot-000010.pkl').unlink()
    assert newest_snapshot(str(tmp_path)) == second  # 8.512 kimg after 8 kimg, though it sorts first as text


def _dry(args):
    code, out = _invoke(train.main, [*args, '--dry-run'])
    assert code == 0, out
    return out, json.loads(out[out.index('{\n') : out.index('\n\nRun directory')])


def test_resume_from_a_run_directory_takes_its_newest_snapshot(data16, tmp_path):
    _train([f'--outdir={tmp_path}', f'--data={data16}', *TINY, *SUB_KIMG, '--kimg=0.008'])
    (run_dir,) = tmp_path.iterdir()
    _, c = _dry([f'--outdir={tmp_path / "next"}', f'--data={data16}', *TINY, f'--resume={run_dir}'])
    assert c['resume_pkl'] == str(run_dir / 'network-snapshot-000000.008.pkl')


def test_resume_auto_continues_the_newest_run_with_the_same_options(data16, tmp_path):
    """The same command in every time-limited session: fresh the first time, then a continuation."""
    args = [f'--outdir={tmp_path}', f'--data={data16}', *TINY, *SUB_KIMG, '--resume=auto']
    out = _train([*args, '--kimg=0.008'])
    assert '--resume=auto: no earlier run with the same options; starting fresh' in out
    first = sorted(tmp_path.iterdir())[-1]
    out = _train([*args, '--kimg=0.016'])  # a longer --kimg is still the same run
    assert f'--resume=auto: continuing {first / "network-snapshot-000000.008.pkl"}' in out
    assert 'Resuming exactly' in out
    second = sorted(tmp_path.iterdir())[-1]
    stats = [json.loads(x) for x in (second / 'stats.jsonl').read_text().splitlines()]
    assert stats[0]['Progress/kimg']['mean'] == pytest.approx(0.012)  # after the first session's 0.008
    assert 'resume' not in second.name  # named as a fresh run: the chain is found by its options
    out, c = _dry([*args, '--kimg=0.024'])
    assert c['resume_pkl'] == str(second / 'network-snapshot-000000.016.pkl')  # the newest run's newest
    _, c = _dry([*args, '--kimg=0.024', '--batch-gpu=2'])  # the same batch in smaller rounds (out of memory)
    assert c['resume_pkl'] == str(second / 'network-snapshot-000000.016.pkl')
    out, c = _dry([*args, '--gamma=3'])  # other training options: not this run
    assert 'starting fresh' in out and c['resume_pkl'] is None


def test_resume_auto_matches_a_run_recorded_before_the_package_moves(data16, tmp_path):
    """training_options.json of runs before the data/augment/training packages name the old class paths."""
    args = [f'--outdir={tmp_path}', f'--data={data16}', *TINY, *SUB_KIMG, '--resume=auto']
    _train([*args, '--kimg=0.008'])
    (run_dir,) = tmp_path.iterdir()
    options = run_dir / 'training_options.json'
    text = options.read_text()
    for old, current in MOVED_CLASSES.items():
        text = text.replace(f'"{current}"', f'"{old}"')
    assert '"stylegan2_ada_kd.dataset.ImageFolderDataset"' in text
    options.write_text(text)
    _, c = _dry([*args, '--kimg=0.016'])
    assert c['resume_pkl'] == str(run_dir / 'network-snapshot-000000.008.pkl')


def test_kd_can_be_added_to_and_dropped_from_a_running_experiment(data16, tmp_path):
    from conftest import TINY_CLIP_SPEC

    kd = ['--kd=aggregated', f'--kd-teacher={TINY_CLIP_SPEC}']
    args = [f'--data={data16}', *TINY, '--kimg=0.004']
    _train([f'--outdir={tmp_path / "plain"}', *args])
    (plain,) = (tmp_path / 'plain').iterdir()
    out = _train([f'--outdir={tmp_path / "kd"}', *args, *kd, f'--resume={plain}', '--kimg=0.008'])
    assert "the snapshot's D has no head 'kd'; this run creates it fresh" in out
    assert 'Resuming exactly apart from the D heads above' in out
    (with_kd,) = (tmp_path / 'kd').iterdir()
    out = _train([f'--outdir={tmp_path / "off"}', *args, f'--resume={with_kd}', '--kimg=0.012'])
    assert "this run does not use the snapshot's D head 'kd'; it is dropped" in out


def test_resume_heads_keep_the_trunk_and_its_optimizer_state(tmp_path):
    """Adding a head: the trunk's weights and Adam moments continue exactly, the head starts fresh."""
    import torch
    from conftest import TINY_CLIP_SPEC, tiny_training_run

    from stylegan2_ada_kd import checkpoint
    from stylegan2_ada_kd.training.run import training_step

    plain = tiny_training_run(dict(class_name='stylegan2_ada_kd.training.loss.StyleGAN2Loss', r1_gamma=1))
    reals, labels = [torch.rand(4, 3, 16, 16) * 2 - 1], [torch.zeros(4, 0)]
    training_step(plain, reals, labels, lambda n: torch.zeros(n, 0))
    path = str(tmp_path / 'network-snapshot-000000.pkl')
    checkpoint.write_snapshot(
        path, plain.nets, plain.phases, plain.loss, None, plain.progress, {}, 0, plain.device
    )
    kd_loss = dict(
        class_name='stylegan2_ada_kd.kd.loss.KDLoss',
        r1_gamma=1,
        kd_terms=['aggregated'],
        teacher=TINY_CLIP_SPEC,
    )
    resumed = tiny_training_run(kd_loss, resume_pkl=path)
    trunk = {k: v for k, v in plain.D.state_dict().items()}
    ours = resumed.D.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in trunk.items()) and 'heads.kd.fc0.weight' in ours
    old, new = plain.phases[-1].opt.state_dict()['state'], resumed.phases[-1].opt.state_dict()['state']
    assert sorted(new) == sorted(old)  # the head's parameters have no Adam state yet
    assert all(torch.equal(new[i]['exp_avg'], old[i]['exp_avg']) for i in old)
    training_step(resumed, reals, labels, lambda n: torch.zeros(n, 0))  # and the step runs


def test_a_pretrained_name_is_fetched_before_anything_is_created(data16, tmp_path, offline):
    """Offline: one line naming --resume (or --network) and the local-file alternative; nothing created."""
    outdir = tmp_path / 'runs'
    code, out = _invoke(train.main, [f'--outdir={outdir}', f'--data={data16}', *TINY, '--resume=ffhq256'])
    assert code == 2 and not outdir.exists(), out
    assert f'--resume=ffhq256: cannot download {PRETRAINED["ffhq256"]} (network unreachable)' in out
    assert 'pass the local file: --resume=/path/to/ffhq-res256-mirror-paper256-noaug.pkl' in out
    assert 'Traceback' not in out
    code, out = _invoke(generate.cli, ['--network=ffhq256', '--seeds=0', f'--outdir={tmp_path / "img"}'])
    assert code == 1 and '--network=ffhq256: cannot download' in out

    # Once in the download cache (here: a tiny run's snapshot), the name works offline in both tools.
    _train([f'--outdir={tmp_path / "src"}', f'--data={data16}', *TINY, '--kimg=0.004'])
    (src,) = (tmp_path / 'src').iterdir()
    dest = util.make_cache_dir_path('downloads', util.cache_file_name(PRETRAINED['ffhq256']))
    os.link(src / 'network-snapshot-000000.pkl', dest)  # the failed downloads created the folder
    out, c = _dry([f'--outdir={outdir}', f'--data={data16}', *TINY, '--resume=ffhq256'])
    assert c['resume_pkl'] == dest and 'resumeffhq256' in c['run_dir']
    code, out = _invoke(generate.cli, ['--network=ffhq256', '--seeds=0', f'--outdir={tmp_path / "img"}'])
    assert code == 0 and os.listdir(tmp_path / 'img'), out


@pytest.mark.parametrize('where', ['/proc/x', 'file/runs'])
def test_an_unwritable_outdir_is_the_first_error(tmp_path, where):
    (tmp_path / 'file').write_text('a regular file')
    outdir = where if where.startswith('/') else tmp_path / where
    code, out = _invoke(train.main, [f'--outdir={outdir}', '--data=missing.zip', '--dry-run'])
    assert code == 2 and f'--outdir={outdir}:' in out and 'missing.zip' not in out, out


def test_temp_files_of_runs_killed_before_their_first_snapshot_are_removed(data16, tmp_path):
    orphan = tmp_path / '00000-killed'
    orphan.mkdir()
    (orphan / 'training_options.json').write_text('{}')
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    stale = orphan / f'.reals.png.{util._host_tag()}-{dead.pid}.abcd1234.tmp'
    stale.write_bytes(b'half an image')
    live = orphan / f'.reals.png.{util._host_tag()}-{os.getpid()}.abcd1234.tmp'
    live.write_bytes(b'being written')
    out = _train([f'--outdir={tmp_path}', f'--data={data16}', *TINY, '--kimg=0.004'])
    assert not stale.exists() and live.exists()
    assert f'Removed 1 temporary file(s) of an interrupted write in {orphan}' in out


def test_options_print_once_under_torchrun_and_workers_are_capped(data16, tmp_path, monkeypatch):
    for name, value in dict(WORLD_SIZE='2', LOCAL_RANK='1', MASTER_ADDR='127.0.0.1', MASTER_PORT='1').items():
        monkeypatch.setenv(name, value)
    outs = {}
    for rank in ('0', '1'):
        monkeypatch.setenv('RANK', rank)
        code, outs[rank] = _invoke(
            train.main, [f'--outdir={tmp_path}', f'--data={data16}', *TINY, '--workers=999', '--dry-run']
        )
        assert code == 0, outs[rank]
    assert 'Run directory' in outs['0'] and outs['1'] == ''
    cores = len(os.sched_getaffinity(0))
    assert outs['0'].count(f'--workers=999: this machine gives the process {cores} CPU core(s)') == 1
    assert f'"num_workers": {cores},' in outs['0']


def test_snap_help_does_not_assume_4_kimg_ticks():
    code, out = _invoke(train.main, ['--help'])
    assert 'Snapshot interval in ticks (of --tick kimg each)' in out and '4 kimg each' not in out
