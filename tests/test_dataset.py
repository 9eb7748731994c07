"""ImageFolderDataset (folder/zip, labels, subset, mirror, workers, validation) and InfiniteSampler."""

import json
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import make_image_folder

from stylegan2_ada_kd.data.dataset import DatasetError, ImageFolderDataset
from stylegan2_ada_kd.data.sampler import InfiniteSampler


def random_image(rnd, size, channels=3):
    w, h = (size, size) if isinstance(size, int) else size
    shape = [h, w] if channels == 1 else [h, w, channels]
    return PIL.Image.fromarray(rnd.randint(0, 256, size=shape, dtype=np.uint8))


def make_folder(root, n=8, res=16, channels=3, labels=None, class_names=None, prefix='', ext='png'):
    """``n`` random images ``{prefix}NN.{ext}`` in ``root`` (+ dataset.json when labels are given)."""
    root.mkdir(parents=True, exist_ok=True)
    rnd = np.random.RandomState(n + res)
    names = []
    for i in range(n):
        name = f'{prefix}{i:02d}.{ext}'
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        random_image(rnd, res, channels).save(root / name)
        names.append(name)
    if labels is not None:
        meta = {'labels': [[name, label] for name, label in zip(names, labels)]}
        if class_names is not None:
            meta['class_names'] = class_names
        (root / 'dataset.json').write_text(json.dumps(meta))
    return names


def zip_folder(folder, dest):
    with zipfile.ZipFile(dest, 'w') as zf:
        for path in sorted(folder.rglob('*')):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return dest


@pytest.mark.parametrize('kind', ['folder', 'zip'])
def test_loads_folder_and_zip(tmp_path, kind):
    make_folder(tmp_path / 'imgs', n=6, res=16, prefix='sub/')
    path = tmp_path / 'imgs' if kind == 'folder' else zip_folder(tmp_path / 'imgs', tmp_path / 'imgs.zip')
    ds = ImageFolderDataset(str(path))
    assert len(ds) == 6 and ds.name == 'imgs'
    assert ds.image_shape == [3, 16, 16] and ds.num_channels == 3 and ds.resolution == 16
    assert ds.label_shape == [0] and ds.label_dim == 0 and not ds.has_labels
    assert ds.class_names is None and ds.prompts is None
    img, label = ds[0]
    assert img.dtype == np.uint8 and img.shape == (3, 16, 16)
    assert label.dtype == np.float32 and label.shape == (0,)
    expected = np.asarray(PIL.Image.open(tmp_path / 'imgs' / 'sub' / '00.png')).transpose(2, 0, 1)
    np.testing.assert_array_equal(img, expected)


def test_grayscale_and_jpeg(tmp_path):
    make_folder(tmp_path / 'g', n=3, res=8, channels=1, ext='jpg')
    ds = ImageFolderDataset(str(tmp_path / 'g'))
    assert ds.image_shape == [1, 8, 8] and ds[2][0].shape == (1, 8, 8)


def test_labels_one_hot_class_names_and_prompts(tmp_path):
    make_folder(tmp_path / 'd', n=4, labels=[0, 2, 1, 2], class_names=['a', 'b', 'c', 'd'])
    meta = json.loads((tmp_path / 'd' / 'dataset.json').read_text())
    meta['prompts'] = ['a photo']
    (tmp_path / 'd' / 'dataset.json').write_text(json.dumps(meta))
    ds = ImageFolderDataset(str(tmp_path / 'd'), use_labels=True)
    assert ds.label_dim == 4 and ds.has_labels and ds.class_names == ['a', 'b', 'c', 'd']
    assert ds.prompts == ['a photo']
    np.testing.assert_array_equal(ds[1][1], np.array([0, 0, 1, 0], np.float32))
    assert ds.get_label(2).dtype == np.float32 and ds.get_label(2).argmax() == 1
    # Without class names the width is max index + 1; without use_labels there are none.
    make_folder(tmp_path / 'e', n=3, labels=[0, 2, 1])
    assert ImageFolderDataset(str(tmp_path / 'e'), use_labels=True).label_dim == 3
    assert ImageFolderDataset(str(tmp_path / 'e')).label_dim == 0


def test_vector_labels(tmp_path):
    make_folder(tmp_path / 'v', n=2, labels=[[0.5, -1.0, 2.0], [1, 2, 3]])
    ds = ImageFolderDataset(str(tmp_path / 'v'), use_labels=True)
    assert ds.label_shape == [3]
    np.testing.assert_allclose(ds[0][1], [0.5, -1.0, 2.0])


