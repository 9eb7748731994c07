"""--holdout: held-out reals kept out of training, and the per-tick D-overfitting stats."""

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_D, TINY_G, make_image_folder

import train
from stylegan2_ada_kd.data.dataset import DatasetError, ImageFolderDataset, split_indices
from stylegan2_ada_kd.networks import Discriminator, Generator
from stylegan2_ada_kd.training import overfit
from stylegan2_ada_kd.training.overfit import OverfitMonitor, normalised_gap, roc_auc

TINY = ['--cbase=256', '--cmax=16', '--workers=0', '--metrics=none', '--batch=4', '--grid=4x2']


@pytest.fixture(scope='module')
def data16(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('data16'), seed=0)


def test_splits_are_disjoint_seeded_and_keep_old_subsets():
    train_idx = split_indices(50, None, 10, 'train', seed=3)
    held = split_indices(50, None, 10, 'holdout', seed=3)
    assert len(held) == 10 and len(train_idx) == 40
    assert not set(train_idx) & set(held) and set(train_idx) | set(held) == set(range(50))
    assert list(held) != list(split_indices(50, None, 10, 'holdout', seed=4))
    sub = split_indices(50, 20, 10, 'train', seed=3)
    assert len(sub) == 20 and set(sub) <= set(train_idx)
    old = np.sort(np.random.RandomState(3).choice(50, size=20, replace=False))  # --subset before --holdout
    assert list(split_indices(50, 20, 0, 'train', seed=3)) == list(old)
    with pytest.raises(DatasetError):
        split_indices(50, None, 50, 'train', seed=0)
    with pytest.raises(DatasetError):
        split_indices(50, None, 0, 'holdout', seed=0)


def test_the_held_out_split_is_checked_with_the_dataset_and_shares_its_files(tmp_path):
    data = Path(make_image_folder(tmp_path / 'data', n=10, seed=0))
    training = ImageFolderDataset(path=data, holdout=3, random_seed=2, xflip=True)
    held = training.holdout_split()
    names = sorted(p.name for p in data.iterdir() if p.suffix == '.png')
    want = [names[i] for i in split_indices(10, None, 3, 'holdout', 2)]
    assert held.files == training.holdout_files == want
    assert len(held) == 3 and held._files is training._files  # no mirroring, no second opening
    assert np.array_equal(held[0][0], np.asarray(PIL.Image.open(data / held.files[0])).transpose(2, 0, 1))
    with pytest.raises(DatasetError, match='holds no images out'):
        ImageFolderDataset(path=data).holdout_split()
    (data / held.files[1]).write_bytes(b'not an image')  # a broken held-out image fails at open, not later
    with pytest.raises(DatasetError, match=held.files[1]):
        ImageFolderDataset(path=data, holdout=3, random_seed=2)


def test_dry_run_records_the_held_out_files(data16, tmp_path):
    res = CliRunner().invoke(
        train.main,
        [f'--outdir={tmp_path}', f'--data={data16}', *TINY, '--holdout=4', '--mirror=1', '--dry-run'],
    )
    assert res.exit_code == 0, res.output
    c = json.loads(res.output[res.output.index('{\n') : res.output.index('\n\nRun directory')])
    assert c['training_set_kwargs']['holdout'] == 4 and '-holdout4-mirror-' in c['run_dir']
    held = c['overfit_kwargs']['holdout_files']
    assert len(held) == 4 and set(c['overfit_kwargs']) == {'class_name', 'holdout_files'}
    kwargs = {k: v for k, v in c['training_set_kwargs'].items() if k not in ('class_name', 'resolution')}
    training = ImageFolderDataset(**kwargs)
    assert len(training.files) == 12 and not set(training.files) & set(held)
    assert len(training) == 24  # mirrored training images only


