"""The container installs service/requirements*.txt; they must not drift from pyproject's extras."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def requirements(name: str) -> set[str]:
    lines = (ROOT / "service" / name).read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


@pytest.mark.parametrize("extra,file", [("serve", "requirements.txt"), ("gpu", "requirements-gpu.txt")])
def test_requirements_match_the_extra(extra, file):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {d.split("#")[0].strip() for d in project["optional-dependencies"][extra]} | set(project["dependencies"])
    wanted -= {"tqdm==4.70.1"}  # the base dependency only training uses
    assert requirements(file) == wanted
    assert not any(r.startswith("torch") for r in requirements(file))


def test_dockerfile_keeps_a_public_base_and_runs_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert "USER 10001" in text and "HEALTHCHECK" in text and 'CMD ["python", "-m", "service"]' in text


def test_health_checks_wait_out_the_warm_up():
    # The port opens after the warm-up (about a minute for the shipped folder on 2 cores): a health check
    # that counts failures before then marks, and an orchestrator restarts, a container that is only starting.
    start_period = re.search(r"HEALTHCHECK .*--start-period=(\d+)s", (ROOT / "Dockerfile").read_text())
    assert start_period and int(start_period.group(1)) >= 180
    deployment = (ROOT / "README.md").read_text().split("kind: Deployment", 1)[1].split("```", 1)[0]
    probe = re.search(r"startupProbe: \{httpGet: \{path: /healthz.*periodSeconds: (\d+), failureThreshold: (\d+)\}", deployment)
    assert probe and int(probe.group(1)) * int(probe.group(2)) >= 180
