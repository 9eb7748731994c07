"""CUDA plugin machinery on the CPU: settings, build-once memoisation, locks, cache keys, dispatch, and the
autograd plumbing of the CUDA paths driven by stand-in kernels. Nothing here compiles (builds are faked); the
opt-in tests of the kernels' CPU emulation are in test_ops_emulation.py."""

import json
import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch
from conftest import REPO
from plugin_fakes import ACT_NAMES, FakeBiasActPlugin, FakeUpFirDn2dPlugin

from torch_utils import custom_ops
from torch_utils.ops import bias_act_cuda, upfirdn2d_cuda
from torch_utils.ops.bias_act import activation_funcs, bias_act
from torch_utils.ops.upfirdn2d import setup_filter, upfirdn2d


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch, tmp_path):
    """Each test starts with no remembered builds or self-checks, an empty cache folder and no
    SG2KD_OPS setting."""
    monkeypatch.setattr(custom_ops, '_states', {})
    monkeypatch.setattr(custom_ops, '_warned', set())
    monkeypatch.setattr(custom_ops, '_checks', {})
    monkeypatch.setenv(custom_ops.ENV_CACHE, str(tmp_path / 'cache'))
    for name in (custom_ops.ENV_MODE, custom_ops.ENV_LOCK_TIMEOUT, 'TORCH_CUDA_ARCH_LIST'):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    'value, mode', [(None, 'auto'), ('', 'auto'), ('auto', 'auto'), ('CUDA', 'cuda'), (' ref ', 'ref')]
)
def test_ops_mode_parsing(monkeypatch, value, mode):
    if value is not None:
        monkeypatch.setenv('SG2KD_OPS', value)
    assert custom_ops.ops_mode() == mode


def test_ops_mode_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv('SG2KD_OPS', 'fast')
    with pytest.raises(ValueError, match='auto|cuda|ref'):
        custom_ops.ops_mode()


def test_plugin_for_decisions_on_cpu(monkeypatch):
    x = torch.zeros(1)
    assert custom_ops.plugin_for('upfirdn2d', x, 'auto') is None
    assert custom_ops.plugin_for('upfirdn2d', x, 'ref') is None
    with pytest.raises(ValueError, match='CUDA tensor'):
        custom_ops.plugin_for('upfirdn2d', x, 'cuda')
    with pytest.raises(ValueError, match='impl'):
        custom_ops.plugin_for('upfirdn2d', x, 'fast')
    monkeypatch.setenv('SG2KD_OPS', 'cuda')  # the env var never forces CPU tensors off the reference
    assert custom_ops.plugin_for('bias_act', x) is None
    assert custom_ops._states == {}


def test_arch_selection(monkeypatch):
    assert custom_ops.normalize_arch(' 8.0 8.6,9.0+PTX;') == '8.0;8.6;9.0+PTX'
    with pytest.raises(ValueError, match='empty'):
        custom_ops.normalize_arch(' ;, ')
    assert custom_ops.target_arch('9.0') == '9.0'
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '8.0 9.0')
    assert custom_ops.target_arch() == '8.0;9.0'
    assert custom_ops.target_arch('8.6') == '8.6'  # an explicit arch wins over the env var
    monkeypatch.delenv('TORCH_CUDA_ARCH_LIST')
    if not torch.cuda.is_available():
        with pytest.raises(custom_ops.BuildError, match='arch'):
            custom_ops.target_arch()


def test_cache_key_tracks_sources_versions_arch_and_flags(tmp_path):
    files = [tmp_path / 'k.cu', tmp_path / 'k.h']
    for f in files:
        f.write_text('// v1')

    def key(arch='9.0', flags=('-O3',), tv='2.5.0', cv='12.4', order=1):
        return custom_ops.cache_key(files[::order], arch, flags, torch_version=tv, cuda_version=cv)

    base = key()
    assert base == key(order=-1)
    variants = [key(arch='8.0'), key(flags=('-O2',)), key(tv='2.6.0'), key(cv='12.6')]
    files[1].write_text('// header changed')
    variants.append(key())
    assert len({base, *variants}) == len(variants) + 1


