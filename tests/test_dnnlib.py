"""Tests for dnnlib.util: EasyDict, construct_class_by_name, open_url, parse_range."""

import hashlib
import os
import pickle

import pytest
import requests

import dnnlib
from dnnlib import util


def test_easydict_attribute_access_and_pickling():
    d = dnnlib.EasyDict(a=1, nested=dnnlib.EasyDict(b=2))
    d.c = 3
    assert d['c'] == 3 and d.nested.b == 2
    del d.c
    with pytest.raises(AttributeError):
        _ = d.c
    data = pickle.dumps(d)
    assert b'dnnlib.util' in data and b'EasyDict' in data
    loaded = pickle.loads(data)
    assert type(loaded) is util.EasyDict and type(loaded.nested) is util.EasyDict
    assert loaded == {'a': 1, 'nested': {'b': 2}}


def test_open_url_local_path_and_file_url(tmp_path):
    path = tmp_path / 'some file.bin'
    path.write_bytes(b'hello')
    with util.open_url(str(path)) as f:
        assert f.read() == b'hello'
    with util.open_url(path.as_uri()) as f:
        assert f.read() == b'hello'
    with pytest.raises(FileNotFoundError, match='nope.bin'):
        util.open_url(str(tmp_path / 'nope.bin'))
    with pytest.raises(ValueError, match='ftp'):
        util.open_url('ftp://example.com/x.pkl')


class FakeResponse:
    def __init__(self, payload, status=200):
        self.payload, self.status = payload, status

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def raise_for_status(self):
        if self.status != 200:
            raise requests.HTTPError(f'{self.status} error')

    def iter_content(self, chunk_size):
        yield self.payload[:3]
        yield self.payload[3:]


def test_open_url_downloads_once_into_cache(tmp_path, monkeypatch):
    calls = []

    def fake_get(url, stream, timeout):
        calls.append(url)
        return FakeResponse(b'network bytes')

    monkeypatch.setattr(requests, 'get', fake_get)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    url = 'https://example.com/models/net work.pkl'
    for _ in range(2):
        with util.open_url(url, verbose=False) as f:
            assert f.read() == b'network bytes'
    assert calls == [url]
    expected = tmp_path / 'cache' / 'downloads' / (hashlib.md5(url.encode()).hexdigest() + '_net_work.pkl')
    assert expected.is_file()
    assert sorted(p.name for p in expected.parent.iterdir()) == [expected.name]
    assert util.make_cache_dir_path('downloads') == str(tmp_path / 'cache' / 'downloads')


def test_open_url_failed_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(requests, 'get', lambda url, stream, timeout: FakeResponse(b'', status=404))
    monkeypatch.setattr(util.time, 'sleep', lambda seconds: None)
    url = 'http://example.com/missing.pkl'
    with pytest.raises(OSError) as info:
        util.open_url(url, cache_dir=str(tmp_path), num_attempts=2, verbose=False)
    assert url in str(info.value) and 'manually' in str(info.value)
    assert list((tmp_path / 'downloads').iterdir()) == []  # no partial file left behind


@pytest.mark.parametrize(
    'spec, expected',
    [('0-3,7', [0, 1, 2, 3, 7]), ('5', [5]), (' 1 , 2-3 ', [1, 2, 3]), ('10-10', [10])],
)
def test_parse_range(spec, expected):
    assert util.parse_range(spec) == expected


@pytest.mark.parametrize('spec', ['', 'a', '1-', '3-1', '1,,2', '-1'])
def test_parse_range_rejects_bad_input(spec):
    with pytest.raises(ValueError):
        util.parse_range(spec)


def test_construct_class_by_name():
    od = util.construct_class_by_name(class_name='collections.OrderedDict', a=1)
    assert type(od).__name__ == 'OrderedDict' and od['a'] == 1
    assert util.construct_class_by_name('a', 'b', class_name='os.path.join') == os.path.join('a', 'b')
    for bad in ('no_such_module_xyz.Thing', 'collections.NoSuchClass'):
        with pytest.raises(ImportError, match=bad.split('.')[0]):
            util.construct_class_by_name(class_name=bad)
    with pytest.raises(TypeError, match='cannot be called'):
        util.construct_class_by_name(class_name='os.sep')


def _dead_pid():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def test_remove_stale_temp_files_keeps_live_and_foreign_ones(tmp_path):
    host = util._host_tag()
    dead = _dead_pid()
    names = {
        f'.network-snapshot-000004.pkl.{host}-{dead}.k2j4a9zq.tmp': False,  # killed writer: removed
        f'.fakes000004.png.{host}-{dead}.tmp.png': False,
        f'.network-snapshot-000008.pkl.{host}-{os.getpid()}.abcd1234.tmp': True,  # being written now
        f'.network-snapshot-000008.pkl.otherhost-{dead}.abcd1234.tmp': True,  # another machine's
        'network-snapshot-000004.pkl': True,
        'notes.tmp': True,
    }
    for name in names:
        (tmp_path / name).write_bytes(b'x')
    (tmp_path / 'sub').mkdir()
    (tmp_path / 'sub' / f'.x.pkl.{host}-{dead}.tmp').write_bytes(b'x')
    removed = util.remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted(n for n, keep in names.items() if not keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [n for n, keep in names.items() if keep] + ['sub']
    )
    assert (tmp_path / 'sub' / f'.x.pkl.{host}-{dead}.tmp').exists()  # only the directory itself


def test_atomic_writes_use_names_the_cleaner_recognises(tmp_path):
    """Temp files of atomic writes are recognised by the stale cleanup; the result has the usual mode."""
    import numpy as np

    from torch_utils import run_io

    seen = []

    def write(handle):
        seen.extend(p.name for p in tmp_path.iterdir())
        handle.write(b'data')

    util.atomic_write(tmp_path / 'network-snapshot-000000.pkl', write)
    assert len(seen) == 1 and util._TEMP_NAME.match(seen[0]), seen
    assert (tmp_path / 'network-snapshot-000000.pkl').stat().st_mode & 0o777 == 0o666 & ~_umask()
    run_io.save_image_grid(np.zeros([4, 3, 4, 4]), str(tmp_path / 'fakes.png'), (0, 1), (2, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['fakes.png', 'network-snapshot-000000.pkl']


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
