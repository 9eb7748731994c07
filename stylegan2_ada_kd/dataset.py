"""Training images: a folder or zip of same-size square images plus an optional ``dataset.json``, checked
file by file when the dataset is opened, and an endless, rank-sharded, resumable index sampler.

``dataset.json`` (at the root of the folder or zip, all keys optional)::

    {"labels": [["00000/img00000000.png", 3], ["00000/img00000001.png", [0.5, 1.0]], ...] or null,
     "class_names": ["cat", "dog", ...], "prompts": ["a photo of a cat", ...], "meta": {...}}

A label is either an int class index (served as a one-hot float32 vector of width ``len(class_names)``, or
``max index + 1`` without class names) or a list of floats (served as is); one dataset uses one kind.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import json
import os
import zipfile
from typing import IO, Any, Iterator, Optional

import numpy as np
import PIL.Image
import torch

try:
    import pyspng  # Optional fast PNG decoder.
except ImportError:
    pyspng = None

SUPPORTED_MODES = {'L': 1, 'RGB': 3}  # PIL mode -> channels.
_COMMON_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')  # Named in messages; PIL opens many more.
MAX_LISTED = 10  # Files named per kind of problem in an error message.
_PROBE_THREADS = 8


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message names the files and says how to fix them."""


def image_extensions() -> set[str]:
    """Lower-case file extensions (with the dot) of every format PIL can open, e.g. ``'.png'``, ``'.jpg'``."""
    PIL.Image.init()
    return {ext.lower() for ext, fmt in PIL.Image.registered_extensions().items() if fmt in PIL.Image.OPEN}


def _visible(name: str) -> bool:
    """False for hidden files and folders (``.DS_Store``, ``.git/...``) and macOS ``__MACOSX`` zip debris."""
    return not any(part.startswith('.') or part == '__MACOSX' for part in name.split('/'))


def is_power_of_two(value: int) -> bool:
    """True for 1, 2, 4, 8, ...; False for zero, negatives and everything else."""
    return value > 0 and value & (value - 1) == 0


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
        self._zip: Optional[zipfile.ZipFile] = None
        self._zip_pid: Optional[int] = None
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


# Kinds of problems found at construction: (what is wrong with the listed files, which fix applies).
_KINDS = {
    'unreadable': ('cannot be read as images (corrupt, truncated or not an image)', 'images'),
    'mode': ('have an unsupported pixel format (only L = 8-bit grayscale and RGB are supported)', 'images'),
    'mixed_modes': ('mix grayscale and RGB (one dataset uses one channel count)', 'images'),
    'non_square': ('are not square', 'images'),
    'not_pow2': ('have a size that is not a power of two', 'images'),
    'wrong_size': ('do not match the requested resolution', 'images'),
    'mixed_sizes': ('differ in size from the other images (all images must have one size)', 'images'),
    'bad_json': ('is not a usable dataset.json', 'labels'),
    'no_labels': ('has no labels, but labels were requested (use_labels=True / --cond=1)', 'labels'),
    'bad_label': ('have a malformed label', 'labels'),
    'missing_label': ('have no label in dataset.json', 'labels'),
    'unknown_file': ('are labelled in dataset.json but do not exist in the dataset', 'labels'),
}


