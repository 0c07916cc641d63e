import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_onnx_ab_times_two_files_in_one_run(model_dir):
    colorizer = str(model_dir / "colorizer.onnx")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "onnx_ab.py"), colorizer, colorizer, "--sizes", "32x32", "64x96",
                           "--repeats", "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip().startswith(("32x32", "64x96"))]
    assert [r[0] for r in rows] == ["32x32", "64x96"]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
