"""Resuming when the plugin heads of D differ between the snapshot and this run (e.g. ``--kd`` added to, or
dropped from, a running experiment).

D's heads (``D.heads``, registered by plugins through ``D.attach_head``) live in its state_dict under
``heads.<name>.*`` and, since the ``heads`` dict is D's last submodule, their parameters come after every
trunk parameter in D's optimizer. On resume:

* a head of this run that the snapshot lacks keeps its fresh initialisation, and its Adam moments start at
  zero (as at the start of a run);
* a head of the snapshot that this run lacks is dropped, with its optimizer state;
* everything else (the trunk, the heads both have, their optimizer state) continues exactly.
"""

from __future__ import annotations

from typing import Any

import torch


def head_names(state: dict[str, Any]) -> list[str]:
    """The names of the heads in a D state_dict, in their order (``heads.<name>.*`` keys)."""
    names: list[str] = []
    for key in state:
        parts = key.split('.')
        if len(parts) > 2 and parts[0] == 'heads' and parts[1] not in names:
            names.append(parts[1])
    return names


def head_changes(D: torch.nn.Module, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(added, dropped)``: the heads of this run's ``D`` that the snapshot's D ``state`` lacks, and those
    of the snapshot that this run lacks."""
    ours, theirs = list(getattr(D, 'heads', {})), head_names(state)
    return [n for n in ours if n not in theirs], [n for n in theirs if n not in ours]


def fit_heads(
    D: torch.nn.Module, state: dict[str, Any], added: list[str], dropped: list[str]
) -> dict[str, Any]:
    """The snapshot's D ``state`` without the ``dropped`` heads and with this run's fresh ``added`` heads."""
    ours = D.state_dict()
    own = lambda key, names: any(key.startswith(f'heads.{name}.') for name in names)
    out = {k: v for k, v in state.items() if not own(k, dropped)}
    out.update({k: v for k, v in ours.items() if own(k, added)})
    return out


def fit_optimizer_state(
    opt_state: dict, D: torch.nn.Module, snapshot_heads: list[str], added: list[str], dropped: list[str]
) -> dict:
    """D's optimizer ``state_dict`` from the snapshot, re-indexed for this run's parameters (one group).

    Parameters of heads in both runs keep their state; ``added`` heads get none (fresh Adam moments);
    ``dropped`` heads' state is removed. The snapshot's parameters are the trunk, then its heads in
    ``snapshot_heads`` order; the size of a dropped head is what remains, so at most one can be dropped.
    Raises ``ValueError`` when the counts do not add up.
    """
    heads = getattr(D, 'heads', {})
    size = {name: len(list(heads[name].parameters())) for name in heads}
    trunk = len(list(D.parameters())) - sum(size.values())
    (group,) = opt_state['param_groups']
    total = len(group['params'])
    if len(dropped) > 1 or total - trunk - sum(size[n] for n in snapshot_heads if n not in dropped) < 0:
        raise ValueError(
            f'the optimizer state of D ({total} parameters) cannot be matched to the heads {snapshot_heads} '
            f"of the snapshot and {list(heads)} of this run; resume with the snapshot's own options"
        )
    size.update({name: total - trunk - sum(size[n] for n in snapshot_heads if n != name) for name in dropped})
    old_index = {i: i for i in range(trunk)}  # this run's parameter index -> the snapshot's
    start = {}
    offset = trunk
    for name in snapshot_heads:
        start[name] = offset
        offset += size[name]
    index = trunk
    for name in heads:
        for j in range(size[name]):
            if name not in added:
                old_index[index] = start[name] + j
            index += 1
    old_state = {int(k): v for k, v in opt_state['state'].items()}
    new_state = {new: old_state[old] for new, old in old_index.items() if old in old_state}
    params = list(range(index))
    return dict(opt_state, state=new_state, param_groups=[dict(group, params=params)])
