"""Shared test fixtures: tiny network and CLIP configs and the optional ../shared compat folder."""

import copy
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The reference-data folder lives beside the checkout (../shared); a user's clone has none.
SHARED = Path(os.environ.get('SG2KD_SHARED', REPO.parent / 'shared'))
COMPAT = SHARED / 'compat'


def require_compat(name: str) -> Path:
    """Path of a compat file, or skip the test when ../shared/compat is absent."""
    path = COMPAT / name
    if not path.exists():
        pytest.skip(f'{path} not present (reference data lives in ../shared/compat)')
    return path


TINY_G = dict(
    z_dim=8,
    w_dim=8,
    c_dim=0,
    img_resolution=16,
    img_channels=3,
    mapping_kwargs=dict(num_layers=2),
    synthesis_kwargs=dict(channel_base=128, channel_max=16),
)
TINY_D = dict(
    c_dim=0,
    img_resolution=16,
    img_channels=3,
    channel_base=128,
    channel_max=16,
    epilogue_kwargs=dict(mbstd_group_size=2),
)


# A CLIP small enough for CPU tests (E = 16, 32x32 input, 2+2 layers of width 32; about 1.6M parameters,
# mostly the token embedding), as an open_clip model-config file, so that `random:PATH` builds it in any
# process (train.py in a subprocess too).
TINY_CLIP_CONFIG = REPO / 'tests' / 'data' / 'tiny-clip.json'
TINY_CLIP_SPEC = f'random:{TINY_CLIP_CONFIG}'


def tiny_clip_name() -> str:
    """The open_clip model name of TINY_CLIP_CONFIG ('tiny-clip'), added to open_clip in this process."""
    from stylegan2_ada_kd.kd.teacher_open_clip import add_config_file

    return add_config_file(TINY_CLIP_SPEC, str(TINY_CLIP_CONFIG))


IMAGE_FOLDER = 'stylegan2_ada_kd.data.dataset.ImageFolderDataset'  # training_set_kwargs' class_name
TINY_OPT = dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8)


TINY_COMMON = dict(c_dim=0, img_resolution=16, img_channels=3)  # What the loop takes from the dataset.


def tiny_net_kwargs():
    """``(G_kwargs, D_kwargs)``: TINY_G / TINY_D as class_name + options, without TINY_COMMON's keys."""
    own = lambda kw, cls: dict(
        {k: v for k, v in copy.deepcopy(kw).items() if k not in TINY_COMMON}, class_name=cls
    )
    return own(TINY_G, 'stylegan2_ada_kd.networks.Generator'), own(
        TINY_D, 'stylegan2_ada_kd.networks.Discriminator'
    )


def kd_loss_kwargs(**kw):
    """KDLoss keywords ``kw`` with the variant's weights and cross-term probability resolved where not given
    (as the KD family resolves them for train.py)."""
    from stylegan2_ada_kd.kd.variants import resolve_kd_settings

    return {**resolve_kd_settings(kw.get('variant', 'paper'), cross_p=kw.get('cross_p')), **kw}


def tiny_record(loss_kwargs, **overrides):
    """A complete run record (``RunRecord``) for TINY_G / TINY_D: Adam, a batch of 4 on one CPU process, no
    augmentation, ticks of 4 images, no snapshots, grids or metrics; ``overrides`` replace fields."""
    from stylegan2_ada_kd.training.record import steps_record

    G_kwargs, D_kwargs = tiny_net_kwargs()
    fields = dict(
        G_kwargs=G_kwargs,
        D_kwargs=D_kwargs,
        G_opt_kwargs=TINY_OPT,
        D_opt_kwargs=TINY_OPT,
        loss_kwargs=loss_kwargs,
        batch_size=4,
        batch_gpu=4,
        ema_kimg=10,
        ema_rampup=None,
        total_kimg=0.004,
        kimg_per_tick=0.004,
        cudnn_benchmark=False,
    )
    return steps_record(**{**fields, **overrides})


