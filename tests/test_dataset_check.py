"""Opening a dataset decodes every image: truncated files are named up front; the verdicts of unchanged
files are cached by content key (folder: size + mtime, zip: CRC + size); training-time errors say why."""

import io
import json
import os
import zipfile

import numpy as np
import PIL.Image
import pytest

from stylegan2_ada_kd.data import check
from stylegan2_ada_kd.data.dataset import DatasetError, ImageFolderDataset


def _encoded(seed, fmt, size=16):
    rnd = np.random.RandomState(seed)
    buf = io.BytesIO()
    PIL.Image.fromarray(rnd.randint(0, 256, size=[size, size, 3], dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def image_files(n=6, truncated=True):
    """``{name: bytes}`` of ``n`` good PNGs/JPEGs, plus (``truncated``) a half JPEG and a half PNG."""
    files = {f'img{i}.{"png" if i % 2 else "jpg"}': _encoded(i, 'png' if i % 2 else 'jpeg') for i in range(n)}
    if truncated:
        jpeg, png = _encoded(100, 'jpeg', 64), _encoded(101, 'png', 64)
        files['sub/half.jpg'] = jpeg[: len(jpeg) // 2]
        files['half.png'] = png[: len(png) // 2]
    return files


def write(tmp_path, kind, files):
    if kind == 'zip':
        path = tmp_path / 'data.zip'
        with zipfile.ZipFile(path, 'w') as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return path
    for name, data in files.items():
        (tmp_path / 'data' / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / 'data' / name).write_bytes(data)
    return tmp_path / 'data'


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private cache, used for every dataset size; returns it."""
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setattr(check, 'CACHE_MIN_IMAGES', 0)
    return tmp_path / 'cache'


@pytest.fixture
def decodes(monkeypatch):
    """Counts the full decodes done by the open-time check (a list of file names)."""
    seen = []
    real = check.decode_image

    def counting(data, name):
        seen.append(name)
        return real(data, name)

    monkeypatch.setattr(check, 'decode_image', counting)
    return seen


@pytest.mark.parametrize('kind', ['folder', 'zip'])
def test_truncated_files_are_named_at_open(tmp_path, kind, cache_dir):
    path = write(tmp_path, kind, image_files())
    half = PIL.Image.open(io.BytesIO(image_files()['sub/half.jpg']))
    half.verify()  # A header check alone passes the truncated JPEG: only decoding finds it.
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(str(path))
    message = str(info.value)
    assert 'problems with 2 of 8 images' in message and '2 image(s) cannot be decoded' in message
    assert 'sub/half.jpg (OSError: image file is truncated' in message and 'half.png' in message
    assert 'img0.jpg' not in message and 'img1.png' not in message
    assert '--transform=center-crop' in message  # dataset_tool skips undecodable files.
    assert PIL.ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize('kind', ['folder', 'zip'])
def test_verdicts_are_cached_and_changed_files_rechecked(tmp_path, kind, cache_dir, decodes):
    files = image_files(truncated=False)
    path = write(tmp_path, kind, files)
    assert len(ImageFolderDataset(str(path))) == 6 and len(decodes) == 6
    assert len(list(cache_dir.rglob('*.json'))) == 1
    decodes.clear()
    ds = ImageFolderDataset(str(path))
    assert decodes == [] and ds.resolution == 16  # Every verdict came from the cache.
    np.testing.assert_array_equal(
        ds[1][0], np.asarray(PIL.Image.open(io.BytesIO(files['img1.png']))).transpose(2, 0, 1)
    )
    # One changed file (same size, new contents and time) is decoded again, the others are not.
    files['img3.png'] = _encoded(33, 'png')
    if kind == 'zip':
        path = write(tmp_path, kind, files)
    else:
        (path / 'img3.png').write_bytes(files['img3.png'])
        os.utime(path / 'img3.png', ns=(1, 1))
    ImageFolderDataset(str(path))
    assert decodes == ['img3.png']
    # A file truncated since the last open is found although its name is cached as good.
    decodes.clear()
    files['img4.jpg'] = files['img4.jpg'][:-50]
    if kind == 'zip':
        path = write(tmp_path, kind, files)
    else:
        (path / 'img4.jpg').write_bytes(files['img4.jpg'])
    with pytest.raises(DatasetError, match=r'img4\.jpg \(OSError'):
        ImageFolderDataset(str(path))
    assert decodes == ['img4.jpg']


def test_cache_is_skipped_for_small_datasets_and_survives_garbage(tmp_path, monkeypatch, decodes):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    path = write(tmp_path, 'folder', image_files(truncated=False))
    ImageFolderDataset(str(path))
    assert not (tmp_path / 'cache').exists()  # 6 < CACHE_MIN_IMAGES: nothing written.
    monkeypatch.setattr(check, 'CACHE_MIN_IMAGES', 0)
    ImageFolderDataset(str(path))
    cache_file = next((tmp_path / 'cache').rglob('*.json'))
    assert sorted(json.loads(cache_file.read_text())['ok']) == sorted(image_files(truncated=False))
    cache_file.write_text('{broken')
    decodes.clear()
    ImageFolderDataset(str(path))
    assert len(decodes) == 6 and json.loads(cache_file.read_text())['ok']  # Rebuilt.


def test_bad_files_are_not_cached(tmp_path, cache_dir, decodes):
    path = write(tmp_path, 'folder', image_files())
    with pytest.raises(DatasetError, match='half.png'):
        ImageFolderDataset(str(path))
    assert len(decodes) == 8
    decodes.clear()
    with pytest.raises(DatasetError, match='half.png'):
        ImageFolderDataset(str(path))
    assert sorted(decodes) == ['half.png', 'sub/half.jpg']  # Only the bad ones are decoded again.


def test_messages_at_training_time(tmp_path, monkeypatch):
    path = write(tmp_path, 'folder', image_files(truncated=False))
    ds = ImageFolderDataset(str(path))
    # Unchanged on disk but undecodable now (e.g. altered in place or a read error): not "changed".
    real = ds._files.read
    monkeypatch.setattr(ds._files, 'read', lambda name: real(name)[:200])
    with pytest.raises(DatasetError) as info:
        ds[2]
    message = str(info.value)
    assert 'img2.jpg cannot be decoded' in message and 'passed the check' in message
    assert 'changed after' not in message
    monkeypatch.undo()
    (path / 'img1.png').write_bytes(b'garbage')
    with pytest.raises(
        DatasetError, match=r'img1\.png cannot be decoded .*changed after the dataset was opened'
    ):
        ds[1]
    (path / 'img3.png').unlink()
    with pytest.raises(DatasetError, match=r'img3\.png .*no longer exists'):
        ds[3]
