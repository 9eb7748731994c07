"""Optional CUDA plugins for ``upfirdn2d`` and ``bias_act``: one JIT build per process, cached on disk.

The pure-PyTorch ops in :mod:`torch_utils.ops` are the reference and always work; the plugins are an
acceleration. Importing this module compiles nothing and does not import ``torch.utils.cpp_extension``.

Behaviour, chosen by the environment variable ``SG2KD_OPS``:
    * ``auto`` (default): CUDA tensors use a plugin when it builds/loads; on failure ONE warning with
      the reason and a fix is printed and the reference path is used for the rest of the process.
    * ``cuda``: like ``auto`` but a failed build raises.
    * ``ref``: never build; always the reference path.
CPU tensors always take the reference path. Every plugin is built at most once per process (success
or failure is remembered), on the first CUDA call or on :func:`active_impl` with a CUDA device.

Builds go to ``$SG2KD_OPS_CACHE`` (default ``~/.cache/sg2kd_ops``) in a folder keyed by a hash of the
sources, torch/CUDA versions, target arch (``TORCH_CUDA_ARCH_LIST``, else the GPU's capability) and
flags; a finished build loads without ninja or nvcc. Ranks serialise on a lock file there: the first
builds, the others wait and load it. A lock older than ``$SG2KD_OPS_LOCK_TIMEOUT`` s (default 900; the
builder refreshes it) or left by a dead process on this host is stale and removed.

Prebuild (Docker images, clusters; no GPU needed when an arch is given)::

    python -m torch_utils.custom_ops --build --arch=9.0
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

ENV_MODE = 'SG2KD_OPS'
ENV_CACHE = 'SG2KD_OPS_CACHE'
ENV_LOCK_TIMEOUT = 'SG2KD_OPS_LOCK_TIMEOUT'
MODES = ('auto', 'cuda', 'ref')
DEFAULT_LOCK_TIMEOUT = 900.0
KEY_VERSION = '1'  # bump when the build recipe below changes
OPS_DIR = Path(__file__).resolve().parent / 'ops'
DEFAULT_CFLAGS = ('-O3',)
DEFAULT_CUDA_CFLAGS = ('-O3',)


# Source and header files (in torch_utils/ops) of each plugin.
PLUGINS: dict[str, tuple[str, ...]] = {
    'upfirdn2d': ('upfirdn2d.cpp', 'upfirdn2d.cu', 'upfirdn2d.h', 'sg2kd_common.h'),
    'bias_act': ('bias_act.cpp', 'bias_act.cu', 'bias_act.h', 'sg2kd_common.h'),
}


class CustomOpsWarning(UserWarning):
    """Warning category for a plugin that could not be built or loaded."""


class BuildError(RuntimeError):
    """A plugin could not be built or loaded; ``reason`` says why and ``hint`` how to fix it."""

    def __init__(self, reason: str, hint: str, log: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.hint, self.log = reason, hint, log


@dataclass
class PluginState:
    """The remembered outcome of this process's one attempt at a plugin."""

    name: str
    status: str  # 'loaded' or 'failed'
    module: ModuleType | None = None
    path: str | None = None
    reason: str | None = None
    hint: str | None = None
    log: str | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


_states: dict[str, PluginState] = {}
_warned: set[str] = set()
_used: dict[str, str] = {}


def ops_mode() -> str:
    """Return ``SG2KD_OPS`` as one of ``auto``, ``cuda``, ``ref`` (unset or empty means ``auto``)."""
    value = os.environ.get(ENV_MODE, '').strip().lower() or 'auto'
    if value not in MODES:
        raise ValueError(f'{ENV_MODE}={os.environ[ENV_MODE]!r} is not one of {"|".join(MODES)}')
    return value


def cache_root() -> Path:
    """Folder that holds the plugin builds (``$SG2KD_OPS_CACHE``, else ``~/.cache/sg2kd_ops``)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'sg2kd_ops'


def normalize_arch(arch: str) -> str:
    """Canonical ``TORCH_CUDA_ARCH_LIST`` string: entries split on space/comma/semicolon, joined by ';'."""
    parts = [p for p in arch.replace(',', ' ').replace(';', ' ').split() if p]
    if not parts:
        raise ValueError(f'empty CUDA arch list {arch!r}')
    return ';'.join(parts)


def target_arch(arch: str | None = None, device: torch.device | None = None) -> str:
    """Architectures to build for: ``arch``, else ``TORCH_CUDA_ARCH_LIST``, else the GPU's capability."""
    if arch:
        return normalize_arch(arch)
    if os.environ.get('TORCH_CUDA_ARCH_LIST', '').strip():
        return normalize_arch(os.environ['TORCH_CUDA_ARCH_LIST'])
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(device)
        return f'{major}.{minor}'
    raise BuildError(
        'no CUDA device to read the compute capability from and no target arch given',
        'pass --arch (e.g. --arch=9.0) or set TORCH_CUDA_ARCH_LIST',
    )


