import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY_MODELS = ROOT / "tests" / "fixtures" / "tiny_models"


def test_every_model_is_run_at_each_side_and_compared_with_its_plan(tmp_path):
    out = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "warmup_plan.py"), "--models", str(TINY_MODELS),
                           "--sides", "64", "128", "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    manifest = json.loads((TINY_MODELS / "manifest.json").read_text())
    assert {r["model"] for r in rows} == set(manifest["models"])
    assert len(rows) == 2 * len(manifest["models"])
    for row in rows:
        assert row["seconds"] > 0 and row["seconds_vs_plan"] > 0 and row["bytes_per_pixel"] > 0 and row["bytes_vs_plan"] > 0
    assert "warm-up:" in proc.stdout
