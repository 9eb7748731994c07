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
  each embedded object into an inert stub (never running its source) and copies the tensors into our classes.

:func:`export_state_dicts` writes the simplest recoverable form: plain state_dicts plus a JSON description.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib
import io
import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

import dnnlib

SNAPSHOT_FORMAT = 'stylegan2-ada-kd/snapshot-v1'
STATE_DICTS_FORMAT = 'stylegan2-ada-kd/state-dicts-v1'
NETWORK_KEYS = ('G', 'D', 'G_ema')
_STANDARD_KEYS = frozenset(NETWORK_KEYS + ('augment_pipe', 'training_set_kwargs'))
_RESERVED_KEYS = _STANDARD_KEYS | {'format', 'networks'}
_ZIP_MAGIC = b'PK\x03\x04'
_UNPICKLE_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, TypeError, AttributeError)
_OFFICIAL_CLASS_FOR_KEY = {'G': 'Generator', 'G_ema': 'Generator', 'D': 'Discriminator'}
# Classes registered on first use of the registry (if their module exists), as (module, class name).
_DEFAULT_CLASSES = [
    ('stylegan2_ada_kd.networks', 'Generator'),
    ('stylegan2_ada_kd.networks', 'Discriminator'),
    ('stylegan2_ada_kd.augment', 'AugmentPipe'),
    ('stylegan2_ada_kd.diffaugment', 'DiffAugment'),
]

PathLike = Union[str, os.PathLike]


class NetworkPickleError(ValueError):
    """A network file could not be loaded: unknown format, unsupported content or an architecture mismatch."""


class UnsafePickleError(NetworkPickleError):
    """A pickle refers to a global (function or class) that is not on the loader's allow-list."""


_NETWORK_CLASSES: Dict[str, type] = {}
_defaults_registered = False


def register_network_class(name: str, cls: type) -> None:
    """Let snapshots rebuild ``cls`` (a ``torch.nn.Module`` subclass) from the stored class name ``name``.

    Re-registering the same class is a no-op; binding an already used name to another class is an error.
    """
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise TypeError(f'register_network_class({name!r}): {cls!r} is not a torch.nn.Module subclass.')
    existing = _registry().get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f'register_network_class: {name!r} is already bound to {existing!r}; pick another.')
    _NETWORK_CLASSES[name] = cls


def _registry() -> Dict[str, type]:
    """Return the class registry, adding the default classes (G, D, AugmentPipe if present) on first use."""
    global _defaults_registered
    if not _defaults_registered:
        _defaults_registered = True
        for module_name, class_name in _DEFAULT_CLASSES:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as err:
                if err.name != module_name:
                    raise
                continue
            if hasattr(module, class_name):
                _NETWORK_CLASSES.setdefault(f'{module_name}.{class_name}', getattr(module, class_name))
    return _NETWORK_CLASSES


def _registered_name(module: torch.nn.Module, where: str) -> str:
    """Return the registry name of ``type(module)``, or raise an error that says how to register it."""
    for name, cls in _registry().items():
        if type(module) is cls:
            return name
    raise TypeError(
        f'{where}: class {type(module).__module__}.{type(module).__qualname__} is not registered for '
        'snapshots; call stylegan2_ada_kd.legacy.register_network_class(name, cls) first.'
    )