def test_real_plugin_sources_exist_and_key_is_stable():
    for op, names in custom_ops.PLUGINS.items():
        files = [custom_ops.OPS_DIR / n for n in names]
        assert all(f.exists() for f in files), op
        assert any(f.suffix == '.cu' for f in files) and any(f.suffix == '.cpp' for f in files)
        assert custom_ops.cache_key(files, '9.0') == custom_ops.cache_key(files, '9.0')


# ------------------------------------------------------------------------------------ build once


def _failing_build(calls, reason='ninja is not installed', hint='pip install ninja'):
    def build(op, arch, verbose=False):
        calls.append((op, arch))
        raise custom_ops.BuildError(reason, hint)

    return build


def test_failed_build_warns_once_and_is_not_retried(monkeypatch):
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '9.0')  # the arch is resolved before the (fake) build
    calls = []
    monkeypatch.setattr(custom_ops, '_build_or_load', _failing_build(calls))
    with pytest.warns(custom_ops.CustomOpsWarning) as record:
        assert custom_ops.load_op_plugin('upfirdn2d', device=None) is None
        assert custom_ops.load_op_plugin('upfirdn2d') is None
        assert custom_ops.load_op_plugin('bias_act') is None  # same reason: no second warning
    assert len(record) == 1
    text = str(record[0].message)
    assert 'ninja is not installed' in text and 'pip install ninja' in text and 'SG2KD_OPS=ref' in text
    assert calls == [('upfirdn2d', '9.0'), ('bias_act', '9.0')]  # one attempt per plugin, none repeated
    # A later strict request re-raises the remembered failure without rebuilding.
    with pytest.raises(RuntimeError, match='ninja is not installed(.|\n)*fix: pip install ninja'):
        custom_ops.load_op_plugin('upfirdn2d', required=True)
    assert len(calls) == 2
    report = custom_ops.active_impl()
    assert report['plugins']['upfirdn2d']['status'] == 'failed'
    assert report['plugins']['upfirdn2d']['hint'] == 'pip install ninja'
    assert report['ops']['upfirdn2d'] == 'ref'


def test_active_impl_on_cuda_attempts_each_plugin_once_and_raises_in_cuda_mode(monkeypatch):
    calls = []

    def explode(op, arch, verbose=False):  # not a BuildError: still a remembered failure, not a crash
        calls.append(op)
        raise OSError('disk full')

    monkeypatch.setattr(custom_ops, '_build_or_load', explode)
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '9.0')
    monkeypatch.setenv('SG2KD_OPS', 'cuda')
    with pytest.raises(RuntimeError, match='OSError: disk full'):
        custom_ops.active_impl('cuda')
    monkeypatch.setenv('SG2KD_OPS', 'auto')
    with pytest.warns(custom_ops.CustomOpsWarning, match='disk full'):
        first = custom_ops.active_impl('cuda')
    assert first['ops'] == {'upfirdn2d': 'ref', 'bias_act': 'ref'} and first['device'] == 'cuda'
    assert custom_ops.active_impl('cuda') == first and calls == ['upfirdn2d', 'bias_act']


@pytest.fixture
def fake_load(monkeypatch):
    """``cpp_extension.load`` as a recorder (raising ``.fail`` if set); the toolchain check passes."""
    from torch.utils import cpp_extension

    rec = types.SimpleNamespace(calls=[], fail=None)

    def load(name, sources, build_directory, extra_include_paths, **flags):
        folder, headers = Path(build_directory), Path(extra_include_paths[0]).glob('*.h')
        files = sorted(Path(f).name for f in sources) + sorted(h.name for h in headers)
        arch, baton = os.environ.get('TORCH_CUDA_ARCH_LIST'), (folder / 'lock').exists()
        rec.calls.append(dict(folder=folder, files=files, arch=arch, baton=baton))
        if rec.fail:
            raise RuntimeError(rec.fail)
        return types.SimpleNamespace(__file__=str(folder / f'{name}.so'))

    monkeypatch.setattr(cpp_extension, 'load', load)
    monkeypatch.setattr(custom_ops, '_toolchain_problem', lambda: None)
    return rec


