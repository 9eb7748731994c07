"""Reading and writing network files. :func:`load_network_pkl` reads two formats, told apart by content:

* **Our snapshot format**, a ``torch.save`` zip of plain data written by :func:`save_network_snapshot`, so
  ``torch.load(path, weights_only=True)`` reads it without this repository::

      {'format': 'stylegan2-ada-kd/snapshot-v1',
       'networks': {'G': {'class_name': ..., 'init_kwargs': {...}, 'state_dict': {...}},
                    'D': ..., 'G_ema': ..., 'augment_pipe': ... (optional)},
       'training_set_kwargs': {...} or None,
       **extra}
  Classes are rebuilt only from an allow-list (see :func:`register_network_class`).

* **Official StyleGAN2-ADA pickles** (``network-snapshot-*.pkl``), which embed their classes' source code and
  would run it under a plain ``pickle.load``. A restricted unpickler accepts a short list of globals, turns
  each embedded object into an inert stub (never running its source) and copies the tensors into our classes
  (:mod:`stylegan2_ada_kd.checkpoint.official`).

:func:`read_snapshot` is the one reader of our files' raw data (for :func:`load_network_pkl` and for exact
resume, :mod:`stylegan2_ada_kd.checkpoint.training_state`). :func:`export_state_dicts` writes the simplest
recoverable form: plain state_dicts plus a JSON description.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Union

import torch

import dnnlib
from stylegan2_ada_kd.checkpoint.classes import (
    NETWORK_KEYS,
    NetworkPickleError,
    UnsafePickleError,
    construct,
    load_state_strict,
    registered_name,
    registry,
    to_plain,
)
from stylegan2_ada_kd.checkpoint.official import load_official

__all__ = [
    'SNAPSHOT_FORMAT',
    'convert_network_pkl',
    'export_state_dicts',
    'load_network_pkl',
    'read_snapshot',
    'save_network_snapshot',
    'torch_load_error',
]

SNAPSHOT_FORMAT = 'stylegan2-ada-kd/snapshot-v1'
FP16_RES, FP16_CLAMP = 4, 256  # The reference's force_fp16: fp16 top resolutions, activation clamp.
STATE_DICTS_FORMAT = 'stylegan2-ada-kd/state-dicts-v1'
_STANDARD_KEYS = frozenset(NETWORK_KEYS + ('augment_pipe', 'training_set_kwargs'))
_RESERVED_KEYS = _STANDARD_KEYS | {'format', 'networks'}
_ZIP_MAGIC = b'PK\x03\x04'

PathLike = Union[str, os.PathLike]


def _cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Return ``module.state_dict()`` with detached CPU tensors."""
    return {key: value.detach().cpu() for key, value in module.state_dict().items()}


def _network_record(key: str, module: Any) -> dict[str, Any]:
    """Return ``{'class_name', 'init_kwargs'}`` for a network that is about to be saved."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f'{key}: expected a torch.nn.Module, got {type(module).__name__}.')
    init_kwargs = getattr(module, 'init_kwargs', None)
    if not isinstance(init_kwargs, dict):
        raise TypeError(
            f'{key}: {type(module).__name__} has no dict attribute "init_kwargs" with its constructor '
            'kwargs; only networks that record their kwargs can be saved.'
        )
    return {
        'class_name': registered_name(module, key),
        'init_kwargs': to_plain(init_kwargs, f'{key}.init_kwargs'),
    }


def save_network_snapshot(
    path: PathLike,
    *,
    G: torch.nn.Module,
    D: torch.nn.Module,
    G_ema: torch.nn.Module,
    augment_pipe: torch.nn.Module | None = None,
    training_set_kwargs: dict | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a snapshot in our format to ``path`` atomically (see the module docstring for the layout).
    ``extra`` adds top-level keys (plain data or tensors) that :func:`load_network_pkl` passes back unchanged.
    """
    modules = {'G': G, 'D': D, 'G_ema': G_ema}
    if augment_pipe is not None:
        modules['augment_pipe'] = augment_pipe
    networks = {}
    for key, module in modules.items():
        record = _network_record(key, module)
        record['state_dict'] = _cpu_state_dict(module)
        networks[key] = record
    extra = dict(extra or {})
    clash = sorted(_RESERVED_KEYS & set(extra))
    if clash:
        raise ValueError(f'save_network_snapshot: extra keys {clash} are reserved; rename them.')
    payload = {
        'format': SNAPSHOT_FORMAT,
        'networks': networks,
        'training_set_kwargs': to_plain(training_set_kwargs, 'training_set_kwargs'),
    }
    for key, value in extra.items():
        if not isinstance(key, str):
            raise TypeError(f'save_network_snapshot: extra key {key!r} is not a string.')
        payload[key] = to_plain(value, f'extra[{key!r}]', allow_tensors=True)
    dnnlib.util.atomic_write(path, lambda handle: torch.save(payload, handle))


