"""Training images: a folder or zip of same-size square images plus an optional ``dataset.json``, checked
file by file when the dataset is opened, optionally split into training and held-out images.

``dataset.json`` (at the root of the folder or zip, all keys optional)::

    {"labels": [["00000/img00000000.png", 3], ["00000/img00000001.png", [0.5, 1.0]], ...] or null,
     "class_names": ["cat", "dog", ...], "prompts": ["a photo of a cat", ...], "meta": {...}}

A label is either an int class index (served as a one-hot float32 vector of width ``len(class_names)``, or
``max index + 1`` without class names) or a list of floats (served as is); one dataset uses one kind.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import zipfile
from collections.abc import Mapping
from typing import IO, Any

import numpy as np
import PIL.Image
import torch

from dnnlib.util import construct_class_by_name
from stylegan2_ada_kd.data.check import (
    MAX_LISTED,
    SUPPORTED_MODES,
    Context,
    DatasetError,
    Problems,
    check_images,
    check_labels,
    decode_image,
    is_power_of_two,
    probe_all,
    raise_if_any,
    read_meta,
)

__all__ = [
    'MAX_LISTED',
    'SUPPORTED_MODES',
    'DatasetError',
    'ImageFiles',
    'ImageFolderDataset',
    'ItemDetails',
    'image_extensions',
    'is_power_of_two',
]

_COMMON_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')  # Named in messages; PIL opens many more.


def image_extensions() -> set[str]:
    """Lower-case file extensions (with the dot) of every format PIL can open, e.g. ``'.png'``, ``'.jpg'``."""
    PIL.Image.init()
    return {ext.lower() for ext, fmt in PIL.Image.registered_extensions().items() if fmt in PIL.Image.OPEN}


def _visible(name: str) -> bool:
    """False for hidden files and folders (``.DS_Store``, ``.git/...``) and macOS ``__MACOSX`` zip debris."""
    return not any(part.startswith('.') or part == '__MACOSX' for part in name.split('/'))


class ImageFiles:
    """Read-only access to the files of a folder (recursive) or zip, by relative ``'/'``-separated name.

    A zip is opened lazily, once per process, so the object pickles without a file handle and works in
    DataLoader worker processes (forked or spawned).
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(str(path)))
        if os.path.isdir(self.path):
            self.is_zip = False
        elif os.path.isfile(self.path):
            if not zipfile.is_zipfile(self.path):
                raise DatasetError(
                    f'{self.path} is neither a folder nor a zip file; pass a folder of images or a .zip '
                    'written by dataset_tool.py'
                )
            self.is_zip = True
        else:
            raise DatasetError(f'{self.path} does not exist; check the path (a folder of images or a .zip)')
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None
        self.names = sorted(self._list())

    def _list(self) -> list[str]:
        if self.is_zip:
            return [n for n in self._zipfile().namelist() if not n.endswith('/') and _visible(n)]
        names = []
        for root, dirs, files in os.walk(self.path):
            dirs[:] = [d for d in dirs if _visible(d)]
            rel = os.path.relpath(root, self.path).replace(os.sep, '/')
            names += [f if rel == '.' else f'{rel}/{f}' for f in files if _visible(f)]
        return names

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)  # A fresh handle per process: no shared file offsets.
            self._zip_pid = os.getpid()
        return self._zip

    def image_names(self) -> list[str]:
        """Sorted names of the files with an image extension (``dataset.json`` and other files excluded)."""
        exts = image_extensions()
        return [n for n in self.names if os.path.splitext(n)[1].lower() in exts]

    def exists(self, name: str) -> bool:
        """Whether ``name`` is one of the listed files."""
        return name in set(self.names)

    def open(self, name: str) -> IO[bytes]:
        """A binary file object for ``name`` (close it after use)."""
        if self.is_zip:
            return self._zipfile().open(name, 'r')
        return open(os.path.join(self.path, *name.split('/')), 'rb')

    def read(self, name: str) -> bytes:
        """All bytes of ``name``."""
        with self.open(name) as f:
            return f.read()

    def content_key(self, name: str) -> tuple[int, int]:
        """Changes when the file's content does: zip ``(CRC-32, size)``, folder ``(size, mtime in ns)``."""
        if self.is_zip:
            info = self._zipfile().getinfo(name)
            return info.CRC, info.file_size
        stat = os.stat(os.path.join(self.path, *name.split('/')))
        return stat.st_size, stat.st_mtime_ns

    def content_keys(self, names: list[str]) -> list[tuple[int, int] | None]:
        """``content_key`` of each name; None for a file that cannot be looked up."""
        keys: list[tuple[int, int] | None] = []
        for name in names:
            try:
                keys.append(self.content_key(name))
            except (OSError, KeyError, zipfile.BadZipFile):
                keys.append(None)
        return keys

    def close(self) -> None:
        """Close the zip handle of this process, if any (it reopens on the next read)."""
        if self._zip is not None and self._zip_pid == os.getpid():
            self._zip.close()
        self._zip, self._zip_pid = None, None

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _zip=None, _zip_pid=None)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def split_indices(num: int, max_size: int | None, holdout: int, split: str, seed: int) -> np.ndarray:
    """Sorted int64 indices (into the ``num`` sorted image files) that one split of the dataset serves.

    ``holdout`` images are drawn first with ``seed``; ``split='holdout'`` returns them. ``split='train'``
    returns the others, or a random subset of ``max_size`` of them (drawn as without a holdout, so
    ``holdout=0`` keeps the subsets of earlier runs).
    """
    if split not in ('train', 'holdout'):
        raise DatasetError(f"split={split!r} must be 'train' or 'holdout'")
    if holdout and not 0 < holdout < num:
        raise DatasetError(
            f'holdout={holdout} must leave training images: the dataset has {num} images; hold out fewer '
            f'(e.g. --holdout={max(2, num // 5)})'
        )
    idx = np.arange(num, dtype=np.int64)
    if holdout:
        held = np.sort(np.random.RandomState(seed % (1 << 32)).choice(num, size=holdout, replace=False))
        if split == 'holdout':
            return held
        idx = np.setdiff1d(idx, held)
    elif split == 'holdout':
        raise DatasetError("split='holdout' needs holdout > 0")
    if max_size is not None and max_size < len(idx):
        rnd = np.random.RandomState(seed % (1 << 32))
        idx = np.sort(rnd.choice(idx, size=max_size, replace=False))
    return idx