class _Problems:
    """Collects every problem found while opening a dataset, then raises one DatasetError for all."""

    def __init__(self) -> None:
        self.items: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)

    def add(self, kind: str, file: str, detail: str = '') -> None:
        """Record that ``file`` has a problem of ``kind`` (a key of ``_KINDS``), with an optional detail."""
        self.items[kind].append((file, detail))

    def raise_if_any(self, path: str, num_images: int, resolution: Optional[int]) -> None:
        """Raise one DatasetError listing every problem (first MAX_LISTED per kind) and the fixes."""
        if not self.items:
            return
        bad = len({file for entries in self.items.values() for file, _ in entries})
        lines = [f'Dataset {path}: problems with {bad} of {num_images} images; fix them before training.']
        for kind in [k for k in _KINDS if k in self.items]:
            entries = self.items[kind]
            lines.append(f'  {len(entries)} file(s) {_KINDS[kind][0]}:')
            lines += [
                f'    {file} ({detail})' if detail else f'    {file}' for file, detail in entries[:MAX_LISTED]
            ]
            if len(entries) > MAX_LISTED:
                lines.append(f'    ... and {len(entries) - MAX_LISTED} more')
        fixes = {_KINDS[kind][1] for kind in self.items}
        stem = os.path.splitext(path)[0]
        res = 1 << int(resolution).bit_length() - 1 if resolution and resolution >= 4 else 256  # 2^k <= res.
        if 'images' in fixes:
            lines += [
                'Fix the images by converting them into a clean dataset (crops and resizes to one square',
                'power-of-two size, converts to RGB or grayscale, skips unreadable files):',
                f'  python dataset_tool.py --source={path} --dest={stem}-{res}x{res}.zip --resolution={res} '
                '--transform=center-crop',
            ]
        if 'labels' in fixes:
            lines += [
                'Fix the labels by giving every image one in dataset.json, e.g. recreate the dataset with',
                f'  python dataset_tool.py --source={path} --dest={stem}-labelled.zip --labels=subfolders',
                '(or --labels=FILE.csv with rows "relative_path,class"), or train without labels (--cond=0).',
            ]
        raise DatasetError('\n'.join(lines))


@dataclasses.dataclass
class ItemDetails:
    """Where a dataset item comes from: ``raw_idx`` indexes the sorted image files of the folder/zip."""

    raw_idx: int
    file: str
    xflip: bool
    raw_label: np.ndarray  # float32 [label_dim]


def _probe(files: ImageFiles, name: str) -> tuple[Optional[tuple[int, int]], str, str]:
    """``(size (w, h) or None, mode, error)`` of one image file from its header plus PIL's ``verify()``."""
    try:
        with files.open(name) as f, PIL.Image.open(f) as img:
            size, mode = img.size, img.mode
            img.verify()
    except PIL.UnidentifiedImageError:
        return None, '', 'not a known image format, or corrupt'
    except Exception as err:  # PIL and zipfile raise many exception types for broken files.
        return None, '', f'{type(err).__name__}: {err}'
    return size, mode, ''


def _probe_all(files: ImageFiles, names: list[str]) -> list[tuple[Optional[tuple[int, int]], str, str]]:
    """``_probe`` for every name, using a few threads (the work is mostly file I/O)."""
    if len(names) < 64:
        return [_probe(files, n) for n in names]
    with concurrent.futures.ThreadPoolExecutor(_PROBE_THREADS) as pool:
        return list(pool.map(lambda n: _probe(files, n), names, chunksize=16))


def _most_common(values: list[Any]) -> Any:
    """The most frequent value (the first seen wins a tie), or None for an empty list."""
    return collections.Counter(values).most_common(1)[0][0] if values else None


def _check_images(
    names: list[str], infos: list, resolution: Optional[int], problems: _Problems
) -> tuple[int, int]:
    """Report unreadable, non-L/RGB, non-square, non-power-of-2, odd-sized files; return (size, channels)."""
    ok = [(n, size, mode) for n, (size, mode, err) in zip(names, infos) if size is not None]
    for name, (size, _mode, err) in zip(names, infos):
        if size is None:
            problems.add('unreadable', name, err)
    main_mode = _most_common([mode for _, _, mode in ok if mode in SUPPORTED_MODES]) or 'RGB'
    for name, _size, mode in ok:
        if mode not in SUPPORTED_MODES:
            problems.add('mode', name, f'mode {mode}')
        elif mode != main_mode:
            problems.add('mixed_modes', name, f'{mode}; most images are {main_mode}')
    square = [size for _, size, _ in ok if size[0] == size[1]]
    ref = resolution or (_most_common(square) or (0, 0))[0]
    for name, (w, h), _mode in ok:
        if w != h:
            problems.add('non_square', name, f'{w}x{h}')
        elif w != ref:
            kind = 'wrong_size' if resolution else 'mixed_sizes'
            problems.add(kind, name, f'{w}x{h}, expected {ref}x{ref}')
        elif not is_power_of_two(w):
            problems.add('not_pow2', name, f'{w}x{h}')
    return ref, SUPPORTED_MODES[main_mode]


