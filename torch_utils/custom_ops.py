"""Optional CUDA plugins for ``upfirdn2d`` and ``bias_act``: one JIT build per process, cached on disk.

The pure-PyTorch ops in :mod:`torch_utils.ops` are the reference and always work; the plugins are an
acceleration. Importing this module compiles nothing and does not import ``torch.utils.cpp_extension``.

``SG2KD_OPS`` chooses: ``auto`` (default) uses a plugin for CUDA tensors when it builds or loads, else
warns ONCE with the reason and a fix and takes the reference path; ``cuda`` raises instead; ``ref`` never
builds. CPU tensors always take the reference path. Each plugin is attempted at most once per process
(success or failure is remembered), on its first CUDA call or in :func:`active_impl` with a CUDA device.

Builds live in ``$SG2KD_OPS_CACHE`` (default ``~/.cache/sg2kd_ops``), one folder per hash of the sources,
torch/CUDA versions, target arch (``TORCH_CUDA_ARCH_LIST``, else the GPU's capability) and flags. A
finished build (``ok.json``) is imported directly, without ninja or nvcc. Otherwise one process builds it
with ``torch.utils.cpp_extension.load`` while holding ``build.lock`` there; other ranks wait, then load
that build or reuse its recorded failure. Stale locks: ``build.lock`` is an OS lock that the kernel drops
when its holder exits or is killed, so a killed build never blocks the next run; a waiter gives up on a
live holder after ``$SG2KD_OPS_LOCK_TIMEOUT`` s (default 900). See :func:`build_lock`.

Self-check: before a plugin's first use on a device (its first CUDA call there, or :func:`active_impl` with
that device), :func:`torch_utils.ops.self_check.run` compares it with the reference on small inputs, once
per process, op and device. On a mismatch it warns once, naming the op and the max error, and that device
takes the reference path for the rest of the process (``SG2KD_OPS=cuda`` raises instead);
:func:`active_impl` reports the outcome as ``self_check``. ``SG2KD_OPS_CHECK=0`` skips the check.

Prebuild (Docker images, clusters; no GPU needed when an arch is given)::

    python -m torch_utils.custom_ops --build --arch=9.0
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import torch

ENV_MODE, ENV_CACHE, ENV_LOCK_TIMEOUT = 'SG2KD_OPS', 'SG2KD_OPS_CACHE', 'SG2KD_OPS_LOCK_TIMEOUT'
ENV_CHECK = 'SG2KD_OPS_CHECK'
MODES = ('auto', 'cuda', 'ref')
DEFAULT_LOCK_TIMEOUT = 900.0
KEY_VERSION = '1'  # bump when the build recipe below changes
OPS_DIR = Path(__file__).resolve().parent / 'ops'
DEFAULT_CFLAGS = DEFAULT_CUDA_CFLAGS = ('-O3',)
PLUGINS: dict[str, tuple[str, ...]] = {  # the files (in torch_utils/ops) of each plugin
    'upfirdn2d': ('upfirdn2d.cpp', 'upfirdn2d.cu', 'upfirdn2d.h', 'sg2kd_common.h'),
    'bias_act': ('bias_act.cpp', 'bias_act.cu', 'bias_act.h', 'sg2kd_common.h'),
}

_states: dict[str, tuple[ModuleType | None, dict]] = {}  # op -> (module or None, report of the attempt)
_warned: set[str] = set()  # failure reasons already warned about
_checks: dict[tuple[str, torch.device], str] = {}  # (op, device) -> outcome of the self-check there


class CustomOpsWarning(UserWarning):
    """Warning category for a plugin that could not be built or loaded."""


class BuildError(RuntimeError):
    """A plugin could not be built or loaded; ``reason`` says why and ``hint`` how to fix it."""

    def __init__(self, reason: str, hint: str, log: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.hint, self.log = reason, hint, log


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
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'sg2kd_ops'


def normalize_arch(arch: str) -> str:
    """Canonical ``TORCH_CUDA_ARCH_LIST`` string: entries split on space/comma/semicolon, joined by ';'."""
    parts = arch.replace(',', ' ').replace(';', ' ').split()
    if not parts:
        raise ValueError(f'empty CUDA arch list {arch!r}')
    return ';'.join(parts)


def target_arch(arch: str | None = None, device: torch.device | None = None) -> str:
    """Architectures to build for: ``arch``, else ``TORCH_CUDA_ARCH_LIST``, else the GPU's capability."""
    arch = arch or os.environ.get('TORCH_CUDA_ARCH_LIST', '').strip()
    if arch:
        return normalize_arch(arch)
    if torch.cuda.is_available():
        return '{}.{}'.format(*torch.cuda.get_device_capability(device))
    reason = 'no CUDA device to read the compute capability from and no target arch given'
    raise BuildError(reason, 'pass --arch (e.g. --arch=9.0) or set TORCH_CUDA_ARCH_LIST')


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


