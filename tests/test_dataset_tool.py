"""dataset_tool.py: messy folders, labels (sub-folders, CSV), prompts, fake CIFAR-10 batches, dest errors."""

import json
import pickle
import tarfile
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from stylegan2_ada_kd.data.dataset import ImageFolderDataset


def run(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args], catch_exceptions=False)


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path)


def messy_folder(root):
    """Mixed sizes, RGBA, grayscale, 16-bit, non-square, a palette image and an unreadable file."""
    rnd = np.random.RandomState(0)
    u8 = lambda *shape: rnd.randint(0, 256, size=shape, dtype=np.uint8)  # noqa: E731
    save(root / 'wide.png', u8(30, 50, 3))
    save(root / 'alpha.png', np.zeros([20, 20, 4], np.uint8))  # Fully transparent -> black.
    save(root / 'gray.jpg', u8(40, 24))
    save(root / 'deep' / 'g16.png', np.full([64, 64], 65535, np.uint16))
    save(root / 'deep' / 'la.png', u8(16, 16, 2))
    PIL.Image.fromarray(u8(16, 16, 3)).convert('P').save(root / 'pal.gif')
    (root / 'broken.png').write_bytes(b'\x89PNG garbage')
    (root / 'readme.txt').write_text('not an image')


def test_messy_folder_center_crop_to_zip(tmp_path):
    messy_folder(tmp_path / 'src')
    res = run(
        '--source',
        tmp_path / 'src',
        '--dest',
        tmp_path / 'out.zip',
        '--resolution=32',
        '--transform=center-crop',
    )
    assert res.exit_code == 0, res.output
    assert 'broken.png' in res.output and '5 image(s)' in res.output and 'upscaled' in res.output
    with zipfile.ZipFile(tmp_path / 'out.zip') as zf:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
        names = sorted(zf.namelist())
        meta = json.loads(zf.read('dataset.json'))
    assert names[:2] == ['00000/img00000000.png', '00000/img00000001.png'] and len(names) == 7
    assert meta['labels'] is None and 'class_names' not in meta
    assert meta['meta']['resolution'] == 32 and meta['meta']['transform'] == 'center-crop'
    assert meta['meta']['resize_filter'] == 'lanczos' and meta['meta']['num_images'] == 6
    assert any('broken.png' in s for s in meta['meta']['skipped'])
    ds = ImageFolderDataset(str(tmp_path / 'out.zip'))
    assert len(ds) == 6 and ds.image_shape == [3, 32, 32]  # Grayscale mixed with colour -> all RGB.
    by_source = ['alpha.png', 'deep/g16.png', 'deep/la.png', 'gray.jpg', 'pal.gif', 'wide.png']  # Sorted.
    images = {src: ds[i][0] for i, src in enumerate(by_source)}
    assert images['alpha.png'].max() == 0  # Transparent pixels composited on black.
    assert images['deep/g16.png'].min() == 255  # 16-bit full scale -> 8-bit 255.


def test_grayscale_stays_grayscale_and_dir_dest(tmp_path):
    rnd = np.random.RandomState(1)
    for i in range(3):
        save(tmp_path / 'g' / f'{i}.png', rnd.randint(0, 256, size=[8, 8], dtype=np.uint8))
    (tmp_path / 'out').mkdir()  # An empty folder is fine.
    res = run('--source', tmp_path / 'g', '--dest', tmp_path / 'out', '--resize-filter=box', '--max-images=2')
    assert res.exit_code == 0, res.output
    ds = ImageFolderDataset(str(tmp_path / 'out'))
    assert len(ds) == 2 and ds.image_shape == [1, 8, 8]
    np.testing.assert_array_equal(ds[1][0][0], np.asarray(PIL.Image.open(tmp_path / 'g' / '1.png')))


def test_center_crop_wide(tmp_path):
    save(tmp_path / 'w' / 'a.png', np.full([20, 60, 3], 200, np.uint8))
    res = run(
        '--source',
        tmp_path / 'w',
        '--dest',
        tmp_path / 'w.zip',
        '--resolution=8',
        '--transform=center-crop-wide',
    )
    assert res.exit_code == 0, res.output
    img = ImageFolderDataset(str(tmp_path / 'w.zip'))[0][0]
    assert img.shape == (3, 8, 8)
    assert (img[:, :2] == 0).all() and (img[:, 6:] == 0).all() and (img[:, 2:6] == 200).all()


