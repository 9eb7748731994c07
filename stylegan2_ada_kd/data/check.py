"""The checks run when a dataset is opened: every image fully decoded once, sizes and pixel formats compared,
``dataset.json`` and its labels validated, and one :class:`DatasetError` naming every bad file together with
the ``dataset_tool.py`` command (or training option) that fixes them.

Decoding every file is what catches truncated or corrupt images before training starts. To keep large
datasets cheap to reopen, the verdict for each good file is cached under the dnnlib cache directory
(``$DNNLIB_CACHE_DIR`` or ``~/.cache/dnnlib``, in ``dataset-checks/``), keyed by the file's content key
(folder: size and modification time; zip: CRC-32 and size from the zip directory). A file whose key changed
is decoded again. Datasets with fewer than ``CACHE_MIN_IMAGES`` images are always decoded and leave no cache.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import shlex
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import PIL.Image
import PIL.ImageFile

from dnnlib.util import atomic_write, make_cache_dir_path

if TYPE_CHECKING:
    from stylegan2_ada_kd.data.dataset import ImageFiles

try:
    import pyspng  # Optional fast PNG decoder.
except ImportError:
    pyspng = None

SUPPORTED_MODES = {'L': 1, 'RGB': 3}  # PIL mode -> channels.
MAX_LISTED = 10  # Files named per kind of problem in an error message.
CACHE_MIN_IMAGES = 64  # Smaller datasets are decoded on every open (cheap) and write no cache file.
_DECODE_THREADS = 8
_CACHE_VERSION = 1
_ANNOUNCE_AT = 2000  # Say what is happening when this many files must be decoded.


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message names the files and says how to fix them."""


def is_power_of_two(value: int) -> bool:
    """True for 1, 2, 4, 8, ...; False for zero, negatives and everything else."""
    return value > 0 and value & (value - 1) == 0


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Pixels of an image file's bytes: uint8 ``[H, W]`` (grayscale) or ``[H, W, 3]``; raises if undecodable.

    The one decoder used both by the check at open time and by training (pyspng for PNGs when installed).
    """
    if pyspng is not None and name.lower().endswith('.png'):
        return pyspng.load(data)
    with PIL.Image.open(io.BytesIO(data)) as img:
        if img.mode not in SUPPORTED_MODES:
            raise ValueError(f'pixel format {img.mode} is not L or RGB')
        return np.asarray(img)  # Full decode: a truncated file raises (LOAD_TRUNCATED_IMAGES is False).


class Probe(NamedTuple):
    """What the check learnt about one file: ``size`` (w, h) or None, PIL ``mode`` and an ``error`` text."""

    size: tuple[int, int] | None
    mode: str
    error: str


def probe(files: ImageFiles, name: str) -> Probe:
    """Read the header of ``name`` and, for L/RGB images, decode every pixel (catches truncated files)."""
    try:
        data = files.read(name)
        with PIL.Image.open(io.BytesIO(data)) as img:
            size, mode = img.size, img.mode
        if mode in SUPPORTED_MODES:
            pixels = decode_image(data, name)
            expected = (size[1], size[0]) + ((SUPPORTED_MODES[mode],) if mode != 'L' else ())
            if pixels.shape != expected or pixels.dtype != np.uint8:
                return Probe(
                    None, '', f'decodes to {pixels.dtype} {list(pixels.shape)}, not uint8 {list(expected)}'
                )
    except PIL.UnidentifiedImageError:
        return Probe(None, '', 'not a known image format, or corrupt')
    except Exception as err:  # PIL, zlib and zipfile raise many exception types for broken files.
        return Probe(None, '', f'{type(err).__name__}: {err}')
    return Probe(size, mode, '')


def _decoder_signature() -> str:
    """Changes whenever a cached verdict might no longer hold (other decoder version or settings)."""
    spng = getattr(pyspng, '__version__', 'yes') if pyspng is not None else 'no'
    truncated = PIL.ImageFile.LOAD_TRUNCATED_IMAGES
    return f'v{_CACHE_VERSION} PIL {PIL.__version__} pyspng {spng} truncated {truncated}'


def cache_path(files: ImageFiles) -> str:
    """The cache file holding the check verdicts of the folder or zip ``files.path``."""
    kind = 'zip' if files.is_zip else 'dir'
    digest = hashlib.sha1(f'{kind}:{files.path}'.encode()).hexdigest()[:20]
    base = os.path.splitext(os.path.basename(files.path))[0][:40] or 'dataset'
    return make_cache_dir_path('dataset-checks', f'{base}-{digest}.json')


def _load_cache(path: str) -> dict[str, list]:
    """``{name: [key..., w, h, mode]}`` of files that passed, or ``{}`` when absent, stale or unreadable."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
        if data.get('decoder') == _decoder_signature() and isinstance(data.get('ok'), dict):
            return data['ok']
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def _save_cache(path: str, dataset: str, entries: dict[str, list]) -> None:
    """Write the cache through :func:`atomic_write`; a cache that cannot be written is simply skipped."""
    text = json.dumps(dict(dataset=dataset, decoder=_decoder_signature(), ok=entries))
    with contextlib.suppress(OSError):
        atomic_write(path, lambda handle: handle.write(text.encode('utf-8')))


