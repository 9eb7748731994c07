"""The public run API (training_run): what build_training_run builds, one training_step, and an exact resume
from a DiffAugment snapshot written before DiffAugment dropped its dummy ``p`` buffer."""

import copy

import torch
from conftest import tiny_training_run

from stylegan2_ada_kd import checkpoint
from stylegan2_ada_kd.training.run import training_step


def _run(augment_kwargs=None, augment_p=0.0, resume_pkl=None):
    """A tiny one-process run (batch 4 in one round) with the StyleGAN2 loss, built with seed 0."""
    torch.manual_seed(0)
    loss = dict(class_name='stylegan2_ada_kd.training.loss.StyleGAN2Loss', r1_gamma=1)
    return tiny_training_run(loss, augment_kwargs=augment_kwargs, augment_p=augment_p, resume_pkl=resume_pkl)


def _step(run, seed):
    real = torch.rand([4, 3, 16, 16], generator=torch.Generator().manual_seed(seed)) * 2 - 1
    training_step(run, [real], [torch.zeros(4, 0)], lambda n: torch.zeros(n, 0))


def test_build_and_step_with_a_fixed_p():
    run = _run(dict(class_name='stylegan2_ada_kd.augment.ada.AugmentPipe', preset='bgc'), augment_p=0.25)
    assert [phase.name for phase in run.phases] == ['Gmain', 'Greg', 'Dmain', 'Dreg']
    assert run.augment_probability() == 0.25 and run.ada is None
    before = copy.deepcopy(run.G_ema.state_dict())
    _step(run, 1)
    assert (run.progress.cur_nimg, run.progress.batch_idx) == (4, 1)
    assert any(not torch.equal(v, run.G_ema.state_dict()[k]) for k, v in before.items())  # EMA moved


def test_an_old_diffaugment_snapshot_with_its_p_buffer_resumes_exactly(tmp_path):
    """Older DiffAugment snapshots hold ``augment_pipe.state_dict == {'p': 1}``; they load and resume."""
    diffaug = dict(class_name='stylegan2_ada_kd.augment.diffaugment.DiffAugment')
    run = _run(diffaug, augment_p=None)
    assert run.augment_probability() is None  # nothing to write into the pipe or report as Progress/augment
    _step(run, 1)
    path = checkpoint.write_snapshot(
        str(tmp_path / 'network-snapshot-000000.pkl'),
        run.nets,
        run.phases,
        run.loss,
        run.ada,
        run.progress,
        {},
        0,
        run.device,
    )
    raw = torch.load(path, weights_only=True)
    assert raw['networks']['augment_pipe']['state_dict'] == {}
    raw['networks']['augment_pipe']['state_dict']['p'] = torch.ones([])  # as the older code wrote it
    torch.save(raw, path)
    assert checkpoint.load_network_pkl(path)['augment_pipe'].policy == ('color', 'translation', 'cutout')

    resumed = _run(diffaug, augment_p=None, resume_pkl=path)
    assert resumed.progress == run.progress
    for r in (run, resumed):  # the next step of each from the snapshot's RNG state
        checkpoint.restore_rng(resumed.resumed, 0, r.device)
        _step(r, 2)
    for key, value in run.D.state_dict().items():
        assert torch.equal(value, resumed.D.state_dict()[key]), key
