"""dataset_tool.py's archive sources: an LMDB database of encoded images (LSUN's form) and MNIST's idx files
(padded to 32x32 with their labels). The LMDB tests need the optional ``lmdb`` package."""

import gzip
import io
import json
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from stylegan2_ada_kd.data.dataset import ImageFolderDataset


def run(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args], catch_exceptions=False)


def encoded(array, fmt):
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def write_lmdb(folder, values):
    lmdb = pytest.importorskip('lmdb')
    env = lmdb.open(str(folder), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in values.items():
            txn.put(key, value)
    env.close()


def test_lmdb_folder_of_encoded_images(tmp_path):
    rnd = np.random.RandomState(0)
    images = [rnd.randint(0, 256, size=(24, 40, 3), dtype=np.uint8) for _ in range(3)]
    write_lmdb(
        tmp_path / 'cat_lmdb',
        {
            b'a1': encoded(images[0], 'WEBP'),
            b'b2': b'not an image',  # LSUN has a few of these: skipped like broken files
            b'c3': encoded(images[1], 'PNG'),
            b'd4': encoded(images[2], 'JPEG'),
        },
    )
    res = CliRunner().invoke(
        dataset_tool.main,
        ['--source', str(tmp_path / 'cat_lmdb'), '--dest', str(tmp_path / 'o.zip'), '--resolution=16'],
    )
    assert res.exit_code == 2 and '3 image(s) are not square: lmdb/00000000 (40x24)' in res.output
    res_crop = run(
        '--source',
        tmp_path / 'cat_lmdb',
        '--dest',
        tmp_path / 'crop.zip',
        '--resolution=16',
        '--transform=center-crop',
    )
    assert res_crop.exit_code == 0, res_crop.output
    assert 'lmdb/00000001' in res_crop.output  # the undecodable value, by its position in key order
    ds = ImageFolderDataset(str(tmp_path / 'crop.zip'))
    assert len(ds) == 3 and ds.image_shape == [3, 16, 16]
    with zipfile.ZipFile(tmp_path / 'crop.zip') as zf:
        meta = json.loads(zf.read('dataset.json'))
    assert meta['labels'] is None and meta['meta']['num_images'] == 3


def test_lmdb_without_the_package_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / 'db').mkdir()
    (tmp_path / 'db' / 'data.mdb').write_bytes(b'')
    monkeypatch.setitem(sys.modules, 'lmdb', None)  # import lmdb -> ImportError
    res = CliRunner().invoke(
        dataset_tool.main, ['--source', str(tmp_path / 'db'), '--dest', str(tmp_path / 'o.zip')]
    )
    assert res.exit_code == 1 and 'LMDB database' in res.output and 'pip install lmdb' in res.output
    assert not (tmp_path / 'o.zip').exists()


def write_mnist(folder, count=5, magic=2051):
    folder.mkdir()
    rnd = np.random.RandomState(1)
    pixels = rnd.randint(1, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = (np.arange(count) * 3 % 10).astype(np.uint8)
    with gzip.open(folder / 'train-images-idx3-ubyte.gz', 'wb') as f:
        f.write(np.array([magic, count, 28, 28], dtype='>u4').tobytes() + pixels.tobytes())
    with gzip.open(folder / 'train-labels-idx1-ubyte.gz', 'wb') as f:
        f.write(np.array([2049, count], dtype='>u4').tobytes() + labels.tobytes())
    return pixels, labels


def test_mnist_is_padded_to_32_with_its_labels(tmp_path):
    pixels, labels = write_mnist(tmp_path / 'mnist')
    res = run('--source', tmp_path / 'mnist', '--dest', tmp_path / 'mnist32.zip')
    assert res.exit_code == 0, res.output
    ds = ImageFolderDataset(str(tmp_path / 'mnist32.zip'), use_labels=True)
    assert len(ds) == 5 and ds.image_shape == [1, 32, 32]
    image, label = ds[1]
    assert image[0, :2].max() == 0 and image[0, :, -2:].max() == 0  # two black pixels on each side
    np.testing.assert_array_equal(image[0, 2:30, 2:30], pixels[1])
    assert int(np.argmax(label)) == labels[1] == 3
    with zipfile.ZipFile(tmp_path / 'mnist32.zip') as zf:
        assert json.loads(zf.read('dataset.json'))['class_names'] == [str(d) for d in range(10)]
    res = CliRunner().invoke(
        dataset_tool.main,
        ['--source', str(tmp_path / 'mnist'), '--dest', str(tmp_path / 'x.zip'), '--labels=subfolders'],
    )
    assert res.exit_code == 2 and '--labels does not apply to MNIST' in res.output


def test_broken_mnist_names_the_folder(tmp_path):
    write_mnist(tmp_path / 'mnist', magic=1234)
    res = CliRunner().invoke(
        dataset_tool.main, ['--source', str(tmp_path / 'mnist'), '--dest', str(tmp_path / 'o.zip')]
    )
    assert (
        res.exit_code == 1 and "not MNIST's idx files" in res.output and str(tmp_path / 'mnist') in res.output
    )