def _probe_many(files: ImageFiles, names: list[str]) -> list[Probe]:
    """``probe`` for every name; a few threads share the work (PIL decodes without holding the GIL)."""
    if len(names) >= _ANNOUNCE_AT:
        print(f'Checking {len(names)} images of {files.path} (decoding each once)...', flush=True)
    threads = min(_DECODE_THREADS, os.cpu_count() or 1)
    if len(names) < 32 or threads < 2:
        return [probe(files, n) for n in names]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda n: probe(files, n), names, chunksize=8))


def probe_all(files: ImageFiles, names: list[str], keys: list[tuple | None]) -> list[Probe]:
    """``Probe`` of every name, decoding only the files whose content ``keys`` are not cached as good."""
    use_cache = len(names) >= CACHE_MIN_IMAGES
    path = cache_path(files) if use_cache else ''
    cached = _load_cache(path) if use_cache else {}
    results: list[Probe | None] = [None] * len(names)
    todo = []
    for i, (name, key) in enumerate(zip(names, keys)):
        hit = cached.get(name)
        if (
            key is not None
            and isinstance(hit, list)
            and len(hit) == len(key) + 3
            and hit[: len(key)] == list(key)
        ):
            results[i] = Probe((int(hit[-3]), int(hit[-2])), str(hit[-1]), '')
        else:
            todo.append(i)
    for i, result in zip(todo, _probe_many(files, [names[i] for i in todo])):
        results[i] = result
    if use_cache and todo:
        listed = set(files.names)
        entries = {n: v for n, v in cached.items() if n in listed}
        for i in todo:
            entries.pop(names[i], None)
            if results[i].size is not None and keys[i] is not None:
                entries[names[i]] = [*keys[i], *results[i].size, results[i].mode]
        _save_cache(path, files.path, entries)
    return results  # type: ignore[return-value]


def _most_common(values: list[Any]) -> Any:
    """The most frequent value (the first seen wins a tie), or None for an empty list."""
    return collections.Counter(values).most_common(1)[0][0] if values else None


def check_images(
    names: list[str], infos: list[Probe], resolution: int | None, problems: Problems
) -> tuple[int, int]:
    """Report undecodable, non-L/RGB, non-square, non-power-of-2, odd-sized files; return (size, channels)."""
    ok = [(n, info.size, info.mode) for n, info in zip(names, infos) if info.size is not None]
    for name, info in zip(names, infos):
        if info.size is None:
            problems.add('unreadable', name, info.error)
    main_mode = _most_common([mode for _, _, mode in ok if mode in SUPPORTED_MODES]) or 'RGB'
    for name, _size, mode in ok:
        if mode not in SUPPORTED_MODES:
            problems.add('mode', name, f'mode {mode}')
        elif mode != main_mode:
            problems.add('mixed_modes', name, f'{mode}; most images are {main_mode}')
    square = [size[0] for _, size, _ in ok if size[0] == size[1]]
    shorter = [min(size) for _, size, _ in ok]  # No square image: the crop's side sizes the advice.
    ref = resolution or _most_common(square) or _most_common(shorter) or 0
    for name, (w, h), _mode in ok:
        if w != h:
            problems.add('non_square', name, f'{w}x{h}')
        elif w != ref:
            kind = 'wrong_size' if resolution else 'mixed_sizes'
            problems.add(kind, name, f'{w}x{h}, expected {ref}x{ref}')
        elif not is_power_of_two(w):
            problems.add('not_pow2', name, f'{w}x{h}')
    return ref, SUPPORTED_MODES[main_mode]


