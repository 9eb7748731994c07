"""The KD head is trained (one training step of the run API, which the training loop uses), and the
once-per-tick gradient-scale diagnostic Loss/kd/grad_ratio equals a direct computation and touches no
training state."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_CLIP_SPEC, TINY_D, TINY_G, kd_loss_kwargs, tiny_training_run

from stylegan2_ada_kd.kd.loss import KDLoss, agkd_official, agkd_paper, cgkd_official, cgkd_paper
from stylegan2_ada_kd.networks import Discriminator, Generator
from stylegan2_ada_kd.training.run import training_step
from torch_utils import training_stats

SPEC = TINY_CLIP_SPEC
PROMPTS = ['a cat', 'a dog', 'a car']


def _setup(seed=0, **kw):
    """G, D and the loss built in the training loop's order (loss first: it attaches the head)."""
    torch.manual_seed(seed)
    G = Generator(**copy.deepcopy(TINY_G)).train().requires_grad_(False)
    D = Discriminator(**copy.deepcopy(TINY_D)).train().requires_grad_(False)
    loss = KDLoss(torch.device('cpu'), G, D, teacher=SPEC, prompts=PROMPTS, **kd_loss_kwargs(**kw))
    return G, D, loss


def _batch(G, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(n, 3, 16, 16, generator=g) * 2 - 1,
        torch.zeros(n, 0),
        torch.randn(n, G.z_dim, generator=g),
    )


def test_one_training_step_trains_the_kd_head():
    """The run API builds the loss (which attaches the head) before D's optimizer: one step trains it."""
    run = tiny_training_run(
        dict(class_name='stylegan2_ada_kd.kd.loss.KDLoss', teacher=SPEC, prompts=PROMPTS, r1_gamma=0)
    )
    before = {k: v.clone() for k, v in run.D.heads['kd'].state_dict().items()}
    real, c, _z = _batch(run.G)
    training_step(run, [real], [c], lambda n: torch.zeros(n, 0))
    assert (run.progress.cur_nimg, run.progress.batch_idx) == (4, 1)
    after = run.D.heads['kd'].state_dict()
    assert before.keys() == after.keys() and len(before) >= 4
    for key, value in before.items():
        assert not torch.equal(value, after[key]), f'{key} did not change: the head is not in D optimizer'


def _trunk_grad_norm(D, loss_fn, real, img, c):
    """||d loss / d trunk||, computed the plain way: .backward() into .grad of D's non-head parameters."""
    D.zero_grad(set_to_none=True)
    D.requires_grad_(True)
    logits_f, feat_f = D(img, c, return_features=True)
    logits_r, feat_r = D(real, c, return_features=True)
    loss_fn(logits_r, logits_f, feat_r['kd'], feat_f['kd']).backward()
    grads = [
        p.grad.flatten() for n, p in D.named_parameters() if not n.startswith('heads.') and p.grad is not None
    ]
    D.zero_grad(set_to_none=True)
    D.requires_grad_(False)
    return float(torch.cat(grads).norm())