def _read_json(files: ImageFiles, problems: _Problems) -> dict:
    """The parsed ``dataset.json`` (``{}`` when absent or broken; a broken one is reported)."""
    if not files.exists('dataset.json'):
        return {}
    try:
        meta = json.loads(files.read('dataset.json'))
    except (ValueError, UnicodeDecodeError) as err:
        problems.add('bad_json', 'dataset.json', f'invalid JSON: {err}')
        return {}
    if not isinstance(meta, dict):
        problems.add('bad_json', 'dataset.json', 'the top level must be an object')
        return {}
    for key in ('class_names', 'prompts'):
        value = meta.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            problems.add('bad_json', 'dataset.json', f'"{key}" must be a list of strings')
            meta[key] = None
    return meta


def _label_entries(meta: dict, known: set[str], problems: _Problems) -> dict[str, Any]:
    """``{file: label}`` from ``meta['labels']``; reports malformed entries and unknown files."""
    labels = meta.get('labels')
    if labels is None:
        problems.add('no_labels', 'dataset.json', 'the file is missing or its "labels" is null')
        return {}
    if not isinstance(labels, list):
        problems.add('bad_json', 'dataset.json', '"labels" must be a list of [file, label] pairs')
        return {}
    entries = {}
    for entry in labels:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
            problems.add('bad_label', repr(entry)[:60], 'expected [relative_path, label]')
            continue
        name, label = entry[0].replace('\\', '/'), entry[1]
        is_index = isinstance(label, int) and not isinstance(label, bool) and label >= 0
        is_vector = isinstance(label, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in label
        )
        if not (is_index or is_vector):
            problems.add('bad_label', name, f'{label!r}: use a class index >= 0 or a list of numbers')
        elif name not in known:
            problems.add('unknown_file', name)
        else:
            entries[name] = label
    return entries


def _label_matrix(
    names: list[str], entries: dict[str, Any], class_names: Optional[list[str]], problems: _Problems
) -> np.ndarray:
    """float32 ``[len(names), label_dim]``: one-hot rows for class indices, or the label vectors as given."""
    for name in names:
        if name not in entries:
            problems.add('missing_label', name)
    values = [entries[n] for n in names if n in entries]
    if not values or len(values) < len(names):
        return np.zeros([len(names), 0], np.float32)
    if all(isinstance(v, int) for v in values):
        width = len(class_names) if class_names else max(values) + 1
        out = np.zeros([len(names), width], np.float32)
        for row, (name, value) in enumerate(zip(names, values)):
            if value >= width:
                problems.add('bad_label', name, f'class {value} but only {width} class_names')
            else:
                out[row, value] = 1
        return out
    if any(isinstance(v, int) for v in values) or len({len(v) for v in values}) != 1:
        problems.add('bad_label', 'dataset.json', 'labels mix class indices and vectors, or vector lengths')
        return np.zeros([len(names), 0], np.float32)
    return np.asarray(values, dtype=np.float32).reshape(len(names), -1)


