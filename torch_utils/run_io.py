"""What a training run writes besides snapshots: image grids, stats.jsonl, TensorBoard, log.txt."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import TextIO

import numpy as np
import PIL.Image
import torch

from dnnlib.util import atomic_write

_KIMG_TAG = re.compile(r'(?P<kimg>\d{6,})(?:\.(?P<rest>\d{3}))?')


def kimg_tag(cur_nimg: int, fine: bool) -> str:
    """The count in snapshot and grid names: ``'000200'`` (whole kimg, the reference's names) or, with
    ``fine``, ``'000000.256'`` (kimg with three decimals: the exact image count, for sub-kimg intervals)."""
    kimg, rest = divmod(int(cur_nimg), 1000)
    return f'{kimg:06d}.{rest:03d}' if fine else f'{kimg:06d}'


def parse_kimg_tag(text: str) -> int | None:
    """The image count of a :func:`kimg_tag` (a whole-kimg tag counts as its first image), or None."""
    m = _KIMG_TAG.fullmatch(text)
    return None if m is None else int(m['kimg']) * 1000 + int(m['rest'] or 0)


def snapshot_kimg(path: str) -> float | None:
    """The kimg in a snapshot file name: whole (``network-snapshot-000200.pkl`` -> 200) or with three
    decimals (``network-snapshot-000000.256.pkl`` -> 0.256); None for other names (``...-best.pkl``)."""
    m = re.fullmatch(r'network-snapshot-([0-9.]+)\.pkl', os.path.basename(path))
    nimg = parse_kimg_tag(m.group(1)) if m else None
    return None if nimg is None else (nimg / 1000 if '.' in m.group(1) else nimg // 1000)


def output_path(run_dir: str, prefix: str, suffix: str, cur_nimg: int, fine: bool) -> str:
    """``<run_dir>/<prefix><kimg_tag><suffix>`` that never replaces an earlier file of the run: the whole-kimg
    name unless ``fine`` is asked for or that name is taken (two outputs within one kimg)."""
    path = os.path.join(run_dir, f'{prefix}{kimg_tag(cur_nimg, fine)}{suffix}')
    if not fine and os.path.exists(path):
        path = os.path.join(run_dir, f'{prefix}{kimg_tag(cur_nimg, True)}{suffix}')
    return path


def grid_size(resolution: int) -> tuple[int, int]:
    """Columns and rows of the snapshot grid: about a 7680x4320 canvas, 7-32 columns, 4-32 rows."""
    return int(np.clip(7680 // resolution, 7, 32)), int(np.clip(4320 // resolution, 4, 32))


def choose_grid_indices(labels: np.ndarray, gw: int, gh: int, seed: int = 0) -> np.ndarray:
    """Pick ``gw * gh`` dataset indices; with labels ``[N, L]`` each row shows one label value.

    Returns an int array ``[gh * gw]`` (row-major).
    """
    rnd = np.random.RandomState(seed)
    n = len(labels)
    if labels.shape[1] == 0:
        return rnd.choice(n, size=gw * gh, replace=n < gw * gh)
    groups: dict[tuple, list[int]] = {}
    for idx in rnd.permutation(n):
        groups.setdefault(tuple(labels[idx].tolist()), []).append(int(idx))
    keys = sorted(groups)
    rows = []
    for row in range(gh):
        members = groups[keys[row % len(keys)]]
        rows.append([members[i % len(members)] for i in range(gw)])
    return np.array(rows).reshape(-1)


def save_image_grid(images: np.ndarray | torch.Tensor, path: str, drange: tuple, grid: tuple) -> None:
    """Tile ``[gw * gh, C, H, W]`` images (values in ``drange``) into one PNG, row-major."""
    img = torch.as_tensor(images).detach().cpu().to(torch.float32).numpy()
    lo, hi = drange
    img = np.rint((img - lo) * (255 / (hi - lo))).clip(0, 255).astype(np.uint8)
    gw, gh = grid
    _n, c, h, w = img.shape
    img = img.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)
    pixels = PIL.Image.fromarray(img[:, :, 0] if c == 1 else img)
    atomic_write(path, lambda handle: pixels.save(handle, format='PNG'))


class StatsWriter:
    """Appends one JSON line per tick to stats.jsonl and mirrors scalars to TensorBoard when available."""

    def __init__(self, run_dir: str, start_time: float) -> None:
        self.jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'a')  # noqa: SIM115 - closed in close()
        self.start_time = start_time
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(run_dir)
        except ImportError:
            pass

    def write(self, stats: dict, cur_nimg: int, timestamp: float | None = None) -> None:
        """Write ``{name: {'num', 'mean', 'std'}}`` for the tick ending at ``cur_nimg`` images."""
        timestamp = time.time() if timestamp is None else timestamp
        self.jsonl.write(json.dumps(dict(stats, timestamp=timestamp)) + '\n')
        self.jsonl.flush()
        if self.tb is not None:
            step = int(cur_nimg / 1e3)
            walltime = timestamp - self.start_time
            for name, value in stats.items():
                self.tb.add_scalar(name, value['mean'], global_step=step, walltime=walltime)
            self.tb.flush()

    def close(self) -> None:
        """Close the files."""
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


class Tee:
    """Copy everything printed to stdout/stderr into ``log.txt`` (append mode)."""

    def __init__(self, path: str) -> None:
        self.file = open(path, 'a')  # noqa: SIM115 - closed in close()
        self.stdout: TextIO = sys.stdout
        self.stderr: TextIO = sys.stderr
        sys.stdout = _TeeStream(self.stdout, self.file)
        sys.stderr = _TeeStream(self.stderr, self.file)

    def close(self) -> None:
        """Restore stdout/stderr and close the log."""
        sys.stdout, sys.stderr = self.stdout, self.stderr
        self.file.close()


class _TeeStream:
    def __init__(self, stream: TextIO, file: TextIO) -> None:
        self.stream, self.file = stream, file

    def write(self, text: str) -> int:
        self.file.write(text)
        self.file.flush()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)
