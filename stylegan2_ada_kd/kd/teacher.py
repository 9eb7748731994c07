"""Frozen image(-text) teachers for KD-DLGAN (docs/kd-dlgan.md, "Teachers").

A :class:`Teacher` wraps an open_clip CLIP model (pretrained tag, local weights file, or random init for
smoke runs and tests) or a TorchScript image encoder. It maps images in the trainer's ``[-1, 1]`` range to raw
``[N, E]`` float32 embeddings, with the teacher input built in torch on the images' device, either as the
paper describes (``variant='paper'``: bicubic resize + CLIP mean/std) or as the official BigGAN code does
(``variant='official'``: nearest upsample of the ``[-1, 1]`` image, no normalisation).

:func:`load_teacher` builds each teacher once per process and never falls back to random weights: when
weights cannot be had it raises one :class:`TeacherError` that says what was tried and how to pass a local
checkpoint with ``--kd-teacher-weights``. Each spec form has a loader in its own module, listed once in
:data:`SPEC_LOADERS`: :mod:`kd.teacher_open_clip` builds open_clip models (it looks for a pretrained tag's
weights in the local caches first and then makes a single download attempt, no retries, so an offline
machine gets the error at once), :mod:`kd.teacher_torchscript` loads scripted encoders.

The loaders are imported lazily (open_clip too), so importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Callable

import torch
import torch.nn.functional as F

from dnnlib.util import construct_class_by_name
from stylegan2_ada_kd.kd.variants import check_variant
from torch_utils.misc import assert_shape

DEFAULT_TEACHER = 'ViT-B-32:openai'
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHTS_OPTION = '--kd-teacher-weights'


@dataclasses.dataclass(frozen=True)
class SpecForm:
    """One way to write ``--kd-teacher``: the form, what it means, and the loader that builds it."""

    form: str  # As written, e.g. 'torchscript:PATH'; what precedes ':' is the prefix.
    about: str  # What the form names, for --kd-teacher's help and the errors.
    loader: str  # Dotted name of loader(spec, rest, weights, device) -> Teacher.


# A spec whose prefix is not in SPEC_LOADERS is 'MODEL:PRETRAINED' and goes whole (rest = spec) to this form.
PRETRAINED_FORM = SpecForm(
    'MODEL:PRETRAINED',
    f"an open_clip model and pretrained tag, e.g. '{DEFAULT_TEACHER}'; "
    f'add {WEIGHTS_OPTION}=PATH to load a local checkpoint instead of downloading',
    'stylegan2_ada_kd.kd.teacher_open_clip.load_pretrained',
)
# The spec forms 'PREFIX:REST' by prefix (REST goes to the loader). A new kind of teacher is one module with
# its loader plus one line here.
SPEC_LOADERS = {
    form.form.split(':')[0]: form
    for form in (
        SpecForm(
            'random:MODEL',
            'random-init open_clip model, tests and smoke runs only',
            'stylegan2_ada_kd.kd.teacher_open_clip.load_random',
        ),
        SpecForm(
            'torchscript:PATH',
            'a scripted image encoder [N, 3, S, S] -> [N, E]',
            'stylegan2_ada_kd.kd.teacher_torchscript.load_torchscript',
        ),
    )
}
SPEC_FORMS = ', '.join(f"'{f.form}' ({f.about})" for f in (PRETRAINED_FORM, *SPEC_LOADERS.values()))

_TEACHERS: dict[tuple, Teacher] = {}


class TeacherError(ValueError):
    """A KD teacher that cannot be built; the message says what was tried and how to fix it."""


class Teacher(torch.nn.Module):
    """A frozen teacher: images in ``[-1, 1]`` -> raw embeddings ``[N, E]`` (KD-DLGAN Sec. 3, "Teachers").

    Attributes: ``spec`` (as given to :func:`load_teacher`), ``weights`` (local file or None), ``embed_dim``
    (E), ``has_text`` (text tower present), ``input_size`` (S, the square input side), ``mean`` / ``std``
    (float32 buffers ``[3]``), ``is_random`` (random-init weights). Parameters never require grad and the
    module always stays in eval mode.
    """

    def __init__(
        self,
        spec: str,
        backbone: torch.nn.Module,
        *,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        tokenizer: Callable | None = None,
        is_random: bool = False,
        weights: str | None = None,
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.weights = weights
        self.backbone = backbone
        self.input_size = int(input_size)
        self.register_buffer('mean', torch.tensor([float(v) for v in mean], dtype=torch.float32))
        self.register_buffer('std', torch.tensor([float(v) for v in std], dtype=torch.float32))
        if self.mean.shape != (3,) or self.std.shape != (3,) or bool((self.std <= 0).any()):
            raise TeacherError(
                f'KD teacher {spec}: mean/std must be 3 values with std > 0, got {mean} / {std}'
            )
        self.tokenizer = tokenizer
        self.has_text = tokenizer is not None and hasattr(backbone, 'encode_text')
        self.is_random = bool(is_random)
        self._text_cache: dict[tuple, torch.Tensor] = {}
        super().requires_grad_(False)
        super().train(False)
        self.embed_dim = int(embed_dim) if embed_dim is not None else self._probe_embed_dim()

    def train(self, mode: bool = True) -> Teacher:
        """Ignore ``mode``: the teacher stays in eval mode (no dropout, frozen norm statistics)."""
        return super().train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Teacher:
        """Ignore ``requires_grad``: the teacher's parameters stay frozen (gradients reach inputs only)."""
        return super().requires_grad_(False)

    def _probe_embed_dim(self) -> int:
        """E from one forward pass of a zero image ``[1, 3, S, S]``; raises TeacherError unless 2-D out."""
        x = torch.zeros([1, 3, self.input_size, self.input_size], device=self.mean.device)
        try:
            with torch.no_grad():
                out = self._image_features(x)
        except Exception as err:
            raise TeacherError(
                f'KD teacher {self.spec}: a dry run on zeros [1, 3, {self.input_size}, {self.input_size}] '
                f'failed ({_one_line(err)}); the module must map normalised images [N, 3, S, S] to [N, E]'
            ) from err
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise TeacherError(
                f'KD teacher {self.spec}: expected an embedding [1, E] for a [1, 3, S, S] input, got {got}'
            )
        return int(out.shape[1])

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone image features of a preprocessed batch ``[N, 3, S, S]`` -> ``[N, E]``."""
        encode = getattr(self.backbone, 'encode_image', None)
        if encode is not None and not isinstance(self.backbone, torch.jit.ScriptModule):
            return encode(x)
        return self.backbone(x)

    def preprocess(self, img: torch.Tensor, variant: str = 'paper') -> torch.Tensor:
        """Teacher input ``[N, 3, S, S]`` float32 from images ``[N, C, H, W]`` (C = 1 or 3) in ``[-1, 1]``.

        ``'paper'`` (KD-DLGAN Sec. 3 / docs "default formulation"): map to ``[0, 1]``, resize the shorter
        side to S with antialiased bicubic and center-crop (= a plain resize for square images, as open_clip
        does), normalise with the teacher's mean/std. ``'official'`` (docs "official-code formulation"):
        nearest-neighbour resize of the ``[-1, 1]`` image to ``S x S``, no normalisation. Grayscale is
        repeated to 3 channels. Runs on the input's device, differentiable w.r.t. ``img``; no clamping.
        """
        assert_shape(img, [None, None, None, None], 'teacher image')
        if img.shape[1] not in (1, 3):
            raise TeacherError(f'KD teacher {self.spec}: images need 1 or 3 channels, got {list(img.shape)}')
        check_variant(variant)
        if img.device != self.mean.device:
            raise TeacherError(
                f'KD teacher {self.spec} is on {self.mean.device} but the images are on {img.device}; '
                'load it with load_teacher(..., device=<the training device>)'
            )
        x = img.to(torch.float32)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        size = self.input_size
        if variant == 'official':
            if tuple(x.shape[2:]) != (size, size):
                x = F.interpolate(x, size=(size, size), mode='nearest')
            return x
        x = (x + 1) * 0.5
        x = _resize_shortest_and_crop(x, size)
        x = (x - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)
        assert_shape(x, [None, 3, size, size], 'teacher input')
        return x

    def encode_image(self, img: torch.Tensor, variant: str = 'paper') -> torch.Tensor:
        """Raw (un-normalised) embeddings ``[N, E]`` float32 of images ``[N, C, H, W]`` in ``[-1, 1]``.

        On CUDA the backbone runs under bf16 autocast (fp16 where bf16 is unsupported); on CPU in fp32.
        Gradients reach ``img`` when the caller has grad enabled (the G-side diversity term); the teacher's
        parameters never get any. Wrap in ``torch.no_grad()`` for KD targets.
        """
        x = self.preprocess(img, variant)
        assert_shape(x, [None, 3, self.input_size, self.input_size], 'teacher input')
        if x.device.type == 'cuda':
            amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast('cuda', dtype=amp):
                out = self._image_features(x)
        else:
            out = self._image_features(x)
        assert_shape(out, [img.shape[0], self.embed_dim], 'teacher embedding')
        return out.to(torch.float32)

    def forward(self, img: torch.Tensor, variant: str = 'paper') -> torch.Tensor:
        """Same as :meth:`encode_image`: ``[N, C, H, W]`` in ``[-1, 1]`` -> ``[N, E]`` float32."""
        assert_shape(img, [None, None, None, None], 'teacher image')
        return self.encode_image(img, variant)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Raw text embeddings ``[K, E]`` float32 of K prompts (KD-DLGAN Sec. 3.3, the matrix A).

        Computed once per distinct prompt tuple and device, without grad, and cached: later calls return the
        same tensor object. Raises TeacherError for image-only teachers (TorchScript).
        """
        if not self.has_text:
            raise TeacherError(
                f'KD teacher {self.spec} has no text encoder, so it cannot embed prompts; use an open_clip '
                f'teacher (e.g. --kd-teacher={DEFAULT_TEACHER}) or real-image anchors (kd.anchors) for CGKD'
            )
        prompts = tuple(prompts)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise TeacherError(
                f'KD teacher {self.spec}: prompts must be non-empty strings, got {list(prompts)}'
            )
        device = self.mean.device
        key = (prompts, str(device))
        if key not in self._text_cache:
            tokens = self.tokenizer(list(prompts)).to(device)
            with torch.no_grad():
                emb = self.backbone.encode_text(tokens).to(torch.float32)
            assert_shape(emb, [len(prompts), self.embed_dim], 'teacher text embedding')
            self._text_cache[key] = emb
        return self._text_cache[key]

    def extra_repr(self) -> str:
        """One line for ``print(teacher)``: spec, E, S and whether the weights are random."""
        return (
            f'spec={self.spec!r}, embed_dim={self.embed_dim}, input_size={self.input_size}, '
            f'random={self.is_random}'
        )


