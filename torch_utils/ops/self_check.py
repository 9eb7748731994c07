"""First-use self-check of the CUDA plugins: the compiled kernels against the reference ops.

A wrong kernel would train silently. So :mod:`torch_utils.custom_ops` calls :func:`run` once per process,
op and device, before the plugin's first use there, and takes the reference path on a mismatch.

:func:`run` calls the plugin path (:func:`~torch_utils.ops.upfirdn2d_cuda.upfirdn2d_cuda`,
:func:`~torch_utils.ops.bias_act_cuda.bias_act_cuda`) on the device with the variants that training uses
(:data:`UPFIRDN2D_CASES`, :data:`BIAS_ACT_CASES`), in float32 and in float16 (channels_last for images, as
the fp16 layers run). It compares the results with the reference ops, evaluated in float64 on the CPU on
the same (rounded) inputs. It checks the output, the first-order gradients w.r.t. the inputs, and the
second order that R1 and path-length regularisation take through the op: the gradients of
``sum(grad * w)`` w.r.t. the inputs and the output gradient. Both ops compute that second order with
their own kernels (upfirdn2d: the pass with the backward geometry of the backward pass; bias_act with
lrelu/linear: the first-order kernel again), so checking it costs a few more launches on tensors of a
few thousand elements. The reference runs on the CPU, so neither cudnn autotuning nor TF32 plays a part;
with CPU stand-ins for the kernels, a check takes about 20 ms (upfirdn2d) and 4 ms (bias_act) on one core.

The inputs are multiples of 1/16 (exact in float16) chosen so that ``x + b`` is never 0 and never lands on
a clamp boundary, where the kernel and the reference legitimately disagree about the gradient.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from types import ModuleType

import torch

from torch_utils.ops import bias_act_cuda, upfirdn2d_cuda
from torch_utils.ops.bias_act import activation_funcs, bias_act
from torch_utils.ops.upfirdn2d import setup_filter, upfirdn2d

# Largest accepted max |plugin - reference| / max(1, max |reference|), per dtype of the plugin path.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}
FIR4 = (1.0, 3.0, 3.0, 1.0)  # the networks' resample filter (2-D after setup_filter)
FIR12 = (0.5, -1.0, 2.0, -3.0, 5.0, 8.0, 13.0, 9.0, 4.0, -2.0, 1.0, -1.0)  # asymmetric and separable,
# like the augment pipe's 12-tap sym6 low-pass, so that a mishandled flip shows
IMAGE = (2, 3, 14, 20)  # [N, C, H, W]; upsampled 2x, the output spans two 32-wide kernel tiles

# name: (filter taps, upfirdn2d arguments), as upsample2d, downsample2d, conv2d_resample (3x3 conv, up
# and down) and the augment pipe's geometric transforms call upfirdn2d.
UPFIRDN2D_CASES: dict[str, tuple[tuple[float, ...], dict]] = {
    'upsample2d': (FIR4, dict(up=2, padding=[2, 1, 2, 1], gain=4)),
    'conv2d_resample up': (FIR4, dict(padding=1, gain=4)),
    'conv2d_resample down': (FIR4, dict(padding=2)),
    'downsample2d': (FIR4, dict(down=2, padding=1)),
    'augment up': (FIR12, dict(up=2, padding=[6, 5, 6, 5], gain=4)),
    'augment down': (FIR12, dict(down=2, flip_filter=True)),
}
# name: (x shape, bias_act arguments; bias along dim 1, default alpha and gain), as the conv, toRGB and
# fully connected layers call bias_act. The clamps are small, so that they bite, and exact in float16 (as
# the usual 256 is): the kernel tells clamped outputs by comparing the stored output with the clamp.
BIAS_ACT_CASES: dict[str, tuple[tuple[int, ...], dict]] = {
    'conv lrelu clamp': ((2, 5, 6, 7), dict(act='lrelu', clamp=1.25)),
    'toRGB linear clamp': ((2, 3, 6, 7), dict(act='linear', clamp=0.875)),
    'fc lrelu': ((4, 9), dict(act='lrelu')),
    'fc linear': ((4, 9), dict(act='linear')),
}

Call = Callable[..., torch.Tensor]  # call(plugin or None for the reference, *inputs) -> output


def _upfirdn2d(plugin: ModuleType | None, x: torch.Tensor, f: torch.Tensor, kw: dict) -> torch.Tensor:
    if plugin is None:
        return upfirdn2d(x, f, **kw, impl='ref')
    return upfirdn2d_cuda.upfirdn2d_cuda(x, f, plugin, **kw)


def _bias_act(plugin: ModuleType | None, x: torch.Tensor, b: torch.Tensor, kw: dict) -> torch.Tensor:
    if plugin is None:
        return bias_act(x, b, **kw, impl='ref')
    act = kw['act']
    spec = activation_funcs[act]
    return bias_act_cuda.bias_act_cuda(x, b, plugin, 1, act, spec.def_alpha, spec.def_gain, kw.get('clamp'))


def _grid(shape: tuple[int, ...], gen: torch.Generator, offset: float) -> torch.Tensor:
    """float64 multiples of 1/8 in [-2, 2), plus ``offset``/8."""
    return (torch.randint(-16, 16, shape, generator=gen, dtype=torch.float64) + offset) / 8


def _cases(op: str, gen: torch.Generator) -> Iterator[tuple[str, Call, list[torch.Tensor]]]:
    """``(name, call, float64 CPU inputs)`` of each case of ``op``."""
    if op == 'upfirdn2d':
        for name, (taps, kw) in UPFIRDN2D_CASES.items():
            yield name, functools.partial(_upfirdn2d, f=setup_filter(taps), kw=kw), [_grid(IMAGE, gen, 0.5)]
    elif op == 'bias_act':
        for name, (shape, kw) in BIAS_ACT_CASES.items():  # x + b: odd multiples of 1/16
            inputs = [_grid(shape, gen, 0.5), _grid(shape[1:2], gen, 0)]
            yield name, functools.partial(_bias_act, kw=kw), inputs
    else:
        raise ValueError(f'no self-check for op {op!r}')


def _derivatives(
    y: torch.Tensor, inputs: list[torch.Tensor], dy: torch.Tensor, w: list[torch.Tensor]
) -> list[torch.Tensor]:
    """First-order gradients of ``y`` (weighted by ``dy``) w.r.t. ``inputs``, then the gradients of
    ``sum(grad * w)`` w.r.t. ``inputs`` and ``dy`` (zeros where unused)."""
    grads = torch.autograd.grad(y, inputs, dy, create_graph=True)
    total = sum((g * wi).sum() for g, wi in zip(grads, w))
    second = torch.autograd.grad(total, [*inputs, dy], allow_unused=True)
    return [*grads, *(torch.zeros_like(t) if g is None else g for g, t in zip(second, [*inputs, dy]))]


def _scaled_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max(1, max |expected|); infinite for NaNs or a wrong shape."""
    if actual.shape != expected.shape:
        return math.inf
    err = (actual.detach().to('cpu', torch.float64) - expected.detach()).abs().max().item()
    return math.inf if math.isnan(err) else err / max(1.0, expected.abs().max().item())


