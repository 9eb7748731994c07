"""The opt-in shell scripts (compile check, GPU verification): valid bash, and every Python file, module
and test file they run exists in the repository."""

import re
import subprocess
import sys

import pytest
from conftest import REPO

SCRIPTS = sorted((REPO / 'scripts').glob('*.sh'))


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash_and_runs_files_that_exist(script):
    res = subprocess.run(['bash', '-n', str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = script.read_text()
    for path in re.findall(r'\b((?:benchmarks|experiments|tests)/\w+\.py)', text):
        assert (REPO / path).is_file(), f'{script.name} runs missing {path}'
    for module in re.findall(r'python -m ([\w.]+)', text):
        if module != 'pytest' and module not in sys.stdlib_module_names:
            assert (REPO / (module.replace('.', '/') + '.py')).is_file(), f'{script.name}: no module {module}'