@dataclasses.dataclass
class ItemDetails:
    """Where a dataset item comes from: ``raw_idx`` indexes the sorted image files of the folder/zip."""

    raw_idx: int
    file: str
    xflip: bool
    raw_label: np.ndarray  # float32 [label_dim]


class ImageFolderDataset(torch.utils.data.Dataset):
    """Square images from a folder (searched recursively) or a zip, validated when the dataset is created.

    Items are ``(image, label)``: image uint8 ``[C, H, W]`` (C = 1 for grayscale, 3 for RGB, values 0-255)
    and label float32 ``[label_dim]`` (``label_dim == 0`` unless ``use_labels``).

    ``path`` holds PNG, JPEG, BMP, WebP or any other format PIL opens, with an optional ``dataset.json`` at
    its root. The ``max_size`` subset keeps file order; with ``xflip`` items ``n..2n-1`` are the mirrored
    copies of items ``0..n-1``. ``holdout`` images are set apart for overfitting diagnostics, and the subset
    is then drawn from the other images.

    Every image the dataset serves is checked at construction: fully decoded once (so truncated and corrupt
    files are caught; verdicts of unchanged files are cached, see :mod:`stylegan2_ada_kd.data.check`),
    L or RGB, square, one power-of-two size, and labelled when labels are used. All problems are reported
    together in one :class:`DatasetError` that names the files and says how to fix them (a working
    ``dataset_tool.py`` command, or a training option).
    """

    def __init__(
        self,
        path: str,  # Folder or .zip of images, searched recursively.
        resolution: int | None = None,  # Expected image size; None = whatever single size the images have.
        use_labels: bool = False,  # Serve the labels of dataset.json; every image must then have one.
        max_size: int | None = None,  # Keep a random subset of this many images; None or >= count = all.
        xflip: bool = False,  # Append a mirrored copy of every image (len doubles).
        random_seed: int = 0,  # Seed of the subset and held-out choices.
        name: str | None = None,  # Display name; None = the file or folder name without extension.
        holdout: int = 0,  # Images set apart from training (chosen with random_seed); 0 = none.
    ) -> None:
        if resolution is not None and not (is_power_of_two(int(resolution)) and resolution >= 4):
            raise DatasetError(f'resolution={resolution} must be a power of two >= 4 (e.g. 64, 256, 1024)')
        if max_size is not None and max_size < 1:
            raise DatasetError(f'max_size={max_size} must be at least 1 (or None to use every image)')
        self._files = ImageFiles(path)
        self._path = self._files.path
        self._name = name or os.path.splitext(os.path.basename(self._path))[0]
        self._xflip = bool(xflip)
        all_names = self._files.image_names()
        if not all_names:
            raise DatasetError(
                f'{self._path} contains no images (searched recursively for {", ".join(_COMMON_EXTS)} and '
                'other formats PIL opens); point to the right folder or build one with '
                f'python dataset_tool.py --source=IMAGES_DIR --dest={os.path.splitext(self._path)[0]}.zip'
            )
        self._raw_idx = split_indices(len(all_names), max_size, int(holdout), 'train', int(random_seed))
        self._held_idx = np.zeros([0], np.int64)
        if holdout:
            self._held_idx = split_indices(len(all_names), None, int(holdout), 'holdout', int(random_seed))
        self._image_names = [all_names[i] for i in self._raw_idx]
        self._check(all_names, resolution, bool(use_labels))

    def _check(self, all_names: list[str], resolution: int | None, use_labels: bool) -> None:
        """Decode every served and held-out image once (cached), read dataset.json and the labels; raise on
        problems. The held-out images' keys and labels are kept for :meth:`holdout_split`."""
        names = self._image_names + [all_names[i] for i in self._held_idx]
        problems = Problems()
        meta = read_meta(self._files, problems)
        self._class_names = meta.get('class_names') if meta else None
        self._prompts = meta.get('prompts') if meta else None
        labels = np.zeros([len(names), 0], np.float32)
        if use_labels and meta is not None:
            labels = check_labels(meta, names, set(all_names), problems)[1]
        keys = self._files.content_keys(names)
        size, channels = check_images(names, probe_all(self._files, names, keys), resolution, problems)
        raise_if_any(problems, Context(self._path, names, all_names, meta, size, use_labels))
        self._image_shape = [channels, size, size]
        n = len(self._image_names)
        self._labels, self._keys = labels[:n], keys[:n]
        self._held = (names[n:], keys[n:], labels[n:])

    def holdout_split(self) -> ImageFolderDataset:
        """The held-out images (``holdout`` > 0) as a dataset of their own, in file order, without mirroring.

        It shares this dataset's opened files and checks (the held-out images were checked with it), so the
        held-out set costs no second opening. Raises :class:`DatasetError` when nothing is held out.
        """
        if not len(self._held_idx):
            raise DatasetError('this dataset holds no images out (holdout=0)')
        held = copy.copy(self)
        held._raw_idx, held._held_idx, held._held = self._held_idx, np.zeros([0], np.int64), ([], [], None)
        held._image_names, held._keys, held._labels = self._held
        held._xflip = False
        return held

    @property
    def holdout_files(self) -> list[str]:
        """Relative names of the held-out images, in file order (empty without ``holdout``)."""
        return list(self._held[0])

    def __len__(self) -> int:
        return len(self._image_names) * (2 if self._xflip else 1)

    def _item(self, idx: int) -> tuple[int, bool]:
        """(position in the image list, mirrored?) of dataset index ``idx`` (negative counts from the end)."""
        length = len(self)
        idx = int(idx)
        if not -length <= idx < length:
            raise IndexError(f'index {idx} out of range for a dataset of {length} items')
        idx %= length
        return idx % len(self._image_names), idx >= len(self._image_names)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        pos, flip = self._item(idx)
        image = self._load_image(pos)
        if flip:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image), self._labels[pos].copy()

    def _load_image(self, pos: int) -> np.ndarray:
        """Decode image ``pos`` to uint8 ``[C, H, W]``; a file that fails now -> DatasetError naming it."""
        name = self._image_names[pos]
        try:
            image = decode_image(self._files.read(name), name)
        except Exception as err:
            raise self._load_error(pos, f'cannot be decoded ({type(err).__name__}: {err})') from err
        if image.ndim == 2:
            image = image[:, :, np.newaxis]
        image = image.transpose(2, 0, 1)
        if list(image.shape) != self._image_shape or image.dtype != np.uint8:
            raise self._load_error(
                pos, f'decodes to {image.dtype} {list(image.shape)}, not uint8 {self._image_shape}'
            )
        return image

    def _load_error(self, pos: int, what: str) -> DatasetError:
        """The error for image ``pos`` failing in training: says whether the file changed since the check."""
        name = self._image_names[pos]
        now = self._files.content_keys([name])[0]
        if now is None:
            why = 'it no longer exists (or cannot be read) since the dataset was opened and checked'
        elif now != self._keys[pos]:
            why = 'the file changed after the dataset was opened and checked'
        else:
            why = (
                'it passed the check when the dataset was opened and its size and modification time are '
                'unchanged, so it was altered in place or the read failed (disk or network error)'
            )
        return DatasetError(
            f'{self._path}: {name} {what}; {why}. Restore or replace the file, or recreate the dataset with '
            'dataset_tool.py (it skips undecodable files).'
        )

    def get_label(self, idx: int) -> np.ndarray:
        """Label of item ``idx``: float32 ``[label_dim]`` (a copy)."""
        return self._labels[self._item(idx)[0]].copy()

    def get_details(self, idx: int) -> ItemDetails:
        """Source file, raw index, mirror flag and label of item ``idx``."""
        pos, flip = self._item(idx)
        return ItemDetails(int(self._raw_idx[pos]), self._image_names[pos], flip, self._labels[pos].copy())

    def close(self) -> None:
        """Release this process's zip handle (reading again reopens it)."""
        self._files.close()

    @property
    def name(self) -> str:
        """Display name, e.g. ``'ffhq-256x256'`` for ``ffhq-256x256.zip``."""
        return self._name

    @property
    def files(self) -> list[str]:
        """Relative names of the images served (after the subset), in item order (without mirroring)."""
        return list(self._image_names)

    @property
    def image_shape(self) -> list[int]:
        """``[C, H, W]`` of every image."""
        return list(self._image_shape)

    @property
    def num_channels(self) -> int:
        """1 (grayscale) or 3 (RGB)."""
        return self._image_shape[0]

    @property
    def resolution(self) -> int:
        """Height (== width) of every image, a power of two."""
        return self._image_shape[1]

    @property
    def label_shape(self) -> list[int]:
        """``[label_dim]``."""
        return [self.label_dim]

    @property
    def label_dim(self) -> int:
        """Width of the label vectors; 0 without labels."""
        return int(self._labels.shape[1])

    @property
    def has_labels(self) -> bool:
        """Whether items carry labels (``label_dim > 0``)."""
        return self.label_dim > 0

    @property
    def class_names(self) -> list[str] | None:
        """``dataset.json`` ``class_names`` (index -> name), or None."""
        return None if self._class_names is None else list(self._class_names)

    @property
    def prompts(self) -> list[str] | None:
        """``dataset.json`` ``prompts`` (text prompts stored by ``dataset_tool.py --prompts``), or None."""
        return None if self._prompts is None else list(self._prompts)


def open_dataset(kwargs: Mapping[str, Any]) -> torch.utils.data.Dataset:
    """The dataset of ``kwargs`` (``class_name`` + options, e.g. a run record's ``training_set_kwargs``),
    opened and checked once per process: the training loop and the KD anchors share one object."""
    return _open_dataset(json.dumps(dict(kwargs), sort_keys=True))


@functools.cache
def _open_dataset(key: str) -> torch.utils.data.Dataset:
    """:func:`open_dataset` by the JSON of its kwargs."""
    return construct_class_by_name(**json.loads(key))