def build_dir_for(op: str, arch: str) -> Path:
    """The cache folder of plugin ``op`` built for ``arch``."""
    key = cache_key([OPS_DIR / f for f in PLUGINS[op]], arch, DEFAULT_CFLAGS + DEFAULT_CUDA_CFLAGS)
    return cache_root() / f'{op}-{key[:16]}'


@contextlib.contextmanager
def build_lock(build_dir: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold ``build_dir/build.lock``, waiting at most ``timeout`` s (default ``$SG2KD_OPS_LOCK_TIMEOUT``,
    else 900) for a live holder before raising :class:`BuildError`.

    It is a ``filelock`` lock (flock on POSIX), as torch itself uses for its JIT builds: the kernel drops it
    when its holder exits or is killed, so there is no stale lock to detect; the file itself stays behind
    and is harmless. Older torch versions guard ``cpp_extension.load`` with a ``FileBaton`` file (``lock``)
    that a killed build leaves behind and ``load`` waits on forever; :func:`_compile` deletes that one.
    """
    import filelock  # a dependency of torch

    timeout = float(os.environ.get(ENV_LOCK_TIMEOUT) or DEFAULT_LOCK_TIMEOUT) if timeout is None else timeout
    build_dir.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(build_dir / 'build.lock'))
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            _note(f'waiting (at most {timeout:.0f} s) for another process building in {build_dir}')
            lock.acquire(timeout=timeout)
    except filelock.Timeout:
        reason = f'timed out after {timeout:.0f} s waiting for {lock.lock_file}, held by a live process'
        raise BuildError(reason, f'let that build finish, or raise {ENV_LOCK_TIMEOUT}') from None
    try:
        yield
    finally:
        lock.release()


def _note(msg: str) -> None:
    print(f'sg2kd custom_ops: {msg}', file=sys.stderr, flush=True)


def _toolchain_problem() -> BuildError | None:
    """Why a build cannot even start (a CPU-only torch, no ninja, no nvcc), or ``None``."""
    from torch.utils import cpp_extension

    cuda, home = torch.version.cuda, cpp_extension.CUDA_HOME
    if cuda is None:
        return BuildError('this PyTorch build has no CUDA support', 'install a CUDA build of PyTorch')
    if not cpp_extension.is_ninja_available():
        return BuildError('ninja is not installed', 'pip install ninja')
    if not (Path(home or '/nonexistent') / 'bin' / ('nvcc.exe' if os.name == 'nt' else 'nvcc')).exists():
        hint = f'install the CUDA toolkit {cuda} (the version this PyTorch was built with) and set CUDA_HOME'
        return BuildError(f'nvcc not found (CUDA_HOME={home})', f'{hint}, e.g. /usr/local/cuda-{cuda}')
    return None


def _hint_for_log(log: str) -> str:
    """A fix suggestion from the text of a failed build."""
    low, missing = log.lower(), re.search(r'fatal error: ([\w./-]+): no such file', log.lower())
    toolkit = f'install the CUDA toolkit {torch.version.cuda} (matching PyTorch) and point CUDA_HOME to it'
    if 'unsupported gpu architecture' in low:
        return f'the toolkit at CUDA_HOME is too old for this GPU: {toolkit}'
    if 'mismatches the version that was used to compile pytorch' in low:
        return toolkit
    if missing:
        return f'the CUDA toolkit at CUDA_HOME lacks {missing.group(1)}: install its development headers'
    if 'unsupported gnu version' in low or 'unsupported compiler' in low:
        return 'use a host compiler supported by this nvcc, e.g. CC=gcc-11 CXX=g++-11'
    return 'see the build log; the reference path works without the plugin'


def _shorten(log: str, lines: int = 12, chars: int = 1500) -> str:
    """The lines of a build log that matter most (errors first, else the tail)."""
    rows = [r for r in log.splitlines() if r.strip()]
    errors = [r for r in rows if 'error' in r.lower() or 'fatal' in r.lower()]
    return '\n'.join((errors or rows)[-lines:])[-chars:]


def _load_built(op: str, build_dir: Path) -> ModuleType | None:
    """Import the finished build in ``build_dir`` from its file; ``None`` when there is none that imports."""
    lib = build_dir / f'sg2kd_{op}_plugin{".pyd" if os.name == "nt" else ".so"}'
    if not ((build_dir / 'ok.json').exists() and lib.exists()):
        return None
    spec = importlib.util.spec_from_file_location(lib.stem, lib)
    assert spec is not None and spec.loader is not None  # an extension-module suffix always has a loader
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except ImportError as exc:
        _note(f'ignoring the unloadable build {lib}: {exc}')
        (build_dir / 'ok.json').unlink(missing_ok=True)
        return None


def _compile(op: str, arch: str, build_dir: Path, verbose: bool = False) -> ModuleType:
    """Copy the plugin's files into ``build_dir/src`` and build them there with ``cpp_extension.load``."""
    from torch.utils import cpp_extension

    problem = _toolchain_problem()
    if problem is not None:
        raise problem
    src = build_dir / 'src'
    src.mkdir(parents=True, exist_ok=True)
    for f in PLUGINS[op]:
        shutil.copyfile(OPS_DIR / f, src / f)
    (build_dir / 'lock').unlink(missing_ok=True)  # an old torch's FileBaton: stale, since we hold build.lock
    saved = os.environ.get('TORCH_CUDA_ARCH_LIST')
    os.environ['TORCH_CUDA_ARCH_LIST'] = arch
    try:
        return cpp_extension.load(
            name=f'sg2kd_{op}_plugin',
            sources=[str(src / f) for f in PLUGINS[op] if f.endswith(('.cpp', '.cu'))],
            extra_cflags=list(DEFAULT_CFLAGS),
            extra_cuda_cflags=list(DEFAULT_CUDA_CFLAGS),
            extra_include_paths=[str(src)],
            build_directory=str(build_dir),
            verbose=verbose,
        )
    except Exception as exc:
        (build_dir / 'build.log').write_text(str(exc))
        reason = f'compilation failed: {_shorten(str(exc))}'
        raise BuildError(reason, _hint_for_log(str(exc)), str(build_dir / 'build.log')) from None
    finally:
        if saved is None:
            del os.environ['TORCH_CUDA_ARCH_LIST']
        else:
            os.environ['TORCH_CUDA_ARCH_LIST'] = saved


def _build_or_load(op: str, arch: str, verbose: bool = False) -> tuple[ModuleType, Path]:
    """Load the cached build of ``op`` for ``arch``; if there is none, build it under the lock, unless the
    process that held the lock meanwhile failed (then raise its failure rather than repeat it)."""
    build_dir, start = build_dir_for(op, arch), time.time()
    module = _load_built(op, build_dir)
    if module is not None:
        return module, build_dir
    with build_lock(build_dir):
        module = _load_built(op, build_dir)  # another rank may have built it while we waited
        if module is not None:
            return module, build_dir
        try:
            failed = json.loads((build_dir / 'failed.json').read_text())
        except (OSError, ValueError):
            failed = {}
        if failed.get('time', 0) >= start:  # the holder we waited for failed: report that, do not repeat it
            raise BuildError(
                f'another process failed to build it: {failed.get("reason")}', failed.get('hint', '')
            )
        _note(f'building CUDA plugin {op!r} for arch {arch} in {build_dir} (once) ...')
        try:
            module = _compile(op, arch, build_dir, verbose)
        except BuildError as exc:
            record = {'time': time.time(), 'reason': exc.reason, 'hint': exc.hint}
            (build_dir / 'failed.json').write_text(json.dumps(record))
            raise
        info = {'arch': arch, 'torch': torch.__version__, 'cuda': torch.version.cuda, 'time': time.time()}
        (build_dir / 'ok.json').write_text(json.dumps(info))
        (build_dir / 'failed.json').unlink(missing_ok=True)
        _note(f'built {op!r} in {time.time() - start:.0f} s')
        return module, build_dir


def _attempt(op: str, arch: str | None, device: torch.device | None, verbose: bool) -> tuple:
    """This process's one attempt at plugin ``op``: ``(module or None, report)``; never raises."""
    t0, module = time.time(), None
    try:
        arch = target_arch(arch, device)
        module, build_dir = _build_or_load(op, arch, verbose)
        report = {'status': 'loaded', 'path': str(getattr(module, '__file__', build_dir)), 'arch': arch}
    except BuildError as exc:
        report = {'status': 'failed', 'reason': exc.reason, 'hint': exc.hint, 'log': exc.log}
    except Exception as exc:  # a plugin is optional: never let its loading stop the caller
        reason = f'{type(exc).__name__}: {exc}'
        report = {'status': 'failed', 'reason': reason, 'hint': _hint_for_log(''), 'log': None}
    return module, {**report, 'seconds': round(time.time() - t0, 3)}


def _warn_once(op: str, report: dict) -> None:
    """Warn that plugin ``op`` is unavailable, once per distinct reason."""
    if report['reason'] in _warned:
        return
    _warned.add(report['reason'])
    lines = [
        f'CUDA plugin {op!r} is unavailable, so the (slower) reference PyTorch path is used.',
        f'  reason: {report["reason"]}',
        f'  fix: {report["hint"]}; or prebuild with `python -m torch_utils.custom_ops --build`; '
        f'or set {ENV_MODE}=ref to skip the plugins silently',
    ]
    lines += [f'  build log: {report["log"]}'] if report['log'] else []
    warnings.warn('\n'.join(lines), CustomOpsWarning, stacklevel=4)


def load_op_plugin(
    op: str,
    required: bool = False,
    device: torch.device | None = None,
    arch: str | None = None,
    verbose: bool = False,
) -> ModuleType | None:
    """The plugin of ``op`` (a key of :data:`PLUGINS`), built or loaded at most once per process.

    ``arch`` defaults to ``TORCH_CUDA_ARCH_LIST``, else ``device``'s capability; ``verbose`` shows the
    compiler commands. When the plugin is unavailable, raise ``RuntimeError`` if ``required``, else warn
    (once per reason) and return ``None``, so that the caller takes the reference path.
    """
    if op not in _states:
        _states[op] = _attempt(op, arch, device, verbose)
    module, report = _states[op]
    if module is None and required:
        raise RuntimeError(
            f'CUDA plugin {op!r} is unavailable ({ENV_MODE}=cuda or impl="cuda"): {report["reason"]}\n'
            f'fix: {report["hint"]}; or set {ENV_MODE}=auto/ref to use the reference path'
        )
    if module is None:
        _warn_once(op, report)
    return module


def _passed(outcome: str) -> bool:
    return outcome == 'ok' or outcome.startswith('skipped')


def _checked(op: str, module: ModuleType, device: torch.device, required: bool) -> ModuleType | None:
    """``module`` if it passes the self-check on ``device`` (run there once per process), else ``None`` for
    the reference path (warning once), or ``RuntimeError`` if ``required``."""
    key = (op, device)
    if key not in _checks:
        from torch_utils.ops import self_check  # lazy: it imports the ops, which import this module

        skip = os.environ.get(ENV_CHECK, '').strip() == '0'
        _checks[key] = f'skipped ({ENV_CHECK}=0)' if skip else self_check.run(op, module, device)
        if not _passed(_checks[key]):
            warnings.warn(
                f'CUDA plugin {op!r} failed its self-check on {device}, so the reference PyTorch path is '
                f'used there for the rest of the process.\n  {_checks[key]}\n  (recorded as self_check in '
                f'custom_ops.json; please report it; {ENV_CHECK}=0 would use the plugin anyway)',
                CustomOpsWarning,
                stacklevel=4,
            )
    if _passed(_checks[key]):
        return module
    if required:
        raise RuntimeError(
            f'CUDA plugin {op!r} failed its self-check on {device} ({ENV_MODE}=cuda or impl="cuda"): '
            f'{_checks[key]}\nfix: set {ENV_MODE}=auto/ref to use the reference path'
        )
    return None


def _device_key(dev: torch.device) -> torch.device:
    """``dev`` with its index, as ``x.device`` has it, so that 'cuda' and 'cuda:0' share a self-check."""
    if dev.type == 'cuda' and dev.index is None and torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    return dev


def plugin_for(
    op: str,  # 'upfirdn2d' or 'bias_act'.
    x: torch.Tensor,  # The op's input; CPU tensors take the reference path unless impl='cuda'.
    impl: str = 'auto',  # 'auto' follows SG2KD_OPS; 'ref' forces the reference; 'cuda' requires the plugin.
) -> ModuleType | None:
    """Decide the implementation of one call: the plugin module, or ``None`` for the reference path.

    ``impl='cuda'`` raises on a CPU tensor, a failed build or a failed self-check.
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
    module = load_op_plugin(op, required=mode == 'cuda', device=x.device)
    return None if module is None else _checked(op, module, x.device, mode == 'cuda')


def active_impl(device: None | str | torch.device = None) -> dict:
    """Describe which implementation each op uses, for log.txt and ``custom_ops.json``.

    A CUDA ``device`` (unless ``SG2KD_OPS=ref``) first loads or builds every plugin (once per process;
    raises under ``SG2KD_OPS=cuda`` when one fails) and self-checks it there, so the answer is final;
    ``None`` reports what happened so far. Returns JSON-serialisable ``{'mode', 'device', 'ops': {op:
    'cuda'|'ref'|'undecided'}, 'plugins': {op: {'status', ...}}, 'self_check': {op: 'ok'|'mismatch: ...'|
    'error: ...'|'skipped ...'|'not run'}, 'cache_dir', 'torch', 'cuda'}``; without a device, each
    ``self_check`` entry lists the outcome of every device checked, as ``'cuda:0: ok; ...'``.
    """
    mode, dev = ops_mode(), None if device is None else torch.device(device)
    key = None if dev is None else _device_key(dev)
    if dev is not None and dev.type == 'cuda' and mode != 'ref':
        for op in PLUGINS:
            module = load_op_plugin(op, required=mode == 'cuda', device=dev)
            if module is not None:
                _checked(op, module, key, mode == 'cuda')
    ops, plugins, checks = {}, {}, {}
    for op in PLUGINS:
        module, plugins[op] = _states.get(op, (None, {'status': 'not attempted'}))
        done = {d: s for (o, d), s in _checks.items() if o == op and key in (None, d)}
        if key is None:
            checks[op] = '; '.join(f'{d}: {s}' for d, s in done.items()) or 'not run'
        else:
            checks[op] = done.get(key, 'not run')
        if mode == 'ref' or (dev is not None and dev.type != 'cuda'):
            ops[op] = 'ref'
        elif op not in _states:
            ops[op] = 'undecided'
        else:
            ops[op] = 'cuda' if module is not None and all(map(_passed, done.values())) else 'ref'
    info = {'mode': mode, 'device': None if dev is None else str(dev), 'ops': ops, 'plugins': plugins}
    info['self_check'] = checks
    return {**info, 'cache_dir': str(cache_root()), 'torch': torch.__version__, 'cuda': torch.version.cuda}


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
        for op in PLUGINS:
            load_op_plugin(op, required=True, arch=args.arch, verbose=args.verbose)
    except RuntimeError as exc:
        print(f'build failed: {exc}', file=sys.stderr)
        return 1
    print('\n'.join(f'{op}: {_states[op][1]["path"]}' for op in PLUGINS))
    arch = _states[next(iter(PLUGINS))][1]['arch']
    print(f'built {len(PLUGINS)} plugins for arch {arch} in {time.time() - t0:.0f} s; cache: {cache_root()}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
