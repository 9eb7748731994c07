"""What a metric computation gets (:class:`MetricContext`) and the steps that kinds share: opening the reals
for a spec's ``reals`` mode, the label pool of a conditional G, detector statistics of the reals (cached on
disk) and of the generated images (shared between kinds of one ``shares`` tag), and ``--ref-stats`` files.

A *detector view* is any callable ``uint8 [n, 3, H, W] -> float32 [n, F]`` with a name; the name identifies
its features in the real-statistics cache key, in the sharing of generated features and in ``--ref-stats``
checks (a :class:`metrics.detectors.Detector` is one, named ``det.name``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable

import numpy as np
import torch

import dnnlib
from metrics import detectors, features
from metrics.kinds import MetricKind, MetricSpec
from torch_utils import distributed

IMAGE_FOLDER_DATASET = 'stylegan2_ada_kd.data.dataset.ImageFolderDataset'
Detect = Callable[[torch.Tensor], torch.Tensor]  # uint8 [n, 3, H, W] -> float32 [n, F].


@dataclasses.dataclass
class MetricContext:
    """Everything one metric computation needs (built by ``metric_main.calc_metric``)."""

    name: str  # The metric name, e.g. 'fid5k_train'; the result keys start with it.
    spec: MetricSpec  # Its generated count, reals and cap.
    kind: MetricKind  # Its kind (detector, direction, ...).
    G: torch.nn.Module  # The generator; not modified.
    dataset_kwargs: dict  # Dataset kwargs of the reals (path, use_labels, ...).
    device: torch.device  # Where G and the detectors run.
    cache: bool  # Read and write the real-statistics cache.
    detector_path: str | None  # Inception TorchScript path or URL; None = the default.
    vgg16_path: str | None  # VGG16 TorchScript path or URL; None = the default.
    ref_stats: str | None  # .npz with mu/sigma replacing the reals (kinds with ref_stats only), or None.
    num_gen: int  # Generated images (or samples) to use.
    seed: int  # Seed of latents, labels, noise and random subsets.
    progress: bool  # Print progress (rank 0).
    batch_size: int  # Images per detector batch.
    shared: dict | None = None  # Generated features kept across the metrics of one network (or None).

    @property
    def num_workers(self) -> int:
        """DataLoader workers for decoding reals (3 on CUDA, none on CPU)."""
        return 3 if self.device.type == 'cuda' else 0

    @property
    def show_progress(self) -> bool:
        """Whether this process prints progress (``progress`` and rank 0)."""
        return self.progress and (not distributed.is_initialized() or torch.distributed.get_rank() == 0)

    def detector(self) -> detectors.Detector:
        """The kind's detector (``--detector`` for Inception, ``--vgg16`` for VGG16), loaded once."""
        path = self.detector_path if self.kind.detector == detectors.INCEPTION else self.vgg16_path
        return detectors.load_detector(self.kind.detector, path, self.device)


def open_dataset(ctx: MetricContext, reals: str | None) -> torch.utils.data.Dataset:
    """The dataset of ``ctx.dataset_kwargs`` adjusted for ``reals`` ('full', 'legacy', 'train'), checked
    against G's resolution and label width (items uint8 ``[C, H, W]``)."""
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


def label_pool(ctx: MetricContext, dataset: torch.utils.data.Dataset | None) -> np.ndarray | None:
    """``[L, c_dim]`` labels to draw generated labels from (None for an unconditional G); opens the
    training set when no ``dataset`` is given."""
    if ctx.G.c_dim == 0:
        return None
    if dataset is None:
        dataset = open_dataset(ctx, 'train')
    return np.stack([dataset.get_label(i) for i in range(len(dataset.files))]).astype(np.float32)


def generated_features(
    ctx: MetricContext,
    detect: Detect,  # The detector view.
    kind: str,  # 'mean_cov' or 'features' (see features.extract).
    labels: np.ndarray | None,  # [L, c_dim] label pool, or None.
    share_as: str | None = None,  # The view's name to share its features under; None = never shared.
) -> dict[str, np.ndarray]:
    """Detector statistics of ``ctx.num_gen`` generated images (see :func:`features.extract`).

    With ``ctx.shared`` and ``share_as``, the ``[N, F]`` features are kept there under the view's name and
    the generation settings, so the next metric of the same network and view reuses them.
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


def real_features(
    ctx: MetricContext,
    detect: Detect,  # The detector view.
    view_name: str,  # Its name (part of the cache key).
    kind: str,  # 'mean_cov' or 'features'.
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(statistics of the spec's reals, label pool), the statistics from the disk cache when possible."""
    dataset = open_dataset(ctx, ctx.spec.reals)
    stats = features.real_stats(
        dataset,
        ctx.dataset_kwargs['path'],
        detect,
        view_name,
        kind=kind,
        max_items=ctx.spec.max_reals,
        batch_size=ctx.batch_size,
        cache=ctx.cache,
        progress=ctx.progress,
        num_workers=ctx.num_workers,
    )
    return stats, label_pool(ctx, dataset)


def load_ref_stats(path: str, feature_dim: int, view_name: str) -> dict[str, np.ndarray]:
    """``mu [F]``/``sigma [F, F]`` of a ``--ref-stats`` .npz, checked for shape (and view, if recorded)."""
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
    recorded = str(stats.get('detector', view_name))
    if recorded != view_name:
        print(f'Warning: --ref-stats={path} was computed with detector {recorded}, not {view_name}.')
    return stats
