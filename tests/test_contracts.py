"""The declared contracts (stylegan2_ada_kd.training.contracts): a minimal Loss without the optional hooks
trains a step and runs the loop; a hook's tick stats reach stats.jsonl; what is not a Loss is refused early;
every augmentation states its tick status."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import IMAGE_FOLDER, make_image_folder, tiny_record, tiny_training_run

from stylegan2_ada_kd.training.contracts import Loss
from stylegan2_ada_kd.training.loop import training_loop
from stylegan2_ada_kd.training.run import training_step


class MinimalLoss(Loss):
    """Only the required methods: non-saturating G and logistic D losses, no regularisation, no state."""

    def __init__(self, device, G, D, augment_pipe):
        self.G, self.D = G, D

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        if phase in ('Gmain', 'Gboth'):
            loss = F.softplus(-self.D(self.G(gen_z, gen_c), gen_c))
        elif phase in ('Dmain', 'Dboth'):
            with torch.no_grad():
                fake = self.G(gen_z, gen_c)
            loss = F.softplus(self.D(fake, gen_c)) + F.softplus(-self.D(real_img, real_c))
        else:
            return
        loss.mean().mul(gain).backward()

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class ReportingLoss(MinimalLoss):
    """MinimalLoss with both optional hooks."""

    def describe(self):
        return 'reporting loss, weight 1'

    def tick_diagnostics(self, real_img, real_c, gen_z, gen_c):
        return {'Loss/test/tick': {'num': len(real_img), 'mean': float(gen_z.shape[1]), 'std': 0.0}}


class NotALoss:
    """Has the methods, but does not declare the contract."""

    def __init__(self, device, G, D, augment_pipe):
        pass


def test_a_minimal_loss_has_the_default_hooks_and_trains_a_step():
    torch.manual_seed(0)
    run = tiny_training_run(dict(class_name=f'{__name__}.MinimalLoss'))
    assert run.loss.describe() == 'MinimalLoss'
    assert run.loss.tick_diagnostics(torch.zeros(4, 3, 16, 16), *[torch.zeros(4, n) for n in (0, 8, 0)]) == {}
    before = [p.detach().clone() for p in run.D.parameters()]
    training_step(run, [torch.rand(4, 3, 16, 16) * 2 - 1], [torch.zeros(4, 0)], lambda n: torch.zeros(n, 0))
    assert run.progress.cur_nimg == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, run.D.parameters()))


def test_what_does_not_declare_the_loss_contract_is_refused_before_training():
    with pytest.raises(TypeError, match='NotALoss is not a stylegan2_ada_kd.training.contracts.Loss'):
        tiny_training_run(dict(class_name=f'{__name__}.NotALoss'))
    with pytest.raises(TypeError, match='abstract'):  # a required method missing

        class NoState(Loss):
            def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
                pass

        NoState()


@pytest.mark.parametrize('loss', ['MinimalLoss', 'ReportingLoss'])
def test_the_loop_calls_the_hooks_directly(tmp_path, capsys, loss):
    data = make_image_folder(tmp_path / 'data', n=8)
    record = tiny_record(
        dict(class_name=f'{__name__}.{loss}'),
        run_dir=str(tmp_path),
        training_set_kwargs=dict(class_name=IMAGE_FOLDER, path=data),
        total_kimg=0.008,  # two steps of 4, two ticks
    )
    training_loop(record.to_dict(), device=torch.device('cpu'))
    log = capsys.readouterr().out
    ticks = [json.loads(line) for line in (tmp_path / 'stats.jsonl').read_text().splitlines()]
    assert len(ticks) == 2 and all(t['Progress/kimg']['mean'] > 0 for t in ticks)
    if loss == 'MinimalLoss':
        assert 'Loss: MinimalLoss\n' in log
        assert not any(name.startswith('Loss/') for t in ticks for name in t)
    else:
        assert 'Loss: reporting loss, weight 1\n' in log
        assert [t['Loss/test/tick'] for t in ticks] == [{'num': 4, 'mean': 8.0, 'std': 0.0}] * 2


def test_every_augmentation_states_its_tick_status():
    from stylegan2_ada_kd.augment.ada import AugmentPipe
    from stylegan2_ada_kd.augment.diffaugment import DiffAugment
    from stylegan2_ada_kd.training.report import augment_status

    pipe = AugmentPipe(xflip=1)
    pipe.p.copy_(torch.tensor(0.25))
    assert augment_status(pipe) == '0.250'
    assert augment_status(DiffAugment('color,cutout')) == 'diffaug(color,cutout)'
    assert augment_status(None) is None
