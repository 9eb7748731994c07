"""nearest.py and metrics.neighbours: nearest training images of generated ones, against real distances."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_D, TINY_G, make_image_folder

import nearest
from metrics import neighbours
from stylegan2_ada_kd import checkpoint
from stylegan2_ada_kd.networks import Discriminator, Generator


class PlainInception(torch.nn.Module):
    """Stand-in detector with the plain convention: [N, 3, 299, 299] -> [N, 48]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def _images(n, seed):
    return torch.from_numpy(np.random.RandomState(seed).randint(0, 256, [n, 3, 8, 8]).astype(np.uint8))


def test_copies_are_found_at_distance_zero_and_mirrored_pairs_can_be_excluded():
    reals = _images(6, 0)
    train = neighbours.embed(reals, 'pixel', None)
    copies = neighbours.embed(reals[[4, 1]], 'pixel', None)
    found = neighbours.nearest(copies, train, 'pixel', 2)
    assert found.index[:, 0].tolist() == [4, 1] and np.all(found.distance[:, 0] == 0)
    assert np.all(found.distance[:, 1] > 0) and np.all(np.diff(found.distance, axis=1) >= 0)
    # The RMS pixel difference in [0, 1]: one image against its inverse.
    inverse = neighbours.embed(255 - reals[:1], 'pixel', None)
    rms = ((reals[0].double() - (255 - reals[0]).double()) / 255).square().mean().sqrt()
    assert neighbours.distances(inverse, train[:1], 'pixel').item() == pytest.approx(rms.item())
    with pytest.raises(ValueError, match='7 neighbours asked, but only 6'):
        neighbours.nearest(copies, train, 'pixel', 7)


def test_the_real_scale_is_the_held_out_distance_or_leave_one_out():
    train = torch.tensor([[0.0], [1.0], [3.0]])
    kind, scale = neighbours.real_scale(train, train, 'pixel')
    assert kind == 'train-loo' and scale.tolist() == [1.0, 1.0, 2.0]  # never an image against itself
    mirrored = torch.cat([train, train + 0.25])  # nor against its own mirrored copy
    assert neighbours.real_scale(train, mirrored, 'pixel')[1].tolist() == [1.0, 0.75, 1.75]
    held = torch.tensor([[0.5], [4.0]])
    kind, scale = neighbours.real_scale(train, train, 'pixel', held)
    assert kind == 'held-out' and scale.tolist() == [0.5, 1.0]
    assert neighbours.real_scale(train, mirrored, 'pixel', held)[1].tolist() == [0.25, 0.75]
    stats = neighbours.summary(np.array([0.0, 0.0, 2.0, 2.0]), np.array([1.0, 1.0, 2.0, 2.0]))
    assert stats['ratio'] == pytest.approx(1 / 1.5) and stats['below_real_p05'] == 0.5
    assert stats['below_real_min'] == 0.5
    assert neighbours.distances(torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, 0.0]]), 'lpips').item() == 4.0


@pytest.fixture(scope='module')
def snapshot(tmp_path_factory):
    """A tiny snapshot trained on 24 images with 4 held out and mirroring, and a stand-in detector."""
    root = tmp_path_factory.mktemp('nearest')
    data = make_image_folder(root / 'data', n=24)
    kw = dict(
        class_name='stylegan2_ada_kd.data.dataset.ImageFolderDataset',
        path=data,
        use_labels=False,
        xflip=True,
        resolution=16,
        holdout=4,
        random_seed=0,
    )
    torch.manual_seed(0)
    G = Generator(**TINY_G)
    snap = root / 'network-snapshot-000004.pkl'
    checkpoint.save_network_snapshot(snap, G=G, D=Discriminator(**TINY_D), G_ema=G, training_set_kwargs=kw)
    detector = root / 'plain.pt'
    torch.jit.script(PlainInception()).save(str(detector))
    return dict(snap=snap, detector=detector, data=data)


@pytest.mark.parametrize('space', ['pixel', 'inception'])
def test_cli_writes_the_grid_and_the_numbers(snapshot, tmp_path, space):
    args = [
        f'--network={snapshot["snap"]}',
        '--seeds=0-4',
        '--k=3',
        f'--space={space}',
        f'--outdir={tmp_path}',
    ]
    res = CliRunner().invoke(nearest.cli, [*args, f'--detector={snapshot["detector"]}', '--device=cpu'])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert '5 samples' in res.output and '20 training images (+ mirrored)' in res.output
    report = json.loads((tmp_path / 'nearest.json').read_text())
    assert report['num_reals'] == 20 and report['mirrored'] is True  # the 4 held-out images are not training
    assert report['real_scale'] == 'held-out' and report['num_real_scale'] == 4
    assert [s['seed'] for s in report['samples']] == [0, 1, 2, 3, 4]
    for sample in report['samples']:
        dist = [n['distance'] for n in sample['neighbours']]
        assert len(dist) == 3 and dist == sorted(dist)
    assert set(report['summary']) >= {'generated_median', 'real_median', 'ratio', 'below_real_p05'}
    with PIL.Image.open(tmp_path / 'nearest.png') as img:
        assert img.size == (4 * 16 + nearest._GAP, 5 * 16)


def test_cli_unmirrored_other_data_and_errors(snapshot, tmp_path):
    other = make_image_folder(tmp_path / 'other', n=5, seed=3)
    args = [f'--network={snapshot["snap"]}', '--seeds=0', '--space=pixel', f'--outdir={tmp_path / "o"}']
    res = CliRunner().invoke(nearest.cli, [*args, f'--data={other}', '--mirror=0', '--k=9'])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / 'o' / 'nearest.json').read_text())
    assert report['num_reals'] == 5 and report['real_scale'] == 'train-loo'
    assert len(report['samples'][0]['neighbours']) == 5  # k is capped at the training images there are
    res = CliRunner().invoke(nearest.cli, [*args, f'--data={tmp_path / "missing"}'])
    assert res.exit_code == 1 and 'missing (--data to change)' in res.output
    res = CliRunner().invoke(nearest.cli, [*args, f'--network={tmp_path / "nope.pkl"}'])
    assert res.exit_code == 1 and 'nope.pkl' in res.output
