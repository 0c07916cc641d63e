"""scripts/gpu_serving_kit.sh's device side, on a fake kit in a throwaway checkout: the pieces of the
onnxruntime-gpu wheel arrive over several calls (each a fresh copy of the checkout holding only what it
carried), `run` joins and checks them, and `plan` packs the pieces into calls under the 64 MiB limit."""

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
WHEEL = "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl"  # the name the kit script expects
MIB = 1024 * 1024


def checkout(root: Path) -> Path:
    """A git checkout with the two scripts and wheels/ ignored, as the project has them."""
    (root / "scripts").mkdir(parents=True)
    for name in ("gpu_serving_kit.sh", "device_tree.sh"):
        shutil.copy(SCRIPTS / name, root / "scripts" / name)
    (root / ".gitignore").write_text("/wheels/\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    return root


def fake_kit(kit: Path) -> None:
    """wheels/gpu as `prepare` leaves it: the wheel in two parts and its checksum, a serve wheel, bin/, models/."""
    (kit / "ort").mkdir(parents=True)
    (kit / "serve").mkdir()
    (kit / "bin").mkdir()
    (kit / "models").mkdir()
    wheel = kit / WHEEL
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("onnxruntime/__init__.py", "__version__ = 'fake-gpu'\n" + "#" * 5000)
    data = wheel.read_bytes()
    (kit / "ort" / "part-aa").write_bytes(data[: len(data) // 2])
    (kit / "ort" / "part-ab").write_bytes(data[len(data) // 2:])
    (kit / "ort" / "sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {WHEEL}\n")
    wheel.unlink()
    with zipfile.ZipFile(kit / "serve" / "fakeapi-1.0-py3-none-any.whl", "w") as z:
        z.writestr("fakeapi/__init__.py", "")
    (kit / "bin" / "wrk").write_text("#!/bin/sh\n")
    (kit / "models" / "manifest.json").write_text("{}\n")


def device_call(tmp: Path, kit: Path, carry: list[str], verb: str, n: int, **env) -> subprocess.CompletedProcess:
    """One call: a fresh copy of the checkout with only the carried kit paths, the verb run in it."""
    root = checkout(tmp / f"call{n}")
    for path in carry:
        source, target = kit / path, root / "wheels" / "gpu" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    stage, site = tmp / "device-tmp" / "stage", tmp / "device-tmp" / "site"
    return subprocess.run(["bash", "scripts/gpu_serving_kit.sh", verb], cwd=root, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "STAGE": str(stage), "SITE": str(site), **env})


@pytest.fixture
def kit(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    fake_kit(tmp_path / "kit")
    return tmp_path / "kit"


def test_pieces_carried_over_several_calls_are_joined_checked_and_installed(tmp_path, kit):
    python = shutil.which("python3")
    env = {"PATH": f"{Path(python).parent}:/usr/bin:/bin"}
    first = device_call(tmp_path, kit, ["ort/part-aa"], "stage", 1, **env)
    assert first.returncode == 0, first.stderr
    last = device_call(tmp_path, kit, ["ort/part-ab", "ort/sha256", "serve", "bin", "models"], "run", 2, STAGE_ONLY="1", **env)
    assert last.returncode == 0, last.stderr
    site = tmp_path / "device-tmp" / "site"
    assert "fake-gpu" in (site / "onnxruntime" / "__init__.py").read_text()
    assert (site / "fakeapi" / "__init__.py").exists()
    assert (tmp_path / "device-tmp" / "stage" / "models" / "manifest.json").exists()


def test_run_says_so_when_a_part_never_arrived(tmp_path, kit):
    python = shutil.which("python3")
    env = {"PATH": f"{Path(python).parent}:/usr/bin:/bin"}
    missing = device_call(tmp_path, kit, ["ort/part-ab", "ort/sha256", "serve", "bin", "models"], "run", 1, STAGE_ONLY="1", **env)
    assert missing.returncode != 0
    assert "not all there" in missing.stderr and "part-ab" in missing.stderr
    assert not (tmp_path / "device-tmp" / "site" / "onnxruntime").exists()


def test_plan_packs_the_pieces_into_calls_under_the_limit(tmp_path, kit):
    root = checkout(tmp_path / "here")
    shutil.copytree(kit, root / "wheels" / "gpu")
    for name in ("part-aa", "part-ab", "part-ac"):  # three 30 MiB parts (sparse): two fit one call, not three
        with open(root / "wheels" / "gpu" / "ort" / name, "wb") as f:
            f.truncate(30 * MIB)
    plan = subprocess.run(["bash", "scripts/gpu_serving_kit.sh", "plan"], cwd=root, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    calls = [line.strip() for line in plan.stdout.splitlines() if line.strip().startswith("run(")]
    assert calls == [
        'run(command="scripts/gpu_serving_kit.sh stage", carry=["wheels/gpu/ort/part-aa", "wheels/gpu/ort/part-ab"], timeout_s=120)',
        'run(command="scripts/gpu_serving_kit.sh run", carry=["wheels/gpu/ort/part-ac", "wheels/gpu/ort/sha256", '
        '"wheels/gpu/serve", "wheels/gpu/models", "wheels/gpu/bin"], timeout_s=540)',
    ]
    with open(root / "scripts" / "tracked.bin", "wb") as f:  # a checkout over the limit on its own
        f.truncate(70 * MIB)
    subprocess.run(["git", "add", "scripts/tracked.bin"], cwd=root, check=True)
    over = subprocess.run(["bash", "scripts/gpu_serving_kit.sh", "plan"], cwd=root, capture_output=True, text=True)
    assert over.returncode == 1 and "device_tree.sh out" in over.stderr
