"""TorchScript teachers for KD-DLGAN (``--kd-teacher=torchscript:PATH``): an image-only scripted encoder.

The file maps normalised images ``[N, 3, S, S]`` to embeddings ``[N, E]``. It may carry ``input_size`` (S),
``mean`` and ``std`` attributes (ints, lists or tensors); without them S = 224 and ImageNet's mean/std apply.
An fp16 file computes in fp32 (:func:`torch_utils.torchscript.load`).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from stylegan2_ada_kd.kd.teacher import WEIGHTS_OPTION, Teacher, TeacherError, _one_line
from torch_utils import torchscript

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_torchscript(
    spec: str,  # The whole --kd-teacher value, for messages.
    path: str,  # The file: the spec after 'torchscript:'.
    weights: str | None,  # --kd-teacher-weights; must be None (the file holds its weights).
    device: torch.device,  # Where the teacher runs.
) -> Teacher:
    """A Teacher around a scripted image encoder ``[N, 3, S, S]`` (normalised) -> ``[N, E]``.

    Raises TeacherError for a missing or unreadable file, or when ``weights`` is given.
    """
    if weights:
        raise TeacherError(
            f'--kd-teacher={spec}: {WEIGHTS_OPTION} does not apply to TorchScript teachers '
            '(the file holds its weights); drop it'
        )
    path = os.path.expanduser(path)
    if not path or not os.path.isfile(path):
        raise TeacherError(
            f'--kd-teacher={spec}: TorchScript file {path!r} does not exist; pass torchscript:PATH with a '
            'file written by torch.jit.save(torch.jit.script(encoder), PATH)'
        )
    try:
        module = torchscript.load(path, map_location=device)  # an fp16 file computes in fp32
    except Exception as err:
        raise TeacherError(
            f'--kd-teacher={spec}: torch.jit.load({path!r}) failed ({_one_line(err)}); the file must be a '
            'TorchScript module saved with torch.jit.save'
        ) from err

    def attr(name: str, default: Any) -> Any:
        value = getattr(module, name, None)
        if isinstance(value, torch.Tensor):
            value = value.detach().flatten().tolist()
            value = value[0] if name == 'input_size' and len(value) == 1 else value
        return default if value is None else value

    return Teacher(
        spec,
        module,
        input_size=int(attr('input_size', 224)),
        mean=attr('mean', IMAGENET_MEAN),
        std=attr('std', IMAGENET_STD),
    )
