"""Snapshots with the full training state, exact resume, and warm starts from other pickles.

A snapshot written here is one of ``snapshot.save_network_snapshot``'s files plus a ``resume_state``
entry (counters, optimizer states, loss and ADA state, every rank's RNG state), so
``--resume=network-snapshot-NNNNNN.pkl`` continues the run exactly. Any other pickle (an official
StyleGAN2-ADA one, or one of ours without resume state) given to ``--resume``, and any network file given to
``--init-from`` (our snapshots too), is a warm start: weights only, said loudly.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from dnnlib.util import construct_class_by_name
from stylegan2_ada_kd.checkpoint import locate, resume_heads
from stylegan2_ada_kd.checkpoint.classes import NetworkPickleError, load_state_strict
from stylegan2_ada_kd.checkpoint.snapshot import load_network_pkl, read_snapshot, save_network_snapshot
from torch_utils import distributed

RESUME_VERSION = 1


def rng_state(device: torch.device) -> dict:
    """This process's RNG states as plain data (torch CPU/CUDA, numpy, python)."""
    np_state = np.random.get_state()
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state(device) if device.type == 'cuda' else None,
        'numpy': [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *[float(v) for v in np_state[2:]],
        ],
        'python': list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state['torch'])
    if state['cuda'] is not None and device.type == 'cuda':
        torch.cuda.set_rng_state(state['cuda'], device)
    name, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    py = state['python']
    random.setstate((py[-2], tuple(int(v) for v in py[:-2]), py[-1]))


def optimizers(phases: list) -> dict:
    """The distinct optimizers of the phases, keyed by network name ('G', 'D')."""
    out = {}
    for phase in phases:
        out.setdefault(phase.name[0], phase.opt)
    return out


def write_snapshot(
    path: str | None,
    nets: dict,
    phases: list,
    loss: Any,
    ada: Any,
    progress: Any,
    training_set_kwargs: dict,
    rank: int,
    device: torch.device,
) -> str | None:
    """Write the snapshot ``path`` atomically (rank 0; other ranks pass None) and return ``path``; every rank
    must call (RNG gather)."""
    rng = distributed.gather_objects(rng_state(device))
    if rank != 0:
        return None
    state = {
        'version': RESUME_VERSION,
        'num_gpus': distributed.world_size(),
        'progress': {
            k: getattr(progress, k) for k in ('cur_nimg', 'cur_tick', 'batch_idx', 'tick_start_nimg')
        },
        'optimizers': {k: opt.state_dict() for k, opt in optimizers(phases).items()},
        'loss': loss.state_dict(),
        'ada': ada.state_dict() if ada is not None else None,
        'rng': rng,
    }
    try:
        save_network_snapshot(
            path,
            G=nets['G'],
            D=nets['D'],
            G_ema=nets['G_ema'],
            augment_pipe=nets['augment_pipe'],
            training_set_kwargs=training_set_kwargs,
            extra={'resume_state': state},
        )
    except OSError as err:  # disk full, folder gone or read-only: nothing half-written (atomic), say so
        raise SnapshotWriteError(
            f'cannot write {path} ({err.strerror or err}); nothing of it was written, and the snapshots '
            'before it are complete: make room (or fix the folder) and continue with the same command and '
            '--resume=auto'
        ) from err
    return path


class SnapshotWriteError(OSError):
    """A snapshot could not be written; the message says what is intact and how to continue."""


def _kwargs_diff(ours: dict, theirs: dict, prefix: str = '') -> list[str]:
    """Human-readable differences between two (nested) kwargs dicts."""
    lines = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key, '<absent>'), theirs.get(key, '<absent>')
        if isinstance(a, dict) and isinstance(b, dict):
            lines += _kwargs_diff(a, b, f'{prefix}{key}.')
        elif a != b:
            lines.append(f'  {prefix}{key}: this run {a!r}, snapshot {b!r}')
    return lines


def check_resume(path: str, G_kwargs: dict, D_kwargs: dict, common: dict) -> int | None:
    """Check ``--resume=path`` before anything is created: the snapshot's image count for an exact resume,
    None for a warm start.

    ``path``: a local file (see :func:`stylegan2_ada_kd.checkpoint.locate.resolve_network`). ``G_kwargs`` /
    ``D_kwargs`` (with ``class_name``) and ``common`` (``c_dim``, ``img_resolution``, ``img_channels``)
    describe this run's networks. A file that is neither a snapshot nor an official pickle, a refused global,
    a truncated file or networks built with other options raise ``ValueError`` naming the file and what to do.
    """
    try:
        raw = read_snapshot(path)
        data = raw if raw is not None and 'resume_state' in raw else load_network_pkl(path)
    except NetworkPickleError as err:
        folder = os.path.dirname(os.path.abspath(path))
        earlier = (
            [p for p in locate.snapshots(folder) if not os.path.samefile(p, path)]
            if os.path.isdir(folder)
            else []
        )
        hint = f' The newest other snapshot there: --resume={earlier[-1]}' if earlier else ''
        raise ValueError(f'--resume: {err}{hint}') from err
    nets = _networks(G_kwargs, D_kwargs, common)
    if data is not raw:
        _fitting_tensors(f'--resume={path}', nets, data, ('G', 'D'))
        return None
    _check_same_networks(path, nets, raw)
    return int(raw['resume_state']['progress']['cur_nimg'])


def check_init(path: str, G_kwargs: dict, D_kwargs: dict, common: dict) -> None:
    """Check ``--init-from=path`` (any network file: ours or an official pickle) before anything is created.

    Arguments as for :func:`check_resume`. Raises ``ValueError`` naming the file when it cannot be read or
    when no tensor of its G or D fits this run's (a warm start that would copy nothing).
    """
    try:
        data = load_network_pkl(path)
    except NetworkPickleError as err:
        raise ValueError(f'--init-from: {err}') from err
    _fitting_tensors(f'--init-from={path}', _networks(G_kwargs, D_kwargs, common), data, ('G', 'D'))


