"""Metrics as a plugin family: a kind declared outside metrics/ (a module-like ``KINDS`` declaration plus
one entry in ``registry.MODULES``) is parsed, validated, computed and reported with no other edit; the
registry's own kinds keep the reference names, directions and feature sharing."""

import json
import sys
import types

import pytest
import torch
from click.testing import CliRunner
from conftest import REPO, TINY_G

sys.path.insert(0, str(REPO))
import calc_metrics  # noqa: E402
from metrics import context, evaluation, features, metric_main, registry  # noqa: E402
from metrics.kinds import MetricKind, MetricSpec  # noqa: E402
from stylegan2_ada_kd.networks import Generator  # noqa: E402


def _brightness(images):
    """Toy detector view: uint8 [n, 3, H, W] -> mean value [n, 1]."""
    return images.float().mean(dim=(1, 2, 3))[:, None]


def _toy_compute(ctx):
    """Toy kind: mean brightness of ctx.num_gen generated images, through the shared generation path."""
    feats = context.generated_features(ctx, _brightness, 'features', context.label_pool(ctx, None), 'toy')
    return {ctx.name: float(feats['features'].mean())}


@pytest.fixture
def toy(monkeypatch):
    """Registers the toy kind: one module-like declaration and one registry entry, nothing else."""
    spec = MetricSpec('toy', 7, None, None, 'mean brightness of 7 generated images')
    kind = MetricKind('toy', _toy_compute, names={'toy7': spec}, counted='TOY', higher_is_better=True)
    module = types.ModuleType('toy_metric_kind')
    module.KINDS = (kind,)
    monkeypatch.setitem(sys.modules, 'toy_metric_kind', module)
    monkeypatch.setattr(registry, 'MODULES', (*registry.MODULES, 'toy_metric_kind'))
    return kind


def test_a_registered_kind_is_parsed_and_described(toy):
    assert metric_main.parse_metric_list('toy7, toy2k_train,fid5k_train') == [
        'toy7',
        'toy2k_train',
        'fid5k_train',
    ]
    assert metric_main.metric_spec('toy2k_full') == MetricSpec(
        'toy', 2000, 'full', None, 'TOY, 2000 generated vs all reals (no mirror)'
    )
    assert 'toy7' in metric_main.list_valid_metrics() and not metric_main.is_valid_metric('toy2k')
    assert '  toy7         mean brightness' in metric_main.describe_metrics()
    assert (
        metric_main.family_help().startswith('{fid,kid,')
        and ',toy}<N>k_{full,train}' in metric_main.family_help()
    )
    assert calc_metrics.parse_metrics(None, None, 'toy7') == ['toy7']
    assert not registry.lower_is_better('toy7')


def test_without_its_registry_entry_the_kind_is_unknown():
    assert not metric_main.is_valid_metric('toy7')
    with pytest.raises(ValueError, match='unknown metric'):
        metric_main.parse_metric_list('toy7')


def test_a_registered_kind_is_computed_and_reported(toy, tmp_path):
    G = Generator(**TINY_G)
    snap = tmp_path / 'network-snapshot-000004.pkl'
    snap.write_bytes(b'4')
    kw = dict(rank=0, device=torch.device('cpu'), run_dir=str(tmp_path), snapshot_pkl=str(snap))
    stats = evaluation.evaluate_and_report(['toy7'], G, {}, keep_best=True, progress=False, **kw)
    batches = features.generated_batches(G, None, 7, 64, 0, torch.device('cpu'))
    expected = torch.cat([_brightness(images) for _, images in batches]).mean().item()
    assert stats['Metrics/toy7']['mean'] == pytest.approx(expected, rel=1e-6) and 0 < expected < 255
    line = json.loads((tmp_path / 'metric-toy7.jsonl').read_text())
    assert line['metric'] == 'toy7' and line['snapshot_pkl'] == snap.name
    best = json.loads((tmp_path / 'best-toy7.json').read_text())
    assert best['value'] == line['results']['toy7'] and best['lower_is_better'] is False
    counted = metric_main.calc_metric('toy1k_train', G=G, device='cpu', num_gen=5, progress=False)
    assert set(counted['results']) == {'toy1k_train'}


def test_clashing_declarations_are_refused(monkeypatch):
    module = types.ModuleType('clash_metric_kind')
    module.KINDS = (
        MetricKind('fidx', _toy_compute, names={'fid50k_full': MetricSpec('fidx', 1, None, None, '')}),
    )
    monkeypatch.setitem(sys.modules, 'clash_metric_kind', module)
    monkeypatch.setattr(registry, 'MODULES', (*registry.MODULES, 'clash_metric_kind'))
    with pytest.raises(ValueError, match="'fid50k_full' clashes"):
        registry.kinds()


def test_the_reference_kinds_keep_their_names_directions_and_sharing():
    names = ['fid50k_full', 'kid50k_full', 'pr50k3_full', 'is50k', 'ppl2_wend', 'fid50k', 'kid50k', 'pr50k3']
    names += ['fid5k_full', 'fid10k_full', 'fid5k_train', 'kid5k_train']
    assert set(names) <= set(metric_main.list_valid_metrics())
    kinds = {name: metric_main.metric_spec(name).kind for name in names}
    assert [registry.lower_is_better(name) for name in names] == [kinds[n] not in ('pr', 'is') for n in names]
    assert registry.lower_is_better('not_a_metric')
    assert metric_main.feature_share(['fid10k_full', 'kid10k_train']) == {}
    assert metric_main.feature_share(['fid10k_full', 'pr50k3_full', 'is50k']) is None
    res = CliRunner().invoke(calc_metrics.main, ['--help'])
    assert '{fid,kid' in res.output and 'ppl2_wend' in res.output
