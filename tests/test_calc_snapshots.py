"""calc_metrics.py --snapshots: every (or some) snapshot of a run directory, skipping those already evaluated
(so the same command continues after a stop), the best-snapshot pointer kept as training keeps it, and the
table that ends it. calc_metric is replaced by a stand-in that reads a value planted in each snapshot."""

import json
import os

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_D, TINY_G, make_image_folder

import calc_metrics
from metrics import metric_main
from stylegan2_ada_kd import checkpoint
from stylegan2_ada_kd.networks import Discriminator, Generator

KIMG_VALUES = {
    '000000': 0.9,
    '000004': 0.2,
    '000004.500': 0.5,
    '000008': 0.4,
}  # snapshot kimg -> planted value


@pytest.fixture
def run(tmp_path):
    """A run directory with four snapshots (one a mid-tick stop), each G_ema carrying its value."""
    data = make_image_folder(tmp_path / 'data', n=8)
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    (run_dir / 'training_options.json').write_text(json.dumps({'metrics': []}))
    kw = dict(class_name='stylegan2_ada_kd.data.dataset.ImageFolderDataset', path=data, resolution=16)
    torch.manual_seed(0)
    G, D = Generator(**TINY_G), Discriminator(**TINY_D)
    for tag, value in KIMG_VALUES.items():
        with torch.no_grad():
            next(G.parameters()).view(-1)[0] = value
        checkpoint.save_network_snapshot(
            run_dir / f'network-snapshot-{tag}.pkl', G=G, D=D, G_ema=G, training_set_kwargs=kw
        )
    return run_dir


@pytest.fixture
def calls(monkeypatch):
    """calc_metric replaced: KID gives the planted value, FID 100 x it; the calls are recorded."""
    seen = []

    def fake(metric, G, **kwargs):
        value = float(next(G.parameters()).view(-1)[0]) * (100 if metric.startswith('fid') else 1)
        seen.append((metric, round(value, 4)))
        return dict(results={metric: value}, metric=metric, total_time=0.1, total_time_str='0s', num_gpus=1)

    monkeypatch.setattr(metric_main, 'calc_metric', fake)
    return seen


def _calc(*args):
    res = CliRunner().invoke(calc_metrics.main, [str(a) for a in args] + ['--quiet'])
    return res.exit_code, res.output


def _best(run_dir, metric):
    return json.loads((run_dir / f'best-{metric}.json').read_text())


def test_select_snapshots(run):
    names = lambda spec: [os.path.basename(p)[17:-4] for p in checkpoint.select_snapshots(str(run), spec)]
    assert names('all') == ['000000', '000004', '000004.500', '000008']
    assert names('newest') == ['000008']
    assert names('8,0') == ['000000', '000008']
    assert names('4-6') == ['000004', '000004.500']
    assert names('4.5') == ['000004.500']
    with pytest.raises(ValueError, match=r'no snapshot at 12 kimg \(it has 0, 4, 4.5, 8\)'):
        checkpoint.select_snapshots(str(run), '12')
    with pytest.raises(ValueError, match='selects no snapshot'):
        checkpoint.select_snapshots(str(run), '10-20')
    with pytest.raises(ValueError, match="cannot parse 'x'"):
        checkpoint.select_snapshots(str(run), '4,x')


def _expected(values):
    return [(m, round(v * f, 4)) for v in values for m, f in (('kid1k_train', 1), ('fid1k_train', 100))]


