"""The fixes a DatasetError suggests for a bad dataset.json (and bad images) work when followed literally:
every ``python dataset_tool.py ...`` line is run, its output then loads; counts and options are right."""

import io
import json
import re
import shlex
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from stylegan2_ada_kd.data.dataset import DatasetError, ImageFolderDataset

FLAT = ['a0.png', 'a1.png', 'b0.png', 'b1.png']
SUB = ['cat/0.png', 'cat/1.png', 'dog/0.png', 'dog/1.png']


def _labels(names, values):
    return [[n, v] for n, v in zip(names, values)]


# dataset.json text for the image names of a layout (None: no dataset.json at all).
JSONS = {
    'invalid_json': lambda n: '{"labels": [[',
    'top_level_list': lambda n: json.dumps(_labels(n, [0, 1, 0, 1])),
    'bad_class_names': lambda n: json.dumps({'labels': _labels(n, [0, 1, 0, 1]), 'class_names': [1, 2]}),
    'labels_not_list': lambda n: json.dumps({'labels': {'a': 1}}),
    'missing_and_unknown': lambda n: json.dumps({'labels': _labels(n[:3], [0, 1, 0]) + [['ghost.png', 1]]}),
    'unknown_only': lambda n: json.dumps({'labels': _labels(n, [0, 1, 0, 1]) + [['ghost.png', 1]]}),
    'mixed_kinds': lambda n: json.dumps({'labels': _labels(n, [0, 1, [0.5], [1.0]])}),
    'vector_lengths': lambda n: json.dumps({'labels': _labels(n, [[0.5], [1.0], [1, 2], [3]])}),
    'class_out_of_range': lambda n: json.dumps(
        {'labels': _labels(n, [0, 1, 2, 5]), 'class_names': ['x', 'y']}
    ),
    'malformed_entry': lambda n: json.dumps({'labels': [[n[0]], *_labels(n[1:], [0, 1, 'dog'])]}),
    'labels_null': lambda n: json.dumps({'labels': None}),
    'no_json': lambda n: None,
}
LABEL_ONLY = {
    'missing_and_unknown',
    'unknown_only',
    'mixed_kinds',
    'vector_lengths',
    'class_out_of_range',
    'malformed_entry',
    'labels_null',
    'no_json',
    'labels_not_list',
}


def _png(rnd, size):
    return PIL.Image.fromarray(rnd.randint(0, 256, size=[size, size, 3], dtype=np.uint8))


def _files(names, bad_images, rnd):
    """``{name: bytes}``: 16x16 PNGs; with ``bad_images`` one is 24x24 and a truncated JPEG is added."""
    out = {}
    for i, name in enumerate(names):
        buf = io.BytesIO()
        _png(rnd, 24 if bad_images and i == 1 else 16).save(buf, format='png')
        out[name] = buf.getvalue()
    if bad_images:
        buf = io.BytesIO()
        _png(rnd, 16).save(buf, format='jpeg', quality=95)
        out[names[0].rsplit('/', 1)[0] + '/cut.jpg' if '/' in names[0] else 'cut.jpg'] = buf.getvalue()[:-200]
    return out


def make_dataset(tmp_path, layout, case, bad_images):
    """A folder or zip (per ``layout``) of the images plus the ``case`` dataset.json; returns its path."""
    names = SUB if layout.startswith('sub') else FLAT
    files = _files(names, bad_images, np.random.RandomState(0))
    text = JSONS[case](names)
    if text is not None:
        files['dataset.json'] = text.encode()
    if layout.endswith('zip'):
        path = tmp_path / f'{layout}.zip'
        with zipfile.ZipFile(path, 'w') as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return path, len(files) - (text is not None)
    for name, data in files.items():
        (tmp_path / layout / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / layout / name).write_bytes(data)
    return tmp_path / layout, len(files) - (text is not None)


