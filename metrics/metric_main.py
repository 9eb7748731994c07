"""Metric registry and entry points: compute a metric for a generator, log it to the run directory and keep
a pointer to the best snapshot.

Protocol (names as in StyleGAN2-ADA):

* ``*_full``: reals are **all** images of the dataset path (``max_size=None``, no holdout, ``xflip=False``),
  whatever subset or mirroring training used (the protocol of the ADA paper's limited-data results).
* legacy ``fid50k``/``kid50k``/``pr50k3``: up to 50k reals with ``max_size=None`` and the dataset's xflip.
* ``*_train``: reals exactly as trained (the subset, the held-out split and mirroring kept).
* Generated images: a private eval copy of ``G`` (G_ema), ``z ~ N(0, I)`` and labels drawn from the dataset's
  labels with a fixed seed, no truncation, quantised to uint8 before the detector (grayscale repeated to
  RGB). Re-evaluating the same network gives the same numbers.

Besides the registered names, ``fid<N>k_full``, ``fid<N>k_train``, ``kid<N>k_full`` and ``kid<N>k_train`` work
for any N (thousands of generated images), e.g. ``fid1k_train`` for quick checks on a CPU.

Real statistics are cached on disk (see :mod:`metrics.features`); ``ref_stats`` (an ``.npz`` with ``mu``
and ``sigma``, e.g. a cache file) replaces the real images for FID.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import time
from typing import Callable

import numpy as np
import torch

import dnnlib
from metrics import detectors, features, ppl, scores
from torch_utils import distributed, run_io


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """One registered metric: formula ``kind``, generated count, which reals and how many, and a summary."""

    kind: str  # 'fid', 'kid', 'pr', 'is' or 'ppl'.
    num_gen: int  # Generated images (or PPL samples).
    reals: str | None  # 'full', 'legacy', 'train' or None (no reals).
    max_reals: int | None  # Cap on real items; None = all.
    doc: str


_METRICS: dict[str, MetricSpec] = {
    'fid50k_full': MetricSpec('fid', 50000, 'full', None, 'FID, 50k generated vs all reals (no mirror)'),
    'kid50k_full': MetricSpec('kid', 50000, 'full', 1000000, 'KID, 50k generated vs up to 1M reals'),
    'pr50k3_full': MetricSpec('pr', 50000, 'full', 200000, 'precision/recall (VGG16, k=3), up to 200k reals'),
    'is50k': MetricSpec('is', 50000, None, None, 'Inception Score of 50k generated, 10 splits'),
    'ppl2_wend': MetricSpec('ppl', 50000, None, None, 'perceptual path length, W, endpoints, full image'),
    'fid50k': MetricSpec(
        'fid', 50000, 'legacy', 50000, 'legacy FID, 50k generated vs 50k reals (xflip kept)'
    ),
    'kid50k': MetricSpec('kid', 50000, 'legacy', 50000, 'legacy KID vs 50k reals (xflip kept)'),
    'pr50k3': MetricSpec('pr', 50000, 'legacy', 50000, 'legacy precision/recall vs 50k reals (xflip kept)'),
    'fid5k_full': MetricSpec(
        'fid', 5000, 'full', None, 'cheap FID for monitoring: 5k generated vs all reals'
    ),
    'fid10k_full': MetricSpec('fid', 10000, 'full', None, 'FID, 10k generated vs all reals'),
    'fid5k_train': MetricSpec('fid', 5000, 'train', None, 'FID, 5k generated vs the training set as trained'),
    'kid5k_train': MetricSpec(
        'kid', 5000, 'train', 1000000, 'KID, 5k generated vs the training set as trained'
    ),
}
_FAMILY = re.compile(r'^(fid|kid)([1-9][0-9]*)k_(full|train)$')
FAMILY_HELP = '{fid,kid}<N>k_{full,train} for any N thousand generated images (e.g. fid1k_train)'
_REALS_DOC = {'full': 'all reals (no mirror)', 'train': 'the training set as trained'}
IMAGE_FOLDER_DATASET = 'stylegan2_ada_kd.dataset.ImageFolderDataset'


def metric_spec(name: str) -> MetricSpec | None:
    """The spec of a registered name or of a ``{fid,kid}<N>k_{full,train}`` name; None if neither."""
    if name in _METRICS:
        return _METRICS[name]
    match = _FAMILY.match(name)
    if match is None:
        return None
    kind, num_gen, reals = match.group(1), int(match.group(2)) * 1000, match.group(3)
    max_reals = 1000000 if kind == 'kid' else None
    doc = f'{kind.upper()}, {num_gen} generated vs {_REALS_DOC[reals]}'
    return MetricSpec(kind, num_gen, reals, max_reals, doc)


def is_valid_metric(name: str) -> bool:
    """Whether ``name`` is a registered metric or a ``{fid,kid}<N>k_{full,train}`` name."""
    return metric_spec(name) is not None


def list_valid_metrics() -> list[str]:
    """Names of all registered metrics, in registry order."""
    return list(_METRICS)


def describe_metrics() -> str:
    """One line per metric: name and summary (for help texts and error messages)."""
    lines = [f'  {name:<12} {spec.doc}' for name, spec in _METRICS.items()]
    lines.append(f'  {FAMILY_HELP}')
    return '\n'.join(lines)


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


def feature_share(metrics: list[str]) -> dict | None:
    """A fresh dict for :func:`calc_metric`'s ``shared`` when two or more of ``metrics`` are FID/KID with the
    same generated count (their generated-image features are then extracted once), else None."""
    specs = [metric_spec(name) for name in metrics]
    counts = [spec.num_gen for spec in specs if spec is not None and spec.kind in ('fid', 'kid')]
    return {} if len(counts) > len(set(counts)) else None


@dataclasses.dataclass
class _Context:
    """Everything a metric computation needs."""

    name: str
    spec: MetricSpec
    G: torch.nn.Module
    dataset_kwargs: dict
    device: torch.device
    cache: bool
    detector_path: str | None
    vgg16_path: str | None
    ref_stats: str | None
    num_gen: int
    seed: int
    progress: bool
    batch_size: int
    shared: dict | None = None

    @property
    def num_workers(self) -> int:
        """DataLoader workers for decoding reals (3 on CUDA, none on CPU)."""
        return 3 if self.device.type == 'cuda' else 0


def _open_dataset(ctx: _Context, reals: str | None) -> torch.utils.data.Dataset:
    """Construct the dataset of ``ctx.dataset_kwargs`` adjusted for ``reals`` ('full', 'legacy', 'train')."""
    kwargs = dict(ctx.dataset_kwargs)
    if not kwargs.get('path'):
        raise ValueError(f'{ctx.name} needs a dataset: pass --data=PATH (no dataset path is known)')
    kwargs.setdefault('class_name', IMAGE_FOLDER_DATASET)
    if kwargs.get('resolution') is None:
        kwargs['resolution'] = ctx.G.img_resolution
    kwargs.setdefault('use_labels', ctx.G.c_dim > 0)
    if reals in ('full', 'legacy'):
        kwargs['max_size'] = None
        kwargs.pop('holdout', None)  # every image of the path, held-out ones included
    if reals == 'full':
        kwargs['xflip'] = False
    dataset = dnnlib.util.construct_class_by_name(**kwargs)
    if dataset.resolution != ctx.G.img_resolution:
        raise ValueError(
            f'{kwargs["path"]}: images are {dataset.resolution}x{dataset.resolution} but G makes '
            f'{ctx.G.img_resolution}x{ctx.G.img_resolution}; pass --data with images of that size'
        )
    if ctx.G.c_dim > 0 and dataset.label_dim != ctx.G.c_dim:
        raise ValueError(
            f'{kwargs["path"]}: labels have width {dataset.label_dim} but G has c_dim={ctx.G.c_dim}; pass '
            '--data with the dataset.json labels the network was trained with'
        )
    return dataset


def _label_pool(ctx: _Context, dataset: torch.utils.data.Dataset | None) -> np.ndarray | None:
    """``[L, c_dim]`` labels to draw generated labels from (None for an unconditional G)."""
    if ctx.G.c_dim == 0:
        return None
    if dataset is None:
        dataset = _open_dataset(ctx, 'train')
    return np.stack([dataset.get_label(i) for i in range(len(dataset.files))]).astype(np.float32)


def _gen_features(
    ctx: _Context,
    detect: Callable[[torch.Tensor], torch.Tensor],
    kind: str,
    labels: np.ndarray | None,
    share_as: str | None = None,
) -> dict[str, np.ndarray]:
    """Detector statistics of ``ctx.num_gen`` generated images (see :func:`features.extract`).

    With ``ctx.shared`` and a detector name ``share_as``, the ``[N, F]`` features are kept there under the
    generation settings, so the next FID/KID of the same network reuses them instead of regenerating.
    """

    def run(kind: str) -> dict[str, np.ndarray]:
        batches = features.generated_batches(ctx.G, labels, ctx.num_gen, ctx.batch_size, ctx.seed, ctx.device)
        return features.extract(batches, detect, kind, ctx.num_gen, f'{ctx.name} generated', ctx.progress)

    if ctx.shared is None or share_as is None:
        return run(kind)
    digest = None if labels is None else hashlib.sha1(np.ascontiguousarray(labels).tobytes()).hexdigest()
    key = (share_as, ctx.num_gen, ctx.batch_size, ctx.seed, digest)
    if key not in ctx.shared:
        ctx.shared[key] = run('features')['features']
    feats = ctx.shared[key]
    return features.moments(feats) if kind == 'mean_cov' else {'features': feats}


def _real_features(ctx: _Context, det: detectors.Detector, kind: str) -> tuple:
    """(real statistics, label pool) for the metric's real set."""
    dataset = _open_dataset(ctx, ctx.spec.reals)
    stats = features.real_stats(
        dataset,
        ctx.dataset_kwargs['path'],
        det,
        det.name,
        kind=kind,
        max_items=ctx.spec.max_reals,
        batch_size=ctx.batch_size,
        cache=ctx.cache,
        progress=ctx.progress,
        num_workers=ctx.num_workers,
    )
    return stats, _label_pool(ctx, dataset)


