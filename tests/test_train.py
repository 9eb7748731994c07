"""train.py end to end: presets, option validation, a short run's files, exact resume and 2-process DDP."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import REPO, SUBPROCESS_TIMEOUT, make_image_folder

sys.path.insert(0, str(REPO))
import train  # noqa: E402

TINY = ['--cbase=256', '--cmax=16', '--workers=0', '--grid=4x2', '--metrics=none']  # --metrics last


@pytest.fixture(scope='module')
def data16(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('data16'), seed=0)


def _dry(args):
    res = CliRunner().invoke(train.main, args + ['--dry-run'])
    assert res.exit_code == 0, res.output
    return json.loads(res.output[res.output.index('{\n') : res.output.index('\n\nRun directory')])


@pytest.mark.parametrize(
    'cfg, gpus, expect',
    [
        (
            'auto',
            1,
            dict(batch_size=32, batch_gpu=32, gamma=0.0064, ema=10, mbstd=4, cbase=16384, lr=0.0025, map=2),
        ),
        (
            'auto',
            2,
            dict(batch_size=64, batch_gpu=32, gamma=0.0032, ema=20, mbstd=4, cbase=16384, lr=0.0025, map=2),
        ),
        (
            'stylegan2',
            1,
            dict(batch_size=32, batch_gpu=4, gamma=10, ema=10, mbstd=4, cbase=32768, lr=0.002, map=8),
        ),
        (
            'paper256',
            1,
            dict(batch_size=64, batch_gpu=8, gamma=1, ema=20, mbstd=8, cbase=16384, lr=0.0025, map=8),
        ),
        (
            'paper512',
            1,
            dict(batch_size=64, batch_gpu=8, gamma=0.5, ema=20, mbstd=8, cbase=32768, lr=0.0025, map=8),
        ),
        (
            'paper1024',
            1,
            dict(batch_size=32, batch_gpu=4, gamma=2, ema=10, mbstd=4, cbase=32768, lr=0.002, map=8),
        ),
        (
            'cifar',
            1,
            dict(batch_size=64, batch_gpu=32, gamma=0.01, ema=500, mbstd=32, cbase=32768, lr=0.0025, map=2),
        ),
    ],
)
def test_presets_resolve_to_reference_values(data16, tmp_path, cfg, gpus, expect):
    c = _dry([f'--outdir={tmp_path}', f'--data={data16}', f'--cfg={cfg}', f'--gpus={gpus}'])
    assert c['batch_size'] == expect['batch_size'] and c['batch_gpu'] == expect['batch_gpu']
    assert c['loss_kwargs']['r1_gamma'] == pytest.approx(
        expect['gamma'] * (16 / 32) ** 2 if cfg == 'auto' else expect['gamma']
    )
    assert c['ema_kimg'] == pytest.approx(expect['ema'])
    assert c['D_kwargs']['epilogue_kwargs']['mbstd_group_size'] == expect['mbstd']
    assert (
        c['G_kwargs']['synthesis_kwargs']['channel_base'] == expect['cbase'] == c['D_kwargs']['channel_base']
    )
    assert c['G_opt_kwargs']['lr'] == c['D_opt_kwargs']['lr'] == expect['lr']
    assert c['G_opt_kwargs']['betas'] == [0.0, 0.99]
    assert c['G_kwargs']['mapping_kwargs']['num_layers'] == expect['map']
    assert c['G_kwargs']['synthesis_kwargs']['num_fp16_res'] == 4 and c['D_kwargs']['conv_clamp'] == 256
    if cfg == 'cifar':
        assert c['total_kimg'] == 100000 and c['ema_rampup'] == 0.05
        assert c['loss_kwargs']['pl_weight'] == 0 and c['loss_kwargs']['style_mixing_prob'] == 0
        assert c['D_kwargs']['architecture'] == 'orig'
    else:
        assert c['total_kimg'] == 25000


def test_auto_formula_at_256():
    from stylegan2_ada_kd.training.config import resolve_preset

    for gpus, (mb, gamma, ema) in {1: (16, 0.8192, 5), 2: (32, 0.4096, 10), 4: (64, 0.2048, 20)}.items():
        spec = resolve_preset('auto', gpus, 256)
        assert (spec.mb, spec.gamma, spec.ema) == (mb, pytest.approx(gamma), pytest.approx(ema))


def test_run_dir_name_and_overrides(data16, tmp_path):
    (tmp_path / '00007-old').mkdir()
    res = CliRunner().invoke(
        train.main,
        [
            f'--outdir={tmp_path}',
            f'--data={data16}',
            '--mirror=1',
            '--gamma=2',
            '--kimg=10',
            '--aug=fixed',
            '--p=0.3',
            '--fp32=1',
            '--freezed=2',
            '--dry-run',
        ],
    )
    assert res.exit_code == 0, res.output
    assert f'00008-{os.path.basename(data16)}-mirror-auto1-gamma2-kimg10-fixed-p0.3-freezed2' in res.output
    c = json.loads(res.output[res.output.index('{\n') : res.output.index('\n\nRun directory')])
    assert c['augment_p'] == 0.3 and c['ada_kwargs'] is None
    assert c['G_kwargs']['synthesis_kwargs']['num_fp16_res'] == 0 and c['D_kwargs']['conv_clamp'] is None
    assert c['D_kwargs']['block_kwargs']['freeze_layers'] == 2


def test_stylegan3_style_overrides_of_learning_rates_and_mbstd_group(data16, tmp_path):
    """--glr, --dlr and --mbstd-group as stylegan3's train.py has them; named in the run directory."""
    args = [f'--outdir={tmp_path}', f'--data={data16}', '--batch=8', '--glr=0.001', '--dlr=0.003']
    c = _dry([*args, '--mbstd-group=2'])
    assert c['G_opt_kwargs']['lr'] == 0.001 and c['D_opt_kwargs']['lr'] == 0.003
    assert c['D_kwargs']['epilogue_kwargs']['mbstd_group_size'] == 2
    assert c['run_dir'].endswith('-batch8-glr0.001-dlr0.003-mbstd2')
    default = _dry([f'--outdir={tmp_path}', f'--data={data16}', '--batch=8'])
    assert default['G_opt_kwargs']['lr'] == default['D_opt_kwargs']['lr'] == 0.0025
    res = CliRunner().invoke(train.main, [*args, '--mbstd-group=3', '--dry-run'])
    assert res.exit_code == 2 and 'not a multiple of the minibatch-stddev group size 3' in res.output