def _to_plain(value: Any, where: str, allow_tensors: bool = False, error: type = TypeError) -> Any:
    """Convert ``value`` to plain data (str-keyed dicts, lists, tuples, str, int, float, bool, None).

    numpy scalars become Python scalars and dict subclasses (``EasyDict``, ``OrderedDict``) become ``dict``.
    ``allow_tensors`` (for snapshot extras such as optimizer states) also keeps tensors, moved to the CPU,
    and int dict keys. Anything else raises ``error``.
    """
    if isinstance(value, np.generic) and not isinstance(value, np.object_):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if allow_tensors and isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) and not (allow_tensors and type(key) is int):
                raise error(f'{where}: dict key {key!r} is not a string; only string keys can be stored.')
            out[key] = _to_plain(item, f'{where}.{key}', allow_tensors, error)
        return out
    if isinstance(value, (list, tuple)):
        items = [_to_plain(item, f'{where}[{i}]', allow_tensors, error) for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise error(
        f'{where}: a value of type {type(value).__name__} cannot be stored; use dicts, lists, numbers, text'
        + (', None or tensors.' if allow_tensors else ' or None.')
    )


def _atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write a file via a temporary file in the same directory, fsync it and move it into place.

    If ``write`` fails, the destination is left untouched and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0o022)  # mkstemp creates 0600 files; give the usual 0666 & ~umask instead
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_name)
        raise


def _cpu_state_dict(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Return ``module.state_dict()`` with detached CPU tensors."""
    return {key: value.detach().cpu() for key, value in module.state_dict().items()}


def _network_record(key: str, module: Any) -> Dict[str, Any]:
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
        'class_name': _registered_name(module, key),
        'init_kwargs': _to_plain(init_kwargs, f'{key}.init_kwargs'),
    }


def save_network_snapshot(
    path: PathLike,
    *,
    G: torch.nn.Module,
    D: torch.nn.Module,
    G_ema: torch.nn.Module,
    augment_pipe: Optional[torch.nn.Module] = None,
    training_set_kwargs: Optional[dict] = None,
    extra: Optional[Dict[str, Any]] = None,
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
        'training_set_kwargs': _to_plain(training_set_kwargs, 'training_set_kwargs'),
    }
    for key, value in extra.items():
        if not isinstance(key, str):
            raise TypeError(f'save_network_snapshot: extra key {key!r} is not a string.')
        payload[key] = _to_plain(value, f'extra[{key!r}]', allow_tensors=True)
    _atomic_write(path, lambda handle: torch.save(payload, handle))


def export_state_dicts(data: Dict[str, Any], out_dir: PathLike) -> Dict[str, Path]:
    """Write ``G.pt``, ``D.pt``, ``G_ema.pt`` (plain state_dicts) and ``networks.json`` into ``out_dir``.

    ``data`` is a dict as returned by :func:`load_network_pkl`. ``networks.json`` records each network's class
    name, constructor kwargs and state_dict file, plus ``training_set_kwargs`` and any augmentation settings.
    Returns the written paths by key (``'G'``, ``'D'``, ``'G_ema'``, ``'json'``).
    """
    out_dir = Path(out_dir)
    manifest: Dict[str, Any] = {'format': STATE_DICTS_FORMAT, 'networks': {}}
    written: Dict[str, Path] = {}
    for key in NETWORK_KEYS:
        module = data.get(key)
        record = _network_record(f'export_state_dicts: data[{key!r}]', module)
        state = _cpu_state_dict(module)
        path = out_dir / f'{key}.pt'
        _atomic_write(path, lambda handle, state=state: torch.save(state, handle))
        manifest['networks'][key] = dict(record, state_dict_file=path.name)
        written[key] = path
    for key in ('training_set_kwargs', 'augment_pipe_kwargs', 'augment_p'):
        if key in data:
            manifest[key] = _to_plain(data[key], key)
    text = json.dumps(manifest, indent=2, sort_keys=True) + '\n'
    written['json'] = out_dir / 'networks.json'
    _atomic_write(written['json'], lambda handle: handle.write(text.encode('utf-8')))
    return written


def _preview(keys: Iterable[str], limit: int = 6) -> str:
    """Format the first few keys of a list for an error message."""
    keys = list(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys)} in total)' if len(keys) > limit else '')


def _construct(cls: type, args: List[Any], kwargs: Dict[str, Any], where: str) -> torch.nn.Module:
    """Instantiate ``cls(*args, **kwargs)``, turning constructor errors into a readable message."""
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError, KeyError, AssertionError) as err:
        raise NetworkPickleError(
            f'{where}: cannot build {cls.__name__} from args {args} and kwargs {kwargs}: {err}'
        ) from err


def _load_state_strict(
    module: torch.nn.Module, state: Dict[str, Any], where: str, kwargs: Dict[str, Any]
) -> None:
    """Load ``state`` into ``module`` with ``strict=True``, explaining any key or shape mismatch first."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    bad = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    shapes = [
        f'{key} (file {list(state[key].shape)}, network {list(value.shape)})'
        for key, value in expected.items()
        if isinstance(state.get(key), torch.Tensor) and state[key].shape != value.shape
    ]
    found = {'missing': missing, 'unexpected': unexpected, 'non-tensor': bad, 'wrong-shape': shapes}
    problems = [f'{len(items)} {label} key(s): {_preview(items)}' for label, items in found.items() if items]
    if problems:
        raise NetworkPickleError(
            f'{where}: the stored weights do not fit {type(module).__name__}(**{kwargs}): '
            + '; '.join(problems)
            + '. The file was probably written by a different architecture or version.'
        )
    module.load_state_dict(state, strict=True)


