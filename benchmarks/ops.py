"""Reference vs CUDA plugin: forward+backward time and peak memory of upfirdn2d and bias_act.

Shapes follow the networks: for every resolution of the config, ``[batch_gpu, C(res), res, res]`` with
``C(res) = min(channel_base // res, 512)`` (paper256: channel_base 16384, 8 images per GPU at 8 GPUs;
stylegan2 at 1024: channel_base 32768, 4 per GPU). Ops: ``upsample2d`` (up 2) and ``downsample2d``
(down 2) with the [1, 3, 3, 1] filter, and ``bias_act`` lrelu with clamp 256 (the conv layers' setting).

    python benchmarks/ops.py                          # both configs, float32 and float16
    python benchmarks/ops.py --cfg=paper256 --dtype=float16 --iters=50 --results

Prints one JSON document; ``--results`` appends a summary row to benchmarks/RESULTS.md. Needs a CUDA
GPU: without one it prints a message and exits with status 0. The plugins are built on first use.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys

import click
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from torch_utils import custom_ops  # noqa: E402
from torch_utils.ops.bias_act import bias_act  # noqa: E402
from torch_utils.ops.upfirdn2d import setup_filter, upfirdn2d  # noqa: E402

CONFIGS = {
    'paper256': dict(res=256, channel_base=16384, batch_gpu=8),
    'stylegan2': dict(res=1024, channel_base=32768, batch_gpu=4),
}
DTYPES = {'float32': torch.float32, 'float16': torch.float16}


def shapes(cfg, batch, min_res):
    res = cfg['res']
    while res >= min_res:
        yield [batch, min(cfg['channel_base'] // res, 512), res, res]
        res //= 2


_BIASES = {}


def _bias(x):
    key = (x.shape[1], x.dtype)
    if key not in _BIASES:
        _BIASES[key] = torch.randn(x.shape[1], device=x.device, dtype=x.dtype)
    return _BIASES[key]


def make_ops(f):
    # The exact paddings of upsample2d/downsample2d for a 4-tap filter, with the impl argument.
    return {
        'upfirdn2d_up2': lambda x, impl: upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl=impl),
        'upfirdn2d_down2': lambda x, impl: upfirdn2d(x, f, down=2, padding=[1, 1, 1, 1], impl=impl),
        'bias_act_lrelu_clamp': lambda x, impl: bias_act(x, _bias(x), act='lrelu', clamp=256, impl=impl),
    }


def measure(fn, x, iters, warmup):
    """Median forward+backward milliseconds and peak extra memory (MiB) of ``fn(x)``."""
    dy = torch.randn_like(fn(x))

    def step():
        x.grad = None
        fn(x).backward(dy)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    x.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return sorted(times)[len(times) // 2], peak


def bench_case(op_name, fn, shape, dtype, iters, warmup):
    x = torch.randn(shape, device='cuda', dtype=dtype, requires_grad=True)
    row = dict(op=op_name, shape=shape, dtype=str(dtype).replace('torch.', ''))
    for impl in ('ref', 'cuda'):
        ms, mib = measure(lambda t, impl=impl: fn(t, impl), x, iters, warmup)
        row[f'{impl}_ms'], row[f'{impl}_peak_mib'] = round(ms, 4), round(mib, 1)
    row['speedup'] = round(row['ref_ms'] / row['cuda_ms'], 3)
    row['mem_ratio'] = round(row['cuda_peak_mib'] / max(row['ref_peak_mib'], 1e-9), 3)
    return row


def summarize(rows):
    """Geometric-mean speedup and total time per (config, dtype, op)."""
    groups = {}
    for r in rows:
        groups.setdefault((r['cfg'], r['dtype'], r['op']), []).append(r)
    out = []
    for (cfg, dtype, op), rs in groups.items():
        geo = math.exp(sum(math.log(r['speedup']) for r in rs) / len(rs))
        ref, cuda = sum(r['ref_ms'] for r in rs), sum(r['cuda_ms'] for r in rs)
        out.append(
            dict(
                cfg=cfg,
                dtype=dtype,
                op=op,
                geomean_speedup=round(geo, 3),
                ref_ms_total=round(ref, 3),
                cuda_ms_total=round(cuda, 3),
                total_speedup=round(ref / cuda, 3),
            )
        )
    return out


def append_results(summary, device, commit):
    parts = [f'{s["cfg"]} {s["dtype"]} {s["op"]}: {s["total_speedup"]:.2f}x' for s in summary]
    line = (
        f'| ops (ref vs CUDA, fwd+bwd, sum over resolutions) | {device} | torch {torch.__version__}, '
        f'CUDA {torch.version.cuda} | {platform.python_version()} | `{" ".join(sys.argv)}` | '
        f'{"; ".join(parts)} | {commit} |\n'
    )
    with open(os.path.join(os.path.dirname(__file__), 'RESULTS.md'), 'a') as fh:
        fh.write(line)


@click.command()
@click.option('--cfg', type=click.Choice(['all', *CONFIGS]), default='all')
@click.option('--dtype', type=click.Choice(['all', *DTYPES]), default='all')
@click.option('--batch', type=int, default=None, help="images per GPU (default: the config's)")
@click.option('--min-res', type=int, default=8, show_default=True)
@click.option('--iters', type=int, default=20, show_default=True)
@click.option('--warmup', type=int, default=5, show_default=True)
@click.option('--results', is_flag=True, help='Append a row to benchmarks/RESULTS.md')
def main(cfg, dtype, batch, min_res, iters, warmup, results):
    if not torch.cuda.is_available():
        print(
            'benchmarks/ops.py compares the CUDA plugins with the reference ops and needs a CUDA GPU; '
            'none is available here, so nothing was measured.'
        )
        return
    impl = custom_ops.active_impl('cuda')  # builds (or loads) the plugins once, before timing
    if impl['ops'] != {'upfirdn2d': 'cuda', 'bias_act': 'cuda'}:
        print(json.dumps(dict(error='the CUDA plugins are unavailable', active_impl=impl), indent=2))
        sys.exit(1)
    ops = make_ops(setup_filter([1, 3, 3, 1], device='cuda'))
    rows = []
    for cname in CONFIGS if cfg == 'all' else [cfg]:
        for dname in DTYPES if dtype == 'all' else [dtype]:
            for shape in shapes(CONFIGS[cname], batch or CONFIGS[cname]['batch_gpu'], min_res):
                for op_name, fn in ops.items():
                    row = bench_case(op_name, fn, shape, DTYPES[dname], iters, warmup)
                    rows.append(dict(cfg=cname, **row))
                    print(json.dumps(rows[-1]), file=sys.stderr)
    commit = subprocess.run(
        ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True
    ).stdout.strip()
    device = torch.cuda.get_device_name()
    summary = summarize(rows)
    print(
        json.dumps(
            dict(
                device=device,
                torch=torch.__version__,
                cuda=torch.version.cuda,
                commit=commit,
                active_impl=impl,
                summary=summary,
                rows=rows,
            ),
            indent=2,
        )
    )
    if results:
        append_results(summary, device, commit)


if __name__ == '__main__':
    main()
