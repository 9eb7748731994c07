"""Small tensor helpers shared by the networks and the training code."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def assert_shape(tensor: torch.Tensor, ref_shape: Sequence[int | None], name: str = 'tensor') -> None:
    """Raise ``ValueError`` unless ``tensor`` has ``len(ref_shape)`` dims matching ``ref_shape``.

    ``None`` in ``ref_shape`` matches any size. Sizes are compared as Python ints, so the check is
    cheap and also works while tracing.
    """
    if tensor.ndim != len(ref_shape):
        raise ValueError(
            f'{name}: expected {len(ref_shape)} dims {list(ref_shape)}, got {list(tensor.shape)}'
        )
    for size, ref in zip(tensor.shape, ref_shape):
        if ref is not None and int(size) != int(ref):
            raise ValueError(f'{name}: expected shape {list(ref_shape)}, got {list(tensor.shape)}')
