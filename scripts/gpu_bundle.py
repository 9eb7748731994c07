"""The bundle a bare GPU machine needs for ``scripts/gpu_verify.sh`` (built here, on the CPU machine).

``prepare`` writes into DEST (default ``.gpu/``, git-ignored) only what the device cannot make itself:

* ``obama64.zip``: the 100-shot Obama set centre-cropped to 64x64 (``dataset_tool.py``);
* ``inception-fp16.pt``: an fp16 copy of the TF-Inception FID detector (42 MB instead of 83 MB; the metrics
  load it and compute in fp32, see ``benchmarks/fid_real_sets.py --half`` for its calibration);
* ``efficientnet-fp16.pt``: an fp16 copy of the EfficientNet-Lite0 KD teacher
  (``experiments/efficientnet_teacher.py``);
* ``wheels/``: pytest and its pure-Python dependencies (the device has no pytest and no network);
* ``manifest.json``: every file with its size and sha256, the torch version and commit it was made with.

It fails when the bundle exceeds ``--max-mib`` (60: the device takes 64 MiB with the checkout). ``--dry``
builds the same layout from tiny stand-ins (generated images, random TorchScript detector and teacher, no
wheels) so the CPU test suite can check the logic in seconds. ``check`` verifies a bundle against its
manifest (run first on the device).

    python scripts/gpu_bundle.py prepare --dest=.gpu
    python scripts/gpu_bundle.py check --dest=.gpu
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import click
import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from torch_utils import torchscript  # noqa: E402

DATASET, DETECTOR, TEACHER, WHEELS = 'obama64.zip', 'inception-fp16.pt', 'efficientnet-fp16.pt', 'wheels'
WHEEL_PACKAGES = ('pytest', 'pluggy', 'iniconfig', 'packaging', 'pygments')


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _files(dest: str) -> list[str]:
    """Every file of the bundle, relative to ``dest``, sorted (the manifest itself excluded)."""
    out = []
    for folder, _, names in os.walk(dest):
        out += [os.path.relpath(os.path.join(folder, n), dest) for n in names if n != 'manifest.json']
    return sorted(out)


def _run(cmd: list[str]) -> None:
    print('+ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def _dataset(dest: str, source: str, dry: bool) -> None:
    """The 64x64 dataset zip, from ``source`` (or 24 generated images with ``dry``)."""
    with tempfile.TemporaryDirectory() as tmp:
        if dry:
            import PIL.Image

            rnd = np.random.RandomState(0)
            for i in range(24):
                pixels = rnd.randint(0, 255, [64, 64, 3], dtype=np.uint8)
                PIL.Image.fromarray(pixels).save(f'{tmp}/{i:03d}.png')
            source = tmp
        elif not os.path.isdir(source):
            raise click.UsageError(f'--source={source}: no such folder (the 100-shot Obama images)')
        out = os.path.join(dest, DATASET)
        _run([sys.executable, 'dataset_tool.py', f'--source={source}', f'--dest={out}', '--resolution=64',
              '--transform=center-crop'])  # fmt: skip


class _TinyDetector(torch.nn.Module):
    """Dry-mode stand-in with the plain detector convention: float ``[N, 3, 299, 299]`` -> ``[N, 2048]``."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=[2, 3]))


class _TinyTeacher(torch.nn.Module):
    """Dry-mode stand-in teacher: ``[N, 3, 32, 32]`` -> ``[N, 64]`` with the attributes the loader reads."""

    def __init__(self) -> None:
        super().__init__()
        self.input_size = 32
        self.register_buffer('mean', torch.full([3], 0.5))
        self.register_buffer('std', torch.full([3], 0.5))
        self.conv = torch.nn.Conv2d(3, 64, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=[2, 3])


