"""Tests for stylegan2_ada_kd.checkpoint: our snapshot format, official-pickle import, unsafe-pickle refusal,
and the reference's ``import legacy; legacy.load_network_pkl(f)`` idiom from the repository root."""

import builtins
import collections
import io
import json
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from conftest import REPO, SUBPROCESS_TIMEOUT, TINY_D, TINY_G

import torch_utils
from dnnlib.util import EasyDict
from stylegan2_ada_kd import checkpoint
from stylegan2_ada_kd.checkpoint import official
from stylegan2_ada_kd.networks import Discriminator, Generator

G_KWARGS = TINY_G
D_KWARGS = TINY_D


def randomize(module, seed):
    """Give every parameter and buffer random values so that outputs depend on all of them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_floating_point():
                tensor.add_(0.2 * torch.randn(tensor.shape, generator=gen))
    return module.eval()


def tiny_nets(seed=0):
    torch.manual_seed(seed)
    G = randomize(Generator(**G_KWARGS), seed + 1)
    D = randomize(Discriminator(**D_KWARGS), seed + 2)
    G_ema = randomize(Generator(**G_KWARGS), seed + 3)
    return G, D, G_ema


def g_output(G, seed=123):
    z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(seed))
    c = torch.zeros([2, G.c_dim])
    with torch.no_grad():
        return G(z, c, truncation_psi=0.7, noise_mode='const')


def d_output(D, seed=321):
    img = torch.randn(
        [2, D.img_channels, D.img_resolution, D.img_resolution], generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        return D(img, torch.zeros([2, D.c_dim]))


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# ----------------------------------------------------------------------------------------------------
# Our snapshot format.


def test_snapshot_round_trip(tmp_path):
    G, D, G_ema = tiny_nets()
    path = tmp_path / 'snap.pkl'
    checkpoint.save_network_snapshot(
        path,
        G=G,
        D=D,
        G_ema=G_ema,
        training_set_kwargs=EasyDict(path='data.zip', resolution=16, xflip=np.bool_(True)),
        extra={'cur_nimg': 4000, 'pl_mean': torch.tensor(0.5)},
    )
    raw = torch.load(path, weights_only=True)  # readable without our code
    assert raw['format'] == checkpoint.SNAPSHOT_FORMAT
    assert raw['networks']['G']['class_name'] == 'stylegan2_ada_kd.networks.Generator'
    assert raw['networks']['D']['init_kwargs']['epilogue_kwargs'] == {'mbstd_group_size': 2}

    data = checkpoint.load_network_pkl(path)
    assert data['training_set_kwargs'] == {'path': 'data.zip', 'resolution': 16, 'xflip': True}
    assert data['cur_nimg'] == 4000 and float(data['pl_mean']) == 0.5
    assert data['augment_pipe'] is None
    for key, source in (('G', G), ('D', D), ('G_ema', G_ema)):
        module = data[key]
        assert type(module) is type(source) and not module.training
        assert not any(p.requires_grad for p in module.parameters())
        assert_same_state(module, source)
    assert torch.equal(g_output(data['G_ema']), g_output(G_ema))
    assert torch.equal(d_output(data['D']), d_output(D))
    with open(path, 'rb') as handle:  # file objects work too
        assert_same_state(checkpoint.load_network_pkl(handle)['G'], G)


def test_snapshot_extra_keeps_optimizer_state(tmp_path):
    G, D, G_ema = tiny_nets()
    opt = torch.optim.Adam(G.parameters(), lr=0.002, betas=(0.0, 0.99))
    G.requires_grad_(True)
    G(torch.randn(2, 8), torch.zeros(2, 0)).sum().backward()
    opt.step()
    path = tmp_path / 'snap.pkl'
    checkpoint.save_network_snapshot(
        path, G=G, D=D, G_ema=G_ema, extra={'resume_state': {'opt': opt.state_dict()}}
    )
    restored = checkpoint.load_network_pkl(path)['resume_state']['opt']
    assert sorted(restored['state']) == sorted(opt.state_dict()['state'])  # int keys survive
    fresh = torch.optim.Adam(G.parameters(), lr=0.002)
    fresh.load_state_dict(restored)
    assert fresh.param_groups[0]['betas'] == (0.0, 0.99)


def test_snapshot_rebuilds_from_init_kwargs(tmp_path):
    G, D, G_ema = tiny_nets()
    checkpoint.save_network_snapshot(tmp_path / 's.pkl', G=G, D=D, G_ema=G_ema)
    G2 = checkpoint.load_network_pkl(tmp_path / 's.pkl')['G']
    assert G2.init_kwargs == G.init_kwargs
    assert type(G2)(**G2.init_kwargs).state_dict().keys() == G.state_dict().keys()


def test_snapshot_write_is_atomic(tmp_path, monkeypatch):
    G, D, G_ema = tiny_nets()
    dest = tmp_path / 'snap.pkl'

    def failing_save(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 half a file')
        raise OSError('disk full (simulated)')

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError, match='simulated'):
        checkpoint.save_network_snapshot(dest, G=G, D=D, G_ema=G_ema)
    assert list(tmp_path.iterdir()) == []  # neither the destination nor a temporary file


def test_failed_overwrite_keeps_old_snapshot(tmp_path, monkeypatch):
    G, D, G_ema = tiny_nets()
    dest = tmp_path / 'snap.pkl'
    checkpoint.save_network_snapshot(dest, G=G, D=D, G_ema=G_ema)
    monkeypatch.setattr(torch, 'save', lambda *a, **k: (_ for _ in ()).throw(OSError('simulated')))
    with pytest.raises(OSError):
        checkpoint.save_network_snapshot(dest, G=G_ema, D=D, G_ema=G)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ['snap.pkl']
    assert_same_state(checkpoint.load_network_pkl(dest)['G'], G)


def test_snapshot_rejects_bad_input(tmp_path):
    G, D, G_ema = tiny_nets()
    with pytest.raises(ValueError, match='reserved'):
        checkpoint.save_network_snapshot(tmp_path / 'a.pkl', G=G, D=D, G_ema=G_ema, extra={'G': 1})
    with pytest.raises(TypeError, match='extra'):
        checkpoint.save_network_snapshot(tmp_path / 'a.pkl', G=G, D=D, G_ema=G_ema, extra={'x': object()})
    with pytest.raises(TypeError, match='init_kwargs'):
        checkpoint.save_network_snapshot(tmp_path / 'a.pkl', G=G, D=torch.nn.Linear(2, 2), G_ema=G_ema)
    linear = torch.nn.Linear(2, 2)
    linear.init_kwargs = dict(in_features=2, out_features=2)
    with pytest.raises(TypeError, match='not registered'):
        checkpoint.save_network_snapshot(tmp_path / 'a.pkl', G=G, D=linear, G_ema=G_ema)
    assert not (tmp_path / 'a.pkl').exists()


def test_snapshot_mismatch_is_explained(tmp_path):
    G, D, G_ema = tiny_nets()
    path = tmp_path / 'snap.pkl'
    checkpoint.save_network_snapshot(path, G=G, D=D, G_ema=G_ema)
    raw = torch.load(path, weights_only=True)
    state = raw['networks']['G']['state_dict']
    state.pop('mapping.w_avg')
    state['extra.weight'] = torch.zeros(1)
    torch.save(raw, path)
    with pytest.raises(checkpoint.NetworkPickleError) as info:
        checkpoint.load_network_pkl(path)
    message = str(info.value)
    assert str(path) in message and 'mapping.w_avg' in message and 'extra.weight' in message
    assert "networks['G']" in message


def test_unknown_snapshot_class_is_refused(tmp_path):
    G, D, G_ema = tiny_nets()
    path = tmp_path / 'snap.pkl'
    checkpoint.save_network_snapshot(path, G=G, D=D, G_ema=G_ema)
    raw = torch.load(path, weights_only=True)
    raw['networks']['D']['class_name'] = 'os.system'
    torch.save(raw, path)
    with pytest.raises(checkpoint.NetworkPickleError, match='not registered'):
        checkpoint.load_network_pkl(path)


def test_register_network_class():
    class Extra(torch.nn.Module):
        pass

    checkpoint.register_network_class('tests.Extra', Extra)
    checkpoint.register_network_class('tests.Extra', Extra)  # idempotent
    with pytest.raises(ValueError, match='already'):
        checkpoint.register_network_class('tests.Extra', torch.nn.Identity)
    with pytest.raises(TypeError):
        checkpoint.register_network_class('tests.bad', int)


def test_export_state_dicts(tmp_path):
    G, D, G_ema = tiny_nets()
    data = {'G': G, 'D': D, 'G_ema': G_ema, 'augment_pipe': None, 'training_set_kwargs': {'path': 'x.zip'}}
    written = checkpoint.export_state_dicts(data, tmp_path / 'out')
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == [
        'D.pt',
        'G.pt',
        'G_ema.pt',
        'networks.json',
    ]
    manifest = json.loads(written['json'].read_text())
    assert manifest['training_set_kwargs'] == {'path': 'x.zip'}
    for key, module in (('G', G), ('D', D), ('G_ema', G_ema)):
        entry = manifest['networks'][key]
        rebuilt = {'G': Generator, 'D': Discriminator, 'G_ema': Generator}[key](**entry['init_kwargs'])
        rebuilt.load_state_dict(torch.load(tmp_path / 'out' / entry['state_dict_file'], weights_only=True))
        assert_same_state(rebuilt, module)


def test_reference_idiom_import_legacy_from_the_repository_root(tmp_path):
    """stylegan2-ada-pytorch's scripts do ``import legacy; G = legacy.load_network_pkl(f)['G_ema']``."""
    G, D, G_ema = tiny_nets()
    path = tmp_path / 'snap.pkl'
    checkpoint.save_network_snapshot(path, G=G, D=D, G_ema=G_ema)
    script = (
        'import sys, torch, dnnlib, legacy\n'
        'with dnnlib.util.open_url(sys.argv[1]) as f:\n'
        '    G = legacy.load_network_pkl(f)["G_ema"]\n'
        'torch.save(G.state_dict(), sys.argv[2])\n'
    )
    out = tmp_path / 'G_ema.pt'
    cmd = [sys.executable, '-c', script, str(path), str(out)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert res.returncode == 0, res.stderr[-3000:]
    state = torch.load(out, weights_only=True)
    assert state.keys() == G_ema.state_dict().keys()
    assert all(torch.equal(state[key], value) for key, value in G_ema.state_dict().items())


def test_garbage_and_tensorflow_files_are_refused(tmp_path):
    garbage = tmp_path / 'garbage.pkl'
    garbage.write_bytes(b'this is not a pickle at all')
    with pytest.raises(checkpoint.NetworkPickleError, match='garbage.pkl'):
        checkpoint.load_network_pkl(garbage)
    tf_pickle = tmp_path / 'tf.pkl'
    tf_pickle.write_bytes(b'cdnnlib.tflib.network\nNetwork\n.')
    with pytest.raises(checkpoint.NetworkPickleError, match='TensorFlow'):
        checkpoint.load_network_pkl(tf_pickle)
    with pytest.raises(FileNotFoundError, match='missing.pkl'):
        checkpoint.load_network_pkl(tmp_path / 'missing.pkl')


# ----------------------------------------------------------------------------------------------------
# Official StyleGAN2-ADA pickles, built here with a fake `torch_utils.persistence`.


class Persistent:
    """Pickles as a call to the (fake) persistence reconstructor, like an official persistent object."""

    def __init__(self, reconstruct, meta):
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


@pytest.fixture
def fake_persistence(monkeypatch):
    module = types.ModuleType('torch_utils.persistence')

    def _reconstruct_persistent_obj(meta):
        raise AssertionError('only needed for pickling')

    _reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'
    _reconstruct_persistent_obj.__qualname__ = '_reconstruct_persistent_obj'
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, 'torch_utils.persistence', module)
    monkeypatch.setattr(torch_utils, 'persistence', module, raising=False)
    return _reconstruct_persistent_obj


