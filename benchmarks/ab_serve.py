"""The service at two commits, one after the other in one run, under the same wrk load: is a change a regression?

    python benchmarks/ab_serve.py --old f0a076a [--new HEAD] [--rounds 2] [--seconds 8]

Each commit is checked out into a temporary git worktree and served from there (`uvicorn service.main:app`,
the same models folder, by default this checkout's shipped models/, batching off and on), alternating old and new for --rounds, and wrk
(1 thread) sends a 32x32 PNG to /reconstruct at each concurrency. Prints requests/s per (version,
batching, concurrency) and round: on a shared machine compare the two within a round, not across runs.
Needs wrk and git.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from serve_load import RAW_LUA, start_server, test_png, wrk  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the commit to compare against")
    parser.add_argument("--new", default=None, help="the other commit (default: this working tree as it is)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--models", default=str(ROOT / "models"), help="models folder both serve (default: the shipped models)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="cae-ab-"))
    (tmp / "x.png").write_bytes(test_png())
    script = tmp / "raw.lua"
    script.write_text(RAW_LUA.format(png=tmp / "x.png"))
    trees, made = {}, []
    for name, rev in (("old", args.old), ("new", args.new)):
        if rev is None:
            trees[name] = ROOT
            continue
        trees[name] = tmp / name
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(trees[name]), rev], cwd=ROOT, check=True)
        made.append(trees[name])
    models = Path(args.models).resolve()
    results: dict = {}
    try:
        for rnd in range(args.rounds):
            for name, tree in trees.items():
                for batching in ("false", "true"):
                    proc, port = start_server("service.main:app", {"PYTHONPATH": str(tree), "CAE_MODEL_DIR": str(models),
                                                                   "CAE_BATCHING": batching}, cwd=tree, ready_path="/readyz")
                    try:
                        url = f"http://127.0.0.1:{port}/reconstruct"
                        wrk(url, script, 4, 2)  # warm-up
                        for c in args.concurrency:
                            r = wrk(url, script, c, args.seconds)
                            results.setdefault((name, batching, c), []).append(round(r["rps"]))
                            print(f"round {rnd} {name} batching {batching:5s} c{c:<3d} {r['rps']:7.0f} req/s  p99 {r['p99_ms']:.1f} ms", flush=True)
                    finally:
                        proc.terminate()
                        proc.wait(30)
    finally:
        for tree in made:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    for key, values in sorted(results.items()):
        print(*key, values)
    return 0


if __name__ == "__main__":
    sys.exit(main())
