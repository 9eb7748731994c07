"""The discriminator's KD head h(.) of KD-DLGAN (Cui et al., CVPR 2023, Sec. 3.2-3.3).

A small MLP on D's penultimate feature (the epilogue's fc output) that predicts the teacher's
image embedding. It is a separate branch attached through ``Discriminator.attach_head``: D's logit
never reads it, and it lives in D's state_dict under ``heads.kd.*`` (saved, resumed, warm-started
fresh when a pickle lacks it).
"""

from __future__ import annotations

from typing import Optional

import torch

from stylegan2_ada_kd.networks.layers import FullyConnectedLayer
from torch_utils.misc import assert_shape

HEAD_NAME = 'kd'


class KDHead(torch.nn.Module):
    """MLP ``[N, in_features] -> [N, embed_dim]``: ``num_layers`` equalised-lr FC layers, lrelu between."""

    def __init__(
        self,
        in_features: int,  # Width of D's penultimate feature.
        embed_dim: int,  # Teacher embedding width E.
        hidden_features: Optional[int] = None,  # Hidden width; None = max(in_features, embed_dim).
        num_layers: int = 2,  # Number of FC layers (>= 1).
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f'KDHead needs at least one layer; got num_layers={num_layers}')
        self.in_features = in_features
        self.embed_dim = embed_dim
        hidden = hidden_features or max(in_features, embed_dim)
        widths = [in_features] + [hidden] * (num_layers - 1) + [embed_dim]
        self.num_layers = num_layers
        for idx in range(num_layers):
            act = 'lrelu' if idx < num_layers - 1 else 'linear'
            setattr(self, f'fc{idx}', FullyConnectedLayer(widths[idx], widths[idx + 1], activation=act))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Map D's feature ``[N, in_features]`` (fp32) to a predicted embedding ``[N, embed_dim]``."""
        assert_shape(h, [None, self.in_features], 'KDHead input')
        for idx in range(self.num_layers):
            h = getattr(self, f'fc{idx}')(h)
        return h


def attach_kd_head(D: torch.nn.Module, embed_dim: int) -> KDHead:
    """Attach a fresh :class:`KDHead` to ``D`` (or return the one already there, if it fits)."""
    if HEAD_NAME in D.heads:
        head = D.heads[HEAD_NAME]
        if head.embed_dim != embed_dim or head.in_features != D.feature_dim:
            raise ValueError(
                f'D already has a KD head for embed_dim={head.embed_dim}, but the teacher has {embed_dim}'
            )
        return head
    head = KDHead(D.feature_dim, embed_dim)
    device = next(D.parameters()).device
    D.attach_head(HEAD_NAME, head.to(device))
    head.requires_grad_(any(p.requires_grad for p in D.parameters()))
    return head