def _case_errors(
    call: Call,
    plugin: ModuleType,
    inputs64: list[torch.Tensor],
    dtype: torch.dtype,
    device: torch.device,
    gen: torch.Generator,
) -> dict[str, float]:
    """Scaled errors of the plugin path in ``dtype`` on ``device`` against the float64 reference:
    ``{'forward' | 'grad x' | 'grad2 dy' | ...: error}``."""
    layout = torch.channels_last if dtype == torch.float16 else torch.contiguous_format
    fast = [
        t.to(device, dtype, memory_format=layout if t.ndim == 4 else torch.contiguous_format).requires_grad_()
        for t in inputs64
    ]
    ref = [t.detach().to('cpu', torch.float64).requires_grad_() for t in fast]
    y = call(plugin, *fast)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_()
    w = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(dtype) for t in inputs64]
    actual = [y, *_derivatives(y, fast, dy, [wi.to(device) for wi in w])]
    dy64 = dy.detach().to('cpu', torch.float64).requires_grad_()
    y64 = call(None, *ref)
    expected = [y64, *_derivatives(y64, ref, dy64, [wi.double() for wi in w])]
    names = 'xb'[: len(inputs64)]
    labels = ['forward', *(f'grad {n}' for n in names), *(f'grad2 {n}' for n in names), 'grad2 dy']
    return {label: _scaled_error(a, e) for label, a, e in zip(labels, actual, expected)}


def run(
    op: str,  # 'upfirdn2d' or 'bias_act'.
    plugin: ModuleType,  # The loaded extension (or any object with the same function).
    device: torch.device,  # Where the plugin path runs; the reference always runs on the CPU.
) -> str:
    """Compare ``op``'s plugin path with the reference: ``'ok'``, ``'mismatch: max abs err ...'`` naming
    the worst case, dtype and quantity, or ``'error: ...'`` when the plugin path raised.

    Needs no grad mode (it enables its own) and leaves the global random state alone.
    """
    gen = torch.Generator().manual_seed(0)
    cases, rows = list(_cases(op, gen)), []  # rows: (error / tolerance, error, tolerance, where)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for name, call, inputs in cases:
                for dtype, tol in TOLERANCE.items():
                    for what, err in _case_errors(call, plugin, inputs, dtype, device, gen).items():
                        rows.append((err / tol, err, tol, f'{name}, {str(dtype)[6:]}, {what}'))
    except Exception as exc:  # a kernel that raises on small inputs would raise in training too
        return f'error: {type(exc).__name__}: {exc}'.splitlines()[0]
    ratio, err, tol, where = max(rows, key=lambda row: row[0])  # the first of equals
    if ratio <= 1:
        return 'ok'
    return f'mismatch: max abs err {err:.3g} (relative to max(1, |reference|); tolerance {tol:g}) in {where}'
