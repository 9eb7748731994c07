"""Networks: shapes, dtypes, gradients (first and second order), options and the D feature hook."""

import copy

import pytest
import torch
from conftest import TINY_D, TINY_G

from stylegan2_ada_kd.networks import Discriminator, Generator


def _g(**over):
    kw = copy.deepcopy(TINY_G)
    for key, val in over.items():
        if key in ('mapping_kwargs', 'synthesis_kwargs'):
            kw[key].update(val)
        else:
            kw[key] = val
    return Generator(**kw)


def _d(**over):
    kw = copy.deepcopy(TINY_D)
    kw.update(over)
    return Discriminator(**kw)


def _labels(n, c_dim):
    return torch.nn.functional.one_hot(torch.arange(n) % max(c_dim, 1), max(c_dim, 1)).float()[:, :c_dim]


def _randomise_noise_strength(G):
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith('noise_strength'):
                p.fill_(0.3)


@pytest.mark.parametrize('arch', ['orig', 'skip', 'resnet'])
@pytest.mark.parametrize('c_dim', [0, 3])
def test_generator_shapes(arch, c_dim):
    G = _g(c_dim=c_dim, synthesis_kwargs=dict(architecture=arch))
    assert G.num_ws == 2 * 4 - 2  # 2 * log2(16) - 2
    z = torch.randn(4, G.z_dim)
    img = G(z, _labels(4, c_dim))
    assert img.shape == (4, 3, 16, 16) and img.dtype == torch.float32
    assert torch.isfinite(img).all()
    ws = G.mapping(z, _labels(4, c_dim))
    assert ws.shape == (4, G.num_ws, G.w_dim)


@pytest.mark.parametrize('arch', ['orig', 'skip', 'resnet'])
@pytest.mark.parametrize('c_dim', [0, 3])
def test_discriminator_shapes(arch, c_dim):
    D = _d(c_dim=c_dim, architecture=arch)
    logits = D(torch.randn(4, 3, 16, 16), _labels(4, c_dim))
    assert logits.shape == (4, 1) and logits.dtype == torch.float32


def test_fp16_blocks_run_and_match_fp32(monkeypatch):
    from stylegan2_ada_kd.networks import layers

    monkeypatch.setattr(layers, 'FP16_ON_CPU', True)
    G = _g(synthesis_kwargs=dict(num_fp16_res=2, conv_clamp=256)).eval()
    D = _d(num_fp16_res=2, conv_clamp=256).eval()
    assert G.synthesis.b16.use_fp16 and G.synthesis.b8.use_fp16 and not G.synthesis.b4.use_fp16
    z = torch.randn(4, G.z_dim)
    with torch.no_grad():
        img16, img32 = G(z, None, noise_mode='const'), G(z, None, noise_mode='const', force_fp32=True)
        assert G.synthesis.b16.conv1.weight.dtype == torch.float32  # parameters stay fp32
        assert img16.dtype == torch.float32
        assert (img16 - img32).abs().max() <= 5e-3 * max(1.0, img32.abs().max().item())
        l16, l32 = D(img32, None), D(img32, None, force_fp32=True)
        assert (l16 - l32).abs().max() <= 5e-3 * max(1.0, l32.abs().max().item())


def test_fused_and_nonfused_modconv_agree():
    G = _g()
    _randomise_noise_strength(G)
    z = torch.randn(3, G.z_dim)
    with torch.no_grad():
        a = G(z, None, noise_mode='const', fused_modconv=True)
        b = G(z, None, noise_mode='const', fused_modconv=False)
    assert (a - b).abs().max() < 1e-5


def test_every_parameter_gets_a_gradient():
    G, D = _g(c_dim=3), _d(c_dim=3)
    c = _labels(4, 3)
    loss = D(G(torch.randn(4, G.z_dim), c), c).sum()
    loss.backward()
    for net in (G, D):
        missing = [n for n, p in net.named_parameters() if p.grad is None]
        assert not missing, missing


