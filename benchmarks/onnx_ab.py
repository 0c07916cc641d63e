"""Two ONNX files of the same contract, timed against each other in one run (onnxruntime, CPU provider).

    git show c6c1dbe:models/colorizer.onnx > /tmp/colorizer_old.onnx  # the colorizer before saturation
    python benchmarks/onnx_ab.py /tmp/colorizer_old.onnx models/colorizer.onnx --sizes 512x512 768x1024

Runs alternate (A, B, A, B, ...) on the same random input, so load on a shared machine hits both alike;
prints the median seconds of each and B/A per input size. The input's channel count comes from the file.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort


def median_seconds(sessions: dict[str, ort.InferenceSession], x: np.ndarray, repeats: int) -> dict[str, float]:
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for name, s in sessions.items():  # warm-up: first runs allocate and pick kernels
        s.run(None, feeds[name])
    for _ in range(repeats):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds[name])
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="baseline ONNX file")
    p.add_argument("b", help="ONNX file compared with it")
    p.add_argument("--sizes", nargs="+", default=["256x256", "512x512"], help="input HxW (default 256x256 512x512)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    sessions = {label: ort.InferenceSession(path, providers=["CPUExecutionProvider"]) for label, path in (("A", args.a), ("B", args.b))}
    channels = sessions["A"].get_inputs()[0].shape[1]
    rng = np.random.default_rng(0)
    print(f"A = {args.a}\nB = {args.b}\n{'size':>10} {'A s':>8} {'B s':>8} {'B/A':>6}")
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        x = rng.random((args.batch, channels, h, w), dtype=np.float32)
        m = median_seconds(sessions, x, args.repeats)
        print(f"{size:>10} {m['A']:8.4g} {m['B']:8.4g} {m['B'] / m['A']:6.3f}")


if __name__ == "__main__":
    main()