def export_state_dicts(data: dict[str, Any], out_dir: PathLike) -> dict[str, Path]:
    """Write ``G.pt``, ``D.pt``, ``G_ema.pt`` (plain state_dicts) and ``networks.json`` into ``out_dir``.

    ``data`` is a dict as returned by :func:`load_network_pkl`. ``networks.json`` records each network's class
    name, constructor kwargs and state_dict file, plus ``training_set_kwargs`` and any augmentation settings.
    Returns the written paths by key (``'G'``, ``'D'``, ``'G_ema'``, ``'json'``).
    """
    out_dir = Path(out_dir)
    manifest: dict[str, Any] = {'format': STATE_DICTS_FORMAT, 'networks': {}}
    written: dict[str, Path] = {}
    for key in NETWORK_KEYS:
        module = data.get(key)
        record = _network_record(f'export_state_dicts: data[{key!r}]', module)
        state = _cpu_state_dict(module)
        path = out_dir / f'{key}.pt'
        dnnlib.util.atomic_write(path, lambda handle, state=state: torch.save(state, handle))
        manifest['networks'][key] = dict(record, state_dict_file=path.name)
        written[key] = path
    for key in ('training_set_kwargs', 'augment_pipe_kwargs', 'augment_p'):
        if key in data:
            manifest[key] = to_plain(data[key], key)
    text = json.dumps(manifest, indent=2, sort_keys=True) + '\n'
    written['json'] = out_dir / 'networks.json'
    dnnlib.util.atomic_write(written['json'], lambda handle: handle.write(text.encode('utf-8')))
    return written


def _finalize(result: dict[str, Any], device: str | torch.device) -> dict[str, Any]:
    """Put every network of ``result`` in eval mode without gradients on ``device``."""
    for key in NETWORK_KEYS + ('augment_pipe',):
        module = result.get(key)
        if isinstance(module, torch.nn.Module):
            result[key] = module.eval().requires_grad_(False).to(device)
    return result


def load_network_pkl(
    f: BinaryIO | PathLike, force_fp16: bool = False, *, device: str | torch.device = 'cpu'
) -> dict[str, Any]:
    """Load networks from one of our snapshots or an official StyleGAN2-ADA pickle (path, URL or binary file).

    Returns a dict with ``G``, ``D``, ``G_ema`` (our modules, eval mode, ``requires_grad=False``, on
    ``device``), ``augment_pipe`` and ``training_set_kwargs``. Official pickles also give
    ``augment_pipe_kwargs`` and ``augment_p`` (None without an augment pipe); our snapshots give back their
    ``extra`` keys. ``force_fp16`` (the reference loader's option) rebuilds G, D and G_ema with their top
    4 resolutions in fp16 and activations clamped at 256, the same weights. Raises
    :class:`NetworkPickleError` (or :class:`UnsafePickleError`) with the file name.
    """
    with _opened(f) as (stream, source, local_path):
        raw = _read_raw(stream, source, local_path)
        result = load_official(stream, source) if raw is None else _build_networks(raw, source)
    if force_fp16:
        for key in NETWORK_KEYS:
            if isinstance(result.get(key), torch.nn.Module):
                result[key] = _in_fp16(result[key], source)
    return _finalize(result, device)


def _in_fp16(module: torch.nn.Module, source: str) -> torch.nn.Module:
    """``module`` rebuilt with ``num_fp16_res=4, conv_clamp=256`` (G: in synthesis_kwargs), same weights."""
    kwargs = copy.deepcopy(module.init_kwargs)
    target = kwargs['synthesis_kwargs'] if 'synthesis_kwargs' in kwargs else kwargs
    if target.get('num_fp16_res') == FP16_RES and target.get('conv_clamp') == FP16_CLAMP:
        return module
    target.update(num_fp16_res=FP16_RES, conv_clamp=FP16_CLAMP)
    rebuilt = type(module)(**kwargs)
    load_state_strict(rebuilt, module.state_dict(), f'{source}: {type(module).__name__} in fp16', kwargs)
    return rebuilt


def read_snapshot(f: BinaryIO | PathLike) -> dict[str, Any] | None:
    """The plain data of our snapshot ``f`` (path, URL or binary file), or None for an official pickle.

    Nothing is rebuilt: networks stay ``{'class_name', 'init_kwargs', 'state_dict'}`` records. A local file is
    memory-mapped rather than read into memory (the ``--resume`` check and the training loop share its pages).
    Raises :class:`NetworkPickleError` naming the file for a zip that is not a readable snapshot of ours.
    """
    with _opened(f) as (stream, source, local_path):
        return _read_raw(stream, source, local_path)


@contextlib.contextmanager
def _opened(f: BinaryIO | PathLike) -> Iterator[tuple[BinaryIO, str, str | None]]:
    """Yield ``(seekable stream, name for messages, local path or None)`` for a path, URL or binary file."""
    if isinstance(f, (str, os.PathLike)):
        local_path = os.fspath(f) if os.path.isfile(f) else None
        with dnnlib.util.open_url(f) as handle:
            yield handle, str(getattr(handle, 'name', '<stream>')), local_path
        return
    yield (f if f.seekable() else io.BytesIO(f.read())), str(getattr(f, 'name', '<stream>')), None