def evil_source(marker):
    return f'open({str(marker)!r}, "w").write("executed")\nraise RuntimeError("module_src must never run")\n'


def to_official(module, reconstruct, module_src, init_kwargs=None):
    """Mirror an nn.Module tree as official persistent objects (state = the instance __dict__)."""
    state = dict(module.__dict__)
    state.pop('init_kwargs', None)
    state['_modules'] = collections.OrderedDict(
        (name, to_official(child, reconstruct, module_src))
        for name, child in module._modules.items()
        if not (isinstance(child, torch.nn.ModuleDict) and len(child) == 0)
    )
    if 'w_avg_beta' in state:
        state['w_avg_beta'] = np.float64(state['w_avg_beta'])
    state['_init_args'] = ()
    state['_init_kwargs'] = init_kwargs if init_kwargs is not None else EasyDict()
    meta = dict(type='class', version=6, module_src=module_src, class_name=type(module).__name__, state=state)
    return Persistent(reconstruct, meta)


def easy(kwargs):
    return EasyDict({k: easy(v) if isinstance(v, dict) else v for k, v in kwargs.items()})


def official_snapshot(reconstruct, marker, nets, d_kwargs=None):
    G, D, G_ema = nets
    src = evil_source(marker)
    augment = dict(_buffers=collections.OrderedDict(p=torch.tensor(0.25)), _modules={})
    augment.update(_init_args=(), _init_kwargs=EasyDict(xflip=1, rotate90=1, scale=np.float64(1.0)))
    return dict(
        training_set_kwargs=dict(
            class_name='training.dataset.ImageFolderDataset', path='~/data.zip', xflip=False
        ),
        G=to_official(G, reconstruct, src, easy(G.init_kwargs)),
        D=to_official(D, reconstruct, src, easy(d_kwargs or D_KWARGS)),
        G_ema=to_official(G_ema, reconstruct, src, easy(G_ema.init_kwargs)),
        augment_pipe=Persistent(
            reconstruct,
            dict(type='class', version=6, module_src=src, class_name='AugmentPipe', state=augment),
        ),
    )