def test_compile_drives_cpp_extension_load_and_clears_a_leftover_filebaton(monkeypatch, fake_load):
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '9.0')
    build_dir = custom_ops.build_dir_for('upfirdn2d', '8.6')
    build_dir.mkdir(parents=True)
    (build_dir / 'lock').write_text('')  # an older torch's FileBaton, left by a killed build
    module, folder = custom_ops._build_or_load('upfirdn2d', '8.6')
    (call,) = fake_load.calls
    assert folder == call['folder'] == build_dir and build_dir.parent == custom_ops.cache_root()
    assert module.__file__ == str(folder / 'sg2kd_upfirdn2d_plugin.so')
    assert call['files'] == ['upfirdn2d.cpp', 'upfirdn2d.cu', 'sg2kd_common.h', 'upfirdn2d.h']
    assert call['arch'] == '8.6' and not call['baton']  # load() would have waited forever on the baton
    assert os.environ['TORCH_CUDA_ARCH_LIST'] == '9.0'  # restored
    assert json.loads((build_dir / 'ok.json').read_text())['arch'] == '8.6'


def test_compile_failure_is_logged_recorded_and_retried_by_the_next_process(fake_load):
    fake_load.fail = "ninja: build stopped\nnvcc fatal   : Unsupported gpu architecture 'compute_90'"
    with pytest.raises(custom_ops.BuildError) as info:
        custom_ops._build_or_load('bias_act', '9.0')
    build_dir, err = custom_ops.build_dir_for('bias_act', '9.0'), info.value
    assert 'Unsupported gpu architecture' in err.reason and 'too old' in err.hint
    assert err.log == str(build_dir / 'build.log') and 'build stopped' in Path(err.log).read_text()
    assert 'TORCH_CUDA_ARCH_LIST' not in os.environ and not (build_dir / 'ok.json').exists()
    assert 'too old' in json.loads((build_dir / 'failed.json').read_text())['hint']
    with custom_ops.build_lock(build_dir, timeout=0):  # released: free at once
        pass
    # Recorded before this call started: a new process (here: a new call) retries instead of trusting it.
    with pytest.raises(custom_ops.BuildError, match='Unsupported'):
        custom_ops._build_or_load('bias_act', '9.0')
    assert len(fake_load.calls) == 2


def test_finished_build_is_imported_directly_and_a_broken_one_is_dropped():
    build_dir = custom_ops.build_dir_for('bias_act', '9.0')
    build_dir.mkdir(parents=True)
    assert custom_ops._load_built('bias_act', build_dir) is None  # nothing built yet
    (build_dir / 'sg2kd_bias_act_plugin.so').write_bytes(b'not a shared library')
    assert custom_ops._load_built('bias_act', build_dir) is None  # no ok.json: an unfinished build
    (build_dir / 'ok.json').write_text('{}')
    assert custom_ops._load_built('bias_act', build_dir) is None  # does not import: forgotten, rebuilt next
    assert not (build_dir / 'ok.json').exists()


def test_toolchain_problem_names_the_fix(monkeypatch):
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, 'is_ninja_available', lambda: False)
    problem = custom_ops._toolchain_problem()
    assert problem is not None and 'ninja' in problem.hint
    monkeypatch.setattr(cpp_extension, 'is_ninja_available', lambda: True)
    monkeypatch.setattr(cpp_extension, 'CUDA_HOME', None)
    problem = custom_ops._toolchain_problem()
    if torch.version.cuda is not None:
        assert problem is not None and 'CUDA_HOME' in problem.hint


def test_hints_for_common_build_logs():
    assert 'too old' in custom_ops._hint_for_log("nvcc fatal   : Unsupported gpu architecture 'compute_90'")
    assert 'cusparse.h' in custom_ops._hint_for_log('fatal error: cusparse.h: No such file or directory')
    assert 'compiler' in custom_ops._hint_for_log('error: #error -- unsupported GNU version!')


# ------------------------------------------------------------------------------------ ranks and locks


