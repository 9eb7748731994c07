"""open_clip teachers for KD-DLGAN: name checks, offline-first weights, building and wrapping the model.

The loaders of ``--kd-teacher=MODEL:PRETRAINED`` (:func:`load_pretrained`) and ``random:MODEL``
(:func:`load_random`). MODEL is an open_clip model name, or the path of an open_clip model-config JSON file
(``embed_dim``, ``vision_cfg``, ``text_cfg``, as open_clip's own ``model_configs/*.json``), which is added to
open_clip under its file name without ``.json`` (:func:`add_config_file`) in whichever process is given the
spec: a custom architecture, or a CLIP small enough for CPU tests.

A pretrained tag (``--kd-teacher=MODEL:TAG``) is turned into a local checkpoint file before open_clip sees it,
so open_clip's own download (for ViT-B-32:openai: two Hugging Face files, each retried five times with
backoff, about 50 s of retry warnings on an offline machine) never runs:

1. the local caches open_clip would fill: the Hugging Face hub cache (``HF_HUB_CACHE``, by default
   ``~/.cache/huggingface/hub``) for the tag's ``hf_hub`` repo, safetensors first as open_clip does; then
   open_clip's URL cache ``~/.cache/clip`` for the tag's ``url`` (checked against the SHA-256 in the URL);
2. on a cache miss, one request (a HEAD, no retries, ``HF_HUB_ETAG_TIMEOUT`` seconds, default 10); only if
   the server answers does the real download run (into the same cache). None under ``HF_HUB_OFFLINE=1``;
3. otherwise one :class:`TeacherError` naming the caches looked in, the request made and the fix
   (``--kd-teacher-weights=PATH`` or filling the cache). The hub's loggers and warnings are silenced for
   that request only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import os
import warnings
import zipfile
from collections.abc import Iterator
from typing import Any, Callable

import torch

from stylegan2_ada_kd.kd.teacher import (
    DEFAULT_TEACHER,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    SPEC_FORMS,
    WEIGHTS_OPTION,
    Teacher,
    TeacherError,
    _one_line,
)

HF_WEIGHTS_NAME = 'open_clip_pytorch_model.bin'  # open_clip's default file name in a hub repo
HF_SAFE_WEIGHTS_NAME = 'open_clip_model.safetensors'
URL_CACHE_DIR = '~/.cache/clip'  # open_clip's download_pretrained_from_url default
CONFIG_KEYS = ('embed_dim', 'vision_cfg', 'text_cfg')  # What open_clip needs in a model config.


@dataclasses.dataclass
class WeightSources:
    """Where open_clip would fetch a tag's weights: a hub repo and candidate file names, and/or a URL."""

    repo: str  # Hugging Face repo id; '' if the tag has none
    files: list[str]  # file names to try in the repo, in open_clip's order (safetensors first)
    url: str  # direct download URL; '' if none


def weight_sources(tag_cfg: dict) -> WeightSources:
    """The sources of an open_clip pretrained config (``open_clip.get_pretrained_cfg(name, tag)``)."""
    repo, fname = os.path.split(tag_cfg.get('hf_hub') or '')  # 'org/name/' means the default file name
    files: list[str] = []
    if repo:
        fname = fname or HF_WEIGHTS_NAME
        if _has_safetensors():
            if fname == HF_WEIGHTS_NAME:
                files.append(HF_SAFE_WEIGHTS_NAME)
            elif fname.endswith(('.bin', '.pth')):
                files.append(fname[:-4] + '.safetensors')
        files.append(fname)
    return WeightSources(repo, files, tag_cfg.get('url') or '')


def _has_safetensors() -> bool:
    """Whether open_clip would look for ``.safetensors`` files (it does when safetensors is installed)."""
    try:
        import safetensors  # noqa: F401
    except ImportError:
        return False
    return True


