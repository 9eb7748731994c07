"""Project an image into a trained generator's latent space: find the ``w`` whose image looks like it.

Writes ``DIR/target.png`` (the target as the network sees it: centre-cropped, resized, in its channels),
``DIR/proj.png`` (the projected latent rendered as ``generate.py`` renders it), ``DIR/projected_w.npz``
(``w`` float32 ``[1, num_ws, w_dim]``, the reference projector's format, read by ``--projected-w``,
``--rows``/``--cols`` and ``--points`` of the other tools) and, with ``--save-video``, ``DIR/proj.mp4``
(the target beside every step's image; needs ``pip install -e .[video]``). The method, its schedules and
regularisers are in :mod:`stylegan2_ada_kd.projection`.

Examples::

    python projector.py --network=ffhq256 --target=me.jpg --outdir=out
    python projector.py --network=network-snapshot-000200.pkl --target=me.png --space=w+ --outdir=out
    python projector.py --network=ffhq256 --target=me.jpg --num-steps=500 --save-video --outdir=out
    python projector.py --network=ffhq256 --target=me.jpg --vgg16=/models/vgg16.pt --outdir=out  # offline
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import click
import numpy as np
import PIL.Image
import torch

import dataset_tool
import generate
import style_mixing
from dnnlib.util import bool_option
from metrics import detectors
from stylegan2_ada_kd import projection
from torch_utils.misc import uint8_to_unit

IMAGE_MODES = {1: 'L', 3: 'RGB', 4: 'RGBA'}  # PIL mode of the target for G's img_channels.
VIDEO_FPS = 60


def open_target(path: str) -> PIL.Image.Image:
    """Read any image file PIL can decode; a click.BadParameter naming ``--target`` if it cannot."""
    try:
        with PIL.Image.open(path) as img:
            return img.copy()  # Decoded now: closing the file frees the original.
    except (OSError, ValueError) as err:
        raise click.BadParameter(f'cannot read {path} as an image ({err})', param_hint='--target') from err


def target_tensor(img: PIL.Image.Image, G: torch.nn.Module, device: torch.device) -> torch.Tensor:
    """The target as G sees it: ``[1, img_channels, R, R]`` float32 in [-1, 1] on ``device``.

    The largest centred square is cropped and Lanczos-resized to G's resolution; transparency is put on
    black and colours converted as ``dataset_tool.py`` does for training data (an RGBA network keeps alpha).
    """
    mode = IMAGE_MODES.get(G.img_channels)
    if mode is None:
        raise click.ClickException(f'Cannot project into a network with {G.img_channels} image channels.')
    img = img.convert('RGBA') if mode == 'RGBA' else dataset_tool.to_mode(img, mode)
    img, _ = dataset_tool.transform_image(img, 'center-crop', G.img_resolution, PIL.Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.array(img).reshape(G.img_resolution, G.img_resolution, -1))
    return uint8_to_unit(pixels.permute(2, 0, 1)[None]).to(device)  # [1, C, R, R]


def require_video_writer() -> Callable:
    """imageio's ``get_writer`` when imageio and its ffmpeg backend import; else a click.UsageError naming
    ``--save-video`` and the install command."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (imageio's mp4 backend)
    except ImportError as err:
        raise click.UsageError(
            f'--save-video needs imageio and imageio-ffmpeg ({err}): pip install -e ".[video]", '
            'or drop --save-video.'
        ) from err
    return imageio.get_writer