def _load_ref_stats(path: str, feature_dim: int, detector_name: str) -> dict[str, np.ndarray]:
    """``mu``/``sigma`` from a ``--ref-stats`` .npz, checked for shape (and detector, when recorded)."""
    try:
        stats = features.load_npz(path)
    except (OSError, ValueError) as err:
        raise ValueError(f'--ref-stats={path}: cannot read it as .npz ({err})') from err
    if 'mu' not in stats or 'sigma' not in stats:
        raise ValueError(f'--ref-stats={path}: needs arrays "mu" [F] and "sigma" [F, F]; has {sorted(stats)}')
    f = stats['mu'].shape[0]
    if stats['sigma'].shape != (f, f) or f != feature_dim:
        raise ValueError(
            f'--ref-stats={path}: mu {stats["mu"].shape} / sigma {stats["sigma"].shape} do not match the '
            f'{feature_dim}-d detector features; compute the statistics with the same detector'
        )
    recorded = str(stats.get('detector', detector_name))
    if recorded != detector_name:
        print(f'Warning: --ref-stats={path} was computed with detector {recorded}, not {detector_name}.')
    return stats


def _fid(ctx: _Context) -> dict[str, float]:
    det = detectors.load_detector(detectors.INCEPTION, ctx.detector_path, ctx.device)
    if ctx.ref_stats:
        fake = _gen_features(ctx, det, 'mean_cov', _label_pool(ctx, None), det.name)
        real = _load_ref_stats(ctx.ref_stats, fake['mu'].shape[0], det.name)
    else:
        real, labels = _real_features(ctx, det, 'mean_cov')
        fake = _gen_features(ctx, det, 'mean_cov', labels, det.name)
    show = ctx.progress and (not distributed.is_initialized() or torch.distributed.get_rank() == 0)
    return {ctx.name: fid_with_progress(ctx.name, real, fake, show)}


