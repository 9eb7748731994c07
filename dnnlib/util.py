"""Small general-purpose helpers: an attribute-access dict, building objects from dotted class names, URL/path
opening with a download cache, and integer range parsing for command-line options.

Pickles written by the official StyleGAN2-ADA code refer to ``dnnlib.util.EasyDict`` by that global name,
so this module (and that class name) must stay importable at this path.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import socket
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any, BinaryIO, Callable

import click

__all__ = [
    'EasyDict',
    'atomic_write',
    'construct_class_by_name',
    'local_path',
    'make_cache_dir_path',
    'open_url',
    'parse_range',
    'process_alive',
    'remove_stale_temp_files',
    'temp_file_prefix',
]

_CACHE_ENV_VAR = 'DNNLIB_CACHE_DIR'
_DOWNLOAD_CHUNK = 1 << 20


class EasyDict(dict):
    """A ``dict`` whose items can also be read and written as attributes (``d.key`` == ``d['key']``).

    All state lives in the dict items, so instances pickle and copy exactly like plain dicts.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f'{type(self).__name__} has no key {name!r}') from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(f'{type(self).__name__} has no key {name!r}') from None


def _import_dotted(name: str) -> Any:
    """Return the object at a dotted path such as ``'torch.optim.Adam'``: the longest importable module
    prefix, followed by attribute lookups."""
    parts = name.split('.')
    for split in range(len(parts) - 1, 0, -1):
        module_name = '.'.join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and (module_name + '.').startswith(err.name + '.'):
                continue  # this prefix is not a module; try a shorter one
            raise
        for attr in parts[split:]:
            if not hasattr(obj, attr):
                raise ImportError(
                    f'class_name {name!r}: module {module_name!r} has no attribute path {attr!r}.'
                )
            obj = getattr(obj, attr)
        return obj
    raise ImportError(
        f'class_name {name!r}: no importable module found; use a full dotted path like "pkg.mod.Class".'
    )


def construct_class_by_name(*args: Any, class_name: str, **kwargs: Any) -> Any:
    """Call the class (or function) named by the dotted path ``class_name`` with the remaining arguments.

    This lets configs be plain dicts such as ``{'class_name': 'torch.optim.Adam', 'lr': 0.002}``.
    """
    target = _import_dotted(class_name)
    if not callable(target):
        raise TypeError(f'class_name {class_name!r} names a {type(target).__name__}, which cannot be called.')
    return target(*args, **kwargs)


def make_cache_dir_path(*parts: str) -> str:
    """Return a path inside the dnnlib cache directory.

    The root is ``$DNNLIB_CACHE_DIR`` when that variable is set, else ``~/.cache/dnnlib``. The directory is
    not created here.
    """
    root = os.environ.get(_CACHE_ENV_VAR) or os.path.join(os.path.expanduser('~'), '.cache', 'dnnlib')
    return os.path.join(root, *parts)


def parse_range(spec: str) -> list[int]:
    """Parse a comma-separated list of integers and inclusive ranges, e.g. ``'0-3,7'`` -> ``[0, 1, 2, 3, 7]``.

    Raises ``ValueError`` with a description of the expected syntax for anything else.
    """
    values: list[int] = []
    for item in str(spec).split(','):
        item = item.strip()
        match = re.fullmatch(r'(\d+)(?:\s*-\s*(\d+))?', item)
        if match is None:
            raise ValueError(f'Cannot parse {item!r} in {spec!r}: expected numbers or ranges like "0-3,7".')
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f'Range {item!r} in {spec!r} is descending; write it as "{last}-{first}".')
        values.extend(range(first, last + 1))
    return values


def _host_tag() -> str:
    """This machine's short host name, without dots (part of temporary-file names)."""
    return re.sub(r'[^A-Za-z0-9_]', '_', socket.gethostname().split('.')[0]) or 'host'


_TEMP_NAME = re.compile(r'^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.(?:[^.]*\.)?tmp(?:\.png)?$')


def temp_file_prefix(path: str | os.PathLike) -> str:
    """Name prefix of the temporary file an atomic write of ``path`` goes through: ``.<name>.<host>-<pid>.``.

    Continue it with ``tmp`` (optionally ``tmp.png``), or pass it to ``tempfile.mkstemp(prefix=...,
    suffix='.tmp')``. The host and process id let :func:`remove_stale_temp_files` tell a file left by a killed
    process from one being written right now.
    """
    return f'.{os.path.basename(os.fspath(path))}.{_host_tag()}-{os.getpid()}.'


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = True) -> None:
    """Write ``path`` all at once or not at all: ``write(handle)`` fills a temporary file in the same folder
    (named by :func:`temp_file_prefix`, so :func:`remove_stale_temp_files` removes it after a kill), which is
    fsynced, given the usual ``0666 & ~umask`` mode and moved into place. If ``write`` fails, ``path`` is
    untouched and the temporary file is removed. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=temp_file_prefix(path), suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb' if binary else 'w') as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0o022)  # mkstemp creates 0600 files; read the umask back to apply it
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_name)
        raise


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (on Windows always assumed: probing there could end it)."""
    if os.name == 'nt':
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(directory: str | os.PathLike) -> list[str]:
    """Delete the temporary files (named by :func:`temp_file_prefix`) in ``directory`` whose writing process
    on this host no longer runs, e.g. after a ``kill -9`` during a snapshot. Returns the removed names.

    Only this directory is looked at, not its sub-directories; files from other hosts are kept.
    """
    removed = []
    for name in sorted(os.listdir(directory)):
        m = _TEMP_NAME.match(name)
        if m is None or m['host'] != _host_tag() or process_alive(int(m['pid'])):
            continue
        try:
            os.remove(os.path.join(directory, name))
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed


