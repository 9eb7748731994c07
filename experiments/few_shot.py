"""Few-shot experiment: DiffAugment against DiffAugment + KD-DLGAN variants on a 100-shot set.

1. makes the dataset zip with dataset_tool (centre crop, --res);
2. trains every ``--variant`` for every ``--seeds`` entry with the same options (train.py, snapshots every
   ``--snap`` ticks of ``--tick`` kimg), each in ``<outdir>/<variant>-s<seed>/``; a run that stopped early
   (killed, session end) is continued from its newest snapshot with ``--resume`` when the command is
   repeated, and a finished run is skipped;
3. evaluates the FID and KID ``--metrics`` of the snapshots at ``--eval-kimg`` (calc_metrics.py, results
   kept in the run directories' metric-*.jsonl, so repeating the command evaluates only what is missing);
4. writes ``results.md`` (tables: per run, and mean / min-max over seeds per variant; with ``--holdout``
   also the D-overfitting gap and train/held-out AUC averaged over thirds of the run), ``fid.png``,
   ``kid.png``, ``gap.png`` and ``auc.png`` (``Overfit/gap`` and ``Overfit/auc`` per tick, from
   ``--holdout``) and ``samples.png``.

    python experiments/few_shot.py --source=../shared/data/100-shot-obama --outdir=out/obama32 \\
        --res=32 --kimg=10 --tick=1 --snap=2 --eval-kimg=0,10 --holdout=20 --teacher=efficientnet \\
        --metrics=fid1k_train,kid1k_train --variant='DA=' \\
        --variant='DA+KD=--kd=aggregated,correlated' -- --cbase=2048 --cmax=64 --mirror=1

Arguments after ``--`` go to every train.py call unchanged (network size, batch, ...); a variant's own
arguments follow them. Variants that use ``--kd`` get ``--kd-teacher`` from ``--teacher`` unless they set
one. The teacher must be obtainable offline: ``--teacher=efficientnet`` writes the EfficientNet-Lite0
TorchScript teacher (``experiments/efficientnet_teacher.py``), ``--teacher=inception`` the TF-Inception one
(it is also the FID detector, so FID then says little about KD); the tables say that the teacher is not
CLIP. The same command runs at 64 or 256 px on a GPU (``--res``; train.py picks the device).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys

import click
import numpy as np
import PIL.Image
import PIL.ImageDraw

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, REPO)
from torch_utils.run_io import snapshot_kimg  # noqa: E402

DEFAULT_VARIANTS = ('DiffAugment=', 'DiffAugment+KD=--kd=aggregated,correlated')
# results.md averages each run's per-tick overfitting stats over this many equal kimg windows (thirds:
# start, middle, end of training, about 7 ticks each in a 20-tick run), whatever the run's length.
OVERFIT_WINDOWS = 3
COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf']


def run(cmd, log=None):
    """Run ``cmd`` in the repository root; its output goes to ``log`` (a file path) when given."""
    print('+ ' + shlex.join(cmd) + (f'  > {log}' if log else ''), flush=True)
    if log is None:
        subprocess.run(cmd, check=True, cwd=REPO)
        return
    with open(log, 'a') as f:
        subprocess.run(cmd, check=True, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)


def run_dirs(root):
    """The numbered run directories under ``root`` (a run and its resumed continuations), in order."""
    if not os.path.isdir(root):
        return []
    return [os.path.join(root, d) for d in sorted(os.listdir(root)) if d[:5].isdigit()]


def latest_run(outdir):
    runs = run_dirs(outdir)
    return runs[-1] if runs else None


def snapshots(root):
    """``{kimg: path}`` of every network snapshot of the runs under ``root`` (later runs win)."""
    out = {}
    for run_dir in run_dirs(root):
        for name in os.listdir(run_dir):
            kimg = snapshot_kimg(name)
            if kimg is not None:
                out[kimg] = os.path.join(run_dir, name)
    return out


def read_stats(root, key):
    """``[(kimg, mean)]`` of stat ``key`` over every tick of the runs under ``root`` (later runs win)."""
    rows = {}
    for run_dir in run_dirs(root):
        path = os.path.join(run_dir, 'stats.jsonl')
        if os.path.exists(path):
            for line in open(path):
                entry = json.loads(line)
                if key in entry:
                    rows[round(entry['Progress/kimg']['mean'], 3)] = entry[key]['mean']
    return sorted(rows.items())


def finished(root, kimg):
    """True when a run under ``root`` reached ``kimg``: by its stats, or by its newest snapshot (a run stopped
    during its last evaluation has no stats line for it; ``--eval-only`` adds the evaluation)."""
    done = read_stats(root, 'Progress/kimg')
    snaps = snapshots(root)
    return (bool(done) and done[-1][1] >= kimg - 1e-9) or (bool(snaps) and max(snaps) >= kimg - 1e-9)


def read_metric(run_dir, metric):
    """[(kimg, value)] from metric-<metric>.jsonl, kimg parsed from the snapshot name."""
    path = os.path.join(run_dir, f'metric-{metric}.jsonl')
    rows = []
    if os.path.exists(path):
        for line in open(path):
            entry = json.loads(line)
            kimg = snapshot_kimg(entry['snapshot_pkl'])
            rows.append((kimg, entry['results'][metric]))
    return rows


def read_metric_all(root, metric):
    """[(kimg, value)] of ``metric`` over the runs under ``root`` (one value per kimg, the latest)."""
    rows = {}
    for run_dir in run_dirs(root):
        rows.update(read_metric(run_dir, metric))
    return sorted(rows.items())


def plot(curves, path, title, ylabel='FID', size=(640, 420), log_y=False, tick=lambda t: f'{t:.3g}'):
    """A minimal line plot with PIL: {label: [(x, y)]} -> PNG (no matplotlib dependency). ``log_y``: a
    logarithmic y axis (where every y is positive), for FID and KID, which fall by orders of magnitude;
    ``tick``: the text of a y tick at axis value t."""
    img = PIL.Image.new('RGB', size, 'white')
    draw = PIL.ImageDraw.Draw(img)
    pts = [p for c in curves.values() for p in c if np.isfinite(p[1])]
    if not pts:
        img.save(path)
        return
    if log_y and all(p[1] > 0 for p in pts):
        logged = {k: [(x, float(np.log10(y))) for x, y in c if np.isfinite(y)] for k, c in curves.items()}
        plot(logged, path, title, f'{ylabel}, log scale', size, tick=lambda t: f'{10**t:.3g}')
        return
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts) or 1
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    y0, y1 = (y0 - 1, y1 + 1) if y0 == y1 else (y0, y1)
    left, top, right, bottom = 60, 30, size[0] - 20, size[1] - 40
    sx = lambda x: left + (x - x0) / max(x1 - x0, 1e-9) * (right - left)
    sy = lambda y: bottom - (y - y0) / (y1 - y0) * (bottom - top)
    draw.rectangle([left, top, right, bottom], outline='black')
    for t in np.linspace(y0, y1, 5):
        draw.text((5, sy(t) - 6), tick(t), fill='black')
    xs = sorted({p[0] for p in pts})
    for t in xs if len(xs) <= 10 else np.linspace(x0, x1, 6):
        draw.text((sx(t) - 10, bottom + 8), f'{t:g}', fill='black')
    draw.text((left, 8), f'{title}   (x: kimg, y: {ylabel})', fill='black')
    for idx, (label, curve) in enumerate(curves.items()):
        color = COLORS[idx % len(COLORS)]
        xy = [(sx(x), sy(y)) for x, y in curve if np.isfinite(y)]
        if len(xy) > 1:
            draw.line(xy, fill=color, width=2)
        if len(xy) <= 20:
            for x, y in xy:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        draw.text((right - 200, top + 10 + 14 * idx), label, fill=color)
    img.save(path)


def _cell(value, digits):
    return '-' if value is None else f'{value:.{digits}f}'


def _spread(values: list[float], digits: int) -> str:
    """``'mean (min - max)'`` of ``values``, or ``'-'`` when there are none."""
    if not values:
        return '-'
    return f'{np.mean(values):.{digits}f} ({min(values):.{digits}f} - {max(values):.{digits}f})'


def _tables(runs: dict, columns: list[tuple[str, str, int]], rows: list, row_name: str) -> list[str]:
    """Markdown lines: one line per entry of ``rows`` with each run's ``columns`` and, when a variant has
    several seeds, a second table of each variant's mean (min - max) over its seeds.

    ``runs``: ``{run: {'variant': name, key: {row: value}}}``; ``columns``: ``[(key, label, digits)]``.
    """

    def header(names: dict) -> list[str]:
        head = ' | '.join(f'{name} {label}' for name in names for _, label, _ in columns)
        return [f'| {row_name} | {head} |', '|---|' + '---|' * (len(names) * len(columns))]

    lines = header(runs)
    for row in rows:
        cells = [_cell(r[key].get(row), digits) for r in runs.values() for key, _, digits in columns]
        lines.append(f'| {row} | ' + ' | '.join(cells) + ' |')
    groups = {}
    for r in runs.values():
        groups.setdefault(r['variant'], []).append(r)
    if all(len(g) == 1 for g in groups.values()):
        return lines
    lines += ['', 'Over seeds: mean (min - max).', '', *header(groups)]
    for row in rows:
        cells = [
            _spread([r[key][row] for r in group if r[key].get(row) is not None], digits)
            for group in groups.values()
            for key, _, digits in columns
        ]
        lines.append(f'| {row} | ' + ' | '.join(cells) + ' |')
    return lines


def window_means(rows: list[tuple[float, float]], edges: list[float]) -> list[float | None]:
    """Means of the finite values of ``[(kimg, value)]`` in each window ``(edges[i], edges[i + 1]]`` (the
    first window also takes kimg 0), one per window; None where a window has none."""
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        vals = [v for k, v in rows if (lo < k or i == 0) and k <= hi + 1e-9 and np.isfinite(v)]
        out.append(float(np.mean(vals)) if vals else None)
    return out


def overfit_lines(runs: dict) -> list[str]:
    """results.md's D-overfitting section: the per-tick ``Overfit/gap`` and ``Overfit/auc`` of each run
    averaged over :data:`OVERFIT_WINDOWS` equal kimg windows up to the last tick of the longest run (a run
    without the stat shows '-'); no lines when no run has a gap (trained without ``--holdout``)."""
    end = max((k for r in runs.values() for k, _ in r.get('gap', [])), default=None)
    if end is None:
        return []
    edges = np.linspace(0, end, OVERFIT_WINDOWS + 1)
    labels = [f'{lo:.3g}-{hi:.3g}' for lo, hi in zip(edges[:-1], edges[1:])]
    table = {
        name: dict(
            variant=r.get('variant', name),
            **{key: dict(zip(labels, window_means(r.get(key, []), edges))) for key in ('gap', 'auc')},
        )
        for name, r in runs.items()
    }
    intro = [
        '',
        '## D overfitting (held-out reals, `--holdout`)',
        '',
        f'Per-tick statistics averaged over {OVERFIT_WINDOWS} equal kimg windows (one tick is noisy). gap ='
        ' (D_train - D_holdout) / (D_train - D_fake) of mean logits (0 = held-out reals scored like'
        ' training reals, 1 = like fakes); AUC = how often D scores a training real above a held-out one'
        ' (0.5 = it cannot tell them apart, 1 = it ranks every training image higher; it depends on the'
        ' order of the logits only, not on their scale or the fakes). A run without AUC (trained before'
        ' it existed) shows -.',
        '',
    ]
    return intro + _tables(table, [('gap', 'gap', 3), ('auc', 'AUC', 3)], labels, 'kimg')


def write_table(path, runs, teacher, metrics, notes=()):
    """results.md: the command, the teacher, one row per evaluated kimg (FID and KID of each run), with
    several seeds the mean and min-max of each variant, and the D-overfitting windows (:func:`overfit_lines`).

    ``runs``: ``{run: {'fid' | 'kid' | 'gap' | 'auc': [(kimg, value)], 'variant': name}}``; the last three
    are optional (variant: the run's name).
    """
    fid, kid = metrics
    lines = [
        '# Few-shot experiment',
        '',
        f'Command: `python {shlex.join(sys.argv)}`',
        '',
        f'KD teacher: `{teacher}`'
        + ('' if 'ViT' in teacher else ' (NOT CLIP: no pretrained CLIP weights on this machine)'),
        '',
        f'Metrics: `{fid}` and `{kid}` of G_ema at each evaluated snapshot.',
        *notes,
        '',
    ]
    table = {
        name: dict(variant=r.get('variant', name), fid=dict(r['fid']), kid=dict(r['kid']))
        for name, r in runs.items()
    }
    kimgs = sorted({k for r in runs.values() for k, _ in r['fid']})
    lines += _tables(table, [('fid', 'FID', 2), ('kid', 'KID', 4)], kimgs, 'kimg')
    lines += overfit_lines(runs)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def write_figures(outdir: str, runs: dict, title: str) -> None:
    """``fid.png`` and ``kid.png`` (per evaluated kimg, log scale) and, where some run has the stat,
    ``gap.png`` and ``auc.png`` (``Overfit/gap`` and ``Overfit/auc`` per tick) of ``runs`` (as
    :func:`write_table`)."""
    for key, ylabel in (('fid', 'FID'), ('kid', 'KID'), ('gap', 'D-overfitting gap'), ('auc', 'D AUC')):
        if key in ('fid', 'kid') or any(r.get(key) for r in runs.values()):
            curves = {label: r.get(key, []) for label, r in runs.items()}
            plot(
                curves, os.path.join(outdir, f'{key}.png'), title, ylabel=ylabel, log_y=key in ('fid', 'kid')
            )


def samples_figure(grids, path, res, cols=8, rows=2):
    """Stack the top-left ``rows x cols`` images of each grid PNG (``{label: path}``) into one PNG."""
    tiles = []
    for label, grid_path in grids.items():
        grid = PIL.Image.open(grid_path).convert('RGB').crop((0, 0, cols * res, rows * res))
        band = PIL.Image.new('RGB', (cols * res + 160, rows * res), 'white')
        band.paste(grid, (160, 0))
        PIL.ImageDraw.Draw(band).text((4, rows * res // 2 - 6), label, fill='black')
        tiles.append(band)
    out = PIL.Image.new('RGB', (tiles[0].width, sum(t.height for t in tiles)), 'white')
    for i, tile in enumerate(tiles):
        out.paste(tile, (0, i * tiles[0].height))
    out.save(path)


def parse_variants(variants):
    """``('NAME=ARGS', ...)`` -> ``{name: [args]}``."""
    out = {}
    for spec in variants:
        name, sep, args = spec.partition('=')
        if not sep or not re.fullmatch(r'[\w+.\-]+', name) or name in out:
            raise click.UsageError(
                f'--variant={spec!r}: use a unique NAME=ARGS, NAME of letters, digits, +-._'
            )
        out[name] = shlex.split(args)
    return out


def make_teacher(teacher, outdir):
    """The --kd-teacher spec for ``--teacher`` (building the offline TorchScript files when asked)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if teacher == 'inception':
        import inception_teacher

        return 'torchscript:' + inception_teacher.build(os.path.join(outdir, 'inception_teacher.pt'))
    if teacher == 'efficientnet':
        import efficientnet_teacher

        dest = os.path.join(outdir, 'efficientnet_teacher.pt')
        return 'torchscript:' + (dest if os.path.exists(dest) else efficientnet_teacher.build(dest))
    return teacher


def train_run(root, common, extra, kimg, log=None):
    """Train one run into ``root``, continuing from its newest snapshot; skip a finished run."""
    if finished(root, kimg):
        print(f'{root}: finished, skipped', flush=True)
        return
    snaps = snapshots(root)
    resume = [f'--resume={snaps[max(snaps)]}'] if snaps else []
    run([sys.executable, 'train.py', f'--outdir={root}', *common, *extra, *resume], log)


def train_all(jobs, runs, kimg):
    """Train ``runs`` (``[(root, common, extra)]``), ``jobs`` at a time (one GPU can hold several small
    runs); with ``jobs > 1`` each run's output goes to ``<root>.log``. Raises if any run failed."""
    if jobs == 1:
        for root, common, extra in runs:
            train_run(root, common, extra, kimg)
        return
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(train_run, *r, kimg, r[0] + '.log') for r in runs]
        for future in futures:
            future.result()


