"""Training-loop helpers: optimizer coverage of plugin heads and the once-per-tick loss diagnostics."""

import numpy as np
import pytest
import torch
from conftest import TINY_D, TINY_G, tiny_record
from test_contracts import MinimalLoss

from stylegan2_ada_kd.networks import Discriminator, Generator
from stylegan2_ada_kd.training.loop import _loss_diagnostics
from stylegan2_ada_kd.training.run import build_phases, check_optimizer_covers


def test_a_head_attached_after_the_optimizers_is_an_error():
    G, D = Generator(**TINY_G), Discriminator(**TINY_D)
    D.attach_head('late', torch.nn.Linear(4, 4))
    build_phases(G, D, tiny_record({}))  # attached before: covered
    G, D = Generator(**TINY_G), Discriminator(**TINY_D)
    phases = build_phases(G, D, tiny_record({}))
    D.attach_head('late', torch.nn.Linear(4, 4))
    with pytest.raises(RuntimeError, match='heads.late.weight'):
        check_optimizer_covers(phases[-1])


class _Diagnosing(MinimalLoss):
    """A loss whose diagnostic draws random numbers (as augmentation and cross-term draws do)."""

    def tick_diagnostics(self, real, real_c, gen_z, gen_c):
        noise = torch.randn(3).sum() + np.random.rand()
        return {'Loss/test/diag': {'num': len(real), 'mean': float(noise + gen_z.sum()), 'std': 0.0}}


def test_tick_diagnostics_leave_the_training_rng_untouched():
    class Data:
        label_dim = 0

    real, c = torch.zeros(4, 3, 16, 16), torch.zeros(4, 0)
    torch.manual_seed(5)
    np.random.seed(5)
    expected = (torch.rand(2), np.random.rand())
    torch.manual_seed(5)
    np.random.seed(5)
    out = _loss_diagnostics(_Diagnosing(*[None] * 4), real, c, 8, Data(), torch.device('cpu'))
    assert out['Loss/test/diag']['num'] == 4
    assert torch.equal(torch.rand(2), expected[0]) and np.random.rand() == expected[1]
    assert _loss_diagnostics(MinimalLoss(*[None] * 4), real, c, 8, Data(), torch.device('cpu')) == {}