# tr((S1 S2)^(1/2)) from symmetric eigendecompositions (scores.fid_from_stats): the same value as
# scipy.linalg.sqrtm(S1 @ S2) to rounding (relative 1e-15 full rank, 1e-8 rank-deficient), about 6x faster.
FID_METHOD = 'eigh'


def fid_with_progress(name: str, real: dict, fake: dict, show: bool) -> float:
    """FID from ``{'mu', 'sigma'}`` of the reals and the generated images; ``show`` prints the slow step.

    The matrix square root of the ``F x F`` covariance product (F = 2048 for Inception) is the one silent
    step after feature extraction (seconds, or minutes with :func:`scipy.linalg.sqrtm` on a slow CPU), so
    its start and its duration are printed like the other progress lines.
    """
    dim = int(np.shape(real['sigma'])[0])
    if show:
        print(
            f'{name}: FID matrix square root of the {dim}x{dim} covariance product '
            f'({FID_METHOD}; can take a minute on a CPU)...',
            flush=True,
        )
    start = time.time()
    value = scores.fid_from_stats(real['mu'], real['sigma'], fake['mu'], fake['sigma'], method=FID_METHOD)
    if show:
        print(f'{name}: FID matrix square root done in {time.time() - start:.1f} s', flush=True)
    return value


