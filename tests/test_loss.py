"""StyleGAN2 loss phases against independent formulations: the path-length penalty's gradient includes
the running-mean term (finite differences and a hand-built autograd decomposition), every D phase
reports the real signs that drive ADA, and Dboth scores the reals once."""

import copy

import numpy as np
import torch
from conftest import TINY_D, TINY_G

from stylegan2_ada_kd.augment.ada import AdaptiveP
from stylegan2_ada_kd.networks import Discriminator, Generator
from stylegan2_ada_kd.training.loss import StyleGAN2Loss, path_length_penalty, path_lengths
from torch_utils import training_stats


def _nets():
    return Generator(**copy.deepcopy(TINY_G)).train(), Discriminator(**copy.deepcopy(TINY_D)).train()


def _flat(grads, params):
    """One vector of gradients, zeros for parameters without one (unused by the graph)."""
    return torch.cat([torch.zeros(p.numel()) if g is None else g.flatten() for g, p in zip(grads, params)])


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------- path-length regularisation


def _tanh_synthesis(ws, weight):
    """A tiny float64 'synthesis': img = tanh(sum_{l,d} ws[n,l,d] W[l,d,p]), [N, 1, 4, 4]."""
    return torch.tanh(torch.einsum('nld,ldp->np', ws, weight)).reshape(-1, 1, 4, 4)


def _penalty_numpy(weight, ws, y, pl_mean, decay):
    """mean_n (l_n - a)^2 with a = pl_mean + decay (mean l - pl_mean), the Jacobian J^T y written out by
    hand: d(img . y)/d ws[n,l,d] = sum_p y[n,p] (1 - img[n,p]^2) W[l,d,p]."""
    img = np.tanh(np.einsum('nld,ldp->np', ws, weight))
    jty = np.einsum('np,ldp->nld', y * (1 - img**2), weight)
    lengths = np.sqrt(np.square(jty).sum(2).mean(1))
    a = pl_mean + decay * (lengths.mean() - pl_mean)
    return np.square(lengths - a).mean()


def test_path_length_penalty_gradient_matches_finite_differences():
    torch.manual_seed(3)
    ws = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 4, 16, dtype=torch.float64, requires_grad=True)
    pl_mean, decay = torch.tensor(0.2, dtype=torch.float64), 0.01
    torch.manual_seed(4)
    lengths = path_lengths(_tanh_synthesis(ws, weight), ws)
    penalty, new_mean = path_length_penalty(lengths, pl_mean, decay)
    (grad,) = torch.autograd.grad(penalty.mean(), weight, retain_graph=True)
    torch.manual_seed(4)  # the same y as path_lengths drew
    y = (torch.randn(3, 1, 4, 4, dtype=torch.float64) / 4).reshape(3, 16).numpy()
    w0, h = weight.detach().numpy(), 1e-6
    args = (ws.detach().numpy(), y, float(pl_mean), decay)
    fd = np.zeros_like(w0)
    for idx in np.ndindex(*w0.shape):
        step = np.zeros_like(w0)
        step[idx] = h
        fd[idx] = (_penalty_numpy(w0 + step, *args) - _penalty_numpy(w0 - step, *args)) / (2 * h)
    fd = torch.from_numpy(fd)
    assert _rel(grad, fd) < 1e-6
    # The running mean is part of the graph; the value matches the hand-written one too.
    assert new_mean.requires_grad
    torch.testing.assert_close(
        penalty.mean().detach(), torch.tensor(_penalty_numpy(w0, *args), dtype=torch.float64)
    )
    # The formulation with a detached mean (what this project did before) misses about decay of it.
    detached = (lengths - new_mean.detach()).square().mean()
    (grad_detached,) = torch.autograd.grad(detached, weight)
    assert _rel(grad_detached, fd) > 1e-3