@pytest.mark.parametrize('outcome', ['built', 'failed'])
def test_waiter_takes_the_outcome_of_the_rank_that_held_the_lock(monkeypatch, outcome):
    """A rank waits for the builder, then loads its build (or reports its failure) without compiling."""
    compiled, fake, holding = [], types.SimpleNamespace(__file__='plugin.so'), threading.Event()
    monkeypatch.setattr(custom_ops, '_compile', lambda *args: compiled.append(args))
    monkeypatch.setattr(custom_ops, '_load_built', lambda op, d: fake if (d / 'ok.json').exists() else None)
    build_dir = custom_ops.build_dir_for('bias_act', '9.0')

    def builder():  # the rank that builds: it holds the lock while the waiter arrives
        with custom_ops.build_lock(build_dir):
            holding.set()
            time.sleep(0.5)
            failure = {'time': time.time(), 'reason': 'compilation failed: boom', 'hint': 'h'}
            name, text = ('ok.json', '{}') if outcome == 'built' else ('failed.json', json.dumps(failure))
            (build_dir / name).write_text(text)

    thread = threading.Thread(target=builder)
    thread.start()
    holding.wait()
    if outcome == 'built':
        assert custom_ops._build_or_load('bias_act', '9.0') == (fake, build_dir)
    else:
        with pytest.raises(custom_ops.BuildError, match='another process failed .*boom'):
            custom_ops._build_or_load('bias_act', '9.0')
    thread.join()
    assert compiled == []


HOLD_LOCK = (  # the FileLock stays referenced: a collected one releases itself
    'import filelock, sys, time; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); '
    'print("held", flush=True); time.sleep(60)'
)


def test_a_live_holder_times_out_waiters_and_a_killed_one_blocks_nobody(monkeypatch, tmp_path):
    build_dir = tmp_path / 'b'
    build_dir.mkdir()
    cmd = [sys.executable, '-c', HOLD_LOCK, str(build_dir / 'build.lock')]
    holder = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        monkeypatch.setenv(custom_ops.ENV_LOCK_TIMEOUT, '0.3')  # a live holder: give up, do not steal it
        start = time.time()
        with pytest.raises(custom_ops.BuildError, match='timed out') as info:
            custom_ops.build_lock(build_dir).__enter__()
        assert 0.25 < time.time() - start < 5 and custom_ops.ENV_LOCK_TIMEOUT in info.value.hint
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, as for an OOM-killed or cancelled build
        holder.wait()
        holder.stdout.close()
    assert (build_dir / 'build.lock').exists()  # the killed holder's file is still there ...
    start = time.time()
    with custom_ops.build_lock(build_dir, timeout=30):  # ... but it does not block the next run
        assert time.time() - start < 2


# ------------------------------------------------------------------------------------ dispatch


def _forbid_builds(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError('a plugin was requested for a CPU tensor')

    monkeypatch.setattr(custom_ops, 'load_op_plugin', fail)


@pytest.mark.parametrize('mode', ['auto', 'cuda', 'ref'])
def test_cpu_tensors_take_the_reference_path(monkeypatch, mode):
    _forbid_builds(monkeypatch)
    monkeypatch.setenv('SG2KD_OPS', mode)
    x = torch.randn(2, 3, 8, 8)
    f = setup_filter([1, 3, 3, 1])
    assert torch.equal(upfirdn2d(x, f, up=2, padding=2), upfirdn2d(x, f, up=2, padding=2, impl='ref'))
    b = torch.randn(3)
    y = bias_act(x, b, act='lrelu', clamp=1.0)
    assert torch.equal(y, bias_act(x, b, act='lrelu', clamp=1.0, impl='ref'))
    report = custom_ops.active_impl('cpu')
    assert report['ops'] == {'upfirdn2d': 'ref', 'bias_act': 'ref'} and report['mode'] == mode
    assert custom_ops._states == {}
    json.dumps(report)


def test_explicit_cuda_impl_on_cpu_is_an_error():
    with pytest.raises(ValueError, match='CUDA tensor'):
        upfirdn2d(torch.zeros(1, 1, 4, 4), None, impl='cuda')
    with pytest.raises(ValueError, match='CUDA tensor'):
        bias_act(torch.zeros(2, 3), impl='cuda')


def test_active_impl_reports_without_building(monkeypatch):
    _forbid_builds(monkeypatch)
    report = custom_ops.active_impl()
    assert report['ops'] == {'upfirdn2d': 'undecided', 'bias_act': 'undecided'}
    assert report['plugins']['bias_act'] == {'status': 'not attempted'}
    assert report['cache_dir'] == str(custom_ops.cache_root()) and report['device'] is None
    monkeypatch.setenv('SG2KD_OPS', 'ref')
    assert custom_ops.active_impl('cuda')['ops'] == {'upfirdn2d': 'ref', 'bias_act': 'ref'}


def test_active_impl_on_cuda_attempts_every_plugin_once(monkeypatch):
    calls = []
    monkeypatch.setattr(custom_ops, '_build_or_load', _failing_build(calls, 'no nvcc', 'install it'))
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '9.0')
    with pytest.warns(custom_ops.CustomOpsWarning):
        first = custom_ops.active_impl('cuda')
    assert first['ops'] == {'upfirdn2d': 'ref', 'bias_act': 'ref'} and len(calls) == 2
    assert custom_ops.active_impl('cuda') == first and len(calls) == 2
    monkeypatch.setenv('SG2KD_OPS', 'cuda')
    with pytest.raises(RuntimeError, match='no nvcc'):
        custom_ops.active_impl('cuda')


