import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from photo_size import photo_shape  # noqa: E402


def test_photo_shape_is_four_by_three_at_the_asked_size():
    for megapixels in (0.25, 1, 4, 12):
        w, h = photo_shape(megapixels)
        assert abs(w / h - 4 / 3) < 0.01 and abs(w * h / 1e6 - megapixels) / megapixels < 0.01


def test_photo_size_reports_memory_per_pixel(model_dir, tmp_path):
    out = tmp_path / "photo_size.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "photo_size.py"), "--models", str(model_dir),
                           "--sizes", "0.02", "--burst-seconds", "0", "--out", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert {r["endpoint"] for r in results["requests"]} == {"/reconstruct", "/colorize", "/encode?size=native"}
    for row in results["requests"]:
        assert row["status"] == 200
        pixels = math.prod(photo_shape(0.02))
        expected = (row["peak_rss_mb"] - results["rss_idle_mb"]) * 2**20 / pixels
        # The JSON's RSS figures are rounded to 0.1 MB; the per-pixel figure is not.
        assert abs(row["bytes_per_pixel_above_idle"] - expected) <= 0.1 * 2**20 / pixels + 1
    assert "B/px" in proc.stdout


def test_a_burst_without_wrk_is_refused_before_measuring(tmp_path):
    # PATH without wrk: the script says what is missing at once instead of failing after minutes of measurements.
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "photo_size.py"), "--models", str(tmp_path), "--out", str(tmp_path / "o.json")],
                          capture_output=True, text=True, timeout=60, env={"PATH": str(bare)})
    assert proc.returncode == 2 and "needs wrk" in proc.stderr and not (tmp_path / "o.json").exists()
