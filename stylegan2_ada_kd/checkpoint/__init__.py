"""Checkpoints as data: our snapshot format, the restricted reader of official StyleGAN2-ADA pickles, and
snapshots with the training state for exact resume.

* :mod:`.classes`: the allow-list of classes a file may rebuild, the loader errors, plain-data and strict
  state_dict loading helpers.
* :mod:`.snapshot`: our snapshot format (atomic writer, :func:`load_network_pkl` for both formats,
  state_dict export, conversion).
* :mod:`.official`: the restricted unpickler of official pickles (never runs their embedded code).
* :mod:`.training_state`: snapshots with ``resume_state``, the ``--resume`` and ``--init-from`` checks, exact
  resume, warm start.
* :mod:`.resume_heads`: resuming when D's plugin heads differ between the snapshot and the run.
* :mod:`.locate`: network files from paths, URLs, pretrained names, run directories and ``--resume=auto``.
"""

from stylegan2_ada_kd.checkpoint.classes import (
    NETWORK_KEYS,
    NetworkPickleError,
    UnsafePickleError,
    register_network_class,
)
from stylegan2_ada_kd.checkpoint.locate import (
    PRETRAINED,
    find_auto_resume,
    newest_snapshot,
    resolve_network,
    select_snapshots,
)
from stylegan2_ada_kd.checkpoint.snapshot import (
    SNAPSHOT_FORMAT,
    convert_network_pkl,
    export_state_dicts,
    load_network_pkl,
    read_snapshot,
    save_network_snapshot,
    torch_load_error,
)
from stylegan2_ada_kd.checkpoint.training_state import (
    SnapshotWriteError,
    check_init,
    check_resume,
    load_for_training,
    restore_rng,
    warm_start,
    write_snapshot,
)

__all__ = [
    'NETWORK_KEYS',
    'PRETRAINED',
    'SNAPSHOT_FORMAT',
    'SnapshotWriteError',
    'NetworkPickleError',
    'UnsafePickleError',
    'check_init',
    'check_resume',
    'convert_network_pkl',
    'export_state_dicts',
    'find_auto_resume',
    'load_for_training',
    'load_network_pkl',
    'newest_snapshot',
    'read_snapshot',
    'register_network_class',
    'resolve_network',
    'restore_rng',
    'save_network_snapshot',
    'select_snapshots',
    'torch_load_error',
    'warm_start',
    'write_snapshot',
]