def read_meta(files: ImageFiles, problems: Problems) -> dict | None:
    """``dataset.json`` as a dict (``{}`` when absent); None when it cannot be parsed as a JSON object.

    Every problem with the file as a whole is reported as ``bad_json``; a malformed ``class_names`` or
    ``prompts`` is reported and replaced by None.
    """
    if not files.exists('dataset.json'):
        return {}
    try:
        meta = json.loads(files.read('dataset.json'))
    except (ValueError, UnicodeDecodeError) as err:
        problems.add('bad_json', 'dataset.json', f'invalid JSON: {err}')
        return None
    if not isinstance(meta, dict):
        problems.add('bad_json', 'dataset.json', f'the top level is a {type(meta).__name__}, not an object')
        return None
    for key in ('class_names', 'prompts'):
        value = meta.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            problems.add('bad_json', 'dataset.json', f'"{key}" must be a list of strings')
            meta[key] = None
    return meta


def _is_index(label: Any) -> bool:
    return isinstance(label, int) and not isinstance(label, bool) and label >= 0


def _is_vector(label: Any) -> bool:
    return isinstance(label, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in label
    )


def label_entries(meta: dict, known: set[str], problems: Problems) -> dict[str, Any]:
    """``{file: label}`` of ``meta['labels']`` for the files in ``known``; reports malformed and unknown ones.

    Labels must be all class indices (int >= 0) or all number lists of one length (reported otherwise).
    """
    labels = meta.get('labels')
    if labels is None:
        detail = '"labels" is null or absent' if meta else 'there is no dataset.json'
        problems.add('no_labels', 'dataset.json', detail)
        return {}
    if not isinstance(labels, list):
        problems.add(
            'bad_labels',
            'dataset.json',
            f'"labels" is a {type(labels).__name__}, not a list of [file, label]',
        )
        return {}
    entries = {}
    for entry in labels:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
            problems.add('bad_label', repr(entry)[:60], 'expected [relative_path, label]')
            continue
        name, label = entry[0].replace('\\', '/'), entry[1]
        if not (_is_index(label) or _is_vector(label)):
            problems.add('bad_label', name, f'{label!r}: use a class index >= 0 or a list of numbers')
        elif name not in known:
            problems.add('unknown_file', name)
        else:
            entries[name] = label
    values = list(entries.values())
    if any(_is_index(v) for v in values) and not all(_is_index(v) for v in values):
        problems.add('bad_labels', 'dataset.json', 'labels mix class indices and lists of numbers')
        return {}
    if values and not _is_index(values[0]) and len({len(v) for v in values}) != 1:
        problems.add('bad_labels', 'dataset.json', 'label lists differ in length')
        return {}
    return entries


def label_matrix(
    names: list[str], entries: dict[str, Any], class_names: list[str] | None, problems: Problems
) -> np.ndarray:
    """float32 ``[len(names), label_dim]``: one-hot rows for class indices, or the label lists as given.

    The one-hot width is ``len(class_names)``, else the largest index in ``entries`` + 1. Unlabelled names
    and out-of-range indices are reported; the result then has ``label_dim == 0``.
    """
    empty = np.zeros([len(names), 0], np.float32)
    missing = [n for n in names if n not in entries]
    malformed = {file for file, _ in problems.items.get('bad_label', [])}
    for name in missing:
        if name not in malformed:  # Already named as malformed.
            problems.add('missing_label', name)
    if not entries:
        return empty
    values = list(entries.values())
    if not _is_index(values[0]):
        return (
            empty if missing else np.asarray([entries[n] for n in names], np.float32).reshape(len(names), -1)
        )
    width = len(class_names) if class_names else max(values) + 1
    out = np.zeros([len(names), width], np.float32)
    bad = False
    for row, name in enumerate(names):
        value = entries.get(name)
        if value is not None and value >= width:
            problems.add('bad_label', name, f'class {value}, but there are only {width} class_names')
            bad = True
        elif value is not None:
            out[row, value] = 1
    return empty if missing or bad else out


def check_labels(
    meta: dict, names: list[str], known: set[str], problems: Problems
) -> tuple[dict[str, Any], np.ndarray]:
    """``label_entries`` of the files ``known`` and ``label_matrix`` of ``names`` (float32 ``[N, dim]``)."""
    entries = label_entries(meta, known, problems)
    if 'no_labels' in problems.items or 'bad_labels' in problems.items:
        return entries, np.zeros([len(names), 0], np.float32)
    return entries, label_matrix(names, entries, meta.get('class_names'), problems)


