"""Repository rules from docs/style.md that a machine can check: lint, format, size budgets,
docstrings with shapes, shape assertions in networks, and the KD plugin staying out of the core."""

import ast
import dataclasses
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

CORE_DIRS = ['stylegan2_ada_kd', 'torch_utils', 'dnnlib', 'metrics']
MAX_FILE_LINES = 540  # the project rule, tests included
MAX_DEF_LINES = {'training_loop': 200}
DEFAULT_MAX_DEF_LINES = 80


def _py_files(dirs):
    files = []
    for d in dirs:
        files += sorted((REPO / d).rglob('*.py'))
    return files


def _all_sources():
    return _py_files(CORE_DIRS + ['tests', 'benchmarks', 'experiments']) + sorted(REPO.glob('*.py'))


def _ruff(*args):
    if shutil.which('ruff') is None:
        cmd = [sys.executable, '-m', 'ruff']
    else:
        cmd = ['ruff']
    return subprocess.run(cmd + list(args), cwd=REPO, capture_output=True, text=True)


def test_ruff_lint():
    res = _ruff('check', '.')
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_format():
    res = _ruff('format', '--check', '.')
    assert res.returncode == 0, res.stdout + res.stderr


def test_file_and_function_size_budgets():
    problems = []
    for path in _all_sources():
        text = path.read_text()
        if text.count('\n') > MAX_FILE_LINES:
            problems.append(f'{path.relative_to(REPO)}: {text.count(chr(10))} lines > {MAX_FILE_LINES}')
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = MAX_DEF_LINES.get(node.name, DEFAULT_MAX_DEF_LINES)
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    problems.append(
                        f'{path.relative_to(REPO)}:{node.lineno} {node.name} has {length} lines > {limit}'
                    )
    assert not problems, '\n'.join(problems)


def _public_defs(tree):
    """Module-level functions and classes, and methods of public classes (not nested functions)."""
    for node in tree.body:
        if isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        ) and not node.name.startswith('_'):
            yield node
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and not sub.name.startswith(
                        '_'
                    ):
                        yield sub


def test_public_defs_have_docstrings_and_forward_states_shapes():
    problems = []
    for path in _py_files(['stylegan2_ada_kd', 'torch_utils']):
        for node in _public_defs(ast.parse(path.read_text())):
            doc = ast.get_docstring(node)
            where = f'{path.relative_to(REPO)}:{node.lineno} {node.name}'
            if not doc:
                problems.append(f'{where}: no docstring')
            elif node.name == 'forward' and not re.search(r'\[[^\]]*\]', doc):
                problems.append(f'{where}: forward docstring names no [shape]')
    assert not problems, '\n'.join(problems)


def test_parameters_are_documented_in_the_signature_not_in_args_sections():
    """One parameter-documentation style, training_loop's: ``name: type = default,  # Meaning.``, one per
    line (docs/style.md, 5). No docstring has a Google-style ``Args:`` (``Arguments:``, ``Parameters:``)
    section."""
    section = re.compile(r'^\s*(Args|Arguments|Parameters):\s*$', re.MULTILINE)
    problems = []
    for path in _py_files(CORE_DIRS) + sorted(REPO.glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if section.search(ast.get_docstring(node) or ''):
                    name = getattr(node, 'name', '(module)')
                    problems.append(f'{path.relative_to(REPO)}:{getattr(node, "lineno", 1)} {name}')
    assert not problems, 'docstrings with an Args: section:\n' + '\n'.join(problems)


@pytest.mark.parametrize('rel', ['stylegan2_ada_kd/networks', 'stylegan2_ada_kd/kd'])
def test_forward_methods_assert_shapes(rel):
    for path in sorted((REPO / rel).glob('*.py')):
        text = path.read_text()
        n_forward = len(re.findall(r'def forward\(', text))
        n_assert = len(re.findall(r'assert_shape\(', text))
        assert n_assert >= n_forward, (
            f'{path.name}: {n_assert} assert_shape calls < {n_forward} forward methods'
        )


def test_training_loop_names_no_loss_or_augment_class():
    text = (REPO / 'stylegan2_ada_kd' / 'training' / 'loop.py').read_text()
    assert not re.search(r'^\s*(from|import)\s+\S*(loss|augment|diffaugment)\b', text, re.MULTILINE)
    assert not re.search(r'\bKD\b|agkd|cgkd', text)


def _imported_modules(path):
    """Dotted names of every module ``path`` imports, lazy imports inside functions included.

    ``from a.b import c`` gives ``a.b`` and ``a.b.c`` (``c`` may be a submodule); relative imports are
    resolved against the file's package.
    """
    package = list(path.relative_to(REPO).parent.parts)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = '.'.join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f'{module}.{alias.name}' for alias in node.names)
    return names


