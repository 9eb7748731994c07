"""Convert a network file into the stylegan2-ada-kd snapshot format and/or plain state_dicts.

Example::

    python legacy.py --source=network-snapshot-000200.pkl --dest=converted.pkl --state-dict-dir=weights/
    python legacy.py --source=ffhq.pkl --dest=ffhq-fp16.pkl --force-fp16=True

As in stylegan2-ada-pytorch, the module also serves the loader to scripts run from the repository root::

    import dnnlib, legacy
    with dnnlib.util.open_url(url_or_path) as f:
        G = legacy.load_network_pkl(f)['G_ema']     # or load_network_pkl(f, force_fp16=True)
"""

from __future__ import annotations

import click

from dnnlib.util import BOOL
from stylegan2_ada_kd.checkpoint import NetworkPickleError, convert_network_pkl, load_network_pkl

__all__ = ['cli', 'load_network_pkl', 'main']


@click.command()
@click.option(
    '--source',
    required=True,
    metavar='PKL|URL',
    help='Network to read: an official StyleGAN2-ADA pickle or a stylegan2-ada-kd snapshot (path or URL).',
)
@click.option(
    '--dest',
    type=click.Path(dir_okay=False),
    metavar='FILE',
    help='Write the networks here as a stylegan2-ada-kd snapshot (loads with torch.load(weights_only=True)).',
)
@click.option(
    '--state-dict-dir',
    type=click.Path(file_okay=False),
    metavar='DIR',
    help='Also write G.pt, D.pt, G_ema.pt (plain state_dicts) and networks.json (classes and kwargs) here.',
)
@click.option(
    '--force-fp16',
    type=BOOL,
    default=False,
    show_default=True,
    metavar='BOOL',
    help='Rebuild G, D and G_ema with the top 4 resolutions in fp16 and activations clamped at 256.',
)
def cli(source: str, dest: str | None, state_dict_dir: str | None, force_fp16: bool) -> None:
    """Read a network file without running any code stored in it, and write it in our own formats."""
    if dest is None and state_dict_dir is None:
        raise click.UsageError('Nothing to write: give --dest=FILE and/or --state-dict-dir=DIR.')
    try:
        convert_network_pkl(source, dest=dest, state_dict_dir=state_dict_dir, force_fp16=force_fp16)
    except (NetworkPickleError, OSError, TypeError) as err:
        raise click.ClickException(str(err)) from err
    if dest is not None:
        click.echo(f'Wrote snapshot {dest}')
    if state_dict_dir is not None:
        click.echo(f'Wrote state_dicts and networks.json to {state_dict_dir}')


def main() -> None:
    """Entry point for ``python legacy.py``."""
    cli()


if __name__ == '__main__':
    main()
