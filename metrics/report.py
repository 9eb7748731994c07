"""The run directory's metric files: one JSON line per evaluation in ``metric-<name>.jsonl``, and the
best-snapshot pointer ``best-<metric>.json`` + ``network-snapshot-best.pkl`` (both replaced atomically)."""

from __future__ import annotations

import json
import math
import os
import shutil
import time

import dnnlib
from metrics import registry
from torch_utils import run_io


def _relative(path: str | None, run_dir: str | None) -> str | None:
    """``path`` relative to ``run_dir`` (or unchanged when either is None)."""
    if path is None or run_dir is None:
        return path
    return os.path.relpath(os.path.abspath(path), os.path.abspath(run_dir))


def report_metric(result: dict, run_dir: str | None = None, snapshot_pkl: str | None = None) -> None:
    """Print a ``calc_metric`` result as one JSON line and append it to ``<run_dir>/metric-<name>.jsonl``.

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


def read_results(run_dir: str, metric: str) -> dict[str, dict]:
    """``{snapshot_pkl: results}`` of ``<run_dir>/metric-<metric>.jsonl`` (names relative to ``run_dir``; the
    newest line of a snapshot wins; unreadable lines skipped; ``{}`` without the file)."""
    path = os.path.join(run_dir, f'metric-{metric}.jsonl')
    out: dict[str, dict] = {}
    if not os.path.isfile(path):
        return out
    with open(path) as f:
        for text in f:
            try:
                line = json.loads(text)
                out[line['snapshot_pkl']] = dict(line.get('results') or {})
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return out


def evaluated(run_dir: str, metric: str, snapshot_pkl: str) -> bool:
    """Whether ``<run_dir>/metric-<metric>.jsonl`` has a line for ``snapshot_pkl`` (bad lines skipped)."""
    return _relative(snapshot_pkl, run_dir) in read_results(run_dir, metric)


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
    lower_is_better: bool | None = None,  # None = the direction of the metric's kind (see below).
) -> bool:
    """Track the best snapshot of ``metric`` in ``<run_dir>/best-<metric>.json``; True on a new best.

    ``key`` defaults to the metric name, else the first value (e.g. ``pr50k3_full_precision``). On a new
    best ``snapshot_pkl`` is hard linked (copied where links fail) to ``network-snapshot-best.pkl``. The
    direction comes from the kind (:func:`registry.lower_is_better`): FID, KID, PPL lower is better; IS,
    precision/recall higher; unregistered names lower.

    The JSON holds ``metric``, ``key``, ``value``, ``lower_is_better``, ``snapshot_pkl`` (relative),
    ``kimg`` (from the snapshot name, with its decimals if it has any; or None) and ``timestamp``.
    Non-finite values never become the best.
    """
    results = result['results']
    key = key or (metric if metric in results else next(iter(results)))
    if lower_is_better is None:
        lower_is_better = registry.lower_is_better(metric)
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