@pytest.mark.parametrize(
    'extra, needle',
    [
        (['--p=0.5'], '--p'),
        (['--aug=fixed'], '--p'),
        (['--aug=fixed', '--p=0.2', '--target=0.5'], '--target'),
        (['--aug=noaug', '--augpipe=bgc'], '--augpipe'),
        (['--gpus=3', '--batch=32'], '--gpus'),
        (['--batch=24', '--batch-gpu=6'], 'minibatch-stddev'),
        (['--cfg=paper9000'], '--cfg'),
        (['--cond=1'], 'label'),
        (['--subset=100'], '--subset'),
        (['--grid=0x4'], '--grid'),
        (['--grid=8by4'], '--grid'),
        (['--metrics=fid,fid5k_train'], "--metrics: unknown metric(s) ['fid']"),
    ],
)
def test_invalid_options_are_rejected_before_training(data16, tmp_path, extra, needle):
    res = CliRunner().invoke(train.main, [f'--outdir={tmp_path}', f'--data={data16}', '--dry-run'] + extra)
    assert res.exit_code != 0
    assert needle in res.output
    assert not list(tmp_path.iterdir())  # nothing was created


@pytest.mark.parametrize(
    'grid, size, image_ticks', [('auto', [32, 32], 50), ('8x4', [8, 4], 50), ('none', None, None)]
)
def test_grid_sets_the_snapshot_image_grids(data16, tmp_path, grid, size, image_ticks):
    """--grid: columns x rows; 'auto' is about a 7680x4320 canvas (32x32 at 16x16 px); 'none': no grids."""
    c = _dry([f'--outdir={tmp_path}', f'--data={data16}', f'--grid={grid}'])
    assert c['grid_size'] == size and c['image_snapshot_ticks'] == image_ticks
    assert c['network_snapshot_ticks'] == 50


def test_missing_dataset_names_the_path(tmp_path):
    res = CliRunner().invoke(train.main, [f'--outdir={tmp_path}', f'--data={tmp_path}/nope.zip', '--dry-run'])
    assert res.exit_code != 0 and 'nope.zip' in res.output


