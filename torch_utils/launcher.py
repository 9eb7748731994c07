"""Starting processes: one per GPU, through ``torch.multiprocessing.spawn`` (``--gpus=N``) or by joining
the processes torchrun started (:func:`launch_processes`, used by train.py and calc_metrics.py), and
training's own start: the run directory, training_options.json and log.txt (:func:`launch`).

The launcher knows no method: train.py passes the loop function
(``stylegan2_ada_kd.training.loop.training_loop``), which every process calls as
``loop_fn(c, rank=rank, device=device)`` with the run record ``c``."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Callable

import torch

from dnnlib import EasyDict
from dnnlib.util import remove_stale_temp_files
from torch_utils import distributed, run_io, stop


def launch_processes(
    worker: Callable[..., None],  # Module-level function: worker(rank, device, *args) runs in every process.
    num_processes: int,  # Process count (one per GPU); under torchrun it must equal WORLD_SIZE.
    args: tuple = (),  # The worker's other arguments (pickled when processes are spawned).
    prepare: Callable[[], None] | None = None,  # Runs once before the workers; None = nothing.
) -> None:
    """Run ``worker`` in ``num_processes`` processes, each in the process group (none for one process).

    Under torchrun this process is one of them (``prepare`` runs on rank 0 only); else one process runs
    ``worker`` here and more are spawned (``worker`` is pickled by name), joining through a ``file://``
    init in a temporary directory. Each process leaves the group when ``worker`` returns or raises.
    """
    world = distributed.torchrun_world_size()
    if world is not None and num_processes != world:
        raise ValueError(f'{num_processes} process(es) asked for, but torchrun started {world}')
    rank = int(os.environ['RANK']) if world is not None else 0
    if prepare is not None and rank == 0:
        prepare()
    if not spawns(num_processes):
        _process(rank, worker, num_processes, None, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.abspath(os.path.join(tmp, '.torch_distributed_init'))
        spawn_args = (worker, num_processes, f'file://{init_file}', args)
        context = torch.multiprocessing.start_processes(
            _process, args=spawn_args, nprocs=num_processes, join=False, start_method='spawn'
        )
        with stop.forwarded(lambda: [p.pid for p in context.processes if p.is_alive()]):
            while not context.join():
                pass


def spawns(num_processes: int) -> bool:
    """Whether :func:`launch_processes` starts new processes (and pickles its ``args`` to them): more than
    one process asked for, outside torchrun."""
    return num_processes > 1 and not distributed.launched_by_torchrun()


def _process(
    rank: int, worker: Callable[..., None], num_processes: int, init_method: str | None, args: tuple
) -> None:
    """One process of :func:`launch_processes`: join the group, run ``worker``, leave the group.

    All processes leave together (a barrier). A spawned process then ends at once, without tearing
    gloo down: a rank tearing down while another is still leaving can abort that one ("terminate called
    without an active exception", seen in CI), failing a run that had finished."""
    device = distributed.init_process_group(rank, num_processes, init_method)
    try:
        worker(rank, device, *args)
        distributed.barrier()
        if init_method is not None:  # spawned by us: nothing after this point is ours to wait for
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    finally:
        if distributed.is_initialized():
            torch.distributed.destroy_process_group()


def launch(c: EasyDict, loop_fn: Callable[..., None]) -> None:
    """Run training with the resolved kwargs ``c`` (which holds ``run_dir`` and ``num_gpus``).

    Every process calls ``loop_fn(c, rank=rank, device=device)``; ``loop_fn`` must be a module-level
    function, since ``--gpus=N`` spawns the processes and pickles it by name.
    """
    launch_processes(_train_worker, c.num_gpus, (c, loop_fn), prepare=lambda: _prepare_run_dir(c))


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


def _train_worker(rank: int, device: torch.device, c: EasyDict, loop_fn: Callable[..., None]) -> None:
    """Body of one training process."""
    if distributed.launched_by_torchrun():  # rank 0 picked the run dir
        holder = [c.run_dir]
        torch.distributed.broadcast_object_list(holder, src=0)
        c.run_dir = holder[0]
    tee = run_io.Tee(os.path.join(c.run_dir, 'log.txt')) if rank == 0 else None
    try:
        loop_fn(c, rank=rank, device=device)
        if rank == 0:
            print(f'Done. Snapshots, image grids, stats.jsonl and log.txt are in {c.run_dir}')
    finally:
        if tee is not None:
            tee.close()
