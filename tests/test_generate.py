"""Tests for the top-level generate.py CLI (run in-process through click's CliRunner)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from stylegan2_ada_kd import checkpoint
from stylegan2_ada_kd.networks import Discriminator, Generator

ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f'{name}_script', ROOT / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


generate = load_script('generate')


def save_tiny_snapshot(path, c_dim=0, img_channels=3):
    torch.manual_seed(0)
    G = Generator(
        z_dim=8,
        w_dim=8,
        c_dim=c_dim,
        img_resolution=16,
        img_channels=img_channels,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=128, channel_max=16),
    )
    D = Discriminator(
        c_dim=c_dim,
        img_resolution=16,
        img_channels=img_channels,
        channel_base=128,
        channel_max=16,
        epilogue_kwargs=dict(mbstd_group_size=2),
    )
    checkpoint.save_network_snapshot(path, G=G, D=D, G_ema=G)
    return path


def run(*args):
    return CliRunner().invoke(generate.cli, [str(a) for a in args], catch_exceptions=False)


def test_writes_one_png_per_seed(tmp_path):
    snap = save_tiny_snapshot(tmp_path / 'snap.pkl')
    out = tmp_path / 'out'
    result = run('--network', snap, '--seeds', '0-2', '--trunc', '0.7', '--outdir', out, '--device', 'cpu')
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ['seed0000.png', 'seed0001.png', 'seed0002.png']
    img = PIL.Image.open(out / 'seed0001.png')
    assert img.mode == 'RGB' and img.size == (16, 16)
    pixels = np.asarray(img)
    assert pixels.std() > 0

    again = tmp_path / 'again'
    assert run('--network', snap, '--seeds', '1', '--trunc', '0.7', '--outdir', again).exit_code == 0
    # noise_mode=const makes the output repeatable
    assert np.array_equal(np.asarray(PIL.Image.open(again / 'seed0001.png')), pixels)


def test_grayscale_network_writes_l_mode(tmp_path):
    snap = save_tiny_snapshot(tmp_path / 'snap.pkl', img_channels=1)
    assert run('--network', snap, '--seeds', '5', '--outdir', tmp_path / 'out').exit_code == 0
    assert PIL.Image.open(tmp_path / 'out' / 'seed0005.png').mode == 'L'


def test_conditional_network_needs_class(tmp_path):
    snap = save_tiny_snapshot(tmp_path / 'snap.pkl', c_dim=4)
    result = run('--network', snap, '--seeds', '0', '--outdir', tmp_path / 'out')
    assert result.exit_code == 2
    assert '--class' in result.output and 'conditional' in result.output
    assert not (tmp_path / 'out').exists()  # The label is checked before the output folder is made.
    result = run('--network', snap, '--seeds', '0', '--class', '7', '--outdir', tmp_path / 'out')
    assert result.exit_code == 2 and 'out of range' in result.output
    result = run('--network', snap, '--seeds', '0', '--class', '-1', '--outdir', tmp_path / 'out')
    assert result.exit_code == 2 and 'out of range' in result.output
    result = run('--network', snap, '--seeds', '0', '--class', '3', '--outdir', tmp_path / 'out')
    assert result.exit_code == 0, result.output
    assert (tmp_path / 'out' / 'seed0000.png').is_file()


def test_class_is_refused_for_unconditional_network(tmp_path):
    snap = save_tiny_snapshot(tmp_path / 'snap.pkl')
    result = run('--network', snap, '--seeds', '3', '--class', '1', '--outdir', tmp_path / 'out')
    assert result.exit_code == 2, result.output  # click.UsageError, not a warning
    assert '--class=1' in result.output and 'unconditional' in result.output
    assert not (tmp_path / 'out').exists()  # Nothing written.
    result = run('--network', snap, '--seeds', '3', '--outdir', tmp_path / 'out')
    assert result.exit_code == 0 and (tmp_path / 'out' / 'seed0003.png').is_file()


def test_bad_inputs_give_clear_errors(tmp_path):
    snap = save_tiny_snapshot(tmp_path / 'snap.pkl')
    result = run('--network', snap, '--seeds', 'a-b', '--outdir', tmp_path / 'out')
    assert result.exit_code == 2 and '--seeds' in result.output
    result = run('--network', tmp_path / 'missing.pkl', '--seeds', '0', '--outdir', tmp_path / 'out')
    assert result.exit_code == 1 and 'missing.pkl' in result.output


def test_seed_to_z_matches_numpy_random_state():
    z = generate.seed_to_z(42, 8)
    assert z.shape == (1, 8)
    assert np.array_equal(z, np.random.RandomState(42).randn(1, 8))


def test_to_pil_image_scaling():
    img = torch.tensor([[[-1.0, 0.0], [1.0, 2.0]]]).repeat(3, 1, 1)
    pixels = np.asarray(generate.to_pil_image(img))
    assert pixels[:, :, 0].tolist() == [[0, 128], [255, 255]]
    with pytest.raises(ValueError, match='channels'):
        generate.to_pil_image(torch.zeros(2, 4, 4))