def source_label_problems(meta: dict, names: list[str]) -> Problems:
    """The problems ``dataset_tool.py`` would find in the ``dataset.json`` labels of images ``names``."""
    problems = Problems()
    check_labels(meta, names, set(names), problems)
    return problems


# Kinds of problems: (which fix applies: 'images', 'json' or 'labels'; heading, {n} = number of entries).
_KINDS = {
    'unreadable': ('images', '{n} image(s) cannot be decoded (corrupt, truncated or not an image)'),
    'mode': ('images', '{n} image(s) have an unsupported pixel format (only L = 8-bit grayscale and RGB)'),
    'mixed_modes': ('images', '{n} image(s) mix grayscale and RGB (one dataset uses one channel count)'),
    'non_square': ('images', '{n} image(s) are not square'),
    'not_pow2': ('images', '{n} image(s) have a size that is not a power of two'),
    'wrong_size': ('images', '{n} image(s) do not match the requested resolution'),
    'mixed_sizes': ('images', '{n} image(s) differ in size from the others (all must have one size)'),
    'bad_json': ('json', 'dataset.json is not usable'),
    'no_labels': ('labels', 'labels were requested (use_labels=True / --cond=1), but there are none'),
    'bad_labels': ('labels', 'the labels in dataset.json are not usable'),
    'bad_label': ('labels', '{n} label(s) in dataset.json are malformed'),
    'missing_label': ('labels', '{n} image(s) have no label in dataset.json'),
    'unknown_file': ('labels', '{n} label(s) in dataset.json name files that are not in the dataset'),
}


class Problems:
    """Collects every problem found while opening a dataset, then raises one DatasetError for all."""

    def __init__(self) -> None:
        self.items: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)

    def add(self, kind: str, file: str, detail: str = '') -> None:
        """Record that ``file`` has a problem of ``kind`` (a key of ``_KINDS``), with an optional detail."""
        self.items[kind].append((file, detail))

    def fixes(self) -> set[str]:
        """Which fixes the problems need: a subset of ``{'images', 'json', 'labels'}``."""
        return {_KINDS[kind][0] for kind in self.items}

    def listing(self) -> list[str]:
        """One heading per kind of problem, then its first MAX_LISTED files (indented lines)."""
        lines = []
        for kind in [k for k in _KINDS if k in self.items]:
            entries = self.items[kind]
            lines.append(f'  {_KINDS[kind][1].format(n=len(entries))}:')
            lines += [
                f'    {file} ({detail})' if detail else f'    {file}' for file, detail in entries[:MAX_LISTED]
            ]
            if len(entries) > MAX_LISTED:
                lines.append(f'    ... and {len(entries) - MAX_LISTED} more')
        return lines


class Context(NamedTuple):
    """What the advice of an error message depends on."""

    path: str  # The folder or zip.
    images: list[str]  # Images served (after the subset).
    all_images: list[str]  # Every image of the folder or zip.
    meta: dict | None  # dataset.json; None when it cannot be parsed.
    size: int  # Requested resolution, else the most common image size; 0 when no image could be read.
    use_labels: bool


def raise_if_any(problems: Problems, ctx: Context) -> None:
    """Raise one DatasetError listing every problem (first MAX_LISTED per kind) and the fixes that work."""
    if not problems.items:
        return
    served = set(ctx.images)
    files = {file for entries in problems.items.values() for file, _ in entries}
    other = 'dataset.json' if 'json' in problems.fixes() else "dataset.json's labels"
    if files & served:
        head = f'Dataset {ctx.path}: problems with {len(files & served)} of {len(ctx.images)} images'
        head += f' and with {other}' if files - served else ''
    else:
        head = f'Dataset {ctx.path} ({len(ctx.images)} images): problems with {other}'
    lines = [head + '; fix them before training.'] + problems.listing() + _advice(problems, ctx)
    raise DatasetError('\n'.join(lines))


def _class_folders(names: list[str]) -> bool:
    """True when every image lies in a first-level sub-folder and there are at least two of them."""
    return all('/' in n for n in names) and len({n.split('/')[0] for n in names}) >= 2