def _is_url(text: str) -> bool:
    """Return True if ``text`` looks like ``scheme://...`` (and not like a Windows drive path)."""
    return re.match(r'^[A-Za-z][A-Za-z0-9+.-]+://', text) is not None


def _file_url_to_path(url: str) -> str:
    """Convert a ``file://`` URL into a local filesystem path."""
    parsed = urllib.parse.urlparse(url)
    path = urllib.request.url2pathname(parsed.path)
    if parsed.netloc and parsed.netloc != 'localhost':
        path = '//' + parsed.netloc + path
    return path


def cache_file_name(url: str) -> str:
    """Return ``<md5(url)>_<safe basename>`` for a download URL."""
    digest = hashlib.md5(url.encode('utf-8')).hexdigest()
    basename = os.path.basename(urllib.parse.urlparse(url).path) or 'download'
    safe = re.sub(r'[^A-Za-z0-9._-]', '_', basename)[:100]
    return f'{digest}_{safe}'


def _download_to(url: str, dest: str) -> None:
    """Download ``url`` into ``dest`` through :func:`atomic_write` (streamed in chunks)."""
    import requests

    def write(out: IO) -> None:
        with requests.get(url, stream=True, timeout=60) as response:
            response.raise_for_status()
            for chunk in response.iter_content(chunk_size=_DOWNLOAD_CHUNK):
                out.write(chunk)

    atomic_write(dest, write)


def _fetch_cached(url: str, cache_dir: str | None, num_attempts: int, verbose: bool) -> str:
    """Return the path of the cached copy of ``url``, downloading it first if it is not cached yet."""
    root = cache_dir if cache_dir is not None else make_cache_dir_path()
    dest = os.path.join(root, 'downloads', cache_file_name(url))
    if os.path.isfile(dest):
        return dest
    last_error: BaseException | None = None
    for attempt in range(1, max(1, num_attempts) + 1):
        if verbose:
            print(f'Downloading {url} (attempt {attempt}/{num_attempts}) ...', flush=True)
        try:
            _download_to(url, dest)
            if verbose:
                print(f'Saved to {dest}', flush=True)
            return dest
        except OSError as err:  # requests' exceptions derive from OSError
            last_error = err
            if attempt < num_attempts:
                time.sleep(min(2.0 * attempt, 10.0))
    raise OSError(
        f'Could not download {url} after {num_attempts} attempt(s): {last_error}. '
        'Download the file manually and pass its local path instead of the URL.'
    ) from last_error


def local_path(
    url_or_path: str | os.PathLike,
    cache_dir: str | None = None,
    num_attempts: int = 3,
    verbose: bool = True,
) -> str:
    """The local file behind a path, a ``file://`` URL or an ``http(s)://`` URL.

    HTTP(S) downloads are stored in ``<cache_dir>/downloads/`` (default: ``make_cache_dir_path()``) and reused
    by later calls. Raises ``OSError`` naming what was passed when the file cannot be had.
    """
    text = os.fspath(url_or_path)
    path = os.path.expanduser(text)
    if _is_url(text):
        scheme = urllib.parse.urlparse(text).scheme.lower()
        if scheme in ('http', 'https'):
            return _fetch_cached(text, cache_dir, num_attempts, verbose)
        if scheme != 'file':
            raise ValueError(
                f'Unsupported URL scheme {scheme!r} in {text!r}: use a local path, file://, http:// or https://.'
            )
        path = _file_url_to_path(text)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'No such file: {text!r} (resolved to {Path(path).resolve()}). Check the path.'
        )
    return path


def open_url(
    url_or_path: str | os.PathLike,
    cache_dir: str | None = None,
    num_attempts: int = 3,
    verbose: bool = True,
) -> BinaryIO:
    """Open :func:`local_path` of a path or URL for binary reading; the caller owns the file object."""
    return open(local_path(url_or_path, cache_dir, num_attempts, verbose), 'rb')


class BoolParamType(click.ParamType):
    """Click type for booleans written 1/0, true/false, yes/no or on/off (the reference CLIs' style)."""

    name = 'BOOL'

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> bool:
        """Parse ``value`` or fail with a message naming the option."""
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ('1', 'true', 'yes', 'on'):
            return True
        if text in ('0', 'false', 'no', 'off'):
            return False
        self.fail(f'{value!r} is not a boolean (use 1/0, true/false)', param, ctx)


BOOL = BoolParamType()


def bool_option(name: str, default: bool, help_text: str) -> Callable:
    """A click option taking a BOOL value as the reference's tools write it (``--save-video=True``), or given
    bare for True (``--save-video``)."""
    return click.option(
        name,
        type=BOOL,
        is_flag=False,
        flag_value=True,
        default=default,
        show_default=True,
        metavar='[BOOL]',
        help=help_text,
    )