def follow_advice(message, use_labels, source):
    """Run every suggested dataset_tool.py command; each must succeed and its output must load."""
    commands = [
        line.strip() for line in message.splitlines() if line.strip().startswith('python dataset_tool.py')
    ]
    for command in commands:
        args = shlex.split(command)
        assert args[:2] == ['python', 'dataset_tool.py'] and f'--source={source}' in args
        res = CliRunner().invoke(dataset_tool.main, args[2:], catch_exceptions=False)
        assert res.exit_code == 0, f'{command}\n{res.output}'
        dest = next(a.split('=', 1)[1] for a in args if a.startswith('--dest='))
        labelled = use_labels and '--labels=none' not in args
        if use_labels and not labelled:
            assert f'then train with --data={shlex.quote(dest)} --cond=0' in message
        assert f'then train with --data={shlex.quote(dest)}' in message
        ds = ImageFolderDataset(dest, use_labels=labelled)
        assert len(ds) >= 3 and ds.has_labels == labelled
    return commands


@pytest.mark.parametrize('layout', ['flat', 'sub', 'flat_zip'])
@pytest.mark.parametrize('case', sorted(JSONS))
@pytest.mark.parametrize('use_labels', [False, True])
def test_suggested_fixes_work(tmp_path, layout, case, use_labels):
    path, num_images = make_dataset(tmp_path, layout, case, bad_images=False)
    if case in LABEL_ONLY and not use_labels:
        assert ImageFolderDataset(str(path)).label_dim == 0  # Labels are only checked when used.
        return
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(str(path), use_labels=use_labels)
    message = str(info.value)
    head = message.splitlines()[0]
    count = re.search(r'problems with (\d+) of (\d+) images', head)
    if count:
        assert int(count.group(2)) == num_images and 1 <= int(count.group(1)) <= num_images
    else:
        assert f'({num_images} images): problems with' in head
    if case in ('invalid_json', 'top_level_list', 'bad_class_names', 'labels_not_list', 'mixed_kinds'):
        assert not count, head  # Only dataset.json is wrong: no image is counted.
    assert ('--labels=subfolders' in message) == (layout == 'sub' and use_labels), message
    assert use_labels or '--cond=0' not in message, message
    commands = follow_advice(message, use_labels, str(path))
    if 'train without labels (--cond=0' in message:
        assert case in LABEL_ONLY
        assert ImageFolderDataset(str(path), use_labels=False).label_dim == 0
    assert commands or 'train without labels (--cond=0' in message, message


@pytest.mark.parametrize('layout', ['flat', 'sub', 'flat_zip'])
@pytest.mark.parametrize('case', ['invalid_json', 'missing_and_unknown', 'mixed_kinds', 'labels_null'])
@pytest.mark.parametrize('use_labels', [False, True])
def test_one_command_fixes_images_and_labels(tmp_path, layout, case, use_labels):
    path, num_images = make_dataset(tmp_path, layout, case, bad_images=True)
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(str(path), use_labels=use_labels)
    message = str(info.value)
    bad = 3 if use_labels and case == 'missing_and_unknown' else 2  # 24x24 PNG, cut JPEG (+ unlabelled).
    assert f'problems with {bad} of {num_images} images' in message
    assert 'cut.jpg' in message and '--resolution=16 --transform=center-crop' in message
    assert ('--labels=subfolders' in message) == (layout == 'sub' and use_labels)
    assert use_labels or '--cond=0' not in message
    assert len(follow_advice(message, use_labels, str(path))) == 1


def test_suggested_destination_is_new(tmp_path):
    path, _ = make_dataset(tmp_path, 'flat', 'no_json', bad_images=True)
    (tmp_path / 'flat-16x16.zip').write_bytes(b'taken')
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(str(path))
    assert f'--dest={tmp_path}/flat-16x16-2.zip' in str(info.value)
    follow_advice(str(info.value), False, str(path))


def test_photos_with_no_square_image_are_sized_by_their_shorter_side(tmp_path):
    rnd = np.random.RandomState(0)
    for i, (w, h) in enumerate([(48, 40), (40, 48), (48, 40), (300, 20)]):  # most common shorter side: 40
        PIL.Image.fromarray(rnd.randint(0, 256, size=[h, w, 3], dtype=np.uint8)).save(tmp_path / f'{i}.png')
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(str(tmp_path))
    message = str(info.value)
    assert '4 image(s) are not square' in message and '--transform=pad' in message
    assert '--resolution=32 --transform=center-crop' in message  # the largest 2^k crop of 40 px, not 256
    assert len(follow_advice(message, False, str(tmp_path))) == 1
