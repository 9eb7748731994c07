"""StyleGAN2 networks with the reference's constructor kwargs, forward signatures and state_dict keys.

Modules: ``layers`` (equalised-lr FC/conv, modulated conv), ``mapping`` (z -> w), ``synthesis``
(w -> image), ``generator`` (G), ``discriminator`` (D with a plugin feature hook).
"""

from stylegan2_ada_kd.networks.discriminator import (
    Discriminator,
    DiscriminatorBlock,
    DiscriminatorEpilogue,
    MinibatchStdLayer,
)
from stylegan2_ada_kd.networks.generator import Generator
from stylegan2_ada_kd.networks.layers import Conv2dLayer, FullyConnectedLayer, modulated_conv2d
from stylegan2_ada_kd.networks.mapping import MappingNetwork
from stylegan2_ada_kd.networks.synthesis import SynthesisBlock, SynthesisLayer, SynthesisNetwork, ToRGBLayer

__all__ = [
    'Conv2dLayer',
    'Discriminator',
    'DiscriminatorBlock',
    'DiscriminatorEpilogue',
    'FullyConnectedLayer',
    'Generator',
    'MappingNetwork',
    'MinibatchStdLayer',
    'SynthesisBlock',
    'SynthesisLayer',
    'SynthesisNetwork',
    'ToRGBLayer',
    'modulated_conv2d',
]
