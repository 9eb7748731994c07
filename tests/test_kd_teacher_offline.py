"""Offline-first weights of pretrained open_clip teachers (kd/teacher_open_clip.py), without any network.

The Hugging Face cache and open_clip's URL cache are redirected to tmp_path; huggingface_hub's HTTP client is
replaced by one that counts requests and fails like an offline machine, so the real hub code (including its
retry logic) runs and any retry would show up as a second request.
"""

import hashlib
import logging
import urllib.error
import urllib.request
import warnings

import huggingface_hub
import open_clip
import pytest
import torch
from conftest import tiny_clip_name
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import EntryNotFoundError
from huggingface_hub.utils import _http as hf_http

from stylegan2_ada_kd.kd import teacher as teacher_mod
from stylegan2_ada_kd.kd import teacher_open_clip
from stylegan2_ada_kd.kd.teacher import TeacherError, load_teacher

TINY = tiny_clip_name()
VIT_REPO = 'timm/vit_base_patch32_clip_224.openai'


class _OfflineClient:
    """Stands in for huggingface_hub's shared httpx client: records each request and fails to connect."""

    def __init__(self):
        self.calls = []

    def request(self, method, url, **kwargs):
        self.calls.append((method, url))
        raise hf_http.httpx2.ConnectError('network is unreachable (simulated)')

    def stream(self, method, url, **kwargs):
        return self.request(method, url, **kwargs)


class _Offline:
    def __init__(self, tmp_path):
        self.hub = tmp_path / 'hub'
        self.home = tmp_path / 'home'
        self.client = _OfflineClient()
        self.urlopen_calls = []

    def urlopen(self, request, timeout=None, **kwargs):
        self.urlopen_calls.append((request.get_method(), request.full_url, timeout))
        raise urllib.error.URLError('network is unreachable (simulated)')


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Empty caches under tmp_path, an offline HTTP layer, open_clip's own downloads forbidden."""
    state = _Offline(tmp_path)
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(state.hub))
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setenv('HOME', str(state.home))  # open_clip's URL cache is ~/.cache/clip
    monkeypatch.setattr(hf_http, 'get_session', lambda: state.client)
    monkeypatch.setattr(urllib.request, 'urlopen', state.urlopen)
    for fn in ('download_pretrained', 'download_pretrained_from_hf'):
        monkeypatch.setattr(open_clip.factory, fn, lambda *a, **k: pytest.fail("open_clip's download ran"))
    monkeypatch.setattr(teacher_mod, '_TEACHERS', {})
    return state


def _tag(monkeypatch, tag, **cfg):
    """Give the tiny test CLIP an open_clip pretrained tag with config ``cfg`` (hf_hub / url / mean / ...)."""
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY, {tag: cfg})
    return f'{TINY}:{tag}'


def _tiny_state(seed=0):
    torch.manual_seed(seed)
    return open_clip.create_model(TINY, pretrained=None).state_dict()


def _put_in_hf_cache(hub, repo, fname, state):
    """A file in the layout of the Hugging Face cache: models--ORG--NAME/{refs/main, snapshots/HASH/FILE}."""
    commit = 'c0ffee' * 6 + 'c0ff'
    base = hub / ('models--' + repo.replace('/', '--'))
    (base / 'refs').mkdir(parents=True)
    (base / 'refs' / 'main').write_text(commit)
    (base / 'snapshots' / commit).mkdir(parents=True)
    path = base / 'snapshots' / commit / fname
    torch.save(state, path)
    return path


def _assert_same_weights(teacher, state):
    loaded = teacher.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)
    assert set(state) <= set(loaded)


def test_offline_default_teacher_makes_one_request_and_prints_only_our_error(offline, caplog, capsys):
    hub_records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = hub_records.append
    hub_logger = logging.getLogger('huggingface_hub')
    hub_logger.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught, pytest.raises(TeacherError) as err:
            warnings.simplefilter('always')
            load_teacher('ViT-B-32:openai')
    finally:
        hub_logger.removeHandler(handler)
    # Exactly one request after the cache miss: a HEAD of the first candidate file, not retried, and no
    # second file name tried (under this client open_clip's own download makes 14 requests and logs 10
    # 'Retrying in Ns' lines).
    assert len(offline.client.calls) == 1
    method, url = offline.client.calls[0]
    assert method == 'HEAD' and url.endswith(f'/{VIT_REPO}/resolve/main/open_clip_model.safetensors')
    assert offline.urlopen_calls == []
    text = str(err.value)
    assert '\n' not in text
    for part in (
        'ViT-B-32',
        "'openai'",
        'network is unreachable',
        'one request',
        'no retries',
        str(offline.hub),
        VIT_REPO,
        'open_clip_pytorch_model.bin',
        str(offline.home / '.cache' / 'clip' / 'ViT-B-32.pt'),
        '--kd-teacher-weights=PATH',
        'random',
    ):
        assert part in text, (part, text)
    # Nothing but our exception: no output, no hub log records, no warnings, no retry lines.
    out = capsys.readouterr()
    assert out.out == '' and out.err == ''
    assert hub_records == [] and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert 'Retry' not in caplog.text and not caught
    assert teacher_mod._TEACHERS == {}