def test_all_snapshots_then_only_what_is_missing(run, calls):
    args = (f'--network={run}', '--snapshots=all', '--metrics=kid1k_train,fid1k_train')
    code, out = _calc(*args)
    assert code == 0, out
    assert calls == _expected(KIMG_VALUES.values())
    best = _best(
        run, 'kid1k_train'
    )  # the run evaluated no metric in training: the first one takes the pointer
    assert (best['snapshot_pkl'], best['kimg']) == ('network-snapshot-000004.pkl', 4)
    assert not (run / 'best-fid1k_train.json').exists()
    assert os.path.samefile(run / 'network-snapshot-best.pkl', run / 'network-snapshot-000004.pkl')
    assert '     4.5          0.5' in out and 'best kid1k_train: 0.2 at 4 kimg' in out
    assert 'best fid1k_train: 20 at 4 kimg' in out

    # A stop during the last snapshot's FID: the same command evaluates that one metric only.
    path = run / 'metric-fid1k_train.jsonl'
    path.write_text(''.join(path.read_text().splitlines(keepends=True)[:-1]))
    calls.clear()
    code, out = _calc(*args)
    assert code == 0 and calls == [('fid1k_train', 40.0)], out
    calls.clear()
    code, out = _calc(*args)
    assert code == 0 and calls == [] and 'Every selected snapshot already has kid1k_train, fid1k_train' in out
    assert 'best kid1k_train: 0.2 at 4 kimg' in out


def test_the_pointer_follows_the_runs_own_metric_and_reals(run, calls, tmp_path):
    (run / 'training_options.json').write_text(json.dumps({'metrics': ['fid1k_train']}))
    code, out = _calc(f'--network={run}', '--snapshots=0,8', '--metrics=kid1k_train')
    assert code == 0 and calls == [('kid1k_train', 0.9), ('kid1k_train', 0.4)], out
    assert not (run / 'network-snapshot-best.pkl').exists()  # KID is not the metric training keeps it for
    code, out = _calc(
        f'--network={run}', '--snapshots=0', '--metrics=fid1k_train', f'--data={tmp_path / "data"}'
    )
    assert code == 0 and not (run / 'network-snapshot-best.pkl').exists(), out  # other reals: no pointer
    code, out = _calc(f'--network={run / "network-snapshot-000008.pkl"}', '--metrics=fid1k_train')
    assert code == 0 and _best(run, 'fid1k_train')['kimg'] == 8, out  # one snapshot, the run's metric
    code, out = _calc(f'--network={run}', '--snapshots=4-5', '--metrics=fid1k_train')
    assert code == 0 and _best(run, 'fid1k_train')['kimg'] == 4, out
    assert 'best fid1k_train: 20 at 4 kimg' in out


def test_bad_snapshot_selections_name_the_fix(run, calls, tmp_path):
    code, out = _calc(f'--network={run}', '--snapshots=12', '--metrics=kid1k_train')
    assert code == 2 and 'no snapshot at 12 kimg (it has 0, 4, 4.5, 8)' in out
    other = tmp_path / 'loose'
    other.mkdir()
    os.link(run / 'network-snapshot-000004.pkl', other / 'net.pkl')
    code, out = _calc(f'--network={other / "net.pkl"}', '--snapshots=all', '--metrics=kid1k_train')
    assert code == 2 and 'is not a run directory' in out and 'leave --snapshots out' in out
    code, out = _calc(f'--network={run.parent}', '--snapshots=all', '--metrics=kid1k_train')  # the outdir
    assert code == 2 and 'is not a run directory' in out and '(its run directories: run)' in out
    assert calls == []


def test_an_unreadable_snapshot_is_skipped_named_and_the_rest_evaluated(run, calls):
    damaged = run / 'network-snapshot-000004.500.pkl'
    damaged.write_bytes(damaged.read_bytes()[:5000])  # an interrupted copy
    args = (f'--network={run}', '--snapshots=all', '--metrics=kid1k_train')
    code, out = _calc(*args)
    assert code == 1 and [v for _, v in calls] == [0.9, 0.2, 0.4], out
    assert f'Skipping {damaged}:' in out and 'truncated or damaged' in out
    assert (
        f'not evaluated, unreadable (see above): {damaged}' in out and 'leave them out of --snapshots' in out
    )
    assert 'best kid1k_train: 0.2 at 4 kimg' in out
    damaged.unlink()
    calls.clear()
    code, out = _calc(*args)
    assert code == 0 and calls == [], out


def test_another_generation_seed_never_moves_the_pointer(run, calls):
    code, out = _calc(f'--network={run}', '--snapshots=8', '--metrics=kid1k_train', '--seed=1')
    assert code == 0 and calls == [('kid1k_train', 0.4)], out
    assert not (run / 'best-kid1k_train.json').exists()  # a lucky draw must not pick the best snapshot