def _finalize(result: Dict[str, Any], device: Union[str, torch.device]) -> Dict[str, Any]:
    """Put every network of ``result`` in eval mode without gradients on ``device``."""
    for key in NETWORK_KEYS + ('augment_pipe',):
        module = result.get(key)
        if isinstance(module, torch.nn.Module):
            result[key] = module.eval().requires_grad_(False).to(device)
    return result


def load_network_pkl(
    f: Union[BinaryIO, PathLike], *, device: Union[str, torch.device] = 'cpu'
) -> Dict[str, Any]:
    """Load networks from one of our snapshots or an official StyleGAN2-ADA pickle (path, URL or binary file).

    Returns a dict with ``G``, ``D``, ``G_ema`` (our modules, eval mode, ``requires_grad=False``, on
    ``device``), ``augment_pipe`` and ``training_set_kwargs``. Official pickles also give
    ``augment_pipe_kwargs`` and ``augment_p`` (None without an augment pipe); our snapshots give back their
    ``extra`` keys. Raises :class:`NetworkPickleError` (or :class:`UnsafePickleError`) with the file name.
    """
    if isinstance(f, (str, os.PathLike)):
        with dnnlib.util.open_url(f) as handle:
            return load_network_pkl(handle, device=device)
    source = str(getattr(f, 'name', '<stream>'))
    stream: BinaryIO = f if f.seekable() else io.BytesIO(f.read())
    start = stream.tell()
    head = stream.read(len(_ZIP_MAGIC))
    stream.seek(start)
    if head == _ZIP_MAGIC:
        result = _load_snapshot(stream, source)
    else:
        result = _load_official(stream, source)
    return _finalize(result, device)


