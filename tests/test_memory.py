"""Fitting a step into GPU memory (training.memory): the sizes tried, a trial step that leaves no trace, the
run it gives being the run of the smaller --batch-gpu, and the errors a user reads. CUDA out-of-memory
errors are injected (the class is the one CUDA raises); the CPU runs the same code."""

import copy

import numpy as np
import pytest
import torch
from conftest import (
    IMAGE_FOLDER,
    TINY_CLIP_SPEC,
    TINY_COMMON,
    TINY_D,
    kd_loss_kwargs,
    make_image_folder,
    tiny_record,
    tiny_training_run,
)

from stylegan2_ada_kd.kd.teacher import clear_teacher_cache
from stylegan2_ada_kd.networks import Discriminator
from stylegan2_ada_kd.training import memory
from stylegan2_ada_kd.training.loop import training_loop
from stylegan2_ada_kd.training.loss import StyleGAN2Loss
from stylegan2_ada_kd.training.run import build_training_run, training_step
from torch_utils import training_stats

LOSS = dict(class_name='stylegan2_ada_kd.training.loss.StyleGAN2Loss', r1_gamma=1)
ADA = dict(
    augment_kwargs=dict(class_name='stylegan2_ada_kd.augment.ada.AugmentPipe', preset='bgc'),
    ada_kwargs=dict(class_name='stylegan2_ada_kd.augment.ada.AdaptiveP', target=0.6, interval=1, kimg=0.1),
    augment_p=0.2,
)
LIMIT = 4  # the injected "memory": chunks of more than LIMIT images run out


@pytest.fixture
def oom_above_limit(monkeypatch):
    """StyleGAN2Loss runs out of memory on chunks above ``limit['images']`` (LIMIT), after its G pass has
    run (so a failed trial leaves gradients, reports and RNG draws behind, as a real one does)."""
    original = StyleGAN2Loss.accumulate_gradients
    limit = dict(images=LIMIT)

    def accumulate(self, phase, real_img, *args, **kwargs):
        if len(real_img) > limit['images']:
            original(self, 'Gmain', real_img, *args, **kwargs)
            raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return original(self, phase, real_img, *args, **kwargs)

    monkeypatch.setattr(StyleGAN2Loss, 'accumulate_gradients', accumulate)
    return limit


@pytest.mark.parametrize(
    'batch_gpu, group, sizes',
    [
        (32, 4, [32, 16, 8, 4]),
        (24, 4, [24, 12, 8, 4]),
        (4, 4, [4]),
        (2, 4, [2]),
        (8, None, [8]),
        (6, 1, [6, 3, 2, 1]),
    ],
)
def test_sizes_tried_keep_the_minibatch_stddev_groups(batch_gpu, group, sizes):
    assert memory.chunk_sizes(batch_gpu, group) == sizes


def _state(run):
    return dict(
        nets={k: copy.deepcopy(m.state_dict()) for k, m in run.nets.items() if m is not None},
        opts=[copy.deepcopy(p.opt.state_dict()) for p in run.phases],
        loss=copy.deepcopy(run.loss.state_dict()),
        ada=copy.deepcopy(run.ada.state_dict()),
        progress=copy.deepcopy(run.progress),
    )


def _assert_same(a, b):
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key
        elif isinstance(value, dict):
            _assert_same(value, b[key])
        elif isinstance(value, list):
            _assert_same(dict(enumerate(value)), dict(enumerate(b[key])))
        else:
            assert value == b[key], key


KD_LOSS = dict(  # the KD plugin: its head in D, its loss state and its per-step cross-term draws
    class_name='stylegan2_ada_kd.kd.loss.KDLoss',
    teacher=TINY_CLIP_SPEC,
    prompts=['a cat', 'a dog', 'a car'],
    r1_gamma=1,
    div_weight=0.1,
)


def _ada_run(batch_gpu, loss=LOSS):
    clear_teacher_cache()  # a cached random teacher would not draw its weights again: another start
    torch.manual_seed(0)
    record = tiny_record(loss, batch_size=8, batch_gpu=batch_gpu, **copy.deepcopy(ADA))
    return build_training_run(record, torch.device('cpu'), TINY_COMMON)


def _steps(run, batch_gpu, n=3):
    gen = torch.Generator().manual_seed(7)
    for _ in range(n):
        real = torch.rand([8, 3, 16, 16], generator=gen) * 2 - 1
        training_step(run, list(real.split(batch_gpu)), list(torch.zeros(8, 0).split(batch_gpu)), _labels)


def _labels(n):
    return torch.zeros(n, 0)


@pytest.mark.parametrize('loss', [LOSS, kd_loss_kwargs(**KD_LOSS)], ids=['StyleGAN2Loss', 'KDLoss'])
def test_the_trial_leaves_no_trace_and_the_run_is_that_of_the_smaller_batch_gpu(oom_above_limit, loss):
    run = _ada_run(8, loss)
    _steps(run, 4, n=1)  # optimizer moments, pl_mean, ADA state and counters all in use
    before, rng = _state(run), (torch.get_rng_state(), np.random.get_state()[1].copy())
    listener = training_stats.Collector()
    assert memory.fit_batch_gpu(run, training_step, 8, (3, 16, 16), _labels) == (LIMIT, None)
    assert listener.collect() == {}  # the trial reported nothing (tick 0 and ADA's sign stay clean)
    listener.close()
    _assert_same(before, _state(run))
    assert torch.equal(torch.get_rng_state(), rng[0]) and np.array_equal(np.random.get_state()[1], rng[1])
    assert all(p.grad is None for m in (run.G, run.D) for p in m.parameters())

    torch.manual_seed(123)
    _steps(run, LIMIT)
    plain = _ada_run(8, loss)
    _steps(plain, 4, n=1)
    torch.manual_seed(123)
    _steps(plain, LIMIT)  # what --batch-gpu=4 gives, without any trial
    _assert_same(_state(plain), _state(run))


