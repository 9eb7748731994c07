"""CGKD with an image-only teacher correlates in centred space (kd/anchors.py, kd/loss.py): k-means runs on
the directions of the embeddings minus their mean mu, mu is cached with the anchors and used on the student
and the teacher side alike; Loss/kd/cgkd_row_spread is the documented statistic; caches of the uncentred
form are recomputed with a log line; the CLIP path (prompt anchors) keeps the paper's C(u) = n(u A^T)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import IMAGE_FOLDER, TINY_CLIP_SPEC, TINY_D, TINY_G, TinyImageEncoder, make_image_folder

from stylegan2_ada_kd.data.dataset import ImageFolderDataset
from stylegan2_ada_kd.kd import anchors as anchors_mod
from stylegan2_ada_kd.kd.anchors import ANCHOR_FORM, centred_anchors, kmeans, real_image_anchors
from stylegan2_ada_kd.kd.loss import KDLoss, cgkd_official, cgkd_paper, correlation, row_spread
from stylegan2_ada_kd.kd.teacher import load_teacher
from stylegan2_ada_kd.networks import Discriminator, Generator
from stylegan2_ada_kd.training.loss import DOutput
from torch_utils import training_stats

PROMPTS = ['a cat', 'a dog', 'a car']


@pytest.fixture
def image_teacher(tmp_path):
    """``(spec, dataset kwargs)``: a scripted TinyImageEncoder and a folder of 10 generated images."""
    path = tmp_path / 'encoder.pt'
    torch.jit.script(TinyImageEncoder()).save(str(path))
    folder = make_image_folder(tmp_path / 'images', n=10)
    return f'torchscript:{path}', dict(class_name=IMAGE_FOLDER, path=folder)


def _kd_loss(**kw):
    G = Generator(**copy.deepcopy(TINY_G)).train().requires_grad_(False)
    D = Discriminator(**copy.deepcopy(TINY_D)).train().requires_grad_(False)
    return KDLoss(torch.device('cpu'), G, D, r1_gamma=0, **kw)


def _common_component_cloud(m=60, e=8, seed=0):
    """Embeddings ``[m, e]`` like one dataset's: a large shared direction plus three small clusters."""
    gen = torch.Generator().manual_seed(seed)
    shared = 5 * torch.ones(e)
    offsets = torch.randn(3, e, generator=gen)
    return shared + offsets.repeat(m // 3, 1) + 0.05 * torch.randn(m, e, generator=gen)


def _mean_pairwise_cosine(a):
    a = F.normalize(a, dim=1)
    k = a.shape[0]
    return float(((a @ a.t()).sum() - k) / (k * (k - 1)))


def test_centred_anchors_are_kmeans_of_the_centred_directions():
    emb = _common_component_cloud()
    found = centred_anchors(emb, 3, seed=1)
    unit = F.normalize(emb, dim=1)
    torch.testing.assert_close(found.center, unit.mean(0))
    want = F.normalize(kmeans(F.normalize(unit - unit.mean(0), dim=1), 3, seed=1), dim=1)
    torch.testing.assert_close(found.anchors, want)
    uncentred = F.normalize(kmeans(unit, 3, seed=1), dim=1)
    assert _mean_pairwise_cosine(uncentred) > 0.9  # every prototype points along the shared direction
    assert _mean_pairwise_cosine(found.anchors) < 0  # centred: directions of variation
    # The rows of the uncentred form are nearly the same for every image; the centred ones are not.
    assert row_spread(correlation(emb, uncentred)) < 0.05
    assert row_spread(correlation(emb, found.anchors, found.center)) > 0.3


def test_real_image_anchors_embed_the_reals_and_cache_the_mean(image_teacher, tmp_path):
    spec, data = image_teacher
    teacher, dataset = load_teacher(spec), ImageFolderDataset(data['path'])
    cache = str(tmp_path / 'kd_anchors.pt')
    found = real_image_anchors(teacher, dataset, 3, cache, batch=4, seed=2)
    reals = torch.stack([torch.from_numpy(dataset[i][0]) for i in range(len(dataset))]).float() / 127.5 - 1
    with torch.no_grad():
        want = centred_anchors(teacher.encode_image(reals), 3, seed=2)
    torch.testing.assert_close(found.center, want.center)
    torch.testing.assert_close(found.anchors, want.anchors)
    stored = torch.load(cache, weights_only=True)
    assert stored['key']['form'] == ANCHOR_FORM
    assert torch.equal(stored['center'], found.center) and torch.equal(stored['anchors'], found.anchors)


def test_correlation_centres_the_unit_embedding_and_stays_scale_invariant():
    gen = torch.Generator().manual_seed(0)
    u, anchors, mu = (
        torch.randn(4, 6, generator=gen),
        torch.randn(3, 6, generator=gen),
        torch.randn(6, generator=gen),
    )
    want = F.normalize((F.normalize(u, dim=1) - mu) @ anchors.t(), dim=1)
    torch.testing.assert_close(correlation(u, anchors, mu), want)
    torch.testing.assert_close(correlation(7 * u, anchors, mu), want)
    torch.testing.assert_close(correlation(u, anchors), F.normalize(u @ anchors.t(), dim=1))  # paper form
    s_r, s_f = torch.randn(2, 4, 6, generator=gen)
    t_r, t_f = torch.randn(2, 4, 6, generator=gen)
    c = lambda x: correlation(x, anchors, mu)
    expect = (c(s_r) - c(t_r)).abs().sum(1) + (c(s_f) - c(t_f)).abs().sum(1)
    torch.testing.assert_close(cgkd_paper(s_r, s_f, t_r, t_f, anchors, mu), expect)
    expect = (c(s_r) - c(t_r)).square().sum(1) + (c(s_f) - c(t_f)).square().sum(1)
    torch.testing.assert_close(cgkd_official(s_r, s_f, t_r, t_f, anchors, mu), expect)
    assert float(cgkd_paper(t_r, t_f, 3 * t_r, t_f, anchors, mu).abs().max()) < 1e-5  # s = t: no loss


def test_row_spread_is_the_mean_over_anchors_of_the_std_across_images():
    corr = torch.tensor([[0.0, 1.0], [0.6, 0.8], [0.8, -0.6]])
    col0 = torch.tensor([0.0, 0.6, 0.8])
    col1 = torch.tensor([1.0, 0.8, -0.6])
    std = lambda v: float((v - v.mean()).square().mean().sqrt())  # population std (divisor N)
    assert float(row_spread(corr)) == pytest.approx((std(col0) + std(col1)) / 2)
    assert float(row_spread(torch.tensor([[0.6, 0.8]] * 5))) == 0  # identical rows
    assert float(row_spread(corr[:1])) == 0  # one image


def _batches(loss, n=3):
    gen = torch.Generator().manual_seed(5)
    e = loss.teacher.embed_dim
    out = lambda: DOutput(
        torch.randn(n, 1, generator=gen),
        {'kd': torch.randn(n, e, generator=gen)},
        torch.rand(n, 3, 16, 16, generator=gen) * 2 - 1,
    )
    return out(), out()


def _reported(loss, real, fake, monkeypatch):
    """``{name: value}`` reported by one D step's KD terms, and the terms."""
    got = {}
    monkeypatch.setattr(training_stats, 'report', lambda name, value: got.setdefault(name, value))
    terms = loss.kd_terms_of(real, fake, 1.0)
    monkeypatch.undo()
    return got, terms


def test_kd_loss_correlates_student_and_teacher_in_centred_space(image_teacher, monkeypatch):
    spec, data = image_teacher
    loss = _kd_loss(teacher=spec, anchor_dataset=data, num_anchors=3)
    assert loss.anchor_center is not None and loss.anchor_center.shape == (loss.teacher.embed_dim,)
    assert 'centred on their mean embedding' in loss.describe()
    real, fake = _batches(loss)
    got, terms = _reported(loss, real, fake, monkeypatch)
    with torch.no_grad():
        t_r, t_f = (F.normalize(loss.teacher.encode_image(x), dim=1) for x in (real.img, fake.img))
    s_r, s_f = (F.normalize(x.features['kd'], dim=1) for x in (real, fake))
    mu = loss.anchor_center
    torch.testing.assert_close(terms['cgkd'][0], cgkd_paper(s_r, s_f, t_r, t_f, loss.anchors, mu))
    torch.testing.assert_close(got['Loss/kd/cgkd'], terms['cgkd'][0])
    spread = row_spread(correlation(t_r, loss.anchors, mu))
    torch.testing.assert_close(got['Loss/kd/cgkd_row_spread'], spread)


def test_clip_path_keeps_the_paper_correlation(monkeypatch):
    loss = _kd_loss(teacher=TINY_CLIP_SPEC, prompts=PROMPTS)
    assert loss.anchor_center is None
    text = F.normalize(loss.teacher.encode_text(PROMPTS), dim=1)
    torch.testing.assert_close(loss.anchors, text)
    real, fake = _batches(loss)
    got, terms = _reported(loss, real, fake, monkeypatch)
    with torch.no_grad():
        t_r, t_f = (F.normalize(loss.teacher.encode_image(x), dim=1) for x in (real.img, fake.img))
    s_r, s_f = (F.normalize(x.features['kd'], dim=1) for x in (real, fake))
    paper_c = lambda u: F.normalize(u @ text.t(), dim=1)  # C(u) = n(u A^T), KD-DLGAN Sec. 3.3
    want = (paper_c(s_r) - paper_c(t_r)).abs().sum(1) + (paper_c(s_f) - paper_c(t_f)).abs().sum(1)
    torch.testing.assert_close(terms['cgkd'][0], want)
    torch.testing.assert_close(got['Loss/kd/cgkd_row_spread'], row_spread(paper_c(t_r)))


def test_an_uncentred_cache_is_recomputed_and_the_log_says_so(image_teacher, tmp_path, monkeypatch, capsys):
    spec, data = image_teacher
    teacher, dataset = load_teacher(spec), ImageFolderDataset(data['path'])
    cache = str(tmp_path / 'run' / 'kd_anchors.pt')
    (tmp_path / 'run').mkdir()
    # What an earlier version wrote: a tuple key, uncentred anchors, no mean embedding.
    old_key = (spec, None, 'paper', len(dataset), 3, 0, None)
    torch.save({'key': old_key, 'anchors': F.normalize(torch.randn(3, 12), dim=1)}, cache)
    calls = []
    monkeypatch.setattr(anchors_mod, 'kmeans', lambda *a, **k: calls.append(1) or kmeans(*a, **k))
    loss = _kd_loss(teacher=spec, anchor_dataset=data, num_anchors=3, anchor_cache=cache)
    log = capsys.readouterr().out
    assert calls == [1]
    assert f'KD anchors: not reusing {cache}' in log and 'uncentred anchors of an earlier version' in log
    assert 'recomputing' in log
    stored = torch.load(cache, weights_only=True)
    assert stored['key']['form'] == ANCHOR_FORM and torch.equal(stored['center'], loss.anchor_center)

    again = real_image_anchors(teacher, dataset, 3, cache)  # the new file is reused, silently
    assert calls == [1] and capsys.readouterr().out == ''
    torch.testing.assert_close(again.anchors, loss.anchors)  # KDLoss re-normalises A (paper variant)
    assert torch.equal(again.center, loss.anchor_center)

    real_image_anchors(teacher, dataset, 2, cache)  # another K: recomputed, and the log names the change
    assert calls == [1, 1] and 'k=3 (now 2)' in capsys.readouterr().out
