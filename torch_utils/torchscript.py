"""TorchScript files of frozen models (the metrics' detectors, KD teachers): loading them for fp32 compute,
and fp16 copies that halve their size for transport (a 83 MB Inception becomes 42 MB).

A half copy keeps every floating tensor rounded to fp16 and nothing else changes; :func:`load` turns such
tensors back into fp32, so the model computes in fp32 with fp16-rounded weights.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence torch.jit's deprecation notices (DeprecationWarning in torch 2.11, FutureWarning in 2.14)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        yield


def _jit_load(source: bytes | str | os.PathLike, map_location: str | torch.device) -> torch.jit.ScriptModule:
    with quiet_jit():
        src = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
        return torch.jit.load(src, map_location=map_location)


def is_half(module: torch.nn.Module) -> bool:
    """True when any floating parameter or buffer of ``module`` is fp16."""
    tensors = [*module.parameters(), *module.buffers()]
    return any(t.dtype == torch.float16 for t in tensors)


def load(
    source: bytes | str | os.PathLike, map_location: str | torch.device = 'cpu'
) -> torch.jit.ScriptModule:
    """``torch.jit.load`` (bytes or path), with fp16 parameters and buffers turned into fp32.

    Raises ``RuntimeError`` (torch's) for a file that is not TorchScript.
    """
    module = _jit_load(source, map_location)
    return module.float() if is_half(module) else module


def save_half_copy(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Write an fp16 copy of the TorchScript file ``src`` to ``dst``; returns its size in bytes."""
    module = _jit_load(src, 'cpu').half()
    with quiet_jit():
        torch.jit.save(module, os.fspath(dst))
    return os.path.getsize(dst)
