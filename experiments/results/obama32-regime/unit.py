"""One unit of the obama32-regime experiment (README.md beside this file): both arms of one seed, DiffAugment
(DA) and DA + KD, as two 1-thread train.py jobs side by side, each evaluated in training every 20 kimg
(KID1k and FID1k of G_ema against the training images).

    python experiments/results/obama32-regime/unit.py --exp=/work/exp/obama32-regime --seed=0 --pilot
    python experiments/results/obama32-regime/unit.py --exp=/work/exp/obama32-regime --seed=1 --kimg=H
    python experiments/results/obama32-regime/unit.py --exp=/work/exp/obama32-regime --collect
    python experiments/results/obama32-regime/unit.py --exp=/work/exp/obama32-regime --subset=30 --pilot
    python experiments/results/obama32-regime/unit.py --exp=$EXP --seed=0 --kimg=H --arms=KDrand

``--exp`` must hold ``obama32.zip`` and ``efficientnet64.pt`` (README: "Preparation"). Repeating a command
continues each arm from its newest snapshot (``train.py --resume=auto``); an arm that has its evaluation at
the target is skipped. ``--pilot`` trains up to ``--kimg`` (the cap, 400) and stops at H, the first
evaluation at which DA's KID has been at least 10% above its running minimum at two consecutive
evaluations (rounded up to the 20-kimg grid; written to ``<exp>/H.txt``, or ``none`` at the cap); the KD arm
stops when it has its evaluation at H. ``--collect`` copies the light files (stats, metric results, logs,
options, the image grids at each run's best KID and at its end; never snapshots) into ``runs/`` here.
``--subset=30`` is the pre-registered fallback (30 training images, the same 20 held out): its runs, H.txt
and collected files live in ``subset30/`` below ``--exp`` and below this folder. ``--arms=KDrand`` is the
control run only if KD is better (README: "Verdict"): the KD arm with the same teacher architecture at
random initialisation, seeded by the run's seed (``<exp>/efficientnet64-random<seed>.pt``, written by
``experiments/efficientnet_teacher.py --size=64 --random-init=<seed>``).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time

import click

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, '..', '..', '..'))
sys.path.insert(0, os.path.join(REPO, 'experiments'))
import few_shot  # noqa: E402

KD_WEIGHT = 0.1  # lambda for both KD terms: fixed by the rule in README.md before any run
EVAL_KIMG = 20  # --tick=4 --snap=5
CAP_KIMG = 400
METRICS = ('kid1k_train', 'fid1k_train')  # KID first: it drives the best-snapshot pointer
ARMS = ('DA', 'KD', 'KDrand')  # KDrand: the control with a random-init teacher (only if KD is better)


def variant(root: str, subset: int | None) -> str:
    """The folder of the experiment's runs and H.txt below ``root`` (``<exp>`` or this folder): ``root``
    itself, or ``root/subset<N>`` for the fallback on N training images (README: "Pilot")."""
    return root if subset is None else os.path.join(root, f'subset{subset}')


def teacher_file(exp: str, arm: str, seed: int) -> str:
    """The KD teacher of arm ``KD`` (ImageNet weights) or ``KDrand`` (random weights, seeded by the run)."""
    return os.path.join(exp, 'efficientnet64.pt' if arm == 'KD' else f'efficientnet64-random{seed}.pt')


def arm_args(exp: str, arm: str, seed: int, kimg: float, subset: int | None = None) -> list[str]:
    """The train.py arguments of one arm (``subset``: ``--subset``, the same 20 images held out)."""
    args = [
        f'--outdir={os.path.join(variant(exp, subset), "runs", f"{arm}-s{seed}")}',
        f'--data={os.path.join(exp, "obama32.zip")}',
        *([f'--subset={subset}'] if subset is not None else []),
        '--holdout=20',
        '--mirror=1',
        '--aug=diffaug',
        '--cbase=2048',
        '--cmax=64',
        '--batch=16',
        f'--seed={seed}',
        '--tick=4',
        '--snap=5',
        '--grid=8x8',
        f'--metrics={",".join(METRICS)}',
        '--workers=0',
        '--resume=auto',
        f'--kimg={kimg:g}',
    ]
    if arm in ('KD', 'KDrand'):
        args += [
            '--kd=aggregated,correlated',
            f'--kd-teacher=torchscript:{teacher_file(exp, arm, seed)}',
            f'--kd-agkd-weight={KD_WEIGHT:g}',
            f'--kd-cgkd-weight={KD_WEIGHT:g}',
        ]
    return args


def kid_curve(work: str, arm: str, seed: int) -> list[tuple[int, float]]:
    """``[(kimg, KID)]`` of an arm's evaluations so far, over all its (resumed) run directories below the
    variant folder ``work`` (:func:`variant`)."""
    return few_shot.read_metric_all(os.path.join(work, 'runs', f'{arm}-s{seed}'), METRICS[0])


def turn_point(curve: list[tuple[int, float]]) -> int | None:
    """The kimg of the second of two consecutive evaluations whose KID is at least 1.1 x the running minimum
    (the lowest KID so far, the evaluation itself included), or None."""
    best, above = math.inf, 0
    for kimg, kid in curve:
        best = min(best, kid)
        above = above + 1 if kid >= 1.1 * best else 0
        if above == 2:
            return kimg
    return None


def _start(exp: str, arm: str, seed: int, kimg: float, subset: int | None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    log = open(os.path.join(variant(exp, subset), 'runs', f'{arm}-s{seed}.log'), 'a')  # noqa: SIM115
    cmd = [sys.executable, 'train.py', *arm_args(exp, arm, seed, kimg, subset)]
    print('+ ' + ' '.join(cmd), flush=True)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _evaluated(work: str, arm: str, seed: int) -> int:
    """The kimg of an arm's newest evaluation (-1 before the first)."""
    return max((k for k, _ in kid_curve(work, arm, seed)), default=-1)


