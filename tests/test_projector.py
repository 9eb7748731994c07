"""Tests for the projector: the optimisation core (stylegan2_ada_kd.projection) with a stand-in feature
network, and projector.py end to end with a stand-in vgg16.pt (TorchScript, NVIDIA's keyword interface).
Tiny networks and few steps; nothing is downloaded."""

import sys
import types

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_G
from test_generate import save_tiny_snapshot
from test_metrics_pipeline import KeywordNet

import generate  # The scripts at the repository root (conftest puts it on sys.path).
import projector
from metrics import detectors
from stylegan2_ada_kd import checkpoint, projection
from stylegan2_ada_kd.networks import Generator
from torch_utils import torchscript


def run(*args):
    return CliRunner().invoke(projector.cli, [str(a) for a in args], catch_exceptions=False)


def random_features():
    """Stand-in for VGG16: the pixels and a fixed random strided conv of them."""
    conv = torch.nn.Conv2d(3, 8, 3, stride=2, bias=False).requires_grad_(False)
    torch.nn.init.normal_(conv.weight, generator=torch.Generator().manual_seed(1))
    return lambda x: torch.cat([x.flatten(1), conv(x).flatten(1)], dim=1)


@pytest.fixture(scope='module')
def G():
    torch.manual_seed(0)
    return Generator(**TINY_G).eval()


@pytest.fixture(scope='module')
def vgg16_path(tmp_path_factory):
    path = tmp_path_factory.mktemp('vgg16') / 'vgg16.pt'
    with torchscript.quiet_jit():
        torch.jit.script(KeywordNet()).save(str(path))
    return path


@pytest.fixture
def snapshot(tmp_path):
    return save_tiny_snapshot(tmp_path / 'snap.pkl')


def test_projection_recovers_an_image_the_generator_made(G):
    z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ws_true = G.mapping(z, None)
        target = G.synthesis(ws_true, noise_mode='const')
    steps = list(projection.project(G, target, features=random_features(), num_steps=50, w_avg_samples=500))
    assert [s.step for s in steps] == list(range(50))
    first, last = steps[0], steps[-1]
    assert last.distance < 0.1 * first.distance
    assert last.ws.shape == (1, G.num_ws, G.w_dim) and last.ws.dtype == torch.float32
    assert torch.equal(last.ws, last.ws[:, :1].expand_as(last.ws))  # W: one w for every layer.
    with torch.no_grad():
        start, end = (G.synthesis(s.ws, noise_mode='const') for s in (first, last))
    assert (end - target).abs().mean() < 0.25 * (start - target).abs().mean()
    assert (last.ws - ws_true).norm() < 0.5 * (first.ws - ws_true).norm()


def test_w_plus_has_one_latent_per_layer_and_g_is_untouched(G):
    before = {k: v.clone() for k, v in G.state_dict().items()}
    target = torch.zeros([1, 3, 16, 16])
    steps = list(projection.project(G, target, features=random_features(), num_steps=3, space='w+'))
    ws = steps[-1].ws
    assert ws.shape == (1, G.num_ws, G.w_dim)
    assert not torch.equal(ws[:, 0], ws[:, -1])
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in before.items())  # The noise maps of a copy.
    with pytest.raises(ValueError, match='space'):
        next(projection.project(G, target, features=random_features(), space='z'))


def test_noise_regularization_and_renormalisation():
    gen = torch.Generator().manual_seed(0)
    white = [torch.randn([32, 32], generator=gen), torch.randn([4, 4], generator=gen)]
    smooth = [torch.linspace(-1, 1, 32).repeat(32, 1), torch.ones([4, 4])]
    assert projection.noise_regularization(white) < 0.05
    assert projection.noise_regularization(smooth) > 1
    noises = [n * 3 + 2 for n in white]
    projection.normalize_noise_(noises)
    for n in noises:
        assert abs(n.mean().item()) < 1e-5 and abs(n.square().mean().item() - 1) < 1e-4