def _half_models(dest: str, dry: bool) -> None:
    """fp16 copies of the Inception detector and the EfficientNet teacher (tiny random ones with ``dry``)."""
    with tempfile.TemporaryDirectory() as tmp:
        if dry:
            detector, teacher = f'{tmp}/det.pt', f'{tmp}/teacher.pt'
            with torchscript.quiet_jit():
                torch.jit.save(torch.jit.script(_TinyDetector()), detector)
                torch.jit.save(torch.jit.script(_TinyTeacher()), teacher)
        else:
            from metrics.detectors import FID_HELPER_INSTALL, fid_helper_model_path

            detector = fid_helper_model_path()
            if detector is None:
                raise click.UsageError(f'the FID detector is not installed; run `{FID_HELPER_INSTALL}`')
            sys.path.insert(0, os.path.join(REPO, 'experiments'))
            import efficientnet_teacher

            teacher = efficientnet_teacher.build(f'{tmp}/teacher.pt')
        torchscript.save_half_copy(detector, os.path.join(dest, DETECTOR))
        torchscript.save_half_copy(teacher, os.path.join(dest, TEACHER))


def _wheels(dest: str) -> None:
    """pytest and its dependencies as wheels (pure Python), from the package registry or pip's cache."""
    _run([sys.executable, '-m', 'pip', 'download', '--quiet', '--only-binary=:all:', '--python-version=3.12',
          '--no-deps', f'--dest={os.path.join(dest, WHEELS)}', *WHEEL_PACKAGES])  # fmt: skip


def write_manifest(dest: str, max_mib: float) -> int:
    """Write ``manifest.json`` and print the sizes; raise ``click.ClickException`` above ``max_mib``."""
    files = {name: os.path.getsize(os.path.join(dest, name)) for name in _files(dest)}
    total = sum(files.values())
    for name, size in files.items():
        print(f'{size / 2**20:8.2f} MiB  {name}')
    print(f'{total / 2**20:8.2f} MiB  total (limit {max_mib:g} MiB)')
    if total > max_mib * 2**20:
        raise click.ClickException(f'{dest}: {total / 2**20:.1f} MiB exceeds the {max_mib:g} MiB budget')
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=REPO)
    manifest = dict(
        files={name: dict(bytes=n, sha256=_sha256(os.path.join(dest, name))) for name, n in files.items()},
        torch=torch.__version__,
        commit=head.stdout.strip() or None,
    )
    with open(os.path.join(dest, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=1)
    return total


@click.group()
def main() -> None:
    """Build (``prepare``) or verify (``check``) the GPU-verification bundle."""


@main.command()
@click.option('--dest', default='.gpu', show_default=True, help='Bundle folder (emptied first)')
@click.option('--source', default='../shared/data/100-shot-obama', show_default=True, help='Obama images')
@click.option('--max-mib', type=float, default=60, show_default=True, help='Size budget of the bundle')
@click.option('--dry', is_flag=True, help='Tiny stand-ins instead of the real data and models (tests)')
def prepare(dest: str, source: str, max_mib: float, dry: bool) -> None:
    """Write the bundle into DEST and its manifest; fail above the size budget."""
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    source = os.path.abspath(source)
    dest = os.path.abspath(dest)
    _dataset(dest, source, dry)
    _half_models(dest, dry)
    if not dry:
        _wheels(dest)
    write_manifest(dest, max_mib)


@main.command()
@click.option('--dest', default='.gpu', show_default=True)
def check(dest: str) -> None:
    """Verify every file of DEST against manifest.json (sizes and sha256); one line per problem."""
    path = os.path.join(dest, 'manifest.json')
    if not os.path.isfile(path):
        raise click.ClickException(f'{path} missing: run `bash scripts/gpu_prepare.sh` and carry {dest}')
    with open(path) as f:
        manifest = json.load(f)
    bad = [
        name
        for name, meta in manifest['files'].items()
        if not os.path.isfile(os.path.join(dest, name)) or _sha256(os.path.join(dest, name)) != meta['sha256']
    ]
    if bad:
        raise click.ClickException(f'{dest}: missing or changed files {bad}; rebuild the bundle')
    print(f'{dest}: {len(manifest["files"])} files match manifest.json (made with torch {manifest["torch"]})')


if __name__ == '__main__':
    main()
