"""The service and client tests pass in an environment with only the `serve` extra (no torch, no onnx):
what `pip install cae[serve]` users and the container have."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVE_ONLY_TESTS = ["tests/service", "tests/clients", "tests/cae", "tests/fixtures"]


@pytest.mark.slow
def test_service_and_client_tests_pass_with_only_the_serve_extra(tmp_path_factory):
    venv = tmp_path_factory.mktemp("serve-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run([python, "-m", "pip", "install", "-q", "-e", ".[test-serve]"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    missing = subprocess.run([python, "-c", "import importlib.util as u; print([m for m in ('torch', 'onnx', 'kornia') if u.find_spec(m)])"],
                             capture_output=True, text=True, env=env)
    assert missing.stdout.strip() == "[]", "the serve-only environment has training packages"
    run = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SERVE_ONLY_TESTS], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-6000:]
    assert " passed" in run.stdout.splitlines()[-1]