def hf_cache_dir() -> str:
    """The Hugging Face hub cache folder huggingface_hub (and so open_clip) uses in this process."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def url_cache_path(url: str) -> str:
    """Where open_clip keeps a file downloaded from ``url``: ``~/.cache/clip/<file name>``."""
    return os.path.join(os.path.expanduser(URL_CACHE_DIR), os.path.basename(url))


def _expected_sha256(url: str) -> str:
    """The SHA-256 (prefix) open_clip checks for a URL download; '' when it checks none."""
    if 'openaipublic' in url:
        return url.split('/')[-2]
    if 'mlfoundations' in url:
        return os.path.splitext(os.path.basename(url))[0].split('-')[-1]
    return ''


def _sha256_matches(path: str, expected: str) -> bool:
    """Whether the file's SHA-256 hex digest starts with ``expected`` (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest().startswith(expected)


def find_cached(src: WeightSources) -> str | None:
    """A cached checkpoint for ``src`` without any network access, or None."""
    if src.repo:
        from huggingface_hub import try_to_load_from_cache

        for fname in src.files:
            path = try_to_load_from_cache(src.repo, fname, cache_dir=hf_cache_dir())
            if isinstance(path, str) and os.path.isfile(path):
                return path
    if src.url:
        path = url_cache_path(src.url)
        expected = _expected_sha256(src.url)
        if os.path.isfile(path) and (not expected or _sha256_matches(path, expected)):
            return path
    return None


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """Silence huggingface_hub's loggers (below ERROR) and all warnings for the duration of the block."""
    logger = logging.getLogger('huggingface_hub')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            yield
    finally:
        logger.setLevel(level)


def download_once(src: WeightSources) -> tuple[str | None, str]:
    """``(path, '')`` after a download, or ``(None, what was tried and why it failed)``.

    The first request is a HEAD with no retries; a connection error or timeout ends the attempt there. A
    404 for one candidate file name (the hub answered) moves on to the next name.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None, 'made no download attempt because HF_HUB_OFFLINE is set'
    timeout = float(constants.HF_HUB_ETAG_TIMEOUT)
    if src.repo:
        return _hf_download_once(src, timeout)
    if src.url:
        return _url_download_once(src.url, timeout)
    return None, 'found no download source in the pretrained config'


def _hf_download_once(src: WeightSources, timeout: float) -> tuple[str | None, str]:
    """One HEAD per candidate file (no retries) until one exists, then ``hf_hub_download`` of that file."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    for fname in src.files:
        url = hf_hub_url(src.repo, fname)
        try:
            with _quiet_hub():
                get_hf_file_metadata(url, timeout=timeout)
        except EntryNotFoundError:
            continue  # The hub answered: no such file in the repo.
        except Exception as err:
            return None, f'made one request, to {url} (timeout {timeout:g} s, no retries): {_one_line(err)}'
        return hf_hub_download(src.repo, fname, cache_dir=hf_cache_dir(), library_name='open_clip'), ''
    return None, f'found none of {src.files} in the Hugging Face repo {src.repo}'


def _url_download_once(url: str, timeout: float) -> tuple[str | None, str]:
    """One HEAD request to ``url`` (no retries); if it answers, open_clip's download into its URL cache."""
    import urllib.request

    from open_clip.pretrained import download_pretrained_from_url

    try:
        request = urllib.request.Request(url, method='HEAD')
        with _quiet_hub(), urllib.request.urlopen(request, timeout=timeout):
            pass
    except Exception as err:
        return None, f'made one request, to {url} (timeout {timeout:g} s, no retries): {_one_line(err)}'
    return download_pretrained_from_url(url), ''


