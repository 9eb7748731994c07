"""The plugin families of train.py, declared once each, and the one registry that lists them.

A family (augmentation, the StyleGAN2 loss extras, KD-DLGAN, ...) is a module with a module-level
``FAMILY = Family(...)``: its click options, the function that resolves them into the training kwargs with
every default filled in (validating them first, with a ``click.UsageError`` naming the option), its parts
of the run-directory name, and the classes it lets snapshots rebuild. train.py adds every family's options
(:func:`add_options`), ``train_config`` resolves them (:func:`name_parts`, :func:`resolve`) and the snapshot
allow-list takes their classes (:func:`snapshot_classes`). A new family is one module plus one line in
:data:`FAMILIES`. Family modules import their implementation lazily, so ``train.py --help`` stays cheap.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Mapping
from typing import Any, Callable

import click
from click.core import ParameterSource

from dnnlib import EasyDict

# The registry: one dotted module name per family, in the order of their options in --help.
FAMILIES = (
    'stylegan2_ada_kd.augment.options',
    'stylegan2_ada_kd.training.loss_options',
    'stylegan2_ada_kd.kd.options',
)

# A run-directory name part at a position. The core's parts sit at 0 (dataset ... --batch) and at 200
# (--resume ... --desc); families put theirs at 100-199 or from 300. Parts at one position keep their order.
# The reference's order: --aug 100, --lecam 110, --p/--target/--augpipe 120, --kd 300.
NamePart = tuple[int, str]


@dataclasses.dataclass(frozen=True)
class ParsedOptions:
    """What a family resolves its options from."""

    values: Mapping[str, Any]  # Every option's click value (core and families), by parameter name.
    given: frozenset[str]  # Names of the options set on the command line or in the environment.
    dataset: Any  # The opened, validated training set (resolution, labels, class names, prompts).
    run_dir: str  # The run directory the run will write (not created yet).


@dataclasses.dataclass(frozen=True)
class Family:
    """One pluggable family of train.py: options, their resolution, name parts and snapshot classes."""

    name: str  # Short name, for messages.
    options: tuple[Callable, ...]  # click.option(...) decorators, in --help order.
    resolve: Callable[[EasyDict, ParsedOptions], None]  # Validate, then fill the training kwargs in place.
    name_parts: Callable[[Mapping[str, Any]], list[NamePart]]  # Option values -> run-directory name parts.
    # Classes snapshots may rebuild: the name a snapshot stores -> the class's dotted 'module.Class' path.
    # The stored name is part of the file format and stays when the code moves.
    classes: Mapping[str, str] = dataclasses.field(default_factory=dict)


@functools.cache
def families() -> tuple[Family, ...]:
    """The ``FAMILY`` of every module in :data:`FAMILIES`, in registry order (imported once)."""
    return tuple(importlib.import_module(name).FAMILY for name in FAMILIES)


def add_options(command: Callable) -> Callable:
    """Decorator for train.py's command: every family's click options, in registry and declaration order."""
    for option in reversed([option for family in families() for option in family.options]):
        command = option(command)
    return command


def given_options(ctx: click.Context) -> frozenset[str]:
    """Names of the parameters of ``ctx`` that the user set (command line or environment), not defaults."""
    defaults = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)
    return frozenset(name for name in ctx.params if ctx.get_parameter_source(name) not in defaults)


def name_parts(values: Mapping[str, Any]) -> list[NamePart]:
    """Every family's run-directory name parts for the option ``values``."""
    return [part for family in families() for part in family.name_parts(values)]


def resolve(c: EasyDict, parsed: ParsedOptions) -> None:
    """Let every family, in registry order, validate its options and fill the training kwargs ``c``."""
    for family in families():
        family.resolve(c, parsed)


def snapshot_classes() -> dict[str, str]:
    """Every family's snapshot classes: the name a snapshot stores -> the dotted path of the class."""
    return {name: path for family in families() for name, path in family.classes.items()}
