import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY_MODELS = ROOT / "tests" / "fixtures" / "tiny_models"


def test_startup_is_measured_for_the_whole_folder_and_a_part_of_it(tmp_path):
    out = tmp_path / "startup.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--models", str(TINY_MODELS),
                           "--serve", "all", "tiny_fine", "--rounds", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    served = json.loads(out.read_text())["served"]
    assert list(served) == ["all", "tiny_fine"]
    assert served["all"]["ready_s_vs_first"] == served["all"]["rss_vs_first"] == 1.0
    for figures in served.values():
        assert figures["ready_s_median"] > 0 and figures["rss_mb_median"] > 10
    assert "round 1: tiny_fine" in proc.stdout


def test_a_name_the_folder_lacks_fails_the_benchmark_with_the_services_reason(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--models", str(TINY_MODELS),
                           "--serve", "nope", "--rounds", "1"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0 and "CAE_MODELS: 'nope'" in proc.stderr