@pytest.mark.parametrize('variant', ['paper', 'official'])
def test_grad_ratio_matches_a_direct_computation_and_touches_nothing(variant, monkeypatch):
    G, D, loss = _setup(style_mixing_prob=0, variant=variant, lecam_weight=0.1)
    real, c, z = _batch(G)
    sentinel = torch.full_like(D.b16.conv0.weight, 7.0)
    D.b16.conv0.weight.grad = sentinel.clone()
    w_avg, lecam = G.mapping.w_avg.clone(), loss.lecam_ema.clone()
    monkeypatch.setattr(
        training_stats, 'report', lambda *a: pytest.fail(f'reported {a[0]} from a diagnostic')
    )
    torch.manual_seed(3)
    out = loss.tick_diagnostics(real, c, z, c)
    monkeypatch.undo()
    assert set(out) == {'Loss/kd/grad_ratio', 'Loss/kd/grad_ratio_agkd', 'Loss/kd/grad_ratio_cgkd'}
    assert all(v['num'] == 1 and v['std'] == 0 for v in out.values())
    # Nothing of the training state changed: grads, requires_grad, G's w_avg, LeCam's EMAs.
    assert torch.equal(D.b16.conv0.weight.grad, sentinel)
    assert all(p.grad is None for n, p in D.named_parameters() if n != 'b16.conv0.weight')
    assert not any(p.requires_grad for p in D.parameters())
    assert torch.equal(G.mapping.w_avg, w_avg) and torch.equal(loss.lecam_ema, lecam)

    torch.manual_seed(3)  # the same synthesis noise as inside the diagnostic
    with torch.no_grad():
        img = G.synthesis(G.mapping(z, c, skip_w_avg_update=True))
        t_r, t_f = (loss.teacher.encode_image(x, variant) for x in (real, img))

    def kd(weight_a, weight_c):
        def fn(_lr, _lf, h_r, h_f):
            if variant == 'paper':
                s_r, s_f, u_r, u_f = (F.normalize(v, dim=1) for v in (h_r, h_f, t_r, t_f))
                return (
                    weight_a * agkd_paper(s_r, s_f, u_r, u_f, 0.7).mean()
                    + weight_c * cgkd_paper(s_r, s_f, u_r, u_f, loss.anchors).mean()
                )
            # The released code: AGKD averaged over the batch, CGKD summed; both weighted 10.
            return (
                10 * weight_a * agkd_official(h_r, h_f, t_r, t_f).mean()
                + 10 * weight_c * cgkd_official(h_r, h_f, t_r, t_f, loss.anchors).sum()
            )

        return fn

    adv = _trunk_grad_norm(D, lambda lr, lf, *_: (F.softplus(lf) + F.softplus(-lr)).mean(), real, img, c)
    both = _trunk_grad_norm(D, kd(1, 1), real, img, c)
    ag = _trunk_grad_norm(D, kd(1, 0), real, img, c)
    cg = _trunk_grad_norm(D, kd(0, 1), real, img, c)
    assert out['Loss/kd/grad_ratio']['mean'] == pytest.approx(both / adv, rel=1e-4)
    assert out['Loss/kd/grad_ratio_agkd']['mean'] == pytest.approx(ag / adv, rel=1e-4)
    assert out['Loss/kd/grad_ratio_cgkd']['mean'] == pytest.approx(cg / adv, rel=1e-4)


def test_grad_ratio_with_one_term():
    G, D, loss = _setup(kd_terms=['aggregated'], cross_p=0.0)
    real, c, z = _batch(G)
    out = loss.tick_diagnostics(real, c, z, c)
    assert set(out) == {'Loss/kd/grad_ratio', 'Loss/kd/grad_ratio_agkd'}
    assert out['Loss/kd/grad_ratio']['mean'] == pytest.approx(out['Loss/kd/grad_ratio_agkd']['mean'])
    assert out['Loss/kd/grad_ratio']['mean'] > 0


def test_grad_ratio_tool_measures_every_setting_on_the_same_draws(tmp_path):
    from conftest import make_image_folder

    from benchmarks import grad_ratio

    res = grad_ratio.measure(
        data=make_image_folder(tmp_path, n=8), cbase=256, cmax=16, batch=4, teacher=SPEC, repeats=1
    )
    assert set(res) == set(grad_ratio.SETTINGS)
    assert all(
        set(stats) == set(grad_ratio.COLUMNS) and all(v[0] > 0 for v in stats.values())
        for stats in res.values()
    )
    paper = [stats for label, stats in res.items() if label.startswith('paper')]
    assert len(paper) == 3  # the same G, D, head and batch: CGKD alone pulls the same in each
    assert paper[0]['grad_ratio_cgkd'] == pytest.approx(paper[1]['grad_ratio_cgkd'], rel=1e-6)
    assert paper[0]['grad_ratio_cgkd'] == pytest.approx(paper[2]['grad_ratio_cgkd'], rel=1e-6)
    assert 'official (x10, CGKD summed)' in grad_ratio.format_table(res)
