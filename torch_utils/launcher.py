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
    """Create the run directory and write training_options.json (rank 0 only), after removing what killed
    runs left behind (:func:`_clean_dead_writes`)."""
    _clean_dead_writes(os.path.dirname(c.run_dir) or '.', c.get('resume_pkl'))
    os.makedirs(c.run_dir, exist_ok=False)
    with open(os.path.join(c.run_dir, 'training_options.json'), 'w') as f:
        json.dump(c, f, indent=2, default=str)


def _clean_dead_writes(outdir: str, resume_pkl: str | None) -> None:
    """Remove the temporary files of interrupted writes (their writer is dead) from every run directory in
    ``outdir`` and from the one holding ``resume_pkl``: a run killed before its first snapshot leaves one
    that no resume would ever reach."""
    folders = []
    if os.path.isdir(outdir):
        folders = [os.path.join(outdir, name) for name in sorted(os.listdir(outdir))]
    if resume_pkl and os.path.isfile(resume_pkl):
        folders.append(os.path.dirname(os.path.abspath(resume_pkl)))
    for folder in dict.fromkeys(folders):
        if not os.path.isfile(os.path.join(folder, 'training_options.json')):
            continue  # only run directories
        removed = remove_stale_temp_files(folder)
        if removed:
            print(f'Removed {len(removed)} temporary file(s) of an interrupted write in {folder}: {removed}')


def _worker(rank: int, c: EasyDict, init_method: str | None, loop_fn: Callable[..., None]) -> None:
    """Body of one training process."""
    device = distributed.init_process_group(rank, c.num_gpus, init_method)
    if distributed.is_initialized() and init_method is None:  # torchrun: rank 0 picks the run dir
        holder = [c.run_dir]
        torch.distributed.broadcast_object_list(holder, src=0)
        c.run_dir = holder[0]
    tee = run_io.Tee(os.path.join(c.run_dir, 'log.txt')) if rank == 0 else None
    try:
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
