"""KD-DLGAN end to end: gradient routing, the loss contract, 2-tick trainings with each augmentation
mode, exact resume of the head and LeCam state, and errors raised before training starts."""

import copy
import json

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_CLIP_SPEC, TINY_D, TINY_G, TinyImageEncoder, kd_loss_kwargs, make_image_folder

import train
from stylegan2_ada_kd.kd.loss import KDLoss
from stylegan2_ada_kd.kd.prompts import GENERIC_PROMPTS
from stylegan2_ada_kd.networks import Discriminator, Generator
from stylegan2_ada_kd.training.loss import StyleGAN2Loss

TINY = ['--cbase=256', '--cmax=16', '--workers=0', '--batch=4', '--tick=0.008', '--snap=1', '--grid=4x2']


@pytest.fixture(scope='module')
def teacher_spec():
    return TINY_CLIP_SPEC


@pytest.fixture(scope='module')
def data16(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('kd16'), seed=1)


def _nets():
    return Generator(**copy.deepcopy(TINY_G)).train(), Discriminator(**copy.deepcopy(TINY_D)).train()


def _kd_loss(teacher_spec, G, D, **kw):
    prompts = ['a cat', 'a dog', 'a car']
    return KDLoss(torch.device('cpu'), G, D, teacher=teacher_spec, prompts=prompts, **kd_loss_kwargs(**kw))


def test_kd_gradients_reach_trunk_and_head_never_the_teacher(teacher_spec):
    G, D = _nets()
    loss = _kd_loss(teacher_spec, G, D, r1_gamma=0)
    D.requires_grad_(True)
    real, z, c = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, G.z_dim), torch.zeros(4, 0)
    loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=0)
    assert D.heads['kd'].fc0.weight.grad.abs().sum() > 0
    assert D.b16.conv0.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.teacher.parameters())
    assert all(not p.requires_grad for p in loss.teacher.parameters())