def _resize_shortest_and_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[N, 3, H, W]`` so the shorter side is ``size`` (antialiased bicubic), then center-crop.

    Sizes and crop offsets follow torchvision's ``Resize(int)`` + ``CenterCrop`` used by open_clip.
    """
    h, w = int(x.shape[2]), int(x.shape[3])
    if (h, w) == (size, size):
        return x
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode='bicubic', antialias=True, align_corners=False)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return x[:, :, top : top + size, left : left + size]


def _one_line(err: BaseException, limit: int = 300) -> str:
    """``'Type: first line of the message'``, at most ``limit`` characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = f'{type(err).__name__}: {lines[0] if lines else ""}'
    return text if len(text) <= limit else text[: limit - 3] + '...'


# ----------------------------------------------------------------------------------------------------------
# Loading.


def clear_teacher_cache() -> None:
    """Forget every teacher built by :func:`load_teacher` in this process (frees their memory; the next call
    reads the spec's files again)."""
    _TEACHERS.clear()


def load_teacher(
    spec: str = DEFAULT_TEACHER, weights: str | None = None, device: str | torch.device = 'cpu'
) -> Teacher:
    """The frozen teacher for ``--kd-teacher=spec`` (and ``--kd-teacher-weights=weights``), on ``device``.

    Spec forms: ``'MODEL:PRETRAINED'`` (open_clip name and pretrained tag, downloaded through open_clip's
    cache, or read from the local file ``weights``), ``'random:MODEL'`` (random init, prints a warning;
    tests and smoke runs only) and ``'torchscript:PATH'`` (an image-only scripted encoder); MODEL is an
    open_clip model name or an open_clip model-config JSON file (``PATH.json``). Built once per
    process and ``(spec, weights)``, and held once: asking for it on another device moves that same module
    there (e.g. train.py's option check loads it on CPU, the loss then moves it to the training GPU), so a
    process never keeps a second copy. Any failure raises one :class:`TeacherError`; random weights are
    never used unless asked for with ``random:``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise TeacherError(f'--kd-teacher: empty teacher spec {spec!r}; accepted forms: {SPEC_FORMS}')
    spec = spec.strip()
    try:
        dev = torch.empty(0, device=device).device  # 'cuda' -> 'cuda:N' (current device), 'cpu:0' -> 'cpu'
    except (RuntimeError, TypeError) as err:
        raise TeacherError(f'KD teacher {spec}: cannot use device {device!r} ({_one_line(err)})') from err
    key = (spec, os.path.abspath(os.path.expanduser(weights)) if weights else None, str(dev))
    if key not in _TEACHERS:
        other = next((k for k in _TEACHERS if k[:2] == key[:2]), None)
        if other is not None:
            _TEACHERS[key] = _TEACHERS.pop(other).to(dev)
        else:
            _TEACHERS[key] = _build_teacher(spec, key[1], dev)
            if _TEACHERS[key].is_random:
                print(random_warning(spec), flush=True)
    return _TEACHERS[key]


def _build_teacher(spec: str, weights: str | None, device: torch.device) -> Teacher:
    """The loader of the spec's form (:data:`SPEC_LOADERS`) called on it; see :func:`load_teacher`."""
    if ':' not in spec:
        raise TeacherError(f'--kd-teacher={spec}: not a teacher spec; accepted forms: {SPEC_FORMS}')
    prefix, rest = spec.split(':', 1)
    if prefix not in SPEC_LOADERS:
        return construct_class_by_name(spec, spec, weights, device, class_name=PRETRAINED_FORM.loader)
    return construct_class_by_name(spec, rest, weights, device, class_name=SPEC_LOADERS[prefix].loader)


def random_warning(spec: str) -> str:
    """The loud multi-line banner printed when a random-init teacher is built."""
    bar = '!' * 100
    return (
        f'{bar}\nWARNING: random-init KD teacher ({spec}) -- for tests and smoke runs only; KD with it '
        f'teaches nothing.\nWARNING: for real training use a pretrained teacher, e.g. --kd-teacher='
        f'{DEFAULT_TEACHER} (add {WEIGHTS_OPTION}=PATH on offline machines).\n{bar}'
    )
