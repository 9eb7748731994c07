"""Apply the verdict rule of README.md to the collected runs (``runs/<arm>-s<seed>/``, see ``unit.py
--collect``) and write ``results.md``, ``kid.png``, ``fid.png``, ``gap.png``, ``auc.png`` and ``samples.png``.

    python experiments/results/obama32-regime/verdict.py
    python experiments/results/obama32-regime/verdict.py --subset=30     # the fallback, in subset30/

Evaluations after H (``H.txt``) are left out. Until all three seeds have both arms at H the verdict is
"pending" and the tables show what there is.
"""

from __future__ import annotations

import json
import math
import os
import sys

import click

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..'))
import few_shot  # noqa: E402

ARMS = ('DA', 'KD', 'KDrand')  # KDrand: the control (random-init teacher), run only if KD is better
SEEDS = (0, 1, 2)
CONTROL_SEEDS = (0, 1)
METRICS = ('fid1k_train', 'kid1k_train')


def read_h(folder: str = HERE) -> float | None:
    """H from ``folder``/H.txt (None while unknown or 'none')."""
    path = os.path.join(folder, 'H.txt')
    text = open(path).read().strip() if os.path.exists(path) else ''
    return float(text) if text not in ('', 'none') else None


def best(curve: list[tuple[float, float]]) -> tuple[float, float]:
    """``(kimg, value)`` of the lowest value (the earliest on ties)."""
    return min(curve, key=lambda kv: (kv[1], kv[0]))


def decide(runs: dict, h: float | None) -> tuple[str, list[str]]:
    """The rule's outcome and one table line per seed, from ``runs[(arm, seed)] = {'kid', 'fid'}`` curves."""
    rows, ratios, fid_better, fid_worse, da_unturned = [], [], 0, 0, 0
    complete = h is not None
    for seed in SEEDS:
        da, kd = runs.get(('DA', seed)), runs.get(('KD', seed))
        if not (da and kd and da['kid'] and kd['kid']):
            complete = False
            continue
        lasts = da['kid'][-1][0], kd['kid'][-1][0]
        if h is not None and min(lasts) < h:  # a seed still running: no ratio yet
            complete = False
            rows.append(
                f'| {seed} | running: evaluated to {lasts[0]:g} kimg | to {lasts[1]:g} kimg | | | | |'
            )
            continue
        complete &= h is not None
        (k_da, kid_da), (k_kd, kid_kd) = best(da['kid']), best(kd['kid'])
        fid_da, fid_kd = best(da['fid'])[1], best(kd['fid'])[1]
        r = kid_kd / kid_da
        ratios.append(r)
        fid_better += fid_kd < fid_da
        fid_worse += fid_kd > fid_da
        at_last = k_da == da['kid'][-1][0]
        da_unturned += at_last
        rows.append(
            f'| {seed} | {kid_da:.4f} @{k_da:g} | {kid_kd:.4f} @{k_kd:g} | {r:.3f} '
            f'| {fid_da:.2f} | {fid_kd:.2f} | {"yes" if at_last else "no"} |'
        )
    gmean = geometric_mean(ratios)
    rows.append(f'| geometric mean of r | | | {gmean:.3f} | | | |')
    if not complete:
        return f'pending ({len(ratios)} of 3 seeds have both arms at H = {h})', rows
    if da_unturned >= 2:
        return 'inconclusive: DA best KID at its last evaluation in two or more seeds', rows
    if all(r < 1 for r in ratios) and gmean <= 0.85 and fid_better >= 2:
        return 'KD better', rows
    if all(r > 1 for r in ratios) and gmean >= 1 / 0.85 and fid_worse >= 2:
        return 'KD worse', rows
    return 'no effect of 15% or more', rows


def geometric_mean(values: list[float]) -> float:
    """The geometric mean of positive ``values`` (nan when there are none)."""
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float('nan')