def _source_labels_state(ctx: Context) -> str:
    """What ``dataset_tool.py`` without ``--labels`` makes of the source labels: 'none', 'ok' or 'bad'."""
    if ctx.meta is None:
        return 'bad'
    if ctx.meta.get('labels') is None:
        return 'none'
    return 'ok' if set(source_label_problems(ctx.meta, ctx.all_images).items) <= {'unknown_file'} else 'bad'


def _label_flag(ctx: Context, fixes: set[str]) -> str | None:
    """The ``--labels`` option the suggested dataset_tool command needs (None: keep dataset.json's)."""
    subfolders = '--labels=subfolders' if ctx.use_labels and _class_folders(ctx.all_images) else None
    state = _source_labels_state(ctx)
    if 'json' in fixes:
        return subfolders or '--labels=none'
    if 'labels' in fixes:  # Labels are in use and some are missing or broken.
        return subfolders or (None if state == 'ok' else '--labels=none')
    return None if state != 'bad' else subfolders or '--labels=none'


def _free_zip(stem: str) -> str:
    """``stem.zip``, or ``stem-2.zip``, ``stem-3.zip``, ... whichever does not exist yet."""
    path, count = f'{stem}.zip', 1
    while os.path.exists(path):
        count += 1
        path = f'{stem}-{count}.zip'
    return path


def _tool_command(ctx: Context, fixes: set[str], flag: str | None) -> tuple[str, str]:
    """``(command line, destination)`` of the dataset_tool.py run that fixes the problems."""
    stem = os.path.splitext(ctx.path)[0] if ctx.path.lower().endswith('.zip') else ctx.path
    args = []
    if 'images' in fixes:
        res = 1 << int(ctx.size).bit_length() - 1 if ctx.size >= 4 else 256  # 2^k <= size.
        dest = _free_zip(f'{stem}-{res}x{res}')
        args += [f'--resolution={res}', '--transform=center-crop']
    else:
        dest = _free_zip(f'{stem}-labelled' if flag == '--labels=subfolders' else f'{stem}-fixed')
    args += [flag] if flag else []
    command = ['python', 'dataset_tool.py', f'--source={ctx.path}', f'--dest={dest}'] + args
    return ' '.join(shlex.quote(a) for a in command), dest


def _tool_advice(ctx: Context, fixes: set[str], flag: str | None) -> list[str]:
    """The dataset_tool.py command that fixes the problems, with what it does and how to train after."""
    command, dest = _tool_command(ctx, fixes, flag)
    note = {
        '--labels=subfolders': ' (--labels=subfolders gives each image the class named by its folder):',
        '--labels=none': ' (--labels=none leaves out the labels and ignores a broken dataset.json):',
        None: ' (labels of files that are not in the dataset are dropped):' if 'labels' in fixes else ':',
    }[flag]
    if 'images' in fixes:
        lines = [
            'Fix: convert it into a clean dataset with dataset_tool.py, which crops (with --transform=pad',
            'instead: pads) and resizes every image to one square power-of-two size, converts them to RGB or',
            'grayscale and skips undecodable files' + ('\n' + note.strip() if note != ':' else note),
        ]
    else:
        lines = ['Fix: recreate it with dataset_tool.py' + note]
    cond0 = ' --cond=0 (no labels).' if ctx.use_labels and flag == '--labels=none' else '.'
    return lines + [f'  {command}', f'then train with --data={shlex.quote(dest)}{cond0}']


def _advice(problems: Problems, ctx: Context) -> list[str]:
    """The fixes that work for these problems: a dataset_tool.py command and/or training options."""
    fixes = problems.fixes()
    flag = _label_flag(ctx, fixes)
    if len(problems.items.get('unreadable', [])) == len(ctx.images):
        return ['None of the images can be decoded: check that this is the right folder or zip.']
    lines = []
    if fixes - {'labels'} or flag != '--labels=none':
        lines += _tool_advice(ctx, fixes, flag)
    if ctx.use_labels and fixes == {'labels'}:
        first = 'Fix' if flag == '--labels=none' else 'Or'
        lines.append(f'{first}: train without labels (--cond=0 / use_labels=False).')
    if 'labels' in fixes or ('json' in fixes and ctx.use_labels):
        lines.append(
            'To label the images from a table instead, run dataset_tool.py with --labels=FILE.csv (rows '
            '"relative_path,class").'
        )
    if 'json' in fixes:
        lines.append('Or repair dataset.json by hand (its format: see stylegan2_ada_kd/data/dataset.py).')
    return lines
