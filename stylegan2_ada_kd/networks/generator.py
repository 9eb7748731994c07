"""The StyleGAN2 generator: mapping network followed by synthesis network."""

from __future__ import annotations

import torch

from stylegan2_ada_kd.networks.mapping import MappingNetwork
from stylegan2_ada_kd.networks.synthesis import SynthesisNetwork
from torch_utils.misc import assert_shape


class Generator(torch.nn.Module):
    """G(z, c) = synthesis(mapping(z, c)); constructor kwargs match StyleGAN2-ADA's ``Generator``."""

    def __init__(
        self,
        z_dim: int,  # Latent z width.
        c_dim: int,  # Conditioning label width; 0 = unconditional.
        w_dim: int,  # Intermediate latent w width.
        img_resolution: int,  # Output resolution.
        img_channels: int,  # Output channels.
        mapping_kwargs: dict | None = None,  # MappingNetwork options (num_layers, lr_multiplier, ...).
        synthesis_kwargs: dict | None = None,  # SynthesisNetwork options (channel_base, ...).
    ) -> None:
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = dict(
            z_dim=z_dim,
            c_dim=c_dim,
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            mapping_kwargs=mapping_kwargs,
            synthesis_kwargs=synthesis_kwargs,
        )
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs
        )

    def forward(
        self,
        z: torch.Tensor,  # Standard-normal latents [N, z_dim].
        c: torch.Tensor | None,  # Labels [N, c_dim] ([N, 0] or None when unconditional).
        truncation_psi: float = 1,  # Truncation strength; 1 = off.
        truncation_cutoff: int | None = None,  # Truncate only the first this-many ws; None = all.
        **synthesis_kwargs,  # noise_mode ('random', 'const', 'none'), force_fp32, fused_modconv.
    ) -> torch.Tensor:
        """Generate images from latents ``[N, z_dim]``.

        Returns ``[N, img_channels, img_resolution, img_resolution]`` float32 images in about [-1, 1].
        """
        assert_shape(z, [None, self.z_dim], 'z')
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)