IMPORT_CHECK = """
import os, sys, torch
import torch_utils.ops, torch_utils.custom_ops
from torch_utils.ops import bias_act, upfirdn2d, upfirdn2d_cuda, bias_act_cuda, conv2d_resample
x = torch.randn(1, 2, 8, 8)
upfirdn2d.upsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1]))
bias_act.bias_act(x, torch.zeros(2), act='lrelu', clamp=1.0)
print(torch_utils.custom_ops.active_impl('cpu')['ops'])
assert 'torch.utils.cpp_extension' not in sys.modules, 'cpp_extension was imported'
assert not os.path.exists(os.environ['SG2KD_OPS_CACHE']), 'the cache folder was created'
"""


@pytest.mark.parametrize('mode', ['auto', 'cuda'])
def test_importing_and_cpu_use_compile_nothing(tmp_path, mode):
    env = {k: v for k, v in os.environ.items() if k not in ('CUDA_HOME', 'CUDA_PATH', 'TORCH_CUDA_ARCH_LIST')}
    env.update(SG2KD_OPS=mode, SG2KD_OPS_CACHE=str(tmp_path / 'never'), PYTHONPATH=str(REPO))
    res = subprocess.run(
        [sys.executable, '-c', IMPORT_CHECK], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "'upfirdn2d': 'ref'" in res.stdout


def test_cli_reports_and_explains_a_missing_arch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_CUDA_ARCH_LIST'}
    env.update(SG2KD_OPS_CACHE=str(tmp_path / 'c'), PYTHONPATH=str(REPO))
    cmd = [sys.executable, '-m', 'torch_utils.custom_ops']
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)['mode'] == 'auto'
    if not torch.cuda.is_available():
        res = subprocess.run(cmd + ['--build'], cwd=REPO, env=env, capture_output=True, text=True)
        assert res.returncode == 1 and '--arch' in res.stderr, res.stdout + res.stderr


def test_prebuild_cli_builds_every_plugin_once_for_the_given_arch(monkeypatch, capsys, tmp_path):
    seen = []

    def fake_build(op, arch, verbose=False):
        seen.append((op, arch, os.environ[custom_ops.ENV_CACHE]))
        return types.SimpleNamespace(__file__=f'/x/{op}.so'), Path('/x')

    monkeypatch.setattr(custom_ops, '_build_or_load', fake_build)
    assert custom_ops.main(['--build', '--arch=9.0', f'--cache-dir={tmp_path}']) == 0
    assert seen == [('upfirdn2d', '9.0', str(tmp_path)), ('bias_act', '9.0', str(tmp_path))]
    out = capsys.readouterr().out
    assert 'bias_act: /x/bias_act.so' in out and 'for arch 9.0' in out
    assert custom_ops.load_op_plugin('bias_act', required=True).__file__ == '/x/bias_act.so'
    assert len(seen) == 2  # remembered: not loaded again
    report = custom_ops.active_impl()
    assert report['ops'] == {'upfirdn2d': 'cuda', 'bias_act': 'cuda'}
    plugin = report['plugins']['bias_act']
    assert plugin['status'] == 'loaded' and plugin['arch'] == '9.0'


# ------------------------------------------------------------------------------------ autograd plumbing
# The CUDA paths' autograd Functions driven by stand-in kernels written with the reference ops: this
# checks the backward geometry, flips, gains, saved tensors and higher-order wiring on the CPU in float64.