class ImageFolderDataset(torch.utils.data.Dataset):
    """Square images from a folder (searched recursively) or a zip, validated when the dataset is created.

    Items are ``(image, label)``: image uint8 ``[C, H, W]`` (C = 1 for grayscale, 3 for RGB, values 0-255)
    and label float32 ``[label_dim]`` (``label_dim == 0`` unless ``use_labels``).

    Args:
        path: folder or ``.zip`` of images (PNG, JPEG, BMP, WebP or any other format PIL opens), with an
            optional ``dataset.json`` at its root.
        resolution: expected image size; None accepts whatever single size the images have.
        use_labels: serve the labels of ``dataset.json``; every image must then have one.
        max_size: keep a random subset of this many images (chosen with ``random_seed``, kept in file order);
            None or a value >= the number of images keeps all.
        xflip: append a mirrored copy of every image: ``len`` doubles, items ``n..2n-1`` are flipped in x.
        random_seed: seed of the subset choice.
        name: display name; defaults to the file or folder name without extension.

    Every image the dataset serves is checked at construction (PIL header and ``verify()``: readable, L or
    RGB, square, one power-of-two size, labelled when labels are used). All problems are reported together
    in one :class:`DatasetError` that names the files and the ``dataset_tool.py`` command that fixes them.
    """

    def __init__(
        self,
        path: str,
        resolution: Optional[int] = None,
        use_labels: bool = False,
        max_size: Optional[int] = None,
        xflip: bool = False,
        random_seed: int = 0,
        name: Optional[str] = None,
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
        self._raw_idx = np.arange(len(all_names), dtype=np.int64)
        if max_size is not None and max_size < len(all_names):
            rnd = np.random.RandomState(int(random_seed) % (1 << 32))
            self._raw_idx = np.sort(rnd.choice(len(all_names), size=max_size, replace=False))
        self._image_names = [all_names[i] for i in self._raw_idx]
        problems = _Problems()
        meta = _read_json(self._files, problems)
        self._class_names = meta.get('class_names')
        self._prompts = meta.get('prompts')
        self._labels = np.zeros([len(self._image_names), 0], np.float32)
        if use_labels:
            entries = _label_entries(meta, set(all_names), problems)
            if 'no_labels' not in problems.items:
                self._labels = _label_matrix(self._image_names, entries, self._class_names, problems)
        infos = _probe_all(self._files, self._image_names)
        size, channels = _check_images(self._image_names, infos, resolution, problems)
        problems.raise_if_any(self._path, len(self._image_names), resolution or size or None)
        self._image_shape = [channels, size, size]

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
        """Decode image ``pos`` to uint8 ``[C, H, W]``; a file changed since validation -> DatasetError."""
        name = self._image_names[pos]
        try:
            data = self._files.read(name)
            if pyspng is not None and name.lower().endswith('.png'):
                image = pyspng.load(data)
            else:
                with PIL.Image.open(io.BytesIO(data)) as img:
                    if img.mode not in SUPPORTED_MODES:
                        raise ValueError(f'pixel format {img.mode} is not L or RGB')
                    image = np.asarray(img)
        except Exception as err:
            raise DatasetError(
                f'{self._path}: cannot decode {name} ({type(err).__name__}: {err}); the file changed after '
                'the dataset was opened. Restore it or recreate the dataset with dataset_tool.py.'
            ) from err
        if image.ndim == 2:
            image = image[:, :, np.newaxis]
        image = image.transpose(2, 0, 1)
        if list(image.shape) != self._image_shape or image.dtype != np.uint8:
            raise DatasetError(
                f'{self._path}: {name} decodes to {image.dtype} {list(image.shape)}, expected uint8 '
                f'{self._image_shape}; the file changed after the dataset was opened. Restore it or '
                'recreate the dataset with dataset_tool.py.'
            )
        return image

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
    def class_names(self) -> Optional[list[str]]:
        """``dataset.json`` ``class_names`` (index -> name), or None."""
        return None if self._class_names is None else list(self._class_names)

    @property
    def prompts(self) -> Optional[list[str]]:
        """``dataset.json`` ``prompts`` (text prompts stored by ``dataset_tool.py --prompts``), or None."""
        return None if self._prompts is None else list(self._prompts)


_SAMPLER_CONFIG = ('num_items', 'rank', 'num_replicas', 'shuffle', 'seed', 'window_size')


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless dataset indices for one rank of ``num_replicas``, reproducible from ``seed``.

    One global sequence is cut into passes; each pass is a permutation of ``range(len(dataset))``, so every
    index is visited exactly once per pass. Pass 0 is a seeded random permutation (or ``0..n-1`` with
    ``shuffle=False``); each later pass re-orders the previous one by a windowed jitter shuffle: position
    ``i`` gets the sort key ``i + u``, ``u ~ U[0, window_size * n)``, so items drift by up to about
    ``window_size * n`` places per pass and the order keeps changing without ever repeating a pass exactly.
    Global step ``g`` belongs to rank ``g % num_replicas``, so ranks see disjoint, interleaved items.

    Resume: ``start_position`` is the number of indices this rank has already consumed; the sampler then
    continues the very same sequence (skipping passes costs one vectorised numpy shuffle per pass).
    ``state_dict()`` / ``load_state_dict()`` wrap the same number. With a DataLoader the sampler runs ahead
    of the batches actually used (prefetching), so prefer deriving ``start_position`` from the training
    progress (images consumed by this rank), as the training loop does.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        rank: int = 0,
        num_replicas: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        window_size: float = 0.5,
        start_position: int = 0,
    ) -> None:
        if len(dataset) < 1:
            raise ValueError('InfiniteSampler needs a non-empty dataset')
        if not 0 <= rank < num_replicas:
            raise ValueError(f'rank={rank} must be in [0, num_replicas={num_replicas})')
        if not 0 <= window_size <= 1:
            raise ValueError(f'window_size={window_size} must be a fraction of the dataset in [0, 1]')
        if start_position < 0:
            raise ValueError(f'start_position={start_position} must be >= 0')
        super().__init__()
        self.num_items = len(dataset)
        self.rank, self.num_replicas = int(rank), int(num_replicas)
        self.shuffle, self.seed, self.window_size = bool(shuffle), int(seed), float(window_size)
        self.start_position = int(start_position)
        self.position = self.start_position

    def _passes(self) -> Iterator[np.ndarray]:
        """The order of pass 0, 1, 2, ...: each an int64 permutation ``[n]``."""
        n = self.num_items
        rnd = np.random.RandomState(self.seed % (1 << 32))
        order = rnd.permutation(n) if self.shuffle else np.arange(n)
        window = self.window_size * n
        while True:
            yield order
            if self.shuffle and window > 0:
                keys = np.arange(n) + rnd.uniform(0, window, size=n)
                order = order[np.argsort(keys, kind='stable')]

    def __iter__(self) -> Iterator[int]:
        """Yield this rank's indices forever, starting after ``start_position`` consumed ones."""
        self.position = self.start_position
        step = self.start_position * self.num_replicas + self.rank
        passes, pass_idx, order = self._passes(), -1, None
        while True:
            target, pos = divmod(step, self.num_items)
            while pass_idx < target:
                order, pass_idx = next(passes), pass_idx + 1
            self.position += 1
            yield int(order[pos])
            step += self.num_replicas

    def state_dict(self) -> dict:
        """``{'position': indices yielded so far by the latest iterator (incl. start), ...config}``."""
        return dict(position=self.position, **{k: getattr(self, k) for k in _SAMPLER_CONFIG})

    def load_state_dict(self, state: dict) -> None:
        """Make the next ``iter()`` continue after ``state['position']``; the configuration must match."""
        mine = self.state_dict()
        diff = [k for k in _SAMPLER_CONFIG if k in state and state[k] != mine[k]]
        if diff:
            raise ValueError(
                f'sampler state does not match this sampler ({", ".join(diff)} differ): '
                + ', '.join(f'{k}={state[k]!r} vs {mine[k]!r}' for k in diff)
            )
        self.start_position = self.position = int(state['position'])
