"""Starting a run: the run directory, training_options.json, log.txt, and one process per GPU
(``torch.multiprocessing.spawn`` for ``--gpus=N``, or the processes torchrun started).

The launcher knows no method: the caller passes the loop function (``train.py`` passes
``stylegan2_ada_kd.training_loop.training_loop``), which every process calls as
``loop_fn(rank=rank, device=device, **c)``."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Callable

import torch

from dnnlib import EasyDict
from dnnlib.util import remove_stale_temp_files
from torch_utils import distributed, run_io


def _prepare_run_dir(c: EasyDict) -> None:
    """Create the run directory and write training_options.json (rank 0 only)."""
    os.makedirs(c.run_dir, exist_ok=False)
    with open(os.path.join(c.run_dir, 'training_options.json'), 'w') as f:
        json.dump(c, f, indent=2, default=str)


def _clean_resumed_run_dir(resume_pkl: str | None) -> None:
    """Remove temporary files that a killed run left beside the snapshot we resume from (run dirs only)."""
    if not resume_pkl or not os.path.isfile(resume_pkl):
        return
    run_dir = os.path.dirname(os.path.abspath(resume_pkl))
    if not os.path.isfile(os.path.join(run_dir, 'training_options.json')):
        return
    removed = remove_stale_temp_files(run_dir)
    if removed:
        print(
            f'Removed {len(removed)} temporary file(s) left by an interrupted write in {run_dir}: {removed}'
        )


def _worker(rank: int, c: EasyDict, init_method: str | None, loop_fn: Callable[..., None]) -> None:
    """Body of one training process."""
    device = distributed.init_process_group(rank, c.num_gpus, init_method)
    if distributed.is_initialized() and init_method is None:  # torchrun: rank 0 picks the run dir
        holder = [c.run_dir]
        torch.distributed.broadcast_object_list(holder, src=0)
        c.run_dir = holder[0]
    tee = run_io.Tee(os.path.join(c.run_dir, 'log.txt')) if rank == 0 else None
    try:
        if rank == 0:
            _clean_resumed_run_dir(c.get('resume_pkl'))
        loop_fn(rank=rank, device=device, **c)
        if rank == 0:
            print(f'Done. Snapshots, image grids, stats.jsonl and log.txt are in {c.run_dir}')
        distributed.barrier()  # all ranks leave together: a rank tearing down gloo early can abort another
    finally:
        if tee is not None:
            tee.close()
        if distributed.is_initialized():
            torch.distributed.destroy_process_group()


def launch(c: EasyDict, loop_fn: Callable[..., None]) -> None:
    """Run training with the resolved kwargs ``c`` (which holds ``run_dir`` and ``num_gpus``).

    Every process calls ``loop_fn(rank=rank, device=device, **c)``; ``loop_fn`` must be a module-level
    function, since ``--gpus=N`` spawns the processes and pickles it by name.
    """
    if distributed.launched_by_torchrun():
        rank = int(os.environ['RANK'])
        if c.num_gpus != distributed.torchrun_world_size():
            raise ValueError(
                f'num_gpus={c.num_gpus} but torchrun started {os.environ["WORLD_SIZE"]} processes'
            )
        if rank == 0:
            _prepare_run_dir(c)
        _worker(rank, c, None, loop_fn)
        return
    _prepare_run_dir(c)
    if c.num_gpus == 1:
        _worker(0, c, None, loop_fn)
        return
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.abspath(os.path.join(tmp, '.torch_distributed_init'))
        torch.multiprocessing.spawn(_worker, args=(c, f'file://{init_file}', loop_fn), nprocs=c.num_gpus)
