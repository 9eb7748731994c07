"""StyleGAN2 synthesis network and generator (Karras et al., CVPR 2020).

Styled convolutions with demodulation (Sec. 2.2), per-pixel noise inputs (StyleGAN Sec. 2),
the skip/resnet/orig output architectures (Sec. 4.1, Fig. 7) and StyleGAN2-ADA's mixed precision
for the highest resolutions with activation clamping (ADA paper, Appendix D.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stylegan2_ada_kd.networks.layers import (
    DEFAULT_FILTER,
    Conv2dLayer,
    FullyConnectedLayer,
    block_dtype,
    modulated_conv2d,
)
from torch_utils.misc import assert_shape
from torch_utils.ops.bias_act import bias_act, get_activation
from torch_utils.ops.upfirdn2d import setup_filter, upsample2d

NOISE_MODES = ('random', 'const', 'none')


def channels_per_resolution(channel_base: int, channel_max: int, resolutions: Sequence[int]) -> dict:
    """Feature maps at each resolution: ``min(channel_base // res, channel_max)``."""
    return {res: min(channel_base // res, channel_max) for res in resolutions}


def fp16_min_resolution(img_resolution: int, num_fp16_res: int) -> int:
    """Lowest resolution that runs in fp16 when the top ``num_fp16_res`` resolutions do (at least 8)."""
    return max(2 ** (int(np.log2(img_resolution)) + 1 - num_fp16_res), 8)


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution + noise + bias + activation (one "style block" of StyleGAN2)."""

    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_channels: int,  # Output channels.
        w_dim: int,  # Width of w.
        resolution: int,  # Output resolution (size of the constant noise map).
        kernel_size: int = 3,  # Kernel width.
        up: int = 1,  # Upsampling factor (1 or 2).
        use_noise: bool = True,  # Add per-pixel noise.
        activation: str = 'lrelu',  # Activation name.
        resample_filter: Sequence[float] = DEFAULT_FILTER,  # FIR taps for upsampling.
        conv_clamp: float | None = None,  # Clamp activations to +-conv_clamp; None = no clamp.
        channels_last: bool = False,  # Store the weight in channels_last memory format.
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = get_activation(activation).def_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        self.weight = torch.nn.Parameter(weight.to(memory_format=memory_format))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def _noise(self, x: torch.Tensor, noise_mode: str) -> torch.Tensor | None:
        """Noise image ``[N, 1, res, res]`` (random) or ``[res, res]`` (const), scaled, or None."""
        if not self.use_noise or noise_mode == 'none':
            return None
        if noise_mode == 'random':
            shape = [x.shape[0], 1, self.resolution, self.resolution]
            return torch.randn(shape, device=x.device) * self.noise_strength
        return self.noise_const * self.noise_strength

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = 'random',
        fused_modconv: bool = True,
        gain: float = 1,
    ) -> torch.Tensor:
        """Map ``[N, in_channels, R/up, R/up]`` and ``w [N, w_dim]`` to ``[N, out_channels, R, R]``."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f'noise_mode must be one of {NOISE_MODES}; got {noise_mode!r}')
        in_res = self.resolution // self.up
        assert_shape(x, [None, self.in_channels, in_res, in_res], 'SynthesisLayer input')
        styles = self.affine(w)
        x = modulated_conv2d(
            x=x,
            weight=self.weight,
            styles=styles,
            noise=self._noise(x, noise_mode),
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=(self.up == 1),
            fused_modconv=fused_modconv,
        )
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(
            x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=act_clamp
        )


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation."""

    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_channels: int,  # Image channels.
        w_dim: int,  # Width of w.
        kernel_size: int = 1,  # Kernel width.
        conv_clamp: float | None = None,  # Clamp the output to +-conv_clamp; None = no clamp.
        channels_last: bool = False,  # Store the weight in channels_last memory format.
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        self.weight = torch.nn.Parameter(weight.to(memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        """Map ``[N, in_channels, H, W]`` and ``w [N, w_dim]`` to ``[N, img_channels, H, W]``."""
        assert_shape(x, [None, self.in_channels, None, None], 'ToRGBLayer input')
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(
            x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv
        )
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: (const | 2x up conv0) -> conv1 -> optional ToRGB."""

    def __init__(
        self,
        in_channels: int,  # Input channels; 0 = first block, starts from a learned constant.
        out_channels: int,  # Output channels.
        w_dim: int,  # Width of w.
        resolution: int,  # Resolution of this block.
        img_channels: int,  # Image channels.
        is_last: bool,  # Last block (always has ToRGB).
        architecture: str = 'skip',  # 'orig', 'skip' or 'resnet'.
        resample_filter: Sequence[float] = DEFAULT_FILTER,  # FIR taps.
        conv_clamp: float | None = None,  # Activation clamp; None = no clamp.
        use_fp16: bool = False,  # Run this block in fp16.
        fp16_channels_last: bool = False,  # channels_last memory format for fp16.
        **layer_kwargs,  # Passed on to SynthesisLayer (use_noise, activation, kernel_size).
    ) -> None:
        super().__init__()
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet'; got {architecture!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', setup_filter(list(resample_filter)))
        common = dict(conv_clamp=conv_clamp, channels_last=self.channels_last)
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim,
                resolution,
                up=2,
                resample_filter=resample_filter,
                **common,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **common, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, **common)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(
                in_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                up=2,
                resample_filter=resample_filter,
                channels_last=self.channels_last,
            )

    def forward(
        self,
        x: torch.Tensor | None,  # Features [N, in_channels, R/2, R/2]; None for the first block.
        img: torch.Tensor | None,  # Float32 running image [N, img_channels, R/2, R/2] (skip), or None.
        ws: torch.Tensor,  # [N, num_conv + num_torgb, w_dim].
        force_fp32: bool = False,  # Run in fp32 even if the block is fp16.
        fused_modconv: bool | None = None,  # None = fused at inference when fp32 or batch 1, not in training.
        noise_mode: str = 'random',  # 'random', 'const' or 'none'.
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the block on features ``[N, in_channels, R/2, R/2]``.

        Returns features ``[N, out_channels, R, R]`` and the image ``[N, img_channels, R, R]`` (or None).
        """
        assert_shape(ws, [None, self.num_conv + self.num_torgb, None], 'SynthesisBlock ws')
        dtype = block_dtype(self.use_fp16, force_fp32, ws.device)
        memory_format = (
            torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        )
        if fused_modconv is None:
            fused_modconv = (not self.training) and (dtype == torch.float32 or ws.shape[0] == 1)
        w_iter = iter(ws.unbind(dim=1))
        layer_kw = dict(fused_modconv=fused_modconv, noise_mode=noise_mode)

        if self.in_channels == 0:
            x = (
                self.const.to(dtype=dtype, memory_format=memory_format)
                .unsqueeze(0)
                .repeat([ws.shape[0], 1, 1, 1])
            )
            x = self.conv1(x, next(w_iter), **layer_kw)
        else:
            half = self.resolution // 2
            assert_shape(x, [None, self.in_channels, half, half], 'SynthesisBlock x')
            x = x.to(dtype=dtype, memory_format=memory_format)
            if self.architecture == 'resnet':
                y = self.skip(x, gain=np.sqrt(0.5))
                x = self.conv0(x, next(w_iter), **layer_kw)
                x = self.conv1(x, next(w_iter), gain=np.sqrt(0.5), **layer_kw)
                x = y + x
            else:
                x = self.conv0(x, next(w_iter), **layer_kw)
                x = self.conv1(x, next(w_iter), **layer_kw)

        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.num_torgb:
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(torch.nn.Module):
    """Blocks b4, b8, ..., b{img_resolution} that turn ``ws`` into an image."""

    def __init__(
        self,
        w_dim: int,  # Width of w.
        img_resolution: int,  # Output resolution (power of two >= 4).
        img_channels: int,  # Image channels.
        channel_base: int = 32768,  # Channels at resolution r are min(channel_base // r, channel_max).
        channel_max: int = 512,  # Maximum channels.
        num_fp16_res: int = 0,  # Run the top this-many resolutions in fp16.
        **block_kwargs,  # Passed on to SynthesisBlock (architecture, conv_clamp, ...).
    ) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f'img_resolution must be a power of two >= 4; got {img_resolution}')
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, int(np.log2(img_resolution)) + 1)]
        channels = channels_per_resolution(channel_base, channel_max, self.block_resolutions)
        fp16_res = fp16_min_resolution(img_resolution, num_fp16_res)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=(res == img_resolution),
                use_fp16=(res >= fp16_res),
                **block_kwargs,
            )
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f'b{res}', block)

    def forward(self, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
        """Map ``ws [N, num_ws, w_dim]`` to images ``[N, img_channels, R, R]`` float32 in about [-1, 1].

        ``block_kwargs``: ``noise_mode``, ``force_fp32``, ``fused_modconv`` (see SynthesisBlock).
        """
        assert_shape(ws, [None, self.num_ws, self.w_dim], 'ws')
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            x, img = block(x, img, block_ws, **block_kwargs)
            w_idx += block.num_conv
        return img
