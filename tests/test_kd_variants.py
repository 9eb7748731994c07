"""KD-DLGAN variants and the cross-term draw: the official CGKD sums over the batch, the official head is
linear C -> 1024 -> E, k-means anchors are cached per teacher preprocessing, and AGKD's cross terms are
drawn once per D step, the same in every accumulation round, on every rank and after a resume."""

import copy

import numpy as np
import pytest
import torch
from conftest import TINY_CLIP_SPEC, TINY_D, TINY_G, TinyImageEncoder, kd_loss_kwargs, make_image_folder

from stylegan2_ada_kd.kd import anchors as anchors_mod
from stylegan2_ada_kd.kd import loss as kd_loss
from stylegan2_ada_kd.kd.anchors import real_image_anchors
from stylegan2_ada_kd.kd.loss import KDLoss, cgkd_official, cross_terms_on
from stylegan2_ada_kd.kd.teacher import load_teacher
from stylegan2_ada_kd.kd.variants import resolve_kd_settings
from stylegan2_ada_kd.networks import Discriminator, Generator
from stylegan2_ada_kd.training.loss import DOutput, StyleGAN2Loss

SPEC = TINY_CLIP_SPEC
PROMPTS = ['a cat', 'a dog', 'a car']


def _nets():
    return Generator(**copy.deepcopy(TINY_G)).train(), Discriminator(**copy.deepcopy(TINY_D)).train()


def _loss(G, D, **kw):
    return KDLoss(torch.device('cpu'), G, D, teacher=SPEC, prompts=PROMPTS, **kd_loss_kwargs(**kw))


def _outputs(n, e, seed=0):
    """A real and a fake DOutput: logits [n, 1], head outputs [n, e], images [n, 3, 16, 16]."""
    g = torch.Generator().manual_seed(seed)
    make = lambda: DOutput(
        torch.randn(n, 1, generator=g),
        {'kd': torch.randn(n, e, generator=g)},
        torch.rand(n, 3, 16, 16) * 2 - 1,
    )
    return make(), make()


def _repeat(out, times):
    return DOutput(
        torch.cat([out.logits] * times),
        {'kd': torch.cat([out.features['kd']] * times)},
        torch.cat([out.img] * times),
    )


def _kd_part(loss, real, fake):
    """The batch mean of D's loss minus its adversarial part: the KD loss that is backpropagated."""
    c = torch.zeros(len(real.img), 0)
    kd = loss.d_main_terms(real, fake, c, c, 0) - StyleGAN2Loss.d_main_terms(loss, real, fake, c, c, 0)
    return float(kd.mean())


# ---------------------------------------------------------------- official CGKD reduction


def test_official_cgkd_is_summed_over_the_batch_and_agkd_averaged():
    cg = _loss(*_nets(), variant='official', kd_terms=['correlated'])
    ag = _loss(*_nets(), variant='official', kd_terms=['aggregated'])
    real, fake = _outputs(3, 16)
    with torch.no_grad():
        t_r, t_f = (cg.teacher.encode_image(o.img, 'official') for o in (real, fake))
    per_sample = cgkd_official(real.features['kd'], fake.features['kd'], t_r, t_f, cg.anchors)
    assert _kd_part(cg, real, fake) == pytest.approx(10 * float(per_sample.sum()), rel=1e-5)
    # The same samples twice: the summed CGKD doubles, the averaged AGKD stays.
    double = [_repeat(real, 2), _repeat(fake, 2)]
    assert _kd_part(cg, *double) == pytest.approx(2 * _kd_part(cg, real, fake), rel=1e-5)
    assert _kd_part(ag, *double) == pytest.approx(_kd_part(ag, real, fake), rel=1e-5)
    paper = _loss(*_nets(), kd_terms=['correlated'])
    assert _kd_part(paper, *double) == pytest.approx(_kd_part(paper, real, fake), rel=1e-5)  # paper: mean
    assert 'CGKD (summed over the batch)' in cg.describe()


# ---------------------------------------------------------------- settings


def test_settings_resolve_every_default_and_reject_p_with_official():
    assert resolve_kd_settings('paper', None, None, None) == dict(agkd_weight=1, cgkd_weight=1, cross_p=0.7)
    assert resolve_kd_settings('official', None, 2, None) == dict(agkd_weight=10, cgkd_weight=2, cross_p=1)
    assert resolve_kd_settings('official', None, None, 1)['cross_p'] == 1  # honoured: it is what runs
    with pytest.raises(ValueError, match='--kd-p=0.7 does not apply to --kd-variant=official'):
        resolve_kd_settings('official', None, None, 0.7)
    with pytest.raises(ValueError, match='--kd-p'):
        _loss(*_nets(), variant='official', cross_p=0.5)


# ---------------------------------------------------------------- official head


