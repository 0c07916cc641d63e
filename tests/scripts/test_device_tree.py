"""scripts/device_tree.sh: what a device call would send, and taking the shipped models off it and back,
in a throwaway git repository (the real checkout's index is never touched)."""

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "device_tree.sh"
MIB = 1024 * 1024


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, capture_output=True, text=True, check=check)


def tree(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "scripts" / "device_tree.sh"), *args], cwd=repo, capture_output=True, text=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A checkout whose tracked models/ (70 MiB, sparse) is over the 64 MiB a device call may send."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "device_tree.sh")
    (tmp_path / "models").mkdir()
    with open(tmp_path / "models" / "big.onnx", "wb") as f:
        f.truncate(70 * MIB)
    (tmp_path / "models" / "manifest.json").write_text("{}\n")
    (tmp_path / "README.md").write_text("hello\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "start")
    return tmp_path


def test_size_counts_tracked_untracked_and_carried_files_against_the_limit(repo):
    over = tree(repo, "size")
    assert over.returncode == 1 and "over the 64 MiB limit" in over.stderr and "70.0 MiB" in over.stderr
    assert int(tree(repo, "bytes").stdout) == 70 * MIB + len("{}\n") + len("hello\n") + SCRIPT.stat().st_size
    (repo / "notes.txt").write_text("x" * 1000)  # untracked, not ignored: it travels
    (repo / "data").mkdir()
    (repo / "data" / "train.bin").write_bytes(b"y" * 5000)
    assert int(tree(repo, "bytes").stdout) == 70 * MIB + 6 + 3 + SCRIPT.stat().st_size + 1000 + 5000
    (repo / ".gitignore").write_text("/data/\n")
    ignored = int(tree(repo, "bytes").stdout)
    assert int(tree(repo, "bytes", "data").stdout) == ignored + 5000  # ignored, so only when carried
    assert tree(repo, "bytes", "nothing-here").returncode == 1


def test_out_takes_models_off_device_calls_and_in_puts_them_back(repo):
    out = tree(repo, "out")
    assert out.returncode == 0, out.stderr
    assert git(repo, "ls-files", "models").stdout == ""  # off the index...
    assert (repo / "models" / "big.onnx").stat().st_size == 70 * MIB  # ...not off the disk
    assert git(repo, "check-ignore", "-q", "models/big.onnx", check=False).returncode == 0
    fits = tree(repo, "size", "models/manifest.json")
    assert fits.returncode == 0 and "of 64 MiB" in fits.stdout
    # A commit now would delete the models from history: the hook refuses any.
    (repo / "new.txt").write_text("n\n")
    git(repo, "add", "new.txt")
    refused = git(repo, "commit", "-q", "-m", "oops", check=False)
    assert refused.returncode != 0 and "device_tree.sh in" in refused.stderr
    assert "already out" in tree(repo, "out").stderr

    back = tree(repo, "in")
    assert back.returncode == 0, back.stderr
    assert git(repo, "status", "--porcelain", "models").stdout == ""
    assert git(repo, "ls-files", "models").stdout.split() == ["models/big.onnx", "models/manifest.json"]
    assert "device_tree" not in (repo / ".git" / "info" / "exclude").read_text()
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    git(repo, "commit", "-q", "-m", "now it may")
    assert git(repo, "show", "--stat", "HEAD").stdout.count("new.txt") == 1
    assert tree(repo, "in").stdout.strip() == "nothing is out"


def test_out_refuses_paths_with_uncommitted_changes_and_an_existing_hook(repo):
    (repo / "models" / "manifest.json").write_text('{"changed": true}\n')
    refused = tree(repo, "out")
    assert refused.returncode == 1 and "uncommitted changes" in refused.stderr
    assert git(repo, "ls-files", "models").stdout != ""
    git(repo, "checkout", "--", "models")
    hooks = repo / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "pre-commit").write_text("#!/bin/sh\nexit 0\n")
    kept = tree(repo, "out")
    assert kept.returncode == 1 and "not replacing it" in kept.stderr
    assert (hooks / "pre-commit").read_text() == "#!/bin/sh\nexit 0\n"
    assert git(repo, "ls-files", "models").stdout != ""


def test_this_checkout_without_models_leaves_room_for_the_data_on_a_device_call():
    # What a GPU session sends: the tracked files but models/ (scripts/device_tree.sh out) and the training data
    # it carries (the shared CIFAR-10 copy, 15.4 MiB). Large files committed elsewhere would break every such call.
    root = SCRIPT.parents[1]
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True)
    if shutil.which("git") is None or listed.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = sum((root / f).stat().st_size for f in listed.stdout.split("\0")
                  if f and not f.startswith("models/") and (root / f).is_file())
    data, room = 16 * MIB, 2 * MIB  # the data rounded up; room for untracked files and what a run writes
    assert tracked + data + room <= 64 * MIB, f"tracked files outside models/ take {tracked / MIB:.1f} MiB"
