"""Readers of dataset_tool.py's ``--source``: a folder or zip of images (with its dataset.json checked as
training checks it), the CIFAR-10 python batches (folder or archive), an LMDB database of encoded images
(LSUN's form) or MNIST's idx files, as a :class:`Source`.

Errors are ``click.ClickException`` (incl. ``BadParameter``) with a message for the user.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import os
import pickle
import tarfile
from typing import Any, BinaryIO, Callable

import click
import numpy as np
import PIL.Image

from stylegan2_ada_kd.data.check import Problems, check_labels, read_meta
from stylegan2_ada_kd.data.dataset import MAX_LISTED, DatasetError, ImageFiles

CIFAR_FILES = [f'data_batch_{i}' for i in range(1, 6)] + ['batches.meta']
MNIST_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz')
MNIST_PAD = 2  # Black pixels added on each side: 28x28 -> 32x32, a power of two (as the reference tool).


@dataclasses.dataclass
class Source:
    """Images to convert, in output order, with the labels the source itself provides.

    ``header(name)`` returns ``((width, height), PIL mode)`` cheaply; ``load(name)`` decodes the image.
    ``labels`` maps a name to an int class index or a list of floats.
    """

    description: str
    names: list[str]
    header: Callable[[str], tuple[tuple[int, int], str]]
    load: Callable[[str], PIL.Image.Image]
    labels: dict[str, Any] | None = None
    class_names: list[str] | None = None
    prompts: list[str] | None = None
    builtin_labels: str | None = (
        None  # What the labels come with ('CIFAR-10', 'MNIST'): --labels cannot apply.
    )


def listed(items: list[str], limit: int = MAX_LISTED) -> str:
    """``'a, b, c'`` for the first ``limit`` items, plus ``'(and N more)'``."""
    text = ', '.join(items[:limit])
    return text + (f' (and {len(items) - limit} more)' if len(items) > limit else '')


def _header(stream: BinaryIO) -> tuple[tuple[int, int], str]:
    """``((w, h), mode)`` of an encoded image, from its header only."""
    with PIL.Image.open(stream) as img:
        return img.size, img.mode


def _decoded(data: bytes) -> PIL.Image.Image:
    """The fully decoded image of ``data`` (independent of any open file)."""
    img = PIL.Image.open(io.BytesIO(data))
    img.load()
    return img


def _file_header(files: ImageFiles, name: str) -> tuple[tuple[int, int], str]:
    """``((w, h), mode)`` from the image header only."""
    with files.open(name) as f:
        return _header(f)


def _source_meta(files: ImageFiles, labels_option: str | None) -> dict:
    """The source's dataset.json; an unusable one is an error, unless ``--labels`` replaces its labels."""
    problems = Problems()
    meta = read_meta(files, problems)
    if not problems.items:
        return meta
    detail = '; '.join(detail for _, detail in problems.items['bad_json'])
    if labels_option is None:
        raise click.ClickException(
            f'{files.path}: dataset.json is not usable ({detail}). Repair or delete it, or pass '
            '--labels=none (ignore it), --labels=subfolders or --labels=FILE.csv.'
        )
    click.echo(f'Warning: ignoring the unusable dataset.json of {files.path} ({detail})', err=True)
    return {}


def _source_labels(meta: dict, names: list[str], path: str) -> dict[str, Any] | None:
    """dataset.json's labels as ``{name: label}``, checked as training checks them; None without labels."""
    if not meta.get('labels'):
        return None
    problems = Problems()
    entries, _ = check_labels(meta, names, set(names), problems)
    problems.items.pop('missing_label', None)  # Checked for the readable images by _check_plan.
    stale = [file for file, _ in problems.items.pop('unknown_file', [])]
    if problems.items:
        raise click.ClickException(
            f'{path}/dataset.json: its labels are not usable:\n'
            + '\n'.join(problems.listing())
            + '\nRepair them, or pass --labels=none (no labels), --labels=subfolders or --labels=FILE.csv.'
        )
    if stale:
        click.echo(
            f'Warning: dropping {len(stale)} label(s) of files not in the source: {listed(stale)}', err=True
        )
    return entries