def _load_snapshot(stream: BinaryIO, source: str) -> Dict[str, Any]:
    """Read one of our snapshots (``torch.load`` with ``weights_only=True``) and rebuild its networks."""
    try:
        raw = torch.load(stream, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise NetworkPickleError(
            f'{source}: this zip file is not a readable stylegan2-ada-kd snapshot ({err}). '
            'It may be truncated or be some other torch.save file.'
        ) from err
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
    result = {key: value for key, value in raw.items() if key not in ('format', 'networks')}
    result.setdefault('training_set_kwargs', None)
    result['augment_pipe'] = None
    for key, entry in networks.items():
        result[key] = _build_from_entry(entry, f'{source}: networks[{key!r}]')
    return result


def _build_from_entry(entry: Any, where: str) -> torch.nn.Module:
    """Rebuild one network from a ``{'class_name', 'init_kwargs', 'state_dict'}`` snapshot entry."""
    if not isinstance(entry, dict) or not {'class_name', 'init_kwargs', 'state_dict'} <= set(entry):
        raise NetworkPickleError(f'{where}: expected a dict with class_name, init_kwargs and state_dict.')
    cls = _registry().get(entry['class_name'])
    if cls is None:
        raise NetworkPickleError(
            f'{where}: class {entry["class_name"]!r} is not registered (known: {sorted(_registry())}). '
            'Import the module that registers it, or call register_network_class().'
        )
    kwargs = _to_plain(entry['init_kwargs'], f'{where}.init_kwargs', error=NetworkPickleError)
    if not isinstance(kwargs, dict) or not isinstance(entry['state_dict'], dict):
        raise NetworkPickleError(f'{where}: init_kwargs and state_dict must be dicts.')
    module = _construct(cls, [], kwargs, where)
    state = entry['state_dict']
    if not any(key.startswith('heads.') for key in module.state_dict()):  # plugin heads (KD): resume-only
        state = {key: value for key, value in state.items() if not key.startswith('heads.')}
    _load_state_strict(module, state, where, kwargs)
    return module


@dataclasses.dataclass(frozen=True)
class _PersistentStub:
    """Inert stand-in for a pickled persistent object: its class name and attribute dict, nothing runnable."""

    class_name: str
    state: Dict[str, Any]


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals; every callable it hands out validates its input."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self.source = source
        self._allowed: Dict[Tuple[str, str], Any] = {
            ('torch_utils.persistence', '_reconstruct_persistent_obj'): self._persistent_obj,
            ('dnnlib.util', 'EasyDict'): dnnlib.util.EasyDict,
            ('collections', 'OrderedDict'): collections.OrderedDict,
            ('torch._utils', '_rebuild_tensor_v2'): self._rebuild_tensor,
            ('torch._utils', '_rebuild_parameter'): self._rebuild_parameter,
            ('torch.storage', '_load_from_bytes'): self._load_storage,
            ('numpy', 'dtype'): self._numpy_dtype,
            ('numpy.core.multiarray', 'scalar'): self._numpy_scalar,
            ('numpy._core.multiarray', 'scalar'): self._numpy_scalar,
        }

    def find_class(self, module: str, name: str) -> Any:
        """Return the allowed object for ``module.name``, or refuse the file."""
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith('dnnlib.tflib'):
            raise NetworkPickleError(f'{self.source}: TensorFlow StyleGAN pickles are not supported yet.')
        raise UnsafePickleError(
            f'{self.source}: refusing to load global {module}.{name}. The file is not a StyleGAN2-ADA '
            'network pickle, or it may be malicious; nothing in it was executed.'
        )

    def _fail(self, message: str) -> NetworkPickleError:
        """Return an error for malformed pickle content."""
        return NetworkPickleError(f'{self.source}: {message}; the file is damaged or not a network pickle.')

    def _persistent_obj(self, meta: Any) -> _PersistentStub:
        """Stand-in for the persistence reconstructor: keep the metadata, never run ``module_src``."""
        if not isinstance(meta, dict) or meta.get('type') != 'class':
            raise self._fail('unexpected persistent-object metadata')
        class_name, state = meta.get('class_name'), meta.get('state')
        if not isinstance(class_name, str) or not isinstance(state, dict):
            raise self._fail('persistent object without class_name or state')
        return _PersistentStub(class_name, state)

    def _rebuild_tensor(
        self, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, *rest: Any
    ) -> torch.Tensor:
        """Build a tensor view of a storage after checking that it stays inside the storage."""
        if not isinstance(storage, torch.storage.TypedStorage):
            raise self._fail(f'tensor built from a {type(storage).__name__} instead of a storage')
        if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)):
            raise self._fail('invalid tensor geometry')
        if not all(isinstance(n, int) and n >= 0 for n in (offset, *size, *stride)):
            raise self._fail('invalid tensor geometry')
        if all(size):
            end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
            if end > storage.size():
                raise self._fail(f'tensor of shape {list(size)} reaches past its storage')
        return torch._utils._rebuild_tensor_v2(
            storage, offset, size, stride, False, collections.OrderedDict()
        )

    def _rebuild_parameter(self, data: Any, requires_grad: Any, hooks: Any, *rest: Any) -> torch.Tensor:
        """Parameters are only needed for their values: return the tensor itself."""
        if not isinstance(data, torch.Tensor):
            raise self._fail('parameter without tensor data')
        return data

    def _load_storage(self, data: Any) -> torch.storage.TypedStorage:
        """Read a storage saved with legacy ``torch.save``, through torch's own weights-only loader."""
        if not isinstance(data, (bytes, bytearray)):
            raise self._fail('storage record is not bytes')
        storage = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
        if not isinstance(storage, torch.storage.TypedStorage):
            raise self._fail('storage record holds something other than a storage')
        return storage

    def _numpy_dtype(self, *args: Any) -> np.dtype:
        """Build a numpy dtype, refusing object dtypes."""
        if not args or not isinstance(args[0], str):
            raise self._fail('invalid numpy dtype record')
        dtype = np.dtype(*args)
        if dtype.hasobject:
            raise self._fail('numpy object dtypes are not allowed')
        return dtype

    def _numpy_scalar(self, dtype: Any, data: Any = None) -> np.generic:
        """Build a numpy scalar from its raw bytes (no object dtypes)."""
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
            raise self._fail('invalid numpy scalar record')
        if len(data) != dtype.itemsize:
            raise self._fail('numpy scalar of the wrong size')
        return np.frombuffer(data, dtype=dtype)[0]