def _networks(G_kwargs: dict, D_kwargs: dict, common: dict) -> dict:
    """This run's G and D, freshly built on the CPU, for checks against a file."""
    return {
        key: construct_class_by_name(**kwargs, **common) for key, kwargs in (('G', G_kwargs), ('D', D_kwargs))
    }


def _check_same_networks(path: str, nets: dict, raw: dict) -> None:
    """An exact resume needs G and D built with the snapshot's options: raise ``ValueError`` with the diff."""
    for key in ('G', 'D'):
        diff = _kwargs_diff(nets[key].init_kwargs, raw['networks'][key]['init_kwargs'])
        if diff:
            raise ValueError(
                f"--resume={path}: the snapshot's {key} was built with other options than this run:\n"
                + '\n'.join(diff)
                + '\nResume with the original options (see training_options.json of that run).'
            )


def _fitting_tensors(source: str, nets: dict, data: dict, keys: tuple) -> dict:
    """Per network key, the tensors of the loaded ``data[key]`` whose name and shape fit ``nets[key]``.

    ``source`` names the option and file in errors (``--resume=PATH``). Raises ``ValueError`` with a kwargs
    diff when no tensor of a network fits (a warm start would be a fresh start in disguise).
    """
    out = {}
    for key in keys:
        dst = nets[key].state_dict()
        out[key] = {k: v for k, v in data[key].state_dict().items() if k in dst and dst[k].shape == v.shape}
        if not out[key]:
            diff = _kwargs_diff(nets[key].init_kwargs, getattr(data[key], 'init_kwargs', {}))
            raise ValueError(f"{source}: no tensor of {key} fits this run's {key}:\n" + '\n'.join(diff))
    return out


def load_for_training(
    path: str, nets: dict, phases: list, loss: Any, ada: Any, progress: Any, rank: int
) -> dict | None:
    """Resume exactly from one of our snapshots (returns its state for :func:`restore_rng`), or warm-start.

    Raises ``ValueError`` with a readable kwargs diff when the snapshot's networks differ from this run's,
    and :class:`NetworkPickleError` (a ``ValueError``) naming the keys when its weights do not fit them.
    """
    raw = read_snapshot(path)
    if raw is None or 'resume_state' not in raw:
        warm_start(path, nets, rank)
        return None
    _check_same_networks(path, nets, raw)
    snapshot_d = raw['networks']['D']['state_dict']
    added, dropped = resume_heads.head_changes(nets['D'], snapshot_d)
    for key in ('G', 'D', 'G_ema', 'augment_pipe'):
        if nets[key] is not None and key in raw['networks']:
            entry = raw['networks'][key]
            weights = resume_heads.fit_heads(nets[key], snapshot_d, added, dropped) if key == 'D' else None
            load_state_strict(
                nets[key], weights or entry['state_dict'], f'{path}: {key}', entry['init_kwargs']
            )
    state = raw['resume_state']
    for key, value in state['progress'].items():
        setattr(progress, key, value)
    for key, opt in optimizers(phases).items():
        opt_state = state['optimizers'][key]
        if key == 'D' and (added or dropped):
            heads = resume_heads.head_names(snapshot_d)
            try:
                opt_state = resume_heads.fit_optimizer_state(opt_state, nets['D'], heads, added, dropped)
            except ValueError as err:
                raise ValueError(f'--resume={path}: {err}') from err
        opt.load_state_dict(opt_state)
    loss.load_state_dict(state['loss'])
    if ada is not None and state['ada'] is not None:
        ada.load_state_dict(state['ada'])
    if rank == 0:
        for name in added:
            print(f"Note: the snapshot's D has no head {name!r}; this run creates it fresh (weights, Adam).")
        for name in dropped:
            print(f"Note: this run does not use the snapshot's D head {name!r}; it is dropped.")
        how = 'exactly' if not (added or dropped) else 'exactly apart from the D heads above'
        print(f'Resuming {how} from {path} at {progress.cur_nimg / 1000:.1f} kimg.')
    return state


def warm_start(path: str, nets: dict, rank: int) -> None:
    """Copy every tensor whose name and shape match from ``path``'s G, D and G_ema; report the rest.

    ``nets``: this run's ``G``, ``D``, ``G_ema`` (the rest of the dict is ignored). Optimizers, counters,
    augmentation and RNG are left as built: the run starts at 0 kimg from these weights.
    """
    data = load_network_pkl(path)
    report = []
    for key, matched in _fitting_tensors(path, nets, data, ('G', 'D', 'G_ema')).items():
        nets[key].load_state_dict(matched, strict=False)
        skipped = sorted(set(nets[key].state_dict()) - set(matched))
        if skipped:
            report.append(f'  {key}: {len(skipped)} tensors kept their fresh init, e.g. {skipped[:3]}')
    if rank == 0:
        print(
            f'Warm start from {path}: network weights only; '
            'kimg, augment p, optimizer and RNG state start fresh.'
        )
        for line in report:
            print(line)


def restore_rng(state: dict, rank: int, device: torch.device) -> None:
    """Restore this rank's RNG state from a resume state (fresh seeds if the process count changed)."""
    if state['num_gpus'] != distributed.world_size():
        if rank == 0:
            print(
                f'Note: the snapshot ran on {state["num_gpus"]} processes, this run on '
                f'{distributed.world_size()}; RNG streams restart from the seed, so the continuation '
                'is statistically, not bitwise, the same.'
            )
        return
    set_rng_state(state['rng'][rank], device)
