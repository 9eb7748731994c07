"""StyleGAN2 discriminator (Karras et al., CVPR 2020, Sec. 4.1, "resnet" D by default) with
minibatch standard deviation (ProGAN, Sec. 3), projection conditioning (Miyato & Koyama 2018),
Freeze-D (Mo et al. 2020) and a feature hook for plugin heads (KD-DLGAN, Sec. 3)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stylegan2_ada_kd.networks.layers import DEFAULT_FILTER, Conv2dLayer, FullyConnectedLayer, block_dtype
from stylegan2_ada_kd.networks.mapping import MappingNetwork
from stylegan2_ada_kd.networks.synthesis import channels_per_resolution, fp16_min_resolution
from torch_utils.misc import assert_shape
from torch_utils.ops.upfirdn2d import downsample2d, setup_filter

ARCHITECTURES = ('orig', 'skip', 'resnet')


class DiscriminatorBlock(torch.nn.Module):
    """One resolution of D: (fromrgb) -> conv0 -> conv1 with 2x down (+ 1x1 residual skip)."""

    def __init__(
        self,
        in_channels: int,  # Input channels; 0 = first block (reads the image).
        tmp_channels: int,  # Channels inside the block.
        out_channels: int,  # Output channels.
        resolution: int,  # Input resolution of this block.
        img_channels: int,  # Image channels.
        first_layer_idx: int,  # Index of this block's first layer, for Freeze-D.
        architecture: str = 'resnet',  # 'orig', 'skip' or 'resnet'.
        activation: str = 'lrelu',  # Activation name.
        resample_filter: Sequence[float] = DEFAULT_FILTER,  # FIR taps.
        conv_clamp: float | None = None,  # Activation clamp; None = no clamp.
        use_fp16: bool = False,  # Run this block in fp16.
        fp16_channels_last: bool = False,  # channels_last memory format for fp16.
        freeze_layers: int = 0,  # Layers with index < freeze_layers are frozen (Freeze-D).
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f'architecture must be one of {ARCHITECTURES}; got {architecture!r}')
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', setup_filter(list(resample_filter)))
        self.num_layers = 0

        def layer(*args, **kwargs) -> Conv2dLayer:
            trainable = first_layer_idx + self.num_layers >= freeze_layers
            self.num_layers += 1
            return Conv2dLayer(*args, trainable=trainable, channels_last=self.channels_last, **kwargs)

        act = dict(activation=activation, conv_clamp=conv_clamp)
        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = layer(img_channels, tmp_channels, kernel_size=1, **act)
        self.conv0 = layer(tmp_channels, tmp_channels, kernel_size=3, **act)
        self.conv1 = layer(
            tmp_channels, out_channels, kernel_size=3, down=2, resample_filter=resample_filter, **act
        )
        if architecture == 'resnet':
            self.skip = layer(
                tmp_channels, out_channels, kernel_size=1, bias=False, down=2, resample_filter=resample_filter
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Map ``x [N, in_channels, R, R]`` (None in the first block) and ``img [N, img_channels, R, R]``
        to ``[N, out_channels, R/2, R/2]`` and the downsampled image (skip) or None."""
        dtype = block_dtype(self.use_fp16, force_fp32, (x if x is not None else img).device)
        memory_format = (
            torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        )
        if x is not None:
            assert_shape(
                x, [None, self.in_channels, self.resolution, self.resolution], 'DiscriminatorBlock x'
            )
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == 'skip':
            assert_shape(
                img, [None, self.img_channels, self.resolution, self.resolution], 'DiscriminatorBlock img'
            )
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None
        if self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class MinibatchStdLayer(torch.nn.Module):
    """Append the standard deviation across groups of samples as extra feature maps (ProGAN, Sec. 3).

    Samples ``i`` and ``j`` share a group when ``i % (N / G) == j % (N / G)``.
    """

    def __init__(self, group_size: int | None, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[N, C, H, W]`` to ``[N, C + num_channels, H, W]``."""
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        if n % g != 0:
            raise ValueError(
                f'minibatch-stddev group size {g} does not divide the per-GPU batch {n}; '
                'choose a batch that is a multiple of mbstd_group_size'
            )
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, N/G, F, C/F, H, W]
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over the group
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [N/G, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        """Summary line for ``print(module)``."""
        return f'group_size={self.group_size}, num_channels={self.num_channels}'


class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 head of D: minibatch-stddev -> conv -> fc (penultimate feature) -> out."""

    def __init__(
        self,
        in_channels: int,  # Channels at 4x4.
        cmap_dim: int,  # Projection width; 0 = unconditional (one logit).
        resolution: int,  # Resolution (4).
        img_channels: int,  # Image channels.
        architecture: str = 'resnet',  # 'orig', 'skip' or 'resnet'.
        mbstd_group_size: int | None = 4,  # Minibatch-stddev group; None = whole batch.
        mbstd_num_channels: int = 1,  # Minibatch-stddev features; 0 = disable.
        activation: str = 'lrelu',  # Activation name.
        conv_clamp: float | None = None,  # Activation clamp; None = no clamp.
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = (
            MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        )
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels,
            in_channels,
            kernel_size=3,
            activation=activation,
            conv_clamp=conv_clamp,
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def features(self, x: torch.Tensor, img: torch.Tensor | None) -> torch.Tensor:
        """Map ``[N, in_channels, 4, 4]`` features to the penultimate feature ``[N, in_channels]`` (fp32)."""
        assert_shape(x, [None, self.in_channels, self.resolution, self.resolution], 'epilogue x')
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        return self.fc(x.flatten(1))

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None) -> torch.Tensor:
        """Map ``[N, in_channels, 4, 4]`` features (and ``cmap [N, cmap_dim]``) to logits ``[N, 1]``."""
        return self.logits(self.features(x, img), cmap)

    def logits(self, h: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        """Map the penultimate feature ``[N, in_channels]`` to logits ``[N, 1]``."""
        x = self.out(h)
        if self.cmap_dim > 0:
            assert_shape(cmap, [None, self.cmap_dim], 'cmap')
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x


class Discriminator(torch.nn.Module):
    """StyleGAN2 discriminator; constructor kwargs match StyleGAN2-ADA's ``Discriminator``.

    Plugin hook: :meth:`attach_head` registers a module in ``self.heads`` that reads the
    penultimate feature ``h = b4.fc(...)`` ``[N, C4]``; ``forward(..., return_features=True)``
    returns it together with every head's output. Heads never feed the logit, and with no heads
    attached the state_dict is exactly the reference one.
    """

    def __init__(
        self,
        c_dim: int,  # Conditioning label width; 0 = unconditional.
        img_resolution: int,  # Input resolution.
        img_channels: int,  # Input channels.
        architecture: str = 'resnet',  # 'orig', 'skip' or 'resnet'.
        channel_base: int = 32768,  # Channels at resolution r are min(channel_base // r, channel_max).
        channel_max: int = 512,  # Maximum channels.
        num_fp16_res: int = 0,  # Run the top this-many resolutions in fp16.
        conv_clamp: float | None = None,  # Activation clamp; None = no clamp.
        cmap_dim: int | None = None,  # Projection width; None = channels at 4x4.
        block_kwargs: dict | None = None,  # DiscriminatorBlock options (freeze_layers, ...).
        mapping_kwargs: dict | None = None,  # Label MappingNetwork options.
        epilogue_kwargs: dict | None = None,  # DiscriminatorEpilogue options (mbstd_group_size, ...).
    ) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f'img_resolution must be a power of two >= 4; got {img_resolution}')
        block_kwargs, mapping_kwargs, epilogue_kwargs = (
            dict(k or {}) for k in (block_kwargs, mapping_kwargs, epilogue_kwargs)
        )
        self.init_kwargs = dict(
            c_dim=c_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            architecture=architecture,
            channel_base=channel_base,
            channel_max=channel_max,
            num_fp16_res=num_fp16_res,
            conv_clamp=conv_clamp,
            cmap_dim=cmap_dim,
            block_kwargs=block_kwargs,
            mapping_kwargs=mapping_kwargs,
            epilogue_kwargs=epilogue_kwargs,
        )
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(int(np.log2(img_resolution)), 2, -1)]
        channels = channels_per_resolution(channel_base, channel_max, self.block_resolutions + [4])
        fp16_res = fp16_min_resolution(img_resolution, num_fp16_res)
        cmap_dim = channels[4] if cmap_dim is None else cmap_dim
        if c_dim == 0:
            cmap_dim = 0
        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0,
                channels[res],
                channels[res // 2],
                resolution=res,
                first_layer_idx=layer_idx,
                use_fp16=(res >= fp16_res),
                **block_kwargs,
                **common,
            )
            setattr(self, f'b{res}', block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs
            )
        self.b4 = DiscriminatorEpilogue(
            channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common
        )
        self.heads = torch.nn.ModuleDict()

    @property
    def feature_dim(self) -> int:
        """Width of the penultimate feature that heads receive."""
        return self.b4.in_channels

    def attach_head(self, name: str, head: torch.nn.Module) -> None:
        """Register ``head``, a module mapping ``[N, feature_dim]`` to any output, kept in ``self.heads``."""
        if name in self.heads:
            raise ValueError(f'a head named {name!r} is already attached')
        self.heads[name] = head

    def forward(
        self,
        img: torch.Tensor,  # Images [N, img_channels, R, R] in [-1, 1] (any float dtype).
        c: torch.Tensor | None,  # Labels [N, c_dim] (ignored when unconditional).
        return_features: bool = False,  # Also return the features (see below).
        force_fp32: bool = False,  # Run every block in fp32.
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Score images ``[N, img_channels, R, R]`` in [-1, 1].

        Returns logits ``[N, 1]`` float32, or ``(logits, features)`` with ``return_features``: features are
        ``{'fc': h [N, feature_dim], <head name>: head(h), ...}``.
        """
        assert_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution], 'D img')
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, force_fp32=force_fp32)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        h = self.b4.features(x, img)
        logits = self.b4.logits(h, cmap)
        if not return_features:
            return logits
        features = {'fc': h}
        features.update({name: head(h) for name, head in self.heads.items()})
        return logits, features