@pytest.mark.parametrize(
    'extra, needle',
    [
        (['--holdout=1'], 'at least 2'),
        (['--holdout=16'], 'must leave training images'),
        (['--holdout=8', '--subset=10'], '--subset=10 is larger than the dataset (8 images besides the 8 of'),
    ],
)
def test_bad_holdout_fails_before_anything_is_created(data16, tmp_path, extra, needle):
    out = tmp_path / 'runs'
    res = CliRunner().invoke(train.main, [f'--outdir={out}', f'--data={data16}', *TINY, *extra, '--dry-run'])
    assert res.exit_code == 2 and needle in res.output, res.output
    assert not out.exists()


def test_monitor_reports_d_on_train_holdout_and_fakes(data16):
    training = ImageFolderDataset(path=data16, holdout=6, random_seed=1)
    held = training.holdout_split()
    G, D = Generator(**TINY_G).train(), Discriminator(**TINY_D)
    monitor = OverfitMonitor(held.files, training, G.z_dim, torch.device('cpu'), batch=4)
    w_avg = G.mapping.w_avg.clone()
    stats = monitor.stats(G, D)
    assert torch.equal(G.mapping.w_avg, w_avg) and G.training  # measuring leaves G's state alone
    assert stats['Overfit/D_train']['num'] == 6 and stats['Overfit/D_holdout']['num'] == 6
    assert stats['Overfit/D_fake']['num'] == 6
    means = {k: stats[f'Overfit/D_{k}']['mean'] for k in ('train', 'holdout', 'fake')}
    gap = (means['train'] - means['holdout']) / (means['train'] - means['fake'])
    assert stats['Overfit/gap']['mean'] == pytest.approx(gap)
    # The held-out images are the ones scored: D's logits on them, computed directly, give the same mean.
    img = torch.from_numpy(np.stack([held[i][0] for i in range(6)])).float() / 127.5 - 1
    with torch.no_grad():
        direct = torch.cat([D(img[:4], torch.zeros(4, 0)), D(img[[4, 5, 4, 5]], torch.zeros(4, 0))[:2]])
    assert stats['Overfit/D_holdout']['mean'] == pytest.approx(float(direct.mean()), rel=1e-5)
    assert monitor.stats(G, D) == stats  # fixed samples and latents: deterministic
    with pytest.raises(ValueError, match='held-out images'):
        OverfitMonitor(held.files[:5], training, G.z_dim, torch.device('cpu'), batch=4)


def test_auc_counts_pairs_and_half_ties():
    # Pairs (positive, negative) with the positive higher: 3 > 2, 0, 1; 1 > 0; 2 > 0, 1 (twice); ties 1 = 1
    # and 2 = 2 (twice) count 1/2: (3 + 1 + 2 + 2 + 3 / 2) / 12.
    pos, neg = torch.tensor([3.0, 1.0, 2.0, 2.0]), torch.tensor([2.0, 0.0, 1.0])
    assert roc_auc(pos, neg) == pytest.approx(9.5 / 12)
    assert roc_auc(neg, pos) == pytest.approx(2.5 / 12)  # swapped roles: 1 - AUC
    assert roc_auc(pos + 10, neg) == 1.0 and roc_auc(torch.zeros(5), torch.zeros(3)) == 0.5
    assert np.isnan(roc_auc(torch.tensor([float('nan')]), neg))


def test_auc_sees_only_the_order_of_the_logits_and_the_gap_only_their_affine_scale():
    train, holdout, fake = torch.tensor([2.0, 3.0]), torch.tensor([1.0, 2.5]), torch.tensor([-3.0, -1.0])
    assert roc_auc(train, holdout) == 0.75 and normalised_gap(train, holdout, fake) == pytest.approx(1.5 / 9)
    # Halving D's logits (a regulariser shrinking their scale) changes neither: the gap is a ratio.
    assert roc_auc(train / 2, holdout / 2) == 0.75
    assert normalised_gap(train / 2, holdout / 2, fake / 2) == normalised_gap(train, holdout, fake)
    # Saturating them (monotone but not affine) leaves the AUC and cuts the gap to a third.
    squashed = [torch.tanh(v) for v in (train, holdout, fake)]
    assert roc_auc(*squashed[:2]) == 0.75
    assert normalised_gap(*squashed) == pytest.approx(0.0567, abs=1e-3)