def test_nothing_fits_says_what_to_change(oom_above_limit):
    run = tiny_training_run(LOSS, batch_size=8, batch_gpu=8)  # TINY_D's mbstd group: 2
    assert memory.fit_batch_gpu(run, training_step, 8, (3, 16, 16), _labels)[0] == 4
    oom_above_limit['images'] = 1
    with pytest.raises(memory.StepOutOfMemory, match='even at batch_gpu=2 .*--cbase, --cmax'):
        memory.fit_batch_gpu(run, training_step, 8, (3, 16, 16), _labels)


def test_library_allocation_failures_count_and_other_errors_pass_through():
    assert memory.is_out_of_memory(RuntimeError('cuDNN error: CUDNN_STATUS_ALLOC_FAILED'))
    assert memory.is_out_of_memory(RuntimeError('CUDA error: out of memory'))
    assert memory.is_out_of_memory(torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2 GiB'))
    assert not memory.is_out_of_memory(RuntimeError('mat1 and mat2 shapes cannot be multiplied'))
    other = RuntimeError('mat1 and mat2 shapes cannot be multiplied')
    with pytest.raises(RuntimeError) as caught:
        memory.raise_with_advice(other, 'Dmain', 8, Discriminator(**copy.deepcopy(TINY_D)))
    assert caught.value is other


def test_out_of_memory_in_training_names_the_phase_and_the_batch_gpu_to_pass(oom_above_limit):
    run = tiny_training_run(LOSS, batch_size=8, batch_gpu=8)
    with pytest.raises(
        memory.StepOutOfMemory, match=r'Gmain: out of GPU memory at batch_gpu=8\. .*--batch-gpu=4'
    ):
        _steps(run, 8, n=1)
    assert isinstance(
        memory.StepOutOfMemory('x'), torch.cuda.OutOfMemoryError
    )  # callers' handlers still apply


def test_the_loop_trains_at_the_size_that_fits(oom_above_limit, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(memory, 'probes', lambda device, num_gpus: True)  # as on a single GPU
    data = make_image_folder(tmp_path, n=8, res=16)
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    record = tiny_record(
        LOSS,
        run_dir=str(run_dir),
        training_set_kwargs=dict(class_name=IMAGE_FOLDER, path=data),
        batch_size=8,
        batch_gpu=8,
        total_kimg=0.016,
        kimg_per_tick=0.008,
    )
    training_loop(record, device=torch.device('cpu'))
    out = capsys.readouterr().out
    assert 'Memory: out of GPU memory at batch_gpu=8; training at batch_gpu=4' in out
    assert '2 accumulation rounds per step, as --batch-gpu=4 would' in out and 'Exiting' in out


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA GPU (scripts/gpu_verify.sh 1 runs it)'
)
def test_cuda_a_real_out_of_memory_is_fitted():
    """On a GPU, without injection: cap this process's memory between what a step at batch_gpu=4 needs and
    what one at 32 needs; the fit finds a smaller size, and training steps at it run."""
    device = torch.device('cuda')
    nets = dict(channel_base=8192, channel_max=128)
    record = tiny_record(
        LOSS,
        batch_size=32,
        batch_gpu=32,
        G_kwargs=dict(
            class_name='stylegan2_ada_kd.networks.Generator',
            z_dim=64,
            w_dim=64,
            mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=nets,
        ),
        D_kwargs=dict(class_name='stylegan2_ada_kd.networks.Discriminator', **nets),
    )
    common = dict(c_dim=0, img_resolution=128, img_channels=3)
    labels = lambda n: torch.zeros(n, 0, device=device)
    run = build_training_run(record, device, common)
    size, peak4 = memory.fit_batch_gpu(run, training_step, 4, (3, 128, 128), labels)
    base = torch.cuda.memory_allocated(device)
    cap = base + 1.5 * (peak4 - base)
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(cap / total, device)
    try:
        size, peak = memory.fit_batch_gpu(run, training_step, 32, (3, 128, 128), labels)
        assert size in (4, 8) and peak <= cap, (size, peak, cap, peak4)
        real = torch.rand([32, 3, 128, 128], device=device) * 2 - 1
        rounds = list(real.split(size))
        for _ in range(2):
            training_step(run, rounds, [labels(size)] * len(rounds), labels)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)


def test_train_py_says_what_to_pass_in_one_line(oom_above_limit, monkeypatch, tmp_path):
    """train.py ends with the advice as a click error, not a traceback (one process)."""
    from click.testing import CliRunner

    import train

    data = make_image_folder(tmp_path, n=8, res=16)
    args = [f'--outdir={tmp_path / "runs"}', f'--data={data}', '--cbase=256', '--cmax=16', '--workers=0']
    res = CliRunner().invoke(train.main, [*args, '--batch=8', '--kimg=0.008', '--grid=none'])
    assert res.exit_code == 1 and res.exception.__class__ is SystemExit
    assert 'Error: Gmain: out of GPU memory at batch_gpu=8.' in res.output and '--batch-gpu=4' in res.output
