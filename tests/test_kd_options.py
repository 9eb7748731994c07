"""train.py's --kd* options (kd/options.py): what --dry-run shows is what the loss runs, --kd-p is refused
with the official variant, every --kd-* option without --kd is an error naming it, and the official
variant's class prompts use the released template; anchor options (prompts, k-means prototypes) are
resolved only when CGKD or the diversity term uses them, never for AGKD alone."""

import copy
import json

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_CLIP_SPEC, TINY_D, TINY_G, TinyImageEncoder, make_image_folder

import train
from stylegan2_ada_kd.kd.loss import KDLoss
from stylegan2_ada_kd.networks import Discriminator, Generator

SPEC = TINY_CLIP_SPEC
TINY = ['--cbase=256', '--cmax=16', '--workers=0', '--batch=4']


@pytest.fixture(scope='module')
def data16(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('kdopt16'), seed=3)


@pytest.fixture(scope='module')
def cond16(tmp_path_factory):
    root = tmp_path_factory.mktemp('kdcond16')
    make_image_folder(root, n=8, seed=4)
    meta = dict(
        labels=[[f'img{i:03d}.png', i % 2] for i in range(8)], class_names=['cat', 'golden_retriever']
    )
    (root / 'dataset.json').write_text(json.dumps(meta))
    return str(root)


def _dry(tmp_path, data, *extra):
    return CliRunner().invoke(
        train.main, [f'--outdir={tmp_path}', f'--data={data}', *TINY, '--dry-run', *extra]
    )


def _config(res):
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = res.output
    return json.loads(out[out.index('{\n') : out.index('\n\nRun directory')])


@pytest.mark.parametrize('variant, want', [('paper', (1, 1, 0.7)), ('official', (10, 10, 1))])
def test_dry_run_shows_the_kd_settings_that_run(tmp_path, data16, variant, want):
    kd = ['--kd=aggregated,correlated', f'--kd-teacher={SPEC}', f'--kd-variant={variant}', '--seed=7']
    lk = _config(_dry(tmp_path, data16, *kd))['loss_kwargs']
    assert (lk['agkd_weight'], lk['cgkd_weight'], lk['cross_p']) == want
    assert lk['seed'] == 7  # the cross-term draw depends on it
    # The printed kwargs build a loss with exactly these settings.
    G, D = Generator(**copy.deepcopy(TINY_G)), Discriminator(**copy.deepcopy(TINY_D))
    loss = KDLoss(torch.device('cpu'), G, D, **{k: v for k, v in lk.items() if k != 'class_name'})
    assert (loss.agkd_weight, loss.cgkd_weight, loss.cross_p, loss.seed) == (*want, 7)


def test_kd_p_with_the_official_variant_is_an_error(tmp_path, data16):
    kd = ['--kd=aggregated', f'--kd-teacher={SPEC}', '--kd-variant=official']
    res = _dry(tmp_path, data16, *kd, '--kd-p=0.5')
    assert res.exit_code != 0 and '--kd-p' in res.output and 'official' in res.output
    assert not list(tmp_path.iterdir())
    assert _config(_dry(tmp_path, data16, *kd, '--kd-p=1'))['loss_kwargs']['cross_p'] == 1  # honoured
    lk = _config(_dry(tmp_path, data16, '--kd=aggregated', f'--kd-teacher={SPEC}', '--kd-p=0.25'))[
        'loss_kwargs'
    ]
    assert lk['cross_p'] == 0.25


@pytest.mark.parametrize(
    'option',
    [
        '--kd-prompts=p.txt',
        '--kd-teacher-weights=/nonexistent.pt',
        '--kd-teacher=ViT-B-32:openai',
        '--kd-variant=official',
        '--kd-agkd-weight=2',
        '--kd-cgkd-weight=2',
        '--kd-p=0.5',
        '--kd-div-weight=1',
        '--kd-anchors=4',
    ],
)
@pytest.mark.parametrize('kd', [[], ['--kd=none']])
def test_kd_options_without_kd_are_errors_naming_the_option(tmp_path, data16, option, kd):
    res = _dry(tmp_path, data16, option, *kd)
    assert res.exit_code != 0, res.output
    assert option.split('=')[0] in res.output and '--kd=' in res.output
    assert not list(tmp_path.iterdir())


