"""A run stopped during a snapshot's evaluation loses none: the next --resume=auto (or the same command after
the run finished) evaluates that snapshot into its own run directory before anything else, and the
continuation is the same as without the interruption."""

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import make_image_folder

import train
from metrics import evaluation, metric_main

TINY = ['--cbase=256', '--cmax=16', '--workers=0', '--grid=none', '--batch=4', '--tick=0.004', '--snap=1']
METRICS = ['--metrics=kid1k_train,fid1k_train']


class Killed(Exception):
    """The session ended during an evaluation."""


@pytest.fixture
def fake_metrics(monkeypatch):
    """calc_metric replaced by values that improve at every call and draw from the global RNG (as a metric
    that generates images could); ``kill_at`` makes the call with that number end the session."""
    state = dict(calls=0, kill_at=None)

    def fake(metric, **kwargs):
        state['calls'] += 1
        if state['calls'] == state['kill_at']:
            raise Killed(metric)
        torch.randn(8)
        value = 100.0 - state['calls']
        return dict(results={metric: value}, metric=metric, total_time=0.1, total_time_str='0s', num_gpus=1)

    monkeypatch.setattr(metric_main, 'calc_metric', fake)
    return state


def _invoke(args):
    res = CliRunner().invoke(train.main, [str(a) for a in args])
    return res.exit_code, res.output, res.exception


def _lines(run_dir, metric):
    return [
        json.loads(x)['snapshot_pkl'] for x in (run_dir / f'metric-{metric}.jsonl').read_text().splitlines()
    ]


def _best(run_dir):
    return json.loads((run_dir / 'best-kid1k_train.json').read_text())['snapshot_pkl']


def test_owed_metrics_reads_the_run_directory(tmp_path):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    (run_dir / 'training_options.json').write_text(json.dumps({'metrics': ['kid1k_train', 'fid1k_train']}))
    (run_dir / 'metric-kid1k_train.jsonl').write_text(
        json.dumps({'snapshot_pkl': 'network-snapshot-000004.pkl'}) + '\nnot json\n'
    )
    assert evaluation.owed_metrics(str(run_dir / 'network-snapshot-000004.pkl')) == ['fid1k_train']
    assert evaluation.owed_metrics(str(run_dir / 'network-snapshot-000008.pkl')) == [
        'kid1k_train',
        'fid1k_train',
    ]
    assert evaluation.owed_metrics(str(tmp_path / 'network-snapshot-000008.pkl')) == []  # not a run dir


def test_a_finished_run_stopped_during_its_last_evaluation_gets_it(tmp_path, fake_metrics):
    data = make_image_folder(tmp_path / 'data')
    args = [
        f'--outdir={tmp_path / "runs"}',
        f'--data={data}',
        *TINY,
        *METRICS,
        '--kimg=0.008',
        '--resume=auto',
    ]
    fake_metrics['kill_at'] = 3  # snapshots at 0.004 and 0.008 kimg: killed in the last one's evaluation
    code, out, err = _invoke(args)
    assert isinstance(err, Killed), out
    (run_dir,) = (tmp_path / 'runs').iterdir()
    last = 'network-snapshot-000000.008.pkl'
    assert last not in _lines(run_dir, 'kid1k_train') and _best(run_dir) != last

    code, out, _ = _invoke(args)
    assert code == 0, out
    assert 'this run is finished' in out
    assert f'{run_dir / last}: its run was stopped before evaluating kid1k_train, fid1k_train' in out
    assert len(list((tmp_path / 'runs').iterdir())) == 1  # nothing trained, no new run directory
    assert _lines(run_dir, 'kid1k_train')[-1] == last and _lines(run_dir, 'fid1k_train')[-1] == last
    assert _best(run_dir) == last  # the evaluation as the run would have made it, best pointer included

    code, out, _ = _invoke(args)  # nothing owed any more
    assert code == 0 and 'evaluating now' not in out and len(_lines(run_dir, 'kid1k_train')) == 2


def test_a_continued_run_first_evaluates_its_snapshot_then_trains_as_if_never_stopped(tmp_path, fake_metrics):
    data = make_image_folder(tmp_path / 'data')
    base = [f'--data={data}', *TINY, *METRICS, '--resume=auto']
    for name, kill_at in (('plain', None), ('stopped', 3)):
        fake_metrics.update(calls=0, kill_at=kill_at)
        code, out, _ = _invoke([f'--outdir={tmp_path / name}', *base, '--kimg=0.008'])
        assert code == (0 if kill_at is None else 1), out
        fake_metrics['kill_at'] = None
        code, out, _ = _invoke([f'--outdir={tmp_path / name}', *base, '--kimg=0.012'])
        assert code == 0, out
        assert ('evaluating now' in out) == (kill_at is not None)
    runs = {name: sorted((tmp_path / name).iterdir()) for name in ('plain', 'stopped')}
    assert _lines(runs['stopped'][0], 'kid1k_train') == _lines(runs['plain'][0], 'kid1k_train')
    finals = [torch.load(r[-1] / 'network-snapshot-000000.012.pkl', weights_only=True) for r in runs.values()]
    a, b = (f['networks']['G_ema']['state_dict'] for f in finals)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_snapshot_of_a_run_on_other_reals_is_not_evaluated_but_named(tmp_path, fake_metrics):
    data_a, data_b = make_image_folder(tmp_path / 'a', seed=1), make_image_folder(tmp_path / 'b', seed=2)
    fake_metrics['kill_at'] = 3
    code, out, _ = _invoke(
        [f'--outdir={tmp_path / "a-runs"}', f'--data={data_a}', *TINY, *METRICS, '--kimg=0.008']
    )
    (run_dir,) = (tmp_path / 'a-runs').iterdir()
    snap = run_dir / 'network-snapshot-000000.008.pkl'
    fake_metrics['kill_at'] = None
    args = [f'--outdir={tmp_path / "b-runs"}', f'--data={data_b}', *TINY, *METRICS, '--kimg=0.012']
    code, out, _ = _invoke([*args, f'--resume={snap}'])
    assert code == 0, out
    assert (
        f'Note: {snap} has no kid1k_train, fid1k_train evaluation, and this run trains on other reals' in out
    )
    assert f'python calc_metrics.py --network={snap} --metrics=kid1k_train,fid1k_train' in out
    assert snap.name not in _lines(run_dir, 'kid1k_train')
