"""Reading official StyleGAN2-ADA pickles without running them.

Those pickles embed their classes' source code and would execute it under a plain ``pickle.load``. A
restricted unpickler accepts a short list of globals, turns each embedded object into an inert stub (never
running its source) and copies the tensors into our classes.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import warnings
from typing import Any, BinaryIO

import numpy as np
import torch

import dnnlib
from stylegan2_ada_kd.checkpoint.classes import (
    NETWORK_KEYS,
    NetworkPickleError,
    UnsafePickleError,
    construct,
    load_state_strict,
    registry,
    to_plain,
)

_UNPICKLE_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, TypeError, AttributeError)
_OFFICIAL_CLASS_FOR_KEY = {'G': 'Generator', 'G_ema': 'Generator', 'D': 'Discriminator'}


@dataclasses.dataclass(frozen=True)
class _PersistentStub:
    """Inert stand-in for a pickled persistent object: its class name and attribute dict, nothing runnable."""

    class_name: str
    state: dict[str, Any]


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals; every callable it hands out validates its input."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self.source = source
        self._allowed: dict[tuple[str, str], Any] = {
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
            return RestrictedUnpickler(stream, source).load()
    except NetworkPickleError:
        raise
    except _UNPICKLE_ERRORS as err:
        raise NetworkPickleError(
            f'{source}: not a readable network pickle or snapshot ({type(err).__name__}: {err}). '
            'Check that the file is complete and is a StyleGAN2-ADA pickle or a stylegan2-ada-kd snapshot.'
        ) from err


def load_official(stream: BinaryIO, source: str) -> dict[str, Any]:
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
    result: dict[str, Any] = {
        'training_set_kwargs': to_plain(
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


def _stub_init_args(stub: _PersistentStub, where: str) -> tuple[list[Any], dict[str, Any]]:
    """Return the constructor arguments recorded in a stub, as plain data."""
    args = stub.state.get('_init_args', ())
    kwargs = stub.state.get('_init_kwargs', {})
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
        raise NetworkPickleError(
            f'{where}: the pickle does not record constructor arguments of {stub.class_name}.'
        )
    args = to_plain(list(args), f'{where}._init_args', error=NetworkPickleError)
    return args, to_plain(kwargs, f'{where}._init_kwargs', error=NetworkPickleError)


def _build_official(stub: Any, expected_class: str, where: str) -> torch.nn.Module:
    """Rebuild one of our networks from an official stub and copy its tensors in."""
    if not isinstance(stub, _PersistentStub) or stub.class_name != expected_class:
        found = getattr(stub, 'class_name', type(stub).__name__)
        raise NetworkPickleError(
            f'{where}: unsupported network class {found!r}; expected {expected_class!r}. '
            'Only StyleGAN2-ADA Generator/Discriminator pickles can be loaded.'
        )
    cls = registry()[f'stylegan2_ada_kd.networks.{expected_class}']
    args, kwargs = _stub_init_args(stub, where)
    module = construct(cls, args, kwargs, where)
    load_state_strict(module, _collect_state_dict(stub, where), where, kwargs)
    return module


def _collect_state_dict(root: _PersistentStub, where: str) -> dict[str, torch.Tensor]:
    """Gather the persistent parameters and buffers of a stub tree into a flat state_dict."""
    state_dict: dict[str, torch.Tensor] = {}
    pending: list[tuple[str, _PersistentStub]] = [('', root)]
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


def _augment_info(stub: Any, where: str) -> dict[str, Any]:
    """Extract the constructor kwargs and the probability ``p`` of an official AugmentPipe stub."""
    if not isinstance(stub, _PersistentStub) or stub.class_name != 'AugmentPipe':
        found = getattr(stub, 'class_name', type(stub).__name__)
        raise NetworkPickleError(f'{where}: expected an AugmentPipe, found {found!r}.')
    _, kwargs = _stub_init_args(stub, where)
    p = (stub.state.get('_buffers') or {}).get('p')
    return {'augment_pipe_kwargs': kwargs, 'augment_p': float(p) if isinstance(p, torch.Tensor) else None}