def _read_h(h_file: str) -> float | None:
    """H from ``<exp>/H.txt``: a number, or None while unknown or 'none' (not reached by the cap)."""
    text = open(h_file).read().strip() if os.path.exists(h_file) else ''
    return float(text) if text not in ('', 'none') else None


def train_unit(exp: str, seed: int, kimg: float, pilot: bool, arms: list[str], subset: int | None) -> None:
    """Run ``arms`` of one seed to ``kimg`` side by side (the pilot: stop at H); poll every 30 s."""
    work = variant(exp, subset)
    os.makedirs(os.path.join(work, 'runs'), exist_ok=True)
    h_file = os.path.join(work, 'H.txt')
    target = (_read_h(h_file) if pilot else None) or kimg
    procs = {
        arm: None if _evaluated(work, arm, seed) >= target else _start(exp, arm, seed, target, subset)
        for arm in arms
    }
    while any(p is not None and p.poll() is None for p in procs.values()):
        time.sleep(30)
        if not pilot:
            continue
        if not os.path.exists(h_file) and 'DA' in arms:
            turn = turn_point(kid_curve(work, 'DA', seed))
            if turn is not None:
                with open(h_file, 'w') as f:
                    f.write(f'{math.ceil(turn / EVAL_KIMG) * EVAL_KIMG}\n')
                print(f'Pilot: DA turned at {turn} kimg; H = {_read_h(h_file):g}', flush=True)
        h = _read_h(h_file)
        for arm, proc in procs.items():  # every arm stops once it has its evaluation at H
            running = proc is not None and proc.poll() is None
            if h is not None and running and _evaluated(work, arm, seed) >= h:
                proc.terminate()
    bad = {arm: p.returncode for arm, p in procs.items() if p is not None and p.returncode not in (0, -15)}
    if pilot and 'DA' in arms and not os.path.exists(h_file) and not bad:
        with open(h_file, 'w') as f:
            f.write('none\n')  # DA did not turn by the cap: "regime not reached"
    for arm in arms:
        print(f'{arm} s{seed}: KID', ', '.join(f'{k}: {v:.4f}' for k, v in kid_curve(work, arm, seed)))
    if bad:
        raise click.ClickException(f'train.py failed: {bad}; see {work}/runs/<arm>-s{seed}.log')


def collect(exp: str, dest_root: str = HERE) -> None:
    """Copy the light files of every run under ``<exp>/runs`` into ``<dest_root>/runs``."""
    light = ('stats.jsonl', 'training_options.json', 'log.txt', 'reals.png')
    for root in sorted(os.listdir(os.path.join(exp, 'runs'))):
        src_root = os.path.join(exp, 'runs', root)
        if not os.path.isdir(src_root):
            continue
        curve = few_shot.read_metric_all(src_root, METRICS[0])
        best = min(curve, key=lambda kv: kv[1])[0] if curve else None
        for run_dir in few_shot.run_dirs(src_root):
            dest = os.path.join(dest_root, 'runs', root, os.path.basename(run_dir))
            os.makedirs(dest, exist_ok=True)
            names = sorted(os.listdir(run_dir))
            grids = [n for n in names if n.startswith('fakes0')]
            keep = [n for n in names if n in light or n.startswith(('metric-', 'best-'))]
            if best is not None:
                keep += [n for n in grids if n in (f'fakes{best:06d}.png', grids[-1])]
            for name in keep:
                shutil.copy2(os.path.join(run_dir, name), dest)
    if os.path.exists(os.path.join(exp, 'H.txt')):
        shutil.copy2(os.path.join(exp, 'H.txt'), dest_root)


@click.command()
@click.option('--exp', required=True, help='Experiment folder (outside the work tree)')
@click.option('--seed', type=int, default=0, show_default=True)
@click.option('--kimg', type=float, default=CAP_KIMG, show_default=True, help='Target (the pilot: the cap)')
@click.option('--pilot', is_flag=True, help='Stop both arms at H (DA turned); write <exp>/H.txt')
@click.option('--arms', default='DA,KD', show_default=True, help='Which arms to run')
@click.option('--collect', 'do_collect', is_flag=True, help='Copy the light files of all runs here')
@click.option('--subset', type=int, help='The fallback: train on this many images (runs in subset<N>/)')
def main(
    exp: str, seed: int, kimg: float, pilot: bool, arms: str, do_collect: bool, subset: int | None
) -> None:
    """Run one unit, or collect the light files (see the module docstring)."""
    exp = os.path.abspath(exp)
    if do_collect:
        collect(variant(exp, subset), variant(HERE, subset))
        return
    unknown = [arm for arm in arms.split(',') if arm not in ARMS]
    if unknown:
        raise click.UsageError(f'--arms: unknown {",".join(unknown)}; choose from {",".join(ARMS)}')
    control = teacher_file(exp, 'KDrand', seed)
    if 'KDrand' in arms.split(',') and not os.path.exists(control):
        raise click.UsageError(
            f'--arms=KDrand needs {control}: write it with `python experiments/efficientnet_teacher.py '
            f'--dest={control} --size=64 --random-init={seed}`'
        )
    train_unit(exp, seed, kimg, pilot, arms.split(','), subset)


if __name__ == '__main__':
    main()
