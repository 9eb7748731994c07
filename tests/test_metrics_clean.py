"""The clean-fid protocol (metrics.clean): its names, the PIL bicubic resize to 299 before a detector whose
own resize is then the identity, real-statistics caches apart from the legacy ones, feature sharing between
clean FID and KID only, and agreement with the clean-fid package (its resizer, and its FID on our
features; skipped when it is not installed: ``pip install --no-deps clean-fid``, which imports torchvision,
tqdm and requests and downloads nothing until its own models are asked for). Stand-in TorchScript
detector, tiny images, no downloads."""

import numpy as np
import pytest
import torch
from conftest import TINY_G, make_image_folder

from metrics import clean, detectors, features, fid_kid, metric_main
from stylegan2_ada_kd.networks import Generator

SIZES = [(32, 32), (64, 64), (256, 256), (48, 80), (299, 299), (512, 384)]


class TinyInception(torch.nn.Module):
    """Plain-convention stand-in: normalised [N, 3, 299, 299] -> [N, 48] pooled values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('clean')
    path = root / 'tiny.pt'
    torch.jit.script(TinyInception()).save(str(path))
    (root / 'data').mkdir()
    data = make_image_folder(root / 'data', n=12)
    return dict(detector=str(path), G=Generator(**TINY_G), kw=dict(path=data, use_labels=False))


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))


def _calc(s, metric, **kw):
    args = dict(G=s['G'], dataset_kwargs=s['kw'], device='cpu', detector_path=s['detector'], num_gen=24)
    return metric_main.calc_metric(metric, progress=False, **dict(args, **kw))['results'][metric]


def _random_images(h, w, n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, h, w), dtype=np.uint8)


def test_clean_names_are_registered_and_counted():
    assert 'cleanfid50k_full' in metric_main.list_valid_metrics()
    spec = metric_main.metric_spec('cleanfid50k_full')
    assert (spec.kind, spec.num_gen, spec.reals, spec.max_reals) == ('cleanfid', 50000, 'full', None)
    spec = metric_main.metric_spec('cleankid2k_train')
    assert (spec.kind, spec.num_gen, spec.reals, spec.max_reals) == ('cleankid', 2000, 'train', 1000000)
    assert metric_main.is_valid_metric('cleanfid5k_train') and not metric_main.is_valid_metric('cleanfid50k')
    assert '{fid,kid,cleanfid,cleankid}<N>k_{full,train}' in metric_main.describe_metrics()
    assert metric_main.feature_share(['cleanfid5k_train', 'cleankid5k_train']) == {}
    assert metric_main.feature_share(['fid5k_train', 'cleanfid5k_train']) is None


@pytest.mark.parametrize('h, w', SIZES)
def test_clean_resize_is_float_pil_bicubic_per_channel(h, w):
    images = _random_images(h, w)
    out = clean.clean_resize(torch.from_numpy(images))
    assert out.shape == (2, 3, 299, 299) and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    if (h, w) == (299, 299):
        assert torch.equal(out, torch.from_numpy(images).float())  # nothing to resize
    elif h < 299:
        assert not torch.equal(out, out.round())  # kept as float, not quantised


@pytest.mark.parametrize('h, w', SIZES)
def test_clean_resize_equals_clean_fid(h, w):
    resize = pytest.importorskip('cleanfid.resize').make_resizer('PIL', False, 'bicubic', (299, 299))
    images = _random_images(h, w, n=3, seed=h + w)
    ours = clean.clean_resize(torch.from_numpy(images)).numpy()
    theirs = np.stack([resize(image.transpose(1, 2, 0)).transpose(2, 0, 1) for image in images])
    assert theirs.dtype == np.float32 and np.abs(ours - theirs).max() <= 1e-4


def test_clean_fid_of_our_features_equals_clean_fids_formula(setup):
    cleanfid = pytest.importorskip('cleanfid.fid')
    view = clean.CleanInception(detectors.load_detector('inception', setup['detector']))
    feats = [
        view(torch.from_numpy(_random_images(40, 40, n=60, seed=seed))).double().numpy() for seed in (1, 2)
    ]
    ours = fid_kid.fid_with_progress('x', *[features.moments(f) for f in feats], show=False)
    assert ours == pytest.approx(float(cleanfid.fid_from_feats(*feats)), rel=1e-6, abs=1e-9)


def test_the_detector_sees_299_and_caches_stay_apart(setup, tmp_path, monkeypatch):
    seen = []
    original = detectors.tf_resize_bilinear
    monkeypatch.setattr(
        detectors, 'tf_resize_bilinear', lambda x, size: seen.append(x.shape[-1]) or original(x, size)
    )
    legacy = _calc(setup, 'fid1k_full')
    assert set(seen) == {16}  # the legacy protocol: the detector resizes 16 -> 299 itself
    seen.clear()
    cleaned = _calc(setup, 'cleanfid1k_full')
    assert set(seen) == {299}  # clean: already 299x299, so the detector's resize is the identity
    assert np.isfinite(cleaned) and cleaned != legacy
    cached = sorted(p.name for p in (tmp_path / 'cache' / 'gan-metrics').glob('*.npz'))
    assert len(cached) == 2 and sum('-clean-' in name for name in cached) == 1
    assert _calc(setup, 'cleanfid1k_full') == cleaned  # from the cache, deterministic


def test_clean_fid_and_kid_share_one_generation_and_take_ref_stats(setup, tmp_path, monkeypatch):
    alone = _calc(setup, 'cleankid1k_train')
    calls = []
    generated = features.generated_batches
    monkeypatch.setattr(features, 'generated_batches', lambda *a, **k: calls.append(1) or generated(*a, **k))
    shared = metric_main.feature_share(['cleanfid1k_train', 'cleankid1k_train'])
    fid = _calc(setup, 'cleanfid1k_train', shared=shared)
    assert _calc(setup, 'cleankid1k_train', shared=shared) == pytest.approx(alone, rel=1e-6)
    assert len(calls) == 1
    stats = next((tmp_path / 'cache' / 'gan-metrics').glob('*-clean-mean_cov-*.npz'))
    assert _calc(setup, 'cleanfid1k_train', dataset_kwargs={}, ref_stats=str(stats)) == pytest.approx(fid)