def evaluate(root, kimgs, metrics, detector=None):
    """Evaluate ``metrics`` of the snapshots at ``kimgs`` that have no result yet."""
    snaps = snapshots(root)
    extra = [f'--detector={detector}'] if detector else []
    for k in kimgs:
        have = [dict(read_metric_all(root, m)).get(k) for m in metrics]
        if k not in snaps or all(v is not None for v in have):
            continue
        run(
            [
                sys.executable,
                'calc_metrics.py',
                f'--network={snaps[k]}',
                f'--metrics={",".join(metrics)}',
                *extra,
            ]
        )


def _check_args(metrics, eval_kimg, kimg, tick, snap):
    names = metrics.split(',')
    if len(names) != 2 or not (names[0].startswith('fid') and names[1].startswith('kid')):
        raise click.UsageError(
            f'--metrics={metrics}: give one FID and one KID metric, e.g. fid5k_train,kid5k_train'
        )
    kimgs = [int(k) for k in eval_kimg.split(',')] if eval_kimg else []
    step = tick * snap
    bad = [k for k in kimgs if k > kimg or abs(k / step - round(k / step)) > 1e-6]
    if bad:
        raise click.UsageError(
            f'--eval-kimg: {bad} are not snapshot points (multiples of --tick x --snap = {step:g})'
        )
    return names, kimgs