def resolve_pretrained(spec: str, name: str, tag: str, tag_cfg: dict) -> str:
    """The local checkpoint of open_clip's pretrained ``tag`` of ``name``: cached, or downloaded once.

    Raises one TeacherError (what was looked at and tried, how to fix it) when neither works.
    """
    if tag_cfg.get('file'):
        return str(tag_cfg['file'])
    src = weight_sources(tag_cfg)
    cached = find_cached(src)
    if cached:
        return cached
    try:
        path, failure = download_once(src)
    except Exception as err:
        path, failure = None, f'the download failed: {_one_line(err)}'
    if path:
        return path
    raise TeacherError(_not_found_message(spec, name, tag, tag_cfg, src, failure))


def _not_found_message(
    spec: str, name: str, tag: str, tag_cfg: dict, src: WeightSources, failure: str
) -> str:
    """The one-line error for weights that are neither cached nor downloadable: what was tried, the fix."""
    looked = []
    if src.repo:
        looked.append(f'the Hugging Face cache {hf_cache_dir()} (repo {src.repo}: {", ".join(src.files)})')
    if src.url:
        looked.append(f"open_clip's URL cache {url_cache_path(src.url)}")
    fill = ''
    if src.repo:
        fill = (
            f'Or fill the cache online with `hf download {src.repo} {src.files[-1]}` and copy it over '
            '(HF_HUB_CACHE or HF_HOME choose the folder). '
        )
    where = ' and '.join(looked) or 'no cache'
    return (
        f'--kd-teacher={spec}: the pretrained weights of open_clip model {name}, tag {tag!r} are not on this '
        f'machine and could not be downloaded; it may be offline. Looked in {where}; then {failure}. '
        f'{download_hint(name, tag, tag_cfg)} {fill}'
        "A teacher never falls back to random weights ('random:MODEL' is for smoke tests only)."
    )


def add_config_file(spec: str, path: str) -> str:
    """Add the open_clip model config of the JSON file ``path`` to open_clip; returns its name (file stem).

    Adding a file whose name and config open_clip already has is a no-op. Raises TeacherError for a file that
    cannot be read, lacks a key of :data:`CONFIG_KEYS`, or would replace another config of that name (one of
    open_clip's own, or another file's).
    """
    import open_clip

    path = os.path.expanduser(path)
    name = os.path.splitext(os.path.basename(path))[0]
    try:
        with open(path, encoding='utf-8') as f:
            cfg = json.load(f)
    except (OSError, ValueError) as err:
        raise TeacherError(
            f'--kd-teacher={spec}: cannot read the open_clip model config {path} ({_one_line(err)})'
        ) from err
    missing = [key for key in CONFIG_KEYS if not isinstance(cfg, dict) or key not in cfg]
    if missing:
        raise TeacherError(
            f'--kd-teacher={spec}: the open_clip model config {path} lacks {missing}; it needs '
            f'{", ".join(CONFIG_KEYS)}'
        )
    known = open_clip.get_model_config(name)
    if known is None:
        open_clip.add_model_config(path)
    elif known != cfg:
        raise TeacherError(
            f'--kd-teacher={spec}: open_clip already has a model named {name!r} with another config; '
            f'rename {path}'
        )
    return name


def check_model_name(spec: str, model_name: str) -> str:
    """open_clip's name for ``model_name`` ('/' -> '-'), or TeacherError listing close and valid names.

    A ``model_name`` ending in ``.json`` is a model-config file, added by :func:`add_config_file`.
    """
    import open_clip

    if model_name.endswith('.json'):
        return add_config_file(spec, model_name)
    name = model_name.replace('/', '-')
    models = open_clip.list_models()
    if name in models:
        return name
    close = difflib.get_close_matches(name, models, n=5, cutoff=0.5)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise TeacherError(
        f'--kd-teacher={spec}: open_clip {open_clip.__version__} has no model named {name!r}.{hint} '
        f'Valid names are listed by open_clip.list_models() ({len(models)} models, e.g. ViT-B-32, '
        'ViT-B-16, ViT-L-14); valid MODEL:TAG pairs by open_clip.list_pretrained(). On an offline machine '
        f'use a valid name with {WEIGHTS_OPTION}=PATH.'
    )


