"""calc_metric and calc_metrics.py on a tiny snapshot with stand-in TorchScript detectors (no downloads):
determinism, the real-statistics cache, *_full vs *_train reals, --ref-stats, labels, IS/PPL plumbing,
the run-directory jsonl and two processes."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO, TINY_D, TINY_G, make_image_folder

sys.path.insert(0, str(REPO))
import calc_metrics  # noqa: E402
from metrics import detectors, features, metric_main  # noqa: E402
from stylegan2_ada_kd import checkpoint  # noqa: E402
from stylegan2_ada_kd.networks import Discriminator, Generator  # noqa: E402

FOLDER_CLASS = 'stylegan2_ada_kd.data.dataset.ImageFolderDataset'


class PlainInception(torch.nn.Module):
    """Stand-in with the plain convention: [N, 3, 299, 299] in [-1, 1) -> [N, 48] features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


class KeywordNet(torch.nn.Module):
    """Stand-in with NVIDIA's keyword convention (features, 1008-way softmax, LPIPS features)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Parameter(torch.randn(48, 1008, generator=torch.Generator().manual_seed(1)))

    def forward(
        self,
        img: torch.Tensor,
        return_features: bool = False,
        no_output_bias: bool = False,
        resize_images: bool = True,
        return_lpips: bool = False,
    ) -> torch.Tensor:
        feats = torch.nn.functional.adaptive_avg_pool2d(img / 255, 4).flatten(1)
        if return_features or return_lpips:
            return feats
        return (feats @ self.proj).softmax(dim=1)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('metrics')
    torch.manual_seed(0)
    plain = root / 'plain.pt'
    torch.jit.script(PlainInception()).save(str(plain))
    keyword = root / 'keyword.pt'
    torch.jit.script(KeywordNet()).save(str(keyword))
    (root / 'data').mkdir()
    data = make_image_folder(root / 'data', n=24)
    run = root / 'run'
    run.mkdir()
    (run / 'training_options.json').write_text('{}')
    G = Generator(**TINY_G)
    kw = dict(class_name=FOLDER_CLASS, path=data, use_labels=False, max_size=16, xflip=True, resolution=16)
    snap = run / 'network-snapshot-000004.pkl'
    checkpoint.save_network_snapshot(snap, G=G, D=Discriminator(**TINY_D), G_ema=G, training_set_kwargs=kw)
    return dict(root=root, plain=str(plain), keyword=str(keyword), data=data, run=run, G=G, kw=kw, snap=snap)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))


def _calc(s, metric, **kw):
    args = dict(G=s['G'], dataset_kwargs=s['kw'], device='cpu', detector_path=s['plain'], num_gen=32)
    args.update(kw)
    return metric_main.calc_metric(metric, progress=False, **args)


def test_repeated_evaluation_is_identical_and_reuses_cached_reals(setup, monkeypatch, tmp_path):
    first = _calc(setup, 'fid5k_train')
    assert set(first) == {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus'}
    assert np.isfinite(first['results']['fid5k_train']) and first['results']['fid5k_train'] > 0
    cached = list((tmp_path / 'cache' / 'gan-metrics').glob('*.npz'))
    assert len(cached) == 1 and 'mean_cov' in cached[0].name

    def no_reals(*args, **kwargs):
        raise AssertionError('real features recomputed despite the cache')

    monkeypatch.setattr(features, 'real_batches', no_reals)
    assert _calc(setup, 'fid5k_train')['results'] == first['results']
    other_seed = _calc(setup, 'fid5k_train', seed=1)['results']['fid5k_train']
    assert other_seed != first['results']['fid5k_train']
    with pytest.raises(AssertionError, match='despite the cache'):
        _calc(setup, 'fid5k_train', cache=False)


def test_fid_prints_its_square_root_step(setup, capsys):
    quiet = _calc(setup, 'fid5k_train')['results']['fid5k_train']
    assert 'matrix square root' not in capsys.readouterr().out
    args = dict(
        G=setup['G'], dataset_kwargs=setup['kw'], device='cpu', detector_path=setup['plain'], num_gen=32
    )
    loud = metric_main.calc_metric('fid5k_train', progress=True, **args)['results']['fid5k_train']
    out = capsys.readouterr().out
    assert (
        'fid5k_train: FID matrix square root of the 48x48 covariance product' in out
    )  # 48 stand-in features
    assert 'fid5k_train: FID matrix square root done in ' in out
    assert out.index('generated: 32/32') < out.index('matrix square root of')  # after feature extraction
    assert loud == quiet


def test_changed_image_content_misses_the_cache(setup, tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    make_image_folder(data, n=8)
    kw = dict(setup['kw'], path=str(data), max_size=None)
    a = _calc(setup, 'fid5k_train', dataset_kwargs=kw)['results']['fid5k_train']
    make_image_folder(data, n=8, seed=5)  # same names, other pixels
    b = _calc(setup, 'fid5k_train', dataset_kwargs=kw)['results']['fid5k_train']
    assert a != b and len(list((tmp_path / 'cache' / 'gan-metrics').glob('*.npz'))) == 2


def test_full_metrics_ignore_subset_and_mirror_train_metrics_keep_them(setup, monkeypatch):
    seen = []
    original = features.real_batches

    def spy(dataset, indices, batch_size, num_workers=0):
        seen.append((len(dataset), len(indices)))
        return original(dataset, indices, batch_size, num_workers)

    monkeypatch.setattr(features, 'real_batches', spy)
    _calc(setup, 'fid5k_train')  # max_size=16 with xflip: 32 items
    _calc(setup, 'fid5k_full')  # all 24 images, no mirror
    _calc(setup, 'kid50k', num_gen=8)  # legacy: all 24 images, mirrored
    assert seen == [(32, 32), (24, 24), (48, 48)]


def test_ref_stats_replace_the_reals(setup, tmp_path):
    base = _calc(setup, 'fid5k_full')['results']['fid5k_full']
    cache = next((tmp_path / 'cache' / 'gan-metrics').glob('*.npz'))
    again = _calc(setup, 'fid5k_full', dataset_kwargs={}, ref_stats=str(cache))['results']['fid5k_full']
    assert again == pytest.approx(base, rel=1e-12)
    bad = tmp_path / 'bad.npz'
    np.savez(bad, mu=np.zeros(3))
    with pytest.raises(ValueError, match='--ref-stats=.*bad.npz'):
        _calc(setup, 'fid5k_full', ref_stats=str(bad))


def test_fid_and_kid_share_one_generation(setup, monkeypatch):
    alone = {m: _calc(setup, m)['results'][m] for m in ('fid5k_train', 'kid5k_train')}
    calls = []
    real_generated = features.generated_batches
    counted = lambda *a, **k: calls.append(1) or real_generated(*a, **k)
    monkeypatch.setattr(features, 'generated_batches', counted)
    shared = metric_main.feature_share(['fid5k_train', 'kid5k_train'])
    together = {m: _calc(setup, m, shared=shared)['results'][m] for m in ('fid5k_train', 'kid5k_train')}
    assert len(calls) == 1  # KID reused FID's generated features
    assert together['fid5k_train'] == pytest.approx(alone['fid5k_train'], rel=1e-6)
    assert together['kid5k_train'] == pytest.approx(alone['kid5k_train'], rel=1e-6)
    _calc(setup, 'fid1k_train', shared=shared, num_gen=40)  # another count: generated anew
    assert len(calls) == 2


def test_missing_dataset_and_unknown_metric_are_explained(setup):
    with pytest.raises(ValueError, match='--data=PATH'):
        _calc(setup, 'fid5k_full', dataset_kwargs={})
    with pytest.raises(ValueError, match='fid50k_full'):
        _calc(setup, 'fid5k')


def test_conditional_generator_draws_dataset_labels(setup, tmp_path):
    data = tmp_path / 'cond'
    data.mkdir()
    make_image_folder(data, n=12)
    labels = [[f'img{i:03d}.png', i % 3] for i in range(12)]
    (data / 'dataset.json').write_text(json.dumps({'labels': labels}))
    G = Generator(**dict(TINY_G, c_dim=3))
    kw = dict(class_name=FOLDER_CLASS, path=str(data), use_labels=True)
    res = _calc(setup, 'kid5k_train', G=G, dataset_kwargs=kw, num_gen=16)
    assert np.isfinite(res['results']['kid5k_train'])
    with pytest.raises(ValueError, match='c_dim=5'):
        _calc(setup, 'fid5k_train', G=Generator(**dict(TINY_G, c_dim=5)), dataset_kwargs=kw)


def test_is_and_ppl_run_with_keyword_detectors(setup):
    res = _calc(setup, 'is50k', detector_path=setup['keyword'], num_gen=20)['results']
    assert res['is50k_mean'] >= 1.0 and res['is50k_std'] >= 0
    with pytest.raises(detectors.DetectorError, match='Inception Score'):
        _calc(setup, 'is50k', num_gen=20)  # the plain (fid-helper-style) module has no classifier
    ppl = _calc(setup, 'ppl2_wend', vgg16_path=setup['keyword'], num_gen=16)['results']['ppl2_wend']
    assert np.isfinite(ppl) and ppl >= 0
    assert _calc(setup, 'ppl2_wend', vgg16_path=setup['keyword'], num_gen=16)['results']['ppl2_wend'] == ppl
    pr = _calc(setup, 'pr50k3_full', vgg16_path=setup['keyword'], num_gen=16)['results']
    assert 0 <= pr['pr50k3_full_precision'] <= 1 and 0 <= pr['pr50k3_full_recall'] <= 1


def test_cli_appends_to_the_run_dir(setup):
    args = [f'--network={setup["snap"]}', '--metrics=fid5k_train,kid5k_train', f'--detector={setup["plain"]}']
    res = CliRunner().invoke(calc_metrics.main, args + ['--num-gen=32', '--quiet'])
    assert res.exit_code == 0, res.output
    lines = (setup['run'] / 'metric-fid5k_train.jsonl').read_text().splitlines()
    line = json.loads(lines[-1])
    assert line['snapshot_pkl'] == 'network-snapshot-000004.pkl' and line['num_gpus'] == 1
    assert line['results']['fid5k_train'] == pytest.approx(
        _calc(setup, 'fid5k_train')['results']['fid5k_train']
    )
    assert (setup['run'] / 'metric-kid5k_train.jsonl').exists()


def test_cli_errors_name_the_fix(setup, tmp_path):
    res = CliRunner().invoke(calc_metrics.main, [f'--network={setup["snap"]}', '--metrics=fid'])
    assert res.exit_code == 2 and 'fid50k_full' in res.output
    res = CliRunner().invoke(
        calc_metrics.main, [f'--network={setup["snap"]}', f'--data={tmp_path / "nope"}', '--num-gen=4']
    )
    assert res.exit_code == 1 and 'does not exist' in res.output


def test_two_processes_give_the_same_numbers(setup, tmp_path):
    cmd = [
        sys.executable,
        str(REPO / 'calc_metrics.py'),
        f'--network={setup["snap"]}',
        '--metrics=kid5k_train',
    ]
    cmd += [f'--detector={setup["plain"]}', f'--data={setup["data"]}', '--num-gen=24', '--batch=8', '--quiet']
    kw = dict(class_name=FOLDER_CLASS, path=setup['data'])
    one = _calc(setup, 'kid5k_train', dataset_kwargs=kw, num_gen=24, batch_size=8)
    out = subprocess.run(
        cmd + ['--gpus=2', '--no-cache'], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line['num_gpus'] == 2
    assert line['results']['kid5k_train'] == pytest.approx(one['results']['kid5k_train'], rel=1e-9)