def _train(tmp_path, data, *args, outdir='runs'):
    cmd = [
        sys.executable,
        str(REPO / 'train.py'),
        f'--outdir={tmp_path / outdir}',
        f'--data={data}',
        *TINY,
        *args,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=SUBPROCESS_TIMEOUT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = sorted((tmp_path / outdir).iterdir())
    return runs[-1], res.stdout


def _stats(run_dir):
    return [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]


def test_short_run_writes_every_file(data16, tmp_path):
    run_dir, out = _train(tmp_path, data16, '--batch=4', '--kimg=0.012', '--tick=0.008', '--snap=1')
    names = set(os.listdir(run_dir))
    for name in [
        'training_options.json',
        'log.txt',
        'stats.jsonl',
        'reals.png',
        'fakes_init.png',
        'fakes000000.004.png',  # ticks of 0.008 kimg: snapshots and grids named by kimg with 3 decimals
        'network-snapshot-000000.004.pkl',
        'fakes000000.012.png',
        'network-snapshot-000000.012.pkl',
    ]:
        assert name in names, (name, names)
    assert not [n for n in names if n.endswith('.tmp') or '.tmp' in n]
    import PIL.Image

    for name in ('reals.png', 'fakes_init.png', 'fakes000000.012.png'):  # --grid=4x2 of 16x16 images
        assert PIL.Image.open(run_dir / name).size == (4 * 16, 2 * 16), name
    stats = _stats(run_dir)
    assert len(stats) == 2  # tick 0 after the first step (4 images), tick 1 at 12 images (done)
    for key in [
        'Loss/G/loss',
        'Loss/D/loss',
        'Loss/scores/real',
        'Loss/signs/fake',
        'Loss/r1_penalty',
        'Loss/pl_penalty',
        'Progress/kimg',
        'Progress/augment',
        'Timing/sec_per_kimg',
        'Resources/cpu_mem_gb',
    ]:
        assert any(key in s for s in stats), key
    assert 'tick 0' in out and 'sec/kimg' in out and 'augment' in out
    log = (run_dir / 'log.txt').read_text()
    assert 'tick 0' in log
    assert 'Dataset: ' in log and '16 images, 3x16x16, label dim 0' in log
    assert 'Networks: G ' in log and 'Loss: StyleGAN2Loss: r1_gamma=' in log and 'Augmentation: ' in log
    from stylegan2_ada_kd.checkpoint import load_network_pkl

    data = load_network_pkl(str(run_dir / 'network-snapshot-000000.012.pkl'))
    assert data['G_ema'].img_resolution == 16 and data['training_set_kwargs']['path'] == data16
    assert data['resume_state']['progress']['cur_nimg'] == 12


def test_resume_continues_exactly(data16, tmp_path):
    args = ['--batch=4', '--tick=0.008', '--snap=1', '--seed=3']
    full, _ = _train(tmp_path, data16, *args, '--kimg=0.028', outdir='full')
    first, _ = _train(tmp_path, data16, *args, '--kimg=0.012', outdir='first')
    snap = first / 'network-snapshot-000000.012.pkl'
    resumed, out = _train(tmp_path, data16, *args, '--kimg=0.028', f'--resume={snap}', outdir='resumed')
    assert 'Resuming exactly' in out
    full_stats, resumed_stats = _stats(full), _stats(resumed)
    assert resumed_stats[0]['Progress/kimg']['mean'] == pytest.approx(0.020)  # continues after 0.012
    by_kimg = {round(s['Progress/kimg']['mean'], 3): s for s in full_stats}
    for s in resumed_stats:
        ref = by_kimg[round(s['Progress/kimg']['mean'], 3)]
        for key in ('Loss/G/loss', 'Loss/D/loss', 'Loss/scores/real', 'Progress/augment', 'Progress/tick'):
            if key in ref:
                assert s[key]['mean'] == pytest.approx(ref[key]['mean'], rel=1e-5, abs=1e-7), key


def test_two_process_ddp_on_cpu(data16, tmp_path):
    run_dir, out = _train(
        tmp_path, data16, '--gpus=2', '--batch=8', '--kimg=0.016', '--tick=0.008', '--snap=1'
    )
    assert len(list((tmp_path / 'runs').iterdir())) == 1
    assert (run_dir / 'network-snapshot-000000.016.pkl').exists()
    stats = _stats(run_dir)
    assert stats[-1]['Progress/kimg']['mean'] == pytest.approx(0.016)
    assert stats[-1]['Loss/G/loss']['num'] == 8  # both ranks' reports were summed
    assert out.count('Training for') == 1  # only rank 0 prints


def test_two_process_resume_continues_exactly(data16, tmp_path):
    """LeCam's EMAs and pl_mean are the same on every process, so rank 0's snapshot resumes all of them."""
    args = ['--gpus=2', '--batch=8', '--tick=0.008', '--snap=1', '--seed=3', '--lecam=0.1']
    full, _ = _train(tmp_path, data16, *args, '--kimg=0.048', outdir='full')
    first, _ = _train(tmp_path, data16, *args, '--kimg=0.024', outdir='first')
    snap = first / 'network-snapshot-000000.024.pkl'
    resumed, out = _train(tmp_path, data16, *args, '--kimg=0.048', f'--resume={snap}', outdir='resumed')
    assert 'Resuming exactly' in out
    by_kimg = {round(s['Progress/kimg']['mean'], 3): s for s in _stats(full)}
    resumed_stats = _stats(resumed)
    assert [round(s['Progress/kimg']['mean'], 3) for s in resumed_stats] == [0.032, 0.040, 0.048]
    assert 'Loss/pl_penalty' in resumed_stats[1]  # the lazy path-length step after the resume point
    for s in resumed_stats:
        ref = by_kimg[round(s['Progress/kimg']['mean'], 3)]
        for key in ('Loss/G/loss', 'Loss/D/loss', 'Loss/D/lecam', 'Loss/pl_penalty', 'Loss/scores/real'):
            if key in ref:
                assert s[key]['mean'] == pytest.approx(ref[key]['mean'], rel=1e-5, abs=1e-7), key


def test_help_text_is_committed():
    """docs/train-help.txt is the committed --help (python train.py --help > docs/train-help.txt)."""
    res = CliRunner().invoke(train.main, ['--help'], prog_name='train.py')
    assert res.exit_code == 0
    assert res.output == (REPO / 'docs' / 'train-help.txt').read_text()


def test_torchrun_two_processes_as_the_readme_writes_it(data16, tmp_path):
    """``torchrun --nproc_per_node=2 train.py ...`` without --gpus: both processes train, one run dir."""
    cmd = [
        sys.executable,
        '-m',
        'torch.distributed.run',
        '--standalone',
        '--nproc_per_node=2',
        str(REPO / 'train.py'),
        f'--outdir={tmp_path / "runs"}',
        f'--data={data16}',
        *TINY,
        '--batch=8',
        '--kimg=0.008',
        '--snap=1',
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=SUBPROCESS_TIMEOUT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = list((tmp_path / 'runs').iterdir())
    assert len(runs) == 1, runs
    assert '-auto2-' in runs[0].name
    options = json.loads((runs[0] / 'training_options.json').read_text())
    assert options['num_gpus'] == 2 and options['batch_gpu'] == 4
    assert (runs[0] / 'network-snapshot-000000.pkl').exists()
    # rank 0 alone prints the options and the run directory (rank 1 used to name one never created)
    assert res.stdout.count('Run directory') == 1 and res.stdout.count('"G_kwargs"') == 1, res.stdout
    assert _stats(runs[0])[-1]['Loss/G/loss']['num'] == 8  # 2 processes x 4 images


TORCHRUN_ENV = dict(RANK='0', WORLD_SIZE='2', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1', MASTER_PORT='29500')


def test_options_are_resolved_for_the_processes_torchrun_started(data16, tmp_path, monkeypatch):
    for key, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(key, value)
    c = _dry([f'--outdir={tmp_path}', f'--data={data16}'])
    assert c['num_gpus'] == 2 and c['batch_size'] == 64 and c['batch_gpu'] == 32
    assert c['run_dir'].endswith('-auto2')
    res = CliRunner().invoke(
        train.main, [f'--outdir={tmp_path}', f'--data={data16}', '--gpus=3', '--dry-run']
    )
    assert res.exit_code != 0
    assert '--gpus=3' in res.output and 'WORLD_SIZE=2' in res.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('batch, batch_gpu, num_gpus', [(8, 8, 2), (8, 3, 1), (4, 8, 1)])
def test_a_step_never_runs_zero_accumulation_rounds(batch, batch_gpu, num_gpus):
    from stylegan2_ada_kd.training.loop import accumulation_rounds

    with pytest.raises(ValueError):
        accumulation_rounds(batch, batch_gpu, num_gpus)
    assert accumulation_rounds(16, 4, 1) == 4


def test_metrics_are_evaluated_at_snapshots(data16, tmp_path, monkeypatch):
    """The training loop's metric hook: all ranks call calc_metric, rank 0 writes jsonl + best pointer."""
    from metrics import metric_main

    calls = []

    def fake_calc_metric(metric, **kwargs):
        calls.append((metric, kwargs['G'].img_resolution, kwargs['dataset_kwargs']['path']))
        value = 10.0 - len(calls)  # improves every time
        return dict(results={metric: value}, metric=metric, total_time=0.1, total_time_str='0s', num_gpus=1)

    monkeypatch.setattr(metric_main, 'calc_metric', fake_calc_metric)
    res = CliRunner().invoke(
        train.main,
        [
            f'--outdir={tmp_path}',
            f'--data={data16}',
            *TINY[:-1],
            '--metrics=fid5k_train',
            '--batch=4',
            '--kimg=0.012',
            '--tick=0.008',
            '--snap=1',
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    run_dir = sorted(tmp_path.iterdir())[-1]
    assert calls == [('fid5k_train', 16, data16)] * 2
    lines = (run_dir / 'metric-fid5k_train.jsonl').read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[-1])['results']['fid5k_train'] == 8.0
    assert (run_dir / 'network-snapshot-best.pkl').exists()
    assert _stats(run_dir)[-1]['Metrics/fid5k_train']['mean'] == 8.0
