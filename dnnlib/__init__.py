"""Minimal ``dnnlib`` package: helpers whose global names appear in StyleGAN2-ADA network pickles."""

from dnnlib.util import EasyDict

__all__ = ['EasyDict']