def test_official_pickle_loads_without_running_code(tmp_path, fake_persistence, monkeypatch):
    marker = tmp_path / 'MARKER'
    nets = tiny_nets(seed=5)
    path = tmp_path / 'network-snapshot-000000.pkl'
    with open(path, 'wb') as handle:
        pickle.dump(official_snapshot(fake_persistence, marker, nets), handle)
    monkeypatch.delitem(sys.modules, 'torch_utils.persistence')  # the loader must not need it

    data = checkpoint.load_network_pkl(str(path))
    assert not marker.exists()
    G, D, G_ema = nets
    assert isinstance(data['G_ema'], Generator) and isinstance(data['D'], Discriminator)
    for key, source in (('G', G), ('D', D), ('G_ema', G_ema)):
        assert_same_state(data[key], source)
        assert not data[key].training
    assert torch.equal(g_output(data['G_ema']), g_output(G_ema))
    assert torch.equal(d_output(data['D']), d_output(D))
    assert data['training_set_kwargs']['path'] == '~/data.zip'
    assert data['augment_pipe'] is None
    assert data['augment_pipe_kwargs'] == {'xflip': 1, 'rotate90': 1, 'scale': 1.0}
    assert data['augment_p'] == 0.25


def test_official_pickle_converts_to_snapshot(tmp_path, fake_persistence, monkeypatch):
    marker = tmp_path / 'MARKER'
    nets = tiny_nets(seed=6)
    src = tmp_path / 'official.pkl'
    src.write_bytes(pickle.dumps(official_snapshot(fake_persistence, marker, nets)))
    monkeypatch.delitem(sys.modules, 'torch_utils.persistence')
    checkpoint.convert_network_pkl(src, dest=tmp_path / 'ours.pkl', state_dict_dir=tmp_path / 'sd')
    data = checkpoint.load_network_pkl(tmp_path / 'ours.pkl')
    assert data['augment_p'] == 0.25 and data['augment_pipe_kwargs']['rotate90'] == 1
    assert torch.equal(g_output(data['G_ema']), g_output(nets[2]))
    assert (tmp_path / 'sd' / 'G_ema.pt').is_file() and not marker.exists()


