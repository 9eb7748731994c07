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


def resolve_network(spec: str, option: str) -> str:
    """The local network file that ``spec`` names for the command-line option ``option`` (e.g. '--resume').

    ``spec``: a file, a run directory (its newest snapshot), a ``file://``/``http(s)://`` URL (downloaded into
    the cache now) or a name from :data:`PRETRAINED`. Raises ``ValueError`` with one line naming the option
    and what to pass instead.
    """
    if os.path.isdir(spec):
        newest = newest_snapshot(spec)
        if newest is None:
            raise ValueError(
                f'{option}={spec} is a directory without network-snapshot-*.pkl; pass a run directory that '
                'has a snapshot, or a snapshot file'
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