def test_official_head_is_two_linear_layers_through_1024():
    G, D = _nets()
    _loss(G, D, variant='official')
    head = D.heads['kd']
    assert (head.fc0.in_features, head.fc0.out_features, head.fc1.out_features) == (D.feature_dim, 1024, 16)
    assert head.num_layers == 2 and head.fc0.activation == 'linear'
    x, y = torch.randn(5, D.feature_dim), torch.randn(5, D.feature_dim)
    zero = head(torch.zeros(1, D.feature_dim))
    torch.testing.assert_close(head(x + y) - zero, (head(x) - zero) + (head(y) - zero), atol=1e-4, rtol=1e-4)

    G, D = _nets()
    _loss(G, D)  # paper: C -> max(C, E) -> E with lrelu, not affine
    head = D.heads['kd']
    assert head.fc0.out_features == max(D.feature_dim, 16) and head.fc0.activation == 'lrelu'
    zero = head(torch.zeros(1, D.feature_dim))
    assert not torch.allclose(head(x + y) - zero, (head(x) - zero) + (head(y) - zero), atol=1e-3)
    with pytest.raises(ValueError, match='already has a KD head'):
        _loss(G, D, variant='official')  # a paper head on D does not fit the official variant


# ---------------------------------------------------------------- anchors cached per preprocessing


def test_kmeans_anchor_cache_depends_on_the_variant(tmp_path, monkeypatch):
    path = tmp_path / 'encoder.pt'
    torch.jit.script(TinyImageEncoder()).save(str(path))
    spec = f'torchscript:{path}'
    data = dict(
        class_name='stylegan2_ada_kd.data.dataset.ImageFolderDataset', path=make_image_folder(tmp_path, n=8)
    )
    cache = str(tmp_path / 'kd_anchors.pt')
    calls = []
    kmeans = anchors_mod.kmeans
    monkeypatch.setattr(anchors_mod, 'kmeans', lambda *a, **k: calls.append(1) or kmeans(*a, **k))
    kw = dict(teacher=spec, anchor_dataset=data, anchor_cache=cache, num_anchors=3, kd_terms=['correlated'])
    paper = KDLoss(torch.device('cpu'), *_nets(), **kw)
    KDLoss(torch.device('cpu'), *_nets(), **kw)
    assert len(calls) == 1  # the same preprocessing: cached
    official = KDLoss(torch.device('cpu'), *_nets(), **kd_loss_kwargs(variant='official', **kw))
    assert len(calls) == 2  # other preprocessing: recomputed, not the paper anchors
    from stylegan2_ada_kd.data.dataset import ImageFolderDataset

    want = real_image_anchors(
        load_teacher(spec), ImageFolderDataset(data['path']), 3, None, variant='official'
    )
    torch.testing.assert_close(official.anchors, want.anchors)
    torch.testing.assert_close(official.anchor_center, want.center)
    assert not torch.allclose(official.anchors, paper.anchors)


# ---------------------------------------------------------------- the cross-term draw


def test_cross_draw_is_a_function_of_seed_and_step_only():
    state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    draws = [cross_terms_on(3, nimg, 0.7) for nimg in range(0, 4000 * 8, 8)]
    assert torch.equal(torch.random.get_rng_state(), state[0]) and np.array_equal(
        np.random.get_state()[1], state[1]
    )
    assert draws == [cross_terms_on(3, nimg, 0.7) for nimg in range(0, 4000 * 8, 8)]
    assert abs(np.mean(draws) - 0.7) < 0.03
    assert draws != [cross_terms_on(4, nimg, 0.7) for nimg in range(0, 4000 * 8, 8)]
    assert cross_terms_on(0, 5, 1.0) and not cross_terms_on(0, 5, 0.0)


def _step_draws(loss, first_step, steps, rounds, torch_seed, batch=2):
    """The cross draw of every accumulation round of D steps ``first_step, ...``: ``[[round draws], ...]``."""
    seen = []
    agkd_paper = kd_loss.agkd_paper

    def spy(s_r, s_f, t_r, t_f, cross):
        seen.append(bool(cross))
        return agkd_paper(s_r, s_f, t_r, t_f, cross)

    torch.manual_seed(torch_seed)  # each rank has its own global RNG state
    loss.D.requires_grad_(True)
    c = torch.zeros(batch, 0)
    out = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kd_loss, 'agkd_paper', spy)
        for step in range(first_step, first_step + steps):
            for _ in range(rounds):
                real, z = torch.rand(batch, 3, 16, 16) * 2 - 1, torch.randn(batch, loss.G.z_dim)
                loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=step * batch * rounds)
            out.append(seen[-rounds:])
    return out


def test_cross_terms_are_drawn_once_per_step_for_all_rounds_ranks_and_a_resume():
    kw = dict(kd_terms=['aggregated'], r1_gamma=0, seed=5, style_mixing_prob=0)
    rank0 = _step_draws(_loss(*_nets(), **kw), 0, 12, rounds=2, torch_seed=10)
    assert all(len(set(rounds)) == 1 for rounds in rank0)  # every round of a step agrees
    flags = [rounds[0] for rounds in rank0]
    assert True in flags and False in flags  # ... and the draw does vary between steps
    rank1 = _step_draws(_loss(*_nets(), **kw), 0, 12, rounds=2, torch_seed=11)
    assert rank1 == rank0  # another process (own RNG state) draws the same
    resumed = _step_draws(_loss(*_nets(), **kw), 6, 6, rounds=2, torch_seed=99)
    assert resumed == rank0[6:]  # a run resumed at step 6 redraws the same sequence
