"""Fitting a training step into GPU memory (the reference's users' out-of-memory reports, where the only
remedy was to guess a smaller batch and start again).

Before the first step of a single-process CUDA run, :func:`fit_batch_gpu` runs one trial step with every
phase due (as at step 0) on placeholder images at ``batch_gpu``. On a CUDA out-of-memory error it tries
the next smaller size of :func:`chunk_sizes` (the batch per round must divide ``batch_gpu`` and keep D's
minibatch-stddev groups whole, so D computes the same function), until one fits. It then puts back all the
state the trial touched (weights, optimizer moments, loss and ADA state, counters, RNG), so the run is the
one ``--batch-gpu=<that size>`` would give: the same batch and images in the same order, split into more
accumulation rounds. Several processes are not probed: a trial that fails on one rank would leave the
others waiting in a collective. An out-of-memory error in training itself is re-raised by
:func:`raise_with_advice` as :class:`StepOutOfMemory`, naming the phase and what to pass instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable

import torch

from stylegan2_ada_kd.checkpoint.training_state import optimizers, rng_state, set_rng_state
from torch_utils import training_stats

if TYPE_CHECKING:
    from stylegan2_ada_kd.training.run import TrainingRun

GIB = 2**30


class StepOutOfMemory(torch.cuda.OutOfMemoryError):
    """A training step ran out of GPU memory; the message says at which phase and size, and what to do."""


def probes(device: torch.device, num_gpus: int) -> bool:
    """Whether the training loop fits ``batch_gpu`` before it starts: single-process CUDA runs."""
    return device.type == 'cuda' and num_gpus == 1


def describe_peak(peak: int | None, device: torch.device) -> str:
    """``peak`` allocated bytes against the device's memory, for the log."""
    if peak is None or device.type != 'cuda':
        return 'peak memory not measured off CUDA'
    total = torch.cuda.get_device_properties(device).total_memory
    return f'peak {peak / GIB:.2f} GiB of {total / GIB:.1f} GiB allocated'


def chunk_sizes(batch_gpu: int, group: int | None) -> list[int]:
    """The batch sizes per round to try, largest first: ``batch_gpu`` and its divisors that are multiples
    of D's minibatch-stddev ``group`` (None = the whole batch is one group: only ``batch_gpu``). A
    ``batch_gpu`` below ``group`` already forms one smaller group; it is not split further."""
    if group is None or batch_gpu <= group:
        return [batch_gpu]
    return [d for d in range(batch_gpu, group - 1, -1) if batch_gpu % d == 0 and d % group == 0]


def mbstd_group(D: torch.nn.Module) -> int | None:
    """The minibatch-stddev group size of ``D`` (1 when it has no such layer: any split keeps it)."""
    for module in D.modules():
        if hasattr(module, 'group_size') and hasattr(module, 'num_channels'):
            return module.group_size
    return 1


def fit_batch_gpu(
    run: TrainingRun,  # Built, resumed and with its RNG restored; left exactly as it was.
    step: Callable[..., None],  # stylegan2_ada_kd.training.run.training_step.
    batch_gpu: int,  # The size asked for (--batch-gpu, or batch / gpus).
    image_shape: tuple[int, int, int],  # [C, H, W] of the training images.
    sample_labels: Callable[[int], torch.Tensor],  # As for training_step.
) -> tuple[int, int | None]:
    """The largest size of :func:`chunk_sizes` at which one step with every phase fits in memory, and that
    step's peak allocated bytes (None off CUDA). Raises :class:`StepOutOfMemory` when none fits."""
    sizes = chunk_sizes(batch_gpu, mbstd_group(run.D))
    saved = _capture(run)
    for size in sizes:
        fits = True
        if run.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(run.device)
        try:
            with _quiet():
                run.progress.batch_idx = 0  # every phase is due, the regularisation passes included
                reals = [torch.zeros([size, *image_shape], device=run.device)]
                step(run, reals, [sample_labels(size)], sample_labels)
                if run.device.type == 'cuda':
                    torch.cuda.synchronize(run.device)
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            fits = False
        peak = torch.cuda.max_memory_allocated(run.device) if run.device.type == 'cuda' else None
        _restore(run, saved)
        if fits:
            return size, peak
    raise StepOutOfMemory(
        f"out of GPU memory even at batch_gpu={sizes[-1]} (the smallest split that keeps D's "
        f'minibatch-stddev groups of {mbstd_group(run.D)}): use fewer channels (--cbase, --cmax), a '
        'smaller preset, or more GPUs (--gpus)'
    )


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` says the GPU ran out of memory: the caching allocator's ``OutOfMemoryError``, or a
    library's failed workspace allocation (cuDNN / cuBLAS ``..._ALLOC_FAILED``, 'CUDA error: out of
    memory')."""
    text = str(err)
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and ('ALLOC_FAILED' in text or 'CUDA error: out of memory' in text)
    )


def raise_with_advice(err: RuntimeError, phase: str, batch_gpu: int, D: torch.nn.Module) -> None:
    """Re-raise ``err`` as it is unless it is an out-of-memory error (:func:`is_out_of_memory`) of ``phase``:
    that comes out as :class:`StepOutOfMemory`, saying what to pass."""
    if isinstance(err, StepOutOfMemory) or not is_out_of_memory(err):
        raise err
    smaller = chunk_sizes(batch_gpu, mbstd_group(D))[1:2]
    what = f'--batch-gpu={smaller[0]}' if smaller else 'fewer channels (--cbase, --cmax) or more GPUs'
    raise StepOutOfMemory(
        f'{phase}: out of GPU memory at batch_gpu={batch_gpu}. Every snapshot written so far is complete; '
        f'continue with the same command plus {what} and --resume=auto (or --resume=<run directory>)'
    ) from err


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No statistics reports from the trial step (they would count in tick 0 and in ADA's sign)."""
    was = training_stats.is_enabled()
    training_stats.set_enabled(False)
    try:
        yield
    finally:
        training_stats.set_enabled(was)


def _cpu(obj: Any) -> Any:
    """A deep copy of nested dicts/lists/tuples with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to('cpu', copy=True)
    if isinstance(obj, dict):
        return type(obj)((k, _cpu(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _capture(run: TrainingRun) -> dict:
    """Everything a training step changes, copied to the CPU (GPU memory is what is short)."""
    return dict(
        nets={k: _cpu(m.state_dict()) for k, m in run.nets.items() if m is not None},
        opts={k: _cpu(opt.state_dict()) for k, opt in optimizers(run.phases).items()},
        loss=_cpu(run.loss.state_dict()),
        ada=_cpu(run.ada.state_dict()) if run.ada is not None else None,
        progress=dataclasses.asdict(run.progress),
        rng=rng_state(run.device),
    )


def _restore(run: TrainingRun, saved: dict) -> None:
    """Put back what :func:`_capture` copied (copies of it: a loaded state may keep the tensors it is given,
    and the next trial would change them in place); drop the trial's gradients and free its memory."""
    for key, module in run.nets.items():
        if module is not None:
            module.load_state_dict(saved['nets'][key])
    for key, opt in optimizers(run.phases).items():
        opt.load_state_dict(_cpu(saved['opts'][key]))
    run.loss.load_state_dict(_cpu(saved['loss']))
    if run.ada is not None:
        run.ada.load_state_dict(_cpu(saved['ada']))
    for key, value in saved['progress'].items():
        setattr(run.progress, key, value)
    set_rng_state(saved['rng'], run.device)
    for module in (run.G, run.D):
        for param in module.parameters():
            param.grad = None
    gc.collect()
    if run.device.type == 'cuda':
        torch.cuda.empty_cache()
