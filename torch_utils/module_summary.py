"""A layer table of a network, for the log: one forward pass with hooks records what each submodule
returned, beside its parameter and buffer counts, so a user can check the architecture and resolution of a run
(and compare it with a reference run's log) before it trains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Row:
    """One submodule: its dotted name, parameters and buffer elements (its own and its children's), and the
    shapes and dtype of the tensors its first call returned ('-' when it was not called)."""

    name: str
    params: int
    buffers: int
    output: str
    dtype: str


def _describe(out: object) -> tuple[str, str]:
    """``('[4, 512, 4, 4]', 'float32')`` of a tensor; the tensors of a tuple or list joined with ', '; else
    ``('-', '-')``."""
    if isinstance(out, torch.Tensor):
        out = [out]
    tensors = [t for t in out if isinstance(t, torch.Tensor)] if isinstance(out, (tuple, list)) else []
    if not tensors:
        return '-', '-'
    shapes = ', '.join(str(list(t.shape)) for t in tensors)
    dtypes = ', '.join(dict.fromkeys(str(t.dtype).removeprefix('torch.') for t in tensors))
    return shapes, dtypes


def summarize(module: torch.nn.Module, inputs: Sequence[object], max_depth: int = 2) -> list[Row]:
    """Call ``module(*inputs)`` once without gradients and list its submodules with fewer than ``max_depth``
    dots in their name, in the order their first calls began (a parent before its children; modules not
    called through ``forward`` just before their first called child, with '-'), plus a final 'Total' row
    with the module's output. The global RNG states and the module's buffers (running statistics such as
    w_avg) are restored afterwards, so a training run that prints the table is the run that does not."""
    order: dict[str, None] = {}  # names in the order their calls began: a parent before its children
    seen: dict[str, tuple[str, str]] = {}

    def enter(name: str) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _inputs: object) -> None:  # None: inputs unchanged
            order.setdefault(name)

        return hook

    def leave(name: str) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _inputs: object, out: object) -> None:  # None: output unchanged
            seen.setdefault(name, _describe(out))

        return hook

    named = [(n, m) for n, m in module.named_modules() if n and n.count('.') < max_depth]
    hooks = [m.register_forward_pre_hook(enter(n)) for n, m in named]
    hooks += [m.register_forward_hook(leave(n)) for n, m in named]
    devices = sorted({p.device.index for p in module.parameters() if p.device.type == 'cuda'})
    buffers = {name: b.clone() for name, b in module.named_buffers()}  # running statistics (w_avg, ...)
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            out = module(*inputs)
            for name, b in module.named_buffers():
                b.copy_(buffers[name])
    finally:
        for hook in hooks:
            hook.remove()
    count = lambda tensors: sum(t.numel() for t in tensors)
    rank = {name: i for i, name in enumerate(order)}
    named = [(n, m) for n, m in named if n in seen or count(m.parameters()) or count(m.buffers())]
    # A module used through other methods than forward sits just before its first called child.
    first_child = lambda n: min(
        (i - 0.5 for c, i in rank.items() if c.startswith(n + '.')), default=len(rank)
    )
    named.sort(key=lambda nm: rank.get(nm[0], first_child(nm[0])))
    rows = [Row(n, count(m.parameters()), count(m.buffers()), *seen.get(n, ('-', '-'))) for n, m in named]
    return rows + [Row('Total', count(module.parameters()), count(module.buffers()), *_describe(out))]


def format_table(title: str, rows: list[Row]) -> str:
    """``rows`` as an aligned text table under ``title`` (the first line names the columns)."""
    cells = [('Layer', 'Parameters', 'Buffers', 'Output shape', 'Dtype')]
    cells += [(r.name, f'{r.params:,}', f'{r.buffers:,}', r.output, r.dtype) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    line = lambda c: '  '.join(
        v.ljust(w) if i in (0, 3, 4) else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))
    ).rstrip()
    rule = '  '.join('-' * w for w in widths)
    body = [line(c) for c in cells[1:-1]]
    return '\n'.join([title, line(cells[0]), rule, *body, rule, line(cells[-1])])
