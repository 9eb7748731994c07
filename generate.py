"""Render images from a trained generator, one PNG per seed or per projected latent.

Examples::

    python generate.py --network=network-snapshot-000200.pkl --seeds=0-7 --trunc=0.7 --outdir=out
    python generate.py --network=network-snapshot-000200.pkl --projected-w=projected_w.npz --outdir=out

The helpers here (seeds and ``.npz`` latents to ``ws``, labels, image saving) are shared by
``style_mixing.py`` and ``interpolate.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import PIL.Image
import torch

import dnnlib
from stylegan2_ada_kd import checkpoint
from torch_utils.misc import unit_to_uint8

_MAX_SEED = 2**32 - 1


def parse_seeds(
    ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> list[int] | None:
    """Click callback: turn ``'0-3,7'`` into a list of seeds, each usable with ``np.random.RandomState``
    (None, an option not given, stays None)."""
    if value is None:
        return None
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


def parse_sources(ctx: click.Context | None, param: click.Parameter | None, value: str) -> list[int | Path]:
    """Click callback: turn ``'0-3,a.npz'`` into seeds and projected-latent files (items ending in .npz)."""
    sources: list[int | Path] = []
    for item in value.split(','):
        item = item.strip()
        if item.lower().endswith('.npz'):
            sources.append(Path(item))
        else:
            sources.extend(parse_seeds(ctx, param, item))
    return sources


def source_name(source: int | Path) -> str:
    """A short name for a seed (``seed0042``) or a projected-latent file (its stem), used in file names."""
    return source.stem if isinstance(source, Path) else f'seed{source:04d}'


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


def load_projected_w(
    path: str | os.PathLike, G: torch.nn.Module, device: torch.device, many: bool = False
) -> torch.Tensor:
    """Read the ``[1, num_ws, w_dim]`` latent stored under key ``w`` in a projector ``.npz`` file (``many``:
    ``[N, num_ws, w_dim]``, N >= 1 latents, as the reference's generate.py takes them).

    A missing file, a missing key or a shape that does not fit ``G`` raises a click.ClickException that
    names the file and the expected shape.
    """
    expected = (1, G.num_ws, G.w_dim)
    try:
        with np.load(path) as data:
            if 'w' not in data:
                keys = ', '.join(data.files) or 'none'
                raise click.ClickException(f'{path} has no array "w" (it has {keys}).')
            w = data['w']
    except (OSError, ValueError) as err:
        raise click.ClickException(f'Cannot read projected latent {path}: {err}') from err
    if w.ndim != 3 or w.shape[1:] != expected[1:] or not (w.shape[0] == 1 or many and w.shape[0] >= 1):
        what = (
            f'[N, {G.num_ws}, {G.w_dim}] ([N, num_ws, w_dim])'
            if many
            else f'{list(expected)} ([1, num_ws, w_dim])'
        )
        raise click.ClickException(f'{path}: w has shape {list(w.shape)}, but this network needs {what}.')
    return torch.from_numpy(w).to(device=device, dtype=torch.float32)


def to_pil_image(img: torch.Tensor) -> PIL.Image.Image:
    """Convert one ``[C, H, W]`` image in about [-1, 1] to an 8-bit PIL image (grayscale, RGB or RGBA)."""
    pixels = unit_to_uint8(img.permute(1, 2, 0)).cpu().numpy()
    channels = pixels.shape[2]
    if channels == 1:
        return PIL.Image.fromarray(pixels[:, :, 0], 'L')
    if channels in (3, 4):
        return PIL.Image.fromarray(pixels, 'RGB' if channels == 3 else 'RGBA')
    raise ValueError(f'Cannot save images with {channels} channels as PNG; only 1, 3 or 4 are supported.')


@dataclasses.dataclass
class Rendering:
    """A loaded generator and the settings that every rendering tool shares (--trunc, --class,
    --noise-mode, --outdir)."""

    G: torch.nn.Module  # G_ema in eval mode, on ``device``.
    outdir: Path  # Folder for the outputs; made on first write.
    device: torch.device = torch.device('cpu')  # Where G lives and latents are made.
    truncation_psi: float = 1.0  # For seeds' latents; 1 = off. Projected latents are used as stored.
    class_idx: int | None = None  # Class of a conditional G; None for an unconditional one.
    noise_mode: str = 'const'  # 'const', 'random' or 'none'.

    def label(self) -> torch.Tensor:
        """The ``[1, c_dim]`` label; raises click.UsageError for a missing, unneeded or out-of-range class."""
        return make_label(self.G, self.class_idx, self.device)

    def z(self, seed: int) -> torch.Tensor:
        """The ``[1, z_dim]`` float32 latent of ``seed`` on ``device``."""
        return torch.from_numpy(seed_to_z(seed, self.G.z_dim)).to(self.device, torch.float32)

    def latents(self, sources: Sequence[int | Path]) -> list[torch.Tensor]:
        """``[1, num_ws, w_dim]`` latents for seeds (mapped with the label and truncation) and projected
        ``.npz`` files (already in W: used as stored). All checks run before any output is written."""
        label = self.label()
        latents = []
        for source in sources:
            if isinstance(source, Path):
                latents.append(load_projected_w(source, self.G, self.device))
                continue
            with torch.no_grad():
                latents.append(self.G.mapping(self.z(source), label, truncation_psi=self.truncation_psi))
        return latents

    def image(self, ws: torch.Tensor) -> PIL.Image.Image:
        """Render one ``[1, num_ws, w_dim]`` latent to an 8-bit PIL image."""
        with torch.no_grad():
            return to_pil_image(self.G.synthesis(ws, noise_mode=self.noise_mode)[0])

    def make_outdir(self) -> Path:
        """Create and return the output folder."""
        self.outdir.mkdir(parents=True, exist_ok=True)
        return self.outdir


def generate_images(rendering: Rendering, sources: Sequence[int | Path]) -> list[Path]:
    """Render one image per seed or projected ``.npz``; save them as ``<outdir>/seed%04d.png`` or
    ``<outdir>/<npz stem>.png``."""
    ws = rendering.latents(sources)  # Before mkdir: a bad --class or file leaves no empty folder behind.
    return _save(rendering, [f'{source_name(source)}.png' for source in sources], ws)


def render_projected(rendering: Rendering, path: Path) -> list[Path]:
    """Render every latent of a projected ``.npz`` (``w``: ``[N, num_ws, w_dim]``) as
    ``<outdir>/proj%02d.png``, the reference's names."""
    ws = load_projected_w(path, rendering.G, rendering.device, many=True)
    return _save(rendering, [f'proj{i:02d}.png' for i in range(len(ws))], ws.split(1))


def _save(rendering: Rendering, names: Sequence[str], ws: Sequence[torch.Tensor]) -> list[Path]:
    """Render each ``[1, num_ws, w_dim]`` latent of ``ws`` to ``<outdir>/<name>``; the paths written."""
    outdir = rendering.make_outdir()
    written = []
    for name, w in zip(names, ws):
        written.append(outdir / name)
        rendering.image(w).save(written[-1])
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


def sources_option(name: str, help_text: str) -> Callable:
    """A required click option taking seeds and/or projected ``.npz`` files (see :func:`parse_sources`)."""
    return click.option(name, required=True, callback=parse_sources, metavar='LIST', help=help_text)


# Options shared by every post-training tool (generate.py, style_mixing.py, interpolate.py, projector.py).
NETWORK_OPTION = click.option(
    '--network',
    required=True,
    metavar='PKL|DIR|URL|NAME',
    help='Network: our snapshot or a StyleGAN2-ADA pickle, as a file, a run directory (its newest '
    f'snapshot), a URL or a name ({", ".join(checkpoint.PRETRAINED)}).',
)
CLASS_OPTION = click.option(
    '--class', 'class_idx', type=int, metavar='N', help='Class to render (conditional networks only).'
)
OUTDIR_OPTION = click.option(
    '--outdir', required=True, type=click.Path(file_okay=False), metavar='DIR', help='Output folder.'
)
DEVICE_OPTION = click.option(
    '--device',
    type=click.Choice(['auto', 'cpu', 'cuda']),
    default='auto',
    show_default=True,
    help='Where to run; auto uses CUDA when it is available.',
)


def rendering_options(f: Callable) -> Callable:
    """Add the options every rendering tool shares (--network, --trunc, --class, --noise-mode, --outdir,
    --device) to click command ``f``, which receives them as one :class:`Rendering` (the network loaded)
    followed by its own options."""
    options = [
        NETWORK_OPTION,
        click.option(
            '--trunc',
            'truncation_psi',
            type=float,
            default=1.0,
            show_default=True,
            help='Truncation psi for seeds; 1 disables it.',
        ),
        CLASS_OPTION,
        click.option(
            '--noise-mode',
            type=click.Choice(['const', 'random', 'none']),
            default='const',
            show_default=True,
            help='Per-pixel noise: the stored constant maps, fresh random noise, or no noise.',
        ),
        OUTDIR_OPTION,
        DEVICE_OPTION,
    ]

    @functools.wraps(f)
    def with_rendering(
        network: str,
        truncation_psi: float,
        class_idx: int | None,
        noise_mode: str,
        outdir: str,
        device: str,
        **tool_options: Any,  # The tool's own options, passed on to ``f`` (whose signature checks them).
    ) -> Any:
        torch_device = resolve_device(device)
        G = load_generator(network, torch_device)
        rendering = Rendering(G, Path(outdir), torch_device, truncation_psi, class_idx, noise_mode)
        return f(rendering, **tool_options)

    for option in reversed(options):
        with_rendering = option(with_rendering)
    return with_rendering


@click.command()
@rendering_options
@click.option(
    '--seeds',
    callback=parse_seeds,
    metavar='LIST',
    help='Seeds to render, e.g. "0-7" or "1,5,9-12".',
)
@click.option(
    '--projected-w',
    type=click.Path(dir_okay=False, path_type=Path),
    metavar='FILE',
    help='Render the projected latents of this .npz (w of shape [N, num_ws, w_dim]) instead of seeds.',
)
def cli(rendering: Rendering, seeds: list[int] | None, projected_w: Path | None) -> None:
    """Write one image per seed as DIR/seedNNNN.png (or each projected latent as DIR/projNN.png), using the
    generator's moving average (G_ema)."""
    if (seeds is None) == (projected_w is None):
        raise click.UsageError('Pass exactly one of --seeds and --projected-w.')
    paths = (
        generate_images(rendering, seeds) if projected_w is None else render_projected(rendering, projected_w)
    )
    click.echo(f'Wrote {len(paths)} image(s) to {rendering.outdir}')


def main() -> None:
    """Entry point for ``python generate.py``."""
    cli()


if __name__ == '__main__':
    main()
