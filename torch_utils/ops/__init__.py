"""Low-level image ops in pure PyTorch: ``upfirdn2d``, ``bias_act``, ``conv2d_resample``, ``fma``.

Importing this package compiles nothing.
"""
