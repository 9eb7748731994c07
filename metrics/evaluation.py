"""Evaluating a generator the way training (at snapshots) and calc_metrics.py both do: every process computes
each metric, rank 0 appends it to metric-<name>.jsonl and, in training, keeps the best-snapshot pointer; and
completing the evaluation a run owes the snapshot it was stopped in the middle of evaluating."""

from __future__ import annotations

import json
import os
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


def _run_options(run_dir: str) -> dict | None:
    """The run's ``training_options.json``, or None where ``run_dir`` is not a readable run directory."""
    try:
        with open(os.path.join(run_dir, 'training_options.json')) as f:
            options = json.load(f)
    except (OSError, ValueError):
        return None
    return options if isinstance(options, dict) else None


def pointer_metric(run_dir: str) -> str | None:
    """The metric that ``<run_dir>/network-snapshot-best.pkl`` follows: the run's first training metric, else
    the metric of its oldest ``best-<metric>.json`` (set by an earlier calc_metrics.py), else None (the next
    metric evaluated into the run takes it)."""
    metrics = (_run_options(run_dir) or {}).get('metrics') or []
    if metrics:
        return metrics[0]
    found = [n for n in os.listdir(run_dir) if n.startswith('best-') and n.endswith('.json')]
    oldest = min(found, key=lambda n: os.path.getmtime(os.path.join(run_dir, n)), default=None)
    return oldest[len('best-') : -len('.json')] if oldest else None


def owed_metrics(snapshot_pkl: str) -> list[str]:
    """The metrics that the run which wrote ``snapshot_pkl`` evaluates at each snapshot (``metrics`` of the
    ``training_options.json`` beside it) and that its ``metric-<name>.jsonl`` has no line for: the run was
    stopped during that evaluation. [] for a file outside a run directory."""
    run_dir = os.path.dirname(os.path.abspath(snapshot_pkl))
    return _owed(run_dir, _run_options(run_dir) or {}, snapshot_pkl)


def _owed(run_dir: str, options: dict, snapshot_pkl: str) -> list[str]:
    """:func:`owed_metrics` with the run's options already read."""
    return [m for m in options.get('metrics') or [] if not report.evaluated(run_dir, m, snapshot_pkl)]


def evaluate_owed(
    snapshot_pkl: str,  # A snapshot that training is about to continue from (or has ended with).
    G: torch.nn.Module,  # Its G_ema on ``device``; not modified.
    dataset_kwargs: dict,  # The reals of the run continuing from it.
    *,
    rank: int,
    device: torch.device,
) -> None:
    """Evaluate :func:`owed_metrics` of ``snapshot_pkl`` into its own run directory, as that run would have
    (the best pointer included when the run's first metric is owed), so that a run stopped during an
    evaluation loses none. Skipped, with a note naming the calc_metrics.py command, when the reals differ
    from that run's. Every process calls it; rank 0 reads the files and decides for all."""
    run_dir = os.path.dirname(os.path.abspath(snapshot_pkl))
    plan = None
    if rank == 0:
        options = _run_options(run_dir) or {}
        owed = _owed(run_dir, options, snapshot_pkl)
        same_reals = options.get('training_set_kwargs') == json.loads(json.dumps(dataset_kwargs))
        if owed and not same_reals:
            print(
                f'Note: {snapshot_pkl} has no {", ".join(owed)} evaluation, and this run trains on other '
                f'reals than its run; to add it: python calc_metrics.py --network={snapshot_pkl} '
                f'--metrics={",".join(owed)}'
            )
        elif owed:
            print(f'{snapshot_pkl}: its run was stopped before evaluating {", ".join(owed)}; evaluating now.')
            plan = (owed, owed[0] == options['metrics'][0])
    plan = distributed.gather_objects(plan)[0]
    if plan is not None:
        owed, keep_best = plan
        evaluate_and_report(
            owed,
            G,
            dataset_kwargs,
            rank=rank,
            device=device,
            run_dir=run_dir,
            snapshot_pkl=snapshot_pkl,
            keep_best=keep_best,
        )