def _read_raw(stream: BinaryIO, source: str, local_path: str | None) -> dict[str, Any] | None:
    """Our snapshot's plain data (``torch.load`` with ``weights_only=True``), or None when not a zip.

    ``stream`` is left at its start position for the official reader. ``local_path`` is memory-mapped.
    """
    start = stream.tell()
    head = stream.read(len(_ZIP_MAGIC))
    stream.seek(start)
    if head != _ZIP_MAGIC:
        return None
    try:
        if local_path is not None:
            raw = torch.load(local_path, map_location='cpu', weights_only=True, mmap=True)
        else:
            raw = torch.load(stream, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:  # OSError: cut short
        raise torch_load_error(source, err) from err
    fmt = raw.get('format') if isinstance(raw, dict) else None
    if fmt != SNAPSHOT_FORMAT:
        raise NetworkPickleError(
            f'{source}: unsupported snapshot format {fmt!r} (expected {SNAPSHOT_FORMAT!r}). '
            'If it was written by a newer version of stylegan2-ada-kd, upgrade this package.'
        )
    networks = raw.get('networks')
    if not isinstance(networks, dict) or any(key not in networks for key in NETWORK_KEYS):
        raise NetworkPickleError(
            f'{source}: the snapshot must hold networks {list(NETWORK_KEYS)}; it is damaged.'
        )
    return raw


def _build_networks(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Rebuild the networks of a snapshot read by :func:`_read_raw`; other keys pass through."""
    result = {key: value for key, value in raw.items() if key not in ('format', 'networks')}
    result.setdefault('training_set_kwargs', None)
    result['augment_pipe'] = None
    for key, entry in raw['networks'].items():
        result[key] = _build_from_entry(entry, f'{source}: networks[{key!r}]')
    return result


def torch_load_error(source: str, err: Exception) -> NetworkPickleError:
    """Our message for a failed ``torch.load(..., weights_only=True)`` of ``source``.

    torch's own text advises retrying with ``weights_only=False``, which would run whatever code the file
    holds; we never pass that on. A refused global becomes :class:`UnsafePickleError` naming the global.
    """
    refused = re.search(r'GLOBAL ([\w.]+)', str(err)) if isinstance(err, pickle.UnpicklingError) else None
    if refused:
        return UnsafePickleError(
            f'{source}: refusing to load global {refused.group(1)}: the file holds objects other than '
            'tensors and plain data, so it is not a stylegan2-ada-kd snapshot, or it may be malicious; '
            'nothing in it was executed.'
        )
    return NetworkPickleError(
        f'{source}: this zip file is not a readable stylegan2-ada-kd snapshot ({type(err).__name__}); it is '
        'truncated or damaged (e.g. an interrupted copy), or it is some other torch.save file. Use an '
        'earlier or complete copy of the snapshot.'
    )


def _build_from_entry(entry: Any, where: str) -> torch.nn.Module:
    """Rebuild one network from a ``{'class_name', 'init_kwargs', 'state_dict'}`` snapshot entry."""
    if not isinstance(entry, dict) or not {'class_name', 'init_kwargs', 'state_dict'} <= set(entry):
        raise NetworkPickleError(f'{where}: expected a dict with class_name, init_kwargs and state_dict.')
    cls = registry().get(entry['class_name'])
    if cls is None:
        raise NetworkPickleError(
            f'{where}: class {entry["class_name"]!r} is not registered (known: {sorted(registry())}). '
            'Import the module that registers it, or call register_network_class().'
        )
    kwargs = to_plain(entry['init_kwargs'], f'{where}.init_kwargs', error=NetworkPickleError)
    if not isinstance(kwargs, dict) or not isinstance(entry['state_dict'], dict):
        raise NetworkPickleError(f'{where}: init_kwargs and state_dict must be dicts.')
    module = construct(cls, [], kwargs, where)
    state = entry['state_dict']
    if not any(key.startswith('heads.') for key in module.state_dict()):  # plugin heads (KD): resume-only
        state = {key: value for key, value in state.items() if not key.startswith('heads.')}
    load_state_strict(module, state, where, kwargs)
    return module


def convert_network_pkl(
    source: PathLike,
    dest: PathLike | None = None,
    state_dict_dir: PathLike | None = None,
    force_fp16: bool = False,
) -> dict[str, Any]:
    """Load ``source`` (path or URL, any supported format; ``force_fp16`` as in :func:`load_network_pkl`) and
    write it as our snapshot and/or state_dicts.

    Keys beyond the standard ones (e.g. ``augment_pipe_kwargs``, ``augment_p``) are kept as snapshot extras.
    Returns the loaded dict.
    """
    data = load_network_pkl(source, force_fp16)
    if dest is not None:
        extra = {key: value for key, value in data.items() if key not in _STANDARD_KEYS}
        nets = {key: data.get(key) for key in NETWORK_KEYS + ('augment_pipe',)}
        save_network_snapshot(dest, **nets, training_set_kwargs=data.get('training_set_kwargs'), extra=extra)
    if state_dict_dir is not None:
        export_state_dicts(data, state_dict_dir)
    return data
