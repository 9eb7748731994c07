"""KD teachers (kd/teacher.py and its loaders) and real-image anchors (kd/anchors.py), on a tiny random CLIP
(tests/data/tiny-clip.json): CPU, offline."""

import copy
import importlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import open_clip
import PIL.Image
import pytest
import torch
from conftest import REPO, TINY_CLIP_CONFIG, TINY_CLIP_SPEC, tiny_clip_name

from stylegan2_ada_kd.kd import anchors as anchors_mod
from stylegan2_ada_kd.kd import teacher as teacher_mod
from stylegan2_ada_kd.kd import teacher_torchscript
from stylegan2_ada_kd.kd.anchors import AnchorError, kmeans, real_image_anchors
from stylegan2_ada_kd.kd.teacher import Teacher, TeacherError, load_teacher

TINY = tiny_clip_name()  # 'tiny-clip', known to open_clip in this process
TINY_SPEC = TINY_CLIP_SPEC  # 'random:.../tests/data/tiny-clip.json', buildable in any process


@pytest.fixture(scope='module')
def teacher():
    return load_teacher(TINY_SPEC)


def _smooth_uint8(h, w, channels=3, seed=0):
    """A smooth uint8 [H, W, C] image (bilinear upsampling of 8x8 noise), like a photo rather than noise."""
    low = torch.from_numpy(np.random.RandomState(seed).rand(1, channels, 8, 8)).float()
    img = torch.nn.functional.interpolate(low, size=(h, w), mode='bilinear', align_corners=False)
    return img[0].permute(1, 2, 0).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()


def _to_pm1(arr):
    """uint8 [H, W, C] -> float32 [1, C, H, W] in [-1, 1], the trainer's image range."""
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(torch.float32) / 127.5 - 1


# ----------------------------------------------------------------------------------------------------------
# The Teacher module.