def test_schedules():
    assert projection.learning_rate(0.0, 0.1) == 0
    assert projection.learning_rate(0.025, 0.1) == pytest.approx(0.05)
    assert projection.learning_rate(0.5, 0.1) == pytest.approx(0.1)
    assert projection.learning_rate(0.875, 0.1) == pytest.approx(0.05)
    assert projection.learning_rate(1.0, 0.1) == pytest.approx(0)
    assert projection.w_noise_scale(0.0, 2.0) == pytest.approx(0.1)
    assert projection.w_noise_scale(0.375, 2.0) == pytest.approx(0.025)
    assert projection.w_noise_scale(0.8, 2.0) == 0


def test_vgg16_lpips_features_match_the_metric_and_pass_gradients(vgg16_path):
    vgg = detectors.load_detector(detectors.VGG16, path=vgg16_path)
    features = projection.vgg16_lpips_features(vgg.module)
    images = torch.rand([2, 3, 8, 8]) * 2 - 1
    assert torch.allclose(features(images), vgg.lpips((images + 1) * 127.5))  # As PPL computes LPIPS.
    for channels in (1, 3, 4):
        images = torch.rand([2, channels, 8, 8], requires_grad=True)
        feats = features(images * 2 - 1)
        assert feats.shape == (2, 48)
        feats.square().sum().backward()
        assert images.grad[:, :3].abs().sum() > 0


def save_target(path, mode, size=(24, 16)):
    rng = np.random.default_rng(0)
    channels = {'L': 1, 'RGB': 3, 'RGBA': 4}[mode]
    PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], channels), np.uint8).squeeze(), mode).save(
        path
    )
    return path


def test_cli_end_to_end_and_generate_round_trip(tmp_path, snapshot, vgg16_path):
    target = save_target(tmp_path / 'target.jpg', 'RGB')
    out = tmp_path / 'out'
    args = ['--network', snapshot, '--target', target, '--vgg16', vgg16_path, '--num-steps', 8]
    result = run(*args, '--w-avg-samples', 100, '--pixel-weight', 1, '--outdir', out, '--device', 'cpu')
    assert result.exit_code == 0, result.output
    assert 'Distance' in result.output and 'after 8 steps in W' in result.output
    assert sorted(p.name for p in out.iterdir()) == ['proj.png', 'projected_w.npz', 'target.png']
    assert PIL.Image.open(out / 'target.png').size == (16, 16)
    with np.load(out / 'projected_w.npz') as data:
        assert data.files == ['w'] and data['w'].dtype == np.float32
    G = checkpoint.load_network_pkl(snapshot)['G_ema']
    assert generate.load_projected_w(out / 'projected_w.npz', G, torch.device('cpu')).shape == (
        1,
        G.num_ws,
        8,
    )
    npz = out / 'projected_w.npz'
    args = ['--network', snapshot, '--projected-w', npz, '--outdir', tmp_path / 'gen']
    assert CliRunner().invoke(generate.cli, [str(a) for a in args]).exit_code == 0
    rendered = np.asarray(PIL.Image.open(tmp_path / 'gen' / 'proj00.png'))
    assert np.array_equal(rendered, np.asarray(PIL.Image.open(out / 'proj.png')))


@pytest.mark.parametrize('channels,mode', [(1, 'RGBA'), (3, 'L'), (3, 'RGBA')])
def test_cli_converts_targets_to_the_network_channels(tmp_path, vgg16_path, channels, mode):
    snap = save_tiny_snapshot(tmp_path / 'snap.pkl', img_channels=channels)
    target = save_target(tmp_path / 'target.png', mode, size=(16, 40))
    args = ['--network', snap, '--target', target, '--vgg16', vgg16_path, '--num-steps', 2, '--space', 'w+']
    result = run(*args, '--w-avg-samples', 10, '--outdir', tmp_path / 'out')
    assert result.exit_code == 0, result.output
    img = PIL.Image.open(tmp_path / 'out' / 'target.png')
    assert img.mode == {1: 'L', 3: 'RGB'}[channels] and img.size == (16, 16)
    with np.load(tmp_path / 'out' / 'projected_w.npz') as data:
        assert data['w'].shape == (1, 6, 8)


