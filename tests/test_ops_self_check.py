"""The CUDA plugins' first-use self-check, on the CPU: stand-in "compiled" kernels (right and deliberately
wrong ones) run on CPU tensors, and the test sees the verdict, the one warning, the fallback to the
reference and the record in ``custom_ops.json``. Opt-in (SG2KD_TEST_EMULATION=1): the kernels' own code,
compiled for the CPU, passes. The real kernels are checked on a GPU in test_ops_cuda.py."""

import json
import re
import types

import pytest
import torch
from plugin_fakes import (
    EmulatedBiasActPlugin,
    EmulatedUpFirDn2dPlugin,
    FakeBiasActPlugin,
    FakeUpFirDn2dPlugin,
)

from stylegan2_ada_kd.training.report import report_ops
from torch_utils import custom_ops
from torch_utils.ops import self_check

CPU = torch.device('cpu')
MISMATCH = r'mismatch: max abs err ([0-9.e+-]+|inf) \(relative to max\(1, \|reference\|\); tolerance '


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    monkeypatch.setattr(custom_ops, '_states', {})
    monkeypatch.setattr(custom_ops, '_warned', set())
    monkeypatch.setattr(custom_ops, '_checks', {})
    for name in (custom_ops.ENV_MODE, custom_ops.ENV_CHECK):
        monkeypatch.delenv(name, raising=False)


class IgnoresFlip(FakeUpFirDn2dPlugin):
    """Always convolves: right for symmetric filters, wrong for the augment pipe's and for gradients."""

    def __init__(self):
        self.calls = 0

    def upfirdn2d(self, x, f, *geometry_flip_gain):
        self.calls += 1
        *geometry, _, gain = geometry_flip_gain
        return super().upfirdn2d(x, f, *geometry, False, gain)


class CropsOneColumnLess(FakeUpFirDn2dPlugin):
    def upfirdn2d(self, x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain):
        return super().upfirdn2d(x, f, upx, upy, downx, downy, px0 + 1, px1 - 1, py0, py1, flip, gain)


class LReLUSlopeZeroInBackward(FakeBiasActPlugin):
    """Right outputs, but the first-order kernel treats lrelu as relu."""

    def bias_act(self, x, b, ref, g1, g2, dim, act_id, mode, ref_is_y, alpha, gain, clamp):
        alpha = 0.0 if mode == 1 else alpha
        return super().bias_act(x, b, ref, g1, g2, dim, act_id, mode, ref_is_y, alpha, gain, clamp)


class Float16Garbage(FakeBiasActPlugin):
    """Right in float32, 3% off in float16 (as a wrong half-precision conversion might be)."""

    def bias_act(self, x, b, ref, g1, g2, *args):
        y = super().bias_act(x, b, ref, g1, g2, *args)
        return y * 1.03 if y.dtype == torch.float16 else y


class NaNs(FakeBiasActPlugin):
    def bias_act(self, *args):
        return torch.full_like(super().bias_act(*args), float('nan'))


class Raises(FakeUpFirDn2dPlugin):
    MESSAGE = 'CUDA error: no kernel image is available for execution on the device\nmore lines'

    def upfirdn2d(self, *args):
        raise RuntimeError(self.MESSAGE)


def _loaded(op, plugin):
    """Pretend that ``op``'s plugin was built and loaded in this process as ``plugin``."""
    custom_ops._states[op] = (plugin, {'status': 'loaded', 'path': 'fake.so', 'arch': '9.0'})
    return plugin


def _cuda_like(device=CPU):
    """What plugin_for reads of a CUDA tensor; the stand-in kernels then run on ``device``."""
    return types.SimpleNamespace(is_cuda=True, device=device)


def test_right_kernels_pass():
    assert self_check.run('upfirdn2d', FakeUpFirDn2dPlugin(), CPU) == 'ok'
    assert self_check.run('bias_act', FakeBiasActPlugin(), CPU) == 'ok'
    with pytest.raises(ValueError, match='no self-check'):
        self_check.run('fma', FakeBiasActPlugin(), CPU)


@pytest.mark.parametrize(
    'op, plugin, where',  # where: the end of the outcome, naming the worst case, dtype and quantity
    [
        ('upfirdn2d', IgnoresFlip(), 'augment up, float32, grad x'),
        ('upfirdn2d', CropsOneColumnLess(), 'float32, (forward|grad x|grad2 dy)'),
        ('bias_act', LReLUSlopeZeroInBackward(), 'lrelu, float32, grad (x|b)'),  # the forward is right
        ('bias_act', Float16Garbage(), 'float16, (forward|grad x|grad b|grad2 dy)'),
        ('bias_act', NaNs(), 'conv lrelu clamp, float32, forward'),
    ],
)
def test_wrong_kernels_are_caught_and_the_worst_case_is_named(op, plugin, where):
    outcome = self_check.run(op, plugin, CPU)
    assert re.match(MISMATCH, outcome) and re.search(f'({where})$', outcome), outcome
    if isinstance(plugin, NaNs):
        assert 'max abs err inf' in outcome


def test_a_kernel_that_raises_is_an_error_not_a_crash():
    outcome = self_check.run('upfirdn2d', Raises(), CPU)
    assert (
        outcome == 'error: RuntimeError: CUDA error: no kernel image is available for execution on the device'
    )


