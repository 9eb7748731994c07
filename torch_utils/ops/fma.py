"""Fused multiply-add ``a * b + c`` with broadcasting (used for demodulation + noise)."""

from __future__ import annotations

import torch


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Return ``a * b + c``; the three tensors broadcast, e.g. ``[N, C, H, W] * [N, C, 1, 1] + [N, 1, H, W]``.

    Autograd reduces each gradient to its operand's shape, to any order.
    """
    return torch.addcmul(c, a, b)
