"""The mapping network z -> w of StyleGAN (Karras et al. 2019, Sec. 2) with StyleGAN2-ADA's
class conditioning, w_avg tracking and the truncation trick (Sec. 5 of StyleGAN; cutoff as in
StyleGAN2-ADA). The discriminator reuses it, without z and w_avg, to embed labels for its
projection output (Miyato & Koyama 2018)."""

from __future__ import annotations

import torch

from stylegan2_ada_kd.networks.layers import FullyConnectedLayer, normalize_2nd_moment
from torch_utils.misc import assert_shape


class MappingNetwork(torch.nn.Module):
    """An MLP from latent ``z`` and label ``c`` to ``num_ws`` copies of the intermediate latent ``w``."""

    def __init__(
        self,
        z_dim: int,  # Latent z width; 0 = no latent (discriminator label mapping).
        c_dim: int,  # Conditioning label width; 0 = unconditional.
        w_dim: int,  # Output w width.
        num_ws: int | None,  # Number of w copies to broadcast to; None = return [N, w_dim].
        num_layers: int = 8,  # Number of FC layers.
        embed_features: int | None = None,  # Label embedding width; None = w_dim.
        layer_features: int | None = None,  # Hidden width; None = w_dim.
        activation: str = 'lrelu',  # Activation of the FC layers.
        lr_multiplier: float = 0.01,  # Learning-rate multiplier of the FC layers.
        w_avg_beta: float | None = 0.995,  # Decay of the running mean of w; None = no tracking.
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if embed_features is None else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        if c_dim == 0:
            embed_features = 0
        widths = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                widths[idx], widths[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f'fc{idx}', layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def _embed_inputs(self, z: torch.Tensor | None, c: torch.Tensor | None) -> torch.Tensor:
        """Normalise z and the label embedding and concatenate them: ``[N, z_dim + embed]``."""
        parts = []
        if self.z_dim > 0:
            assert_shape(z, [None, self.z_dim], 'z')
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            assert_shape(c, [None, self.c_dim], 'c')
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(
        self,
        z: torch.Tensor | None,  # Standard-normal latents [N, z_dim] (ignored when z_dim == 0).
        c: torch.Tensor | None,  # Labels [N, c_dim], one-hot for classes (ignored when c_dim == 0).
        truncation_psi: float = 1,  # Interpolate from w_avg towards w by this factor; 1 = off.
        truncation_cutoff: int | None = None,  # Truncate only the first this-many ws; None = all.
        skip_w_avg_update: bool = False,  # Do not update w_avg (style-mixing second calls).
    ) -> torch.Tensor:
        """Map latents ``[N, z_dim]`` and labels ``[N, c_dim]`` to w.

        Returns ``[N, num_ws, w_dim]`` float32, or ``[N, w_dim]`` when ``num_ws`` is None.
        """
        x = self._embed_inputs(z, c)
        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError('truncation needs w_avg tracking (w_avg_beta is None)')
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        """Summary line for ``print(module)``."""
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}'
