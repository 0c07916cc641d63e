"""How long the service takes to turn ready, and the memory it then holds, serving the whole models folder
against a part of it (CAE_MODELS), each started ROUNDS times in turn so that both see the same machine.

    python benchmarks/startup.py --models models --serve all pae_k256_w16_l3,colorizer pae_k256_w16_l3 --out results/serving/startup.json

Each start: `python -m service` on loopback with default settings (warm-up on) and CAE_MODELS; seconds from
the process start to /readyz answering 200 (loading, checksums, warm-up measurements), then its RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_size import rss_mb  # noqa: E402
from serve_load import free_port, wait_ready  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def start_once(models: Path, served: str) -> tuple[float, float]:
    """(seconds to ready, RSS in MB once ready) of one start serving `served` ("all": the whole folder)."""
    port = free_port()
    env = {**os.environ, "CAE_MODEL_DIR": str(models), "CAE_MODELS": "" if served == "all" else served}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"], cwd=ROOT,
                            env=env, stderr=subprocess.PIPE)
    try:
        wait_ready(proc, port, "/readyz", timeout_s=300)
        return time.perf_counter() - started, rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=str(ROOT / "models"), help="models folder (default: the shipped models/)")
    parser.add_argument("--serve", nargs="+", default=["all", "pae_k256_w16_l3,colorizer"],
                        help="CAE_MODELS values to compare ('all': the whole folder)")
    parser.add_argument("--rounds", type=int, default=3, help="starts of each, interleaved (default 3)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    models = Path(args.models).resolve()
    runs: dict[str, list[tuple[float, float]]] = {served: [] for served in args.serve}
    for round_ in range(args.rounds):
        for served in args.serve:
            seconds, rss = start_once(models, served)
            runs[served].append((seconds, rss))
            print(f"round {round_ + 1}: {served:32} ready in {seconds:6.2f} s, RSS {rss:6.0f} MB", flush=True)
    first = args.serve[0]
    results = {"models": str(args.models), "rounds": args.rounds, "cpus": os.cpu_count(), "served": {}}
    for served, points in runs.items():
        seconds, rss = statistics.median(p[0] for p in points), statistics.median(p[1] for p in points)
        results["served"][served] = {"ready_s_median": round(seconds, 2), "rss_mb_median": round(rss, 1),
                                     "ready_s_vs_first": round(seconds / statistics.median(p[0] for p in runs[first]), 3),
                                     "rss_vs_first": round(rss / statistics.median(p[1] for p in runs[first]), 3)}
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