def test_tiny_teacher_shapes_dtypes_and_attributes(teacher):
    assert isinstance(teacher, Teacher) and teacher.spec == TINY_SPEC
    assert teacher.embed_dim == 16 and teacher.input_size == 32 and teacher.has_text and teacher.is_random
    assert teacher.mean.shape == (3,) and teacher.std.shape == (3,)
    img = torch.rand(5, 3, 24, 24) * 2 - 1
    emb = teacher.encode_image(img)
    assert emb.shape == (5, 16) and emb.dtype == torch.float32
    assert torch.equal(teacher(img), emb)
    gray = teacher.encode_image(img[:, :1])
    assert torch.allclose(gray, teacher.encode_image(img[:, :1].repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError, match='1 or 3 channels'):
        teacher.encode_image(torch.zeros(2, 4, 32, 32))
    with pytest.raises(ValueError, match='--kd-variant'):
        teacher.encode_image(img, variant='nope')


def test_teacher_is_frozen_and_stays_in_eval(teacher):
    assert all(not p.requires_grad for p in teacher.parameters())
    assert teacher.train(True) is teacher
    assert not teacher.training and not any(m.training for m in teacher.modules())
    teacher.requires_grad_(True)
    assert all(not p.requires_grad for p in teacher.parameters())


def test_gradient_reaches_the_image_not_the_teacher(teacher):
    img = (torch.rand(3, 3, 40, 40) * 2 - 1).requires_grad_(True)
    teacher.encode_image(img).square().sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    with torch.no_grad():
        assert not teacher.encode_image(img).requires_grad


def test_encode_text_shape_and_cache(teacher, monkeypatch):
    calls = []
    original = teacher.backbone.encode_text

    def counting(tokens, *args, **kwargs):
        calls.append(tokens.shape[0])
        return original(tokens, *args, **kwargs)

    monkeypatch.setattr(teacher.backbone, 'encode_text', counting)
    prompts = ['a photo of a cat', 'a photo of a dog', 'a cached prompt only this test uses']
    first = teacher.encode_text(prompts)
    assert first.shape == (3, 16) and first.dtype == torch.float32 and not first.requires_grad
    assert teacher.encode_text(list(prompts)) is first and teacher.encode_text(tuple(prompts)) is first
    assert calls == [3]
    assert teacher.encode_text(prompts[:2]).shape == (2, 16) and calls == [3, 2]
    with pytest.raises(TeacherError, match='non-empty'):
        teacher.encode_text([])


def test_paper_preprocessing_matches_open_clip_pil_transform(teacher):
    """Our torch preprocessing vs open_clip's PIL pipeline (Resize shortest, bicubic; CenterCrop; Normalize).

    Measured max |diff| (normalised units) for smooth images: 64x64 -> 32: 0.0140 (0.94/255 in [0, 1] pixel
    units), 64x80: 0.0156, 32x32 (no resize): 1e-7; mean |diff| about 0.004 (0.28 grey levels). PIL resamples
    uint8 in two passes and rounds (and clips) the intermediate and final results to whole grey levels;
    torch's antialiased bicubic (the same a = -0.5 kernel as PIL) stays in float. Two roundings bound the gap
    by about 1 grey level = 1/255/std ~ 0.015 here; the tolerance allows 2 grey levels (0.03) for the max and
    half a grey level for the mean. On white noise PIL's clipping of overshoots in its intermediate image adds
    2-7 grey levels, so the test uses a smooth, photo-like image.
    """
    _, _, preprocess_val = open_clip.create_model_and_transforms(TINY, pretrained=None)
    tol = 2 / 255 / float(teacher.std.min())
    for h, w in [(64, 64), (64, 80), (32, 32)]:  # 2x down; non-square (shorter side + center crop); identity
        arr = _smooth_uint8(h, w, seed=h + w)
        ref = preprocess_val(PIL.Image.fromarray(arr))
        ours = teacher.preprocess(_to_pm1(arr))[0]
        assert ours.shape == ref.shape == (3, 32, 32)
        diff = (ours - ref).abs()
        assert float(diff.max()) < tol, (h, w, float(diff.max()))
        assert float(diff.mean()) < 0.5 / 255 / float(teacher.std.min()), (h, w, float(diff.mean()))


def test_official_preprocessing_is_nearest_upsampling_without_normalisation(teacher):
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    out = teacher.preprocess(img, variant='official')
    assert out.shape == (2, 3, 32, 32)
    assert torch.equal(out, img.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    assert torch.equal(teacher.preprocess(img[:, :1], variant='official'), out[:, :1].repeat(1, 3, 1, 1))
    assert teacher.encode_image(img, variant='official').shape == (2, 16)


def test_teachers_are_cached_per_process_and_device(teacher):
    assert load_teacher(TINY_SPEC) is teacher
    assert load_teacher(TINY_SPEC, device='cpu:0') is teacher


def test_a_teacher_is_built_once_and_held_once_per_process(monkeypatch):
    # The option check loads on CPU, the loss asks for the training device: one build, one module, moved.
    monkeypatch.setattr(teacher_mod, '_TEACHERS', {})  # A fresh process-wide cache, restored afterwards.
    first = load_teacher(TINY_SPEC)
    monkeypatch.setattr(teacher_mod, '_build_teacher', lambda *a: pytest.fail('teacher rebuilt'))
    moved = load_teacher(TINY_SPEC, device='meta')
    assert moved is first and moved.mean.device.type == 'meta' and moved.embed_dim == 16
    assert len(teacher_mod._TEACHERS) == 1  # no second copy left on the CPU
    assert load_teacher(TINY_SPEC, device='meta') is first


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_autocast_embeddings_are_float32_and_close(teacher, monkeypatch):
    # A copy is moved to CUDA (a process holds one teacher), so `teacher` stays on the CPU as the reference.
    monkeypatch.setattr(teacher_mod, '_TEACHERS', {(TINY_SPEC, None, 'cpu'): copy.deepcopy(teacher)})
    cuda = load_teacher(TINY_SPEC, device='cuda')
    img = torch.rand(4, 3, 32, 32) * 2 - 1
    emb = cuda.encode_image(img.cuda())
    assert emb.dtype == torch.float32 and emb.device.type == 'cuda'
    ref = teacher.encode_image(img)
    assert torch.allclose(emb.cpu(), ref, atol=0.05 * float(ref.abs().max()))
    assert cuda.encode_text(['a', 'b']).device.type == 'cuda'


# ----------------------------------------------------------------------------------------------------------
# Loading: random warning, local weight files, errors.


def test_random_teacher_prints_a_loud_warning(capsys, monkeypatch):
    monkeypatch.setattr(teacher_mod, '_TEACHERS', {})  # A fresh process-wide cache, restored afterwards.
    t = load_teacher(TINY_SPEC)
    out = capsys.readouterr().out
    assert t.is_random and 'WARNING: random-init KD teacher' in out and TINY_SPEC in out
    assert 'teaches nothing' in out and out.count('\n') >= 3


def test_weights_in_open_clip_format_load_exactly(teacher, tmp_path):
    path = tmp_path / 'open_clip_pytorch_model.bin'
    torch.save(teacher.backbone.state_dict(), path)
    loaded = load_teacher(f'{TINY}:mine', weights=str(path))
    assert not loaded.is_random and loaded.weights == str(path)
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(loaded.encode_image(img), teacher.encode_image(img), atol=1e-6)


def test_weights_in_openai_torchscript_format_load_with_quick_gelu(tmp_path):
    src = open_clip.create_model(TINY, pretrained=None, force_quick_gelu=True).eval()
    traced = copy.deepcopy(src)
    del traced._buffers['attn_mask']  # Non-persistent in open_clip; OpenAI's archives do not hold it either.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        scripted = torch.jit.trace_module(
            traced, {'encode_image': torch.zeros(1, 3, 32, 32)}, check_trace=False
        )
    path = tmp_path / 'ViT-tiny.pt'
    torch.jit.save(scripted, str(path))
    loaded = load_teacher(f'{TINY}:openai-format', weights=str(path))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ref = src.encode_image(loaded.preprocess(x))
    assert torch.allclose(loaded.encode_image(x), ref, atol=1e-6)


def _assert_readable(err, *parts):
    text = str(err.value)
    assert '\n' not in text
    for part in parts:
        assert part in text, (part, text)


def test_unknown_model_name():
    with pytest.raises(TeacherError) as err:
        load_teacher('ViT-B-33:openai')
    _assert_readable(err, 'ViT-B-33', 'ViT-B-32', 'open_clip.list_models()', '--kd-teacher-weights')


def test_unknown_pretrained_tag():
    with pytest.raises(TeacherError) as err:
        load_teacher('ViT-B-32:no_such_tag')
    _assert_readable(err, "'no_such_tag'", 'openai', 'list_pretrained_tags_by_model', '--kd-teacher-weights')


def test_missing_weights_file(tmp_path):
    missing = str(tmp_path / 'nope' / 'ViT-B-32.pt')
    with pytest.raises(TeacherError) as err:
        load_teacher('ViT-B-32:openai', weights=missing)
    _assert_readable(err, missing, 'does not exist', '--kd-teacher-weights', 'ViT-B-32.pt')


def test_corrupt_weights_file(tmp_path):
    path = tmp_path / 'open_clip_pytorch_model.bin'
    path.write_bytes(b'this is not a checkpoint' * 10)
    with pytest.raises(TeacherError) as err:
        load_teacher(f'{TINY}:mine', weights=str(path))
    _assert_readable(
        err, str(path), TINY, 'cannot load', '--kd-teacher-weights', 'open_clip_pytorch_model.bin'
    )


# Offline behaviour of pretrained tags (cache lookup, one request, the error): test_kd_teacher_offline.py.


@pytest.mark.parametrize('spec', ['ViT-B-32', 'nonsense', ':openai', 'ViT-B-32:'])
def test_bad_spec_lists_the_accepted_forms(spec):
    with pytest.raises(TeacherError, match='accepted forms') as err:
        load_teacher(spec)
    _assert_readable(err, 'random:MODEL', 'torchscript:PATH', 'MODEL:PRETRAINED')


def test_every_spec_form_has_a_loader_and_is_listed_in_the_errors():
    for prefix, form in teacher_mod.SPEC_LOADERS.items():
        assert form.form.startswith(f'{prefix}:'), form
    for form in [*teacher_mod.SPEC_LOADERS.values(), teacher_mod.PRETRAINED_FORM]:
        module, name = form.loader.rsplit('.', 1)
        assert callable(getattr(importlib.import_module(module), name)), form.loader
        assert f"'{form.form}' ({form.about})" in teacher_mod.SPEC_FORMS, form.form


def test_random_and_torchscript_take_no_weights(tmp_path):
    with pytest.raises(TeacherError, match='takes no --kd-teacher-weights'):
        load_teacher(TINY_SPEC, weights=str(tmp_path / 'w.bin'))
    with pytest.raises(TeacherError, match='does not apply to TorchScript'):
        load_teacher(f'torchscript:{tmp_path}/m.pt', weights=str(tmp_path / 'w.bin'))


def test_a_model_config_file_is_added_once_and_never_replaces_another(tmp_path):
    assert tiny_clip_name() == TINY  # idempotent
    builtin = tmp_path / 'ViT-B-32.json'
    builtin.write_text(TINY_CLIP_CONFIG.read_text())
    with pytest.raises(TeacherError, match='already has a model') as err:
        load_teacher(f'random:{builtin}')
    _assert_readable(err, str(builtin), 'rename')
    broken = tmp_path / 'broken-test-clip.json'
    broken.write_text(json.dumps({'embed_dim': 4}))
    with pytest.raises(TeacherError, match='vision_cfg'):
        load_teacher(f'random:{broken}')
    with pytest.raises(TeacherError, match='cannot read'):
        load_teacher(f'random:{tmp_path}/missing.json')
    assert 'broken-test-clip' not in open_clip.list_models()


def test_a_random_teacher_from_a_config_file_builds_in_a_fresh_process():
    """What train.py in a subprocess does with --kd-teacher=random:PATH.json: no registration beforehand."""
    code = (
        'import sys; from stylegan2_ada_kd.kd.teacher import load_teacher; '
        't = load_teacher(sys.argv[1]); print(t.embed_dim, t.input_size, t.has_text)'
    )
    res = subprocess.run(
        [sys.executable, '-c', code, TINY_SPEC], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == '16 32 True'


def test_a_registered_config_name_is_a_model_name(teacher):
    named = load_teacher(f'random:{TINY}')
    assert named is not teacher and named.embed_dim == teacher.embed_dim == 16


# ----------------------------------------------------------------------------------------------------------
# TorchScript teachers.


class _Encoder(torch.nn.Module):
    def __init__(self, with_attrs):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 12)
        if with_attrs:
            self.input_size = 48
            self.register_buffer('mean', torch.tensor([0.5, 0.5, 0.5]))
            self.register_buffer('std', torch.tensor([0.25, 0.25, 0.25]))

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


@pytest.mark.parametrize('with_attrs', [True, False])
def test_torchscript_teacher(tmp_path, with_attrs):
    path = tmp_path / f'encoder_{with_attrs}.pt'
    torch.jit.save(torch.jit.script(_Encoder(with_attrs).eval()), str(path))
    t = load_teacher(f'torchscript:{path}')
    assert t.embed_dim == 12 and not t.has_text and not t.is_random
    assert t.input_size == (48 if with_attrs else 224)
    expected_mean = (0.5, 0.5, 0.5) if with_attrs else teacher_torchscript.IMAGENET_MEAN
    assert torch.allclose(t.mean, torch.tensor(expected_mean))
    img = torch.rand(3, 3, 32, 32) * 2 - 1
    assert t.encode_image(img).shape == (3, 12) and t.preprocess(img).shape[-1] == t.input_size
    with pytest.raises(TeacherError, match='no text encoder'):
        t.encode_text(['a photo', 'a drawing'])


def test_torchscript_missing_or_bad_file(tmp_path):
    with pytest.raises(TeacherError, match='does not exist'):
        load_teacher(f'torchscript:{tmp_path}/missing.pt')
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not torchscript')
    with pytest.raises(TeacherError, match='torch.jit.load') as err:
        load_teacher(f'torchscript:{bad}')
    _assert_readable(err, str(bad))


# ----------------------------------------------------------------------------------------------------------
# k-means and real-image anchors.


def test_kmeans_recovers_well_separated_clusters():
    gen = torch.Generator().manual_seed(1)
    true = torch.randn(4, 8, generator=gen) * 10
    x = (true.repeat_interleave(30, 0) + 0.1 * torch.randn(120, 8, generator=gen))[
        torch.randperm(120, generator=gen)
    ]
    centers = kmeans(x, 4, seed=0)
    assert centers.shape == (4, 8) and centers.dtype == torch.float32
    assert torch.cdist(true, centers).min(1).values.max() < 0.1
    assert torch.cdist(centers, true).min(1).values.max() < 0.1  # One center per cluster.
    assert torch.equal(kmeans(x, 4, seed=0), centers)
    assert kmeans(x[:5], 5).shape == (5, 8)
    with pytest.raises(AnchorError, match='k=6 clusters from 5'):
        kmeans(x[:5], 6)


def _dataset(n=18, channels=3, size=16):
    """Items like the training set: (uint8 [C, H, W], label); three colour groups."""
    items = []
    for i in range(n):
        arr = _smooth_uint8(size, size, channels=channels, seed=100 + i).transpose(2, 0, 1)
        arr = np.clip(arr.astype(np.int32) // 2 + 80 * (i % 3), 0, 255).astype(np.uint8)
        items.append((np.ascontiguousarray(arr), np.zeros([0], np.float32)))
    return items


def test_real_image_anchors_are_unit_norm_and_cached(teacher, tmp_path, monkeypatch):
    cache = str(tmp_path / 'sub' / 'anchors.pt')
    data = _dataset()
    first, center = real_image_anchors(teacher, data, 3, cache, batch=4)
    assert first.shape == (3, teacher.embed_dim) and first.dtype == torch.float32
    assert center.shape == (teacher.embed_dim,) and center.dtype == torch.float32
    assert torch.allclose(first.norm(dim=1), torch.ones(3), atol=1e-5)
    assert os.path.isfile(cache) and not [f for f in os.listdir(tmp_path / 'sub') if '.tmp' in f]

    monkeypatch.setattr(anchors_mod, 'kmeans', lambda *a, **k: pytest.fail('recomputed despite the cache'))
    again = real_image_anchors(teacher, data, 3, cache, batch=4)
    assert torch.equal(again.anchors, first) and torch.equal(again.center, center)

    calls = []
    monkeypatch.setattr(anchors_mod, 'kmeans', lambda *a, **k: calls.append(a[1]) or kmeans(*a, **k))
    assert real_image_anchors(teacher, data, 2, cache).anchors.shape == (2, teacher.embed_dim)
    assert calls == [2]  # k changed: recomputed ...
    assert real_image_anchors(teacher, data, 2, cache).anchors.shape == (2, teacher.embed_dim)
    assert calls == [2]  # ... and the new anchors cached.


def test_real_image_anchors_grayscale_subset_and_no_cache(teacher):
    data = _dataset(n=12, channels=1)
    a = real_image_anchors(teacher, data, 2, None, max_images=8, seed=3).anchors
    assert a.shape == (2, teacher.embed_dim)
    assert torch.equal(real_image_anchors(teacher, data, 2, None, max_images=8, seed=3).anchors, a)
    with pytest.raises(AnchorError, match='k=9 clusters from 8'):
        real_image_anchors(teacher, data, 9, None, max_images=8)
