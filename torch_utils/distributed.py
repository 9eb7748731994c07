"""Multi-process helpers: process-group setup (spawn or torchrun), parameter broadcast, gradient
all-reduce. Gradients are averaged by hand after each phase rather than through DDP wrappers, so
any module call pattern (lazy regularisation, plugin heads) trains the same on 1 or N processes."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import timedelta

import torch


def is_initialized() -> bool:
    """True when torch.distributed has a process group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return torch.distributed.get_world_size() if is_initialized() else 1


def launched_by_torchrun() -> bool:
    """True when the environment carries torchrun's rendezvous variables."""
    return all(k in os.environ for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'))


def torchrun_world_size() -> int | None:
    """torchrun's WORLD_SIZE (all processes over all nodes), or None when torchrun did not start us."""
    return int(os.environ['WORLD_SIZE']) if launched_by_torchrun() else None


def init_process_group(
    rank: int, num_gpus: int, init_method: str | None = None, timeout_min: float = 30
) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on CPU) and return this process's device.

    ``init_method``: a ``file://`` or ``tcp://`` URL for spawned processes; None = ``env://`` (torchrun).
    With ``num_gpus == 1`` and no torchrun environment nothing is initialised.
    """
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get('LOCAL_RANK', rank))
    device = torch.device('cuda', local_rank % torch.cuda.device_count()) if use_cuda else torch.device('cpu')
    if use_cuda:
        torch.cuda.set_device(device)
    elif num_gpus > 1:  # CPU processes share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_gpus))
    if num_gpus > 1 or init_method is not None or launched_by_torchrun():
        torch.distributed.init_process_group(
            backend='nccl' if use_cuda else 'gloo',
            init_method=init_method or 'env://',
            rank=rank,
            world_size=num_gpus,
            timeout=timedelta(minutes=timeout_min),
        )
    return device


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of ``module`` from rank ``src`` to all ranks."""
    if not is_initialized():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        torch.distributed.broadcast(tensor.data, src=src)


def sync_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average gradients over processes and replace NaN/inf by 0/+-1e5 (one flat all-reduce)."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    if is_initialized():
        torch.distributed.all_reduce(flat)
        flat /= world_size()
    torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all processes (a new tensor; a detached copy without a process group).

    Every process must call it the same number of times (a collective), e.g. once per accumulation round.
    """
    out = value.detach().clone()
    if is_initialized():
        torch.distributed.all_reduce(out)
        out /= world_size()
    return out


def barrier() -> None:
    """Wait for all processes (no-op without a process group)."""
    if is_initialized():
        torch.distributed.barrier()


def gather_objects(obj: object) -> list:
    """List of ``obj`` from every rank, in rank order (``[obj]`` without a process group)."""
    if not is_initialized():
        return [obj]
    out: list = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out
