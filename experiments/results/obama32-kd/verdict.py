"""Apply stage 2's verdict rule (README, "Verdict rule") to the collected metric results.

Reads ``stage2/runs/<variant>-s<seed>/*/metric-{fid1k,kid1k}_train.jsonl`` and prints, per evaluated kimg, the
FID/KID of every run, the per-variant range, and the verdict at the last point: KD better (worse) when both
KD seeds beat (lose to) both DA seeds in FID *and* in KID, otherwise no difference beyond the seed spread.

    python experiments/results/obama32-kd/verdict.py [--kimg=20]
"""

import glob
import os
import sys

import click

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # experiments/, for few_shot's readers
from few_shot import read_metric_all, read_stats  # noqa: E402

METRICS = ('fid1k_train', 'kid1k_train')


def read_runs(root: str) -> dict[str, dict[str, dict[int, float]]]:
    """``{run: {metric: {kimg: value}}}`` for every ``<variant>-s<seed>`` folder under ``root``."""
    runs = sorted(glob.glob(os.path.join(root, '*-s[0-9]*')))
    return {os.path.basename(r): {m: dict(read_metric_all(r, m)) for m in METRICS} for r in runs}


def verdict(da: list[tuple[float, float]], kd: list[tuple[float, float]]) -> str:
    """The rule on ``[(fid, kid)]`` of the DA seeds and of the KD seeds at one point."""
    better = all(max(k[i] for k in kd) < min(d[i] for d in da) for i in range(2))
    worse = all(min(k[i] for k in kd) > max(d[i] for d in da) for i in range(2))
    return 'KD better' if better else 'KD worse' if worse else 'no difference beyond the seed spread'


@click.command()
@click.option('--root', default=os.path.join(HERE, 'stage2', 'runs'), show_default=True)
@click.option('--kimg', type=int, default=20, show_default=True, help='The point the verdict is read at')
def main(root: str, kimg: int) -> None:
    runs = read_runs(root)
    kimgs = sorted({k for r in runs.values() for k in r[METRICS[0]]})
    for k in kimgs:
        print(f'kimg {k}:')
        sides = {}
        for name, values in runs.items():
            if k in values[METRICS[0]] and k in values[METRICS[1]]:
                fid, kid = values[METRICS[0]][k], values[METRICS[1]][k]
                sides.setdefault(name.split('_')[0].rsplit('-s', 1)[0], []).append((fid, kid))
                print(f'  {name:12s} FID {fid:7.2f}  KID {kid:.4f}')
        for side, vals in sides.items():
            fids, kids = [v[0] for v in vals], [v[1] for v in vals]
            fid_range, kid_range = f'{min(fids):.2f}-{max(fids):.2f}', f'{min(kids):.4f}-{max(kids):.4f}'
            print(f'  {side}: {len(vals)} runs, FID {fid_range}, KID {kid_range}')
        if len(sides.get('DA', [])) >= 2 and len(sides.get('KD', [])) >= 2:
            print(f'  rule: {verdict(sides["DA"], sides["KD"])}' + ('  <- verdict' if k == kimg else ''))
    print('Overfit/gap (one tick is noisy; the mean over the ticks after 10 kimg is steadier):')
    for run in sorted(glob.glob(os.path.join(root, '*-s[0-9]*'))):
        name, rows = os.path.basename(run), read_stats(run, 'Overfit/gap')
        late = [g for k, g in rows if k > 10]
        points = ' '.join(f'{g:.3f}@{k:.1f}' for k, g in rows if abs(k / 5 - round(k / 5)) < 0.1)
        mean = f'{sum(late) / len(late):.3f}' if late else '-'
        print(f'  {name:12s} {points}  mean after 10 kimg {mean}')


if __name__ == '__main__':
    main()