def download_hint(model_name: str, tag: str | None, cfg: dict) -> str:
    """Where to fetch the weights of a pretrained tag by hand, from open_clip's pretrained config ``cfg``."""
    sources = []
    if cfg.get('url'):
        fname = os.path.basename(cfg['url'])
        kind = "OpenAI's TorchScript file" if 'openaipublic' in cfg['url'] else 'the file'
        sources.append(f'{kind} {fname} from {cfg["url"]}')
    if cfg.get('hf_hub'):
        repo, fname = os.path.split(cfg['hf_hub'])  # 'org/name/' means the default file name
        sources.append(f'{fname or HF_WEIGHTS_NAME} from the Hugging Face repo {repo}')
    where = ' or '.join(sources) if sources else f'a CLIP checkpoint for {model_name}'
    return (
        f'On a machine with internet, download {where}, copy it here and pass {WEIGHTS_OPTION}=PATH '
        f'(keep --kd-teacher={model_name}:{tag or "TAG"} so the activation and normalisation of that tag are '
        'used), or run once online so open_clip caches it.'
    )


def load_random(
    spec: str,  # The whole --kd-teacher value, for messages.
    model: str,  # MODEL: the spec after 'random:'.
    weights: str | None,  # --kd-teacher-weights; must be None.
    device: torch.device,  # Where the teacher runs.
) -> Teacher:
    """``random:MODEL``: a random-init open_clip model (smoke runs and tests; it teaches nothing)."""
    if weights:
        raise TeacherError(
            f'--kd-teacher={spec}: a random-init teacher takes no {WEIGHTS_OPTION}; to use the file, '
            f'pass --kd-teacher=MODEL:TAG (e.g. {DEFAULT_TEACHER}) with {WEIGHTS_OPTION}={weights}'
        )
    return _load_open_clip(spec, model, None, None, device)


def load_pretrained(
    spec: str,  # The whole --kd-teacher value, for messages.
    model_tag: str,  # 'MODEL:PRETRAINED' (the whole spec).
    weights: str | None,  # --kd-teacher-weights: a local checkpoint of MODEL instead of the tag's download.
    device: torch.device,  # Where the teacher runs.
) -> Teacher:
    """``MODEL:PRETRAINED``: open_clip model MODEL with the weights of pretrained tag PRETRAINED."""
    model_name, tag = model_tag.rsplit(':', 1)
    if not model_name or not tag:
        raise TeacherError(f'--kd-teacher={spec}: model or tag missing; accepted forms: {SPEC_FORMS}')
    return _load_open_clip(spec, model_name, tag, weights, device)


def _load_open_clip(
    spec: str, model_name: str, tag: str | None, weights: str | None, device: torch.device
) -> Teacher:
    """Build an open_clip teacher: random init (``tag`` None, no weights), a pretrained tag, or a file."""
    import open_clip

    name = check_model_name(spec, model_name)
    tag_cfg = open_clip.get_pretrained_cfg(name, tag) if tag else {}
    if weights and not os.path.isfile(weights):
        raise TeacherError(
            f'--kd-teacher={spec}: {WEIGHTS_OPTION}={weights} does not exist or is not a file; pass the path '
            f'of a local CLIP checkpoint for {name}. {download_hint(name, tag, tag_cfg)}'
        )
    if tag and not weights and not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise TeacherError(
            f'--kd-teacher={spec}: open_clip knows no pretrained tag {tag!r} for {name}; valid tags: '
            f'{tags or "none (this model has no released weights)"} '
            f'(open_clip.list_pretrained_tags_by_model). Or pass a local checkpoint with '
            f'{WEIGHTS_OPTION}=PATH.'
        )
    checkpoint = weights or (resolve_pretrained(spec, name, tag, tag_cfg) if tag else None)
    try:
        model, _train_tf, _val_tf = open_clip.create_model_and_transforms(
            name, pretrained=checkpoint, **_create_kwargs(tag_cfg, checkpoint, device)
        )
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as err:
        raise TeacherError(_open_clip_failure(spec, name, tag, weights, checkpoint, tag_cfg, err)) from err
    return _wrap_open_clip(spec, model, tokenizer, weights, is_random=checkpoint is None)


