"""KD-DLGAN terms on hand-made tensors, and gradient routing through D, its head, G and the teacher."""

import pytest
import torch
import torch.nn.functional as F

from stylegan2_ada_kd.kd.loss import (
    agkd_official,
    agkd_paper,
    cgkd_official,
    cgkd_paper,
    correlation,
    pairwise_diversity,
)
from stylegan2_ada_kd.training.loss import lecam_penalty


def _unit(n=4, e=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, e, generator=g), dim=1)


def test_agkd_zero_when_student_equals_teacher():
    t_r, t_f = _unit(seed=1), _unit(seed=2)
    assert agkd_paper(t_r, t_f, t_r, t_f, cross=False).abs().max() == 0
    # the cross terms are not zero: real and fake embeddings differ
    assert agkd_paper(t_r, t_f, t_r, t_f, cross=True).min() > 0


def test_agkd_paper_formula_and_cross_term():
    s_r, s_f, t_r, t_f = (_unit(seed=i) for i in range(4))
    base = (s_r - t_r).abs().sum(1) + (s_f - t_f).abs().sum(1)
    torch.testing.assert_close(agkd_paper(s_r, s_f, t_r, t_f, cross=False), base)
    cross = (s_r - t_f).abs().sum(1) + (s_f - t_r).abs().sum(1)
    torch.testing.assert_close(agkd_paper(s_r, s_f, t_r, t_f, cross=True), base + cross)


def test_agkd_official_formula():
    h_r, h_f, t_r, t_f = (torch.randn(3, 5) for _ in range(4))
    expect = (
        (h_r - t_r).norm(dim=1) + (h_f - t_f).norm(dim=1) + (h_r - t_f).norm(dim=1) + (h_f - t_r).norm(dim=1)
    )
    torch.testing.assert_close(agkd_official(h_r, h_f, t_r, t_f), expect)


def test_cgkd_zero_when_equal_and_scale_invariant():
    anchors = F.normalize(torch.randn(5, 6), dim=1)
    s_r, s_f, t_r, t_f = (_unit(seed=i) for i in range(4))
    assert cgkd_paper(t_r, t_f, t_r, t_f, anchors).abs().max() < 1e-6
    torch.testing.assert_close(
        cgkd_paper(3.0 * s_r, 0.5 * s_f, t_r, t_f, anchors), cgkd_paper(s_r, s_f, t_r, t_f, anchors)
    )
    expect = (correlation(s_r, anchors) - correlation(t_r, anchors)).abs().sum(1) + (
        correlation(s_f, anchors) - correlation(t_f, anchors)
    ).abs().sum(1)
    torch.testing.assert_close(cgkd_paper(s_r, s_f, t_r, t_f, anchors), expect)


def test_cgkd_official_formula():
    anchors = torch.randn(4, 6)
    h_r, h_f, t_r, t_f = (torch.randn(3, 6) for _ in range(4))
    c = lambda u: F.normalize(u @ anchors.t(), dim=1)
    expect = (c(h_r) - c(t_r)).square().sum(1) + (c(h_f) - c(t_f)).square().sum(1)
    torch.testing.assert_close(cgkd_official(h_r, h_f, t_r, t_f, anchors), expect)


def test_correlation_rows_are_unit_norm():
    rows = correlation(torch.randn(3, 6), torch.randn(4, 6))
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(3))


def test_pairwise_diversity():
    same = torch.ones(4, 3)
    assert pairwise_diversity(same).item() == pytest.approx(1.0)
    orth = torch.eye(3)
    assert pairwise_diversity(orth).item() == pytest.approx(0.0)
    assert pairwise_diversity(torch.ones(1, 3)).item() == 0


def test_lecam_penalty():
    real, fake = torch.tensor([[1.0], [2.0]]), torch.tensor([[-1.0], [0.0]])
    expect = (real - (-0.5)).square().squeeze(1) + (fake - 1.5).square().squeeze(1)
    torch.testing.assert_close(lecam_penalty(real, fake, torch.tensor(1.5), torch.tensor(-0.5)), expect)