def _imports_of(dirs, forbidden):
    """``file: module`` for every import in ``dirs`` of a module in or below one of ``forbidden``."""
    return [
        f'{path.relative_to(REPO)}: {name}'
        for path in _py_files(dirs)
        for name in sorted(_imported_modules(path))
        if any(name == prefix or name.startswith(prefix + '.') for prefix in forbidden)
    ]


def test_platform_packages_import_no_method_code():
    """torch_utils/ and dnnlib/ are the platform (as in NVlabs/edm): they never import the method."""
    offenders = _imports_of(['torch_utils', 'dnnlib'], ['stylegan2_ada_kd', 'metrics'])
    assert not offenders, 'the platform imports the method:\n' + '\n'.join(offenders)


def test_metrics_and_the_core_have_no_import_cycle():
    """The core imports metrics (evaluation at snapshots), so metrics takes its helpers from torch_utils."""
    moved = ['stylegan2_ada_kd.distributed', 'stylegan2_ada_kd.run_io', 'stylegan2_ada_kd.launcher']
    offenders = _imports_of(['metrics'], moved)
    assert not offenders, 'metrics imports modules that live in torch_utils now:\n' + '\n'.join(offenders)
    offenders = _imports_of(['metrics'], ['stylegan2_ada_kd'])
    assert not offenders, 'metrics imports the core, which imports metrics:\n' + '\n'.join(offenders)


def test_core_imports_nothing_from_the_kd_plugin():
    """The core (stylegan2_ada_kd/ outside kd/, train.py, torch_utils/, metrics/, dnnlib/) imports no module
    of stylegan2_ada_kd.kd, lazily or not, and names one only in the plugin registry (plugins.FAMILIES)."""
    kd = 'stylegan2_ada_kd.kd'
    kd_dir = REPO / 'stylegan2_ada_kd' / 'kd'
    core = [path for path in _py_files(CORE_DIRS) if kd_dir not in path.parents] + [REPO / 'train.py']
    imports = [
        f'{path.relative_to(REPO)}: {name}'
        for path in core
        for name in sorted(_imported_modules(path))
        if name == kd or name.startswith(kd + '.')
    ]
    assert not imports, 'the core imports the KD plugin:\n' + '\n'.join(imports)
    named = [
        f'{path.relative_to(REPO)}: {node.value}'
        for path in core
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(kd)
    ]
    assert named == [f'stylegan2_ada_kd/plugins.py: {kd}.options'], named


def test_no_function_relays_the_run_record():
    """The run record reaches the loop and the run builder as it is (training.record.RunRecord): no function
    re-declares more than three of its fields as parameters, so a new option is never relayed by hand."""
    from stylegan2_ada_kd.training.record import RunRecord

    fields = {field.name for field in dataclasses.fields(RunRecord)}
    offenders = []
    for path in _py_files(CORE_DIRS) + [REPO / 'train.py']:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                relayed = sorted(fields & {arg.arg for arg in args})
                if len(relayed) > 3:
                    offenders.append(f'{path.relative_to(REPO)}:{node.lineno} {node.name}: {relayed}')
    assert not offenders, 'functions that re-declare the run record:\n' + '\n'.join(offenders)