def test_subfolder_labels(tmp_path):
    rnd = np.random.RandomState(2)
    for cls, count in [('dog', 2), ('cat', 3)]:
        for i in range(count):
            save(tmp_path / 'c' / cls / f'{i}.png', rnd.randint(0, 256, size=[8, 8, 3], dtype=np.uint8))
    (tmp_path / 'prompts.txt').write_text('a cat\n\na dog\n')
    res = run(
        '--source',
        tmp_path / 'c',
        '--dest',
        tmp_path / 'c.zip',
        '--labels=subfolders',
        '--prompts',
        tmp_path / 'prompts.txt',
    )
    assert res.exit_code == 0, res.output
    ds = ImageFolderDataset(str(tmp_path / 'c.zip'), use_labels=True)
    assert ds.class_names == ['cat', 'dog'] and ds.prompts == ['a cat', 'a dog'] and ds.label_dim == 2
    assert [int(ds.get_label(i).argmax()) for i in range(5)] == [0, 0, 0, 1, 1]


def test_csv_labels(tmp_path):
    rnd = np.random.RandomState(3)
    for name in ['a.png', 'sub/b.png', 'c.png']:
        save(tmp_path / 's' / name, rnd.randint(0, 256, size=[8, 8, 3], dtype=np.uint8))
    (tmp_path / 'names.csv').write_text('path,label\na.png,zebra\nsub/b.png,ant\nc.png,zebra\n')
    res = run('--source', tmp_path / 's', '--dest', tmp_path / 'n.zip', '--labels', tmp_path / 'names.csv')
    assert res.exit_code == 0, res.output
    ds = ImageFolderDataset(str(tmp_path / 'n.zip'), use_labels=True)
    assert ds.class_names == ['ant', 'zebra']
    assert [int(ds.get_label(i).argmax()) for i in range(3)] == [1, 1, 0]  # Sorted: a, c, sub/b.
    (tmp_path / 'idx.csv').write_text('a.png,4\nsub/b.png,0\nc.png,1\n')
    res = run('--source', tmp_path / 's', '--dest', tmp_path / 'i.zip', '--labels', tmp_path / 'idx.csv')
    assert res.exit_code == 0, res.output
    ds = ImageFolderDataset(str(tmp_path / 'i.zip'), use_labels=True)
    assert ds.class_names is None and ds.label_dim == 5
    (tmp_path / 'partial.csv').write_text('a.png,1\nmissing.png,0\n')
    res = run('--source', tmp_path / 's', '--dest', tmp_path / 'p.zip', '--labels', tmp_path / 'partial.csv')
    assert res.exit_code != 0 and 'missing.png' in res.output


def write_fake_cifar(folder, per_batch=3):
    rnd = np.random.RandomState(4)
    folder.mkdir(parents=True)
    for b in range(1, 6):
        batch = {
            b'batch_label': f'training batch {b} of 5'.encode(),
            b'labels': [int(v) for v in rnd.randint(0, 10, size=per_batch)],
            b'data': rnd.randint(0, 256, size=[per_batch, 3072], dtype=np.uint8),
            b'filenames': [f'img{i}.png'.encode() for i in range(per_batch)],
        }
        (folder / f'data_batch_{b}').write_bytes(pickle.dumps(batch))
    names = [
        n.encode()
        for n in ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    ]
    meta = {b'label_names': names, b'num_cases_per_batch': per_batch, b'num_vis': 3072}
    (folder / 'batches.meta').write_bytes(pickle.dumps(meta))


@pytest.mark.parametrize('packed', [False, True])
def test_fake_cifar10(tmp_path, packed):
    write_fake_cifar(tmp_path / 'cifar-10-batches-py')
    source = tmp_path
    if packed:
        source = tmp_path / 'cifar-10-python.tar.gz'
        with tarfile.open(source, 'w:gz') as tar:
            tar.add(tmp_path / 'cifar-10-batches-py', arcname='cifar-10-batches-py')
    res = run('--source', source, '--dest', tmp_path / 'cifar.zip')
    assert res.exit_code == 0, res.output
    ds = ImageFolderDataset(str(tmp_path / 'cifar.zip'), use_labels=True)
    assert len(ds) == 15 and ds.image_shape == [3, 32, 32] and ds.label_dim == 10
    assert ds.class_names[0] == 'airplane' and ds.class_names[9] == 'truck'
    first = pickle.loads((tmp_path / 'cifar-10-batches-py' / 'data_batch_1').read_bytes())
    np.testing.assert_array_equal(ds[1][0], first[b'data'][1].reshape(3, 32, 32))
    assert int(ds.get_label(1).argmax()) == first[b'labels'][1]