def with_progress(steps: Iterator[projection.ProjectionStep], total: int) -> Iterable:
    """Yield ``steps`` while showing the step count and distance: a tqdm bar when tqdm is installed, else a
    line every tenth of the run."""
    try:
        from tqdm import tqdm
    except ImportError:
        for s in steps:
            if (s.step + 1) % max(1, total // 10) == 0 or s.step + 1 == total:
                click.echo(f'step {s.step + 1:>{len(str(total))}}/{total}: distance {s.distance:.4g}')
            yield s
        return
    with tqdm(steps, total=total, unit='step') as bar:
        for s in bar:
            bar.set_postfix(distance=f'{s.distance:.4g}', refresh=False)
            yield s


def video_frame(target: PIL.Image.Image, image: torch.Tensor) -> np.ndarray:
    """``[R, 2R, 3]`` uint8 frame: the target on the left, one ``[1, C, R, R]`` step image on the right."""
    grid = style_mixing.paste_grid({(0, 0): target, (0, 1): generate.to_pil_image(image[0])}, 1, 2)
    return np.asarray(grid.convert('RGB'))


def number_option(name: str, kind: click.ParamType, default: float, metavar: str, help_text: str) -> Callable:
    """A click option taking a range-checked number, its default shown in --help."""
    return click.option(name, type=kind, default=default, show_default=True, metavar=metavar, help=help_text)


@click.command()
@generate.NETWORK_OPTION
@click.option(
    '--target',
    'target_path',
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    metavar='FILE',
    help='Image to project (any size and format; centre-cropped and resized to the network).',
)
@generate.OUTDIR_OPTION
@number_option('--num-steps', click.IntRange(min=1), 1000, 'N', 'Adam steps.')
@number_option(
    '--seed',
    click.IntRange(0, 2**32 - 1),
    303,
    'N',
    'Seeds the W statistics, the initial noise maps and the w noise.',
)
@click.option(
    '--space',
    type=click.Choice(projection.SPACES),
    default='w',
    show_default=True,
    help='w: one latent for every layer; w+: one per layer (closer fits, less editable).',
)
@click.option(
    '--vgg16',
    metavar='PATH|URL',
    help=f'VGG16 LPIPS detector (TorchScript)  [default: {detectors.VGG16_URL}]',
)
@number_option(
    '--pixel-weight',
    click.FloatRange(min=0),
    0.0,
    'W',
    'Weight of an added mean squared pixel difference (images in [-1, 1]).',
)
@number_option(
    '--noise-weight', click.FloatRange(min=0), 1e5, 'W', 'Weight of the noise autocorrelation penalty.'
)
@number_option(
    '--lr',
    click.FloatRange(min=0, min_open=True),
    0.1,
    'LR',
    'Peak learning rate (warm-up over the first 5% of the steps, cosine decay over the last 25%).',
)
@number_option(
    '--w-avg-samples',
    click.IntRange(min=1),
    10000,
    'N',
    'Mapped z for the mean and spread of W (start point and w noise scale).',
)
@generate.CLASS_OPTION
@generate.DEVICE_OPTION
@bool_option('--save-video', False, 'Also write DIR/proj.mp4, the target beside every step.')
def cli(
    network: str,
    target_path: str,
    outdir: str,
    num_steps: int,
    seed: int,
    space: str,
    vgg16: str | None,
    pixel_weight: float,
    noise_weight: float,
    lr: float,
    w_avg_samples: int,
    class_idx: int | None,
    device: str,
    save_video: bool,
) -> None:
    """Project --target into --network's latent space; write target.png, proj.png and projected_w.npz."""
    get_writer = require_video_writer() if save_video else None
    torch_device = generate.resolve_device(device)
    target_img = open_target(target_path)
    G = generate.load_generator(network, torch_device)
    c = generate.make_label(G, class_idx, torch_device)
    target = target_tensor(target_img, G, torch_device)
    try:
        vgg = detectors.load_detector(detectors.VGG16, path=vgg16, device=torch_device)
    except detectors.DetectorError as err:
        raise click.ClickException(str(err)) from err
    rendering = generate.Rendering(G, Path(outdir), torch_device, class_idx=class_idx)
    out = rendering.make_outdir()
    target_png = generate.to_pil_image(target[0])
    target_png.save(out / 'target.png')
    steps = projection.project(
        G,
        target,
        features=projection.vgg16_lpips_features(vgg.module),
        num_steps=num_steps,
        c=c,
        space=space,
        lr=lr,
        noise_weight=noise_weight,
        pixel_weight=pixel_weight,
        w_avg_samples=w_avg_samples,
        seed=seed,
    )
    writer = (
        get_writer(out / 'proj.mp4', fps=VIDEO_FPS, codec='libx264', macro_block_size=1)
        if save_video
        else None
    )
    for last in with_progress(steps, num_steps):
        if writer is not None:
            writer.append_data(video_frame(target_png, last.image))
    if writer is not None:
        writer.close()
    np.savez(out / 'projected_w.npz', w=last.ws.cpu().numpy())
    rendering.image(last.ws).save(out / 'proj.png')
    click.echo(f'Distance {last.distance:.4g} after {num_steps} steps in {space.upper()}; wrote {out}')


if __name__ == '__main__':
    cli()
