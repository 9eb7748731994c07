"""Tests for the post-training tools: generate.py --projected-w, style_mixing.py and interpolate.py
(in-process through click's CliRunner, on a tiny snapshot; nothing is downloaded)."""

import sys
import types

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from test_generate import save_tiny_snapshot

import generate  # The scripts at the repository root (conftest puts it on sys.path).
import interpolate
import style_mixing
from stylegan2_ada_kd import checkpoint


def run(cli, *args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def tiny(tmp_path):
    snap = save_tiny_snapshot(tmp_path / 'snap.pkl')
    return snap, checkpoint.load_network_pkl(snap)['G_ema']


def seed_ws(G, seed, psi=1.0, c=None):
    z = torch.from_numpy(generate.seed_to_z(seed, G.z_dim)).float()
    with torch.no_grad():
        return G.mapping(z, c, truncation_psi=psi)


def pixels(path):
    return np.asarray(PIL.Image.open(path))


def image_of(G, ws):
    with torch.no_grad():
        return np.asarray(generate.to_pil_image(G.synthesis(ws, noise_mode='const')[0]))


def test_projected_w_round_trip(tiny, tmp_path):
    """Every row of w is rendered, named as the reference names them (proj00.png, ...)."""
    snap, G = tiny
    np.savez(tmp_path / 'proj.npz', w=torch.cat([seed_ws(G, 3, psi=0.7), seed_ws(G, 4, psi=0.7)]).numpy())
    result = run(
        generate.cli, '--network', snap, '--projected-w', tmp_path / 'proj.npz', '--outdir', tmp_path / 'a'
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / 'a').iterdir()) == ['proj00.png', 'proj01.png']
    result = run(
        generate.cli, '--network', snap, '--seeds', '3,4', '--trunc', 0.7, '--outdir', tmp_path / 'b'
    )
    assert result.exit_code == 0, result.output
    assert np.array_equal(pixels(tmp_path / 'a' / 'proj00.png'), pixels(tmp_path / 'b' / 'seed0003.png'))
    assert np.array_equal(pixels(tmp_path / 'a' / 'proj01.png'), pixels(tmp_path / 'b' / 'seed0004.png'))
    two = tmp_path / 'proj.npz'  # but a style-mixing row or column is one latent
    result = run(style_mixing.cli, '--network', snap, '--rows', two, '--cols', 0, '--outdir', tmp_path / 'c')
    assert result.exit_code == 1 and f'[1, {G.num_ws}, {G.w_dim}]' in result.output


def test_projected_w_bad_inputs(tiny, tmp_path):
    snap, G = tiny
    np.savez(tmp_path / 'flat.npz', w=np.zeros([1, G.w_dim], np.float32))
    np.savez(tmp_path / 'nokey.npz', z=np.zeros([1, 8], np.float32))
    out = tmp_path / 'out'
    result = run(generate.cli, '--network', snap, '--projected-w', tmp_path / 'flat.npz', '--outdir', out)
    assert result.exit_code == 1
    assert 'flat.npz' in result.output and f'[N, {G.num_ws}, {G.w_dim}]' in result.output
    assert not out.exists()
    result = run(generate.cli, '--network', snap, '--projected-w', tmp_path / 'nokey.npz', '--outdir', out)
    assert result.exit_code == 1 and 'no array "w"' in result.output
    both = ['--seeds', 0, '--projected-w', tmp_path / 'flat.npz']
    for extra in ([], both):
        result = run(generate.cli, '--network', snap, '--outdir', out, *extra)
        assert result.exit_code == 2 and 'exactly one of --seeds and --projected-w' in result.output


def test_mixing_grid_layout_and_mixed_cells(tiny, tmp_path):
    snap, G = tiny
    out = tmp_path / 'mix'
    args = ['--rows', '1,2', '--cols', '3-5', '--styles', '0-1', '--trunc', 0.8, '--outdir', out]
    result = run(style_mixing.cli, '--network', snap, *args, '--save-images')
    assert result.exit_code == 0, result.output
    grid = pixels(out / 'grid.png')
    assert grid.shape == (3 * 16, 4 * 16, 3)
    cell = lambda i, j: grid[i * 16 : (i + 1) * 16, j * 16 : (j + 1) * 16]
    assert not cell(0, 0).any()  # the empty corner
    rows, cols = [1, 2], [3, 4, 5]
    for i, seed in enumerate(rows, start=1):
        assert np.array_equal(cell(i, 0), image_of(G, seed_ws(G, seed, 0.8)))
    for j, seed in enumerate(cols, start=1):
        assert np.array_equal(cell(0, j), image_of(G, seed_ws(G, seed, 0.8)))
    mixed = seed_ws(G, 2, 0.8)
    mixed[:, :2] = seed_ws(G, 5, 0.8)[:, :2]
    assert np.array_equal(cell(2, 3), image_of(G, mixed))
    assert np.array_equal(pixels(out / 'seed0002-seed0005.png'), cell(2, 3))
    assert not np.array_equal(cell(2, 3), cell(2, 0)) and not np.array_equal(cell(2, 3), cell(0, 3))