def test_official_pickle_kwargs_mismatch_is_explained(tmp_path, fake_persistence):
    wrong = dict(D_KWARGS, channel_max=8)
    path = tmp_path / 'official.pkl'
    path.write_bytes(pickle.dumps(official_snapshot(fake_persistence, tmp_path / 'M', tiny_nets(), wrong)))
    with pytest.raises(checkpoint.NetworkPickleError) as info:
        checkpoint.load_network_pkl(path)
    message = str(info.value)
    assert 'official.pkl: D' in message and 'shape' in message and "'channel_max': 8" in message


def test_official_pickle_with_wrong_class_is_refused(tmp_path, fake_persistence):
    snapshot = official_snapshot(fake_persistence, tmp_path / 'M', tiny_nets())
    snapshot['D'] = snapshot['G']
    path = tmp_path / 'official.pkl'
    path.write_bytes(pickle.dumps(snapshot))
    with pytest.raises(checkpoint.NetworkPickleError, match="'Generator'; expected 'Discriminator'"):
        checkpoint.load_network_pkl(path)


# ----------------------------------------------------------------------------------------------------
# Malicious pickles.


class CallsOnLoad:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize('func', [os.system, builtins.eval, builtins.exec], ids=['os.system', 'eval', 'exec'])
def test_malicious_pickle_is_refused(tmp_path, func):
    marker = tmp_path / 'PWNED'
    code = f'touch {marker}' if func is os.system else f'open({str(marker)!r}, "w")'
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps({'G': CallsOnLoad(func, code), 'D': None, 'G_ema': None}))
    with pytest.raises(checkpoint.UnsafePickleError) as info:
        checkpoint.load_network_pkl(path)
    message = str(info.value)
    assert 'evil.pkl' in message and func.__name__ in message and 'malicious' in message
    assert not marker.exists()