def _create_kwargs(tag_cfg: dict, checkpoint: str | None, device: torch.device) -> dict[str, Any]:
    """Keyword arguments of ``open_clip.create_model_and_transforms`` for a checkpoint file of a tag.

    open_clip gets a file path, never the tag, so the tag's QuickGELU and preprocessing (mean, std,
    interpolation, resize mode) are passed explicitly, as open_clip would take them from the tag.
    """
    kwargs: dict[str, Any] = dict(device=device, pretrained_image=False, pretrained_text=False)
    is_script = bool(checkpoint) and _is_torchscript_archive(checkpoint)
    if tag_cfg.get('quick_gelu') or is_script:
        # open_clip only warns when the tag's QuickGELU differs from the config; OpenAI weights need it.
        kwargs['force_quick_gelu'] = True
    if checkpoint:
        # torch.load refuses TorchScript archives (OpenAI's files) under weights_only=True.
        kwargs['weights_only'] = not is_script
        for key in ('mean', 'std', 'interpolation', 'resize_mode'):
            if tag_cfg.get(key) is not None:
                value = tag_cfg[key]
                kwargs[f'image_{key}'] = tuple(value) if key in ('mean', 'std') else value
    return kwargs


def _open_clip_failure(
    spec: str,
    name: str,
    tag: str | None,
    weights: str | None,
    checkpoint: str | None,
    tag_cfg: dict,
    err: BaseException,
) -> str:
    """The one TeacherError message for a failed open_clip build (what was tried, the cause, the fix)."""
    if weights:
        return (
            f'--kd-teacher={spec}: cannot load {WEIGHTS_OPTION}={weights} into open_clip model {name} '
            f'({_one_line(err)}). Check that the file is a complete CLIP checkpoint for {name}: open_clip '
            f"format ({HF_WEIGHTS_NAME} / .safetensors / a state_dict .pt) or OpenAI's TorchScript "
            f'{name}.pt; a file for another architecture fails with missing keys or size mismatches.'
        )
    if checkpoint:
        return (
            f'--kd-teacher={spec}: cannot load the cached weights {checkpoint} of open_clip model {name}, '
            f'tag {tag!r} ({_one_line(err)}); the file may be incomplete or corrupt: delete it so it is '
            f'downloaded again, or pass {WEIGHTS_OPTION}=PATH. {download_hint(name, tag, tag_cfg)}'
        )
    return f'--kd-teacher={spec}: could not build a random-init open_clip model {name} ({_one_line(err)})'


def _is_torchscript_archive(path: str) -> bool:
    """True for a TorchScript zip (e.g. OpenAI's ``ViT-B-32.pt``): it holds ``constants.pkl`` and code."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith('/constants.pkl') or n == 'constants.pkl' for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _wrap_open_clip(
    spec: str, model: torch.nn.Module, tokenizer: Callable, weights: str | None, is_random: bool
) -> Teacher:
    """A Teacher around an open_clip model, with S / mean / std from its preprocess config."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get('size', getattr(model.visual, 'image_size', 224))
    size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
    if size[0] != size[1]:
        raise TeacherError(
            f'KD teacher {spec}: non-square input {size} is not supported; pick a square model'
        )
    out_dim = getattr(model.visual, 'output_dim', None)
    return Teacher(
        spec,
        model,
        input_size=size[0],
        mean=cfg.get('mean') or OPENAI_CLIP_MEAN,
        std=cfg.get('std') or OPENAI_CLIP_STD,
        tokenizer=tokenizer,
        is_random=is_random,
        weights=weights,
        embed_dim=out_dim if isinstance(out_dim, int) else None,
    )
