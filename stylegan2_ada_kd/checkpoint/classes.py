"""The network classes that checkpoint files may rebuild (an allow-list), the errors of the loaders, and
the plain-data and strict-loading helpers that our snapshots, the official-pickle reader and exact resume
share."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

NETWORK_KEYS = ('G', 'D', 'G_ema')
# Registered on first use of the registry, with the classes the plugin families declare.
CORE_CLASSES = ('stylegan2_ada_kd.networks.Generator', 'stylegan2_ada_kd.networks.Discriminator')


class NetworkPickleError(ValueError):
    """A network file could not be loaded: unknown format, unsupported content or an architecture mismatch."""


class UnsafePickleError(NetworkPickleError):
    """A pickle refers to a global (function or class) that is not on the loader's allow-list."""


_NETWORK_CLASSES: dict[str, type] = {}
_defaults_registered = False


def register_network_class(name: str, cls: type) -> None:
    """Let snapshots rebuild ``cls`` (a ``torch.nn.Module`` subclass) from the stored class name ``name``.

    Re-registering the same class is a no-op; binding an already used name to another class is an error.
    """
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise TypeError(f'register_network_class({name!r}): {cls!r} is not a torch.nn.Module subclass.')
    existing = registry().get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f'register_network_class: {name!r} is already bound to {existing!r}; pick another.')
    _NETWORK_CLASSES[name] = cls


def registry() -> dict[str, type]:
    """Return the class registry, adding on first use G, D (:data:`CORE_CLASSES`) and the classes the
    plugin families declare (``plugins.snapshot_classes()``: the augment pipes)."""
    global _defaults_registered
    if not _defaults_registered:
        _defaults_registered = True
        from stylegan2_ada_kd import plugins

        for name, path in {**{name: name for name in CORE_CLASSES}, **plugins.snapshot_classes()}.items():
            module_name, class_name = path.rsplit('.', 1)
            _NETWORK_CLASSES.setdefault(name, getattr(importlib.import_module(module_name), class_name))
    return _NETWORK_CLASSES


def registered_name(module: torch.nn.Module, where: str) -> str:
    """Return the registry name of ``type(module)``, or raise an error that says how to register it."""
    for name, cls in registry().items():
        if type(module) is cls:
            return name
    raise TypeError(
        f'{where}: class {type(module).__module__}.{type(module).__qualname__} is not registered for '
        'snapshots; call stylegan2_ada_kd.checkpoint.register_network_class(name, cls) first.'
    )


def to_plain(value: Any, where: str, allow_tensors: bool = False, error: type = TypeError) -> Any:
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
            out[key] = to_plain(item, f'{where}.{key}', allow_tensors, error)
        return out
    if isinstance(value, (list, tuple)):
        items = [to_plain(item, f'{where}[{i}]', allow_tensors, error) for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise error(
        f'{where}: a value of type {type(value).__name__} cannot be stored; use dicts, lists, numbers, text'
        + (', None or tensors.' if allow_tensors else ' or None.')
    )


def preview(keys: Iterable[str], limit: int = 6) -> str:
    """Format the first few keys of a list for an error message."""
    keys = list(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys)} in total)' if len(keys) > limit else '')


def construct(cls: type, args: list[Any], kwargs: dict[str, Any], where: str) -> torch.nn.Module:
    """Instantiate ``cls(*args, **kwargs)``, turning constructor errors into a readable message."""
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError, KeyError, AssertionError) as err:
        raise NetworkPickleError(
            f'{where}: cannot build {cls.__name__} from args {args} and kwargs {kwargs}: {err}'
        ) from err


def load_state_strict(
    module: torch.nn.Module, state: dict[str, Any], where: str, kwargs: dict[str, Any]
) -> None:
    """Load ``state`` into ``module`` with ``strict=True``; on failure raise :class:`NetworkPickleError`
    explaining every key or shape mismatch.

    torch's loader runs each module's own ``_load_from_state_dict``, so a class may accept the state of
    its older versions (DiffAugment drops the ``p`` it no longer has).
    """
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise NetworkPickleError(
            f'{where}: the stored weights do not fit {type(module).__name__}(**{kwargs}): '
            + (_mismatches(module, state) or str(err).replace('\n', ' '))
            + '. The file was probably written by a different architecture or version.'
        ) from err


def _mismatches(module: torch.nn.Module, state: dict[str, Any]) -> str:
    """The missing, unexpected, non-tensor and wrong-shape keys of ``state`` for ``module``, as text."""
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
    return '; '.join(
        f'{len(items)} {label} key(s): {preview(items)}' for label, items in found.items() if items
    )