def test_subset_is_seeded_and_sorted(tmp_path):
    make_folder(tmp_path / 's', n=20, res=8)
    files = lambda seed: ImageFolderDataset(str(tmp_path / 's'), max_size=5, random_seed=seed).files
    assert files(1) == files(1) and len(files(1)) == 5 and files(1) == sorted(files(1))
    assert files(1) != files(2)
    ds = ImageFolderDataset(str(tmp_path / 's'), max_size=5, random_seed=1)
    assert [ds.get_details(i).file for i in range(5)] == files(1)
    assert len(ImageFolderDataset(str(tmp_path / 's'), max_size=100)) == 20


def test_xflip_doubles_with_mirrored_second_half(tmp_path):
    make_folder(tmp_path / 'x', n=3, res=8, labels=[0, 1, 0])
    ds = ImageFolderDataset(str(tmp_path / 'x'), xflip=True, use_labels=True)
    assert len(ds) == 6
    for i in range(3):
        np.testing.assert_array_equal(ds[i + 3][0], ds[i][0][:, :, ::-1])
        np.testing.assert_array_equal(ds[i + 3][1], ds[i][1])
        assert ds.get_details(i + 3).xflip and not ds.get_details(i).xflip
    assert ds[5][0].flags['C_CONTIGUOUS']
    with pytest.raises(IndexError):
        ds[6]


def test_zip_with_dataloader_workers(tmp_path):
    make_folder(tmp_path / 'w', n=8, res=8, labels=list(range(8)))
    ds = ImageFolderDataset(str(zip_folder(tmp_path / 'w', tmp_path / 'w.zip')), use_labels=True)
    ds[0]  # Opens the zip in this process: the copies sent to workers must not share the handle.
    restored = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(restored[3][0], ds[3][0])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    images, labels = zip(*loader)
    images, labels = torch.cat(images), torch.cat(labels)
    assert images.shape == (8, 3, 8, 8) and images.dtype == torch.uint8
    np.testing.assert_array_equal(images[5].numpy(), ds[5][0])
    assert labels.argmax(1).tolist() == list(range(8))


def _error(path, **kwargs):
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(str(path), **kwargs)
    message = str(info.value)
    assert 'dataset_tool.py' in message
    return message


