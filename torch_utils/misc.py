"""Small tensor helpers shared by the networks, the training code and the metrics."""

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


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """Dataset images, uint8 in [0, 255] (any shape, e.g. ``[N, C, H, W]``) -> float32 in [-1, 1].

    Computed as ``x / 127.5 - 1`` in float32, the mapping the generator's output range is trained against.
    """
    return images.to(torch.float32) / 127.5 - 1


def unit_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator images, float in about [-1, 1] (any shape) -> uint8 in [0, 255], the inverse of
    :func:`uint8_to_unit` up to quantisation: ``x * 127.5 + 128`` clamped to [0, 255] and truncated."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
