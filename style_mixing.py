"""Style mixing: copy some layers' styles from column latents into row latents and show all mixes in a grid.

The grid's first column holds the unmixed row images, its first row the column images, and cell (i, j) the
row-i latent whose layers ``--styles`` come from column j (coarse layers carry pose and shape, fine layers
colour and texture). Rows and columns are seeds or projected ``.npz`` latents, so two real images
can be mixed.

Examples::

    python style_mixing.py --network=network-snapshot-000200.pkl --rows=85,100,75 --cols=55,821 --outdir=out
    python style_mixing.py --network=ffhq256 --rows=me.npz --cols=you.npz --styles=0-3 --outdir=out
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import PIL.Image
import torch

import dnnlib
import generate
from dnnlib.util import bool_option

_COARSE_LAYERS = 7  # At most ws 0-6 by default: the 4x4 to 32x32 layers of a 1024 network.


def default_styles(num_ws: int) -> list[int]:
    """The coarse layers mixed by default: the first half of the ws, at most ``0-6``."""
    return list(range(max(1, min(_COARSE_LAYERS, num_ws // 2))))


def parse_styles(value: str | None, num_ws: int) -> list[int]:
    """Turn a ``--styles`` spec such as ``'0-3,5'`` into ws indices, each checked against ``num_ws``."""
    if value is None:
        return default_styles(num_ws)
    try:
        styles = dnnlib.util.parse_range(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--styles') from err
    bad = [i for i in styles if i >= num_ws]
    if bad:
        raise click.BadParameter(
            f'layer {bad[0]} does not exist: this network has {num_ws} ws (layers 0 to {num_ws - 1}).',
            param_hint='--styles',
        )
    return styles


def mix_ws(row_ws: torch.Tensor, col_ws: torch.Tensor, styles: Sequence[int]) -> torch.Tensor:
    """Return ``row_ws`` ``[1, num_ws, w_dim]`` with the layers ``styles`` taken from ``col_ws``."""
    mixed = row_ws.clone()
    mixed[:, list(styles)] = col_ws[:, list(styles)]
    return mixed


def paste_grid(cells: dict[tuple[int, int], PIL.Image.Image], rows: int, cols: int) -> PIL.Image.Image:
    """Paste images keyed by (row, column) into one grid; cells not given (the corner) stay black."""
    first = next(iter(cells.values()))
    width, height = first.size
    grid = PIL.Image.new(first.mode, (width * cols, height * rows))
    for (i, j), img in cells.items():
        grid.paste(img, (j * width, i * height))
    return grid


def style_mixing_grid(
    rendering: generate.Rendering,
    row_sources: Sequence[int | Path],
    col_sources: Sequence[int | Path],
    styles: Sequence[int],
    save_images: bool = False,
) -> Path:
    """Render the mixing grid to ``<outdir>/grid.png`` (and each cell as ``<row>-<col>.png`` with
    ``save_images``); returns the grid's path."""
    row_ws = rendering.latents(row_sources)
    col_ws = rendering.latents(col_sources)
    outdir = rendering.make_outdir()
    row_names = [generate.source_name(s) for s in row_sources]
    col_names = [generate.source_name(s) for s in col_sources]
    cells = {(i, 0): (ws, row_names[i - 1]) for i, ws in enumerate(row_ws, start=1)}
    for j, ws in enumerate(col_ws, start=1):
        cells[0, j] = ws, col_names[j - 1]
        for i, rws in enumerate(row_ws, start=1):
            cells[i, j] = mix_ws(rws, ws, styles), f'{row_names[i - 1]}-{col_names[j - 1]}'
    images = {key: rendering.image(ws) for key, (ws, _) in cells.items()}
    if save_images:
        for key, (_, name) in cells.items():
            images[key].save(outdir / f'{name}.png')
    path = outdir / 'grid.png'
    paste_grid(images, len(row_ws) + 1, len(col_ws) + 1).save(path)
    return path


@click.command()
@generate.rendering_options
@generate.sources_option(
    '--rows', 'Row latents: seeds and/or projected .npz files, e.g. "85,100" or "a.npz".'
)
@generate.sources_option(
    '--cols', 'Column latents whose --styles layers are copied into the rows; as --rows.'
)
@click.option(
    '--styles',
    metavar='LIST',
    help='ws indices copied from the column latents, e.g. "0-3"  [default: the coarse half, at most 0-6]',
)
@bool_option(
    '--save-images', True, 'Also write every cell (mixes as DIR/<row>-<col>.png), as the reference does.'
)
def cli(
    rendering: generate.Rendering,
    rows: list[int | Path],
    cols: list[int | Path],
    styles: str | None,
    save_images: bool,
) -> None:
    """Write DIR/grid.png: row latents with the --styles layers of each column latent."""
    layers = parse_styles(styles, rendering.G.num_ws)
    path = style_mixing_grid(rendering, rows, cols, layers, save_images)
    click.echo(f'Mixed ws {layers} of {len(cols)} column(s) into {len(rows)} row(s): {path}')


if __name__ == '__main__':
    cli()