def _files_source(path: str, labels_option: str | None = None) -> Source:
    """A folder or zip of images; its ``dataset.json`` labels, class names and prompts are honoured.

    With ``labels_option`` (``--labels``) the labels of dataset.json are replaced, so they are not checked
    and a dataset.json that cannot be parsed is ignored with a warning.
    """
    try:
        files = ImageFiles(path)
    except DatasetError as err:
        raise click.BadParameter(str(err), param_hint='--source') from err
    meta = _source_meta(files, labels_option)
    names = files.image_names()
    return Source(
        description=files.path,
        names=names,
        header=functools.partial(_file_header, files),
        load=lambda name: _decoded(files.read(name)),
        labels=_source_labels(meta, names, files.path) if labels_option is None else None,
        class_names=meta.get('class_names'),
        prompts=meta.get('prompts'),
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 batches while refusing every global except what numpy arrays need."""

    _ALLOWED = {
        (mod, name)
        for mod in ('numpy', 'numpy.core.multiarray', 'numpy._core.multiarray', 'numpy.core.numeric')
        for name in ('ndarray', 'dtype', '_reconstruct', 'scalar', '_frombuffer')
    } | {('numpy._core.numeric', '_frombuffer'), ('_codecs', 'encode')}  # Bytes in protocol-2 pickles.

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name`` only for the numpy array helpers; anything else is an error."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f'{module}.{name} is not expected in a CIFAR-10 batch')
        return super().find_class(module, name)


def _cifar_source(description: str, read: Callable[[str], bytes]) -> Source:
    """CIFAR-10 python batches ``data_batch_1..5`` (50000 RGB 32x32, labels 0-9) and ``batches.meta``."""
    images, labels = [], []
    try:
        for fname in CIFAR_FILES[:5]:
            batch = _ArrayUnpickler(io.BytesIO(read(fname)), encoding='bytes').load()
            data = np.asarray(batch[b'data'], dtype=np.uint8).reshape(-1, 3, 32, 32)
            images.append(data.transpose(0, 2, 3, 1))
            labels += [int(v) for v in batch[b'labels']]
        meta = _ArrayUnpickler(io.BytesIO(read('batches.meta')), encoding='bytes').load()
        class_names = [v.decode() if isinstance(v, bytes) else str(v) for v in meta[b'label_names']]
    except (OSError, KeyError, ValueError, TypeError, pickle.UnpicklingError, EOFError) as err:
        raise click.ClickException(
            f'{description}: not the CIFAR-10 python version ({type(err).__name__}: {err}); use '
            'cifar-10-python.tar.gz or its extracted cifar-10-batches-py/ folder'
        ) from err
    pixels = np.concatenate(images)
    names = [f'cifar10/{i:05d}' for i in range(len(pixels))]
    return Source(
        description=description,
        names=names,
        header=lambda name: ((32, 32), 'RGB'),
        load=lambda name: PIL.Image.fromarray(pixels[int(name.split('/')[1])]),
        labels=dict(zip(names, labels)),
        class_names=class_names,
        builtin_labels='CIFAR-10',
    )


def _read_path(folder: str, name: str) -> bytes:
    """Bytes of ``folder/name``."""
    with open(os.path.join(folder, name), 'rb') as f:
        return f.read()


def _cifar_tar(path: str) -> Source:
    """CIFAR-10 batches read straight from ``cifar-10-python.tar.gz`` (nothing is extracted to disk)."""
    try:
        with tarfile.open(path) as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in CIFAR_FILES if n not in members]
            if missing:
                raise click.ClickException(
                    f'{path} is not the CIFAR-10 python archive: it lacks {", ".join(missing)}'
                )
            blobs = {n: tar.extractfile(members[n]).read() for n in CIFAR_FILES}
    except tarfile.TarError as err:
        raise click.ClickException(f'{path}: cannot read the tar archive ({err})') from err
    return _cifar_source(path, blobs.__getitem__)


def _lmdb_source(path: str) -> Source:
    """An LMDB database whose values are encoded images (LSUN's ``*_lmdb`` folders), in key order, named
    ``lmdb/<index>``; values that do not decode are skipped like broken files."""
    try:
        import lmdb
    except ImportError as err:
        raise click.ClickException(
            f'{path} is an LMDB database (as LSUN ships); reading it needs the lmdb package: pip install lmdb'
        ) from err
    try:
        env = _open_lmdb(lmdb, path)
        with env.begin() as txn:
            keys = list(txn.cursor().iternext(keys=True, values=False))
    except lmdb.Error as err:
        raise click.ClickException(f'{path}: cannot read the LMDB database ({err})') from err

    def read(name: str) -> bytes:
        with env.begin() as txn:
            return txn.get(keys[int(name.split('/')[1])])

    header = lambda name: _header(io.BytesIO(read(name)))
    return Source(
        path, [f'lmdb/{i:08d}' for i in range(len(keys))], header, lambda name: _decoded(read(name))
    )


@functools.cache
def _open_lmdb(lmdb: Any, path: str) -> Any:
    """One read-only environment per database and process (lmdb refuses to open one twice in a process)."""
    return lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=os.path.isdir(path))


def _mnist_source(folder: str) -> Source:
    """MNIST's training set from ``train-images-idx3-ubyte.gz`` and ``train-labels-idx1-ubyte.gz``: 60000
    grayscale digits padded to 32x32, labels 0-9."""
    try:
        with gzip.open(os.path.join(folder, MNIST_FILES[0])) as f:
            magic, count, rows, cols = np.frombuffer(f.read(16), dtype='>u4')
            pixels = np.frombuffer(f.read(), dtype=np.uint8)
        with gzip.open(os.path.join(folder, MNIST_FILES[1])) as f:
            label_magic, label_count = np.frombuffer(f.read(8), dtype='>u4')
            labels = np.frombuffer(f.read(), dtype=np.uint8)
        if (magic, label_magic) != (2051, 2049) or label_count != count or pixels.size != count * rows * cols:
            raise ValueError(
                f'headers {magic}/{label_magic}, {count} images of {rows}x{cols}, {label_count} labels'
            )
    except (OSError, ValueError, EOFError) as err:
        raise click.ClickException(f"{folder}: not MNIST's idx files ({type(err).__name__}: {err})") from err
    images = np.pad(
        pixels.reshape(count, rows, cols), [(0, 0), (MNIST_PAD, MNIST_PAD), (MNIST_PAD, MNIST_PAD)]
    )
    names = [f'mnist/{i:05d}' for i in range(count)]
    size = (int(cols) + 2 * MNIST_PAD, int(rows) + 2 * MNIST_PAD)
    return Source(
        description=folder,
        names=names,
        header=lambda name: (size, 'L'),
        load=lambda name: PIL.Image.fromarray(images[int(name.split('/')[1])]),
        labels={name: int(v) for name, v in zip(names, labels)},
        class_names=[str(d) for d in range(10)],
        builtin_labels='MNIST',
    )


def open_source(path: str, labels_option: str | None = None) -> Source:
    """Pick the reader for ``--source``: CIFAR-10 folder or archive, an LMDB database (a folder holding
    ``data.mdb``, or that file), MNIST's idx files, else a folder or zip of images.

    ``labels_option`` is ``--labels`` (None: use the labels the source provides).
    """
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise click.BadParameter(f'{path} does not exist', param_hint='--source')
    if os.path.isdir(path):
        for folder in (path, os.path.join(path, 'cifar-10-batches-py')):
            if os.path.isfile(os.path.join(folder, 'data_batch_1')):
                return _cifar_source(folder, functools.partial(_read_path, folder))
        if os.path.isfile(os.path.join(path, 'data.mdb')):
            return _lmdb_source(path)
        if all(os.path.isfile(os.path.join(path, name)) for name in MNIST_FILES):
            return _mnist_source(path)
    elif path.endswith('.mdb'):
        return _lmdb_source(path)
    elif path.lower().endswith(('.tar.gz', '.tgz', '.tar')):
        return _cifar_tar(path)
    return _files_source(path, labels_option)