def test_weights_in_the_hf_cache_load_with_no_request(offline, monkeypatch):
    spec = _tag(monkeypatch, 'cachedtag', hf_hub='test-org/tiny-clip/', mean=(0.5,) * 3, std=(0.25,) * 3)
    state = _tiny_state(seed=1)
    _put_in_hf_cache(offline.hub, 'test-org/tiny-clip', 'open_clip_pytorch_model.bin', state)
    teacher = load_teacher(spec)
    assert offline.client.calls == [] and offline.urlopen_calls == []
    assert not teacher.is_random and teacher.embed_dim == 16
    _assert_same_weights(teacher, state)
    # The tag's preprocessing applies although open_clip was given a file path.
    assert torch.equal(teacher.mean, torch.full([3], 0.5)) and torch.equal(teacher.std, torch.full([3], 0.25))


def test_a_missing_file_name_is_not_a_retry(offline, monkeypatch, tmp_path):
    """A 404 for the safetensors name moves on to the .bin name; the hub answered, so it downloads."""
    spec = _tag(monkeypatch, 'hubtag', hf_hub='test-org/tiny-clip/')
    state = _tiny_state(seed=2)
    heads, downloads = [], []

    def metadata(url, timeout=None, **kwargs):
        heads.append((url.rsplit('/', 1)[-1], timeout))
        if url.endswith('.safetensors'):
            raise EntryNotFoundError('404 (simulated)')
        return object()

    def download(repo_id, filename, **kwargs):
        downloads.append((repo_id, filename))
        path = tmp_path / filename
        torch.save(state, path)
        return str(path)

    monkeypatch.setattr(huggingface_hub, 'get_hf_file_metadata', metadata)
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', download)
    teacher = load_teacher(spec)
    timeout = float(hf_constants.HF_HUB_ETAG_TIMEOUT)
    assert heads == [('open_clip_model.safetensors', timeout), ('open_clip_pytorch_model.bin', timeout)]
    assert downloads == [('test-org/tiny-clip', 'open_clip_pytorch_model.bin')]
    assert offline.client.calls == []
    _assert_same_weights(teacher, state)


def test_hf_hub_offline_means_no_request_at_all(offline, monkeypatch):
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(TeacherError, match='HF_HUB_OFFLINE') as err:
        load_teacher('ViT-B-32:openai')
    assert offline.client.calls == [] and offline.urlopen_calls == []
    assert '--kd-teacher-weights=PATH' in str(err.value)


def test_url_cache_is_used_when_its_checksum_matches(offline, monkeypatch):
    clip_dir = offline.home / '.cache' / 'clip'
    clip_dir.mkdir(parents=True)
    state = _tiny_state(seed=3)
    torch.save(state, clip_dir / 'tiny-clip.pt')
    sha = hashlib.sha256((clip_dir / 'tiny-clip.pt').read_bytes()).hexdigest()
    url = f'https://openaipublic.azureedge.net/clip/models/{sha}/tiny-clip.pt'
    teacher = load_teacher(_tag(monkeypatch, 'urltag', url=url))
    assert offline.client.calls == [] and offline.urlopen_calls == []
    _assert_same_weights(teacher, state)

    # A file whose checksum does not match is a cache miss: one HEAD request to the URL, then our error.
    bad_url = f'https://openaipublic.azureedge.net/clip/models/{"0" * 64}/tiny-clip.pt'
    with pytest.raises(TeacherError) as err:
        load_teacher(_tag(monkeypatch, 'badtag', url=bad_url))
    timeout = float(hf_constants.HF_HUB_ETAG_TIMEOUT)
    assert offline.urlopen_calls == [('HEAD', bad_url, timeout)] and offline.client.calls == []
    for part in (str(clip_dir / 'tiny-clip.pt'), bad_url, 'network is unreachable', '--kd-teacher-weights'):
        assert part in str(err.value), (part, str(err.value))


def test_a_corrupt_cached_file_names_the_file(offline, monkeypatch):
    spec = _tag(monkeypatch, 'corrupttag', hf_hub='test-org/broken-clip/')
    path = _put_in_hf_cache(offline.hub, 'test-org/broken-clip', 'open_clip_pytorch_model.bin', {})
    path.write_bytes(b'truncated download' * 4)
    with pytest.raises(TeacherError) as err:
        load_teacher(spec)
    assert offline.client.calls == []
    text = str(err.value)
    assert str(path) in text and 'delete it' in text and '--kd-teacher-weights' in text and '\n' not in text


def test_weight_sources_follow_open_clip_order():
    cfg = open_clip.get_pretrained_cfg('ViT-B-32', 'openai')
    src = teacher_open_clip.weight_sources(cfg)
    assert src.repo == VIT_REPO and src.url == cfg['url']
    assert src.files == ['open_clip_model.safetensors', 'open_clip_pytorch_model.bin']
    named = teacher_open_clip.weight_sources({'hf_hub': 'org/repo/weights.bin'})
    assert (
        named.repo == 'org/repo' and named.files == ['weights.safetensors', 'weights.bin'] and not named.url
    )
