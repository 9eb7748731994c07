"""Descriptive, outside the verdict rule: do the runs' best-KID generators copy their 80 training images?

For every arm and seed that has reached H, ``nearest.py`` on its best-KID snapshot (64 samples, seeds 0-63,
Inception pool3 features; the snapshots stay in ``$EXP``), into ``memorisation/<arm>-s<seed>.json`` and
``.png`` (seeds 0-15), and the table ``memorisation.md``:

    python experiments/results/obama32-regime/memorisation.py --exp=/work/exp/obama32-regime

A sample's distance to its nearest training image (or mirrored copy) is set against the 20 held-out
images' distances to theirs: ``ratio`` = median sample distance / median held-out distance, ``below p05`` =
the share of samples nearer to a training image than 95% of the held-out images are (near copies).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import click
import PIL.Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, '..', '..', '..'))
sys.path.insert(0, os.path.join(REPO, 'experiments'))
import few_shot  # noqa: E402

sys.path.insert(0, HERE)
from verdict import METRICS, SEEDS, best, read_h  # noqa: E402

ARMS = ('DA', 'KD')
SAMPLES = '0-63'
GRID_ROWS = 16  # Rows (seeds 0-15) of each committed grid.


def best_snapshot(root: str, h: float) -> tuple[float, str] | None:
    """``(kimg, path)`` of the arm's best-KID snapshot in ``root`` once it has reached ``h``, else None."""
    curve = [kv for kv in few_shot.read_metric_all(root, METRICS[1]) if kv[0] <= h + 1e-9]
    if not curve or max(k for k, _ in curve) < h - 1e-9:
        return None
    kimg = best(curve)[0]
    return kimg, few_shot.snapshots(root)[kimg]


def table(rows: list[dict]) -> str:
    """memorisation.md from the nearest.json summaries."""
    lines = [
        '# Do the best-KID generators copy their training images? (descriptive, not part of the rule)',
        '',
        '`python experiments/results/obama32-regime/memorisation.py --exp=$EXP`: `nearest.py` on each '
        f"run's best-KID snapshot, seeds {SAMPLES}, Inception pool3 features (L2), against the 80 training "
        "images and their mirrored copies; the scale is the 20 held-out images' distance to their nearest "
        'training image or mirrored copy.',
        '',
        '| run | best KID @kimg | median sample distance | median held-out distance | ratio | below p05 '
        '| below min |',
        '|---|---|---|---|---|---|---|',
    ]
    for row in rows:
        s = row['summary']
        lines.append(
            f'| {row["run"]} | {row["kimg"]:g} | {s["generated_median"]:.3f} | {s["real_median"]:.3f} '
            f'| {s["ratio"]:.3f} | {s["below_real_p05"]:.0%} | {s["below_real_min"]:.0%} |'
        )
    return '\n'.join(lines) + '\n'


@click.command()
@click.option('--exp', required=True, metavar='DIR', help='The experiment folder with runs/ (snapshots)')
def main(exp: str) -> None:
    """Run nearest.py where it has not run yet and write the table."""
    h = read_h()
    out = os.path.join(HERE, 'memorisation')
    os.makedirs(out, exist_ok=True)
    rows = []
    for arm in ARMS:
        for seed in SEEDS:
            found = best_snapshot(os.path.join(exp, 'runs', f'{arm}-s{seed}'), h)
            if found is None:
                continue
            kimg, snap = found
            name, work = f'{arm}-s{seed}', os.path.join(exp, 'nearest', f'{arm}-s{seed}')
            report = os.path.join(work, 'nearest.json')
            if not os.path.exists(report) or json.load(open(report))['network'] != snap:
                cmd = [
                    sys.executable,
                    'nearest.py',
                    f'--network={snap}',
                    f'--seeds={SAMPLES}',
                    f'--outdir={work}',
                ]
                print('+ ' + ' '.join(cmd), flush=True)
                subprocess.run(cmd, cwd=REPO, check=True)
            shutil.copy(report, os.path.join(out, f'{name}.json'))
            with PIL.Image.open(os.path.join(work, 'nearest.png')) as grid:  # the first GRID_ROWS seeds
                height = grid.height // 64 * GRID_ROWS
                grid.crop((0, 0, grid.width, height)).save(os.path.join(out, f'{name}.png'), optimize=True)
            rows.append(dict(run=f'{arm} s{seed}', kimg=kimg, summary=json.load(open(report))['summary']))
    text = table(rows)
    open(os.path.join(HERE, 'memorisation.md'), 'w').write(text)
    print(text)


if __name__ == '__main__':
    main()