def test_greg_phase_gradient_includes_the_running_mean_term():
    G, D = _nets()
    G.requires_grad_(True)
    loss = StyleGAN2Loss(torch.device('cpu'), G, D, style_mixing_prob=0, pl_weight=2, pl_decay=0.01)
    loss.pl_mean = torch.tensor(0.05)
    n, gain = 4, 4
    z, c = torch.randn(2 * n, G.z_dim), torch.zeros(2 * n, 0)
    params = [p for p in G.parameters()]
    torch.manual_seed(11)
    loss.accumulate_gradients('Greg', torch.zeros(2 * n, 3, 16, 16), c, z, c, gain=gain, cur_nimg=0)
    got = _flat([p.grad for p in params], params)

    # Independent formulation: d/dtheta mean_i (l_i - a)^2 with a = lerp(pl_mean, mean l, d) is
    # mean_i 2 (l_i - a) dl_i - 2 d mean_i(l_i - a) d(mean l).
    for p in params:
        p.grad = None
    torch.manual_seed(11)
    ws = G.mapping(z[:n], c[:n])
    img = G.synthesis(ws)
    y = torch.randn_like(img) / 16  # N(0, I) / sqrt(H W)
    (jty,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
    lengths = jty.square().sum(2).mean(1).sqrt()
    a = 0.05 + 0.01 * (lengths.mean().detach() - 0.05)
    direct = torch.autograd.grad((lengths - a).square().mean(), params, retain_graph=True, allow_unused=True)
    through_mean = torch.autograd.grad(lengths.mean(), params, allow_unused=True)
    scale = gain * 2.0
    direct = _flat(direct, params) * scale
    through_mean = _flat(through_mean, params) * scale
    want = direct - 2 * 0.01 * (lengths - a).mean().item() * through_mean
    assert _rel(got, want) < 1e-5
    assert _rel(direct, want) > 1e-3  # the term matters at this scale: the test can tell the two apart
    assert loss.pl_mean.grad_fn is None and float(loss.pl_mean) == float(a)


# ---------------------------------------------------------------- D phases and the ADA signal


def _d_setup(r1_gamma=1.0):
    G, D = _nets()
    D.requires_grad_(True)
    loss = StyleGAN2Loss(torch.device('cpu'), G, D, r1_gamma=r1_gamma, style_mixing_prob=0)
    return G, D, loss


def test_every_d_phase_reports_the_real_signs_for_ada():
    # Four steps with a lazy R1 step at step 0 (D_reg_interval 16): 4 Dmain + 1 Dreg passes over the reals.
    G, D, loss = _d_setup()
    n, c = 8, torch.zeros(8, 0)
    reals = [torch.rand(n, 3, 16, 16) * 2 - 1 for _ in range(4)]
    collector = training_stats.Collector(['Loss/signs/real'])
    try:
        for step, real in enumerate(reals):
            loss.accumulate_gradients('Dmain', real, c, torch.randn(n, G.z_dim), c, gain=1, cur_nimg=0)
            if step % 16 == 0:
                loss.accumulate_gradients('Dreg', real, c, torch.randn(n, G.z_dim), c, gain=16, cur_nimg=0)
        stats = collector.collect()
    finally:
        collector.close()
    with torch.no_grad():  # D is deterministic and was not stepped: both passes saw these logits
        signs = [D(real, c).sign() for real in reals]
    want = torch.cat(signs + signs[:1])
    assert stats['Loss/signs/real']['num'] == 40
    assert abs(stats['Loss/signs/real']['mean'] - float(want.mean())) < 1e-12
    ada = AdaptiveP(batch_size=n)
    ada.absorb(stats)
    assert ada.count == 40 and abs(ada.sign_sum - float(want.sum())) < 1e-9


def test_dreg_without_r1_scores_nothing():
    G, D, loss = _d_setup(r1_gamma=0)
    collector = training_stats.Collector()
    try:
        c = torch.zeros(4, 0)
        loss.accumulate_gradients('Dreg', torch.zeros(4, 3, 16, 16), c, torch.randn(4, G.z_dim), c, 16, 0)
        assert collector.collect() == {}
    finally:
        collector.close()
    assert all(p.grad is None for p in D.parameters())


def test_dboth_scores_the_reals_once_and_equals_dmain_plus_dreg():
    G, D, loss = _d_setup()
    calls = []
    D.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    n, c = 4, torch.zeros(4, 0)
    real, z = torch.rand(n, 3, 16, 16) * 2 - 1, torch.randn(n, G.z_dim)
    collector = training_stats.Collector()
    try:
        torch.manual_seed(5)
        loss.accumulate_gradients('Dboth', real, c, z, c, gain=1, cur_nimg=0)
        stats = collector.collect()
    finally:
        collector.close()
    assert calls == [n, n]  # fakes, reals: one pass over the reals serves the main loss and R1
    assert stats['Loss/signs/real']['num'] == n and stats['Loss/signs/fake']['num'] == n
    assert stats['Loss/D/loss']['num'] == n and stats['Loss/r1_penalty']['num'] == n
    both = [p.grad.clone() for p in D.parameters()]
    for p in D.parameters():
        p.grad = None
    torch.manual_seed(5)
    loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=0)
    loss.accumulate_gradients('Dreg', real, c, z, c, gain=1, cur_nimg=0)
    for g_both, p in zip(both, D.parameters()):
        torch.testing.assert_close(g_both, p.grad, atol=1e-6, rtol=1e-5)
    assert len(calls) == 5
