"""Interpolation video: walk through a list of seeds or projected latents, linearly in W or along great
circles in Z (slerp, seeds only).

Writes ``DIR/interpolation.mp4`` when imageio and imageio-ffmpeg are installed (``pip install
.[video]``), else numbered PNG frames ``DIR/frames/frame00000.png``; the tool says which it wrote.

Examples::

    python interpolate.py --network=network-snapshot-000200.pkl --points=0-3 --frames-per-step=30 --outdir=out
    python interpolate.py --network=ffhq256 --points=me.npz,you.npz --space=w --outdir=out
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import click
import numpy as np
import PIL.Image
import torch

import generate


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between ``[N, D]`` latents, row by row (``a`` itself at ``t=0``); falls back to
    lerp for parallel rows."""
    if t == 0:
        return a
    a_unit = a / a.norm(dim=1, keepdim=True)
    b_unit = b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((a_unit * b_unit).sum(dim=1, keepdim=True).clamp(-1, 1))
    sin_omega = torch.sin(omega)
    if (sin_omega.abs() < 1e-6).any():
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / sin_omega


def frame_ws(
    rendering: generate.Rendering, points: Sequence[int | Path], space: str, frames_per_step: int
) -> Iterator[torch.Tensor]:
    """Yield ``[1, num_ws, w_dim]`` latents for ``(len(points) - 1) * frames_per_step + 1`` frames; the
    first and last frames are exactly the first and last points."""
    if space == 'z':
        label = rendering.label()
        keys = [rendering.z(seed) for seed in points]
        psi = rendering.truncation_psi
        step = lambda a, b, t: rendering.G.mapping(slerp(a, b, t), label, truncation_psi=psi)
    else:
        keys = rendering.latents(points)
        step = torch.lerp
    with torch.no_grad():
        for a, b in zip(keys[:-1], keys[1:]):
            for k in range(frames_per_step):
                yield step(a, b, k / frames_per_step)
        yield step(keys[-1], keys[-1], 0.0)


def open_writer(outdir: Path, fps: int) -> tuple[Path, Callable[[PIL.Image.Image | None], None]]:
    """Return (where the frames go, a function that writes one frame or, given None, finishes): an mp4
    through imageio when it and imageio-ffmpeg import, else a folder of numbered PNG frames."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (imageio's mp4 backend)
    except ImportError:
        frames_dir = outdir / 'frames'
        frames_dir.mkdir(parents=True, exist_ok=True)
        count = itertools.count()
        return (
            frames_dir,
            lambda img: None if img is None else img.save(frames_dir / f'frame{next(count):05d}.png'),
        )
    path = outdir / 'interpolation.mp4'
    writer = imageio.get_writer(path, fps=fps, codec='libx264', macro_block_size=1)
    return path, lambda img: writer.close() if img is None else writer.append_data(np.asarray(img))


def render_interpolation(
    rendering: generate.Rendering,
    points: Sequence[int | Path],
    space: str = 'w',
    frames_per_step: int = 30,
    fps: int = 30,
) -> tuple[Path, int]:
    """Render the interpolation through ``points``; returns (the mp4 or the frames folder, frame count)."""
    if len(points) < 2:
        raise click.UsageError('--points needs at least two seeds or .npz files to interpolate between.')
    if space == 'z' and any(isinstance(p, Path) for p in points):
        raise click.UsageError('--space=z takes seeds only: projected .npz latents live in W; use --space=w.')
    frames = frame_ws(rendering, points, space, frames_per_step)
    first = next(frames)  # Runs the --class and file checks before the output folder is made.
    target, write = open_writer(rendering.make_outdir(), fps)
    count = 0
    for ws in itertools.chain([first], frames):
        write(rendering.image(ws))
        count += 1
    write(None)
    return target, count


@click.command()
@generate.rendering_options
@generate.sources_option('--points', 'Latents to pass through in order: seeds and/or .npz files, e.g. "0-3"')
@click.option(
    '--space',
    type=click.Choice(['w', 'z']),
    default='w',
    show_default=True,
    help='Interpolate in W (linear) or in Z (spherical; seeds only).',
)
@click.option(
    '--frames-per-step',
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    metavar='N',
    help='Frames from one point to the next.',
)
@click.option(
    '--fps',
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    metavar='N',
    help='Frames per second of the mp4.',
)
def cli(
    rendering: generate.Rendering, points: list[int | Path], space: str, frames_per_step: int, fps: int
) -> None:
    """Write an interpolation video (or PNG frames) through --points."""
    target, count = render_interpolation(rendering, points, space, frames_per_step, fps)
    kind = 'mp4 video' if target.suffix == '.mp4' else 'PNG frames (imageio/imageio-ffmpeg not installed)'
    click.echo(f'Wrote {count} frames as {kind}: {target}')


if __name__ == '__main__':
    cli()