def test_kd_terms_change_the_trunk_gradient(teacher_spec):
    grads = []
    for kd_weight in (0.0, 1.0):
        torch.manual_seed(0)
        G, D = _nets()
        loss = _kd_loss(teacher_spec, G, D, r1_gamma=0, agkd_weight=kd_weight, cgkd_weight=kd_weight)
        D.requires_grad_(True)
        torch.manual_seed(1)
        real, z, c = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, G.z_dim), torch.zeros(4, 0)
        loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=0)
        grads.append(D.b16.conv0.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize('variant', ['paper', 'official'])
def test_d_terms_use_the_teacher_on_real_and_fake_as_d_saw_them(teacher_spec, variant):
    """One batched teacher call gives the same loss as separate calls on the reals and the fakes."""
    from stylegan2_ada_kd.kd import loss as kd_loss
    from stylegan2_ada_kd.training.loss import DOutput

    G, D = _nets()
    loss = _kd_loss(teacher_spec, G, D, variant=variant, cross_p=1.0)
    n, e = 3, loss.teacher.embed_dim
    real = DOutput(torch.randn(n, 1), {'kd': torch.randn(n, e)}, torch.rand(n, 3, 16, 16) * 2 - 1)
    fake = DOutput(torch.randn(n, 1), {'kd': torch.randn(n, e)}, torch.rand(n, 3, 16, 16) * 2 - 1)
    c = torch.zeros(n, 0)
    got = loss.d_main_terms(real, fake, c, c, 0) - StyleGAN2Loss.d_main_terms(loss, real, fake, c, c, 0)
    with torch.no_grad():
        t_r = loss.teacher.encode_image(real.img, variant=variant)
        t_f = loss.teacher.encode_image(fake.img, variant=variant)
    h_r, h_f = real.features['kd'], fake.features['kd']
    if variant == 'paper':
        h_r, h_f, t_r, t_f = (torch.nn.functional.normalize(v, dim=1) for v in (h_r, h_f, t_r, t_f))
        want = kd_loss.agkd_paper(h_r, h_f, t_r, t_f, True) + kd_loss.cgkd_paper(
            h_r, h_f, t_r, t_f, loss.anchors
        )
    else:  # the released code: AGKD averaged over the batch, CGKD summed (n x its per-sample value)
        want = 10 * kd_loss.agkd_official(h_r, h_f, t_r, t_f)
        want = want + 10 * n * kd_loss.cgkd_official(h_r, h_f, t_r, t_f, loss.anchors)
    assert torch.allclose(got[:, 0], want, rtol=1e-4, atol=1e-4)


def test_diversity_term_reaches_G(teacher_spec):
    grads = []
    for div in (0.0, 5.0):
        torch.manual_seed(0)
        G, D = _nets()
        loss = _kd_loss(teacher_spec, G, D, div_weight=div, style_mixing_prob=0)
        G.requires_grad_(True)
        torch.manual_seed(1)
        z, c = torch.randn(4, G.z_dim), torch.zeros(4, 0)
        loss.accumulate_gradients('Gmain', torch.zeros(4, 3, 16, 16), c, z, c, gain=1, cur_nimg=0)
        grads.append(G.synthesis.b16.conv1.weight.grad.clone())
        assert all(p.grad is None for p in loss.teacher.parameters())
    assert not torch.allclose(grads[0], grads[1])


def test_every_loss_takes_the_same_contract_and_rejects_typos(teacher_spec):
    for cls, extra in [(StyleGAN2Loss, {}), (KDLoss, dict(teacher=teacher_spec, prompts=['a', 'b']))]:
        G, D = _nets()
        cls(device=torch.device('cpu'), G=G, D=D, augment_pipe=None, r1_gamma=1, **extra)
        with pytest.raises(TypeError):
            cls(device=torch.device('cpu'), G=G, D=D, augment_pipe=None, r1_gama=1, **extra)


def test_cgkd_needs_two_prompts(teacher_spec):
    G, D = _nets()
    with pytest.raises(ValueError, match='K >= 2'):
        _kd_loss(teacher_spec, G, D).__class__(
            torch.device('cpu'), G, D, teacher=teacher_spec, prompts=['one']
        )


def _train(args):
    res = CliRunner().invoke(train.main, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def _run_dir(outdir):
    runs = sorted(outdir.iterdir())
    return runs[-1]


def _stats(run_dir):
    return [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]


@pytest.mark.parametrize('aug, lecam', [('noaug', 0), ('ada', 0.1), ('diffaug', 0), ('diffaug', 0.1)])
def test_kd_training_writes_kd_stats(tmp_path, data16, teacher_spec, aug, lecam):
    out = _train(
        [
            f'--outdir={tmp_path}',
            f'--data={data16}',
            *TINY,
            '--kimg=0.012',
            f'--aug={aug}',
            f'--lecam={lecam}',
            '--kd=aggregated,correlated',
            f'--kd-teacher={teacher_spec}',
        ]
    )
    assert 'random-init' in out  # the random teacher is announced loudly
    if aug == 'diffaug':  # no probability to show: the policy instead of 'augment 1.000'
        assert 'augment diffaug(color,translation,cutout)' in out and 'augment 1.000' not in out
    run_dir = _run_dir(tmp_path)
    log = (run_dir / 'log.txt').read_text()
    assert 'KD-DLGAN (paper variant): 1 * AGKD + 1 * CGKD, cross-term p=0.7' in log
    k = len(GENERIC_PROMPTS)
    assert f'teacher {teacher_spec} (16-d, random weights); CGKD anchors: {k} prompt text embeddings' in log
    stats = _stats(run_dir)
    for key in ('Loss/kd/agkd', 'Loss/kd/cgkd', 'Timing/kd_teacher_sec'):
        assert key in stats[-1], key
    assert len(stats) >= 2  # the once-per-tick gradient-scale diagnostic is in every tick's line
    for key in ('Loss/kd/grad_ratio', 'Loss/kd/grad_ratio_agkd', 'Loss/kd/grad_ratio_cgkd'):
        assert all(s[key]['num'] == 1 and 0 < s[key]['mean'] < float('inf') for s in stats), key
    assert ('Loss/D/lecam' in stats[-1]) == (lecam > 0)
    opts = json.loads((run_dir / 'training_options.json').read_text())
    assert opts['loss_kwargs']['teacher'] == teacher_spec and opts['loss_kwargs']['teacher_embed_dim'] == 16
    assert len(opts['loss_kwargs']['prompts']) >= 2
    raw = torch.load(run_dir / 'network-snapshot-000000.012.pkl', weights_only=True)
    assert 'heads.kd.fc0.weight' in raw['networks']['D']['state_dict']
    from stylegan2_ada_kd.checkpoint import load_network_pkl

    assert load_network_pkl(str(run_dir / 'network-snapshot-000000.012.pkl'))['G_ema'].img_resolution == 16


@pytest.mark.parametrize(
    'kd, announced',
    [
        (['--kd=aggregated'], None),
        (['--kd=aggregated', '--kd-div-weight=0.1'], 'diversity anchors'),
        (['--kd=correlated'], 'CGKD anchors'),
        (['--kd=aggregated,correlated'], 'CGKD anchors'),
    ],
)
def test_anchors_are_announced_only_when_cgkd_or_diversity_uses_them(
    tmp_path, data16, teacher_spec, kd, announced
):
    """The run's Loss line names CGKD anchors only with CGKD; AGKD alone announces no anchors at all."""
    args = [f'--outdir={tmp_path}', f'--data={data16}', *TINY, '--kimg=0.004', '--aug=noaug']
    out = _train([*args, *kd, f'--kd-teacher={teacher_spec}'])
    log = (_run_dir(tmp_path) / 'log.txt').read_text()
    for text in (out, log):
        loss_line = next(line for line in text.splitlines() if line.startswith('Loss: KDLoss'))
        if announced is None:
            assert 'anchor' not in loss_line.lower()
            assert 'prompts' not in text  # nor are prompts resolved and shown in the options
        else:
            assert loss_line.endswith(f'; {announced}: {len(GENERIC_PROMPTS)} prompt text embeddings')
        assert ('CGKD' in loss_line) == any('correlated' in arg for arg in kd)


def test_kd_resume_restores_head_and_lecam_exactly(tmp_path, data16, teacher_spec):
    args = [
        f'--data={data16}',
        *TINY,
        '--aug=diffaug',
        '--lecam=0.1',
        '--seed=2',
        '--kd=aggregated,correlated',
        f'--kd-teacher={teacher_spec}',
    ]
    _train([f'--outdir={tmp_path / "full"}', *args, '--kimg=0.028'])
    _train([f'--outdir={tmp_path / "first"}', *args, '--kimg=0.012'])
    snap = _run_dir(tmp_path / 'first') / 'network-snapshot-000000.012.pkl'
    state = torch.load(snap, weights_only=True)['resume_state']['loss']
    assert state['lecam_ema'].abs().sum() > 0
    out = _train([f'--outdir={tmp_path / "resumed"}', *args, '--kimg=0.028', f'--resume={snap}'])
    assert 'Resuming exactly' in out
    full = {round(s['Progress/kimg']['mean'], 3): s for s in _stats(_run_dir(tmp_path / 'full'))}
    for s in _stats(_run_dir(tmp_path / 'resumed')):
        ref = full[round(s['Progress/kimg']['mean'], 3)]
        for key in ('Loss/kd/agkd', 'Loss/kd/cgkd', 'Loss/D/lecam', 'Loss/G/loss'):
            assert s[key]['mean'] == pytest.approx(ref[key]['mean'], rel=1e-5, abs=1e-7), key


def test_torchscript_teacher_with_kmeans_anchors(tmp_path, data16):
    path = tmp_path / 'encoder.pt'
    torch.jit.script(TinyImageEncoder()).save(str(path))
    _train(
        [
            f'--outdir={tmp_path / "runs"}',
            f'--data={data16}',
            *TINY,
            '--kimg=0.008',
            '--aug=noaug',
            '--kd=aggregated,correlated',
            f'--kd-teacher=torchscript:{path}',
            '--kd-anchors=4',
        ]
    )
    run_dir = _run_dir(tmp_path / 'runs')
    assert (run_dir / 'kd_anchors.pt').exists()
    assert 'Loss/kd/cgkd' in _stats(run_dir)[-1]


def test_offline_teacher_fails_before_anything_is_created(tmp_path, data16, monkeypatch):
    from stylegan2_ada_kd.kd import teacher as teacher_mod
    from stylegan2_ada_kd.kd import teacher_open_clip

    # Not cached, and the one attempt fails as offline (whatever this machine's network and cache hold).
    monkeypatch.setattr(teacher_open_clip, 'find_cached', lambda src: None)
    monkeypatch.setattr(
        teacher_open_clip,
        'download_once',
        lambda src: (None, 'made one request, to X: OSError: network is unreachable'),
    )

    teacher_mod.clear_teacher_cache()
    res = CliRunner().invoke(
        train.main,
        [
            f'--outdir={tmp_path / "runs"}',
            f'--data={data16}',
            *TINY,
            '--kd=aggregated',
            '--kd-teacher=ViT-B-32:openai',
        ],
    )
    assert res.exit_code != 0
    assert '--kd-teacher-weights' in res.output and 'ViT-B-32' in res.output
    assert not (tmp_path / 'runs').exists()
    res = CliRunner().invoke(
        train.main,
        [
            f'--outdir={tmp_path / "runs"}',
            f'--data={data16}',
            *TINY,
            '--kd=aggregated',
            f'--kd-teacher-weights={tmp_path}/missing.bin',
        ],
    )
    assert res.exit_code != 0 and 'missing.bin' in res.output