def test_check_needs_no_grad_mode_and_keeps_the_global_random_state():
    state = torch.get_rng_state()
    with torch.inference_mode():
        assert self_check.run('bias_act', FakeBiasActPlugin(), CPU) == 'ok'
    with torch.no_grad():
        assert self_check.run('upfirdn2d', IgnoresFlip(), CPU).startswith('mismatch')
    assert torch.equal(torch.get_rng_state(), state)


def test_a_wrong_kernel_warns_once_then_the_reference_is_used(monkeypatch):
    plugin = _loaded('upfirdn2d', IgnoresFlip())
    x = _cuda_like()
    with pytest.warns(custom_ops.CustomOpsWarning) as record:
        assert custom_ops.plugin_for('upfirdn2d', x) is None
        runs = plugin.calls
        assert custom_ops.plugin_for('upfirdn2d', x) is None  # remembered: neither re-run nor re-warned
    assert plugin.calls == runs > 0 and len(record) == 1
    text = str(record[0].message)
    assert "'upfirdn2d' failed its self-check on cpu" in text and 'max abs err' in text
    with pytest.raises(RuntimeError, match=r"'upfirdn2d' failed its self-check(.|\n)*" + MISMATCH):
        custom_ops.plugin_for('upfirdn2d', x, impl='cuda')
    monkeypatch.setenv('SG2KD_OPS', 'cuda')
    with pytest.raises(RuntimeError, match='self-check'):
        custom_ops.plugin_for('upfirdn2d', x)
    assert plugin.calls == runs
    # bias_act's own plugin is unaffected.
    bias_plugin = _loaded('bias_act', FakeBiasActPlugin())
    assert custom_ops.plugin_for('bias_act', x) is bias_plugin


def test_the_outcome_is_recorded_in_custom_ops_json(tmp_path):
    _loaded('upfirdn2d', IgnoresFlip())
    _loaded('bias_act', FakeBiasActPlugin())
    with pytest.warns(custom_ops.CustomOpsWarning, match='upfirdn2d'):
        custom_ops.plugin_for('upfirdn2d', _cuda_like())
    custom_ops.plugin_for('bias_act', _cuda_like())
    report_ops(str(tmp_path), 0, CPU)
    checks = json.loads((tmp_path / 'custom_ops.json').read_text())['self_check']
    assert checks['bias_act'] == 'ok' and checks['upfirdn2d'].endswith('augment up, float32, grad x')
    assert custom_ops.active_impl()['self_check']['bias_act'] == 'cpu: ok'


def test_each_device_is_checked_once_and_reported_on_its_own(monkeypatch):
    runs = []

    def verdict(op, plugin, device):  # a wrong kernel only on the second GPU
        runs.append((op, str(device)))
        return (
            'ok' if device.index == 0 else 'mismatch: max abs err 0.5 (...) in upsample2d, float16, forward'
        )

    monkeypatch.setattr(self_check, 'run', verdict)
    for op in custom_ops.PLUGINS:
        _loaded(op, object())
    first = custom_ops.active_impl('cuda:0')
    assert first['ops'] == {'upfirdn2d': 'cuda', 'bias_act': 'cuda'}
    assert first['self_check'] == {'upfirdn2d': 'ok', 'bias_act': 'ok'}
    with pytest.warns(custom_ops.CustomOpsWarning, match='on cuda:1'):
        second = custom_ops.active_impl('cuda:1')
    assert second['ops'] == {'upfirdn2d': 'ref', 'bias_act': 'ref'}
    assert second['self_check']['bias_act'].startswith('mismatch: max abs err 0.5')
    assert custom_ops.active_impl('cuda:0') == first and len(runs) == 4
    assert custom_ops.plugin_for('bias_act', _cuda_like(torch.device('cuda:1'))) is None
    assert len(runs) == 4
    overall = custom_ops.active_impl()
    assert overall['self_check']['upfirdn2d'].startswith('cuda:0: ok; cuda:1: mismatch')
    assert overall['ops'] == {'upfirdn2d': 'ref', 'bias_act': 'ref'}
    monkeypatch.setenv('SG2KD_OPS', 'cuda')
    with pytest.raises(RuntimeError, match='self-check on cuda:1'):
        custom_ops.active_impl('cuda:1')


def test_the_check_can_be_switched_off(monkeypatch):
    monkeypatch.setenv('SG2KD_OPS_CHECK', '0')
    plugin = _loaded('upfirdn2d', IgnoresFlip())
    assert custom_ops.plugin_for('upfirdn2d', _cuda_like()) is plugin and plugin.calls == 0
    assert custom_ops.active_impl(CPU)['self_check']['upfirdn2d'] == 'skipped (SG2KD_OPS_CHECK=0)'


def test_nothing_is_checked_without_a_plugin():
    report = custom_ops.active_impl()
    assert report['self_check'] == {'upfirdn2d': 'not run', 'bias_act': 'not run'}
    assert custom_ops.plugin_for('upfirdn2d', torch.zeros(1, 1, 2, 2)) is None and custom_ops._checks == {}


def test_the_kernels_code_passes_on_its_cpu_emulation(emulation):
    """The kernels' own arithmetic (tiles, float16 outputs, the clamp mask read from the stored output)
    against the check's cases and tolerances: opt-in, as it compiles (SG2KD_TEST_EMULATION=1)."""
    assert self_check.run('upfirdn2d', EmulatedUpFirDn2dPlugin(emulation), CPU) == 'ok'
    assert self_check.run('bias_act', EmulatedBiasActPlugin(emulation), CPU) == 'ok'
