"""The entry points of the metrics: ``--metrics`` parsing and validation, and :func:`calc_metric`, which
computes one metric of a generator with its kind (:mod:`metrics.registry`). Reports and the best-snapshot
pointer: :mod:`metrics.report`; both together: :func:`metrics.evaluation.evaluate_and_report`.

Protocol (names as in StyleGAN2-ADA):

* ``*_full``: reals are **all** images of the dataset path (``max_size=None``, no holdout, ``xflip=False``),
  whatever subset or mirroring training used (the protocol of the ADA paper's limited-data results).
* legacy ``fid50k``/``kid50k``/``pr50k3``: up to 50k reals with ``max_size=None`` and the dataset's xflip.
* ``*_train``: reals exactly as trained (the subset, the held-out split and mirroring kept).
* Generated images: a private eval copy of ``G`` (G_ema), ``z ~ N(0, I)`` and labels drawn from the dataset's
  labels with a fixed seed, no truncation, quantised to uint8 before the detector (grayscale repeated to
  RGB). Re-evaluating the same network gives the same numbers.

Besides the registered names, the counted names of counted kinds (``fid<N>k_full``, ``fid<N>k_train``,
``kid<N>k_full``, ``kid<N>k_train``, ...) work for any N (thousands of generated images), e.g.
``fid1k_train`` for quick checks on a CPU.

Real statistics are cached on disk (see :mod:`metrics.features`); ``ref_stats`` (an ``.npz`` with ``mu``
and ``sigma``, e.g. a cache file) replaces the real images for FID.
"""

from __future__ import annotations

import time

import torch

from metrics import context, detectors, features, registry
from metrics.kinds import MetricSpec
from metrics.registry import (
    describe_metrics,
    family_help,
    feature_share,
    is_valid_metric,
    list_valid_metrics,
    metric_spec,
)
from torch_utils import distributed

# The entry points, and the registry lookups that train.py, calc_metrics.py and the core reach through here.
__all__ = [
    'calc_metric',
    'check_training_metrics',
    'describe_metrics',
    'family_help',
    'feature_share',
    'is_valid_metric',
    'list_valid_metrics',
    'metric_spec',
    'parse_metric_list',
]


def parse_metric_list(text: str, allow_none: bool = True) -> list[str]:
    """A ``--metrics`` value (``'fid50k_full,kid50k_full'``) as a list of metric names.

    Blanks around names are dropped; ``'none'`` (or no name at all) gives ``[]`` when ``allow_none``.
    Raises ValueError naming the unknown names and listing the valid ones.
    """
    names = [name.strip() for name in text.split(',') if name.strip()]
    if allow_none and names in ([], ['none']):
        return []
    bad = [name for name in names if not is_valid_metric(name)]
    if bad or not names:
        none = '\n  none         no metrics' if allow_none else ''
        raise ValueError(f'unknown metric(s) {bad}; valid metrics:\n{describe_metrics()}{none}')
    return names


def check_training_metrics(names: list[str]) -> None:
    """Raise ``ValueError`` naming the metric and what to do when one of ``names`` cannot be computed during
    training, before the run starts rather than at its first snapshot (see
    :func:`metrics.detectors.check_default`)."""
    for name in names:
        kind = registry.kinds()[metric_spec(name).kind]
        if kind.detector is not None:
            try:
                detectors.check_default(kind.detector, kind.classifier)
            except detectors.DetectorError as err:
                raise ValueError(f'{name}: {err}') from err


def calc_metric(
    metric: str,  # A registered or counted name, e.g. 'fid50k_full' (see registry.metric_spec).
    *,
    G: torch.nn.Module,  # The generator (G_ema); not modified.
    dataset_kwargs: dict | None = None,  # ImageFolderDataset kwargs (path, use_labels, ...) of the reals.
    num_gpus: int = 1,  # Process count (torch.distributed must be initialised when > 1).
    rank: int = 0,  # This process's rank.
    device: torch.device | None = None,  # Where G and the detectors run; None = CUDA if available.
    cache: bool = True,  # Cache the real statistics under make_cache_dir_path('gan-metrics').
    detector_path: str | None = None,  # Inception TorchScript path or URL; None = the default.
    vgg16_path: str | None = None,  # VGG16 TorchScript path or URL; None = the default.
    ref_stats: str | None = None,  # .npz with mu/sigma of the reals for FID metrics (replaces the reals).
    num_gen: int | None = None,  # Generated images / PPL samples; None = the metric's count.
    seed: int = 0,  # Seed of the generated latents, labels and noise, and of KID's subsets.
    progress: bool = True,  # Print progress about every 10% (rank 0).
    batch_size: int = 64,  # Images per detector batch.
    shared: dict | None = None,  # Kept across the calls for one network (see feature_share); None = off.
) -> dict:
    """Compute one metric of generator ``G`` with its kind; every process of a group must call it together.

    ``G(z [N, z_dim], c [N, c_dim]) -> [N, C, R, R]`` in [-1, 1]. ``*_full``/legacy metrics override the
    ``max_size``/``xflip`` of ``dataset_kwargs``. With ``num_gpus > 1`` each process computes a shard and
    all get the full result. ``num_gen`` serves tests and quick looks. With one ``shared`` dict for the
    calls of one network, metrics whose kinds share features (FID and KID) and have the same count extract
    the generated images' features once; use a fresh dict per network.

    Returns ``{'results': {name: value}, 'metric', 'total_time' (s), 'total_time_str', 'num_gpus'}``.
    """
    spec = _check_call(metric, num_gpus, rank)
    kind = registry.kinds()[spec.kind]
    start = time.time()
    ctx = context.MetricContext(
        name=metric,
        spec=spec,
        kind=kind,
        G=G,
        dataset_kwargs=dict(dataset_kwargs or {}),
        device=torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu')),
        cache=cache,
        detector_path=detector_path,
        vgg16_path=vgg16_path,
        ref_stats=ref_stats if kind.ref_stats else None,
        num_gen=int(num_gen or spec.num_gen),
        seed=int(seed),
        progress=progress,
        batch_size=int(batch_size),
        shared=shared,
    )
    return _result(metric, kind.compute(ctx), time.time() - start, num_gpus)


def _check_call(metric: str, num_gpus: int, rank: int) -> MetricSpec:
    """The spec of ``metric``, after checking the name and the process setup."""
    spec = metric_spec(metric)
    if spec is None:
        raise ValueError(f'Unknown metric {metric!r}; valid metrics:\n{describe_metrics()}')
    if distributed.world_size() != num_gpus:
        raise ValueError(f'num_gpus={num_gpus} but {distributed.world_size()} process(es) are running')
    if distributed.is_initialized() and torch.distributed.get_rank() != rank:
        raise ValueError(f'rank={rank} but this process has rank {torch.distributed.get_rank()}')
    return spec


def _result(metric: str, results: dict[str, float], seconds: float, num_gpus: int) -> dict:
    """The dict :func:`calc_metric` returns."""
    return dict(
        results={k: float(v) for k, v in results.items()},
        metric=metric,
        total_time=seconds,
        total_time_str=features.format_time(seconds),
        num_gpus=num_gpus,
    )
