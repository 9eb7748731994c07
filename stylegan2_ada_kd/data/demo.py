"""The built-in demo dataset (``--data=demo``): 512 procedurally drawn 32x32 RGB images of a coloured
disc or square on a two-tone gradient background, generated deterministically on first use and
cached as a dataset zip. Nothing is downloaded."""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import IO

import numpy as np
import PIL.Image

from dnnlib.util import atomic_write, make_cache_dir_path

DEMO_NAME = 'demo'
DEMO_VERSION = 1
NUM_IMAGES = 512
RESOLUTION = 32


def _draw(rnd: np.random.RandomState, res: int) -> np.ndarray:
    """One ``[res, res, 3]`` uint8 image: gradient background with one disc or square."""
    yy, xx = np.mgrid[0:res, 0:res] / (res - 1)
    top, bottom = rnd.uniform(0, 1, size=(2, 3))
    angle = rnd.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)), 0, 1)[..., None]
    img = top * (1 - t) + bottom * t
    cx, cy = rnd.uniform(0.3, 0.7, size=2)
    radius = rnd.uniform(0.12, 0.3)
    if rnd.rand() < 0.5:
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
    else:
        mask = (np.abs(xx - cx) < radius) & (np.abs(yy - cy) < radius)
    img[mask] = rnd.uniform(0, 1, size=3)
    return np.rint(img * 255).clip(0, 255).astype(np.uint8)


def demo_dataset_path() -> str:
    """Path of the demo dataset zip, generating it (through :func:`atomic_write`) when missing."""
    path = make_cache_dir_path('datasets', f'{DEMO_NAME}-v{DEMO_VERSION}-{RESOLUTION}.zip')
    if not os.path.isfile(path):
        atomic_write(path, _write_zip)
    return path


def _write_zip(handle: IO) -> None:
    """The demo images (seed 2023) and dataset.json as an uncompressed dataset zip into ``handle``."""
    rnd = np.random.RandomState(2023)
    with zipfile.ZipFile(handle, 'w', compression=zipfile.ZIP_STORED) as zf:
        for idx in range(NUM_IMAGES):
            buf = io.BytesIO()
            PIL.Image.fromarray(_draw(rnd, RESOLUTION)).save(buf, format='png', compress_level=0)
            zf.writestr(f'{idx // 1000:05d}/img{idx:08d}.png', buf.getvalue())
        zf.writestr(
            'dataset.json', json.dumps({'labels': None, 'meta': {'source': 'stylegan2_ada_kd.data.demo'}})
        )