def test_mixing_projected_latents_and_default_styles(tiny, tmp_path):
    snap, G = tiny
    np.savez(tmp_path / 'a.npz', w=seed_ws(G, 7).numpy())
    np.savez(tmp_path / 'b.npz', w=seed_ws(G, 8).numpy())
    out = tmp_path / 'mix'
    result = run(
        style_mixing.cli,
        '--network',
        snap,
        '--rows',
        tmp_path / 'a.npz',
        '--cols',
        tmp_path / 'b.npz',
        '--outdir',
        out,
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        'a-b.png',
        'a.png',
        'b.png',
        'grid.png',
    ]  # as the reference
    assert (
        run(
            style_mixing.cli,
            '--network',
            snap,
            '--rows',
            0,
            '--cols',
            1,
            '--outdir',
            tmp_path / 'only',
            '--save-images=False',
        ).exit_code
        == 0
    )
    assert [p.name for p in (tmp_path / 'only').iterdir()] == ['grid.png']
    assert style_mixing.default_styles(G.num_ws) == [0, 1, 2]  # 6 ws: the coarse half
    assert style_mixing.default_styles(18) == list(range(7))
    mixed = style_mixing.mix_ws(seed_ws(G, 7), seed_ws(G, 8), [0, 1, 2])
    assert np.array_equal(pixels(out / 'grid.png')[16:, 16:], image_of(G, mixed))


def test_mixing_conditional_network(tmp_path):
    snap = save_tiny_snapshot(tmp_path / 'snap.pkl', c_dim=4)
    G = checkpoint.load_network_pkl(snap)['G_ema']
    args = ['--network', snap, '--rows', '0', '--cols', '1', '--outdir', tmp_path / 'out']
    result = run(style_mixing.cli, *args)
    assert result.exit_code == 2 and 'conditional' in result.output and '--class' in result.output
    assert run(style_mixing.cli, *args, '--class', 2).exit_code == 0
    c = torch.zeros([1, 4])
    c[0, 2] = 1
    grid = pixels(tmp_path / 'out' / 'grid.png')
    assert np.array_equal(grid[16:, :16], image_of(G, seed_ws(G, 0, c=c)))


def test_mixing_bad_inputs(tiny, tmp_path):
    snap, G = tiny
    base = ['--network', snap, '--rows', '0', '--cols', '1', '--outdir', tmp_path / 'out']
    result = run(style_mixing.cli, *base, '--styles', '2-6')
    assert result.exit_code == 2 and '--styles' in result.output and f'{G.num_ws} ws' in result.output
    result = run(style_mixing.cli, *base, '--styles', 'coarse')
    assert result.exit_code == 2 and '--styles' in result.output
    result = run(style_mixing.cli, *base, '--class', 1)
    assert result.exit_code == 2 and 'unconditional' in result.output
    assert not (tmp_path / 'out').exists()


def hide_imageio(monkeypatch):
    monkeypatch.setitem(sys.modules, 'imageio', None)  # `import imageio` now raises ImportError


def test_interpolation_png_frames_fallback(tiny, tmp_path, monkeypatch):
    snap, G = tiny
    hide_imageio(monkeypatch)
    for space in ('w', 'z'):
        out = tmp_path / space
        args = [
            '--network',
            snap,
            '--points',
            '0,1,2',
            '--space',
            space,
            '--frames-per-step',
            3,
            '--outdir',
            out,
        ]
        result = run(interpolate.cli, *args, '--trunc', 0.7)
        assert result.exit_code == 0, result.output
        assert 'PNG frames' in result.output and 'not installed' in result.output
        frames = sorted((out / 'frames').iterdir())
        assert [f.name for f in frames] == [f'frame{i:05d}.png' for i in range(7)]
        assert np.array_equal(pixels(frames[0]), image_of(G, seed_ws(G, 0, 0.7)))
        assert np.array_equal(pixels(frames[3]), image_of(G, seed_ws(G, 1, 0.7)))
        assert np.array_equal(pixels(frames[-1]), image_of(G, seed_ws(G, 2, 0.7)))


def test_interpolation_writes_mp4_through_imageio(tiny, tmp_path, monkeypatch):
    snap, G = tiny
    frames = []
    writer = types.SimpleNamespace(append_data=frames.append, close=lambda: frames.append('closed'))
    v2 = types.SimpleNamespace(get_writer=lambda path, **kwargs: writer)
    monkeypatch.setitem(sys.modules, 'imageio', types.SimpleNamespace(v2=v2))
    monkeypatch.setitem(sys.modules, 'imageio.v2', v2)
    monkeypatch.setitem(sys.modules, 'imageio_ffmpeg', types.SimpleNamespace())
    np.savez(tmp_path / 'a.npz', w=seed_ws(G, 4).numpy())
    args = ['--network', snap, '--points', f'{tmp_path / "a.npz"},9', '--frames-per-step', 4]
    result = run(interpolate.cli, *args, '--outdir', tmp_path / 'out')
    assert result.exit_code == 0, result.output
    assert 'mp4 video' in result.output and 'interpolation.mp4' in result.output
    assert len(frames) == 6 and frames[-1] == 'closed'
    assert np.array_equal(frames[0], image_of(G, seed_ws(G, 4)))
    assert np.array_equal(frames[4], image_of(G, seed_ws(G, 9)))


def test_interpolation_bad_inputs(tiny, tmp_path):
    snap, G = tiny
    np.savez(tmp_path / 'a.npz', w=seed_ws(G, 4).numpy())
    base = ['--network', snap, '--outdir', tmp_path / 'out']
    result = run(interpolate.cli, *base, '--points', '3')
    assert result.exit_code == 2 and 'at least two' in result.output
    result = run(interpolate.cli, *base, '--points', f'{tmp_path / "a.npz"},3', '--space', 'z')
    assert result.exit_code == 2 and '--space=z takes seeds only' in result.output
    result = run(interpolate.cli, *base, '--points', '0,1', '--frames-per-step', 0)
    assert result.exit_code == 2 and '--frames-per-step' in result.output
    assert not (tmp_path / 'out').exists()