def test_all_stray_kd_options_are_named(tmp_path, data16):
    res = _dry(tmp_path, data16, '--kd-prompts=p.txt', '--kd-teacher-weights=/nonexistent.pt')
    assert res.exit_code != 0 and '--kd-prompts' in res.output and '--kd-teacher-weights' in res.output


@pytest.mark.parametrize(
    'variant, want',
    [
        ('paper', ['a photo of a cat', 'a photo of a golden retriever']),
        ('official', ['a cat', 'a golden retriever']),
    ],
)
def test_class_prompts_follow_the_variant(tmp_path, cond16, variant, want):
    kd = ['--cond=1', '--kd=correlated', f'--kd-teacher={SPEC}', f'--kd-variant={variant}']
    assert _config(_dry(tmp_path, cond16, *kd))['loss_kwargs']['prompts'] == want


ANCHOR_KEYS = {'prompts', 'num_anchors', 'anchor_dataset', 'anchor_cache'}


@pytest.fixture(scope='module')
def encoder_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp('kdopt-encoder') / 'encoder.pt'
    torch.jit.script(TinyImageEncoder()).save(str(path))
    return f'torchscript:{path}'


@pytest.mark.parametrize('teacher', ['clip', 'torchscript'])
def test_anchor_options_are_resolved_only_when_cgkd_or_diversity_uses_them(
    tmp_path, data16, encoder_spec, teacher
):
    spec = SPEC if teacher == 'clip' else encoder_spec
    used = {'prompts'} if teacher == 'clip' else {'num_anchors', 'anchor_dataset', 'anchor_cache'}
    for kd, used_here in [
        (['--kd=aggregated'], set()),
        (['--kd=aggregated', '--kd-div-weight=0.1'], used),
        (['--kd=correlated'], used),
        (['--kd=aggregated,correlated'], used),
    ]:
        lk = _config(_dry(tmp_path, data16, *kd, f'--kd-teacher={spec}'))['loss_kwargs']
        assert ANCHOR_KEYS & set(lk) == used_here, kd
        # The printed kwargs build the loss; AGKD alone computes no anchors.
        G, D = Generator(**copy.deepcopy(TINY_G)), Discriminator(**copy.deepcopy(TINY_D))
        loss = KDLoss(torch.device('cpu'), G, D, **{k: v for k, v in lk.items() if k != 'class_name'})
        assert (loss.anchors is not None) == bool(used_here), kd


def test_agkd_alone_needs_no_prompts_for_conditional_data(tmp_path):
    """Conditional data without class names has no CGKD prompts, which AGKD alone does not need."""
    root = tmp_path / 'nonames'
    make_image_folder(root, n=8, seed=4)
    (root / 'dataset.json').write_text(json.dumps({'labels': [[f'img{i:03d}.png', i % 2] for i in range(8)]}))
    kd = ['--cond=1', f'--kd-teacher={SPEC}']
    lk = _config(_dry(tmp_path / 'out', root, *kd, '--kd=aggregated'))['loss_kwargs']
    assert 'prompts' not in lk
    res = _dry(tmp_path / 'out', root, *kd, '--kd=aggregated,correlated')
    assert res.exit_code != 0 and 'class names' in res.output


@pytest.mark.parametrize('option', ['--kd-prompts=p.txt', '--kd-anchors=4'])
def test_anchor_options_with_agkd_alone_are_errors_naming_the_option(tmp_path, data16, option):
    res = _dry(tmp_path, data16, '--kd=aggregated', f'--kd-teacher={SPEC}', option)
    assert res.exit_code != 0, res.output
    assert option.split('=')[0] in res.output and 'correlated' in res.output
    assert not list(tmp_path.iterdir())