def test_validation_reports_all_bad_files_at_once(tmp_path):
    root = tmp_path / 'bad'
    make_folder(root, n=3, res=16)
    rnd = np.random.RandomState(0)
    (root / 'corrupt.png').write_bytes(b'not an image at all')
    buf = (root / '00.png').read_bytes()
    (root / 'truncated.png').write_bytes(buf[: len(buf) // 2])
    random_image(rnd, 32).save(root / 'bigger.png')
    random_image(rnd, (16, 12)).save(root / 'oblong.png')
    random_image(rnd, 16, channels=4).save(root / 'alpha.png')
    message = _error(root)
    for name in ['corrupt.png', 'truncated.png', 'bigger.png', 'oblong.png', 'alpha.png']:
        assert name in message
    assert 'RGBA' in message and '--transform=center-crop' in message and '00.png' not in message
    assert isinstance(DatasetError('x'), ValueError)


def test_validation_sizes_and_resolution(tmp_path):
    make_folder(tmp_path / 'odd', n=2, res=24)
    message = _error(tmp_path / 'odd')
    assert 'not a power of two' in message and '--resolution=16' in message
    make_folder(tmp_path / 'ok', n=2, res=16)
    assert '01.png' in _error(tmp_path / 'ok', resolution=32)
    assert ImageFolderDataset(str(tmp_path / 'ok'), resolution=16).resolution == 16
    with pytest.raises(DatasetError, match='power of two'):
        ImageFolderDataset(str(tmp_path / 'ok'), resolution=20)


def test_validation_labels(tmp_path):
    root = tmp_path / 'l'
    make_folder(root, n=3, labels=[0, 1, 1])
    meta = json.loads((root / 'dataset.json').read_text())
    meta['labels'] = meta['labels'][:1] + [['ghost.png', 0]]
    (root / 'dataset.json').write_text(json.dumps(meta))
    message = _error(root, use_labels=True)
    assert '01.png' in message and '02.png' in message and 'ghost.png' in message
    assert ImageFolderDataset(str(root)).label_dim == 0  # Labels are only checked when used.
    make_folder(tmp_path / 'none', n=2)
    assert 'labels' in _error(tmp_path / 'none', use_labels=True)


def test_empty_and_missing(tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('hi')
    with pytest.raises(DatasetError, match='no images'):
        ImageFolderDataset(str(tmp_path / 'empty'))
    with pytest.raises(DatasetError, match='does not exist'):
        ImageFolderDataset(str(tmp_path / 'nowhere.zip'))


def test_file_changed_after_validation(tmp_path):
    make_folder(tmp_path / 'c', n=2, res=8)
    ds = ImageFolderDataset(str(tmp_path / 'c'))
    (tmp_path / 'c' / '01.png').write_bytes(b'garbage')
    with pytest.raises(DatasetError, match='01.png'):
        ds[1]
    random_image(np.random.RandomState(0), 16).save(tmp_path / 'c' / '00.png')
    with pytest.raises(DatasetError, match='00.png'):
        ds[0]


class _Sized:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def take(sampler, count):
    it = iter(sampler)
    return [next(it) for _ in range(count)]


@pytest.mark.parametrize('n', [1, 7, 10])
def test_sampler_every_pass_is_a_permutation(n):
    seq = take(InfiniteSampler(_Sized(n), seed=3), 5 * n)
    for p in range(5):
        assert sorted(seq[p * n : (p + 1) * n]) == list(range(n))
    if n == 10:
        assert seq[:n] != seq[n : 2 * n]  # Keeps shuffling as it cycles.
    assert take(InfiniteSampler(_Sized(n), shuffle=False), 2 * n) == list(range(n)) * 2


def test_sampler_deterministic_and_seeded():
    assert take(InfiniteSampler(_Sized(50), seed=1), 120) == take(InfiniteSampler(_Sized(50), seed=1), 120)
    assert take(InfiniteSampler(_Sized(50), seed=1), 50) != take(InfiniteSampler(_Sized(50), seed=2), 50)


@pytest.mark.parametrize('n', [10, 11])
def test_sampler_shards_are_disjoint(n):
    full = take(InfiniteSampler(_Sized(n), seed=5), 4 * n)
    ranks = [take(InfiniteSampler(_Sized(n), rank=r, num_replicas=2, seed=5), 2 * n) for r in range(2)]
    assert ranks[0] == full[0::2] and ranks[1] == full[1::2]
    if n == 10:
        assert not set(ranks[0][:5]) & set(ranks[1][:5])
        assert sorted(ranks[0][:5] + ranks[1][:5]) == list(range(10))


def test_sampler_resume_continues_the_sequence():
    for rank in range(2):
        kw = dict(rank=rank, num_replicas=2, seed=7, window_size=0.3)
        full = take(InfiniteSampler(_Sized(13), **kw), 100)
        assert take(InfiniteSampler(_Sized(13), start_position=37, **kw), 63) == full[37:]
        sampler = InfiniteSampler(_Sized(13), **kw)
        take(sampler, 41)
        state = sampler.state_dict()
        assert state['position'] == 41
        resumed = InfiniteSampler(_Sized(13), **kw)
        resumed.load_state_dict(state)
        assert take(resumed, 59) == full[41:]
    with pytest.raises(ValueError, match='seed'):
        InfiniteSampler(_Sized(13), seed=8).load_state_dict(state)


def test_sampler_drives_a_dataloader(tmp_path):
    make_folder(tmp_path / 'dl', n=5, res=8)
    ds = ImageFolderDataset(str(tmp_path / 'dl'))
    loader = torch.utils.data.DataLoader(ds, sampler=InfiniteSampler(ds), batch_size=4)
    it = iter(loader)
    assert [next(it)[0].shape for _ in range(3)] == [(4, 3, 8, 8)] * 3


def test_open_dataset_opens_once_per_process(tmp_path, monkeypatch):
    """The training loop and the KD anchors open the record's training set through open_dataset: one check."""
    from stylegan2_ada_kd.data import dataset as dataset_mod

    folder = make_image_folder(tmp_path / 'data', n=6)
    calls = []
    init = dataset_mod.ImageFolderDataset.__init__
    monkeypatch.setattr(
        dataset_mod.ImageFolderDataset, '__init__', lambda self, **kw: calls.append(1) or init(self, **kw)
    )
    kwargs = dict(class_name='stylegan2_ada_kd.data.dataset.ImageFolderDataset', path=folder, xflip=True)
    first = dataset_mod.open_dataset(kwargs)
    assert dataset_mod.open_dataset(dict(reversed(list(kwargs.items())))) is first and len(calls) == 1
    assert len(first) == 12 and dataset_mod.open_dataset(dict(kwargs, xflip=False)) is not first