def test_cli_class_errors_come_before_any_output(tmp_path, vgg16_path):
    target = save_target(tmp_path / 'target.png', 'RGB')
    common = ['--target', target, '--vgg16', vgg16_path, '--num-steps', 1, '--outdir', tmp_path / 'out']
    conditional = save_tiny_snapshot(tmp_path / 'cond.pkl', c_dim=3)
    result = run('--network', conditional, *common)
    assert result.exit_code == 2 and '--class' in result.output and 'conditional' in result.output
    result = run('--network', save_tiny_snapshot(tmp_path / 'uncond.pkl'), *common, '--class', 1)
    assert result.exit_code == 2 and '--class=1' in result.output and 'unconditional' in result.output
    assert not (tmp_path / 'out').exists()
    result = run('--network', conditional, *common, '--class', 2, '--w-avg-samples', 10)
    assert result.exit_code == 0, result.output


def test_cli_bad_inputs_name_the_option(tmp_path, snapshot, vgg16_path, monkeypatch):
    target = save_target(tmp_path / 'target.png', 'RGB')
    out = tmp_path / 'out'
    common = ['--network', snapshot, '--outdir', out]
    result = run(*common, '--target', tmp_path / 'missing.png')
    assert result.exit_code == 2 and '--target' in result.output
    (tmp_path / 'text.png').write_text('not an image')
    result = run(*common, '--target', tmp_path / 'text.png')
    assert result.exit_code == 2 and '--target' in result.output and 'text.png' in result.output
    for option, value in [('--space', 'z'), ('--num-steps', 0), ('--lr', 0), ('--noise-weight', -1)]:
        result = run(*common, '--target', target, option, value)
        assert result.exit_code == 2 and option in result.output
    monkeypatch.setitem(sys.modules, 'imageio', None)  # `import imageio` now raises ImportError
    result = run(*common, '--target', target, '--save-video')
    assert result.exit_code == 2 and '--save-video' in result.output and '[video]' in result.output
    open_url = detectors.dnnlib.util.open_url

    def offline(url, *args, **kwargs):
        if str(url).startswith('https://'):
            raise OSError('network is unreachable')
        return open_url(url, *args, **kwargs)

    monkeypatch.setattr(detectors.dnnlib.util, 'open_url', offline)
    detectors.clear_cache()
    result = run(*common, '--target', target)
    assert result.exit_code == 1 and detectors.VGG16_URL in result.output and '--vgg16=PATH' in result.output
    assert not out.exists()


class FakeVideoWriter:
    """Stands in for imageio's mp4 writer: ``get_writer(path, **options)`` returns it; it keeps the frames."""

    def __init__(self):
        self.frames, self.closed, self.path = [], False, None

    def get_writer(self, path, **options):
        self.path = path
        return self

    def append_data(self, frame):
        self.frames.append(frame)

    def close(self):
        self.closed = True


def test_save_video_writes_target_beside_every_step(tmp_path, snapshot, vgg16_path, monkeypatch):
    video = FakeVideoWriter()
    monkeypatch.setitem(sys.modules, 'imageio', types.SimpleNamespace(v2=video))
    monkeypatch.setitem(sys.modules, 'imageio.v2', video)
    monkeypatch.setitem(sys.modules, 'imageio_ffmpeg', types.SimpleNamespace())
    monkeypatch.setitem(sys.modules, 'tqdm', None)  # The plain progress lines instead of a bar.
    target = save_target(tmp_path / 'target.png', 'RGB')
    args = ['--network', snapshot, '--target', target, '--vgg16', vgg16_path, '--num-steps', 4]
    result = run(*args, '--w-avg-samples', 10, '--save-video', '--outdir', tmp_path / 'out')
    assert result.exit_code == 0, result.output
    assert 'step 4/4: distance' in result.output
    assert video.path == tmp_path / 'out' / 'proj.mp4' and video.closed and len(video.frames) == 4
    assert video.frames[0].shape == (16, 32, 3) and video.frames[0].dtype == np.uint8
    assert np.array_equal(
        video.frames[0][:, :16], np.asarray(PIL.Image.open(tmp_path / 'out' / 'target.png'))
    )