def cache_key(
    files: Sequence[str | Path],
    arch: str,
    flags: Sequence[str] = (),
    torch_version: str | None = None,
    cuda_version: str | None = None,
) -> str:
    """SHA-256 hex digest of the files' names and contents, torch/CUDA versions, arch and flags."""
    h = hashlib.sha256()
    versions = [KEY_VERSION, torch_version or torch.__version__, cuda_version or str(torch.version.cuda)]
    versions += [normalize_arch(arch), sys.implementation.cache_tag or '', platform.machine(), sys.platform]
    for item in versions + list(flags):
        h.update(item.encode() + b'\0')
    for path in sorted(Path(p) for p in files):
        h.update(path.name.encode() + b'\0' + path.read_bytes() + b'\0')
    return h.hexdigest()


class FileLock:
    """Exclusive lock file shared by processes (ranks) on one file system.

    Created atomically with ``O_EXCL``; holds ``{pid, host, time}``. While held, a thread refreshes
    its mtime. A waiter removes it as stale when it is older than ``timeout`` seconds or its holder is a
    dead process on this host, and gives up (``TimeoutError``) after waiting ``timeout`` seconds.
    """

    def __init__(self, path: str | Path, timeout: float | None = None, poll: float = 0.2) -> None:
        self.path = Path(path)
        self.timeout = float(timeout or os.environ.get(ENV_LOCK_TIMEOUT) or DEFAULT_LOCK_TIMEOUT)
        self.poll = poll
        self.waited = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def is_stale(self) -> bool:
        """Whether the current lock file is too old or belongs to a dead process on this host."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > self.timeout:
            return True
        holder = self._holder()
        same_host = holder.get('host') == socket.gethostname()
        if (
            os.name == 'posix' and same_host and isinstance(holder.get('pid'), int)
        ):  # kill(pid, 0) only probes
            try:
                os.kill(holder['pid'], 0)
            except ProcessLookupError:
                return True
            except OSError:
                return False
        return False

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, 'w') as fh:
            json.dump({'pid': os.getpid(), 'host': socket.gethostname(), 'time': time.time()}, fh)
        return True

    def acquire(self) -> None:
        """Take the lock, waiting (and clearing stale locks) for at most ``timeout`` seconds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        start = time.time()
        while not self._try_create():
            if self.is_stale():
                _note(f'removing stale lock {self.path} ({self._holder() or "unreadable"})')
                self.path.unlink(missing_ok=True)
                continue
            if not self.waited:
                _note(f'waiting for {self.path}, held by {self._holder() or "another process"}')
            self.waited = True
            if time.time() - start > self.timeout:
                raise TimeoutError(f'timed out after {self.timeout:.0f} s waiting for lock {self.path}')
            time.sleep(self.poll)
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        interval = max(0.05, min(30.0, self.timeout / 4))
        while not self._stop.wait(interval):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        """Drop the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Recipe:
    name: str
    files: tuple[Path, ...]
    arch: str
    cflags: tuple[str, ...]
    cuda_cflags: tuple[str, ...]
    verbose: bool = False


def _note(msg: str) -> None:
    print(f'sg2kd custom_ops: {msg}', file=sys.stderr, flush=True)


def _toolchain_problem() -> BuildError | None:
    """Why a build cannot even start (no ninja, no nvcc, a CPU-only torch), or ``None``."""
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        return BuildError('this PyTorch build has no CUDA support', 'install a CUDA build of PyTorch')
    if not cpp_extension.is_ninja_available():
        return BuildError('ninja is not installed', 'pip install ninja')
    home = cpp_extension.CUDA_HOME
    nvcc = Path(home or '/nonexistent') / 'bin' / ('nvcc.exe' if os.name == 'nt' else 'nvcc')
    if not nvcc.exists():
        return BuildError(
            f'nvcc not found (CUDA_HOME={home})',
            f'install the CUDA toolkit {torch.version.cuda} (the version this PyTorch was built with) and '
            f'set CUDA_HOME, e.g. export CUDA_HOME=/usr/local/cuda-{torch.version.cuda}',
        )
    return None


def _hint_for_log(log: str) -> str:
    """A fix suggestion from the text of a failed build."""
    low = log.lower()
    toolkit = f'install the CUDA toolkit {torch.version.cuda} (matching PyTorch) and point CUDA_HOME to it'
    if 'unsupported gpu architecture' in low:
        return f'the toolkit at CUDA_HOME is too old for this GPU: {toolkit}'
    if 'mismatches the version that was used to compile pytorch' in low:
        return toolkit
    missing = re.search(r'fatal error: ([\w./-]+): no such file', low)
    if missing:
        return f'the CUDA toolkit at CUDA_HOME lacks {missing.group(1)}: install its development headers'
    if 'unsupported gnu version' in low or 'unsupported compiler' in low:
        return 'use a host compiler supported by this nvcc, e.g. CC=gcc-11 CXX=g++-11'
    return 'see the build log; the reference path works without the plugin'


def _shorten(log: str, lines: int = 12, chars: int = 1500) -> str:
    """The lines of a build log that matter most (errors first, else the tail)."""
    rows = [r for r in log.splitlines() if r.strip()]
    errors = [r for r in rows if 'error' in r.lower() or 'fatal' in r.lower()]
    text = '\n'.join((errors or rows)[-lines:])
    return text[-chars:]


def _module_name(name: str) -> str:
    return f'sg2kd_{name}_plugin'


def _import_library(name: str, path: Path) -> ModuleType:
    """Import a built extension module straight from its file (no compiler or ninja needed)."""
    spec = importlib.util.spec_from_file_location(_module_name(name), path)
    if spec is None or spec.loader is None:
        raise ImportError(f'cannot import {path}')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile(r: _Recipe, build_dir: Path) -> ModuleType:
    """Copy the sources into ``build_dir/src`` and build them there with ninja + nvcc."""
    from torch.utils import cpp_extension

    problem = _toolchain_problem()
    if problem is not None:
        raise problem
    src_dir = build_dir / 'src'
    src_dir.mkdir(parents=True, exist_ok=True)
    for f in r.files:
        shutil.copyfile(f, src_dir / f.name)
    sources = [str(src_dir / f.name) for f in r.files if f.suffix in ('.cpp', '.cu')]
    (build_dir / 'lock').unlink(missing_ok=True)  # torch's own lock: we hold ours, so it is stale
    saved = os.environ.get('TORCH_CUDA_ARCH_LIST')
    os.environ['TORCH_CUDA_ARCH_LIST'] = r.arch
    try:
        return cpp_extension.load(
            name=_module_name(r.name),
            sources=sources,
            extra_cflags=list(r.cflags),
            extra_cuda_cflags=list(r.cuda_cflags),
            extra_include_paths=[str(src_dir)],
            build_directory=str(build_dir),
            verbose=r.verbose,
        )
    except Exception as exc:
        log = str(exc)
        (build_dir / 'build.log').write_text(log)
        hint, where = _hint_for_log(log), str(build_dir / 'build.log')
        raise BuildError(f'compilation failed: {_shorten(log)}', hint, where) from None
    finally:
        if saved is None:
            os.environ.pop('TORCH_CUDA_ARCH_LIST', None)
        else:
            os.environ['TORCH_CUDA_ARCH_LIST'] = saved


def _load_built(name: str, build_dir: Path) -> ModuleType | None:
    """The finished build in ``build_dir``, or ``None`` when there is none (or it does not import)."""
    lib = build_dir / (_module_name(name) + ('.pyd' if os.name == 'nt' else '.so'))
    if not ((build_dir / 'ok.json').exists() and lib.exists()):
        return None
    try:
        return _import_library(name, lib)
    except ImportError as exc:
        _note(f'ignoring the unloadable build {lib}: {exc}')
        (build_dir / 'ok.json').unlink(missing_ok=True)
        return None


def _failure_during_wait(build_dir: Path, since: float) -> BuildError | None:
    """The failure that another process recorded while this one waited for the lock, if any."""
    try:
        info = json.loads((build_dir / 'failed.json').read_text())
    except (OSError, ValueError):
        return None
    if info.get('time', 0) < since:
        return None
    return BuildError(f'another process failed to build it: {info.get("reason")}', info.get('hint', ''))


def _build_or_load(r: _Recipe) -> tuple[ModuleType, Path]:
    """Load the cached build for these inputs, building it first (under the lock) if needed."""
    build_dir = cache_root() / f'{r.name}-{cache_key(r.files, r.arch, r.cflags + r.cuda_cflags)[:16]}'
    module = _load_built(r.name, build_dir)
    if module is not None:
        return module, build_dir
    lock = FileLock(build_dir / 'build.lock')
    start = time.time()
    try:
        lock.acquire()
    except TimeoutError as exc:
        raise BuildError(str(exc), 'remove the lock file if no build is running') from None
    try:
        module = _load_built(r.name, build_dir)  # another rank may have finished it while we waited
        failure = _failure_during_wait(build_dir, start) if lock.waited else None
        if module is None and failure is not None:
            raise failure
        if module is None:
            _note(f'building CUDA plugin {r.name!r} for arch {r.arch} in {build_dir} (once) ...')
            t0 = time.time()
            try:
                module = _compile(r, build_dir)
            except BuildError as exc:
                record = {'time': time.time(), 'reason': exc.reason, 'hint': exc.hint}
                (build_dir / 'failed.json').write_text(json.dumps(record))
                raise
            info = {
                'arch': r.arch,
                'torch': torch.__version__,
                'cuda': torch.version.cuda,
                'time': time.time(),
            }
            (build_dir / 'ok.json').write_text(json.dumps(info))
            (build_dir / 'failed.json').unlink(missing_ok=True)
            _note(f'built {r.name!r} in {time.time() - t0:.0f} s')
        return module, build_dir
    finally:
        lock.release()


def _warn_once(state: PluginState) -> None:
    if state.reason in _warned:
        return
    _warned.add(state.reason or '')
    lines = [
        f'CUDA plugin {state.name!r} is unavailable, so the (slower) reference PyTorch path is used.',
        f'  reason: {state.reason}',
        f'  fix: {state.hint}; or prebuild with `python -m torch_utils.custom_ops --build`; '
        f'or set {ENV_MODE}=ref to skip the plugins silently',
    ]
    if state.log:
        lines.append(f'  build log: {state.log}')
    warnings.warn('\n'.join(lines), CustomOpsWarning, stacklevel=3)


def get_plugin(
    name: str,
    sources: Sequence[str | Path],
    headers: Sequence[str | Path] = (),
    extra_cuda_cflags: Sequence[str] = DEFAULT_CUDA_CFLAGS,
    extra_cflags: Sequence[str] = DEFAULT_CFLAGS,
    arch: str | None = None,
    device: torch.device | None = None,
    required: bool = False,
    verbose: bool = False,
) -> ModuleType | None:
    """Build (once per process) and load a CUDA extension, memoising success and failure by ``name``.

    Args:
        name: plugin name; the Python module is ``sg2kd_<name>_plugin``.
        sources: ``.cpp``/``.cu`` files; headers: files they include (part of the cache key).
        extra_cuda_cflags, extra_cflags: compiler flags (part of the cache key).
        arch: ``TORCH_CUDA_ARCH_LIST``-style target; ``None`` takes the env var or ``device``'s capability.
        required: raise ``RuntimeError`` on failure instead of warning (once) and returning ``None``.
        verbose: show the compiler commands.

    Returns:
        the extension module, or ``None`` when it cannot be built (the caller uses the reference path).
    """
    state = _states.get(name)
    if state is None:
        files = tuple(Path(p).resolve() for p in list(sources) + list(headers))
        t0 = time.time()
        try:
            arch = target_arch(arch, device)
            recipe = _Recipe(name, files, arch, tuple(extra_cflags), tuple(extra_cuda_cflags), verbose)
            module, build_dir = _build_or_load(recipe)
            path = str(getattr(module, '__file__', build_dir))
            state = PluginState(name, 'loaded', module=module, path=path, extra={'arch': arch})
        except BuildError as exc:
            state = PluginState(name, 'failed', reason=exc.reason, hint=exc.hint, log=exc.log)
        except Exception as exc:  # a plugin is optional: never let its loading stop the caller
            state = PluginState(name, 'failed', reason=f'{type(exc).__name__}: {exc}', hint=_hint_for_log(''))
        state.seconds = time.time() - t0
        _states[name] = state
    if state.status == 'failed':
        if required:
            raise RuntimeError(
                f'CUDA plugin {name!r} is unavailable ({ENV_MODE}=cuda or impl="cuda"): {state.reason}\n'
                f'fix: {state.hint}; or set {ENV_MODE}=auto/ref to use the reference path'
            )
        _warn_once(state)
    return state.module


def load_op_plugin(op: str, required: bool = False, device: torch.device | None = None) -> ModuleType | None:
    """The plugin of one of :data:`PLUGINS` (built once per process), or ``None``; see :func:`get_plugin`."""
    state = _states.get(op)
    if state is not None and state.module is not None:  # the per-call fast path
        return state.module
    return get_plugin(op, [OPS_DIR / f for f in PLUGINS[op]], device=device, required=required)


def plugin_for(op: str, x: torch.Tensor, impl: str = 'auto') -> ModuleType | None:
    """Decide the implementation of one call: the plugin module, or ``None`` for the reference path.

    Args:
        op: ``'upfirdn2d'`` or ``'bias_act'``.
        x: the op's input; CPU tensors always take the reference path under ``auto``/``SG2KD_OPS``.
        impl: ``'auto'`` follows ``SG2KD_OPS``; ``'ref'`` forces the reference; ``'cuda'`` requires the
            plugin (error on a CPU tensor or a failed build).
    """
    if impl not in MODES:
        raise ValueError(f'impl must be one of {"|".join(MODES)}; got {impl!r}')
    if not x.is_cuda:  # checked first: the reference path of CPU tensors pays almost nothing for this
        if impl == 'cuda':
            raise ValueError(f"impl='cuda' needs a CUDA tensor; got one on {x.device}")
        return None
    mode = ops_mode() if impl == 'auto' else impl
    if mode == 'ref':
        return None
    plugin = load_op_plugin(op, required=mode == 'cuda', device=x.device)
    _used[op] = 'cuda' if plugin is not None else 'ref'
    return plugin


def _plugin_report(op: str) -> dict:
    state = _states.get(op)
    if state is None:
        return {'status': 'not attempted'}
    report = {'status': state.status, 'seconds': round(state.seconds, 3)}
    if state.status == 'loaded':
        report.update(path=state.path, **state.extra)
    else:
        report.update(reason=state.reason, hint=state.hint, log=state.log)
    return report


def active_impl(device: None | str | torch.device = None) -> dict:
    """Describe which implementation each op uses, for log.txt / training_options.json.

    Args:
        device: the training device. A CUDA device (unless ``SG2KD_OPS=ref``) first loads or builds
            every plugin (once per process; raises under ``SG2KD_OPS=cuda`` when one fails), so the
            answer is final. ``None`` only reports what happened so far.

    Returns:
        JSON-serialisable ``{'mode', 'device', 'ops': {op: 'cuda'|'ref'|'undecided'}, 'plugins':
        {op: {'status', ...}}, 'cache_dir', 'torch', 'cuda'}``.
    """
    mode = ops_mode()
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == 'cuda' and mode != 'ref':
        for op in PLUGINS:
            load_op_plugin(op, required=mode == 'cuda', device=dev)
    ops = {}
    for op in PLUGINS:
        state = _states.get(op)
        if mode == 'ref' or (dev is not None and dev.type != 'cuda'):
            ops[op] = 'ref'
        elif state is not None:
            ops[op] = 'cuda' if state.status == 'loaded' else 'ref'
        else:
            ops[op] = _used.get(op, 'undecided')
    return {
        'mode': mode,
        'device': str(dev) if dev is not None else None,
        'ops': ops,
        'plugins': {op: _plugin_report(op) for op in PLUGINS},
        'cache_dir': str(cache_root()),
        'torch': torch.__version__,
        'cuda': torch.version.cuda,
    }


def prebuild(arch: str | None = None, verbose: bool = False) -> dict[str, str]:
    """Build every plugin into the cache (no GPU needed when ``arch`` is given); return their paths."""
    paths = {}
    for op, files in PLUGINS.items():
        get_plugin(op, [OPS_DIR / f for f in files], arch=arch, required=True, verbose=verbose)
        paths[op] = _states[op].path or ''
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m torch_utils.custom_ops --build [--arch=9.0] [--cache-dir=DIR]``."""
    parser = argparse.ArgumentParser(prog='python -m torch_utils.custom_ops', description=main.__doc__)
    parser.add_argument('--build', action='store_true', help='build every plugin into the cache')
    parser.add_argument('--arch', help='target arch list, e.g. 9.0 or "8.0;8.6;9.0" (default: this GPU)')
    parser.add_argument('--cache-dir', help=f'cache folder (default: ${ENV_CACHE} or ~/.cache/sg2kd_ops)')
    parser.add_argument('--verbose', action='store_true', help='show the compiler commands')
    args = parser.parse_args(argv)
    if args.cache_dir:
        os.environ[ENV_CACHE] = args.cache_dir
    if not args.build:
        print(json.dumps(active_impl(), indent=2))
        return 0
    t0 = time.time()
    try:
        paths = prebuild(args.arch, args.verbose)
    except RuntimeError as exc:
        print(f'build failed: {exc}', file=sys.stderr)
        return 1
    for op, path in paths.items():
        print(f'{op}: {path}')
    arch = _states[next(iter(PLUGINS))].extra.get('arch')
    print(f'built {len(paths)} plugins for arch {arch} in {time.time() - t0:.0f} s; cache: {cache_root()}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
