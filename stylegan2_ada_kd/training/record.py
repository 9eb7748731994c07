"""The run record: every option of one training run, resolved once by train.py (:mod:`.config` and the
plugin families) and written as ``training_options.json``. The loop, the run builder and the loss take
their parts of it as they are: the loop reads the schedule, :func:`.run.build_training_run` the networks,
optimizers, augmentation and loss kwargs, and the loss gets ``loss_kwargs`` (its family's resolved options)
as its constructor's keywords. A new run option is a field here (core) or a key in its family's kwargs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run's resolved options (the keys of training_options.json; ``*_kwargs`` are class_name + options
    for :func:`dnnlib.util.construct_class_by_name`)."""

    run_dir: str  # Output directory (rank 0 writes here).
    training_set_kwargs: dict  # Dataset (its subset, held-out split and mirroring included).
    data_loader_kwargs: dict  # torch DataLoader options (num_workers, pin_memory, prefetch_factor).
    G_kwargs: dict  # Generator.
    D_kwargs: dict  # Discriminator.
    G_opt_kwargs: dict  # G optimizer.
    D_opt_kwargs: dict  # D optimizer.
    loss_kwargs: dict  # Loss (a stylegan2_ada_kd.training.contracts.Loss) and its family's options.
    total_kimg: float  # Training length in kimg.
    batch_size: int  # Total batch over all processes and accumulation rounds.
    batch_gpu: int  # Batch per process per round.
    ema_kimg: float  # G_ema half-life in kimg.
    ema_rampup: float | None  # EMA rampup ratio; None = off.
    random_seed: int  # Global seed; each rank uses seed * num_gpus + rank.
    num_gpus: int  # Number of processes.
    kimg_per_tick: float  # Progress interval in kimg.
    image_snapshot_ticks: int | None  # Image grid interval in ticks; None = no grid images.
    grid_size: list[int] | None  # Columns, rows of the image grids; None = about 7680x4320 pixels.
    network_snapshot_ticks: int | None  # Snapshot interval in ticks; None = only at the end.
    metrics: list[str]  # Metric names evaluated at each snapshot (see metrics.evaluation).
    overfit_kwargs: dict | None  # D-overfitting monitor (a contracts.TickReporter); None = off.
    cudnn_benchmark: bool  # torch.backends.cudnn.benchmark.
    allow_tf32: bool  # TF32 matmul/convolution on Ampere+.
    augment_kwargs: dict | None  # Augmentation module; None = none.
    ada_kwargs: dict | None  # ADA controller; None = p stays fixed.
    augment_p: float | None  # Initial augmentation probability; None = the pipe has none (DiffAugment).
    resume_pkl: str | None = None  # Snapshot to continue exactly, or a pickle to warm-start from.
    init_from: str | None = None  # --init-from as given: the network a new run starts from (weights only).
    init_pkl: str | None = None  # Its local file, when the run starts from it (not when it resumes instead).
    G_reg_interval: int | None = 4  # Path-length regularisation interval in steps (SG2 Sec. 3.1); None = off.
    D_reg_interval: int | None = 16  # R1 interval in steps; None = not lazy.

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> RunRecord:
        """The record of a ``training_options.json``-shaped mapping; a ValueError names unknown and missing
        keys (a record is complete: train.py resolves every option)."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(record) - names)
        missing = sorted(names - set(with_defaults(record)))
        if unknown or missing:
            raise ValueError(f'run record: unknown keys {unknown}, missing keys {missing}')
        return cls(**record)

    def to_dict(self) -> dict[str, Any]:
        """The record as training_options.json holds it."""
        return dataclasses.asdict(self)


def with_defaults(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with the fields that have defaults filled in where absent (runs recorded before a field
    existed ran with its default)."""
    defaults = {
        f.name: f.default for f in dataclasses.fields(RunRecord) if f.default is not dataclasses.MISSING
    }
    return {**defaults, **record}


def steps_record(**fields: Any) -> RunRecord:
    """A record for driving :func:`.run.build_training_run` and :func:`.run.training_step` directly
    (benchmarks, tests): the fields only the loop reads (data, ticks, snapshots, grids, metrics, monitor) are
    inert, no augmentation; ``fields`` gives networks, optimizers, loss, batch, EMA, and may replace any."""
    inert = dict(
        run_dir='.',
        training_set_kwargs={},
        data_loader_kwargs={},
        total_kimg=0,
        random_seed=0,
        num_gpus=1,
        kimg_per_tick=0,
        image_snapshot_ticks=None,
        grid_size=None,
        network_snapshot_ticks=None,
        metrics=[],
        overfit_kwargs=None,
        cudnn_benchmark=True,
        allow_tf32=False,
        augment_kwargs=None,
        ada_kwargs=None,
        augment_p=0.0,
    )
    return RunRecord(**{**inert, **fields})