def test_cifar_pickle_with_foreign_objects_is_refused(tmp_path):
    write_fake_cifar(tmp_path / 'c')
    (tmp_path / 'c' / 'data_batch_3').write_bytes(pickle.dumps({b'data': tarfile.TarInfo('x')}))
    res = run('--source', tmp_path / 'c', '--dest', tmp_path / 'c.zip')
    assert res.exit_code != 0 and 'CIFAR-10' in res.output and not (tmp_path / 'c.zip').exists()


def test_errors_name_the_problem(tmp_path):
    rnd = np.random.RandomState(5)
    save(tmp_path / 'src' / 'a.png', rnd.randint(0, 256, size=[8, 8, 3], dtype=np.uint8))
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'x.txt').write_text('x')
    res = run('--source', tmp_path / 'src', '--dest', tmp_path / 'full')
    assert res.exit_code != 0 and 'not an empty folder' in res.output
    (tmp_path / 'there.zip').write_bytes(b'')
    res = run('--source', tmp_path / 'src', '--dest', tmp_path / 'there.zip')
    assert res.exit_code != 0 and 'already exists' in res.output
    res = run('--source', tmp_path / 'nope', '--dest', tmp_path / 'o.zip')
    assert res.exit_code != 0 and 'does not exist' in res.output
    res = run('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip', '--resolution=24')
    assert res.exit_code != 0 and 'power of two' in res.output
    save(tmp_path / 'src' / 'long.png', rnd.randint(0, 256, size=[8, 16, 3], dtype=np.uint8))
    res = run('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip')
    assert res.exit_code != 0 and 'long.png' in res.output and '--transform' in res.output
    (tmp_path / 'empty').mkdir()
    res = run('--source', tmp_path / 'empty', '--dest', tmp_path / 'o.zip')
    assert res.exit_code != 0 and 'no readable images' in res.output
    assert not (tmp_path / 'o.zip').exists()


def test_stale_temp_zips_of_killed_runs_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    from dnnlib.util import _host_tag

    save(tmp_path / 'src' / 'a.png', np.zeros([8, 8, 3], np.uint8))
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()  # Its pid no longer runs.
    common = tmp_path / f'.out.zip.{_host_tag()}-{dead.pid}.k2j4a9zq.tmp'  # atomic_write's name
    stale = [tmp_path / f'out.zip.tmp{dead.pid}', tmp_path / 'out.zip.tmp99999999', common]
    kept = [
        tmp_path / f'out.zip.tmp{os.getppid()}',  # A running process: maybe a conversion in progress.
        tmp_path / 'other.zip.tmp99999999',  # Another destination.
        tmp_path / 'out.zip.tmpx1',  # Not <dest>.tmp<digits>.
        tmp_path / 'out.zip.tmp99999999.bak',
    ]
    for path in stale + kept:
        path.write_bytes(b'half a zip')
    res = run('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip')
    assert res.exit_code == 0, res.output
    assert 'Removed 3 stale temporary file(s)' in res.output and f'out.zip.tmp{dead.pid}' in res.output
    assert common.name in res.output
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert len(ImageFolderDataset(str(tmp_path / 'out.zip'))) == 1
    res = run('--source', tmp_path / 'src', '--dest', tmp_path / 'out2.zip')
    assert 'Removed' not in res.output  # Nothing to say when nothing was removed.


