"""Render images from a trained generator, one PNG per seed.

Example::

    python generate.py --network=network-snapshot-000200.pkl --seeds=0-7 --trunc=0.7 --outdir=out
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np
import PIL.Image
import torch

import dnnlib
from stylegan2_ada_kd import checkpoint
from torch_utils.misc import unit_to_uint8

_MAX_SEED = 2**32 - 1


def parse_seeds(ctx: click.Context | None, param: click.Parameter | None, value: str) -> list[int]:
    """Click callback: turn ``'0-3,7'`` into a list of seeds, each usable with ``np.random.RandomState``."""
    try:
        seeds = dnnlib.util.parse_range(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from err
    too_big = [seed for seed in seeds if seed > _MAX_SEED]
    if too_big:
        raise click.BadParameter(
            f'seeds must be at most {_MAX_SEED}; got {too_big[0]}.', ctx=ctx, param=param
        )
    return seeds


def resolve_device(name: str) -> torch.device:
    """Map ``'auto'``/``'cpu'``/``'cuda'`` to a device; ``'auto'`` picks CUDA when it is available."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise click.UsageError('--device=cuda was given but no CUDA device is available; use --device=cpu.')
    return torch.device(name)


def make_label(G: torch.nn.Module, class_idx: int | None, device: torch.device) -> torch.Tensor:
    """Return the ``[1, c_dim]`` one-hot label for ``class_idx``.

    Conditional generators need a class in range; unconditional ones refuse one (a click.UsageError naming
    ``--class``), so a run never writes unconditional images while the user believes they chose a class.
    """
    label = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim == 0:
        if class_idx is not None:
            raise click.UsageError(
                f'--class={class_idx} was given but this network is unconditional (c_dim=0), so it has no '
                'classes; drop --class.'
            )
        return label
    if class_idx is None:
        raise click.UsageError(
            f'This network is conditional ({G.c_dim} classes): pass --class=N with 0 <= N < {G.c_dim}.'
        )
    if not 0 <= class_idx < G.c_dim:
        raise click.UsageError(
            f'--class={class_idx} is out of range: this network has classes 0 to {G.c_dim - 1}.'
        )
    label[0, class_idx] = 1
    return label


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """Return the ``[1, z_dim]`` latent for ``seed`` (a standard normal draw from ``RandomState(seed)``)."""
    return np.random.RandomState(seed).randn(1, z_dim)


def to_pil_image(img: torch.Tensor) -> PIL.Image.Image:
    """Convert one ``[C, H, W]`` image in about [-1, 1] to an 8-bit PIL image (grayscale, RGB or RGBA)."""
    pixels = unit_to_uint8(img.permute(1, 2, 0)).cpu().numpy()
    channels = pixels.shape[2]
    if channels == 1:
        return PIL.Image.fromarray(pixels[:, :, 0], 'L')
    if channels in (3, 4):
        return PIL.Image.fromarray(pixels, 'RGB' if channels == 3 else 'RGBA')
    raise ValueError(f'Cannot save images with {channels} channels as PNG; only 1, 3 or 4 are supported.')


def generate_images(
    G: torch.nn.Module,
    seeds: Sequence[int],
    outdir: str | os.PathLike,
    truncation_psi: float = 1.0,
    class_idx: int | None = None,
    noise_mode: str = 'const',
    device: torch.device | str = 'cpu',
) -> list[Path]:
    """Render one image per seed with generator ``G`` and save them as ``<outdir>/seed%04d.png``."""
    device = torch.device(device)
    label = make_label(G, class_idx, device)  # Before mkdir: a bad --class leaves no empty folder behind.
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for seed in seeds:
        z = torch.from_numpy(seed_to_z(seed, G.z_dim)).to(device=device, dtype=torch.float32)
        with torch.no_grad():
            img = G(z, label, truncation_psi=truncation_psi, noise_mode=noise_mode)
        path = outdir / f'seed{seed:04d}.png'
        to_pil_image(img[0]).save(path)
        written.append(path)
    return written


def load_generator(network: str, device: torch.device) -> torch.nn.Module:
    """Load ``G_ema`` onto ``device`` from a network file, a run directory (its newest snapshot), a URL or a
    pretrained name (the same forms as ``train.py --resume``)."""
    try:
        path = checkpoint.resolve_network(network, '--network')
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    try:
        return checkpoint.load_network_pkl(path, device=device)['G_ema']
    except (checkpoint.NetworkPickleError, OSError, ValueError) as err:
        raise click.ClickException(f'Cannot load --network={network}: {err}') from err


@click.command()
@click.option(
    '--network',
    required=True,
    metavar='PKL|DIR|URL|NAME',
    help='Network: our snapshot or a StyleGAN2-ADA pickle, as a file, a run directory (its newest snapshot), '
    f'a URL or a name ({", ".join(checkpoint.PRETRAINED)}).',
)
@click.option(
    '--seeds',
    required=True,
    callback=parse_seeds,
    metavar='LIST',
    help='Seeds to render, e.g. "0-7" or "1,5,9-12".',
)
@click.option(
    '--trunc',
    'truncation_psi',
    type=float,
    default=1.0,
    show_default=True,
    help='Truncation psi; 1 disables it.',
)
@click.option(
    '--class', 'class_idx', type=int, metavar='N', help='Class to render (conditional networks only).'
)
@click.option(
    '--noise-mode',
    type=click.Choice(['const', 'random', 'none']),
    default='const',
    show_default=True,
    help='Per-pixel noise: the stored constant maps, fresh random noise, or no noise.',
)
@click.option(
    '--outdir', required=True, type=click.Path(file_okay=False), metavar='DIR', help='Folder for the PNGs.'
)
@click.option(
    '--device',
    type=click.Choice(['auto', 'cpu', 'cuda']),
    default='auto',
    show_default=True,
    help='Where to run; auto uses CUDA when it is available.',
)
def cli(
    network: str,
    seeds: list[int],
    truncation_psi: float,
    class_idx: int | None,
    noise_mode: str,
    outdir: str,
    device: str,
) -> None:
    """Write one image per seed as DIR/seedNNNN.png, using the generator's moving average (G_ema)."""
    torch_device = resolve_device(device)
    G = load_generator(network, torch_device)
    paths = generate_images(G, seeds, outdir, truncation_psi, class_idx, noise_mode, torch_device)
    click.echo(f'Wrote {len(paths)} image(s) to {outdir}')


def main() -> None:
    """Entry point for ``python generate.py``."""
    cli()


if __name__ == '__main__':
    main()
