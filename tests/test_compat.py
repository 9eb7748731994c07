"""Compatibility with the reference implementation: state_dict entries and numeric vectors.

The data-driven tests read ../shared/compat and skip without it; the structural test at the end
always runs.
"""

import json

import pytest
import torch
from conftest import require_compat

from stylegan2_ada_kd.networks import Discriminator, Generator


def _parse_keys(path):
    header, entries = {}, {}
    for line in path.read_text().splitlines():
        if line.startswith('# G_init_kwargs') or line.startswith('# D_init_kwargs'):
            name, value = line[2:].split('=', 1)
            header[name.strip()] = json.loads(value)
        elif line and not line.startswith('#'):
            net, key, shape, dtype, kind = line.split()
            entries[(net, key)] = (json.loads(shape), dtype, kind)
    return header, entries


def _our_entries(nets):
    out = {}
    for net_name, net in nets.items():
        params = dict(net.named_parameters())
        for key, val in net.state_dict().items():
            kind = 'param' if key in params else 'buffer'
            out[(net_name, key)] = (list(val.shape), str(val.dtype).replace('torch.', ''), kind)
    return out


@pytest.mark.parametrize('name', ['cifar32', 'paper256', 'stylegan2-1024'])
def test_state_dict_entries_match_reference(name):
    header, ref = _parse_keys(require_compat(f'{name}.keys.txt'))
    nets = dict(G=Generator(**header['G_init_kwargs']), D=Discriminator(**header['D_init_kwargs']))
    ours = _our_entries(nets)
    assert set(ours) == set(ref), sorted(set(ours) ^ set(ref))[:10]
    diff = {k: (ours[k], ref[k]) for k in ref if ours[k] != ref[k]}
    assert not diff, list(diff.items())[:5]


@pytest.mark.parametrize('case', ['tiny32cond', 'tiny64'])
def test_reference_vectors(case):
    data = torch.load(require_compat(f'vectors_{case}.pt'), weights_only=True)
    nets = dict(G=Generator(**data['G_init_kwargs']), D=Discriminator(**data['D_init_kwargs']))
    nets['G'].load_state_dict(data['G_state_dict'], strict=True)
    nets['D'].load_state_dict(data['D_state_dict'], strict=True)
    for check in data['checks']:
        net = nets[check['net']].train(check['mode'] == 'train')
        fn = {'mapping': getattr(net, 'mapping', None), 'synthesis': getattr(net, 'synthesis', None)}.get(
            check['call'], net
        )
        with torch.no_grad():
            out = fn(*[data[k].clone() for k in check['inputs']], **check['kwargs'])
        ref = data[check['expected']]
        err = (out - ref).abs().max().item()
        assert err <= check['tol'] * max(1.0, ref.abs().max().item()), (check['name'], err)


@pytest.mark.parametrize('case', ['tiny32cond', 'tiny64'])
def test_reference_vectors_train_mode_paths(case):
    """The non-fused (training) modulated-conv path reproduces the eval-mode reference images."""
    data = torch.load(require_compat(f'vectors_{case}.pt'), weights_only=True)
    G = Generator(**data['G_init_kwargs'])
    G.load_state_dict(data['G_state_dict'], strict=True)
    with torch.no_grad():
        img = G.synthesis(data['ws'], noise_mode='const', fused_modconv=False)
    assert (img - data['img']).abs().max() <= 1e-4 * max(1.0, data['img'].abs().max().item())


def test_reference_architecture_facts_self_contained():
    """Always runs: parameter counts and num_ws of the paper256 preset (numbers from the reference)."""
    G = Generator(
        z_dim=512, w_dim=512, c_dim=0, img_resolution=256, img_channels=3,
        mapping_kwargs=dict(num_layers=8),
        synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256),
    )  # fmt: skip
    D = Discriminator(
        c_dim=0, img_resolution=256, img_channels=3, channel_base=16384, channel_max=512, num_fp16_res=4,
        conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=8),
    )  # fmt: skip
    assert G.num_ws == 14
    assert sum(p.numel() for p in G.parameters()) == 24767458
    assert sum(p.numel() for p in D.parameters()) == 24001089
    assert G.synthesis.b256.conv0.weight.shape == (64, 128, 3, 3)
    assert D.b256.skip.weight.shape == (128, 64, 1, 1)
    assert [r for r in G.synthesis.block_resolutions if G.synthesis.__getattr__(f'b{r}').use_fp16] == [
        32,
        64,
        128,
        256,
    ]