class HalfD(torch.nn.Module):
    """``D`` with its logits halved."""

    def __init__(self, D: torch.nn.Module) -> None:
        super().__init__()
        self.D = D

    def forward(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` images in [-1, 1], ``[N, 0]`` labels -> ``[N, 1]`` halved logits."""
        return self.D(img, c) / 2


def test_monitor_reports_the_auc_of_every_training_image_against_every_held_out_one(data16, monkeypatch):
    kwargs = dict(path=data16, holdout=6, random_seed=1)
    training = ImageFolderDataset(**kwargs, xflip=True)
    held = training.holdout_split()
    G, D = Generator(**TINY_G), Discriminator(**TINY_D)
    args = (held.files, training, G.z_dim, torch.device('cpu'))
    monitor = OverfitMonitor(*args, 2)
    stats = monitor.stats(G, D)
    assert stats['Overfit/auc']['num'] == 10 * 6  # all 10 training images (no mirrored copies), 6 held-out

    def logits(dataset: ImageFolderDataset, n: int) -> list[float]:  # in whole minibatch-std pairs
        img = torch.from_numpy(np.stack([dataset[i][0] for i in range(n)])).float() / 127.5 - 1
        with torch.no_grad():
            return torch.cat([D(pair, torch.zeros(2, 0)) for pair in img.split(2)]).flatten().tolist()

    pos, neg = logits(training, 10), logits(held, 6)
    pairs = [1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg]
    assert stats['Overfit/auc']['mean'] == pytest.approx(sum(pairs) / len(pairs))
    half = monitor.stats(G, HalfD(D))
    assert half['Overfit/D_train']['mean'] == pytest.approx(stats['Overfit/D_train']['mean'] / 2)
    assert half['Overfit/auc'] == stats['Overfit/auc'] and half['Overfit/gap'] == stats['Overfit/gap']
    monkeypatch.setattr(overfit, 'MAX_AUC_IMAGES', 4)  # a seeded sample of each side beyond the cap
    capped = OverfitMonitor(*args, 2)
    assert capped.stats(G, D)['Overfit/auc']['num'] == 4 * 4


def test_training_writes_overfit_stats(data16, tmp_path):
    args = [f'--outdir={tmp_path}', f'--data={data16}', *TINY, '--holdout=4', '--kimg=0.008', '--tick=0.004']
    res = CliRunner().invoke(train.main, args + ['--snap=10'])
    assert res.exit_code == 0, res.output + repr(res.exception)
    run_dir = next(tmp_path.iterdir())
    stats = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    for key in ('Overfit/D_train', 'Overfit/D_holdout', 'Overfit/D_fake', 'Overfit/gap', 'Overfit/auc'):
        assert all(key in s for s in stats), key
    assert stats[-1]['Overfit/D_holdout']['num'] == 4 and stats[-1]['Overfit/auc']['num'] == 12 * 4
    assert all(0 <= s['Overfit/auc']['mean'] <= 1 for s in stats)


def test_train_metrics_use_the_training_split_and_full_metrics_every_image(data16):
    import calc_metrics
    from metrics import context

    G = Generator(**TINY_G)
    kwargs = calc_metrics.resolve_dataset_kwargs(dict(path=data16, holdout=4, random_seed=0), None, None, G)
    assert kwargs['holdout'] == 4
    ctx = type('Ctx', (), dict(dataset_kwargs=kwargs, G=G, name='fid1k_train'))()
    assert len(context.open_dataset(ctx, 'train')) == 12
    assert len(context.open_dataset(ctx, 'full')) == 16