def decide_control(runs: dict, h: float | None) -> tuple[str, list[str]] | None:
    """The control's outcome (README: "Control") and one table line per control seed, or None when there is
    no control run. Per seed q = best KID of KD / of KDrand (pretrained over random teacher) and
    c = best KID of KDrand / of DA."""
    if not any(arm == 'KDrand' for arm, _ in runs):
        return None
    rows, q, c, at_h = [], [], [], 0
    for seed in CONTROL_SEEDS:
        da, kd, rnd = (runs.get((arm, seed)) for arm in ARMS)
        if not (da and kd and rnd and rnd['kid']):
            continue
        at_h += h is not None and rnd['kid'][-1][0] >= h
        (k_rnd, kid_rnd), kid_da, kid_kd = best(rnd['kid']), best(da['kid'])[1], best(kd['kid'])[1]
        q.append(kid_kd / kid_rnd)
        c.append(kid_rnd / kid_da)
        rows.append(f'| {seed} | {kid_rnd:.4f} @{k_rnd:g} | {q[-1]:.3f} | {c[-1]:.3f} |')
    rows.append(f'| geometric mean | | {geometric_mean(q):.3f} | {geometric_mean(c):.3f} |')
    if at_h < len(CONTROL_SEEDS):
        return f'pending ({at_h} of {len(CONTROL_SEEDS)} control seeds at H)', rows
    if all(v < 1 for v in q) and geometric_mean(q) <= 0.85:
        return 'distillation: the pretrained teacher beats the random one by 15% or more', rows
    if all(v < 1 for v in c) and geometric_mean(c) <= 0.85:
        return 'regularisation: a random teacher helps as well, within 15%', rows
    return 'neither: the random teacher neither matches KD nor falls 15% short of it', rows


@click.command()
@click.option('--subset', type=int, help='The fallback on this many training images (subset<N>/)')
def main(subset: int | None) -> None:
    """Read the collected runs, write the results files and print results.md."""
    folder = HERE if subset is None else os.path.join(HERE, f'subset{subset}')
    h = read_h(folder)
    within = lambda curve: [kv for kv in curve if h is None or kv[0] <= h + 1e-9]
    runs, table_runs, grids = {}, {}, {}
    for arm in ARMS:
        for seed in SEEDS:
            root = os.path.join(folder, 'runs', f'{arm}-s{seed}')
            if not few_shot.run_dirs(root):
                continue
            fid, kid = (within(few_shot.read_metric_all(root, m)) for m in METRICS)
            overfit = {k: within(few_shot.read_stats(root, f'Overfit/{k}')) for k in ('gap', 'auc')}
            runs[(arm, seed)] = dict(fid=fid, kid=kid)
            table_runs[f'{arm} s{seed}'] = dict(variant=arm, fid=fid, kid=kid, **overfit)
            if kid:
                grid = [os.path.join(d, f'fakes{int(best(kid)[0]):06d}.png') for d in few_shot.run_dirs(root)]
                grids.update({f'{arm} s{seed} @{best(kid)[0]:g}': g for g in grids_that_exist(grid)})
    outcome, rows = decide(runs, h)
    kd_lines = [
        f'- {label}: median over ticks of grad_ratio {median(r["grad"]):.3g}, grad_ratio_cgkd '
        f'{median(r["cgkd"]):.3g}, cgkd_row_spread {median(r["spread"]):.3g}'
        for label, r in kd_stats(folder, within).items()
    ]
    notes = [
        '',
        f'H = {h} kimg (H.txt). **Verdict by the rule of README.md: {outcome}.**',
        '',
        '| seed | DA best KID @kimg | KD best KID @kimg | r = KD / DA | DA best FID | KD best FID '
        '| DA best at last |',
        '|---|---|---|---|---|---|---|',
        *rows,
        '',
        "KD runs, lambda = 0.1 (norm of the weighted KD gradient on D's trunk over the adversarial one):",
        *kd_lines,
        '',
        'Cost per run (wall time of its train.py processes on one shared CPU core, resumed sessions summed;',
        'the evaluations are inside it):',
        *cost_lines(folder, h),
    ]
    control = decide_control(runs, h)
    if control is not None:
        notes += [
            '',
            f'**Control (random-init teacher, README "Control"): {control[0]}.**',
            '',
            '| seed | KDrand best KID @kimg | q = KD / KDrand | c = KDrand / DA |',
            '|---|---|---|---|',
            *control[1],
        ]
    teacher = 'EfficientNet-Lite0 at 64'
    few_shot.write_table(os.path.join(folder, 'results.md'), table_runs, teacher, METRICS, notes)
    data = '100-shot Obama 32x32' if subset is None else f'{subset} of 100-shot Obama 32x32'
    few_shot.write_figures(folder, table_runs, data)
    if grids:
        few_shot.samples_figure(grids, os.path.join(folder, 'samples.png'), 32)
    print(open(os.path.join(folder, 'results.md')).read())