@click.command(context_settings=dict(ignore_unknown_options=True))
@click.option('--source', help='Folder of the few-shot images (centre-cropped to --res)')
@click.option('--data', 'data_zip', help='A prepared dataset zip at --res instead of --source')
@click.option('--outdir', required=True)
@click.option('--res', type=int, default=64, show_default=True)
@click.option('--kimg', type=float, default=300, show_default=True)
@click.option('--tick', type=float, default=4, show_default=True)
@click.option('--snap', type=int, default=5, show_default=True)
@click.option('--eval-kimg', default=None, help='Comma list of kimg to evaluate  [default: every snapshot]')
@click.option(
    '--holdout', type=int, default=0, show_default=True, help='train.py --holdout (D-overfitting gap)'
)
@click.option(
    '--teacher',
    default='ViT-B-32:openai',
    show_default=True,
    help="--kd-teacher of KD variants; 'efficientnet' / 'inception' = the offline TorchScript teachers",
)
@click.option(
    '--metrics', default='fid5k_train,kid5k_train', show_default=True, help='One FID and one KID metric'
)
@click.option('--detector', help='calc_metrics.py --detector (Inception TorchScript file)')
@click.option('--seeds', default='0', show_default=True, help='Comma list of training seeds')
@click.option('--jobs', type=click.IntRange(min=1), default=1, show_default=True, help='Runs trained at once')
@click.option('--eval-only', is_flag=True, help='Train nothing; evaluate and report the snapshots there are')
@click.option(
    '--variant', 'variants', multiple=True, help='NAME=TRAIN_ARGS (repeat)  [default: DA and DA+KD]'
)
@click.argument('train_args', nargs=-1, type=click.UNPROCESSED)
def main(
    source,
    data_zip,
    outdir,
    res,
    kimg,
    tick,
    snap,
    eval_kimg,
    holdout,
    teacher,
    metrics,
    detector,
    seeds,
    jobs,
    eval_only,
    variants,
    train_args,
):
    if eval_kimg is None:
        eval_kimg = ','.join(str(int(k)) for k in np.arange(0, kimg + 1e-9, tick * snap))
    names, kimgs = _check_args(metrics, eval_kimg, kimg, tick, snap)
    variants = parse_variants(variants or DEFAULT_VARIANTS)
    if (source is None) == (data_zip is None):
        raise click.UsageError('give the images with exactly one of --source=FOLDER and --data=ZIP')
    os.makedirs(outdir, exist_ok=True)
    outdir = os.path.abspath(outdir)
    data = os.path.abspath(data_zip) if data_zip else os.path.join(outdir, f'data-{res}.zip')
    if not os.path.exists(data):
        cmd = [
            'dataset_tool.py',
            f'--source={os.path.abspath(source)}',
            f'--dest={data}',
            f'--resolution={res}',
        ]
        run([sys.executable, *cmd, '--transform=center-crop'])
    if any(a.startswith('--kd=') for args in variants.values() for a in args):
        teacher = make_teacher(teacher, outdir)
    common = [f'--data={data}', f'--kimg={kimg}', f'--tick={tick}', f'--snap={snap}', '--aug=diffaug']
    common += [f'--holdout={holdout}', '--metrics=none', '--workers=1', *train_args]
    runs, roots, todo = {}, {}, []
    for seed in [int(s) for s in seeds.split(',')]:
        for name, extra in variants.items():
            if any(a.startswith('--kd=') for a in extra) and not any(
                a.startswith('--kd-teacher=') for a in extra
            ):
                extra = [*extra, f'--kd-teacher={teacher}']
            root = roots[f'{name} s{seed}'] = os.path.join(outdir, f'{name}-s{seed}')
            todo.append((root, [*common, f'--seed={seed}'], extra))
    if not eval_only:
        train_all(jobs, todo, kimg)
    for label, root in roots.items():
        evaluate(root, kimgs, names, detector)
        fid, kid = (read_metric_all(root, m) for m in names)
        overfit = {key: read_stats(root, f'Overfit/{key}') for key in ('gap', 'auc')}
        runs[label] = dict(variant=label.rsplit(' s', 1)[0], fid=fid, kid=kid, **overfit)
    write_table(os.path.join(outdir, 'results.md'), runs, teacher, names)
    write_figures(outdir, runs, os.path.basename(os.path.abspath(source or data)))
    grids = {'reals': os.path.join(run_dirs(next(iter(roots.values())))[0], 'reals.png')}
    for label, root in roots.items():
        fakes = sorted(p for d in run_dirs(root) for p in _files(d, r'fakes\d{6}\.png'))
        if fakes:
            grids[label] = fakes[-1]
    samples_figure(grids, os.path.join(outdir, 'samples.png'), res)
    print(open(os.path.join(outdir, 'results.md')).read())


def _files(folder, pattern):
    return [os.path.join(folder, n) for n in os.listdir(folder) if re.fullmatch(pattern, n)]


if __name__ == '__main__':
    main()