def _unpickle_official(stream: BinaryIO, source: str) -> Any:
    """Run the restricted unpickler over ``stream``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch warns about TypedStorage, which legacy pickles use
            return _RestrictedUnpickler(stream, source).load()
    except NetworkPickleError:
        raise
    except _UNPICKLE_ERRORS as err:
        raise NetworkPickleError(
            f'{source}: not a readable network pickle or snapshot ({type(err).__name__}: {err}). '
            'Check that the file is complete and is a StyleGAN2-ADA pickle or a stylegan2-ada-kd snapshot.'
        ) from err


def _load_official(stream: BinaryIO, source: str) -> Dict[str, Any]:
    """Load an official StyleGAN2-ADA snapshot pickle into our classes."""
    raw = _unpickle_official(stream, source)
    if isinstance(raw, tuple) and len(raw) == 3:
        raise NetworkPickleError(
            f'{source}: TensorFlow StyleGAN pickles (G, D, Gs tuples) are not supported yet.'
        )
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(key), _PersistentStub) for key in NETWORK_KEYS
    ):
        raise NetworkPickleError(
            f'{source}: expected a StyleGAN2-ADA snapshot dict with networks {list(NETWORK_KEYS)}; '
            f'got {type(raw).__name__}.'
        )
    result: Dict[str, Any] = {
        'training_set_kwargs': _to_plain(
            raw.get('training_set_kwargs'), f'{source}: training_set_kwargs', error=NetworkPickleError
        ),
        'augment_pipe': None,
        'augment_pipe_kwargs': None,
        'augment_p': None,
    }
    for key in NETWORK_KEYS:
        result[key] = _build_official(raw[key], _OFFICIAL_CLASS_FOR_KEY[key], f'{source}: {key}')
    if raw.get('augment_pipe') is not None:
        result.update(_augment_info(raw['augment_pipe'], f'{source}: augment_pipe'))
    return result


def _stub_init_args(stub: _PersistentStub, where: str) -> Tuple[List[Any], Dict[str, Any]]:
    """Return the constructor arguments recorded in a stub, as plain data."""
    args = stub.state.get('_init_args', ())
    kwargs = stub.state.get('_init_kwargs', {})
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
        raise NetworkPickleError(
            f'{where}: the pickle does not record constructor arguments of {stub.class_name}.'
        )
    args = _to_plain(list(args), f'{where}._init_args', error=NetworkPickleError)
    return args, _to_plain(kwargs, f'{where}._init_kwargs', error=NetworkPickleError)


def _build_official(stub: Any, expected_class: str, where: str) -> torch.nn.Module:
    """Rebuild one of our networks from an official stub and copy its tensors in."""
    if not isinstance(stub, _PersistentStub) or stub.class_name != expected_class:
        found = getattr(stub, 'class_name', type(stub).__name__)
        raise NetworkPickleError(
            f'{where}: unsupported network class {found!r}; expected {expected_class!r}. '
            'Only StyleGAN2-ADA Generator/Discriminator pickles can be loaded.'
        )
    cls = _registry()[f'stylegan2_ada_kd.networks.{expected_class}']
    args, kwargs = _stub_init_args(stub, where)
    module = _construct(cls, args, kwargs, where)
    _load_state_strict(module, _collect_state_dict(stub, where), where, kwargs)
    return module


def _collect_state_dict(root: _PersistentStub, where: str) -> Dict[str, torch.Tensor]:
    """Gather the persistent parameters and buffers of a stub tree into a flat state_dict."""
    state_dict: Dict[str, torch.Tensor] = {}
    pending: List[Tuple[str, _PersistentStub]] = [('', root)]
    seen = set()
    while pending:
        prefix, node = pending.pop()
        if id(node) in seen:
            raise NetworkPickleError(f'{where}: module {prefix[:-1]!r} appears twice in the module tree.')
        seen.add(id(node))
        state = node.state
        skip = state.get('_non_persistent_buffers_set') or set()
        for group in ('_parameters', '_buffers'):
            for name, tensor in (state.get(group) or {}).items():
                if tensor is None or (group == '_buffers' and name in skip):
                    continue
                if not isinstance(tensor, torch.Tensor):
                    raise NetworkPickleError(f'{where}: {prefix}{name} is not a tensor.')
                state_dict[prefix + str(name)] = tensor
        for name, child in (state.get('_modules') or {}).items():
            if child is None:
                continue
            if not isinstance(child, _PersistentStub):
                raise NetworkPickleError(f'{where}: submodule {prefix}{name} is not a StyleGAN2-ADA module.')
            pending.append((f'{prefix}{name}.', child))
    return state_dict


def _augment_info(stub: Any, where: str) -> Dict[str, Any]:
    """Extract the constructor kwargs and the probability ``p`` of an official AugmentPipe stub."""
    if not isinstance(stub, _PersistentStub) or stub.class_name != 'AugmentPipe':
        found = getattr(stub, 'class_name', type(stub).__name__)
        raise NetworkPickleError(f'{where}: expected an AugmentPipe, found {found!r}.')
    _, kwargs = _stub_init_args(stub, where)
    p = (stub.state.get('_buffers') or {}).get('p')
    return {'augment_pipe_kwargs': kwargs, 'augment_p': float(p) if isinstance(p, torch.Tensor) else None}


def convert_network_pkl(
    source: PathLike, dest: Optional[PathLike] = None, state_dict_dir: Optional[PathLike] = None
) -> Dict[str, Any]:
    """Load ``source`` (path or URL, any supported format) and write it as our snapshot and/or state_dicts.

    Keys beyond the standard ones (e.g. ``augment_pipe_kwargs``, ``augment_p``) are kept as snapshot extras.
    Returns the loaded dict.
    """
    data = load_network_pkl(source)
    if dest is not None:
        extra = {key: value for key, value in data.items() if key not in _STANDARD_KEYS}
        nets = {key: data.get(key) for key in NETWORK_KEYS + ('augment_pipe',)}
        save_network_snapshot(dest, **nets, training_set_kwargs=data.get('training_set_kwargs'), extra=extra)
    if state_dict_dir is not None:
        export_state_dicts(data, state_dict_dir)
    return data