UFD_CASES = [
    dict(up=2, down=1, padding=[2, 1, 2, 1], taps='2d'),
    dict(up=1, down=2, padding=1, taps='2d'),
    dict(up=[3, 1], down=[1, 2], padding=[0, -1, 2, 3], taps='sep'),
    dict(up=[1, 2], down=[3, 1], padding=[-1, 2, 1, 0], taps='sep'),
    dict(up=[2, 3], down=[2, 3], padding=[4, 2, 1, 1], taps='2d'),
    dict(up=1, down=1, padding=0, taps=None),
]


@pytest.mark.parametrize('case', UFD_CASES)
@pytest.mark.parametrize('flip', [False, True])
def test_upfirdn2d_function_matches_reference_to_second_order(case, flip):
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    taps = case['taps']
    f = None if taps is None else torch.randn(5 if taps == 'sep' else [3, 4], dtype=torch.float64)
    kw = dict(up=case['up'], down=case['down'], padding=case['padding'], flip_filter=flip, gain=2.0)

    def fn(x):
        return upfirdn2d_cuda.upfirdn2d_cuda(x, f, FakeUpFirDn2dPlugin(), **kw)

    ref = upfirdn2d(x, f, **kw, impl='ref')
    assert torch.allclose(fn(x), ref)
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def test_backward_geometry_restores_the_input_size():
    for n, k, u, d, p0, p1 in [
        (7, 4, 2, 1, 2, 1),
        (8, 4, 1, 2, 1, 1),
        (5, 3, 3, 2, -1, 4),
        (9, 1, 1, 3, 0, 0),
    ]:
        geom = (u, 1, d, 1, p0, p1, 0, 0)
        bu, _, bd, _, b0, b1, _, _ = upfirdn2d_cuda.backward_geometry((1, n), (1, k), geom)
        m = (n * u + p0 + p1 - k) // d + 1
        assert (bu, bd) == (d, u) and (m * bu + b0 + b1 - k) // bd + 1 == n


@pytest.mark.parametrize('act', ACT_NAMES)
@pytest.mark.parametrize('clamp', [None, 0.8])
def test_bias_act_function_matches_reference_to_second_order(act, clamp):
    spec = activation_funcs[act]
    x = (torch.randn(2, 3, 4, dtype=torch.float64) * 2).requires_grad_(True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def fn(x, b):
        return bias_act_cuda.bias_act_cuda(
            x, b, FakeBiasActPlugin(), 1, act, spec.def_alpha, spec.def_gain, clamp
        )

    assert torch.allclose(fn(x, b), bias_act(x, b, 1, act, clamp=clamp, impl='ref'))
    assert torch.autograd.gradcheck(fn, (x, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, b), fast_mode=True)


def _third_order(fn, x, b):
    g = torch.autograd.grad(fn(x, b).sum(), x, create_graph=True)[0]
    if not g.requires_grad:
        return torch.zeros_like(x)
    gg = torch.autograd.grad((g * g).sum(), x, create_graph=True, allow_unused=True)[0]
    if gg is None or not gg.requires_grad:
        return torch.zeros_like(x)
    return torch.autograd.grad((gg**2).sum(), x)[0]


@pytest.mark.parametrize('act', ['tanh', 'swish', 'lrelu', 'softplus'])
def test_bias_act_third_order_falls_back_to_the_reference(act):
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64)
    spec = activation_funcs[act]

    def fn(x, b):
        return bias_act_cuda.bias_act_cuda(x, b, FakeBiasActPlugin(), 1, act, spec.def_alpha, spec.def_gain)

    def ref(x, b):
        return bias_act(x, b, 1, act, impl='ref')

    assert torch.allclose(_third_order(fn, x, b), _third_order(ref, x, b))


def test_bias_act_function_handles_channels_last_and_strided_grads():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    y = bias_act_cuda.bias_act_cuda(x, b, FakeBiasActPlugin(), 1, 'lrelu', 0.2, 2**0.5, 0.5)
    assert y.is_contiguous(memory_format=torch.channels_last)
    gx, gb = torch.autograd.grad(y.sum(), [x, b])  # .sum() gives an expanded (stride 0) gradient
    rx, rb = torch.autograd.grad(bias_act(x, b, act='lrelu', clamp=0.5, impl='ref').sum(), [x, b])
    assert torch.allclose(gx, rx) and torch.allclose(gb, rb)