def _kid(ctx: _Context) -> dict[str, float]:
    det = detectors.load_detector(detectors.INCEPTION, ctx.detector_path, ctx.device)
    real, labels = _real_features(ctx, det, 'features')
    fake = _gen_features(ctx, det, 'features', labels, det.name)
    return {ctx.name: scores.kid_from_features(real['features'], fake['features'], seed=ctx.seed)}


def _pr(ctx: _Context) -> dict[str, float]:
    det = detectors.load_detector(detectors.VGG16, ctx.vgg16_path, ctx.device)
    real, labels = _real_features(ctx, det, 'features')
    fake = _gen_features(ctx, det, 'features', labels)
    precision, recall = scores.precision_recall(real['features'], fake['features'], k=3, device=ctx.device)
    return {f'{ctx.name}_precision': precision, f'{ctx.name}_recall': recall}


def _is(ctx: _Context) -> dict[str, float]:
    det = detectors.load_detector(detectors.INCEPTION, ctx.detector_path, ctx.device)
    det.require_classifier()  # fail before generating if the detector has no softmax layer
    probs = _gen_features(ctx, det.probabilities, 'features', _label_pool(ctx, None))
    mean, std = scores.inception_score(probs['features'], splits=10)
    return {f'{ctx.name}_mean': mean, f'{ctx.name}_std': std}