def tiny_training_run(loss_kwargs, **overrides):
    """``build_training_run`` of :func:`tiny_record` (TINY_G / TINY_D, batch 4) on the CPU."""
    from stylegan2_ada_kd.training.run import build_training_run

    return build_training_run(tiny_record(loss_kwargs, **overrides), torch.device('cpu'), TINY_COMMON)


@pytest.fixture(scope='session')
def emulation():
    """The CUDA kernels' code compiled for the CPU (``torch_utils/ops/kernel_emulation.cpp``, float64):
    opt-in with ``SG2KD_TEST_EMULATION=1``, since it compiles."""
    if os.environ.get('SG2KD_TEST_EMULATION') != '1':
        pytest.skip('set SG2KD_TEST_EMULATION=1 to compile and run the CPU emulation of the CUDA kernels')
    import tempfile

    from torch.utils.cpp_extension import load

    build = Path(tempfile.gettempdir()) / 'sg2kd_kernel_emulation'
    build.mkdir(parents=True, exist_ok=True)
    src = REPO / 'torch_utils' / 'ops' / 'kernel_emulation.cpp'
    return load('sg2kd_kernel_emulation', [str(src)], build_directory=str(build), extra_cflags=['-O2'])


class TinyImageEncoder(torch.nn.Module):
    """A small image encoder ``[N, 3, H, W] -> [N, 12]`` standing in for a TorchScript KD teacher."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)
        self.fc = torch.nn.Linear(8, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=[2, 3]))


def make_image_folder(root: Path, n: int = 16, res: int = 16, seed: int = 0) -> str:
    """``n`` RGB ``res``x``res`` PNGs, each a flat colour with a coloured square, in ``root`` (created)."""
    import numpy as np
    import PIL.Image

    root.mkdir(parents=True, exist_ok=True)
    rnd = np.random.RandomState(seed)
    for i in range(n):
        img = np.zeros([res, res, 3], np.uint8) + rnd.randint(0, 255, size=3).astype(np.uint8)
        img[res // 4 : res * 3 // 4, res // 4 : res * 3 // 4] = rnd.randint(0, 255, size=3)
        PIL.Image.fromarray(img).save(root / f'img{i:03d}.png')
    return str(root)


# A hang guard for the end-to-end subprocess tests, not a speed limit: each takes seconds on 2 quiet
# cores, and a loaded machine may be many times slower. Override with SG2KD_TEST_TIMEOUT (seconds).
SUBPROCESS_TIMEOUT = float(os.environ.get('SG2KD_TEST_TIMEOUT', 3600))


@pytest.fixture(autouse=True, scope='session')
def _private_cache_dir(tmp_path_factory):
    """Downloads, dataset-check verdicts and metric statistics go to a per-session folder, not ~/.cache."""
    previous = os.environ.get('DNNLIB_CACHE_DIR')
    os.environ['DNNLIB_CACHE_DIR'] = str(tmp_path_factory.mktemp('dnnlib-cache'))
    yield
    if previous is None:
        os.environ.pop('DNNLIB_CACHE_DIR', None)
    else:
        os.environ['DNNLIB_CACHE_DIR'] = previous


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (every download fails at once with 'network unreachable') and an empty download cache."""
    import requests

    from dnnlib import util

    def unreachable(*args, **kwargs):
        raise requests.ConnectionError('network unreachable')

    monkeypatch.setattr(requests, 'get', unreachable)
    monkeypatch.setattr(util.time, 'sleep', lambda s: None)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_terminal_summary(terminalreporter):
    """One line that dates the suite's counts with the commit they were measured at (for the README)."""
    import subprocess

    counts = {k: len(terminalreporter.stats.get(k, [])) for k in ('passed', 'failed', 'skipped', 'error')}
    try:
        commit = subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ''
    summary = ', '.join(f'{n} {k}' for k, n in counts.items() if n)
    terminalreporter.write_line(f'stylegan2-ada-kd suite at commit {commit or "unknown"}: {summary}')
