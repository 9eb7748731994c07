"""Every post-training tool takes an official StyleGAN2-ADA pickle as it takes our snapshots: generate.py,
style_mixing.py, interpolate.py and projector.py render the official G_ema (read by the restricted
unpickler, no code run) exactly as they render the same network converted to our snapshot format."""

import pickle
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from test_legacy import fake_persistence, official_snapshot, tiny_nets  # noqa: F401 (fixture)
from test_metrics_pipeline import KeywordNet

import generate
import interpolate
import projector
import style_mixing
from stylegan2_ada_kd import checkpoint
from torch_utils import torchscript


@pytest.fixture
def pickles(tmp_path, fake_persistence, monkeypatch):  # noqa: F811 (the imported fixture)
    """``(official pickle, the same networks as our snapshot)`` of a tiny unconditional network."""
    marker = tmp_path / 'MARKER'
    official = tmp_path / 'official.pkl'
    official.write_bytes(pickle.dumps(official_snapshot(fake_persistence, marker, tiny_nets(seed=7))))
    monkeypatch.delitem(sys.modules, 'torch_utils.persistence')  # the tools must not need it
    ours = tmp_path / 'ours.pkl'
    checkpoint.convert_network_pkl(official, dest=ours)
    yield official, ours
    assert not marker.exists()  # the pickle's code never ran


def _run(cli, network, outdir, *args):
    result = CliRunner().invoke(cli, [f'--network={network}', f'--outdir={outdir}', *map(str, args)])
    assert result.exit_code == 0, result.output
    return sorted(p for p in outdir.rglob('*') if p.is_file())


def _pixels(path):
    return np.asarray(PIL.Image.open(path))


TOOLS = {
    'generate': (generate.cli, ['--seeds=0-1', '--trunc=0.7']),
    'style_mixing': (style_mixing.cli, ['--rows=0,1', '--cols=2', '--styles=0-1']),
    'interpolate': (interpolate.cli, ['--points=0,1', '--frames-per-step=2']),
}


@pytest.mark.parametrize('tool', sorted(TOOLS))
def test_tool_renders_an_official_pickle_as_its_snapshot(pickles, tmp_path, tool):
    cli, args = TOOLS[tool]
    official, ours = pickles
    from_official = _run(cli, official, tmp_path / 'a', *args)
    from_ours = _run(cli, ours, tmp_path / 'b', *args)
    assert [p.relative_to(tmp_path / 'a') for p in from_official if p.suffix == '.png']
    assert [p.relative_to(tmp_path / 'a') for p in from_official] == [
        p.relative_to(tmp_path / 'b') for p in from_ours
    ]
    for a, b in zip(from_official, from_ours):
        if a.suffix == '.png':
            assert np.array_equal(_pixels(a), _pixels(b)), a.name


def test_projector_on_an_official_pickle(pickles, tmp_path):
    official, ours = pickles
    vgg16 = tmp_path / 'vgg16.pt'
    with torchscript.quiet_jit():
        torch.jit.script(KeywordNet()).save(str(vgg16))
    target = tmp_path / 'target.png'
    PIL.Image.fromarray(np.random.RandomState(0).randint(0, 255, [20, 24, 3], np.uint8)).save(target)
    args = [f'--target={target}', f'--vgg16={vgg16}', '--num-steps=4', '--w-avg-samples=50', '--device=cpu']
    _run(projector.cli, official, tmp_path / 'a', *args)
    _run(projector.cli, ours, tmp_path / 'b', *args)
    for name in ('proj.png', 'target.png'):
        assert np.array_equal(_pixels(tmp_path / 'a' / name), _pixels(tmp_path / 'b' / name))
    with np.load(tmp_path / 'a' / 'projected_w.npz') as a, np.load(tmp_path / 'b' / 'projected_w.npz') as b:
        np.testing.assert_array_equal(a['w'], b['w'])


def test_legacy_force_fp16_rebuilds_the_networks_with_the_same_weights(pickles, tmp_path):
    import legacy

    official, ours = pickles
    dest = tmp_path / 'fp16.pkl'
    result = CliRunner().invoke(legacy.cli, [f'--source={official}', f'--dest={dest}', '--force-fp16=True'])
    assert result.exit_code == 0, result.output
    plain = checkpoint.load_network_pkl(ours)
    with open(dest, 'rb') as f:
        fp16 = legacy.load_network_pkl(f)  # the reference idiom, with a file object
    with open(ours, 'rb') as f:
        again = legacy.load_network_pkl(f, True)  # and its positional force_fp16
    for data in (fp16, again):
        for key in ('G', 'G_ema'):
            assert (
                data[key].init_kwargs['synthesis_kwargs'] | dict(num_fp16_res=4, conv_clamp=256)
                == (data[key].init_kwargs['synthesis_kwargs'])
            )
            assert data[key].init_kwargs['z_dim'] == plain[key].init_kwargs['z_dim']
        assert (data['D'].init_kwargs['num_fp16_res'], data['D'].init_kwargs['conv_clamp']) == (4, 256)
        for key in ('G', 'D', 'G_ema'):
            theirs = plain[key].state_dict()
            assert all(torch.equal(v, theirs[k]) for k, v in data[key].state_dict().items())


@pytest.mark.parametrize(
    'cli_name, args, key, value',
    [
        ('projector', [], 'save_video', False),
        ('projector', ['--save-video'], 'save_video', True),
        ('projector', ['--save-video=False'], 'save_video', False),  # the reference's form
        ('projector', ['--save-video=True'], 'save_video', True),
        ('calc_metrics', ['--verbose=False'], 'verbose', False),  # the reference's form
        ('calc_metrics', ['--quiet'], 'quiet', True),
        ('calc_metrics', [], 'verbose', True),
    ],
)
def test_reference_boolean_forms_of_tool_options(cli_name, args, key, value, tmp_path):
    import calc_metrics

    target = tmp_path / 't.png'
    target.write_bytes(b'')
    common = (
        ['--network=x', f'--target={target}', '--outdir=o'] if cli_name == 'projector' else ['--network=x']
    )
    cli = projector.cli if cli_name == 'projector' else calc_metrics.main
    assert cli.make_context(cli_name, common + args).params[key] is value
