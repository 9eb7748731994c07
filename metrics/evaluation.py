"""Evaluating a generator the way training (at snapshots) and calc_metrics.py both do: every process computes
each metric, rank 0 appends it to metric-<name>.jsonl and, in training, keeps the best-snapshot pointer."""

from __future__ import annotations

from typing import Any

import torch

from metrics import metric_main, registry, report
from torch_utils import distributed


def evaluate_and_report(
    metrics: list[str],  # Names from metric_main.parse_metric_list(); [] = nothing to do.
    G: torch.nn.Module,  # The generator (G_ema) on ``device``; not modified.
    dataset_kwargs: dict,  # Dataset kwargs of the reals (path, use_labels, ...), as for calc_metric.
    *,
    rank: int,  # This process's rank; every process of the group calls together.
    device: torch.device,  # Where G and the detectors run.
    run_dir: str | None,  # Rank 0 appends metric-<name>.jsonl here; None = print only.
    snapshot_pkl: str | None,  # The evaluated snapshot, named in each line; None = not named.
    keep_best: bool = False,  # Rank 0 also updates best-<first metric>.json and network-snapshot-best.pkl.
    **calc_options: Any,  # More calc_metric options (detector_path, ref_stats, num_gen, seed, cache, ...).
) -> dict[str, dict]:
    """Compute ``metrics`` of ``G`` with all processes (:func:`metric_main.calc_metric`) and report each on
    rank 0 (:func:`report.report_metric`); with ``keep_best`` (needs ``run_dir``) the first metric also
    updates the best pointer (:func:`report.update_best`).

    Metrics whose kinds share features and have the same generated count (FID and KID) extract the
    generated features once (:func:`registry.feature_share`). Returns the values as training statistics
    ``{'Metrics/<name>': {'num': 1, 'mean': value, 'std': 0.0}}`` (``{}`` for no metrics).
    """
    out, shared = {}, registry.feature_share(metrics)
    for idx, metric in enumerate(metrics):
        result = metric_main.calc_metric(
            metric,
            G=G,
            dataset_kwargs=dataset_kwargs,
            num_gpus=distributed.world_size(),
            rank=rank,
            device=device,
            shared=shared,
            **calc_options,
        )
        if rank == 0:
            report.report_metric(result, run_dir, snapshot_pkl)
            if keep_best and idx == 0:
                report.update_best(run_dir, metric, result, snapshot_pkl)
        for name, value in result['results'].items():
            out[f'Metrics/{name}'] = {'num': 1, 'mean': float(value), 'std': 0.0}
    return out
