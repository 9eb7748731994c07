"""Turn a folder or zip of images, the CIFAR-10 python batches, an LMDB database (LSUN) or MNIST's idx files
into a training dataset for train.py:
square power-of-two PNGs of one size in a zip (or folder), plus a dataset.json with labels and metadata.

Examples::

    # Photos of any size and format -> 256x256 centre crops:
    python dataset_tool.py --source=~/photos --dest=~/datasets/photos-256.zip --resolution=256 \\
        --transform=center-crop
    # Class-conditional from sub-folders (cat/, dog/, ...):
    python dataset_tool.py --source=~/animals --dest=~/datasets/animals-128.zip --resolution=128 \\
        --transform=center-crop --labels=subfolders
    # CIFAR-10 (the python version; the archive or its extracted cifar-10-batches-py/ folder):
    python dataset_tool.py --source=~/downloads/cifar-10-python.tar.gz --dest=~/datasets/cifar10-32.zip
    # LSUN (an LMDB folder; needs `pip install lmdb`), the first 100k images as 256x256 centre crops:
    python dataset_tool.py --source=~/lsun/cat_lmdb --dest=~/datasets/lsuncat100k-256.zip --resolution=256 \\
        --transform=center-crop --max-images=100000
    # MNIST (a folder with train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz), padded to 32x32:
    python dataset_tool.py --source=~/mnist --dest=~/datasets/mnist32.zip
    # 512x256 crops on a black 512x512 canvas (--resolution=512x256 and --resolution=512 do the same):
    python dataset_tool.py --source=cars --dest=cars.zip --transform=center-crop-wide --width=512 --height=256

Conversion rules (one choice each, so datasets come out the same every time):

- Transparent pixels (RGBA, LA, palette or colour-key transparency) are composited over black.
- Grayscale images stay 1-channel, unless the converted set also holds colour images: then all become RGB.
- 16-bit images are scaled to 8 bits (value / 257); CMYK, YCbCr etc. are converted to RGB.
- Size: ``--resolution=N``, ``--resolution=WxH`` or ``--width=W --height=H``, for N x N output, N a power of
  two >= 4 (W x W/2 with ``center-crop-wide``: its strip on the W x W canvas). Default: the images' size.
- Images smaller than the target are upscaled (a warning gives the count).
- ``--max-images=N`` takes N readable images: round-robin over the classes if labelled, else the first ones.
- Files that cannot be decoded are skipped; a warning lists them and dataset.json ``meta.skipped`` keeps them.
- A source ``dataset.json`` is checked as training checks it: unusable labels (or an unparsable file) are an
  error unless ``--labels=none`` (no labels), ``--labels=subfolders`` or ``--labels=FILE.csv`` replaces them;
  labels of files that are not in the source are dropped with a warning.

Output: ``NNNNN/imgNNNNNNNN.png`` (uncompressed PNG, 1000 per folder) and ``dataset.json``:
``{"labels": [[file, class_index], ...] or null, "class_names": [...], "prompts": [...], "meta": {...}}``.
A zip is written to a temporary file beside it (``.<name>.<host>-<pid>.<random>.tmp``) and renamed when
complete; such files left by a killed run (and the ``<dest>.tmp<pid>`` ones of older versions) are removed by
the next run to the same folder. A folder destination must be new or empty.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import re
import sys
import zipfile
from collections.abc import Callable
from typing import IO, Any, TypeVar

import click
import numpy as np
import PIL.Image

from dnnlib.util import atomic_write, process_alive, remove_stale_temp_files
from stylegan2_ada_kd.data.dataset import is_power_of_two
from stylegan2_ada_kd.data.sources import Source, open_source
from stylegan2_ada_kd.data.sources import listed as _listed

RESIZE_FILTERS = {'box': PIL.Image.Resampling.BOX, 'lanczos': PIL.Image.Resampling.LANCZOS}
_GRAY_MODES = {'1', 'L', 'LA', 'La', 'I', 'F'}  # Plus every 'I;16...' variant.
_T = TypeVar('_T')
_Put = Callable[[str, bytes], None]  # put(name, data): store a file of the dataset.
_CSV_HEADERS = {'path', 'file', 'filename', 'image', 'relative_path', 'name'}


def _subfolder_labels(names: list[str]) -> tuple[dict[str, int], list[str]]:
    """Class = first-level sub-folder; classes are the sorted folder names (index = position)."""
    loose = [n for n in names if '/' not in n]
    if loose:
        raise click.UsageError(
            f'--labels=subfolders: {len(loose)} image(s) are not in a class sub-folder: {_listed(loose)}. '
            'Move them into a class folder, delete them, or use --labels=FILE.csv.'
        )
    class_names = sorted({n.split('/')[0] for n in names})
    index = {c: i for i, c in enumerate(class_names)}
    return {n: index[n.split('/')[0]] for n in names}, class_names


def _csv_labels(csv_path: str, names: list[str]) -> tuple[dict[str, int], list[str] | None]:
    """Rows ``relative_path,class``: all-integer classes are indices, otherwise names (sorted -> indices).

    A first row whose path cell is a header word (path, file, filename, image, name) is skipped.
    """
    try:
        with open(os.path.expanduser(csv_path), newline='', encoding='utf-8-sig') as f:
            rows = [[c.strip() for c in row] for row in csv.reader(f) if row and any(c.strip() for c in row)]
    except OSError as err:
        raise click.BadParameter(f'cannot read {csv_path} ({err})', param_hint='--labels') from err
    if rows and rows[0][0].lower() in _CSV_HEADERS:
        rows = rows[1:]
    bad = [','.join(r) for r in rows if len(r) < 2 or not r[1]]
    known = set(names)
    entries = {r[0].replace('\\', '/').removeprefix('./'): r[1] for r in rows if len(r) >= 2 and r[1]}
    unknown = [n for n in entries if n not in known]
    if bad or unknown or not entries:
        raise click.BadParameter(
            f'{csv_path}: '
            + (f'{len(bad)} row(s) without "path,class": {_listed(bad)}. ' if bad else '')
            + (f'{len(unknown)} path(s) not among the source images: {_listed(unknown)}. ' if unknown else '')
            + ('no label rows. ' if not entries else '')
            + 'Paths are relative to --source, with "/" separators.',
            param_hint='--labels',
        )
    if all(v.isdigit() for v in entries.values()):
        return {n: int(v) for n, v in entries.items()}, None
    class_names = sorted(set(entries.values()))
    index = {c: i for i, c in enumerate(class_names)}
    return {n: index[v] for n, v in entries.items()}, class_names


def _choose_labels(src: Source, option: str | None) -> tuple[dict | None, list[str] | None]:
    """Labels and class names: from ``--labels`` if given, else from the source (dataset.json, CIFAR-10,
    MNIST)."""
    if option is None:
        return src.labels, src.class_names
    if option == 'none':
        return None, None
    if src.builtin_labels:
        raise click.UsageError(
            f'--labels does not apply to {src.builtin_labels}: its labels come with it '
            '(--labels=none drops them)'
        )
    if option == 'subfolders':
        return _subfolder_labels(src.names)
    return _csv_labels(option, src.names)


def _read_prompts(path: str) -> list[str]:
    """Non-empty lines of ``path``, stripped."""
    try:
        with open(os.path.expanduser(path), encoding='utf-8') as f:
            prompts = [line.strip() for line in f if line.strip()]
    except OSError as err:
        raise click.BadParameter(f'cannot read {path} ({err})', param_hint='--prompts') from err
    if not prompts:
        raise click.BadParameter(f'{path} holds no prompts (one per line)', param_hint='--prompts')
    return prompts


def channel_mode(mode: str) -> str:
    """Output mode for a PIL input mode: ``'L'`` for grayscale ones (incl. 16-bit, LA), else ``'RGB'``."""
    return 'L' if mode in _GRAY_MODES or mode.startswith('I;16') else 'RGB'


def to_mode(img: PIL.Image.Image, target: str) -> PIL.Image.Image:
    """8-bit ``target`` (``'L'`` or ``'RGB'``) image; 16-bit scaled down, transparency put on black."""
    if img.mode == 'I' or img.mode.startswith('I;16') or img.mode == 'F':
        arr = np.asarray(img).astype(np.float64)
        arr = arr if img.mode == 'F' else arr / 257
        img = PIL.Image.fromarray(np.rint(arr).clip(0, 255).astype(np.uint8))
    if img.mode in ('RGBA', 'LA', 'La', 'RGBa', 'PA') or 'transparency' in img.info:
        black = PIL.Image.new('RGBA', img.size, (0, 0, 0, 255))
        img = PIL.Image.alpha_composite(black, img.convert('RGBA'))
    return img if img.mode == target else img.convert(target)


def _crop_size(size: tuple[int, int], transform: str | None) -> tuple[int, int]:
    """``(w, h)`` of the crop: whole image, largest square, largest 2:1 region, or the square pad fills."""
    w, h = size
    if transform == 'center-crop':
        return min(w, h), min(w, h)
    if transform == 'center-crop-wide':
        return (w, max(w // 2, 1)) if w <= 2 * h else (2 * h, h)
    if transform == 'pad':
        return max(w, h), max(w, h)
    return w, h


def transform_image(
    img: PIL.Image.Image, transform: str | None, resolution: int, resample: int
) -> tuple[PIL.Image.Image, bool]:
    """Centre-crop per ``transform`` and resize; ``center-crop-wide``'s ``R x R/2`` strip and ``pad``'s whole
    image (longer side R) are centred on a black ``R x R`` canvas. Returns ``(image, whether upscaled)``."""
    w, h = img.size
    if transform == 'pad':  # the whole image, its longer side R
        cw, ch, side = w, h, max(w, h)
        out = (max(round(w * resolution / side), 1), max(round(h * resolution / side), 1))
    else:
        cw, ch = _crop_size(img.size, transform)
        left, top = (w - cw) // 2, (h - ch) // 2
        if (cw, ch) != (w, h):
            img = img.crop((left, top, left + cw, top + ch))
        out = (resolution, resolution // 2) if transform == 'center-crop-wide' else (resolution, resolution)
    upscaled = cw < out[0] or ch < out[1]
    if img.size != out:
        img = img.resize(out, resample=resample)
    if out != (resolution, resolution):
        canvas = PIL.Image.new(img.mode, (resolution, resolution), 0)
        canvas.paste(img, ((resolution - out[0]) // 2, (resolution - out[1]) // 2))
        img = canvas
    return img, upscaled


def _size_option(hint: str, w: int, h: int) -> str:
    """``w x h`` as typed with option ``hint``: ``--resolution=N``, ``=WxH`` or ``--width=W --height=H``."""
    if hint == '--resolution':
        return f'--resolution={w}' + (f'x{h}' if w != h else '')
    return f'--width={w} --height={h}'


def square_size(w: int, h: int, transform: str | None, hint: str) -> int:
    """N of the N x N output that ``w x h`` (given by option ``hint``) asks for: N = w = h, or w = 2h with
    ``center-crop-wide`` (its strip on the canvas). N must be a power of two >= 4 (the networks need it)."""
    wide, fix = transform == 'center-crop-wide', _size_option(hint, w, w)
    if not (is_power_of_two(w) and w >= 4):
        n = max(4, 1 << (w.bit_length() - 1))
        problem = f'{w} is not a power of two >= 4'
        fix = _size_option(hint, n, n) + (f' or {_size_option(hint, 2 * n, 2 * n)}' if w > 4 else '')
    elif w != h and not (wide and 2 * h == w):
        problem = f'{w}x{h} is not square, as the networks need'
        if wide:
            fix = f'{_size_option(hint, w, w // 2)} (the 2:1 strip on the {w}x{w} canvas) or {fix}'
        elif 2 * h == w:
            fix += f', or add --transform=center-crop-wide ({w}x{h} crops on a black {w}x{w} canvas)'
    else:
        return w
    raise click.BadParameter(f'{problem}: pass {fix}', param_hint=hint)


def output_resolution(
    resolution: str | None, width: int | None, height: int | None, transform: str | None
) -> int | None:
    """N of the N x N output from ``--resolution=N|WxH`` and/or ``--width --height`` (None: keep the images'
    size). Usage errors name the option; when both forms are given they must agree."""
    if (width is None) != (height is None):
        given, missing = ('--width', '--height') if height is None else ('--height', '--width')
        raise click.UsageError(f'{given} needs {missing}: pass both (or neither), or --resolution=WxH')
    sizes = {}
    if resolution is not None:
        hint, match = '--resolution', re.fullmatch(r'(\d+)(?:[xX](\d+))?', resolution.strip())
        if not match:
            raise click.BadParameter(f'{resolution!r}: pass N or WxH (e.g. 256x256)', param_hint=hint)
        w, h = int(match.group(1)), int(match.group(2) or match.group(1))
        sizes[_size_option(hint, w, h)] = square_size(w, h, transform, hint)
    if width is not None and height is not None:
        sizes[_size_option('', width, height)] = square_size(width, height, transform, '--width/--height')
    if len(set(sizes.values())) > 1:
        raise click.UsageError(f'{" and ".join(sizes)} disagree: pass only one of them')
    return next(iter(sizes.values()), None)


def _infer_resolution(sizes: dict[str, tuple[int, int]], transform: str | None) -> int:
    """The single output width the images give without resizing; an error if they differ or it is not 2^k."""
    widths: dict[int, list[str]] = {}
    for name, size in sizes.items():
        widths.setdefault(_crop_size(size, transform)[0], []).append(name)
    if len(widths) == 1 and is_power_of_two(next(iter(widths))) and next(iter(widths)) >= 4:
        return next(iter(widths))
    found = ', '.join(f'{w} px ({_listed(n, 2)})' for w, n in sorted(widths.items())[:5])
    raise click.UsageError(
        f'the images give output widths {found}: pass --resolution=N (a power of two, e.g. 256) to resize '
        'them all to N x N'
    )


def _scan(src: Source, max_images: int | None, labels: dict | None) -> tuple[dict, dict, list]:
    """Read the headers: ``({name: (w, h)} in source order, {name: mode}, [unreadable])`` of all images, or
    of ``max_images`` readable ones taken round-robin over the classes (without classes: the first ones)."""
    sizes, modes, skipped, groups = {}, {}, [], {}
    classes = max_images and labels and all(isinstance(v, int) for v in labels.values())
    for name in src.names:  # By class index in class order, unlabelled last; one group without classes.
        groups.setdefault(labels.get(name, float('inf')) if classes else 0, []).append(name)
    queues = [iter(groups[key]) for key in sorted(groups)]
    while queues and len(sizes) < (max_images or len(src.names)):
        queue = queues.pop(0)  # A class's turn: its next readable image; an exhausted class drops out.
        for name in queue:
            try:
                sizes[name], modes[name] = src.header(name)
            except Exception as err:  # PIL raises many exception types for broken files.
                skipped.append(f'{name} ({type(err).__name__})')
                continue
            queues.append(queue)
            break
    return {name: sizes[name] for name in src.names if name in sizes}, modes, skipped


def _check_plan(sizes: dict, transform: str | None, labels: dict | None, src: Source) -> None:
    """Refuse non-square images without a transform, and missing labels when labels are used."""
    if not sizes:
        raise click.UsageError(f'--source={src.description}: no readable images found')
    if transform is None:
        odd = [f'{n} ({w}x{h})' for n, (w, h) in sizes.items() if w != h]
        if odd:
            raise click.UsageError(
                f'{len(odd)} image(s) are not square: {_listed(odd)}. Pass --transform=center-crop (square '
                'centre crop), --transform=pad (the whole image on a black square) or '
                '--transform=center-crop-wide (2:1 crop on a black square canvas).'
            )
    if labels is not None:
        unlabelled = [n for n in sizes if n not in labels]
        if unlabelled:
            raise click.UsageError(
                f'{len(unlabelled)} image(s) have no label: {_listed(unlabelled)}. Label every image '
                '(--labels=subfolders, --labels=FILE.csv or the source dataset.json).'
            )


def _check_dest(dest: str) -> tuple[str, bool]:
    """``(absolute path, is a zip)``; a zip must not exist yet, a folder must be new or empty."""
    dest = os.path.abspath(os.path.expanduser(dest))
    is_zip = dest.lower().endswith('.zip')
    if is_zip and os.path.exists(dest):
        raise click.BadParameter(
            f'{dest} already exists; delete it or pick another name', param_hint='--dest'
        )
    if not is_zip and os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise click.BadParameter(
            f'{dest} exists and is not an empty folder; pick a new folder or a .zip', param_hint='--dest'
        )
    return dest, is_zip


def _remove_stale_temp(dest: str) -> None:
    """Delete the temporary files in ``dest``'s folder left by killed runs (their process no longer runs):
    those of :func:`atomic_write` and the ``<dest>.tmp<pid>`` zips of older versions of this tool."""
    folder, base = os.path.split(dest)
    legacy = re.compile(re.escape(base) + r'\.tmp(\d+)')
    try:
        removed = remove_stale_temp_files(folder)
        entries = sorted(os.listdir(folder))
    except OSError:
        return
    for entry in entries:
        match = legacy.fullmatch(entry)
        path = os.path.join(folder, entry)
        if match and os.path.isfile(path) and not process_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.remove(path)
                removed.append(entry)
    if removed:
        click.echo(
            f'Removed {len(removed)} stale temporary file(s) of interrupted runs: {_listed(removed)}',
            err=True,
        )


def _put_file(folder: str, name: str, data: bytes) -> None:
    """Store ``data`` as ``folder/name`` (``name`` a '/'-separated relative path)."""
    path = os.path.join(folder, *name.split('/'))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


def _write_dataset(dest: str, fill: Callable[[_Put], _T]) -> _T:
    """Return ``fill(put)``, where ``put(name, data)`` stores a file ('/'-separated relative ``name``) in
    ``dest``: a zip, written through :func:`atomic_write` (nothing is left if ``fill`` raises), or an empty
    folder (which keeps what was written)."""
    dest, is_zip = _check_dest(dest)
    if not is_zip:
        os.makedirs(dest, exist_ok=True)
        return fill(functools.partial(_put_file, dest))
    result = []

    def write_zip(handle: IO) -> None:
        with zipfile.ZipFile(handle, 'w', zipfile.ZIP_STORED) as zf:
            result.append(fill(zf.writestr))

    atomic_write(dest, write_zip)
    return result[0]


def _write_images(
    src: Source, names: list[str], put: _Put, mode: str, plan: dict, labels: dict | None
) -> tuple[list, list[str], int]:
    """Convert and store the images; returns ``(dataset.json labels, skipped files, upscaled count)``."""
    out_labels, skipped, upscaled = [], [], 0
    resample = RESIZE_FILTERS[plan['resize_filter']]
    for name in names:
        try:
            img = to_mode(src.load(name), mode)
        except Exception as err:  # Undecodable despite a readable header (e.g. truncated): skip it.
            skipped.append(f'{name} ({type(err).__name__})')
            continue
        img, up = transform_image(img, plan['transform'], plan['resolution'], resample)
        upscaled += up
        idx = len(out_labels)
        out_name = f'{idx // 1000:05d}/img{idx:08d}.png'
        buf = io.BytesIO()
        img.save(buf, format='png', compress_level=0)
        put(out_name, buf.getvalue())
        out_labels.append([out_name, labels[name] if labels is not None else None])
        if (idx + 1) % 5000 == 0:
            click.echo(f'{idx + 1} / {len(names)} images', err=True)
    return out_labels, skipped, upscaled


def convert_dataset(
    source: str,
    dest: str,
    resolution: int | None = None,
    transform: str | None = None,
    max_images: int | None = None,
    resize_filter: str = 'lanczos',
    labels: str | None = None,
    prompts: str | None = None,
) -> dict:
    """Convert ``source`` into a dataset at ``dest`` (see the module docstring); returns dataset.json's dict.

    Raises ``click.ClickException`` (incl. ``UsageError``/``BadParameter``) with a message for the user.
    """
    if resolution is not None:
        square_size(resolution, resolution, transform, '--resolution')
    if max_images is not None and max_images < 1:
        raise click.BadParameter(f'{max_images} must be at least 1', param_hint='--max-images')
    dest_path, is_zip = _check_dest(dest)  # Before the (possibly slow) source scan.
    if is_zip:
        _remove_stale_temp(dest_path)
    src = open_source(source, labels)
    label_map, class_names = _choose_labels(src, labels)
    prompt_list = _read_prompts(prompts) if prompts else src.prompts
    sizes, modes, skipped = _scan(src, max_images, label_map)
    _check_plan(sizes, transform, label_map, src)
    plan = dict(
        source=src.description,
        resolution=resolution or _infer_resolution(sizes, transform),
        transform=transform,
        resize_filter=resize_filter,
    )
    mode = 'RGB' if any(channel_mode(m) == 'RGB' for m in modes.values()) else 'L'

    def fill(put: _Put) -> tuple[dict, int]:
        out_labels, more_skipped, upscaled = _write_images(src, list(sizes), put, mode, plan, label_map)
        skipped.extend(more_skipped)
        if not out_labels:
            raise click.ClickException(f'no image of {src.description} could be decoded: {_listed(skipped)}')
        info = _dataset_json(out_labels, label_map is not None, class_names, prompt_list, plan, mode, skipped)
        put('dataset.json', json.dumps(info).encode('utf-8'))
        return info, upscaled

    info, upscaled = _write_dataset(dest_path, fill)
    _report(info, dest_path, skipped, upscaled)
    return info


def _dataset_json(
    out_labels: list,
    use_labels: bool,
    class_names: list[str] | None,
    prompts: list[str] | None,
    plan: dict,
    mode: str,
    skipped: list[str],
) -> dict:
    """The ``dataset.json`` object: labels (or null), class names and prompts when known, and ``meta``."""
    info: dict[str, Any] = {'labels': out_labels if use_labels else None}
    if class_names is not None:
        info['class_names'] = list(class_names)
    if prompts is not None:
        info['prompts'] = list(prompts)
    info['meta'] = dict(
        plan,
        transform=plan['transform'] or 'none',
        channels=1 if mode == 'L' else 3,
        num_images=len(out_labels),
        skipped=skipped,
        created_by='dataset_tool.py',
    )
    return info


def _report(info: dict, dest: str, skipped: list[str], upscaled: int) -> None:
    """Summary on stdout, warnings on stderr."""
    meta = info['meta']
    if skipped:
        click.echo(f'Warning: skipped {len(skipped)} unreadable file(s): {_listed(skipped)}', err=True)
    if upscaled:
        click.echo(
            f'Warning: {upscaled} image(s) were smaller than {meta["resolution"]} px and were upscaled',
            err=True,
        )
    kind = 'grayscale' if meta['channels'] == 1 else 'RGB'
    classes = _class_summary(info['labels'] or [], info.get('class_names'))
    labelled = 'labelled' if info['labels'] is not None else 'unlabelled'
    res = meta['resolution']
    click.echo(f'Wrote {meta["num_images"]} {labelled} {kind} images ({res}x{res}{classes}) to {dest}')


def _class_summary(out_labels: list, class_names: list[str] | None) -> str:
    """``', 3 of 10 classes, 1 to 2 image(s) each'`` for class-index labels, else ``''``."""
    labels = [label for _, label in out_labels]
    if not labels or not all(isinstance(v, int) for v in labels):
        return ''
    counts = sorted(labels.count(c) for c in set(labels))
    each = f'{counts[0]} to {counts[-1]}' if counts[0] != counts[-1] else counts[0]
    return f', {len(counts)}{f" of {len(class_names)}" if class_names else ""} classes, {each} image(s) each'


@click.command(context_settings=dict(help_option_names=['-h', '--help'], max_content_width=110))
@click.option(
    '--source',
    required=True,
    metavar='PATH',
    help='Folder or zip of images, CIFAR-10 (python), an LMDB folder (LSUN) or an MNIST folder.',
)
@click.option('--dest', required=True, metavar='PATH', help='Output .zip (new) or folder (new or empty).')
@click.option('--resolution', metavar='N|WxH', help='Size N x N (a power of two) or WxH. [default: keep]')
@click.option('--width', type=int, metavar='W', help='With --height: the same as --resolution=WxH.')
@click.option('--height', type=int, metavar='H', help='With --width: the same as --resolution=WxH.')
@click.option(
    '--transform',
    type=click.Choice(['center-crop', 'center-crop-wide', 'pad']),
    help='Centred square crop, 2:1 crop on a black square, or the whole image centred on a black square '
    '(pad). [default: none; images must be square]',
)
@click.option('--max-images', type=int, metavar='N', help='Convert N images (round-robin over classes).')
@click.option(
    '--resize-filter', type=click.Choice(list(RESIZE_FILTERS)), default='lanczos', show_default=True
)
@click.option(
    '--labels',
    metavar='subfolders|none|CSV',
    help='Class labels: first-level folder, path,class rows of a CSV file, or none (drop the source labels).',
)
@click.option('--prompts', metavar='FILE', help='Text prompts, one per line, stored in dataset.json.')
def main(resolution: str | None, width: int | None, height: int | None, **opts: Any) -> None:
    """Make a training dataset: square power-of-two PNGs of one size plus dataset.json.

    Size: --resolution=N|WxH or --width=W --height=H, square (or W x W/2 with center-crop-wide).

    \b
    python dataset_tool.py --source=~/photos --dest=~/photos-256.zip --resolution=256 --transform=center-crop
    python dataset_tool.py --source=~/photos --dest=~/photos-64.zip --resolution=64x64 --transform=center-crop
    python dataset_tool.py --source=cars --dest=cars.zip --transform=center-crop-wide --width=512 --height=256
    python dataset_tool.py --source=~/scans --dest=~/scans-256.zip --resolution=256 --transform=pad
    python dataset_tool.py --source=cifar-10-python.tar.gz --dest=cifar10-32.zip
    """
    convert_dataset(resolution=output_resolution(resolution, width, height, opts['transform']), **opts)


if __name__ == '__main__':
    sys.exit(main())
