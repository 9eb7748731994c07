"""--init-from (a new run from a network's weights, ours included) beside --resume (an exact continuation),
and what happens when a run that already reached --kimg is resumed."""

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import make_image_folder, tiny_training_run

import train

TINY = ['--cbase=256', '--cmax=16', '--workers=0', '--grid=none', '--batch=4', '--tick=0.004', '--snap=1']
PLAIN_LOSS = dict(class_name='stylegan2_ada_kd.training.loss.StyleGAN2Loss', r1_gamma=1)


def _invoke(args):
    res = CliRunner().invoke(train.main, [str(a) for a in args])
    return res.exit_code, res.output + (repr(res.exception) if res.exception else '')


def _train(args):
    code, out = _invoke(args)
    assert code == 0, out
    return out


def _options(run_dir):
    return json.loads((run_dir / 'training_options.json').read_text())


def _first_kimg(run_dir):
    return json.loads((run_dir / 'stats.jsonl').read_text().splitlines()[0])['Progress/kimg']['mean']


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    """Two datasets (16x16 and 32x32) and a finished tiny run on the first one (0.008 kimg)."""
    root = tmp_path_factory.mktemp('init')
    data_a = make_image_folder(root / 'a', seed=1)
    data_b = make_image_folder(root / 'b', seed=2)
    data_32 = make_image_folder(root / 'c', res=32, seed=3)
    _train([f'--outdir={root / "src"}', f'--data={data_a}', *TINY, '--kimg=0.008'])
    (run_dir,) = (root / 'src').iterdir()
    return data_a, data_b, data_32, run_dir


def test_init_from_our_run_starts_a_new_run_from_its_weights(source, tmp_path):
    """Fine-tuning on another dataset: kimg starts at 0, ADA reacts as after the reference's pickles."""
    _, data_b, _, src = source
    out = _train([f'--outdir={tmp_path}', f'--data={data_b}', *TINY, '--kimg=0.004', f'--init-from={src}'])
    newest = src / 'network-snapshot-000000.008.pkl'
    assert f'Warm start from {newest}: network weights only' in out
    (run_dir,) = tmp_path.iterdir()
    assert '-initcustom-' in run_dir.name  # where the reference puts resumecustom
    options = _options(run_dir)
    assert options['init_from'] == str(src) and options['init_pkl'] == str(newest)
    assert options['resume_pkl'] is None and options['ema_rampup'] is None
    assert options['ada_kwargs']['kimg'] == 100
    assert _first_kimg(run_dir) == pytest.approx(0.004)  # from 0, not from the source's 0.008


def test_init_from_copies_every_fitting_tensor_and_nothing_else(source, tmp_path):
    """A run built from a record with ``init_pkl`` holds the file's G, D and G_ema, and fresh optimizers."""
    from stylegan2_ada_kd import checkpoint

    plain = tiny_training_run(PLAIN_LOSS)
    path = str(tmp_path / 'network-snapshot-000000.pkl')
    with torch.no_grad():
        for p in plain.G.parameters():
            p.add_(1)  # different from any fresh init
    plain.progress.cur_nimg = 4000
    checkpoint.write_snapshot(
        path, plain.nets, plain.phases, plain.loss, None, plain.progress, {}, 0, plain.device
    )
    run = tiny_training_run(PLAIN_LOSS, init_pkl=path)
    for key in ('G', 'D', 'G_ema'):
        ours, theirs = run.nets[key].state_dict(), plain.nets[key].state_dict()
        assert all(torch.equal(ours[k], v) for k, v in theirs.items()), key
    assert run.progress.cur_nimg == 0 and run.resumed is None
    assert all(not opt.state for opt in checkpoint.training_state.optimizers(run.phases).values())


def test_init_from_another_resolution_keeps_the_fresh_layers_and_says_so(source, tmp_path):
    data_a, _, data_32, src = source
    out = _train([f'--outdir={tmp_path}', f'--data={data_32}', *TINY, '--kimg=0.004', f'--init-from={src}'])
    assert 'Warm start from' in out and 'tensors kept their fresh init' in out and 'b32' in out


def test_resume_auto_with_init_from_is_one_command_for_every_session(source, tmp_path):
    """First session: no run to continue, so it starts from --init-from; later ones continue exactly,
    without looking at --init-from again; the finished run is left alone."""
    _, data_b, _, src = source
    args = [f'--outdir={tmp_path}', f'--data={data_b}', *TINY, f'--init-from={src}', '--resume=auto']
    out = _train([*args, '--kimg=0.004'])
    assert f'no earlier run with the same options; starting from --init-from={src}' in out
    assert 'Warm start from' in out
    (first,) = tmp_path.iterdir()
    out = _train([*args, '--kimg=0.008'])
    assert f'--resume=auto: continuing {first / "network-snapshot-000000.004.pkl"}' in out
    assert 'Resuming exactly' in out and 'Warm start' not in out
    second = sorted(tmp_path.iterdir())[-1]
    assert _options(second)['init_pkl'] is None and _options(second)['init_from'] == str(src)
    assert _first_kimg(second) == pytest.approx(0.008)

    out = _train([*args, '--kimg=0.008'])  # once more after it finished: nothing to do, nothing created
    assert 'network-snapshot-000000.008.pkl is at 0.008 kimg, which reaches --kimg=0.008' in out
    assert 'this run is finished; pass a larger --kimg' in out
    assert len(list(tmp_path.iterdir())) == 2
    code, out = _invoke([*args, '--kimg=0.008', '--dry-run'])
    assert code == 0 and 'this run is finished' in out and 'Run directory' not in out

    # Without --init-from these are other options: not this run.
    code, out = _invoke([f'--outdir={tmp_path}', f'--data={data_b}', *TINY, '--resume=auto', '--dry-run'])
    assert code == 0 and 'starting fresh' in out, out


def test_resuming_a_finished_snapshot_points_to_larger_kimg_or_init_from(source, tmp_path):
    data_a, data_b, _, src = source
    snap = src / 'network-snapshot-000000.008.pkl'
    outdir = tmp_path / 'out'
    code, out = _invoke([f'--outdir={outdir}', f'--data={data_b}', *TINY, '--kimg=0.008', f'--resume={snap}'])
    assert code == 2 and not outdir.exists(), out
    assert 'is at 0.008 kimg, which reaches --kimg=0.008' in out
    assert f'or --init-from={snap} instead of --resume' in out
    code, out = _invoke(
        [f'--outdir={outdir}', f'--data={data_a}', *TINY, '--kimg=0.012', f'--resume={snap}', '-n']
    )
    assert code == 0, out  # a larger --kimg continues it


@pytest.mark.parametrize(
    'extra, message',
    [
        (['--resume=SRC', '--init-from=SRC'], 'continues a run and --init-from=SRC starts a new one'),
        (['--init-from=NOPE'], '--init-from=NOPE: no such file or directory'),
        (['--init-from=TEXT'], 'not a readable network pickle'),
    ],
)
def test_bad_init_from_is_one_message_before_anything_is_created(source, tmp_path, extra, message):
    _, data_b, _, src = source
    text = tmp_path / 'notes.pkl'
    text.write_text('not a network\n')
    names = dict(SRC=str(src), NOPE=str(tmp_path / 'nope.pkl'), TEXT=str(text))
    for key, value in names.items():
        extra = [arg.replace(key, value) for arg in extra]
        message = message.replace(key, value)
    outdir = tmp_path / 'out'
    code, out = _invoke([f'--outdir={outdir}', f'--data={data_b}', *TINY, *extra])
    assert code == 2 and not outdir.exists(), out
    assert message in out and 'Traceback' not in out