def test_r1_second_order_gradient_through_D():
    D = _d(c_dim=0)
    img = torch.randn(4, 3, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(D(img, None).sum(), img, create_graph=True)
    penalty = grad.square().sum(dim=[1, 2, 3]).mean()
    penalty.backward()
    # The logit's own bias has no effect on d(logit)/d(img); everything else must get a gradient.
    missing = [n for n, p in D.named_parameters() if p.grad is None and n != 'b4.out.bias']
    assert not missing, missing
    assert D.b16.conv0.weight.grad.abs().sum() > 0


def test_path_length_second_order_gradient_through_G():
    G = _g().train()
    ws = G.mapping(torch.randn(4, G.z_dim), None)
    img = G.synthesis(ws, noise_mode='const')
    y = torch.randn_like(img) / 4
    (grad,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
    lengths.mean().backward()
    assert G.synthesis.b16.conv1.weight.grad.abs().sum() > 0
    assert G.mapping.fc0.weight.grad.abs().sum() > 0


def test_truncation_and_cutoff():
    G = _g().eval()
    G.mapping.w_avg.copy_(torch.randn(G.w_dim))
    z = torch.randn(2, G.z_dim)
    ws = G.mapping(z, None)
    full = G.mapping(z, None, truncation_psi=0.5)
    torch.testing.assert_close(full, G.mapping.w_avg + 0.5 * (ws - G.mapping.w_avg))
    cut = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], full[:, :2])
    torch.testing.assert_close(cut[:, 2:], ws[:, 2:])


def test_w_avg_tracking():
    G = _g().train()
    z = torch.randn(8, G.z_dim)
    G.mapping(z, None, skip_w_avg_update=True)
    assert G.mapping.w_avg.abs().sum() == 0
    w = G.mapping(z, None)[:, 0]
    torch.testing.assert_close(G.mapping.w_avg, w.detach().mean(0) * (1 - 0.995))
    G.eval()
    before = G.mapping.w_avg.clone()
    G.mapping(z, None)
    assert torch.equal(before, G.mapping.w_avg)


def test_noise_modes():
    G = _g().eval()
    _randomise_noise_strength(G)
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        assert torch.equal(G(z, None, noise_mode='const'), G(z, None, noise_mode='const'))
        assert not torch.equal(G(z, None, noise_mode='random'), G(z, None, noise_mode='random'))
        assert not torch.equal(G(z, None, noise_mode='none'), G(z, None, noise_mode='const'))
        with pytest.raises(ValueError, match='noise_mode'):
            G(z, None, noise_mode='fixed')


def test_freeze_layers_makes_buffers():
    D = _d(block_kwargs=dict(freeze_layers=2))
    params = dict(D.named_parameters())
    buffers = dict(D.named_buffers())
    assert 'b16.fromrgb.weight' in buffers and 'b16.conv0.weight' in buffers
    assert 'b16.conv1.weight' in params and 'b16.skip.weight' in params
    assert set(D.state_dict()) == set(_d().state_dict())


def test_feature_hook_and_heads():
    D = _d().eval()
    img = torch.randn(4, 3, 16, 16)
    keys = set(D.state_dict())
    assert not any(k.startswith('heads') for k in keys)
    logits, feats = D(img, None, return_features=True)
    assert feats['fc'].shape == (4, D.feature_dim)
    D.attach_head('probe', torch.nn.Linear(D.feature_dim, 5))
    logits2, feats2 = D(img, None, return_features=True)
    torch.testing.assert_close(logits, logits2)
    assert feats2['probe'].shape == (4, 5)
    assert 'heads.probe.weight' in D.state_dict()
    with pytest.raises(ValueError, match='already attached'):
        D.attach_head('probe', torch.nn.Identity())


def test_minibatch_std_group_error():
    D = _d(epilogue_kwargs=dict(mbstd_group_size=4))
    with pytest.raises(ValueError, match='mbstd_group_size'):
        D(torch.randn(6, 3, 16, 16), None)


def test_state_dict_round_trip_and_init_kwargs():
    for net in (_g(c_dim=2), _d(c_dim=2)):
        clone = type(net)(**net.init_kwargs)
        clone.load_state_dict(net.state_dict(), strict=True)
        for key, val in net.state_dict().items():
            assert torch.equal(val, clone.state_dict()[key]), key


def test_bad_arguments_are_readable():
    with pytest.raises(ValueError, match='power of two'):
        _g(img_resolution=24)
    with pytest.raises(ValueError, match='architecture'):
        _d(architecture='dense')
    with pytest.raises(ValueError, match='expected shape'):
        _g()(torch.randn(2, 5), None)