def _ppl(ctx: _Context) -> dict[str, float]:
    det = detectors.load_detector(detectors.VGG16, ctx.vgg16_path, ctx.device)
    value = ppl.compute_ppl(
        ctx.G,
        det.lpips,
        labels=_label_pool(ctx, None),
        num_samples=ctx.num_gen,
        batch_size=max(2, ctx.batch_size // 2),
        seed=ctx.seed,
        device=ctx.device,
        progress=ctx.progress,
    )
    return {ctx.name: value}


_KINDS: dict[str, Callable[[_Context], dict[str, float]]] = {
    'fid': _fid,
    'kid': _kid,
    'pr': _pr,
    'is': _is,
    'ppl': _ppl,
}


def calc_metric(
    metric: str,  # A name from list_valid_metrics(), e.g. 'fid50k_full'.
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
    """Compute one registered metric of generator ``G``; every process of a group must call it together.

    ``G(z [N, z_dim], c [N, c_dim]) -> [N, C, R, R]`` in [-1, 1]. ``*_full``/legacy metrics override the
    ``max_size``/``xflip`` of ``dataset_kwargs``. With ``num_gpus > 1`` each process computes a shard and
    all get the full result. ``num_gen`` serves tests and quick looks. With one ``shared`` dict for the
    calls of one network, FID and KID of the same count extract the generated images' features once; use
    a fresh dict per network.

    Returns ``{'results': {name: value}, 'metric', 'total_time' (s), 'total_time_str', 'num_gpus'}``.
    """
    spec = _check_call(metric, num_gpus, rank)
    start = time.time()
    ctx = _Context(
        name=metric,
        spec=spec,
        G=G,
        dataset_kwargs=dict(dataset_kwargs or {}),
        device=torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu')),
        cache=cache,
        detector_path=detector_path,
        vgg16_path=vgg16_path,
        ref_stats=ref_stats if spec.kind == 'fid' else None,
        num_gen=int(num_gen or spec.num_gen),
        seed=int(seed),
        progress=progress,
        batch_size=int(batch_size),
        shared=shared,
    )
    return _result(metric, _KINDS[spec.kind](ctx), time.time() - start, num_gpus)


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


def _relative(path: str | None, run_dir: str | None) -> str | None:
    """``path`` relative to ``run_dir`` (or unchanged when either is None)."""
    if path is None or run_dir is None:
        return path
    return os.path.relpath(os.path.abspath(path), os.path.abspath(run_dir))


def report_metric(result: dict, run_dir: str | None = None, snapshot_pkl: str | None = None) -> None:
    """Print a :func:`calc_metric` result as one JSON line and append it to ``<run_dir>/metric-<name>.jsonl``.

    The line holds ``results``, ``metric``, ``total_time``, ``total_time_str``, ``num_gpus``,
    ``snapshot_pkl`` (relative to ``run_dir``) and ``timestamp``. ``run_dir=None`` only prints.
    """
    line = {k: result[k] for k in ('results', 'metric', 'total_time', 'total_time_str', 'num_gpus')}
    line['snapshot_pkl'] = _relative(snapshot_pkl, run_dir)
    line['timestamp'] = time.time()
    text = json.dumps(line)
    if run_dir is not None:
        with open(os.path.join(run_dir, f'metric-{result["metric"]}.jsonl'), 'a') as f:
            f.write(text + '\n')
    print(text, flush=True)


def _point_best(run_dir: str, snapshot: str) -> None:
    """Atomically point ``<run_dir>/network-snapshot-best.pkl`` at ``snapshot`` (hard link, else copy)."""
    best = os.path.join(run_dir, 'network-snapshot-best.pkl')
    tmp = os.path.join(run_dir, dnnlib.util.temp_file_prefix(best) + 'tmp')
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        os.link(snapshot, tmp)
    except OSError:
        shutil.copyfile(snapshot, tmp)
    os.replace(tmp, best)


def update_best(
    run_dir: str,  # The run directory that holds best-<metric>.json and the snapshots.
    metric: str,  # The metric name, e.g. 'fid50k_full'.
    result: dict,  # A calc_metric() result.
    snapshot_pkl: str | None,  # The evaluated snapshot (a path from the current directory); None = no link.
    key: str | None = None,  # Which value of result['results']; None = the metric name, else the first.
    lower_is_better: bool | None = None,  # None = from the registry (see below).
) -> bool:
    """Track the best snapshot of ``metric`` in ``<run_dir>/best-<metric>.json``; True on a new best.

    ``key`` defaults to the metric name, else the first value (e.g. ``pr50k3_full_precision``). On a new
    best ``snapshot_pkl`` is hard linked (copied where links fail) to ``network-snapshot-best.pkl``. The
    registry's direction: FID, KID, PPL lower is better; IS, precision/recall higher; unregistered names
    lower.

    The JSON holds ``metric``, ``key``, ``value``, ``lower_is_better``, ``snapshot_pkl`` (relative),
    ``kimg`` (from the snapshot name, with its decimals if it has any; or None) and ``timestamp``.
    Non-finite values never become the best.
    """
    results = result['results']
    key = key or (metric if metric in results else next(iter(results)))
    if lower_is_better is None:
        spec = metric_spec(metric)
        lower_is_better = spec is None or spec.kind not in ('is', 'pr')
    value = float(results[key])
    if not math.isfinite(value):
        return False
    best_path = os.path.join(run_dir, f'best-{metric}.json')
    if os.path.isfile(best_path):
        with open(best_path) as f:
            old = float(json.load(f)['value'])
        if (value >= old) if lower_is_better else (value <= old):
            return False
    if snapshot_pkl is not None:
        _point_best(run_dir, snapshot_pkl)
    kimg = run_io.snapshot_kimg(snapshot_pkl) if snapshot_pkl is not None else None
    data = dict(
        metric=metric,
        key=key,
        value=value,
        lower_is_better=lower_is_better,
        snapshot_pkl=_relative(snapshot_pkl, run_dir),
        kimg=kimg,
        timestamp=time.time(),
    )
    dnnlib.util.atomic_write(best_path, lambda f: json.dump(data, f, indent=2), binary=False)
    return True
