"""The `cae` command: stages without back-edges, light dispatch, one-line errors, dry runs that touch nothing real."""

import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cae.cli import build_parser
from tests.conftest import needs_torch

ROOT = Path(__file__).resolve().parents[2]


def _imports(package: str) -> dict[str, set[str]]:
    """Top-level names each module of `package` imports (at any depth of the file)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package, forbidden", [
    ("training", {"export", "service"}),  # training is the bottom stage
    ("export", {"service"}),
    ("service", {"torch", "training", "export", "torchmetrics", "kornia"}),  # serving never imports torch
    # The shared core stays light; the dispatcher names the stages as strings and imports them when run.
    ("cae", {"torch", "onnx", "onnxruntime", "fastapi", "training", "export", "service"}),
])
def test_no_stage_imports_a_stage_above_it(package, forbidden):
    offenders = {module: sorted(names & forbidden) for module, names in _imports(package).items() if names & forbidden}
    assert not offenders, offenders


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=120)


def test_help_imports_no_heavy_module():
    proc = _run("import sys, cae.cli; cae.cli.build_parser(); "
                "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'fastapi', 'matplotlib') if m in sys.modules))")
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named '{{name}}'", name=name)
sys.meta_path.insert(0, Block())
from cae.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize("argv, blocked, extra", [
    (["train", "--dry-run", "--quiet"], {"torch"}, "train"),
    (["serve", "--port", "1"], {"uvicorn", "fastapi"}, "serve"),
    (["export", "--dry-run"], {"onnx", "onnxruntime", "onnxscript"}, "export"),
])
def test_a_missing_extra_is_one_line_naming_it(argv, blocked, extra):
    proc = _run(BLOCK.format(blocked=blocked, argv=argv))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"cae {argv[0]}: needs the '{extra}' extra") and f"pip install 'cae[{extra}]'" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_serve_and_python_m_service_read_the_same_environment(monkeypatch):
    from service.cli import add_arguments
    import argparse

    monkeypatch.setenv("CAE_HOST", "0.0.0.0")
    monkeypatch.setenv("CAE_PORT", "9123")
    monkeypatch.setenv("CAE_INSECURE", "true")
    monkeypatch.setenv("CAE_LOG_LEVEL", "warning")
    via_cae = build_parser().parse_args(["serve"])
    direct = argparse.ArgumentParser()
    add_arguments(direct)
    via_module = direct.parse_args([])
    for args in (via_cae, via_module):
        assert (args.host, args.port, args.insecure, args.log_level) == ("0.0.0.0", 9123, True, "warning")


def test_a_missing_model_folder_is_one_line(tmp_path):
    for cmd in (["-m", "service"], ["-m", "cae", "serve"]):
        proc = subprocess.run([sys.executable, *cmd, "--port", "0"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "CAE_MODEL_DIR": str(tmp_path / "none")})
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and "manifest.json not found" in proc.stderr


@needs_torch
def test_dry_runs_never_write_the_default_outputs(tmp_path, monkeypatch, capsys):
    from cae.cli import main

    work, temp = tmp_path / "checkout", tmp_path / "tmp"
    work.mkdir(), temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert main(["train", "--dry-run", "--quiet"]) == 0
    assert main(["sweep", "--dry-run", "--quiet", "--only", "cae_l3_ch1_k3_s4", "--no-figures"]) == 0
    assert list(work.iterdir()) == []  # no runs/, no results/
    made = sorted(p.name.rsplit("-", 1)[0] for p in temp.glob("cae-*"))
    assert made == ["cae-sweep-dry-run", "cae-train-dry-run"]
    assert "dry run: writing to" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["train", "--dry-run", "--epochs", "-1"],
    ["train", "--dry-run", "--fraction", "2"],
    ["sweep", "--dry-run", "--batch-size", "0"],
    ["train-colorizer", "--dry-run", "--encoding", "ratio"],
    ["export", "--dry-run", "--autoencoder", "nowhere"],
])
@needs_torch
def test_flags_are_checked_before_a_dry_run(argv, tmp_path, monkeypatch, capsys):
    from cae.cli import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(argv) == 2
    assert f"cae {argv[0]}: error:" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@needs_torch
@pytest.mark.slow
def test_export_and_color_report_have_dry_runs(tmp_path, capsys):
    from cae.cli import main

    assert main(["export", "--dry-run", "--out", str(tmp_path / "export")]) == 0
    manifest = json.loads((tmp_path / "export" / "models" / "manifest.json").read_text())
    assert sorted(manifest["models"]) == ["colorizer", "rae_w4_d2_z2_b1.decoder", "rae_w4_d2_z2_b1.encoder"]
    assert main(["color-report", "--dry-run", "--out", str(tmp_path / "report")]) == 0
    assert "grayscale baseline" in (tmp_path / "report" / "report" / "results.md").read_text()
