"""The discriminator's KD head h(.) of KD-DLGAN (Cui et al., CVPR 2023, Sec. 3.2-3.3).

A small MLP on D's penultimate feature (the epilogue's fc output) that predicts the teacher's
image embedding. It is a separate branch attached through ``Discriminator.attach_head``: D's logit
never reads it, and it lives in D's state_dict under ``heads.kd.*`` (saved, resumed, warm-started
fresh when a pickle lacks it).

Two shapes, one per ``--kd-variant``: ``'paper'`` is C -> max(C, E) -> E with lrelu between;
``'official'`` is the released code's two linear layers C -> 1024 -> E with no activation between.
"""

from __future__ import annotations

import torch

from stylegan2_ada_kd.kd.variants import check_variant
from stylegan2_ada_kd.networks.layers import FullyConnectedLayer
from torch_utils.misc import assert_shape

HEAD_NAME = 'kd'
# Per variant: hidden width (None = max(C, E)) and the activation between the layers.
HEAD_CONFIGS: dict[str, dict] = {
    'paper': dict(hidden_features=None, activation='lrelu'),
    'official': dict(hidden_features=1024, activation='linear'),
}


class KDHead(torch.nn.Module):
    """MLP ``[N, in_features] -> [N, embed_dim]``: ``num_layers`` equalised-lr FC layers, ``activation``
    between them (none after the last)."""

    def __init__(
        self,
        in_features: int,  # Width of D's penultimate feature.
        embed_dim: int,  # Teacher embedding width E.
        hidden_features: int | None = None,  # Hidden width; None = max(in_features, embed_dim).
        num_layers: int = 2,  # Number of FC layers (>= 1).
        activation: str = 'lrelu',  # Between layers: 'lrelu', or 'linear' (none: an affine map).
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f'KDHead needs at least one layer; got num_layers={num_layers}')
        self.in_features = in_features
        self.embed_dim = embed_dim
        self.hidden_features = hidden_features or max(in_features, embed_dim)
        self.activation = activation
        widths = [in_features] + [self.hidden_features] * (num_layers - 1) + [embed_dim]
        self.num_layers = num_layers
        for idx in range(num_layers):
            act = activation if idx < num_layers - 1 else 'linear'
            setattr(self, f'fc{idx}', FullyConnectedLayer(widths[idx], widths[idx + 1], activation=act))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Map D's feature ``[N, in_features]`` (fp32) to a predicted embedding ``[N, embed_dim]``."""
        assert_shape(h, [None, self.in_features], 'KDHead input')
        for idx in range(self.num_layers):
            h = getattr(self, f'fc{idx}')(h)
        return h


def make_kd_head(in_features: int, embed_dim: int, variant: str = 'paper') -> KDHead:
    """A fresh :class:`KDHead` of the shape ``variant`` uses (see :data:`HEAD_CONFIGS`)."""
    return KDHead(in_features, embed_dim, **HEAD_CONFIGS[check_variant(variant)])


def attach_kd_head(D: torch.nn.Module, embed_dim: int, variant: str = 'paper') -> KDHead:
    """Attach a fresh ``variant`` :class:`KDHead` to ``D`` (or return the one already there, if it fits).

    Call it before D's optimizer is built and before D is broadcast across processes (the loss
    constructor does, and the training loop builds the loss first): a head attached later is not trained.
    """
    want = make_kd_head(D.feature_dim, embed_dim, variant)
    if HEAD_NAME in D.heads:
        head = D.heads[HEAD_NAME]
        shape = lambda m: (m.in_features, m.embed_dim, m.hidden_features, m.activation)
        if shape(head) != shape(want):
            raise ValueError(
                f'D already has a KD head (in, E, hidden, activation) = {shape(head)}, but the {variant} '
                f'variant with this teacher needs {shape(want)}'
            )
        return head
    trainable = any(p.requires_grad for p in D.parameters())  # before the head adds its own
    D.attach_head(HEAD_NAME, want.to(next(D.parameters()).device).requires_grad_(trainable))
    return want