def test_failed_zip_conversion_leaves_no_file(tmp_path):
    save(tmp_path / 'src' / 'a.png', np.random.RandomState(0).randint(0, 256, [32, 32, 3], dtype=np.uint8))
    data = (tmp_path / 'src' / 'a.png').read_bytes()
    (tmp_path / 'src' / 'a.png').write_bytes(data[: len(data) // 2])  # Header readable, pixels truncated.
    res = run('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip')
    assert res.exit_code != 0 and 'could be decoded' in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ['src']


def test_source_dataset_json_is_checked_like_training(tmp_path):
    rnd = np.random.RandomState(6)
    for name in ['a.png', 'b.png']:
        save(tmp_path / 's' / name, rnd.randint(0, 256, size=[8, 8, 3], dtype=np.uint8))
    (tmp_path / 's' / 'dataset.json').write_text('{"labels": [["a.png", 0], ["b.png", [0.5]]]}')
    res = run('--source', tmp_path / 's', '--dest', tmp_path / 'm.zip')
    assert res.exit_code != 0 and 'mix class indices' in res.output and '--labels=none' in res.output
    (tmp_path / 's' / 'dataset.json').write_text('{"labels": [["a.png", 0], ["b.png", 1], ["gone.png", 1]]}')
    res = run('--source', tmp_path / 's', '--dest', tmp_path / 'g.zip')
    assert res.exit_code == 0 and 'dropping 1 label(s)' in res.output and 'gone.png' in res.output
    assert ImageFolderDataset(str(tmp_path / 'g.zip'), use_labels=True).label_dim == 2
    (tmp_path / 's' / 'dataset.json').write_text('{"labels": [[')
    res = run('--source', tmp_path / 's', '--dest', tmp_path / 'j.zip')
    assert res.exit_code != 0 and 'not usable' in res.output and not (tmp_path / 'j.zip').exists()
    res = run('--source', tmp_path / 's', '--dest', tmp_path / 'j.zip', '--labels=none')
    assert res.exit_code == 0 and 'ignoring the unusable dataset.json' in res.output
    ds = ImageFolderDataset(str(tmp_path / 'j.zip'))
    assert len(ds) == 2 and not ds.has_labels


def square_images(root, count=2, size=16):
    rnd = np.random.RandomState(7)
    for i in range(count):
        save(root / f'{i}.png', rnd.randint(0, 256, size=[size, size, 3], dtype=np.uint8))


@pytest.mark.parametrize(
    'size_args',
    [['--resolution=8x8'], ['--width=8', '--height=8'], ['--resolution=8', '--width=8', '--height=8']],
)
def test_size_forms_wxh_and_width_height(tmp_path, size_args):
    square_images(tmp_path / 'src')
    res = run('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip', *size_args)
    assert res.exit_code == 0, res.output
    assert ImageFolderDataset(str(tmp_path / 'o.zip')).image_shape == [3, 8, 8] and '(8x8)' in res.output


def test_width_height_center_crop_wide_as_the_reference_tool(tmp_path):
    save(tmp_path / 'w' / 'a.png', np.full([20, 60, 3], 200, np.uint8))
    for n, size_args in enumerate([['--width=8', '--height=4'], ['--resolution=8x4'], ['--resolution=8x8']]):
        dest = tmp_path / f'w{n}.zip'
        res = run('--source', tmp_path / 'w', '--dest', dest, '--transform=center-crop-wide', *size_args)
        assert res.exit_code == 0, res.output
        img = ImageFolderDataset(str(dest))[0][0]
        assert img.shape == (3, 8, 8)  # As --resolution=8: the 8x4 strip on a black 8x8 canvas.
        assert (img[:, :2] == 0).all() and (img[:, 6:] == 0).all() and (img[:, 2:6] == 200).all()


@pytest.mark.parametrize(
    'size_args, words',
    [
        (['--resolution=64x32'], ['--resolution', 'not square', '--transform=center-crop-wide']),
        (['--width=64', '--height=32'], ['--width/--height', 'not square', '--transform=center-crop-wide']),
        (['--resolution=32x64'], ['--resolution', 'not square', '--resolution=32']),
        (['--resolution=24x24'], ['--resolution', 'power of two', '--resolution=16', '--resolution=32']),
        (['--width=48', '--height=48'], ['--width/--height', 'power of two', '--width=32 --height=32']),
        (['--resolution=64by64'], ['--resolution', 'N or WxH']),
        (['--width=64'], ['--width', '--height', 'both']),
        (['--height=64'], ['--height', '--width', 'both']),
        (['--resolution=32', '--width=64', '--height=64'], ['--resolution=32', '--width=64', 'disagree']),
    ],
)
def test_bad_sizes_name_the_option(tmp_path, size_args, words):
    square_images(tmp_path / 'src')
    res = run('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip', *size_args)
    assert res.exit_code == 2, res.output  # A usage error, before anything is read or written.
    assert all(w in res.output for w in words), res.output
    assert not (tmp_path / 'o.zip').exists()


def test_center_crop_wide_needs_half_height(tmp_path):
    square_images(tmp_path / 'src')
    res = run(
        '--source',
        tmp_path / 'src',
        '--dest',
        tmp_path / 'o.zip',
        '--transform=center-crop-wide',
        '--resolution=64x16',
    )
    assert res.exit_code == 2 and '--resolution' in res.output and '32' in res.output, res.output


def class_folders(root, classes=('ant', 'bee', 'cat'), per_class=3):
    for c, cls in enumerate(classes):  # Pixel value 10 * class + index tells which file an output came from.
        for i in range(per_class):
            save(root / cls / f'{i}.png', np.full([8, 8, 3], 10 * c + i, np.uint8))


def test_max_images_samples_across_class_folders(tmp_path):
    class_folders(tmp_path / 'c')
    (tmp_path / 'c' / 'bee' / '0.png').write_bytes(b'\x89PNG garbage')  # Its turn goes to bee/1.png.
    res = run(
        '--source', tmp_path / 'c', '--dest', tmp_path / 'c.zip', '--labels=subfolders', '--max-images=4'
    )
    assert res.exit_code == 0, res.output
    assert 'Wrote 4 labelled' in res.output and '3 of 3 classes' in res.output
    ds = ImageFolderDataset(str(tmp_path / 'c.zip'), use_labels=True)
    assert ds.class_names == ['ant', 'bee', 'cat'] and len(ds) == 4
    # Round-robin in sorted class order (ant/0, bee/1, cat/0, then ant/1), written in source order.
    assert [int(ds.get_label(i).argmax()) for i in range(4)] == [0, 0, 1, 2]
    assert [int(ds[i][0][0, 0, 0]) for i in range(4)] == [0, 1, 11, 20]
    res = run(
        '--source', tmp_path / 'c', '--dest', tmp_path / 'd.zip', '--labels=subfolders', '--max-images=2'
    )
    assert res.exit_code == 0 and '2 of 3 classes' in res.output, res.output


def test_max_images_without_classes_takes_the_first_readable(tmp_path):
    class_folders(tmp_path / 'c')
    res = run('--source', tmp_path / 'c', '--dest', tmp_path / 'c.zip', '--max-images=4')
    assert res.exit_code == 0 and 'classes' not in res.output, res.output
    ds = ImageFolderDataset(str(tmp_path / 'c.zip'))
    assert [int(ds[i][0][0, 0, 0]) for i in range(4)] == [0, 1, 2, 10]  # ant/0-2, bee/0.


def test_pad_keeps_the_whole_image_on_a_black_square(tmp_path):
    save(tmp_path / 'p' / 'tall.png', np.full([64, 32, 3], 200, np.uint8))  # 32 wide, 64 high
    save(tmp_path / 'p' / 'small.png', np.full([2, 4, 3], 100, np.uint8))  # smaller than 8: upscaled
    res = run('--source', tmp_path / 'p', '--dest', tmp_path / 'p.zip', '--resolution=8', '--transform=pad')
    assert res.exit_code == 0, res.output
    assert '1 image(s) were smaller than 8 px' in res.output
    ds = ImageFolderDataset(str(tmp_path / 'p.zip'))
    small, tall = (ds[i][0] for i in range(2))
    assert tall.shape == (3, 8, 8) and (tall[:, :, :2] == 0).all() and (tall[:, :, 6:] == 0).all()
    assert (tall[:, :, 2:6] == 200).all()  # 32x64 -> 4x8 centred: columns 2-5
    assert (small[:, :2] == 0).all() and (small[:, 6:] == 0).all() and (small[:, 2:6] == 100).all()
    (tmp_path / 'p' / 'small.png').unlink()
    res = run('--source', tmp_path / 'p', '--dest', tmp_path / 'q.zip', '--transform=pad')  # no resize: 64x64
    assert res.exit_code == 0 and ImageFolderDataset(str(tmp_path / 'q.zip'))[0][0].shape == (3, 64, 64)
