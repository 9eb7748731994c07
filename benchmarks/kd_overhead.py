"""KD overhead: time per training step with KD-DLGAN on vs off at the same settings, and their ratio.

A thin front end of ``train_speed.py`` (same steps, same seeds); the teacher may be random-init
(``random:ViT-B-32``), since its cost does not depend on its weights.

    python benchmarks/kd_overhead.py --res=32 --cbase=4096 --cmax=128 --batch=16 --steps=8 --results   # CPU
    python benchmarks/kd_overhead.py --cfg=paper256 --res=256 --results                                # GPU
"""

from __future__ import annotations

import json
import os
import sys

import click

sys.path.insert(0, os.path.dirname(__file__))

from train_speed import PRESETS, append_result, environment, measure  # noqa: E402


@click.command()
@click.option('--cfg', type=click.Choice(sorted(PRESETS)), default='paper256', show_default=True)
@click.option('--res', type=int, default=256, show_default=True)
@click.option('--cbase', type=int, default=None)
@click.option('--cmax', type=int, default=None)
@click.option('--batch', type=int, default=None)
@click.option('--batch-gpu', type=int, default=None)
@click.option('--steps', type=int, default=32, show_default=True)
@click.option('--teacher', default='random:ViT-B-32', show_default=True)
@click.option('--p', 'augment_p', type=float, default=0.0, show_default=True)
@click.option('--results', is_flag=True, help='Append a row to benchmarks/RESULTS.md')
def main(cfg, res, cbase, cmax, batch, batch_gpu, steps, teacher, augment_p, results):
    env = environment()
    args = (cfg, res, cbase, cmax, batch, batch_gpu, steps, teacher, augment_p, False)
    off, on = measure(False, *args), measure(True, *args)
    out = dict(env, kd_off_sec_per_step=off['sec_per_step'], kd_on_sec_per_step=on['sec_per_step'])
    out['ratio'] = on['sec_per_step'] / off['sec_per_step']
    print(json.dumps(out))
    if results:
        text = (
            f'KD off {off["sec_per_step"]:.3f} s/step, on {on["sec_per_step"]:.3f} s/step, '
            f'ratio {out["ratio"]:.3f} (batch {off["batch"]})'
        )
        append_result('kd_overhead', env, text)


if __name__ == '__main__':
    main()