def median(values: list[float]) -> float:
    """The median of the finite ``values`` (nan when there are none)."""
    finite = sorted(v for v in values if math.isfinite(v))
    return finite[len(finite) // 2] if finite else float('nan')


def kd_stats(folder: str, within) -> dict[str, dict[str, list[float]]]:  # noqa: ANN001
    """Per KD or KDrand run, the per-tick ``Loss/kd/grad_ratio``, ``_cgkd`` and ``Loss/kd/cgkd_row_spread``
    values."""
    keys = dict(grad='Loss/kd/grad_ratio', cgkd='Loss/kd/grad_ratio_cgkd', spread='Loss/kd/cgkd_row_spread')
    out = {}
    for arm in ARMS[1:]:
        for seed in SEEDS:
            root = os.path.join(folder, 'runs', f'{arm}-s{seed}')
            if few_shot.run_dirs(root):
                stats = {k: within(few_shot.read_stats(root, key)) for k, key in keys.items()}
                out[f'{arm} s{seed}'] = {k: [v for _, v in rows] for k, rows in stats.items()}
    return out


def cost_lines(folder: str, h: float | None) -> list[str]:
    """Per run: kimg reached, wall hours (the last ``Timing/total_sec`` of each of its run directories,
    summed) and the hours of its evaluations (``total_time`` of the metric lines up to H)."""
    lines = []
    for arm in ARMS:
        for seed in SEEDS:
            root = os.path.join(folder, 'runs', f'{arm}-s{seed}')
            dirs = few_shot.run_dirs(root)
            if not dirs:
                continue
            wall = sum(_last_stat(d, 'Timing/total_sec') for d in dirs)
            evals = [
                json.loads(line)
                for d in dirs
                for m in METRICS
                if os.path.exists(os.path.join(d, f'metric-{m}.jsonl'))
                for line in open(os.path.join(d, f'metric-{m}.jsonl'))
            ]
            kimg = max((k for k, _ in few_shot.read_stats(root, 'Progress/kimg')), default=0)
            evals = [e for e in evals if h is None or few_shot.snapshot_kimg(e['snapshot_pkl']) <= h + 1e-9]
            eval_h = sum(e['total_time'] for e in evals) / 3600
            lines.append(
                f'- {arm} s{seed}: {kimg:.0f} kimg, {wall / 3600:.2f} h wall, of which {eval_h:.2f} h in '
                f'{len(evals) // len(METRICS)} evaluations of KID1k and FID1k'
            )
    return lines


def _last_stat(run_dir: str, key: str) -> float:
    """The value of ``key`` in the last line of ``run_dir``/stats.jsonl that has it (0 when none)."""
    path = os.path.join(run_dir, 'stats.jsonl')
    values = (
        [json.loads(line)[key]['mean'] for line in open(path) if key in line] if os.path.exists(path) else []
    )
    return values[-1] if values else 0.0


def grids_that_exist(paths: list[str]) -> list[str]:
    """The paths of ``paths`` that exist (a resumed run's grid lives in one of its run directories)."""
    return [p for p in paths if os.path.exists(p)]


if __name__ == '__main__':
    main()