def test_malicious_object_inside_persistent_state_is_refused(tmp_path, fake_persistence):
    marker = tmp_path / 'PWNED'
    snapshot = official_snapshot(fake_persistence, tmp_path / 'M', tiny_nets())
    snapshot['G'].meta['state']['payload'] = CallsOnLoad(os.system, f'touch {marker}')
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps(snapshot))
    with pytest.raises(checkpoint.UnsafePickleError, match='system'):
        checkpoint.load_network_pkl(path)
    assert not marker.exists()


def unpickle(data):
    return official.RestrictedUnpickler(io.BytesIO(data), 'test.pkl').load()


def test_numpy_scalars_from_numpy1_and_numpy2_pickles():
    new = pickle.dumps(np.float64(0.995), protocol=3)
    assert b'numpy._core.multiarray' in new or b'numpy.core.multiarray' in new
    old = new.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    for data in (new, old):
        value = unpickle(data)
        assert isinstance(value, np.float64) and value == 0.995
    with pytest.raises(checkpoint.NetworkPickleError, match='object dtypes'):
        unpickle(b'cnumpy\ndtype\n(VO8\nI00\nI01\ntR.')


def test_tensor_past_its_storage_is_refused():
    unpickler = official.RestrictedUnpickler(io.BytesIO(b''), 'test.pkl')
    storage = torch.zeros(4).storage()
    with pytest.raises(checkpoint.NetworkPickleError, match='past its storage'):
        unpickler._rebuild_tensor(storage, 0, (100,), (1,), False, collections.OrderedDict())
    assert unpickler._rebuild_tensor(storage, 1, (3,), (1,), False, collections.OrderedDict()).shape == (3,)


@pytest.mark.parametrize('keep', [100, 5000, 0.5, 0.99], ids=['100B', '5kB', 'half', '99%'])
def test_a_snapshot_cut_short_names_the_file_and_the_fix(tmp_path, keep):
    G, D, G_ema = tiny_nets()
    whole = tmp_path / 'network-snapshot-000004.pkl'
    checkpoint.save_network_snapshot(whole, G=G, D=D, G_ema=G_ema)
    data = whole.read_bytes()
    cut = tmp_path / 'cut.pkl'
    cut.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(
        checkpoint.NetworkPickleError, match=r'cut\.pkl: .*truncated or damaged.*complete copy'
    ):
        checkpoint.load_network_pkl(cut)
    newest = tmp_path / 'network-snapshot-000008.pkl'
    cut.rename(newest)  # --resume names the run's other snapshot to use instead
    with pytest.raises(ValueError, match=f'truncated or damaged.*other snapshot there: --resume={whole}$'):
        checkpoint.check_resume(str(newest), {}, {}, {})
