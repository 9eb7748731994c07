"""Equalised-learning-rate layers and the modulated convolution of StyleGAN2.

Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020), Sec. 2.2
(weight demodulation, Eq. 1-3) and the equalised learning rate of ProGAN (Karras et al. 2018,
Sec. 4.1): weights are stored as N(0, 1) / lr_mul and scaled at run time by lr_mul / sqrt(fan_in).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from torch_utils.misc import assert_shape
from torch_utils.ops.bias_act import bias_act, get_activation
from torch_utils.ops.conv2d_resample import conv2d_resample
from torch_utils.ops.fma import fma
from torch_utils.ops.upfirdn2d import setup_filter

DEFAULT_FILTER = (1, 3, 3, 1)

# Blocks marked use_fp16 run in half precision on accelerators only: CPU half-precision convolutions
# are several times slower than fp32 and save nothing. Tests set this to True to exercise the fp16 path.
FP16_ON_CPU = False


def block_dtype(use_fp16: bool, force_fp32: bool, device: torch.device) -> torch.dtype:
    """Compute dtype of a block: fp16 for fp16 blocks unless forced to fp32 or on CPU (see FP16_ON_CPU)."""
    if use_fp16 and not force_fp32 and (device.type != 'cpu' or FP16_ON_CPU):
        return torch.float16
    return torch.float32


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` so that the mean of its squares along ``dim`` is 1 (StyleGAN's pixel norm)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: ``y = act(x @ (W * lr_mul / sqrt(in)).T + b * lr_mul)``."""

    def __init__(
        self,
        in_features: int,  # Input width.
        out_features: int,  # Output width.
        bias: bool = True,  # Add a learned bias.
        activation: str = 'linear',  # Activation name from torch_utils.ops.bias_act.
        lr_multiplier: float = 1.0,  # Learning-rate multiplier (0.01 in the mapping network).
        bias_init: float = 0.0,  # Initial value of the effective bias.
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[N, in_features]`` to ``[N, out_features]`` (dtype of ``x``)."""
        assert_shape(x, [None, self.in_features], 'FullyConnectedLayer input')
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        """Summary line for ``print(module)``."""
        return (
            f'in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}'
        )


class Conv2dLayer(torch.nn.Module):
    """Convolution with equalised learning rate, optional FIR up/downsampling, bias, activation, clamp.

    With ``trainable=False`` the weight and bias are buffers (Freeze-D, Mo et al. 2020).
    """

    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_channels: int,  # Output channels.
        kernel_size: int,  # Square kernel width.
        bias: bool = True,  # Add a learned bias.
        activation: str = 'linear',  # Activation name from torch_utils.ops.bias_act.
        up: int = 1,  # Upsampling factor (1 or 2).
        down: int = 1,  # Downsampling factor (1 or 2).
        resample_filter: Sequence[float] = DEFAULT_FILTER,  # FIR taps for resampling.
        conv_clamp: float | None = None,  # Clamp the output to +-conv_clamp; None = no clamp.
        channels_last: bool = False,  # Store the weight in channels_last memory format.
        trainable: bool = True,  # False = weights are frozen buffers.
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size**2)
        self.act_gain = get_activation(activation).def_gain
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        weight = weight.to(memory_format=memory_format)
        bias_t = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias_t) if bias_t is not None else None
        else:
            self.register_buffer('weight', weight)
            self.register_buffer('bias', bias_t)

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        """Map ``[N, in_channels, H, W]`` to ``[N, out_channels, H * up / down, W * up / down]``."""
        assert_shape(x, [None, self.in_channels, None, None], 'Conv2dLayer input')
        w = self.weight * self.weight_gain
        x = conv2d_resample(
            x,
            w.to(x.dtype),
            f=self.resample_filter,
            up=self.up,
            down=self.down,
            padding=self.padding,
            flip_weight=(self.up == 1),  # the transposed conv of the up path wants unflipped weights
        )
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        """Summary line for ``print(module)``."""
        return (
            f'in_channels={self.in_channels}, out_channels={self.out_channels}, '
            f'activation={self.activation}, up={self.up}, down={self.down}'
        )


def _fp16_safe_scale(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-scale weight and styles so that their product cannot overflow fp16.

    Any positive per-output-channel scale of the weight, and any positive per-sample scale of the
    styles, is undone exactly by demodulation, so this changes nothing but the numeric range.
    """
    in_ch, kh, kw = weight.shape[1:]
    weight = weight * (1 / np.sqrt(in_ch * kh * kw) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
    styles = styles / styles.abs().amax(dim=1, keepdim=True)
    return weight, styles


def modulated_conv2d(
    x: torch.Tensor,  # Input activations [N, I, H, W].
    weight: torch.Tensor,  # Shared weight [O, I, k, k].
    styles: torch.Tensor,  # Per-sample scales [N, I] of the input channels (s_i in the paper).
    noise: torch.Tensor | None = None,  # Noise [N, 1 or O, H', W'] added after demodulation; None = none.
    up: int = 1,  # As in conv2d_resample.
    down: int = 1,  # As in conv2d_resample.
    padding: int = 0,  # As in conv2d_resample.
    resample_filter: torch.Tensor | None = None,  # As in conv2d_resample (f).
    demodulate: bool = True,  # Normalise each output channel of the modulated weight to unit L2 norm.
    flip_weight: bool = True,  # As in conv2d_resample.
    fused_modconv: bool = True,  # One grouped convolution with per-sample weights (see below).
) -> torch.Tensor:
    """Modulated convolution with optional demodulation (StyleGAN2, Eq. 1-3).

    ``fused_modconv=True`` runs one grouped convolution with per-sample weights (fast at inference);
    ``False`` scales the activations instead and runs a shared-weight convolution. Returns ``[N, O, H', W']``
    in ``x``'s dtype.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    assert_shape(weight, [out_ch, in_ch, kh, kw], 'modulated_conv2d weight')
    assert_shape(x, [n, in_ch, None, None], 'modulated_conv2d x')
    assert_shape(styles, [n, in_ch], 'modulated_conv2d styles')

    if x.dtype == torch.float16 and demodulate:
        weight, styles = _fp16_safe_scale(weight, styles)

    # Demodulation coefficients 1 / ||w_o * s||_2 per sample and output channel (Eq. 3), computed as
    # s^2 @ (sum_k w^2)^T so that the non-fused path never materialises per-sample weights.
    dcoefs = None
    if demodulate:
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, in_ch, 1, 1)
        x = conv2d_resample(
            x,
            weight.to(x.dtype),
            f=resample_filter,
            up=up,
            down=down,
            padding=padding,
            flip_weight=flip_weight,
        )
        if dcoefs is not None and noise is not None:
            return fma(x, dcoefs.to(x.dtype).reshape(n, out_ch, 1, 1), noise.to(x.dtype))
        if dcoefs is not None:
            return x * dcoefs.to(x.dtype).reshape(n, out_ch, 1, 1)
        return x + noise.to(x.dtype) if noise is not None else x

    # Fused: fold the batch into the channel axis and run one grouped convolution.
    w = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)  # [N, O, I, k, k]
    if dcoefs is not None:
        w = w * dcoefs.reshape(n, out_ch, 1, 1, 1)
    x = x.reshape(1, n * in_ch, *x.shape[2:])
    w = w.reshape(n * out_ch, in_ch, kh, kw).to(x.dtype)
    x = conv2d_resample(
        x, w, f=resample_filter, up=up, down=down, padding=padding, groups=n, flip_weight=flip_weight
    )
    x = x.reshape(n, out_ch, *x.shape[2:])
    return x + noise.to(x.dtype) if noise is not None else x
