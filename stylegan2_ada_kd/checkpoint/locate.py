"""Where a network file comes from: a path, a URL (fetched into the download cache), a name of the
reference's transfer-learning pickles (``ffhq256``, ...), a run directory (its newest snapshot), or, for
``--resume=auto``, the newest snapshot of the newest run in ``--outdir`` that was started with the same
options."""

from __future__ import annotations

import json
import os
import re
from typing import Callable

from dnnlib.util import local_path
from torch_utils.run_io import snapshot_kimg

PRETRAINED = {
    name: 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/'
    + tail
    for name, tail in {
        'ffhq256': 'ffhq-res256-mirror-paper256-noaug.pkl',
        'ffhq512': 'ffhq-res512-mirror-stylegan2-noaug.pkl',
        'ffhq1024': 'ffhq-res1024-mirror-stylegan2-noaug.pkl',
        'celebahq256': 'celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl',
        'lsundog256': 'lsundog-res256-paper256-kimg100000-noaug.pkl',
    }.items()
}


def snapshots(run_dir: str) -> list[str]:
    """The ``network-snapshot-<kimg>.pkl`` files of a run directory, oldest first (by the image count in
    their names, whole-kimg and three-decimal forms alike; ``network-snapshot-best.pkl`` excluded)."""
    found = []
    for name in os.listdir(run_dir):
        kimg = snapshot_kimg(name)
        if kimg is not None:
            found.append((kimg, os.path.getmtime(os.path.join(run_dir, name)), name))
    return [os.path.join(run_dir, name) for *_, name in sorted(found)]


def newest_snapshot(run_dir: str) -> str | None:
    """The snapshot with the largest image count in ``run_dir``, or None."""
    found = snapshots(run_dir)
    return found[-1] if found else None


def select_snapshots(run_dir: str, spec: str) -> list[str]:
    """The snapshots of ``run_dir`` that ``spec`` names, oldest first: ``'all'``, ``'newest'``, or kimg values
    and inclusive ranges such as ``'100,200-300'`` (three-decimal mid-tick snapshots fall in ranges). Raises
    ``ValueError`` naming the run's kimg values when a value names no snapshot or nothing is selected."""
    found = snapshots(run_dir)
    kimgs = [snapshot_kimg(path) for path in found]
    have = ', '.join(f'{k:g}' for k in kimgs) or 'none'
    if spec in ('all', 'newest'):
        chosen = found if spec == 'all' else found[-1:]
    else:
        keep = set()
        for item in spec.split(','):
            match = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*(?:-\s*(\d+(?:\.\d+)?)\s*)?', item)
            if match is None:
                raise ValueError(
                    f"cannot parse {item!r}: expected 'all', 'newest' or kimg values and ranges "
                    "like '100,200-300'"
                )
            lo = float(match.group(1))
            hi = float(match.group(2)) if match.group(2) else lo
            hits = {i for i, k in enumerate(kimgs) if lo - 1e-6 <= k <= hi + 1e-6}
            if not hits and match.group(2) is None:
                raise ValueError(f'{run_dir} has no snapshot at {lo:g} kimg (it has {have})')
            keep |= hits
        chosen = [found[i] for i in sorted(keep)]
    if not chosen:
        raise ValueError(f'{spec!r} selects no snapshot of {run_dir} (it has {have})')
    return chosen


def resolve_network(spec: str, option: str) -> str:
    """The local network file that ``spec`` names for the command-line option ``option`` (e.g. '--resume').

    ``spec``: a file, a run directory (its newest snapshot), a ``file://``/``http(s)://`` URL (downloaded into
    the cache now) or a name from :data:`PRETRAINED`. Raises ``ValueError`` with one line naming the option
    and what to pass instead.
    """
    if os.path.isdir(spec):
        newest = newest_snapshot(spec)
        if newest is None:
            runs = sorted(d.path for d in os.scandir(spec) if d.is_dir() and newest_snapshot(d.path))
            hint = f' (the newest run in it: {option}={runs[-1]})' if runs else ''
            raise ValueError(
                f'{option}={spec} is a directory without network-snapshot-*.pkl; pass a run directory that '
                f'has a snapshot{hint}, or a snapshot file'
            )
        return newest
    url = PRETRAINED.get(spec, spec)
    try:
        return local_path(url)
    except OSError as err:
        if '://' in url:
            reason = str(err.__cause__ or err).splitlines()[0]
            raise ValueError(
                f'{option}={spec}: cannot download {url} ({reason}); download it where you can and pass the '
                f'local file: {option}=/path/to/{os.path.basename(url)}'
            ) from err
        names = ', '.join(sorted(PRETRAINED))
        raise ValueError(
            f'{option}={spec}: no such file or directory; pass a network-snapshot-*.pkl, a run directory, '
            f'a URL or one of the names {names}'
        ) from err


def find_auto_resume(outdir: str, same_options: Callable[[dict], bool]) -> str | None:
    """``--resume=auto``: the newest snapshot of the newest numbered run directory in ``outdir`` whose
    ``training_options.json`` satisfies ``same_options``; None when there is none (a fresh start)."""
    if not os.path.isdir(outdir):
        return None
    runs = []
    for name in os.listdir(outdir):
        m = re.match(r'^(\d+)-', name)
        if m and os.path.isfile(os.path.join(outdir, name, 'training_options.json')):
            runs.append((int(m.group(1)), os.path.join(outdir, name)))
    for _, run_dir in sorted(runs, reverse=True):
        try:
            with open(os.path.join(run_dir, 'training_options.json')) as f:
                options = json.load(f)
        except (OSError, ValueError):
            continue  # unreadable: not a run this one can continue
        newest = newest_snapshot(run_dir)
        if newest is not None and same_options(options):
            return newest
    return None
